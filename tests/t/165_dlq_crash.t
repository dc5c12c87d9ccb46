#!/usr/bin/env bash
# A consumer that dies while dead-lettering. Between the dead-letter topic's
# acknowledgement and the sink.dead_letters row (crash point
# consumer.after_dlq_publish): on restart the poison message is
# dead-lettered again; the topic holds it twice (at-least-once, like the
# event topic), the table once. After the row, before the offset commit
# (consumer.after_dead_letter): a redelivered poison message finds its row
# (still once in the table); a redelivered exhausted event finds its own
# open dead letter and is dropped as a duplicate, neither parked nor
# dead-lettered again. Orders are
# quarantined once, later events parked once, everything else applied once.
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-165.XXXXXX")
pid=
conf=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	q "DROP TRIGGER IF EXISTS t165_fault ON sink.side_effects;
	   DROP FUNCTION IF EXISTS sink.t165_fault()" >/dev/null 2>&1
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT

services_up
reset_db
q "TRUNCATE sink.dead_letters, sink.parked, sink.quarantine RESTART IDENTITY CASCADE" >/dev/null
fresh_topic
sfx="$$-$RANDOM"
P="P-$sfx" Q="Q-$sfx" X="X-$sfx" G="G-$sfx"
q "CREATE FUNCTION sink.t165_fault() RETURNS trigger LANGUAGE plpgsql AS \$\$
   BEGIN
     IF NEW.aggregate_id = '$X' AND NEW.aggregate_seq = 2 THEN
       RAISE EXCEPTION 't165: refused' USING ERRCODE = 'P0001';
     END IF;
     RETURN NEW;
   END \$\$;
   CREATE TRIGGER t165_fault BEFORE INSERT ON sink.side_effects
     FOR EACH ROW EXECUTE FUNCTION sink.t165_fault()" >/dev/null
ok $? "installed a trigger refusing $X seq 2"
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
retry_max_attempts = 2
retry_backoff_ms = 20
[supervisor]
audit_file = $tmp/audit.jsonl
EOF
)
uuid() { cat /proc/sys/kernel/random/uuid; }
feed() { # feed ORDER SEQ [TYPE]
	printf '{"order_id":"%s","seq":%s}\n' "$1" "$2" |
	kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -p 0 -k "$1" -H "event_id=$(uuid)" \
		-H "event_type=${3:-order.updated}" -H aggregate_type=order -H "aggregate_seq=$2" \
		2>/dev/null
}
run() { # run CRASH_SPEC: one consumer until it exits or WAIT seconds pass
	OUTBOX_CRASH="$1" "$BIN/outbox-consumer" -c "$conf" --id 0 >>"$tmp/consumer.log" 2>&1 &
	pid=$!
}
applied() { q "SELECT coalesce(string_agg(aggregate_id || '.' || aggregate_seq, ' '
               ORDER BY aggregate_id, aggregate_seq), '') FROM sink.side_effects"; }

# Poison: a message of order P without an event_type header.
printf '{}\n' | kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -p 0 -k "$P" \
	-H "event_id=$(uuid)" -H aggregate_seq=1 2>/dev/null
feed "$P" 2 && feed "$G" 1
ok $? "fed P1 (poison), P2, G1"
run consumer.after_dlq_publish:1
wait "$pid"; rc=$?; pid=
is "$rc" "86" "the consumer crashed after publishing the poison to the dead-letter topic"
is "$(q "SELECT count(*) FROM sink.dead_letters")" "0" "before recording it"
run ""
g1() { [ "$(applied)" = "$G.1" ]; }
wait_for 30 g1
ok $? "restarted: G1 applied"
p2() { [ "$(q "SELECT count(*) FROM sink.parked WHERE aggregate_id = '$P'")" = 1 ]; }
wait_for 10 p2
ok $? "P2 parked"
kill -TERM "$pid"; wait "$pid"; pid=

# Poison again, crash after its row.
printf '{}\n' | kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -p 0 -k "$Q" \
	-H "event_id=$(uuid)" -H aggregate_seq=1 2>/dev/null
feed "$G" 2
run consumer.after_dead_letter:1
wait "$pid"; rc=$?; pid=
is "$rc" "86" "the consumer crashed after recording Q1's dead letter"
is "$(q "SELECT count(*) FROM sink.dead_letters WHERE aggregate_id = '$Q'")" "1" "its row is there"
run ""
g2() { [ "$(q "SELECT count(*) FROM sink.side_effects WHERE aggregate_id = '$G'")" = 2 ]; }
wait_for 30 g2
ok $? "restarted: G2 applied"
kill -TERM "$pid"; wait "$pid"; pid=

feed "$X" 1 && feed "$X" 2 && feed "$X" 3 && feed "$G" 3
ok $? "fed X1, X2 (refused), X3, G3"
run consumer.after_dead_letter:1
wait "$pid"; rc=$?; pid=
is "$rc" "86" "the consumer crashed after recording X2's dead letter"
run ""
g3() { [ "$(q "SELECT count(*) FROM sink.side_effects WHERE aggregate_id = '$G'")" = 3 ]; }
wait_for 30 g3
ok $? "restarted: G3 applied"
x3() { [ "$(q "SELECT count(*) FROM sink.parked WHERE aggregate_id = '$X'")" = 1 ]; }
wait_for 10 x3
ok $? "X3 parked"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'duplicate' AND aggregate_id = '$X'
         AND got_seq = 2 AND detail = 'already parked or dead-lettered'")" "1" \
	"the redelivered X2 is dropped as its own open dead letter"
sleep 1
kill -TERM "$pid"; wait "$pid"; pid=

is "$(q "SELECT string_agg(aggregate_id || '.' || aggregate_seq || ':' || reason, ' ' ORDER BY id)
         FROM sink.dead_letters")" "$P.1:poison $Q.1:poison $X.2:exhausted" \
	"the table holds each dead letter once"
is "$(kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC.dlq" -e -q -f '%k\n' 2>/dev/null | sort | uniq -c |
      awk '{print $2 ":" $1}' | sort | tr '\n' ' ')" "$P:2 $Q:2 $X:1 " \
	"the dead-letter topic: P and Q twice (dead-lettered again after the crash), X once"
is "$(q "SELECT string_agg(order_id, ' ' ORDER BY order_id) FROM sink.quarantine")" "$P $Q $X" \
	"P, Q and X quarantined once each"
is "$(q "SELECT string_agg(aggregate_id || '.' || aggregate_seq, ' ' ORDER BY id) FROM sink.parked")" \
	"$P.2 $X.3" "P2 and X3 parked once each, X2 not"
is "$(applied)" "$G.1 $G.2 $G.3 $X.1" "G1, G2, G3 and X1 applied once each, nothing else"
xd=$(q "SELECT id FROM sink.dead_letters WHERE aggregate_id = '$X'")
q "DROP TRIGGER t165_fault ON sink.side_effects" >/dev/null
"$BIN/outboxctl" -c "$conf" dlq retry "$xd" >/dev/null
ok $? "dlq retry of X2 once the trigger is gone"
is "$(q "SELECT string_agg(aggregate_seq::text, ',' ORDER BY id) FROM sink.side_effects
         WHERE aggregate_id = '$X'")" "1,2,3" "X: 2 applied once, then 3"
is "$(q "SELECT count(*) FROM sink.parked WHERE aggregate_id = '$X'")" "0" "nothing of X parked"
if [ "$T_FAILED" -gt 0 ]; then sed 's/^/# /' "$tmp/consumer.log"; fi
done_testing
