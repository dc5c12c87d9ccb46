-- Dead letters, per-order quarantine and inbox retention (consumer side,
-- schema sink).

-- Every message the consumer gave up on: poison at once, or a permanent
-- failure once the retry budget ran out. One row per Kafka message
-- (topic, partition, offset), so a redelivery after a crash adds nothing.
-- The original key, headers and payload are kept so that
-- outboxctl dlq retry can apply the message again exactly as it came.
CREATE TABLE IF NOT EXISTS sink.dead_letters (
    id               bigserial   PRIMARY KEY,
    dead_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    reason           text        NOT NULL,   -- 'poison' or 'exhausted'
    error            text        NOT NULL,
    attempts         integer     NOT NULL,
    first_failure_at timestamptz NOT NULL,
    last_failure_at  timestamptz NOT NULL,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    consumer_id      integer     NOT NULL,
    event_id         uuid,
    event_type       text,
    aggregate_id     text,
    aggregate_seq    bigint,
    msg_key          bytea,
    headers          jsonb,                  -- [[name, value], ...] in wire order
    payload          bytea,
    status           text        NOT NULL DEFAULT 'open',  -- open, retried, dropped
    resolved_at      timestamptz,
    resolution       text,
    UNIQUE (topic, kafka_partition, kafka_offset)
);
CREATE INDEX IF NOT EXISTS dead_letters_open
    ON sink.dead_letters (aggregate_id) WHERE status = 'open';

-- An order with a dead-lettered event: its later events are parked, not
-- applied, until the dead letter is retried or dropped and every parked
-- event is released (outboxctl dlq retry / drop). Written in the same
-- transaction as the dead_letters row; read under the order's
-- order_projection row lock, which the release takes too.
CREATE TABLE IF NOT EXISTS sink.quarantine (
    order_id        text        PRIMARY KEY,
    dead_letter_id  bigint      NOT NULL REFERENCES sink.dead_letters (id),
    since           timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Events of a quarantined order, durably, in arrival order (id). Released
-- in that order by outboxctl dlq retry / drop.
CREATE TABLE IF NOT EXISTS sink.parked (
    id               bigserial   PRIMARY KEY,
    parked_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    aggregate_id     text        NOT NULL,
    aggregate_seq    bigint      NOT NULL,
    event_id         uuid        NOT NULL UNIQUE,
    event_type       text        NOT NULL,
    status           text,                   -- the payload's, as the apply uses them
    total_cents      bigint,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    consumer_id      integer     NOT NULL
);
CREATE INDEX IF NOT EXISTS parked_order ON sink.parked (aggregate_id, id);

-- Inbox retention: the sweep deletes by age in bounded batches.
CREATE INDEX IF NOT EXISTS inbox_received_at ON sink.inbox (received_at);

ALTER TABLE sink.consumers ADD COLUMN IF NOT EXISTS dead_lettered bigint NOT NULL DEFAULT 0;
ALTER TABLE sink.consumers ADD COLUMN IF NOT EXISTS parked bigint NOT NULL DEFAULT 0;
