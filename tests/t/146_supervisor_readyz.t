#!/usr/bin/env bash
# /readyz means "the pipeline can move events": 200 with the real services
# up; 503 naming Kafka while the broker is stopped, naming the database
# while PostgreSQL is stopped, and naming the stall while unsent events wait
# and nothing is sent (the events' orders locked by another session, as by
# a hung relay); 200 again after each.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-146.XXXXXX")
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
delivery_timeout_ms = 3000
[relay]
poll_interval_ms = 200
backoff_max_ms = 1000
[consumer]
group_id = $OUTBOX_GROUP
[supervisor]
http_listen = 127.0.0.1:0
stall_ms = 4000
shutdown_timeout_ms = 3000
audit_file =
EOF
)
SUP_PID=
kafka_stopped= pg_stopped=
cleanup() {
	[ -n "$SUP_PID" ] && { kill -TERM "$SUP_PID"; wait "$SUP_PID"; } 2>/dev/null
	q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	    WHERE application_name = 'outboxd-146-holder'" >/dev/null 2>&1
	[ -n "$kafka_stopped" ] && bash scripts/services start kafka >/dev/null 2>&1
	[ -n "$pg_stopped" ] && bash scripts/services start pg >/dev/null 2>&1
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT

"$BIN/outboxd" -c "$conf" --relays 1 --consumers 1 2>"$tmp/sup.log" &
SUP_PID=$!
port() { sup_http_port "$tmp/sup.log"; }
have_port() { [ -n "$(port)" ]; }
wait_for 15 have_port || bail "outboxd did not serve HTTP: $(cat "$tmp/sup.log")"
url="http://127.0.0.1:$(port)"
code() { curl -s -o "$tmp/body" -w '%{http_code}' "$url/readyz"; }
is_code() { [ "$(code)" = "$1" ]; }
body_has() { grep -q "$1" "$tmp/body"; }

wait_for 20 is_code 200
ok $? "/readyz: 200 with the database and Kafka up"

kafka_stopped=1
bash scripts/services stop kafka >/dev/null 2>&1
wait_for 30 is_code 503
ok $? "/readyz: 503 once the broker is stopped"
body_has "Kafka"
ok $? "  and it says Kafka does not answer: $(cat "$tmp/body")"
bash scripts/services start kafka >/dev/null 2>&1 && kafka_stopped=
wait_for 60 is_code 200
ok $? "/readyz: 200 again once the broker is back"

pg_stopped=1
bash scripts/services stop pg >/dev/null 2>&1
wait_for 30 is_code 503
ok $? "/readyz: 503 once PostgreSQL is stopped"
body_has "database"
ok $? "  and it says the database does not answer: $(cat "$tmp/body")"
bash scripts/services start pg >/dev/null 2>&1 && pg_stopped=
wait_for 60 is_code 200
ok $? "/readyz: 200 again once PostgreSQL is back"

# A total stall: events wait and the relay can claim none of them. A session
# of the test holds their orders' advisory locks (the ones a relay takes to
# claim an order), as a relay hung in the middle of a batch would. (A relay
# frozen with SIGSTOP no longer stalls anything: the supervisor kills it.)
PGAPPNAME=outboxd-146-holder psql -X -q -c "
	SELECT pg_advisory_lock(1868724324, hashtext('stall-' || n)) FROM generate_series(1, 5) n;
	SELECT pg_sleep(600)" >/dev/null 2>&1 &
holder=$!
holding() { [ "$(q "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
	WHERE l.locktype = 'advisory' AND a.application_name = 'outboxd-146-holder'")" = 5 ]; }
wait_for 10 holding || bail "the lock holder did not take its locks"
q "INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type, payload)
   SELECT 'order', 'stall-' || n, s, 'order.updated', jsonb_build_object('n', s)
     FROM generate_series(1, 5) n, generate_series(1, 2) s" >/dev/null
wait_for 30 is_code 503
ok $? "/readyz: 503 while events wait and nothing is sent for stall_ms"
body_has "stalled: 10 unsent events"
ok $? "  and it says so: $(cat "$tmp/body")"
grep -q "not ready: stalled" "$tmp/sup.log"
ok $? "the supervisor logs the change"
q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE application_name = 'outboxd-146-holder'" >/dev/null
wait "$holder" 2>/dev/null
wait_for 30 is_code 200
ok $? "/readyz: 200 again once the relay moves"
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" "0" "and everything is sent"
done_testing
