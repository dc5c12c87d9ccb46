#!/usr/bin/env bash
# Consumer dedupe and ordering: one order's events fed by hand with kcat:
# seq 1, 2, 2 again (same event id: inbox duplicate), 1 with a new event id
# (stale seq), 4 (gap: 3 expected; held), 3 (applied, then the held 4), 4
# again. Exactly 1, 2, 3, 4 apply, once each and in that order; the gap is
# audited and healed; the three duplicates are audited; offsets are
# committed (a restart re-applies nothing).
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-130.XXXXXX")
audit="$tmp/audit.jsonl"
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
commit_interval_ms = 100
[supervisor]
audit_file = $audit
EOF
)
order="A-$$-$RANDOM"
E1=$(cat /proc/sys/kernel/random/uuid) E2=$(cat /proc/sys/kernel/random/uuid)
E3=$(cat /proc/sys/kernel/random/uuid) E4=$(cat /proc/sys/kernel/random/uuid)
E5=$(cat /proc/sys/kernel/random/uuid) E6=$(cat /proc/sys/kernel/random/uuid)

feed() { # feed EVENT_ID SEQ STATUS
	printf '{"order_id":"%s","seq":%s,"status":"%s","total_cents":%s}\n' \
		"$order" "$2" "$3" "$((100 * $2))" |
	kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -k "$order" -H "event_id=$1" \
		-H event_type="order.$3" -H aggregate_type=order -H "aggregate_seq=$2" 2>/dev/null
}
feed "$E1" 1 placed && feed "$E2" 2 paid && feed "$E2" 2 paid && feed "$E5" 1 placed &&
	feed "$E4" 4 shipped && feed "$E3" 3 packed && feed "$E4" 4 shipped
ok $? "fed 7 messages for order $order"

pid=
start_consumer() {
	"$BIN/outbox-consumer" -c "$conf" --id 0 >>"$tmp/consumer.log" 2>&1 &
	pid=$!
}
stop_consumer() {
	kill -TERM "$pid" 2>/dev/null
	wait "$pid"
}
trap 'kill -KILL $pid 2>/dev/null; rm -rf "$tmp" "$conf"' EXIT

start_consumer
worked_through() {
	[ "$(q "SELECT count(*) FROM sink.ordering_audit")" -ge 3 ] &&
		[ "$(q "SELECT coalesce(max(last_seq), 0) FROM sink.order_projection")" -ge 4 ]
}
wait_for 30 worked_through
ok $? "the consumer worked through the messages"
sleep 1.5 # let a late wrong apply show itself, and the counters be written
stop_consumer
is "$?" "0" "SIGTERM: the consumer exits 0"

is "$(q "SELECT string_agg(aggregate_seq::text, ',' ORDER BY id) FROM sink.side_effects
         WHERE aggregate_id = '$order'")" "1,2,3,4" "side effects: seq 1,2,3,4 once each, in order"
is "$(q "SELECT string_agg(event_id::text, ',' ORDER BY id) FROM sink.side_effects")" \
	"$E1,$E2,$E3,$E4" "side effects carry the right event ids (not the stale seq-1 one)"
is "$(q "SELECT count(*) FROM sink.side_effects WHERE consumer_id = 0
         AND kafka_partition IS NOT NULL AND kafka_offset IS NOT NULL")" "4" \
	"side effects record consumer id, partition and offset"
is "$(q "SELECT count(*) FROM sink.inbox")" "4" "inbox: 4 rows"
is "$(q "SELECT count(*) FROM sink.inbox WHERE event_id IN ('$E1','$E2','$E3','$E4')")" "4" \
	"inbox: exactly the applied event ids"
is "$(q "SELECT last_seq, events_applied, status, total_cents FROM sink.order_projection
         WHERE order_id = '$order'")" "4|4|shipped|400" \
	"projection: last_seq 4, 4 events, status and total of seq 4"

is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'gap'")" "1" "one gap row"
is "$(q "SELECT aggregate_id, expected_seq, got_seq, event_id, consumer_id, kafka_offset,
                kafka_partition IS NOT NULL, healed_at IS NOT NULL, healed_at >= detected_at
         FROM sink.ordering_audit WHERE kind = 'gap'")" \
	"$order|3|4|$E4|0|4|t|t|t" "gap: expected 3, got 4 (event, offset, partition), healed"
is "$(q "SELECT string_agg(expected_seq || ':' || got_seq || ':' || event_id || ':' || kafka_offset,
                ' ' ORDER BY id)
         FROM sink.ordering_audit WHERE kind = 'duplicate'")" \
	"3:2:$E2:2 3:1:$E5:3 5:4:$E4:6" \
	"duplicate rows: the repeated event id, the stale seq, and 4 again (applied from hold)"
is "$(q "SELECT count(*) FROM sink.ordering_audit")" "4" "no other audit rows"

is "$(jq -r '.kind' "$audit" 2>/dev/null | tr '\n' ' ')" "duplicate duplicate gap gap_healed duplicate " \
	"audit file: one JSON line per audit record, in order"
is "$(jq -r 'select(.kind == "gap") | [.aggregate_id, .expected_seq, .got_seq, .event_id,
	.consumer_id, .kafka_offset, (.kafka_partition | type),
	(.detected_at | test("^[0-9-]{10}T"))] | map(tostring) | join("|")' "$audit" 2>/dev/null)" \
	"$order|3|4|$E4|0|4|number|true" "audit file: the gap line has every field"
is "$(jq -r 'select(.kind == "gap_healed") | [.aggregate_id, .expected_seq, .got_seq, .event_id]
	| map(tostring) | join("|")' "$audit" 2>/dev/null)" \
	"$order|3|4|$E3" "audit file: the gap_healed line names the gap and the event that closed it"
is "$(jq -r 'select(.kind == "duplicate") | [.expected_seq, .got_seq, .event_id]
	| map(tostring) | join("|")' "$audit" 2>/dev/null | tr '\n' ' ')" \
	"3|2|$E2 3|1|$E5 5|4|$E4 " "audit file: the three duplicates"
is "$(q "SELECT received, applied, duplicates, gaps, poison FROM sink.consumers
         WHERE consumer_id = 0")" "7|4|3|1|0" "sink.consumers counters"

# Restart: the committed offsets mean nothing is delivered again; a new
# event (seq 5) is the only thing this run receives.
feed "$E6" 5 delivered
start_consumer
seq5_applied() {
	[ "$(q "SELECT last_seq FROM sink.order_projection WHERE order_id = '$order'")" = 5 ]
}
wait_for 30 seq5_applied
ok $? "restarted consumer applies seq 5"
sleep 1.5 # counters are written about once a second
stop_consumer
is "$?" "0" "second run exits 0 on SIGTERM"
is "$(q "SELECT received, applied, duplicates FROM sink.consumers WHERE consumer_id = 0")" \
	"1|1|0" "after the restart only the new message was received (offsets were committed)"
is "$(q "SELECT string_agg(aggregate_seq::text, ',' ORDER BY id) FROM sink.side_effects")" \
	"1,2,3,4,5" "nothing re-applied"
if [ "$T_FAILED" -gt 0 ]; then sed 's/^/# /' "$tmp/consumer.log"; fi
done_testing
