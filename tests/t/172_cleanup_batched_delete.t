#!/usr/bin/env bash
# The batched-delete mode, for an outbox that stays unpartitioned
# ([cleanup] partitioned = off), in a database of its own: the janitor
# deletes only the sent rows older than the retention, in batches of
# delete_batch_size, keeps (and reports) old unsent rows, never touches
# younger rows, and stops a round when round_budget_ms is spent.
. "$(dirname "$0")/../lib.sh"

services_up
tmp=$(mktemp -d /tmp/outboxd-172.XXXXXX)
db=outboxd_t172
cleanup() {
	dropdb --if-exists "$db" >/dev/null 2>&1
	[ "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db" || bail "createdb $db failed"
export OUTBOX_PG="${OUTBOX_PG/dbname=outboxd/dbname=$db}"
export PGDATABASE=$db

cat >"$tmp/c.conf" <<EOF
[cleanup]
partitioned = off
retention_s = 3600
delete_batch_size = 100
EOF
"$BIN/outboxctl" -c "$tmp/c.conf" migrate >/dev/null
ok $? "migrate with partitioned = off"
is "$(q "SELECT relkind FROM pg_class WHERE oid = 'public.outbox'::regclass")" "r" \
	"the outbox is one plain table"

# rows KIND N CREATED_AGO SENT: N rows, created that long ago, sent or not.
rows() {
	q "INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type,
	     payload, created_at, sent_at)
	   SELECT 'order', '$1-' || g, 1, 'placed', '{}', now() - interval '$3' + g * interval '1 ms',
	          CASE WHEN $4 THEN now() - interval '$3' + interval '1 second' END
	     FROM generate_series(1, $2) g" >/dev/null
}
# In id order, as in life (ids and created_at both grow with time): the
# oldest first.
rows older-sent 3000 '3 hours' true
rows old-sent 1000 '2 hours' true
rows old-unsent 50 '2 hours' false
rows new-sent 300 '10 minutes' true
rows new-unsent 200 '10 minutes' false

"$BIN/outboxctl" -c "$tmp/c.conf" cleanup --dry-run --json >"$tmp/dry.json" 2>/dev/null
is "$(jq -r '"\(.partitioned) \(.deleted) \(.kept_unsent)"' "$tmp/dry.json")" "false 4000 50" \
	"dry run: 4,000 rows to delete, 50 old unsent rows to keep"
is "$(q "SELECT count(*) FROM public.outbox")" "4550" "dry run deleted nothing"

# A round stops when its time budget is spent.
cat >"$tmp/slow.conf" <<EOF
[cleanup]
partitioned = off
retention_s = 3600
delete_batch_size = 5
round_budget_ms = 100
EOF
"$BIN/outboxctl" -c "$tmp/slow.conf" cleanup --json >"$tmp/c0.json" 2>/dev/null
ok $? "a round with a 100 ms budget and 5-row batches"
diag "$(jq -c '{deleted, budget_hit, elapsed_ms}' "$tmp/c0.json")"
is "$(jq -r .budget_hit "$tmp/c0.json")" "true" "it stopped on its budget"
d=$(jq -r .deleted "$tmp/c0.json")
cmp_ok "$d" -lt 4000 "before deleting all 4,000 old sent rows ($d)"
cmp_ok "$d" -gt 0 "having deleted some"
cmp_ok "$(jq -r .elapsed_ms "$tmp/c0.json")" -lt 2000 "its time stayed bounded"

"$BIN/outboxctl" -c "$tmp/c.conf" cleanup --json >"$tmp/c1.json" 2>"$tmp/c1.log"
ok $? "cleanup exits 0"
diag "$(cat "$tmp/c1.json")"
is "$(jq -r '"\(.deleted) \(.kept_unsent) \(.budget_hit)"' "$tmp/c1.json")" "$((4000 - d)) 50 false" \
	"a full round deletes the rest and keeps the 50 old unsent rows"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_id ~ '^old(er)?-sent-'")" "0" \
	"no sent row older than the retention is left"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_id LIKE 'old-unsent-%'")" "50" \
	"every old unsent row is still there"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_id LIKE 'new-%'")" "500" \
	"every row younger than the retention, sent or not, is still there"
batches=$(sed -n 's/.*deleted [0-9]* sent rows .* in \([0-9]*\) batch.*/\1/p' "$tmp/c1.log")
cmp_ok "$(( ${batches:-0} * 100 ))" -ge "$((4000 - d))" "in batches of at most 100 rows (${batches:-?} batches)"
grep -q "50 unsent row(s) older than the retention kept" "$tmp/c1.log"; ok $? "the kept unsent rows are logged"
is "$(q "SELECT count(*) FROM public.outbox")" "550" "only 50 old unsent + 500 young rows left"
done_testing
