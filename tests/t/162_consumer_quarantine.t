#!/usr/bin/env bash
# Per-order quarantine. A trigger installed by this test refuses order Q's
# seq 2 and order S's seq 2 (permanent errors). Each is dead-lettered once
# its budget is spent; the later events of Q and S are parked in arrival
# order while order R, on the same partition, keeps being applied.
# outboxctl dlq retry fails while the cause is still there (nothing moves),
# then, once the trigger lets it through, applies Q's seq 2 and releases the
# parked events in order and lifts the quarantine. outboxctl dlq drop gives
# up on S's seq 2: recorded in the ordering audit log (table and file), the
# order steps over it, its parked events apply, and a late copy of the
# dropped event is not applied.
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-162.XXXXXX")
pid=
conf=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	q "DROP TRIGGER IF EXISTS t162_fault ON sink.side_effects;
	   DROP FUNCTION IF EXISTS sink.t162_fault(); DROP TABLE IF EXISTS sink.t162_block" \
		>/dev/null 2>&1
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT

services_up
reset_db
q "TRUNCATE sink.dead_letters, sink.parked, sink.quarantine RESTART IDENTITY CASCADE" >/dev/null
fresh_topic
sfx="$$-$RANDOM"
Q="Q-$sfx" R="R-$sfx" S="S-$sfx"
q "CREATE TABLE sink.t162_block (order_id text, seq bigint);
   INSERT INTO sink.t162_block VALUES ('$Q', 2), ('$S', 2);
   CREATE FUNCTION sink.t162_fault() RETURNS trigger LANGUAGE plpgsql AS \$\$
   BEGIN
     IF EXISTS (SELECT 1 FROM sink.t162_block b
                WHERE b.order_id = NEW.aggregate_id AND b.seq = NEW.aggregate_seq) THEN
       RAISE EXCEPTION 't162: % seq % refused', NEW.aggregate_id, NEW.aggregate_seq
         USING ERRCODE = 'P0001';
     END IF;
     RETURN NEW;
   END \$\$;
   CREATE TRIGGER t162_fault BEFORE INSERT ON sink.side_effects
     FOR EACH ROW EXECUTE FUNCTION sink.t162_fault()" >/dev/null
ok $? "installed the trigger refusing $Q seq 2 and $S seq 2"

