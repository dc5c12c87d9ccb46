#!/usr/bin/env bash
# Partitions dropped while the order service writes and the relays publish:
# outboxd (2 relays, 2 consumers) with 2-second partitions, a 2-second
# retention and its janitor every second, while bin/orders writes 3,000
# events over about 20 s. Several fully sent partitions are dropped during
# the run, and yet nothing is lost: outboxctl verify passes and every
# committed event has its side effect in the sink. RELAY_MODE=cdc runs the
# same with CDC relays (test 174). In a database of its own.
. "$(dirname "$0")/../lib.sh"

mode=${RELAY_MODE:-poll}
services_up
fresh_topic
tmp=$(mktemp -d /tmp/outboxd-171-$mode.XXXXXX)
db=outboxd_t171_$mode
slot=t171_${mode}_$$
SUP_PID=
cleanup() {
	[ -n "$SUP_PID" ] && kill -KILL "$SUP_PID" 2>/dev/null
	pkill -KILL -f -- "-c $tmp/outboxd.conf" 2>/dev/null
	sleep 0.5
	q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
	   WHERE slot_name = '$slot'" >/dev/null 2>&1
	dropdb --if-exists --force "$db" >/dev/null 2>&1
	[ "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
# A database of its own, partitioned from the start.
dropdb --if-exists --force "$db" >/dev/null 2>&1
createdb "$db" || bail "createdb $db failed"
export OUTBOX_PG="${OUTBOX_PG/dbname=outboxd/dbname=$db}"
export PGDATABASE=$db

cat >"$tmp/outboxd.conf" <<EOF
[relay]
mode = $mode
poll_interval_ms = 200
heartbeat_ms = 500
slot_name = $slot
[supervisor]
http_listen = off
audit_file = $tmp/audit.jsonl
shutdown_timeout_ms = 20000
[cleanup]
partitioned = on
partition_interval_s = 2
partitions_ahead = 3
retention_s = 2
janitor_interval_s = 1
lock_timeout_ms = 1000
EOF
conf=$tmp/outboxd.conf

"$BIN/outboxctl" -c "$conf" migrate >/dev/null || bail "migrate failed"
"$BIN/outboxd" -c "$conf" --relays 2 --consumers 2 >"$tmp/outboxd.log" 2>&1 &
SUP_PID=$!
has_partitions() {
	[ "$(q "SELECT count(*) FROM public.outboxd_outbox_partitions WHERE NOT is_default")" -ge 3 ]
}
wait_for 20 has_partitions
ok $? "outboxd's janitor created the 2-second partitions ahead ($mode relays)"

write() { "$BIN/orders" -c "$conf" --mode outbox --orders "$1" --events-per-order 5 \
	--concurrency 4 --rate 150 --quiet >>"$tmp/orders.log" 2>&1; }
if [ "$mode" = cdc ]; then
	# A server restart under the streaming relay: PostgreSQL 15 was seen
	# to stream rows under a leaf partition's name afterwards.
	write 300
	ok $? "the order service wrote 300 orders x 5 events at 150 events/s"
	bash "$ROOT/scripts/services" restart pg >"$tmp/restart.log" 2>&1
	ok $? "PostgreSQL restarted under the streaming relay"
	write 300
	ok $? "and 300 orders more after the restart"
	grep -q "streaming slot" "$tmp/outboxd.log"; ok $? "a CDC relay streamed from its slot"
	diag "relations streamed under a partition's name: $(grep -c 'is a partition of public.outbox' "$tmp/outboxd.log")"
else
	write 600
	ok $? "the order service wrote 600 orders x 5 events at 150 events/s"
fi
drops_during=$(grep -c "janitor.*dropped partition" "$tmp/outboxd.log")
cmp_ok "$drops_during" -ge 4 "the janitor dropped partitions while the writers ran ($drops_during)"

"$BIN/outboxctl" -c "$conf" verify --json --wait 90 >"$tmp/verify.json"
ok $? "outboxctl verify exits 0"
diag "$(cat "$tmp/verify.json")"
is "$(jq -r '"\(.committed) \(.applied) \(.lost)"' "$tmp/verify.json")" "3000 3000 0" \
	"every one of the 3,000 committed events was applied, none lost"
is "$(q "SELECT count(*) || ' ' || count(DISTINCT (aggregate_id, aggregate_seq)) FROM sink.side_effects
	WHERE aggregate_id IN (SELECT id::text FROM public.orders)")" "3000 3000" \
	"the sink holds each committed event once"
is "$(q "SELECT count(*) FROM public.orders o WHERE o.version <> (SELECT count(*) FROM
	sink.side_effects s WHERE s.aggregate_id = o.id::text)")" "0" \
	"every order's events all reached the sink"
sleep 4 # let the last partitions expire and go
rows=$(q "SELECT count(*) FROM public.outbox")
cmp_ok "$rows" -lt 3000 "the outbox no longer holds the sent rows of the dropped partitions ($rows left)"
is "$(q "SELECT count(*) FROM public.outbox_default")+$(grep -c "outbox_default: deleted" "$tmp/outboxd.log")" \
	"0+0" "no row fell into the default partition (the partitions were always ahead)"
grep "janitor.*NOT dropping" "$tmp/outboxd.log" | head -3 | sed 's/^/# /'
grep "janitor" "$tmp/outboxd.log" | grep -E "ERROR|round failed" | head -3 | sed 's/^/# /'
is "$(grep "janitor" "$tmp/outboxd.log" | grep -cE "ERROR|round failed")" "0" "no janitor round failed"

kill -TERM "$SUP_PID"
wait "$SUP_PID"
ok $? "outboxd stops cleanly on SIGTERM"
SUP_PID=
done_testing
