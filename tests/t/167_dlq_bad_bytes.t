#!/usr/bin/env bash
# Poison whose bytes are not text (issue 17): a key that is not UTF-8, a NUL
# byte in a header value, a header value and a payload that are not UTF-8.
# Each is dead-lettered once: one sink.dead_letters row keeping its exact
# key, payload and header bytes, one copy on the dead-letter topic, its
# offset committed; the consumer keeps running (before the fix it exited 1
# on recording the dead letter, and crash-looped under the supervisor) and
# the good event after them on the same partition is applied. outboxctl dlq
# list shows the rows (non-UTF-8 escaped), and drop handles them. An event
# refused by the sink with such bytes in other headers is dead-lettered as
# exhausted and dlq retry applies it from the exact headers (headers_hex).
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-167.XXXXXX")
pid=
conf=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	q "DROP TRIGGER IF EXISTS t167_fault ON sink.side_effects;
	   DROP FUNCTION IF EXISTS sink.t167_fault()" >/dev/null 2>&1
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT

# kcat takes header values from its command line (no NUL byte): a tiny
# librdkafka producer takes key, value and headers in hex.
# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(pkg-config --cflags rdkafka) \
	-o "$tmp/produce_bytes" "$(dirname "$0")/../helpers/produce_bytes.c" \
	$(pkg-config --libs rdkafka)
ok $? "built the test producer (tests/helpers/produce_bytes.c)"

services_up
reset_db
q "TRUNCATE sink.dead_letters, sink.parked, sink.quarantine RESTART IDENTITY CASCADE" >/dev/null
fresh_topic
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
event_types = order.*
retry_max_attempts = 1
[supervisor]
audit_file = $tmp/audit.jsonl
EOF
)
sfx="$$-$RANDOM"
uuid() { cat /proc/sys/kernel/random/uuid; }
hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }
p() { "$tmp/produce_bytes" "$OUTBOX_KAFKA" "$OUTBOX_TOPIC" 0 "$@"; }
E0=$(uuid) E1=$(uuid) E2=$(uuid) E3=$(uuid) GOOD=$(uuid) R=$(uuid)
q "CREATE FUNCTION sink.t167_fault() RETURNS trigger LANGUAGE plpgsql AS \$\$
   BEGIN
     IF NEW.aggregate_id = 'R-$sfx' THEN
       RAISE EXCEPTION 't167: % refused', NEW.aggregate_id USING ERRCODE = 'P0001';
     END IF;
     RETURN NEW;
   END \$\$;
   CREATE TRIGGER t167_fault BEFORE INSERT ON sink.side_effects
     FOR EACH ROW EXECUTE FUNCTION sink.t167_fault()" >/dev/null
ok $? "installed a trigger refusing order R-$sfx"
std() { # std EVENT_ID: the headers of an event of seq 1 (but its type)
	echo "event_id=$(hex "$1")" "aggregate_seq=$(hex 1)" "aggregate_type=$(hex order)"
}
KEY0="4bfffe2d$(hex "$sfx")" # "K", 0xff, 0xfe, "-", suffix: not UTF-8
# shellcheck disable=SC2046
{
	# 0: the key is not UTF-8 (the event is otherwise fine)
	p "$KEY0" "$(hex '{"status":"placed"}')" $(std "$E0") "event_type=$(hex order.placed)" &&
	# 1: a NUL byte in a header value (event_type), and in another header
	p "$(hex "N-$sfx")" "$(hex '{}')" $(std "$E1") "event_type=$(hex order.placed)00ff" \
		"trace=610062" &&
	# 2: a header value that is not UTF-8 (event_type)
	p "$(hex "H-$sfx")" "$(hex '{}')" $(std "$E2") "event_type=$(hex order.)c328" &&
	# 3: a payload that is not UTF-8
	p "$(hex "B-$sfx")" "ff00fe7b7d" $(std "$E3") "event_type=$(hex order.placed)" &&
	# 4: a good event after them on the same partition
	p "$(hex "G-$sfx")" "$(hex '{"status":"placed","total_cents":3}')" $(std "$GOOD") \
		"event_type=$(hex order.placed)" &&
	# 5: an event the sink refuses, with a NUL and a stray byte in other headers
	p "$(hex "R-$sfx")" "$(hex '{}')" "trace=610062" $(std "$R") \
		"event_type=$(hex order.placed)" "bin=fffe"
}
ok $? "fed 4 poison messages with bytes that are not text, a good one, a refused one"

