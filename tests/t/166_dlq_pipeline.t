#!/usr/bin/env bash
# Dead letters and quarantine in the whole pipeline: outboxd with 2 relays
# and 3 consumers carries 500 orders x 5 events while a trigger refuses
# seq 3 of five orders, and the consumers crash now and then (after apply,
# after commit, and on both sides of recording a dead letter). Once drained:
# exactly those five events are dead-lettered (once each in the table),
# seq 4 and 5 of those orders are parked (once each), every other order is
# applied 1..5, nothing twice, no gap open. Once the trigger is gone,
# outboxctl dlq retry of each dead letter releases the rest and outboxctl
# verify passes.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
q "TRUNCATE sink.dead_letters, sink.parked, sink.quarantine RESTART IDENTITY CASCADE" >/dev/null
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-166.XXXXXX")
SUP_PID=
cleanup() {
	[ -n "$SUP_PID" ] && kill -KILL "$SUP_PID" 2>/dev/null # workers follow (PDEATHSIG)
	q "DROP TRIGGER IF EXISTS t166_fault ON sink.side_effects;
	   DROP FUNCTION IF EXISTS sink.t166_fault()" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT

BLOCKED="'7','77','177','277','377'"
q "CREATE FUNCTION sink.t166_fault() RETURNS trigger LANGUAGE plpgsql AS \$\$
   BEGIN
     IF NEW.aggregate_id IN ($BLOCKED) AND NEW.aggregate_seq = 3 THEN
       RAISE EXCEPTION 't166: % seq 3 refused', NEW.aggregate_id USING ERRCODE = '23514';
     END IF;
     RETURN NEW;
   END \$\$;
   CREATE TRIGGER t166_fault BEFORE INSERT ON sink.side_effects
     FOR EACH ROW EXECUTE FUNCTION sink.t166_fault()" >/dev/null
ok $? "installed a trigger refusing seq 3 of orders 7, 77, 177, 277, 377"

conf="$tmp/outboxd.conf"
cat >"$conf" <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
poll_interval_ms = 200
[consumer]
group_id = $OUTBOX_GROUP
retry_max_attempts = 2
retry_backoff_ms = 20
[supervisor]
http_listen = off
audit_file = $tmp/audit.jsonl
backoff_max_ms = 500
stable_ms = 5000
EOF
OUTBOX_CRASH="consumer.after_apply:0.003,consumer.after_commit:0.003,consumer.after_dlq_publish:0.3,consumer.after_dead_letter:0.3" \
OUTBOX_CRASH_SEED=166 OUTBOX_CRASH_LOG="$tmp/crashes.log" \
	"$BIN/outboxd" -c "$conf" --relays 2 --consumers 3 >"$tmp/outboxd.log" 2>&1 &
SUP_PID=$!
"$BIN/orders" -c "$conf" --mode outbox --orders 500 --events-per-order 5 --concurrency 4 --quiet \
	>"$tmp/orders.log" 2>&1
ok $? "the order service wrote 500 orders x 5 events"
is "$(q "SELECT count(*) FROM public.orders WHERE id::text IN ($BLOCKED)")" "5" \
	"the five blocked orders exist"

drained() {
	[ "$(q "SELECT (SELECT count(*) FROM sink.side_effects) || ' ' ||
	           (SELECT count(*) FROM sink.parked) || ' ' ||
	           (SELECT count(*) FROM sink.dead_letters)")" = "2485 10 5" ]
}
wait_for 180 drained
ok $? "drained: 2,485 applied, 10 parked, 5 dead letters"
crashes=$(grep -c . "$tmp/crashes.log" 2>/dev/null || echo 0)
diag "consumer crashes: $(sort "$tmp/crashes.log" 2>/dev/null | uniq -c | tr '\n' ' ')"
cmp_ok "$crashes" -ge 3 "consumers crashed along the way ($crashes times)"

is "$(q "SELECT string_agg(aggregate_id || ':' || aggregate_seq || ':' || reason, ' '
         ORDER BY aggregate_id::int) FROM sink.dead_letters")" \
	"7:3:exhausted 77:3:exhausted 177:3:exhausted 277:3:exhausted 377:3:exhausted" \
	"exactly the refused events are dead-lettered, once each"
is "$(q "SELECT string_agg(aggregate_id || '.' || aggregate_seq, ' '
         ORDER BY aggregate_id::int, aggregate_seq) FROM sink.parked")" \
	"7.4 7.5 77.4 77.5 177.4 177.5 277.4 277.5 377.4 377.5" \
	"their seq 4 and 5 are parked, once each"
is "$(q "SELECT count(*) FROM sink.quarantine")" "5" "the five orders are quarantined"
is "$(q "SELECT count(*) FROM sink.order_projection WHERE last_seq = 5")" "495" \
	"every other order is at seq 5"
is "$(q "SELECT count(*) FROM sink.order_projection WHERE order_id IN ($BLOCKED) AND last_seq = 2")" \
	"5" "the blocked orders stay at seq 2"
is "$(q "SELECT count(*) FROM (SELECT 1 FROM sink.side_effects GROUP BY event_id
         HAVING count(*) > 1) d")" "0" "nothing applied twice"
is "$(q "SELECT count(*) FROM (SELECT aggregate_seq, row_number() OVER
	(PARTITION BY aggregate_id ORDER BY id) AS n FROM sink.side_effects) s WHERE aggregate_seq <> n")" \
	"0" "per order, applied in seq order"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'gap' AND healed_at IS NULL")" "0" \
	"no gap open"
read -r messages distinct < <(topic_counts "$OUTBOX_TOPIC.dlq")
is "$distinct" "5" "the dead-letter topic holds the 5 refused events ($messages messages)"

q "DROP TRIGGER t166_fault ON sink.side_effects" >/dev/null
fails=0
for id in $(q "SELECT id FROM sink.dead_letters ORDER BY id"); do
	"$BIN/outboxctl" -c "$conf" dlq retry "$id" >>"$tmp/retry.log" 2>&1 || fails=$((fails + 1))
done
is "$fails" "0" "outboxctl dlq retry of each dead letter exits 0"
is "$(q "SELECT count(*) FROM sink.parked") $(q "SELECT count(*) FROM sink.quarantine")" "0 0" \
	"nothing parked, nothing quarantined"
"$BIN/outboxctl" -c "$conf" verify --json --wait 30 >"$tmp/verify.json"
ok $? "outboxctl verify passes: $(cat "$tmp/verify.json")"
is "$(jq -r '[.committed, .applied, .lost, .double_applied, .out_of_order] | @tsv' "$tmp/verify.json")" \
	"2500	2500	0	0	0" "2,500 committed and applied, none lost, twice or out of order"

kill -TERM "$SUP_PID"; wait "$SUP_PID"; rc=$?; SUP_PID=
is "$rc" "0" "outboxd exits 0 on SIGTERM"
if [ "$T_FAILED" -gt 0 ]; then
	sed 's/^/# /' "$tmp/outboxd.log" | grep -v INFO | tail -40
	sed 's/^/# /' "$tmp/retry.log"
fi
done_testing