audit="$tmp/audit.jsonl"
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
retry_max_attempts = 2
retry_backoff_ms = 50
[supervisor]
audit_file = $audit
EOF
)
uuid() { cat /proc/sys/kernel/random/uuid; }
declare -A EV
feed() { # feed ORDER SEQ [EVENT_ID]
	local id=${3:-$(uuid)}
	EV[$1.$2]=$id
	printf '{"order_id":"%s","seq":%s,"status":"s%s","total_cents":%s}\n' "$1" "$2" "$2" "$2" |
	kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -p 0 -k "$1" -H "event_id=$id" \
		-H event_type=order.updated -H aggregate_type=order -H "aggregate_seq=$2" 2>/dev/null
}
seqs() { q "SELECT coalesce(string_agg(aggregate_seq::text, ',' ORDER BY id), '')
            FROM sink.side_effects WHERE aggregate_id = '$1'"; }
parked() { q "SELECT coalesce(string_agg(aggregate_seq::text, ',' ORDER BY id), '')
              FROM sink.parked WHERE aggregate_id = '$1'"; }
feed "$Q" 1 && feed "$Q" 2 && feed "$R" 1 && feed "$Q" 3 && feed "$S" 1 && feed "$S" 2 &&
	feed "$Q" 4 && feed "$S" 3 && feed "$R" 2 && feed "$S" 4 && feed "$R" 3
ok $? "fed Q1 Q2 R1 Q3 S1 S2 Q4 S3 R2 S4 R3 on one partition"

"$BIN/outbox-consumer" -c "$conf" --id 0 >"$tmp/consumer.log" 2>&1 &
pid=$!
r_done() { [ "$(seqs "$R")" = "1,2,3" ]; }
wait_for 60 r_done
ok $? "order R, behind the failing events on the same partition, is applied: 1,2,3"
s_parked() { [ "$(parked "$S")" = "3,4" ]; }
wait_for 20 s_parked
ok $? "S3 and S4 are parked"
is "$(seqs "$Q")" "1" "Q: only seq 1 applied"
is "$(parked "$Q")" "3,4" "Q: seq 3 and 4 parked, in arrival order"
is "$(q "SELECT last_seq FROM sink.order_projection WHERE order_id = '$Q'")" "1" \
	"Q's high-water mark stays at 1"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'gap' AND aggregate_id IN ('$Q', '$S')")" \
	"0" "no gap: parked events are not applied out of order"
is "$(q "SELECT string_agg(aggregate_id || ':' || aggregate_seq || ':' || reason, ' ' ORDER BY id)
         FROM sink.dead_letters")" "$Q:2:exhausted $S:2:exhausted" "one dead letter each for Q2 and S2"
dq=$(q "SELECT id FROM sink.dead_letters WHERE aggregate_id = '$Q'")
ds=$(q "SELECT id FROM sink.dead_letters WHERE aggregate_id = '$S'")
is "$(q "SELECT string_agg(order_id, ' ' ORDER BY order_id) FROM sink.quarantine")" "$Q $S" \
	"Q and S are quarantined, R is not"

feed "$Q" 5
q5_parked() { [ "$(parked "$Q")" = "3,4,5" ]; }
wait_for 20 q5_parked
ok $? "Q5, arriving while quarantined, is parked after Q3 and Q4"
is "$("$BIN/outboxctl" -c "$conf" dlq list --json | jq -r "select(.id == $dq) | .parked")" "3" \
	"dlq list shows 3 events parked behind Q's dead letter"

out=$("$BIN/outboxctl" -c "$conf" dlq retry "$dq" 2>&1)
is "$?" "1" "dlq retry while the cause is still there exits 1"
echo "$out" | grep -q "still fails: .*t162: $Q seq 2 refused"
ok $? "and says why ($out)"
is "$(seqs "$Q"):$(parked "$Q")" "1:3,4,5" "nothing applied, nothing released"
is "$(q "SELECT status FROM sink.dead_letters WHERE id = $dq")" "open" "the dead letter stays open"

q "DELETE FROM sink.t162_block WHERE order_id = '$Q'" >/dev/null
out=$("$BIN/outboxctl" -c "$conf" dlq retry "$dq" 2>&1)
is "$?" "0" "dlq retry once the cause is gone exits 0"
echo "$out" | sed "s|^|# |"
is "$(seqs "$Q")" "1,2,3,4,5" "Q: seq 2 applied, then 3, 4, 5 released in order"
is "$(parked "$Q")" "" "Q: nothing left parked"
is "$(q "SELECT count(*) FROM sink.quarantine WHERE order_id = '$Q'")" "0" "Q's quarantine is lifted"
is "$(q "SELECT status, resolved_at IS NOT NULL FROM sink.dead_letters WHERE id = $dq")" "retried|t" \
	"the dead letter is marked retried"
is "$(q "SELECT last_seq, status, total_cents FROM sink.order_projection WHERE order_id = '$Q'")" \
	"5|s5|5" "Q's projection is at seq 5"
feed "$Q" 6
q6() { [ "$(seqs "$Q")" = "1,2,3,4,5,6" ]; }
wait_for 20 q6
ok $? "Q6 after the release is applied by the consumer directly"
is "$(parked "$Q")" "" "and not parked"

out=$("$BIN/outboxctl" -c "$conf" --json dlq drop "$ds" --reason "refused by the ledger, ticket 42" 2>&1)
is "$?" "0" "dlq drop exits 0"
is "$(echo "$out" | jq -r '[.ok, .dropped, .skipped_seq, .released, .quarantined] | @tsv')" \
	"true	true	2	2	false" "--json: dropped, stepped over seq 2, released 2, lifted"
is "$(seqs "$S")" "1,3,4" "S: seq 3 and 4 applied after the drop, in order"
is "$(q "SELECT kind, aggregate_id, expected_seq, got_seq, event_id FROM sink.ordering_audit
         WHERE kind = 'dropped'")" "dropped|$S|2|2|${EV[$S.2]}" \
	"a 'dropped' row in the ordering audit log names the order, seq and event"
is "$(q "SELECT detail FROM sink.ordering_audit WHERE kind = 'dropped'")" \
	"dead letter $ds dropped: refused by the ledger, ticket 42" "with the reason"
is "$(jq -r 'select(.kind == "dropped") | .aggregate_id + " " + (.got_seq | tostring)' "$audit")" \
	"$S 2" "and a 'dropped' line in the audit file"
is "$(q "SELECT status, resolution FROM sink.dead_letters WHERE id = $ds")" \
	"dropped|refused by the ledger, ticket 42" "the dead letter is marked dropped"
is "$(q "SELECT count(*) FROM sink.quarantine")" "0" "no order is quarantined any more"

# A late copy of the dropped event: its inbox row makes it a duplicate.
q "DELETE FROM sink.t162_block" >/dev/null
feed "$S" 2 "${EV[$S.2]}"
feed "$R" 4
r4() { [ "$(seqs "$R")" = "1,2,3,4" ]; }
wait_for 20 r4
ok $? "a later message on the partition is applied"
is "$(seqs "$S")" "1,3,4" "the late copy of the dropped event is not applied"
"$BIN/outboxctl" -c "$conf" dlq retry "$ds" >/dev/null 2>&1
is "$?" "0" "dlq retry of a resolved dead letter is a no-op (exit 0)"
is "$(seqs "$S")" "1,3,4" "and applies nothing"
is "$("$BIN/outboxctl" -c "$conf" dlq list | tail -1)" "0 dead letter(s) open" "dlq list: none open"
is "$("$BIN/outboxctl" -c "$conf" --json dlq list --all | jq -r .status | sort | tr '\n' ' ')" \
	"dropped retried " "dlq list --all shows the resolved ones"

kill -TERM "$pid"; wait "$pid"; rc=$?; pid=
is "$rc" "0" "consumer exits 0 on SIGTERM"
is "$(q "SELECT count(*) FROM (SELECT aggregate_id, aggregate_seq FROM sink.side_effects
         GROUP BY 1, 2 HAVING count(*) > 1) d")" "0" "nothing applied twice"
if [ "$T_FAILED" -gt 0 ]; then sed 's/^/# /' "$tmp/consumer.log"; fi
done_testing