"$BIN/outbox-consumer" -c "$conf" --id 3 >"$tmp/consumer.log" 2>&1 &
pid=$!
good_in() {
	[ "$(q "SELECT count(*) FROM sink.side_effects WHERE event_id = '$GOOD'")" = 1 ] &&
		[ "$(q "SELECT count(*) FROM sink.dead_letters WHERE kafka_offset = 5")" = 1 ]
}
wait_for 30 good_in
ok $? "the good message after them is applied, the refused one dead-lettered"
sleep 1.5
kill -0 "$pid" 2>/dev/null
ok $? "the consumer is still running (no exit, so no respawn)"
kill -TERM "$pid" 2>/dev/null; wait "$pid"; rc=$?; pid=
is "$rc" "0" "consumer exits 0 on SIGTERM"

is "$(q "SELECT string_agg(kafka_offset || ':' || reason, ',' ORDER BY kafka_offset)
         FROM sink.dead_letters")" "0:poison,1:poison,2:poison,3:poison,5:exhausted" \
	"one sink.dead_letters row per poison message, and the refused one"
is "$(q "SELECT encode(msg_key, 'hex') FROM sink.dead_letters WHERE kafka_offset = 0")" \
	"$KEY0" "the key's exact bytes are kept"
is "$(q "SELECT coalesce(aggregate_id, 'NULL') FROM sink.dead_letters WHERE kafka_offset = 0")" \
	"NULL" "a key that is not UTF-8 leaves the text aggregate_id NULL"
is "$(q "SELECT aggregate_id FROM sink.dead_letters WHERE kafka_offset = 1")" "N-$sfx" \
	"a key that is UTF-8 is kept as text too"
is "$(q "SELECT encode(payload, 'hex') FROM sink.dead_letters WHERE kafka_offset = 3")" \
	"ff00fe7b7d" "the payload's exact bytes are kept"
hdr() { # hdr OFFSET NAME: the header's value bytes in hex, from headers_hex
	q "SELECT h->>1 FROM sink.dead_letters, jsonb_array_elements(headers_hex) h
	   WHERE kafka_offset = $1 AND decode(h->>0, 'hex') = '$2'::bytea"
}
is "$(hdr 1 event_type)" "$(hex order.placed)00ff" "a header value's NUL byte is kept (headers_hex)"
is "$(hdr 1 trace)" "610062" "so is another header's"
is "$(hdr 2 event_type)" "$(hex order.)c328" "a header value that is not UTF-8 is kept"
is "$(hdr 2 event_id)" "$(hex "$E2")" "and those that are text"
is "$(q "SELECT h->>1 IS NULL FROM sink.dead_letters, jsonb_array_elements(headers) h
         WHERE kafka_offset = 2 AND h->>0 = 'event_type'")" "t" \
	"the readable headers show null for it"
is "$(q "SELECT h->>1 FROM sink.dead_letters, jsonb_array_elements(headers) h
         WHERE kafka_offset = 2 AND h->>0 = 'event_id'")" "$E2" \
	"and keep the values that are text"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'poison'")" "4" \
	"each has one poison audit row"
is "$(q "SELECT count(*) FROM sink.side_effects")" "1" "nothing but the good event applied"

