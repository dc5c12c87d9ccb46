-- Outbox cleanup: the partitioned layout of public.outbox and the janitor's
-- helpers. This file only defines functions and a view; `outboxctl migrate`
-- calls public.outboxd_outbox_partition() afterwards when [cleanup]
-- partitioned = on (the default), and the janitor (outboxd, outboxctl
-- cleanup) calls the others.
--
-- The partitioned layout: public.outbox stays the one root table (inserts,
-- the relay's claim and mark, and a publication with
-- publish_via_partition_root = true all name it), range-partitioned on
-- created_at into partitions of [cleanup] partition_interval_s seconds,
-- aligned on the Unix epoch (daily partitions start at 00:00 UTC), plus a
-- DEFAULT partition that catches rows for which no partition exists yet.
-- PostgreSQL requires every unique key to contain the partition key, so the
-- primary key is (id, created_at) and event_id is unique together with
-- created_at; (aggregate_id, aggregate_seq) keeps its index but its
-- uniqueness is upheld by the order row's lock that assigns the seq.

-- Every partition of public.outbox with its bounds (lo inclusive, hi
-- exclusive; both NULL for the default partition). Resolved by name at run
-- time, so it follows public.outbox through the conversion.
CREATE OR REPLACE VIEW public.outboxd_outbox_partitions AS
SELECT c.oid::regclass AS part,
       c.relname::text AS name,
       pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' AS is_default,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                     'FROM \(''([^'']+)''\)'))[1]::timestamptz AS lo,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                     'TO \(''([^'']+)''\)'))[1]::timestamptz AS hi
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = to_regclass('public.outbox');

-- Unsent rows of one partition (through its outbox_unsent partial index).
CREATE OR REPLACE FUNCTION public.outboxd_outbox_unsent(p regclass) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM %s WHERE sent_at IS NULL', p) INTO n;
    RETURN n;
END $$;

-- Create the partition holding now() and the `ahead` ones after it, each
-- step_s seconds wide, unless a partition already covers part of that
-- range. Each is created empty, given a CHECK matching its range and then
-- attached (ATTACH takes only SHARE UPDATE EXCLUSIVE on public.outbox, so
-- writers and relays go on). With dry = true nothing is created. Returns
-- one row per partition: status 'created', 'would create', or 'refused'
-- (the default partition holds rows of that range; detail says why).
CREATE OR REPLACE FUNCTION public.outboxd_outbox_ensure(step_s integer, ahead integer,
                                                       dry boolean DEFAULT false)
