#!/usr/bin/env bash
# outboxctl migrate moves an unpartitioned outbox to the partitioned layout
# while the order service writes into it, in a database of its own: no
# unsent row is lost, ids and event ids carry over, the id sequence goes on,
# no write of the order service is lost, sent rows older than the retention
# stay behind in public.outbox_pre_partition, and old unsent rows (in the
# default partition) are kept by the janitor until they are sent.
. "$(dirname "$0")/../lib.sh"

services_up
tmp=$(mktemp -d /tmp/outboxd-173.XXXXXX)
db=outboxd_t173
ORD_PID=
cleanup() {
	[ -n "$ORD_PID" ] && kill -KILL "$ORD_PID" 2>/dev/null
	dropdb --if-exists --force "$db" >/dev/null 2>&1
	[ "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
dropdb --if-exists --force "$db" >/dev/null 2>&1
createdb "$db" || bail "createdb $db failed"
export OUTBOX_PG="${OUTBOX_PG/dbname=outboxd/dbname=$db}"
export PGDATABASE=$db

cat >"$tmp/plain.conf" <<EOF
[cleanup]
partitioned = off
EOF
cat >"$tmp/part.conf" <<EOF
[cleanup]
partitioned = on
retention_s = 86400
EOF
"$BIN/outboxctl" -c "$tmp/plain.conf" migrate >/dev/null
is "$(q "SELECT relkind FROM pg_class WHERE oid = 'public.outbox'::regclass")" "r" "starts unpartitioned"

# rows KIND N CREATED_AGO SENT
rows() {
	q "INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type,
	     payload, created_at, sent_at)
	   SELECT 'seed', '$1-' || g, 1, 'placed', jsonb_build_object('g', g),
	          now() - interval '$3' + g * interval '1 ms',
	          CASE WHEN $4 THEN now() - interval '$3' + interval '1 second' END
	     FROM generate_series(1, $2) g" >/dev/null
}
rows old-sent 500 '2 days' true
rows old-unsent 20 '2 days' false
rows new-sent 300 '1 hour' true
rows new-unsent 100 '1 hour' false
q "SELECT id, event_id, aggregate_id FROM public.outbox WHERE sent_at IS NULL ORDER BY id" >"$tmp/unsent.before"
maxid=$(q "SELECT max(id) FROM public.outbox")

# A conversion that cannot get its lock within [cleanup] lock_timeout_ms
# fails, says why and what to do, and changes nothing.
printf '[cleanup]\npartitioned = on\nlock_timeout_ms = 200\n' >"$tmp/part-lt.conf"
psql -X -q -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<'SQL' &
BEGIN;
LOCK public.outbox IN ROW EXCLUSIVE MODE;
SELECT pg_sleep(20);
COMMIT;
SQL
LOCK_PID=$!
holds_lock() {
	[ "$(q "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
		WHERE c.relname = 'outbox' AND l.granted AND l.pid <> pg_backend_pid()")" -ge 1 ]
}
wait_for 10 holds_lock
ok $? "another session holds a lock on public.outbox"
"$BIN/outboxctl" -c "$tmp/part-lt.conf" migrate >"$tmp/migrate-lt.out" 2>&1
is "$?" "1" "migrate exits 1 when the lock is not granted within lock_timeout_ms"
grep -q "its lock was not granted within \[cleanup\] lock_timeout_ms; run migrate again" "$tmp/migrate-lt.out"
ok $? "it says the lock was not granted and to run migrate again"
kill "$LOCK_PID" 2>/dev/null
wait "$LOCK_PID" 2>/dev/null
q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(20)%'
   AND pid <> pg_backend_pid()" >/dev/null
is "$(q "SELECT relkind FROM pg_class WHERE oid = 'public.outbox'::regclass")" "r" \
	"and leaves public.outbox unpartitioned"

# The order service writes throughout the conversion.
"$BIN/orders" --mode outbox --orders 300 --events-per-order 4 --concurrency 4 --rate 400 --quiet \
	>"$tmp/orders.log" 2>&1 &
ORD_PID=$!
sleep 1
"$BIN/outboxctl" -c "$tmp/part.conf" migrate >"$tmp/migrate.out" 2>&1
ok $? "migrate with partitioned = on converts the live outbox"
diag "$(cat "$tmp/migrate.out")"
wait "$ORD_PID"
ok $? "the order service was not disturbed (exit 0)"
ORD_PID=

is "$(q "SELECT relkind FROM pg_class WHERE oid = 'public.outbox'::regclass")" "p" "public.outbox is partitioned"
is "$(q "SELECT count(*) FROM public.outboxd_outbox_partitions WHERE is_default")" "1" "with a default partition"
q "SELECT id, event_id, aggregate_id FROM public.outbox WHERE aggregate_type = 'seed' AND sent_at IS NULL
   ORDER BY id" >"$tmp/unsent.after"
cmp -s "$tmp/unsent.before" "$tmp/unsent.after"
ok $? "all 120 unsent rows carried over with their id and event_id"
is "$(wc -l <"$tmp/unsent.after")" "120" "(120 of them)"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_id LIKE 'new-sent-%'")" "300" \
	"sent rows younger than the retention carried over"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_id LIKE 'old-sent-%'")" "0" \
	"sent rows older than the retention did not"
is "$(q "SELECT count(*) FROM public.outbox_pre_partition WHERE aggregate_id LIKE 'old-sent-%'")" "500" \
	"they stay in public.outbox_pre_partition"
for idx in outbox_unsent_aggregate outbox_refused; do
	is "$(q "SELECT indrelid::regclass FROM pg_index WHERE indexrelid = to_regclass('public.$idx')")" \
		"outbox" "the new public.outbox has the relay's index $idx (the old table's was renamed)"
done
is "$(q "SELECT sum(version) FROM public.orders")" "1200" "the order service committed 1,200 events"
is "$(q "SELECT count(*) FROM public.orders o WHERE o.version <> (SELECT count(*) FROM public.outbox x
	WHERE x.aggregate_type = 'order' AND x.aggregate_id = o.id::text)")" "0" \
	"every committed event has its outbox row in the new table"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_type = 'order' AND id <= $maxid")" "0" \
	"the id sequence went on across the conversion"
is "$(q "SELECT count(*) FROM (SELECT event_id FROM public.outbox GROUP BY event_id HAVING count(*) > 1) d")" "0" \
	"no event_id twice"
"$BIN/outboxctl" -c "$tmp/part.conf" migrate >/dev/null
ok $? "a second migrate is a no-op"
is "$(q "SELECT count(*) FROM public.outbox")" "$((120 + 300 + 1200))" "and changes no row"

# The old unsent rows sit in the default partition; the janitor keeps them
# until they are sent, then deletes them in batches.
"$BIN/outboxctl" -c "$tmp/part.conf" cleanup --json >"$tmp/c1.json" 2>/dev/null
is "$(jq -r '"\(.deleted) \(.kept_unsent)"' "$tmp/c1.json")" "0 20" \
	"the janitor keeps the 20 old unsent rows of the default partition"
q "UPDATE public.outbox SET sent_at = now() WHERE aggregate_id LIKE 'old-unsent-%'" >/dev/null
"$BIN/outboxctl" -c "$tmp/part.conf" cleanup --json >"$tmp/c2.json" 2>/dev/null
is "$(jq -r '"\(.deleted) \(.kept_unsent)"' "$tmp/c2.json")" "20 0" "once sent, it deletes them"
is "$(q "SELECT count(*) FROM public.outbox_default")" "0" "the default partition is empty"
done_testing
