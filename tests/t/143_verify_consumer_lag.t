#!/usr/bin/env bash
# outboxctl verify --wait judges nothing lost while the consumer group still
# has messages to process: with every event sent but no consumer running, it
# waits out --wait and says "not drained" (it must not call the events lost
# after a few quiet seconds, as a consumer slow to rejoin after a broker
# restart looks the same); once a consumer has processed the topic, an
# event that never reached it is judged lost within seconds.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-143.XXXXXX")
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
poll_interval_ms = 200
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

"$BIN/orders" -c "$conf" --mode outbox --orders 20 --events-per-order 5 --quiet >/dev/null 2>&1
ok $? "100 events committed"
"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/relay.log" 2>&1 &
pids="$pids $!"
drained() { [ "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" = 0 ]; }
wait_for 60 drained
ok $? "the relay sent them all"

t0=$SECONDS
"$BIN/outboxctl" -c "$conf" verify --json --wait 9 >"$tmp/v1.json" 2>"$tmp/v1.err"
is "$?" "1" "with no consumer running, verify --wait 9 fails"
is "$(jq -r '"\(.drained) \(.consumer_lag) \(.lost)"' "$tmp/v1.json")" "false 100 100" \
	"it is not drained: the group has 100 messages to process (not judged after 5 quiet s)"
cmp_ok "$((SECONDS - t0))" -ge 9 "it waited all of --wait"

"$BIN/outbox-consumer" -c "$conf" --id 0 >"$tmp/consumer.log" 2>&1 &
pids="$pids $!"
"$BIN/outboxctl" -c "$conf" verify --json --wait 60 >"$tmp/v2.json" 2>"$tmp/v2.err"
ok $? "with the consumer running, verify passes: $(cat "$tmp/v2.json")"
is "$(jq -r '"\(.drained) \(.applied) \(.lost)"' "$tmp/v2.json")" "true 100 0" "drained, 100 applied"

# An event the order service committed that never reached Kafka: lost, and
# judged so soon after the group has processed everything.
q "UPDATE public.orders SET version = version + 1 WHERE id = (SELECT min(id) FROM public.orders)" >/dev/null
t0=$SECONDS
"$BIN/outboxctl" -c "$conf" verify --json --wait 60 >"$tmp/v3.json" 2>"$tmp/v3.err"
is "$?" "1" "verify fails when a committed event never reached the topic"
is "$(jq -r '"\(.drained) \(.consumer_lag) \(.lost)"' "$tmp/v3.json")" "true 0 1" \
	"drained (no lag), 1 lost"
cmp_ok "$((SECONDS - t0))" -lt 30 "judged once the consumer side was quiet, not after --wait ran out"
done_testing