RETURNS TABLE (name text, lo timestamptz, hi timestamptz, status text, detail text)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    base timestamptz := to_timestamp(floor(extract(epoch FROM clock_timestamp()) / step_s) * step_s);
BEGIN
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('public.outbox'))
       IS DISTINCT FROM 'p' THEN
        RETURN;
    END IF;
    FOR k IN 0..ahead LOOP
        lo := base + make_interval(secs => step_s::double precision * k);
        hi := lo + make_interval(secs => step_s);
        CONTINUE WHEN EXISTS (SELECT 1 FROM public.outboxd_outbox_partitions p
                               WHERE NOT p.is_default AND p.lo < hi AND p.hi > lo);
        name := 'outbox_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS');
        detail := NULL;
        IF dry THEN
            status := 'would create';
            RETURN NEXT;
            CONTINUE;
        END IF;
        BEGIN
            EXECUTE format('CREATE TABLE public.%I (LIKE public.outbox INCLUDING DEFAULTS)', name);
            EXECUTE format('ALTER TABLE public.%I ADD CONSTRAINT %I CHECK '
                           '(created_at >= %L AND created_at < %L)',
                           name, name || '_range', lo, hi);
            EXECUTE format('ALTER TABLE public.outbox ATTACH PARTITION public.%I '
                           'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
            status := 'created';
        EXCEPTION WHEN check_violation THEN
            -- The default partition already holds rows of this range.
            status := 'refused';
            detail := SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END $$;

-- Partitions detached by outboxd_outbox_detach() and not dropped yet (the
-- drop is a second, separate transaction; a janitor that died in between
-- leaves the name here for the next round).
CREATE TABLE IF NOT EXISTS public.outboxd_detached (
    name        text        PRIMARY KEY,
    detached_at timestamptz NOT NULL DEFAULT now()
);

-- Step 1 of a drop, in the caller's (short) transaction: DETACH takes
-- ACCESS EXCLUSIVE on the partition, so no writer or relay transaction is
-- in it any more; then count its unsent rows under that lock. None: the
-- partition is recorded in outboxd_detached and 0 is returned (the caller
-- commits; from then on no row can reach it, it is not a partition). Some:
-- the detach is undone (the partition stays attached) and their number is
-- returned. Upholds "a partition with an unsent row is never dropped".
CREATE OR REPLACE FUNCTION public.outboxd_outbox_detach(p regclass) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
BEGIN
    BEGIN
        EXECUTE format('ALTER TABLE public.outbox DETACH PARTITION %s', p);
        EXECUTE format('SELECT count(*) FROM %s WHERE sent_at IS NULL', p) INTO n;
        IF n > 0 THEN
            RAISE EXCEPTION 'partition % holds % unsent rows', p, n USING ERRCODE = 'OBX01';
        END IF;
        INSERT INTO public.outboxd_detached (name)
        SELECT format('%I.%I', ns.nspname, c.relname)
          FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
         WHERE c.oid = p
        ON CONFLICT DO NOTHING;
    EXCEPTION WHEN SQLSTATE 'OBX01' THEN
        RETURN n;
    END;
    RETURN 0;
END $$;

-- Step 2, its own transaction: drop every detached table recorded in
-- outboxd_detached. They are no longer partitions, so this locks nothing
-- that writers or relays use (removing the files happens here, outside the
-- detach's lock on public.outbox). Returns the names dropped.
CREATE OR REPLACE FUNCTION public.outboxd_outbox_drop_detached() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT d.name FROM public.outboxd_detached d ORDER BY d.detached_at LOOP
        IF to_regclass(r.name) IS NOT NULL AND NOT EXISTS
           (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = to_regclass(r.name)) THEN
            EXECUTE format('DROP TABLE %s', to_regclass(r.name));
        END IF;
        DELETE FROM public.outboxd_detached d WHERE d.name = r.name;
        RETURN NEXT r.name;
    END LOOP;
END $$;

-- Both steps in one transaction (for scripts and tests that want a
-- partition gone at once): returns the unsent rows found, 0 = dropped.
CREATE OR REPLACE FUNCTION public.outboxd_outbox_drop(p regclass) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    n := public.outboxd_outbox_detach(p);
    IF n = 0 THEN
        PERFORM public.outboxd_outbox_drop_detached();
    END IF;
    RETURN n;
END $$;

-- Move an unpartitioned public.outbox to the partitioned layout, in the
-- caller's transaction, under an ACCESS EXCLUSIVE lock (writers wait; they
-- then resolve public.outbox to the new table). The old table is renamed
-- public.outbox_pre_partition; every unsent row, and every sent row younger
-- than retention_s, is copied into the new one (old rows land in the
-- default partition, where the janitor deletes them in batches once sent
-- and old). ids and the id sequence carry over, so the relay's id order
-- holds across the move. When every old row was copied the old table is
-- dropped; otherwise it is kept for the operator (sent history only).
-- Returns the rows copied and whether the old table was kept; (0, false)
-- when public.outbox is already partitioned.
CREATE OR REPLACE FUNCTION public.outboxd_outbox_partition(step_s integer, ahead integer,
                                                          retention_s integer,
                                                          OUT copied bigint, OUT kept_old boolean)
LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
BEGIN
    copied := 0;
    kept_old := false;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('public.outbox')) = 'p' THEN
        RETURN;
    END IF;
    IF to_regclass('public.outbox_pre_partition') IS NOT NULL THEN
        RAISE EXCEPTION 'public.outbox_pre_partition exists (left by an earlier conversion); '
                        'drop or rename it first';
    END IF;
    LOCK TABLE public.outbox IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE public.outbox RENAME TO outbox_pre_partition;
    ALTER INDEX IF EXISTS public.outbox_pkey RENAME TO outbox_pre_partition_pkey;
    ALTER INDEX IF EXISTS public.outbox_event_id_key RENAME TO outbox_pre_partition_event_id_key;
    ALTER INDEX IF EXISTS public.outbox_aggregate_id_aggregate_seq_key
        RENAME TO outbox_pre_partition_aggregate_key;
    ALTER INDEX IF EXISTS public.outbox_unsent RENAME TO outbox_pre_partition_unsent;
    DROP TRIGGER IF EXISTS outbox_notify ON public.outbox_pre_partition;

    CREATE TABLE public.outbox (
        -- Insertion order (see 001); the same sequence as before.
        id             bigint      NOT NULL DEFAULT nextval('public.outbox_id_seq'),
        event_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
        aggregate_type text        NOT NULL,
        aggregate_id   text        NOT NULL,
        aggregate_seq  bigint      NOT NULL,
        event_type     text        NOT NULL,
        payload        jsonb       NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
        sent_at        timestamptz,
        attempts       integer     NOT NULL DEFAULT 0,
        last_error     text,
        PRIMARY KEY (id, created_at),
        UNIQUE (event_id, created_at)
    ) PARTITION BY RANGE (created_at);
    ALTER SEQUENCE public.outbox_id_seq OWNED BY public.outbox.id;
    -- The relay's claim scans this per partition, merged in id order: a
    -- fully sent partition contributes an empty index.
    CREATE INDEX outbox_unsent ON public.outbox (id) WHERE sent_at IS NULL;
    -- The relay's re-check probes it per aggregate.
    CREATE INDEX outbox_aggregate ON public.outbox (aggregate_id, aggregate_seq);
    CREATE TABLE public.outbox_default PARTITION OF public.outbox DEFAULT;
    PERFORM public.outboxd_outbox_ensure(step_s, ahead);
    CREATE TRIGGER outbox_notify AFTER INSERT ON public.outbox
        FOR EACH STATEMENT EXECUTE FUNCTION public.outboxd_notify();

    INSERT INTO public.outbox (id, event_id, aggregate_type, aggregate_id, aggregate_seq,
                               event_type, payload, created_at, sent_at, attempts, last_error)
    SELECT id, event_id, aggregate_type, aggregate_id, aggregate_seq,
           event_type, payload, created_at, sent_at, attempts, last_error
      FROM public.outbox_pre_partition
     WHERE sent_at IS NULL OR created_at >= now() - make_interval(secs => retention_s);
    GET DIAGNOSTICS copied = ROW_COUNT;
    SELECT count(*) INTO total FROM public.outbox_pre_partition;
    IF total = copied THEN
        DROP TABLE public.outbox_pre_partition;
    ELSE
        kept_old := true;
    END IF;
END $$;
