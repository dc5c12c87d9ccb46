#!/usr/bin/env bash
# The consumer's command line and bad input: --help, a bad flag and a bad
# config exit as the contract says; messages without headers, without a key
# or with a malformed seq are audited as poison and the consumer goes on
# (a good message after them is applied).
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-132.XXXXXX")
pid=
trap 'kill -KILL $pid 2>/dev/null; rm -rf "$tmp"' EXIT

out=$("$BIN/outbox-consumer" --help 2>&1)
is "$?" "0" "--help exits 0"
echo "$out" | grep -q '^usage: outbox-consumer'
ok $? "--help prints usage"
"$BIN/outbox-consumer" --no-such-flag >/dev/null 2>&1
is "$?" "2" "a bad flag exits 2"
"$BIN/outbox-consumer" --id x >/dev/null 2>&1
is "$?" "2" "a bad --id exits 2"
"$BIN/outbox-consumer" extra >/dev/null 2>&1
is "$?" "2" "a stray argument exits 2"
printf '[consumer]\ngroup_id = g\ncommit_interval_ms = soon\n' >"$tmp/bad.conf"
err=$("$BIN/outbox-consumer" -c "$tmp/bad.conf" 2>&1 >/dev/null)
is "$?" "2" "a malformed config exits 2"
echo "$err" | grep -q "^$tmp/bad.conf:3: "
ok $? "and says FILE:LINE ($err)"
"$BIN/outbox-consumer" -c "$tmp/missing.conf" >/dev/null 2>&1
is "$?" "2" "a missing config file exits 2"

services_up
reset_db
fresh_topic
audit="$tmp/audit.jsonl"
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
[supervisor]
audit_file = $audit
EOF
)
trap 'kill -KILL $pid 2>/dev/null; rm -rf "$tmp" "$conf"' EXIT
order="P-$$-$RANDOM"
good=$(cat /proc/sys/kernel/random/uuid)
k() { kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -p 0 "$@" 2>/dev/null; }
# All on partition 0, so "the good one came after the bad ones" is ordered.
echo '{"no":"headers"}' | k -k "$order"
echo 'not json at all' | k
echo '{}' | k -H "event_id=$good" -H aggregate_seq=1                          # no key
echo '{}' | k -k "$order" -H "event_id=not-a-uuid" -H aggregate_seq=1
echo '{}' | k -k "$order" -H "event_id=$(cat /proc/sys/kernel/random/uuid)" -H aggregate_seq=x
echo '{"status":"placed","total_cents":5}' | k -k "$order" -H "event_id=$good" \
	-H event_type=order.placed -H aggregate_type=order -H aggregate_seq=1
ok $? "fed 5 bad messages and a good one"

"$BIN/outbox-consumer" -c "$conf" --id 3 >"$tmp/consumer.log" 2>&1 &
pid=$!
applied() { [ "$(q "SELECT count(*) FROM sink.side_effects")" -ge 1 ]; }
wait_for 30 applied
ok $? "the good message after the bad ones is applied"
sleep 1.2
kill -0 "$pid" 2>/dev/null
ok $? "the consumer is still running"
kill -TERM "$pid"
wait "$pid"
is "$?" "0" "and exits 0 on SIGTERM"

is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'poison'")" "5" "5 poison rows"
is "$(q "SELECT string_agg(kafka_offset::text, ',' ORDER BY kafka_offset) FROM sink.ordering_audit
         WHERE kind = 'poison' AND kafka_partition = 0 AND consumer_id = 3")" "0,1,2,3,4" \
	"each poison row names its partition, offset and consumer"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'poison'
         AND (detail IS NULL OR detail = '')")" "0" "each poison row says why"
is "$(q "SELECT detail FROM sink.ordering_audit WHERE kind = 'poison' AND kafka_offset = 2")" \
	"no key (aggregate_id)" "the key-less message is recognised as such"
is "$(q "SELECT aggregate_id, aggregate_seq, event_id FROM sink.side_effects")" "$order|1|$good" \
	"the good message applied as seq 1 of its order"
is "$(q "SELECT last_seq, status, total_cents FROM sink.order_projection")" "1|placed|5" \
	"projection from the good message"
is "$(jq -r 'select(.kind == "poison") | .kafka_offset' "$audit" 2>/dev/null | tr '\n' ' ')" \
	"0 1 2 3 4 " "audit file: a poison line per bad message"
is "$(q "SELECT poison, applied FROM sink.consumers WHERE consumer_id = 3")" "5|1" \
	"sink.consumers counts them"
if [ "$T_FAILED" -gt 0 ]; then sed 's/^/# /' "$tmp/consumer.log"; fi
done_testing
