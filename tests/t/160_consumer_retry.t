#!/usr/bin/env bash
# The consumer's retry budget. A sink-side trigger (installed by this test)
# fails the apply of chosen orders: a permanent-looking error (P0001) that
# clears after 2 attempts is applied within the budget; transient errors
# (serialization failure 40001, deadlock 40P01) are retried past the budget
# and still applied; none of them reaches the dead-letter topic or table.
# An error that never clears is dead-lettered after exactly
# retry_max_attempts attempts, with the attempts, the first and last failure
# times and the error in the table and in the topic's headers. An error that
# says the sink itself is broken (42501, insufficient privilege) is not the
# message's fault: the consumer stops (exit 1) and dead-letters nothing.
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-160.XXXXXX")
pid=
conf=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	q "DROP TRIGGER IF EXISTS t160_fault ON sink.side_effects;
	   DROP FUNCTION IF EXISTS sink.t160_fault(); DROP SEQUENCE IF EXISTS sink.t160_a;
	   DROP SEQUENCE IF EXISTS sink.t160_b; DROP SEQUENCE IF EXISTS sink.t160_c" >/dev/null 2>&1
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT

services_up
reset_db
q "TRUNCATE sink.dead_letters, sink.parked, sink.quarantine RESTART IDENTITY CASCADE" >/dev/null
fresh_topic
sfx="$$-$RANDOM"
A="A-$sfx" B="B-$sfx" C="C-$sfx" D="D-$sfx" E="E-$sfx" F="F-$sfx"
# nextval() is not rolled back with the failed transaction: it counts attempts.
q "CREATE SEQUENCE sink.t160_a; CREATE SEQUENCE sink.t160_b; CREATE SEQUENCE sink.t160_c;
   CREATE FUNCTION sink.t160_fault() RETURNS trigger LANGUAGE plpgsql AS \$\$
   BEGIN
     IF NEW.aggregate_id = '$A' AND nextval('sink.t160_a') <= 2 THEN
       RAISE EXCEPTION 't160: not yet' USING ERRCODE = 'P0001';
     ELSIF NEW.aggregate_id = '$B' AND nextval('sink.t160_b') <= 6 THEN
       RAISE EXCEPTION 't160: serialization' USING ERRCODE = '40001';
     ELSIF NEW.aggregate_id = '$C' AND nextval('sink.t160_c') <= 4 THEN
       RAISE EXCEPTION 't160: deadlock' USING ERRCODE = '40P01';
     ELSIF NEW.aggregate_id = '$D' THEN
       RAISE EXCEPTION 't160: order % is refused', NEW.aggregate_id USING ERRCODE = 'P0001';
     ELSIF NEW.aggregate_id = '$F' THEN
       RAISE EXCEPTION 't160: the sink is broken' USING ERRCODE = '42501';
     END IF;
     RETURN NEW;
   END \$\$;
   CREATE TRIGGER t160_fault BEFORE INSERT ON sink.side_effects
     FOR EACH ROW EXECUTE FUNCTION sink.t160_fault()" >/dev/null
ok $? "installed the fault trigger"

conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
; one by one: the trigger counts each order's attempts exactly (a batch the
; trigger refuses would count one more; 136 covers that path)
batch_size = 1
retry_max_attempts = 3
retry_max_ms = 20000
retry_backoff_ms = 100
[supervisor]
audit_file = $tmp/audit.jsonl
EOF
)
feed() { # feed ORDER SEQ EVENT_ID
	printf '{"order_id":"%s","seq":%s,"status":"paid","total_cents":7}\n' "$1" "$2" |
	kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -p 0 -k "$1" -H "event_id=$3" \
		-H event_type=order.paid -H aggregate_type=order -H "aggregate_seq=$2" 2>/dev/null
}
uuid() { cat /proc/sys/kernel/random/uuid; }
ED=$(uuid)
feed "$A" 1 "$(uuid)" && feed "$B" 1 "$(uuid)" && feed "$C" 1 "$(uuid)" && feed "$D" 1 "$ED" &&
	feed "$E" 1 "$(uuid)"
ok $? "fed one event each of orders A (P0001 twice), B (40001 x6), C (40P01 x4), D (always), E"

"$BIN/outbox-consumer" -c "$conf" --id 0 >"$tmp/consumer.log" 2>&1 &
pid=$!
e_applied() { [ "$(q "SELECT count(*) FROM sink.side_effects WHERE aggregate_id = '$E'")" = 1 ]; }
wait_for 60 e_applied
ok $? "E, after all the others on the partition, is applied"
sleep 1.5 # a counters report
kill -TERM "$pid"; wait "$pid"; rc=$?; pid=
is "$rc" "0" "consumer exits 0 on SIGTERM"

