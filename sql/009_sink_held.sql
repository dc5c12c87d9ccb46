-- Events that arrived ahead of their order's next seq (a gap): held here,
-- durably, instead of being dropped in the hope that the relay sends them
-- again (it does not once they are marked sent). The transaction that
-- applies the event before them applies them too, in seq order, so a gap
-- heals only when the events after it are applied.
CREATE TABLE IF NOT EXISTS sink.held (
    id               bigserial   PRIMARY KEY,
    held_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
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
CREATE INDEX IF NOT EXISTS held_order ON sink.held (aggregate_id, aggregate_seq, id);
