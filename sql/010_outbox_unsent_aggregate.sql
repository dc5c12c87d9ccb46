-- The relay's re-check (relay/poll.c, SQL_RECHECK): the oldest unsent seq
-- of each aggregate of a batch. Through the (aggregate_id, aggregate_seq)
-- unique index that probe walks every sent row the aggregate still has, so
-- its cost grew with the aggregate's history (36 ms per 2000-row batch with
-- 20 sent events per order); through this index, which holds only unsent
-- rows, it is one probe (2 ms). A mark is already a non-HOT update
-- (sent_at is in outbox_unsent's predicate), so this index costs the mark
-- nothing; it costs a writer one index entry per event.
--
-- Idempotent, so `outboxctl migrate` calls it again after moving the outbox
-- to the partitioned layout, before outboxd_outbox_refused_setup(). When
-- that conversion kept the old table (rows past retention), the old
-- table's indexes still hold the names outbox_unsent_aggregate and
-- outbox_refused, and CREATE INDEX IF NOT EXISTS would skip the new table:
-- they are renamed to outbox_pre_partition_* first.
CREATE OR REPLACE FUNCTION public.outboxd_outbox_unsent_aggregate_setup() RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['outbox_unsent_aggregate', 'outbox_refused'] LOOP
        IF EXISTS (SELECT 1 FROM pg_index i
                    WHERE i.indexrelid = to_regclass('public.' || name)
                      AND i.indrelid <> 'public.outbox'::regclass) THEN
            EXECUTE format('ALTER INDEX public.%I RENAME TO %I', name,
                           replace(name, 'outbox_', 'outbox_pre_partition_'));
        END IF;
    END LOOP;
    CREATE INDEX IF NOT EXISTS outbox_unsent_aggregate
        ON public.outbox (aggregate_id, aggregate_seq) WHERE sent_at IS NULL;
END $fn$;

SELECT public.outboxd_outbox_unsent_aggregate_setup();
