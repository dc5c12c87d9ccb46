#!/usr/bin/env bash
# Inbox retention. The consumer's periodic sweep deletes inbox rows older
# than inbox_retention_hours (rows are aged here by moving received_at back)
# and leaves younger ones; it waits while another session holds the
# sweepers' advisory lock. A duplicate of an event whose inbox row was swept
# is not applied: the order's high-water mark drops it. outboxctl
# inbox-sweep does the same by hand, in batches, with --hours.
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-163.XXXXXX")
pid=
lockpid=
conf=
trap '[ -n "$pid" ] && kill -KILL $pid 2>/dev/null; [ -n "$lockpid" ] && kill $lockpid 2>/dev/null;
      rm -rf "$tmp" "$conf"' EXIT

"$BIN/outboxctl" inbox-sweep --hours soon >/dev/null 2>&1
is "$?" "2" "inbox-sweep --hours with a bad value exits 2"
"$BIN/outboxctl" inbox-sweep extra >/dev/null 2>&1
is "$?" "2" "inbox-sweep with a stray argument exits 2"
"$BIN/outboxctl" --help | grep -q 'inbox-sweep \[--hours N\]'
ok $? "outboxctl --help lists inbox-sweep"

services_up
reset_db
q "TRUNCATE sink.dead_letters, sink.parked, sink.quarantine RESTART IDENTITY CASCADE" >/dev/null
fresh_topic
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
inbox_retention_hours = 168
inbox_sweep_interval_ms = 300
inbox_sweep_batch = 2
[supervisor]
audit_file = $tmp/audit.jsonl
EOF
)
sfx="$$-$RANDOM"
L="L-$sfx" M="M-$sfx"
uuid() { cat /proc/sys/kernel/random/uuid; }
feed() { # feed ORDER SEQ EVENT_ID
	printf '{"order_id":"%s","seq":%s,"status":"s%s"}\n' "$1" "$2" "$2" |
	kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -p 0 -k "$1" -H "event_id=$3" \
		-H event_type=order.updated -H aggregate_type=order -H "aggregate_seq=$2" 2>/dev/null
}
L1=$(uuid) L2=$(uuid) L3=$(uuid) M1=$(uuid)
feed "$L" 1 "$L1" && feed "$L" 2 "$L2" && feed "$L" 3 "$L3" && feed "$M" 1 "$M1"
ok $? "fed L1 L2 L3 M1"
"$BIN/outbox-consumer" -c "$conf" --id 0 >"$tmp/consumer.log" 2>&1 &
pid=$!
applied() { [ "$(q "SELECT count(*) FROM sink.side_effects")" = "$1" ]; }
wait_for 30 applied 4
ok $? "all 4 applied"
is "$(q "SELECT count(*) FROM sink.inbox")" "4" "4 inbox rows"

# Hold the sweepers' lock: the consumer must not sweep meanwhile.
psql -X -q -c "SELECT pg_advisory_lock(727000, 3)" -c "SELECT pg_sleep(3)" >/dev/null 2>&1 &
lockpid=$!
sleep 0.5
q "UPDATE sink.inbox SET received_at = now() - interval '200 hours'
   WHERE event_id IN ('$L1', '$L2', '$M1')" >/dev/null
sleep 1.5
is "$(q "SELECT count(*) FROM sink.inbox")" "4" "while another session holds the lock, nothing is swept"
wait "$lockpid"; lockpid=
swept() { [ "$(q "SELECT count(*) FROM sink.inbox")" = "1" ]; }
wait_for 15 swept
ok $? "then the consumer's sweep deletes the 3 rows older than 168 hours"
is "$(q "SELECT event_id FROM sink.inbox")" "$L3" "and keeps the young one"
grep -q "inbox sweep: deleted" "$tmp/consumer.log"
ok $? "the consumer logs the sweep"

# The late duplicate: L1 again, its inbox row gone.
feed "$L" 1 "$L1"
dup_seen() { [ "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'duplicate'
                      AND event_id = '$L1'")" = 1 ]; }
wait_for 20 dup_seen
ok $? "the late duplicate of swept L1 is recognised"
is "$(q "SELECT count(*) FROM sink.side_effects WHERE event_id = '$L1'")" "1" \
	"and not applied a second time"
is "$(q "SELECT detail, expected_seq, got_seq FROM sink.ordering_audit WHERE kind = 'duplicate'
         AND event_id = '$L1'")" "stale aggregate_seq|4|1" "dropped by the high-water mark (last_seq 3)"
is "$(q "SELECT count(*) FROM sink.inbox WHERE event_id = '$L1'")" "0" \
	"the dropped duplicate does not put its inbox row back"
is "$(q "SELECT last_seq, status FROM sink.order_projection WHERE order_id = '$L'")" "3|s3" \
	"L's projection is untouched"
kill -TERM "$pid"; wait "$pid"; rc=$?; pid=
is "$rc" "0" "consumer exits 0 on SIGTERM"

# By hand, in batches of 2.
q "INSERT INTO sink.inbox (event_id, received_at)
   SELECT gen_random_uuid(), now() - interval '10 hours' FROM generate_series(1, 5)" >/dev/null
out=$("$BIN/outboxctl" -c "$conf" inbox-sweep)
is "$?" "0" "outboxctl inbox-sweep exits 0"
is "$out" "inbox: deleted 0 row(s) received more than 168 hour(s) ago" \
	"with the configured 168 hours, rows 10 hours old stay"
out=$("$BIN/outboxctl" -c "$conf" --json inbox-sweep --hours 5)
is "$(echo "$out" | jq -c .)" '{"deleted":5,"hours":5}' "--hours 5 deletes the 5 rows (batches of 2)"
is "$(q "SELECT count(*) FROM sink.inbox")" "1" "the young row is left"
if [ "$T_FAILED" -gt 0 ]; then sed 's/^/# /' "$tmp/consumer.log"; fi
done_testing
