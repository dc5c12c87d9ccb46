-- Rows the broker refuses for good (outbox side, schema public).
--
-- A row whose message Kafka will never accept as it is (over the broker's
-- or the producer's message.max.bytes, an invalid record) must not hold up
-- the whole outbox: the poll relay records the refusal in refused_at (with
-- last_error and attempts, as for any failed attempt) and from then on its
-- claim skips the row's whole aggregate, so the aggregate's later events
-- stay unsent behind it, in order, and every other aggregate goes on.
--
-- A refused row is tried again
--   * as soon as its payload is updated (the trigger below clears
--     refused_at: the operator trimmed it), or when an operator clears
--     refused_at by hand (e.g. after raising the broker's limit):
--       UPDATE public.outbox SET refused_at = NULL WHERE id = ...;
--   * by itself once refused_at is older than the relay's retry period
--     (relay/publish.h, PUBLISH_REFUSED_RETRY_S).
-- Idempotent, so `outboxctl migrate` calls it again after moving the outbox
-- to the partitioned layout (a new table: its refused rows are tried once
-- more and refused again).
CREATE OR REPLACE FUNCTION public.outboxd_outbox_refused_setup() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    ALTER TABLE public.outbox ADD COLUMN IF NOT EXISTS refused_at timestamptz;
    -- The claim's "blocked aggregates" subquery reads this index, which
    -- holds only the unsent refused rows (usually none), once per claim.
    -- Keyed on refused_at so the subquery's "refused less than N s ago" is
    -- its index condition: with aggregate_id only, the planner was seen to
    -- scan outbox_unsent (every unsent row) for it instead once the
    -- statistics said the backlog was small.
    CREATE INDEX IF NOT EXISTS outbox_refused ON public.outbox (refused_at)
        INCLUDE (aggregate_id) WHERE refused_at IS NOT NULL AND sent_at IS NULL;
    DROP TRIGGER IF EXISTS outbox_unrefuse ON public.outbox;
    CREATE TRIGGER outbox_unrefuse BEFORE UPDATE OF payload ON public.outbox
        FOR EACH ROW WHEN (OLD.refused_at IS NOT NULL)
        EXECUTE FUNCTION public.outboxd_outbox_unrefuse();
    -- Statistics for the new column now, so the planner reads the small
    -- index and not outbox_unsent for the subquery before autovacuum did.
    ANALYZE public.outbox (refused_at, sent_at);
END $fn$;

-- A new payload deserves a new try.
CREATE OR REPLACE FUNCTION public.outboxd_outbox_unrefuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload IS DISTINCT FROM OLD.payload THEN
        NEW.refused_at := NULL;
    END IF;
    RETURN NEW;
END $$;

SELECT public.outboxd_outbox_refused_setup();
