#!/usr/bin/env bash
# The consumer's database goes away: first its backend is killed with
# SIGKILL (PostgreSQL then resets every session and recovers from the WAL
# on disk, like a server crash: asynchronously committed transactions not
# yet flushed are gone), later its session is terminated (57P01). Each loss
# comes between two rounds of events (the consumer applies a round within a
# second, faster than a test could aim inside it), so the next round meets
# it, except that an idle consumer connects again at once (its counters
# flush finds the loss), before the next round. The consumer keeps running,
# reconnects, rewinds to its committed offsets, and every event is still
# applied exactly once with no gap.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-133.XXXXXX")
pid=
trap 'kill -KILL $pid 2>/dev/null; rm -rf "$tmp"' EXIT
conf="$tmp/test.conf"
cat >"$conf" <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
commit_interval_ms = 200
[supervisor]
audit_file = $tmp/audit.jsonl
EOF
round() {   # ORDERS: naive orders of 5 events each
	"$BIN/orders" -c "$conf" --mode naive --orders "$1" --events-per-order 5 --quiet 2>>"$tmp/orders.log"
}
out=$(round 1000)
ok $? "naive orders produced: $out"

"$BIN/outbox-consumer" -c "$conf" --id 2 >"$tmp/consumer.log" 2>&1 &
pid=$!
applied() { q "SELECT count(*) FROM sink.side_effects" 2>/dev/null || echo 0; }
some() { [ "$(applied)" -ge "$1" ]; }
backend() { q "SELECT pid FROM pg_stat_activity WHERE application_name = 'outbox-consumer-2'" 2>/dev/null; }

wait_for 30 some 5000
ok $? "the consumer applies the first round"
n=$(applied) b=$(backend)
kill -KILL "$b" 2>/dev/null
ok $? "SIGKILL to the consumer's backend ($b) at $n applied"
up() { q "SELECT 1" >/dev/null 2>&1; }
wait_for 30 up
ok $? "PostgreSQL is back after crash recovery"
round 500 >/dev/null
wait_for 30 some 7500
ok $? "the consumer goes on after the crash"
q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
   WHERE application_name = 'outbox-consumer-2'" >/dev/null
ok $? "terminate the consumer's session at $(applied) applied"
reconnected() { [ "$(grep -c 'sink database: reconnected' "$tmp/consumer.log")" -ge "$1" ]; }
wait_for 15 reconnected 2
ok $? "idle, the consumer connects again without waiting for its next message"
round 500 >/dev/null
read -r total distinct < <(topic_counts "$OUTBOX_TOPIC")
is "$total" "10000" "10,000 messages on the topic in all"
wait_for 40 some 10000
ok $? "everything applied"
sleep 1
kill -0 "$pid" 2>/dev/null
ok $? "the consumer never exited"
kill -TERM "$pid"
wait "$pid"
is "$?" "0" "it exits 0 on SIGTERM"

is "$(applied)" "10000" "side effects = messages on the topic"
is "$(q "SELECT count(DISTINCT event_id) FROM sink.side_effects")" "$distinct" "every event id applied once"
is "$(q "SELECT count(*) FROM sink.order_projection WHERE last_seq <> 5 OR events_applied <> 5")" "0" \
	"every order at seq 5 with 5 events applied"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind <> 'duplicate'")" "0" \
	"no gap (nothing skipped past a lost transaction)"
cmp_ok "$(grep -c 'rewound' "$tmp/consumer.log")" -ge 2 "the consumer rewound after each loss"
# Each loss shows either in an apply (a retry, then the reconnect) or in the
# counters flush between messages (the reconnect only): which one depends on
# timing, so the reconnects are what is counted for every loss, not retries.
cmp_ok "$(q "SELECT reconnects FROM sink.consumers WHERE consumer_id = 2")" -ge 2 \
	"reconnects counted: one per database loss at least"
is "$(q "SELECT reconnects FROM sink.consumers WHERE consumer_id = 2")" \
	"$(grep -c 'sink database: reconnected' "$tmp/consumer.log")" \
	"sink.consumers.reconnects agrees with the reconnects the log shows"
if [ "$T_FAILED" -gt 0 ]; then grep -v DEBUG "$tmp/consumer.log" | tail -n 40 | sed 's/^/# /'; fi
done_testing
