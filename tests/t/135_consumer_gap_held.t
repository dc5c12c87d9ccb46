#!/usr/bin/env bash
# A gap heals only when the events after it are applied. The outbox gets
# seq 1 and 3 of an order, the relay sends both (and marks them sent, so
# it never sends 3 again); the consumer applies 1 and holds 3 in sink.held;
# it is restarted; seq 2 arrives: 2 and then 3 are applied in one
# transaction, the gap is healed, verify reports nothing lost. Then a
# forged message takes seq 4 with an event id of its own before the genuine
# seq 4 arrives (and is dropped as stale): verify matches event ids, so it
# fails, with the genuine event lost and one wrong event applied.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-135.XXXXXX")
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
poll_interval_ms = 100
[consumer]
group_id = $OUTBOX_GROUP
commit_interval_ms = 100
EOF
)
pids=
cleanup() {
	# shellcheck disable=SC2086
	[ -n "$pids" ] && { kill -KILL $pids; wait $pids; } 2>/dev/null
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT

event() { # SEQ STATUS: one outbox row of order 1 (and the order row at that version)
	q "INSERT INTO public.orders (id, customer_id, status, total_cents, version)
	   VALUES (1, 'c-1', '$2', 100, $1)
	   ON CONFLICT (id) DO UPDATE SET version = greatest(orders.version, $1), status = '$2'" >/dev/null &&
	q "INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type, payload)
	   VALUES ('order', '1', $1, 'order.$2', jsonb_build_object('order_id', '1', 'seq', $1,
	           'status', '$2', 'total_cents', 100))" >/dev/null
}
event 1 placed && event 3 packed
ok $? "the outbox holds seq 1 and 3 of order 1"

"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/relay.log" 2>&1 &
pids="$pids $!"
sent() { [ "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" = 0 ]; }
wait_for 30 sent
ok $? "the relay sent (and marked) both"

"$BIN/outbox-consumer" -c "$conf" --id 0 >"$tmp/consumer1.log" 2>&1 &
cpid=$!
held() { [ "$(q "SELECT count(*) FROM sink.held")" = 1 ]; }
wait_for 30 held
ok $? "the consumer holds seq 3"
is "$(q "SELECT aggregate_id || ':' || aggregate_seq FROM sink.held")" "1:3" "sink.held has order 1 seq 3"
is "$(q "SELECT string_agg(aggregate_seq::text, ',' ORDER BY id) FROM sink.side_effects")" "1" \
	"only seq 1 is applied"
is "$(q "SELECT expected_seq || ':' || got_seq || ':' || (healed_at IS NULL) FROM sink.ordering_audit
	WHERE kind = 'gap'")" "2:3:true" "the gap (2 expected, 3 got) is open"
sleep 0.5   # its offset committed (commit_interval_ms = 100)
kill -TERM "$cpid"; wait "$cpid"
ok $? "the consumer stops cleanly"

"$BIN/outbox-consumer" -c "$conf" --id 0 >"$tmp/consumer2.log" 2>&1 &
pids="$pids $!"
event 2 paid
applied3() { [ "$(q "SELECT count(*) FROM sink.side_effects")" = 3 ]; }
wait_for 30 applied3
ok $? "after a restart, seq 2 arrives and the consumer applies 2 and 3"
is "$(q "SELECT string_agg(aggregate_seq::text, ',' ORDER BY id) FROM sink.side_effects")" "1,2,3" \
	"in order, once each"
is "$(q "SELECT count(*) FROM sink.held")" "0" "nothing is held any more"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'gap' AND healed_at IS NULL")" "0" \
	"the gap is healed"
is "$(q "SELECT last_seq || ':' || events_applied || ':' || status FROM sink.order_projection
	WHERE order_id = '1'")" "3:3:packed" "the projection is at seq 3, with seq 3's status"
is "$(q "SELECT count(*) FROM public.outbox o WHERE NOT EXISTS (SELECT 1 FROM sink.side_effects s
	WHERE s.event_id = o.event_id)")" "0" "every outbox event id has its side effect"
grep -q "1 held event(s) after seq 2 applied" "$tmp/consumer2.log"
ok $? "the log says the held event was applied"
"$BIN/outboxctl" -c "$conf" verify --json --wait 20 >"$tmp/verify.json"
ok $? "outboxctl verify passes: $(cat "$tmp/verify.json")"

forged=$(cat /proc/sys/kernel/random/uuid)
printf '{"order_id":"1","seq":4,"status":"forged","total_cents":1}\n' |
	kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -k 1 -H "event_id=$forged" \
	-H event_type=order.forged -H aggregate_type=order -H aggregate_seq=4 2>/dev/null
applied4() { [ "$(q "SELECT count(*) FROM sink.side_effects")" = 4 ]; }
wait_for 30 applied4
ok $? "a forged seq 4 is applied (the consumer cannot tell)"
event 4 shipped
dup4() { [ "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'duplicate' AND got_seq = 4")" = 1 ]; }
wait_for 30 dup4
ok $? "the genuine seq 4 is dropped as stale"
"$BIN/outboxctl" -c "$conf" verify --json --wait 10 >"$tmp/verify2.json"
is "$?" "1" "outboxctl verify fails"
is "$(jq -r '"\(.lost) \(.wrong_event_applied) \(.ok)"' "$tmp/verify2.json")" "1 1 false" \
	"lost 1 (the genuine event), wrong_event_applied 1 (the forged one)"
done_testing
