#!/usr/bin/env bash
# A relay frozen with SIGSTOP inside a batch, whose database session is then
# ended, must not deliver that batch after newer events of the same order.
# The producer lingers 3 s, so the frozen relay's batch (order frozen-1,
# seq 1) sits in its Kafka queue. With its session terminated the other
# relay sends seq 1 and then seq 2..5. outboxd kills a stopped worker at
# once (and respawns it), so when the frozen process is sent SIGCONT there
# is nothing left to resume: the topic holds seq 1..5 once each, in order.
#
# Tried by hand (not left in the code): with the kill in outboxd's reap()
# removed, the resumed relay delivers its seq 1 after seq 5: checks 6-8
# fail (6 messages, one order fault, no kill logged).
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-152.XXXXXX")
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
kafka.linger.ms = 3000
[relay]
poll_interval_ms = 100
[consumer]
group_id = $OUTBOX_GROUP
[supervisor]
http_listen = 127.0.0.1:0
audit_file =
EOF
)
SUP_PID= frozen=
cleanup() {
	[ -n "$frozen" ] && kill -CONT "$frozen" 2>/dev/null
	[ -n "$SUP_PID" ] && kill -TERM "$SUP_PID" 2>/dev/null && wait "$SUP_PID"
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT

event() {
	q "INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type, payload)
	   SELECT 'order', 'frozen-1', s, 'order.updated', jsonb_build_object('n', s)
	     FROM generate_series($1, $2) s" >/dev/null
}
unsent() { q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL"; }
none_unsent() { [ "$(unsent)" = 0 ]; }
# The relay whose session holds seq 1's claim, idle in its transaction
# while its producer lingers: prints "ID BACKEND_PID".
holder() {
	q "SELECT substring(a.application_name FROM 'outbox-relay\[([0-9]+)\]') || ' ' || a.pid
	     FROM pg_stat_activity a JOIN pg_locks l USING (pid)
	    WHERE a.application_name LIKE 'outbox-relay[%' AND a.state = 'idle in transaction'
	      AND l.locktype = 'advisory' AND l.classid = 1868724324 AND l.granted
	    LIMIT 1"
}
have_holder() { [ -n "$(holder)" ]; }

"$BIN/outboxd" -c "$conf" --relays 2 --consumers 1 --relay-mode poll 2>"$tmp/sup.log" &
SUP_PID=$!
wait_for 20 eval '[ "$(q "SELECT count(*) FROM pg_stat_activity
                           WHERE application_name LIKE '"'outbox-relay[%'"'")" -ge 2 ]'
ok $? "outboxd runs two relays"

event 1 1
wait_for 10 have_holder
ok $? "a relay claims seq 1 and waits for its producer's linger"
read -r id backend < <(holder)
frozen=$(pgrep -P "$SUP_PID" -f "outbox-relay.*--id $id( |$)")
diag "relay $id (pid $frozen, backend $backend) holds seq 1"
kill -STOP "$frozen"
# (outboxd may have killed the relay, and so ended its session, already)
q "SELECT pg_terminate_backend($backend)" >/dev/null 2>&1

wait_for 20 none_unsent
ok $? "the other relay sends seq 1 once the frozen relay's session is gone"
event 2 5
wait_for 20 none_unsent
ok $? "seq 2..5 are sent too"

kill -CONT "$frozen" 2>/dev/null
sleep 5   # a resumed producer would deliver its queued seq 1 within its linger
wait_for 10 eval '! kill -0 '"$frozen"' 2>/dev/null'
ok $? "the frozen relay's process is gone"
topic_vs_outbox "$OUTBOX_TOPIC" "$tmp"
is "$(wc -l <"$tmp/topic.tsv")" 5 "the topic holds 5 messages: seq 1 once, not again from the frozen relay"
is "$(topic_order_faults "$tmp/topic.tsv")" 0 "order frozen-1 is seq 1..5 in offset order"
grep -q "relay\[$id\] (pid $frozen) stopped by signal SIGSTOP: killing it" "$tmp/sup.log"
ok $? "outboxd logs that it kills the stopped relay"
wait_for 20 eval '[ -n "$(pgrep -P '"$SUP_PID"' -f "outbox-relay.*--id '"$id"'( |\$)")" ]'
ok $? "and respawns it"
frozen=

done_testing
