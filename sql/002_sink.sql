-- The consumer's side, in schema sink (the consumer service owns it; with
-- [consumer] conninfo it may live in another database).

CREATE SCHEMA IF NOT EXISTS sink;

-- Dedupe record: written in the same transaction as the side effect.
CREATE TABLE IF NOT EXISTS sink.inbox (
    event_id     uuid        PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- The business side effect: one row per application. No unique constraint
-- on event_id on purpose: a double apply must show as two rows.
CREATE TABLE IF NOT EXISTS sink.side_effects (
    id             bigserial   PRIMARY KEY,
    event_id       uuid        NOT NULL,
    aggregate_id   text        NOT NULL,
    aggregate_seq  bigint      NOT NULL,
    event_type     text        NOT NULL DEFAULT '',
    applied_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    consumer_id    integer     NOT NULL,
    kafka_partition integer,
    kafka_offset   bigint
);
CREATE INDEX IF NOT EXISTS side_effects_aggregate
    ON sink.side_effects (aggregate_id, aggregate_seq);

-- Per-order high-water mark: the last seq applied, locked per message.
CREATE TABLE IF NOT EXISTS sink.order_projection (
    order_id       text        PRIMARY KEY,
    last_seq       bigint      NOT NULL DEFAULT 0,
    events_applied bigint      NOT NULL DEFAULT 0,
    status         text,
    total_cents    bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The ordering audit log: every gap, duplicate and poison message seen.
CREATE TABLE IF NOT EXISTS sink.ordering_audit (
    id              bigserial   PRIMARY KEY,
    detected_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind            text        NOT NULL,
    aggregate_id    text,
    expected_seq    bigint,
    got_seq         bigint,
    event_id        uuid,
    consumer_id     integer,
    kafka_partition integer,
    kafka_offset    bigint,
    healed_at       timestamptz,
    detail          text
);
CREATE INDEX IF NOT EXISTS ordering_audit_open_gaps
    ON sink.ordering_audit (aggregate_id) WHERE kind = 'gap' AND healed_at IS NULL;

-- Each consumer's counters, refreshed about once a second (outboxctl status).
CREATE TABLE IF NOT EXISTS sink.consumers (
    consumer_id  integer     NOT NULL,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    received     bigint      NOT NULL DEFAULT 0,
    applied      bigint      NOT NULL DEFAULT 0,
    duplicates   bigint      NOT NULL DEFAULT 0,
    gaps         bigint      NOT NULL DEFAULT 0,
    poison       bigint      NOT NULL DEFAULT 0,
    retries      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (host, consumer_id)
);
