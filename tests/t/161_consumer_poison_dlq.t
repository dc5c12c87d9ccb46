#!/usr/bin/env bash
# Poison goes to the dead-letter topic and sink.dead_letters at once, with
# its reason, spending no retry budget (the budget here is 10 attempts with a
# 2 s backoff, so a retried message would take seconds): a payload that is
# not JSON, one that is JSON but not an object, a missing event_type header,
# an event type outside [consumer] event_types, a missing aggregate_seq
# header. The audit row (kind poison) stays too, and the good event after
# them is applied.
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-161.XXXXXX")
pid=
conf=
trap '[ -n "$pid" ] && kill -KILL $pid 2>/dev/null; rm -rf "$tmp" "$conf"' EXIT

services_up
reset_db
q "TRUNCATE sink.dead_letters, sink.parked, sink.quarantine RESTART IDENTITY CASCADE" >/dev/null
fresh_topic
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
retry_max_attempts = 10
retry_backoff_ms = 2000
event_types = order.*
[supervisor]
audit_file = $tmp/audit.jsonl
EOF
)
sfx="$$-$RANDOM"
uuid() { cat /proc/sys/kernel/random/uuid; }
k() { kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -p 0 "$@" 2>/dev/null; }
hdrs() { # hdrs EVENT_ID SEQ TYPE
	echo -H "event_id=$1" -H "aggregate_seq=$2" -H "event_type=$3" -H aggregate_type=order
}
E0=$(uuid) E1=$(uuid) E2=$(uuid) E3=$(uuid) E4=$(uuid) GOOD=$(uuid)
# shellcheck disable=SC2046
{
	echo 'this is not json' | k -k "P0-$sfx" $(hdrs "$E0" 1 order.placed)
	echo '[1, 2, 3]' | k -k "P1-$sfx" $(hdrs "$E1" 1 order.placed)
	echo '{}' | k -k "P2-$sfx" -H "event_id=$E2" -H aggregate_seq=1
	echo '{}' | k -k "P3-$sfx" $(hdrs "$E3" 1 invoice.sent)
	echo '{}' | k -k "P4-$sfx" -H "event_id=$E4" -H event_type=order.paid
	echo '{"status":"placed","total_cents":3}' | k -k "G-$sfx" $(hdrs "$GOOD" 1 order.placed)
}
ok $? "fed 5 poison messages and a good one"

t0=$(date +%s%N)
"$BIN/outbox-consumer" -c "$conf" --id 2 >"$tmp/consumer.log" 2>&1 &
pid=$!
good_in() { [ "$(q "SELECT count(*) FROM sink.side_effects WHERE event_id = '$GOOD'")" = 1 ]; }
wait_for 30 good_in
ok $? "the good message after the poison is applied"
t1=$(date +%s%N)
cmp_ok $(((t1 - t0) / 1000000)) -lt 8000 \
	"no backoff was spent on poison (5 x 2 s would be 10 s; took $(((t1 - t0) / 1000000)) ms)"
sleep 1.5
kill -TERM "$pid"; wait "$pid"; rc=$?; pid=
is "$rc" "0" "consumer exits 0 on SIGTERM"

is "$(q "SELECT string_agg(kafka_offset || ':' || reason || ':' || attempts || ':' || error, '|'
         ORDER BY kafka_offset) FROM sink.dead_letters")" \
	"0:poison:1:payload is not JSON|1:poison:1:payload is not a JSON object|2:poison:1:missing event_type header|3:poison:1:unknown event type \"invoice.sent\"|4:poison:1:missing aggregate_seq header" \
	"sink.dead_letters: all 5, reason poison, 1 attempt, each with why"
is "$(q "SELECT count(*) FROM sink.dead_letters WHERE first_failure_at = last_failure_at
         AND consumer_id = 2 AND status = 'open' AND topic = '$OUTBOX_TOPIC'")" "5" \
	"first = last failure, consumer and topic recorded"
is "$(q "SELECT convert_from(payload, 'UTF8') FROM sink.dead_letters WHERE kafka_offset = 0")" \
	"this is not json" "the original payload is kept"
is "$(q "SELECT convert_from(msg_key, 'UTF8') FROM sink.dead_letters WHERE kafka_offset = 3")" \
	"P3-$sfx" "the original key is kept"
is "$(q "SELECT headers->0->>0, headers->0->>1 FROM sink.dead_letters WHERE kafka_offset = 3")" \
	"event_id|$E3" "the original headers are kept, in order"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'poison'")" "5" \
	"each poison message still has its audit row"
is "$(q "SELECT count(*) FROM sink.side_effects")" "1" "nothing but the good event applied"
is "$(q "SELECT retries FROM sink.consumers WHERE consumer_id = 2")" "0" "no retry was counted"

dlq=$(kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC.dlq" -e -q -f '%o\t%k\t%h\t%s\n' 2>/dev/null)
is "$(echo "$dlq" | grep -c .)" "5" "the dead-letter topic holds the 5 poison messages"
is "$(echo "$dlq" | cut -f3 | tr ',' '\n' | grep -c '^dlq_reason=poison$')" "5" \
	"each with dlq_reason=poison"
echo "$dlq" | grep -q "^[0-9]*	P3-$sfx	.*dlq_error=unknown event type \"invoice.sent\""
ok $? "the unknown event type's message: key and dlq_error"
echo "$dlq" | grep -q "	this is not json$"
ok $? "the non-JSON payload goes to the topic as it came"

# A poison message of an order quarantines it: the next event parks.
is "$(q "SELECT count(*) FROM sink.quarantine WHERE order_id IN ('P0-$sfx', 'P1-$sfx', 'P3-$sfx')")" \
	"3" "orders of poison events with a seq are quarantined"

out=$("$BIN/outboxctl" -c "$conf" dlq list 2>&1)
is "$?" "0" "outboxctl dlq list exits 0"
echo "$out" | grep -q "^5 dead letter(s) open$"
ok $? "and counts 5 open dead letters"
is "$("$BIN/outboxctl" -c "$conf" dlq list --json | jq -r 'select(.kafka_offset == 3) | .error')" \
	"unknown event type \"invoice.sent\"" "dlq list --json: one object per dead letter"
"$BIN/outboxctl" -c "$conf" dlq retry 4 >"$tmp/retry.out" 2>&1
is "$?" "1" "dlq retry of a poison message fails (exit 1)"
grep -q "still poison" "$tmp/retry.out"
ok $? "and says it is still poison"
"$BIN/outboxctl" -c "$conf" dlq drop 4 >/dev/null 2>&1
is "$?" "2" "dlq drop without --reason is a usage error"
"$BIN/outboxctl" -c "$conf" dlq retry >/dev/null 2>&1
is "$?" "2" "dlq retry without an id is a usage error"
"$BIN/outboxctl" -c "$conf" dlq frobnicate >/dev/null 2>&1
is "$?" "2" "an unknown dlq action is a usage error"
if [ "$T_FAILED" -gt 0 ]; then sed 's/^/# /' "$tmp/consumer.log"; fi
done_testing
