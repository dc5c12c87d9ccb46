-- The writing side: the business table and its outbox, in schema public.
-- Applied by `outboxctl migrate` in one transaction.

CREATE TABLE IF NOT EXISTS public.orders (
    id           bigserial   PRIMARY KEY,
    customer_id  text        NOT NULL,
    status       text        NOT NULL,
    total_cents  bigint      NOT NULL DEFAULT 0,
    -- The number of events this order has had; the next event's
    -- aggregate_seq is version + 1, taken under this row's lock.
    version      bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.outbox (
    -- Insertion order. Within one aggregate it is also aggregate_seq order,
    -- because seq n+1 is inserted only after seq n's transaction committed.
    id             bigserial   PRIMARY KEY,
    event_id       uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    aggregate_seq  bigint      NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- NULL until the broker acknowledged the event.
    sent_at        timestamptz,
    attempts       integer     NOT NULL DEFAULT 0,
    last_error     text,
    UNIQUE (aggregate_id, aggregate_seq)
);

-- Keeps the relay's "oldest unsent rows" scan proportional to the backlog,
-- not to the table.
CREATE INDEX IF NOT EXISTS outbox_unsent ON public.outbox (id) WHERE sent_at IS NULL;

-- Wakes polling relays (LISTEN outboxd_outbox) as soon as a writing
-- transaction commits; one notification per statement, folded per transaction.
CREATE OR REPLACE FUNCTION public.outboxd_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outboxd_outbox', '');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS outbox_notify ON public.outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON public.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION public.outboxd_notify();

-- Each relay's counters, refreshed about once a second (outboxctl status).
CREATE TABLE IF NOT EXISTS public.outboxd_relays (
    relay_id    integer     NOT NULL,
    host        text        NOT NULL,
    pid         integer     NOT NULL,
    mode        text        NOT NULL,
    started_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    passes      bigint      NOT NULL DEFAULT 0,
    published   bigint      NOT NULL DEFAULT 0,
    acked       bigint      NOT NULL DEFAULT 0,
    failed      bigint      NOT NULL DEFAULT 0,
    marked      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (host, relay_id)
);