dlq_count() {
	kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC.dlq" -e -q -f '%o\n' 2>/dev/null | grep -c .
}
is "$(dlq_count)" "5" "the dead-letter topic holds one copy of each"
kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC.dlq" -e -q -f '%k\n' 2>/dev/null |
	od -An -v -tx1 | tr -d ' \n' | grep -q "0a${KEY0}0a\|^${KEY0}0a"
ok $? "one with the key's bytes as they came"

# The offsets were committed: the same member, restarted, gets its
# partitions back at once and receives nothing again.
"$BIN/outbox-consumer" -c "$conf" --id 3 >"$tmp/consumer2.log" 2>&1 &
pid=$!
assigned() { grep -q "assigned 12 partition" "$tmp/consumer2.log"; }
wait_for 30 assigned
ok $? "the restarted consumer gets its partitions"
sleep 3
kill -0 "$pid" 2>/dev/null
ok $? "and keeps running"
kill -TERM "$pid" 2>/dev/null; wait "$pid"; pid=
is "$(q "SELECT received FROM sink.consumers WHERE consumer_id = 3")" "0" \
	"and receives nothing: every offset was committed"
is "$(q "SELECT count(*) FROM sink.dead_letters")" "5" "no dead letter recorded twice"
is "$(dlq_count)" "5" "no second copy on the dead-letter topic"

out=$("$BIN/outboxctl" -c "$conf" dlq list 2>&1)
is "$?" "0" "outboxctl dlq list exits 0"
echo "$out" | grep -q "^5 dead letter(s) open$"
ok $? "and counts 5 open dead letters"
echo "$out" | iconv -f UTF-8 -t UTF-8 >/dev/null 2>&1
ok $? "its output is valid UTF-8"
echo "$out" | grep -qF 'K\xff\xfe-'
ok $? "the key that is not UTF-8 is shown escaped"
json=$("$BIN/outboxctl" -c "$conf" dlq list --json)
is "$?" "0" "dlq list --json exits 0"
is "$(echo "$json" | jq -s 'length')" "5" "one JSON object per dead letter"
is "$(echo "$json" | jq -r 'select(.kafka_offset == 0) | .key')" 'K\xff\xfe-'"$sfx" \
	"--json: the key, escaped"
is "$(echo "$json" | jq -r 'select(.kafka_offset == 1) | .key')" "N-$sfx" \
	"--json: a key that is text, as it is"
"$BIN/outboxctl" -c "$conf" dlq retry 1 >"$tmp/retry.out" 2>&1
is "$?" "1" "dlq retry of the key that is not UTF-8 fails (exit 1)"
grep -q "still poison" "$tmp/retry.out"
ok $? "and says it is still poison"
"$BIN/outboxctl" -c "$conf" dlq drop 1 --reason "bad key bytes" >"$tmp/drop.out" 2>&1
is "$?" "0" "dlq drop of it works"
is "$(q "SELECT status FROM sink.dead_letters WHERE id = 1")" "dropped" "it is dropped"
"$BIN/outboxctl" -c "$conf" dlq drop 2 --reason "NUL in a header" --json >"$tmp/drop2.out" 2>&1
is "$(jq -r .ok "$tmp/drop2.out" 2>/dev/null)" "true" "dlq drop --json of the NUL header one"
is "$(hdr 5 bin)" "fffe" "the refused event's headers are kept exactly"
q "DROP TRIGGER t167_fault ON sink.side_effects" >/dev/null
"$BIN/outboxctl" -c "$conf" dlq retry 5 >"$tmp/retry5.out" 2>&1
is "$?" "0" "dlq retry of the refused one, from its exact headers, works"
is "$(q "SELECT count(*) FROM sink.side_effects WHERE event_id = '$R'")" "1" "it is applied once"
is "$(q "SELECT status FROM sink.dead_letters WHERE id = 5")" "retried" "and marked retried"
if [ "$T_FAILED" -gt 0 ]; then
	sed 's/^/# /' "$tmp/consumer.log"
	sed 's/^/# /' "$tmp/retry.out"
	sed 's/^/# /' "$tmp/retry5.out"
fi
done_testing