is "$(q "SELECT count(*) FROM sink.side_effects WHERE aggregate_id = '$A'")" "1" \
	"A: a permanent-looking error that clears within the budget: applied once"
is "$(q "SELECT last_value FROM sink.t160_a")" "3" "A: applied at the 3rd attempt"
is "$(q "SELECT count(*) FROM sink.side_effects WHERE aggregate_id = '$B'")" "1" \
	"B: serialization failures past the attempt budget: still applied once"
is "$(q "SELECT last_value FROM sink.t160_b")" "7" "B: 6 transient failures, applied at the 7th"
is "$(q "SELECT count(*) FROM sink.side_effects WHERE aggregate_id = '$C'")" "1" \
	"C: deadlocks: applied once"
is "$(q "SELECT count(*) FROM sink.dead_letters WHERE aggregate_id IN ('$A', '$B', '$C')")" "0" \
	"A, B, C: no dead-letter row"
grep -q "order $A seq 1 failed (attempt 2 of 3)" "$tmp/consumer.log"
ok $? "A: the log counts attempts against the budget"

is "$(q "SELECT count(*) FROM sink.side_effects WHERE aggregate_id = '$D'")" "0" "D: never applied"
is "$(q "SELECT reason, attempts, aggregate_id, aggregate_seq, event_id, kafka_partition, kafka_offset,
         status FROM sink.dead_letters")" "exhausted|3|$D|1|$ED|0|3|open" \
	"D: one dead letter, reason exhausted, after exactly 3 attempts, naming the message"
is "$(q "SELECT error LIKE '%t160: order $D is refused%' FROM sink.dead_letters")" "t" \
	"D: the dead letter carries the error"
is "$(q "SELECT last_failure_at - first_failure_at >= interval '250 ms' FROM sink.dead_letters")" "t" \
	"D: first and last failure times span the backoff (100 + 200 ms)"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'dead_letter' AND aggregate_id = '$D'")" \
	"1" "D: a dead_letter row in the ordering audit log"

dlq=$(kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC.dlq" -e -q -f '%k\t%h\t%s\n' 2>/dev/null)
is "$(echo "$dlq" | grep -c .)" "1" "the dead-letter topic holds one message (D's)"
echo "$dlq" | cut -f1 | grep -qx "$D"
ok $? "with the original key"
hdr=$(echo "$dlq" | cut -f2)
for h in "event_id=$ED" "aggregate_seq=1" "event_type=order.paid" "dlq_reason=exhausted" \
	"dlq_attempts=3" "dlq_topic=$OUTBOX_TOPIC" "dlq_partition=0" "dlq_offset=3"; do
	echo "$hdr" | tr ',' '\n' | grep -qx "$h"
	ok $? "DLQ header $h"
done
echo "$hdr" | tr ',' '\n' | grep -q "^dlq_error=.*t160: order $D is refused"
ok $? "DLQ header dlq_error"
echo "$hdr" | tr ',' '\n' | grep -Eq '^dlq_first_failure_at=20[0-9-]+T[0-9:.]+Z$'
ok $? "DLQ header dlq_first_failure_at (ISO 8601 UTC)"
echo "$dlq" | cut -f3 | grep -q "\"order_id\":\"$D\""
ok $? "with the original payload"
is "$(q "SELECT retries >= 2 + 6 + 4 + 3, dead_lettered FROM sink.consumers WHERE consumer_id = 0")" \
	"t|1" "sink.consumers counts the retries and the dead letter"

feed "$F" 1 "$(uuid)"
"$BIN/outbox-consumer" -c "$conf" --id 0 >>"$tmp/consumer.log" 2>&1 &
pid=$!
gone() { ! kill -0 "$pid" 2>/dev/null; }
wait_for 30 gone
ok $? "F (42501: the sink is broken): the consumer stops"
wait "$pid"; rc=$?; pid=
is "$rc" "1" "with exit 1 (retryable: the supervisor restarts it)"
is "$(q "SELECT count(*) FROM sink.dead_letters WHERE aggregate_id = '$F'")" "0" \
	"F is not dead-lettered"
is "$(q "SELECT count(*) FROM sink.quarantine WHERE order_id = '$F'")" "0" "nor quarantined"
grep -q "ERROR .*t160: the sink is broken" "$tmp/consumer.log"
ok $? "the consumer logs the error"
if [ "$T_FAILED" -gt 0 ]; then sed 's/^/# /' "$tmp/consumer.log"; fi
done_testing
