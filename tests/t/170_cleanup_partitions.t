#!/usr/bin/env bash
# The janitor on the partitioned outbox (outboxctl cleanup, the round outboxd
# runs too): it creates the partitions ahead; of two expired partitions it
# drops the fully sent one and keeps, and says so, the one holding an unsent
# row; once that row is sent it drops that one too. --dry-run changes
# nothing; --json is one object; a second janitor waits its turn. In a
# database of its own, partitioned with [cleanup] partitioned = on.
. "$(dirname "$0")/../lib.sh"

services_up
tmp=$(mktemp -d /tmp/outboxd-170.XXXXXX)
db=outboxd_t170
cleanup() {
	dropdb --if-exists --force "$db" >/dev/null 2>&1
	[ "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
dropdb --if-exists --force "$db" >/dev/null 2>&1
createdb "$db" || bail "createdb $db failed"
export OUTBOX_PG="${OUTBOX_PG/dbname=outboxd/dbname=$db}"
export PGDATABASE=$db
conf=$(test_conf <<EOF
[cleanup]
partitioned = on
partition_interval_s = 3600
partitions_ahead = 2
retention_s = 3600
EOF
)
"$BIN/outboxctl" -c "$conf" migrate >/dev/null
is "$(q "SELECT relkind FROM pg_class WHERE oid = 'public.outbox'::regclass")" "p" \
	"migrate with [cleanup] partitioned = on gives public.outbox the partitioned layout"

# Two partitions of long ago, attached by hand, each with 100 sent rows;
# then one row of "b" is made unsent.
for p in a:2020-01-01:2020-01-02 b:2020-01-02:2020-01-03; do
	IFS=: read -r n lo hi <<<"$p"
	q "CREATE TABLE public.outbox_t170_$n (LIKE public.outbox INCLUDING DEFAULTS);
	   ALTER TABLE public.outbox ATTACH PARTITION public.outbox_t170_$n
	     FOR VALUES FROM ('$lo 00:00+00') TO ('$hi 00:00+00')" >/dev/null
	q "INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type,
	     payload, created_at, sent_at)
	   SELECT 'order', 't170-$n-' || g, 1, 'placed', '{}', '$lo 12:00+00'::timestamptz
	          + g * interval '1 second', '$lo 12:00+00'::timestamptz + interval '1 hour'
	     FROM generate_series(1, 100) g" >/dev/null
done
q "UPDATE public.outbox SET sent_at = NULL WHERE aggregate_id = 't170-b-50'" >/dev/null
# A current row, unsent: the janitor must not touch it either.
q "INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type, payload)
   VALUES ('order', 't170-now', 1, 'placed', '{}')" >/dev/null
before=$(q "SELECT count(*) FROM public.outbox")

out=$("$BIN/outboxctl" -c "$conf" cleanup --dry-run 2>&1)
ok $? "cleanup --dry-run exits 0"
diag "$(echo "$out" | tail -1)"
echo "$out" | grep -q "would-drop.*outbox_t170_a"; ok $? "dry run: would drop the fully sent partition"
echo "$out" | grep -q "NOT dropping partition outbox_t170_b.*1 unsent"; ok $? "dry run: says why it keeps the other"
is "$(q "SELECT count(*) FROM public.outbox")" "$before" "dry run: no row removed"
is "$(q "SELECT count(*) FROM public.outboxd_outbox_partitions WHERE name LIKE 'outbox_t170_%'")" "2" \
	"dry run: both partitions still there"

"$BIN/outboxctl" -c "$conf" cleanup --json >"$tmp/c1.json" 2>"$tmp/c1.log"
ok $? "cleanup exits 0"
diag "$(cat "$tmp/c1.json")"
is "$(jq -r '[.partitioned, .dropped, .refused, .kept_unsent] | map(tostring) | join(" ")' "$tmp/c1.json")" \
	"true 1 1 1" "--json: partitioned, 1 dropped, 1 refused, 1 unsent row kept"
grep -q "dropped partition outbox_t170_a" "$tmp/c1.log"; ok $? "the drop is logged"
grep -q "NOT dropping partition outbox_t170_b .*1 unsent row" "$tmp/c1.log"; ok $? "the refusal is logged"
is "$(q "SELECT to_regclass('public.outbox_t170_a') IS NULL")" "t" "the fully sent expired partition is gone"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_id LIKE 't170-b-%'")" "100" \
	"the partition with an unsent row survived with all its rows"
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" "2" "both unsent rows are still there"
is "$(q "SELECT count(*) FROM generate_series(0, 2) k WHERE EXISTS (SELECT 1
	FROM public.outboxd_outbox_partitions p WHERE NOT p.is_default
	AND p.lo <= now() + k * interval '1 hour' AND p.hi > now() + k * interval '1 hour')")" "3" \
	"partitions cover now and the 2 intervals ahead"

# Another janitor (this psql holding the advisory lock) makes cleanup skip.
psql -X -q -c "SELECT pg_advisory_lock(727000, 6), pg_sleep(4)" >/dev/null 2>&1 &
holder=$!
lock_held() {
	[ "$(q "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 727000
		AND objid = 6 AND granted")" = 1 ]
}
wait_for 5 lock_held
"$BIN/outboxctl" -c "$conf" cleanup --json >"$tmp/c2.json" 2>/dev/null
is "$?" "1" "cleanup exits 1 while another janitor holds the lock"
is "$(jq -r .skipped "$tmp/c2.json")" "true" "and reports that it skipped"
wait "$holder"

# The re-check under the lock: the detach step itself, called directly on
# the partition with the unsent row (as if that row had committed after the
# janitor's first look), undoes the detach and reports the row.
is "$(q "SELECT public.outboxd_outbox_detach('public.outbox_t170_b')")" "1" \
	"the detach step finds the unsent row under its lock and refuses"
is "$(q "SELECT count(*) FROM public.outboxd_outbox_partitions WHERE name = 'outbox_t170_b'")" "1" \
	"and the partition is still attached"

q "UPDATE public.outbox SET sent_at = now() WHERE aggregate_id = 't170-b-50'" >/dev/null
"$BIN/outboxctl" -c "$conf" cleanup >"$tmp/c3.out" 2>"$tmp/c3.log"
ok $? "cleanup after the last row was sent"
is "$(q "SELECT to_regclass('public.outbox_t170_b') IS NULL")" "t" "now that partition is dropped too"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_id = 't170-now'")" "1" \
	"the current unsent row is untouched"

# A janitor that died between its two steps (detached, not dropped): the
# next round drops the table.
q "CREATE TABLE public.outbox_t170_c (LIKE public.outbox INCLUDING DEFAULTS);
   ALTER TABLE public.outbox ATTACH PARTITION public.outbox_t170_c
     FOR VALUES FROM ('2020-01-05 00:00+00') TO ('2020-01-06 00:00+00')" >/dev/null
is "$(q "SELECT public.outboxd_outbox_detach('public.outbox_t170_c')")" "0" "a partition detached by hand"
"$BIN/outboxctl" -c "$conf" cleanup >/dev/null 2>"$tmp/c4.log"
grep -q "dropped public.outbox_t170_c, detached by an earlier round" "$tmp/c4.log"
ok $? "the next round drops what an interrupted round detached, and says so"
is "$(q "SELECT to_regclass('public.outbox_t170_c') IS NULL")" "t" "it is gone"

"$BIN/outboxctl" cleanup --bogus >/dev/null 2>&1; is "$?" "2" "a bad flag exits 2"
"$BIN/outboxctl" --help | grep -q "cleanup \[--dry-run\]"; ok $? "--help describes cleanup"
bad=$(test_conf <<EOF
[cleanup]
retention_s = -5
EOF
)
"$BIN/outboxctl" -c "$bad" cleanup 2>"$tmp/bad.err"; is "$?" "2" "a bad [cleanup] value exits 2"
grep -q "^$bad:2: \[cleanup\] retention_s" "$tmp/bad.err"; ok $? "... with FILE:LINE"
rm -f "$conf" "$bad"
done_testing
