#!/usr/bin/env bash
# Broker down: with Kafka stopped, events written meanwhile stay unsent;
# the relay records attempts and last_error on them and backs off; nothing
# is marked sent. Once Kafka is back, everything drains and nothing is lost
# (every event id on the topic, per order no event overtakes an earlier one).
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-123.XXXXXX")
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
delivery_timeout_ms = 2000
[relay]
batch_size = 100
poll_interval_ms = 200
backoff_max_ms = 1000
EOF
)
pid=
kafka_stopped=
cleanup() {
	kill -KILL $pid 2>/dev/null
	[ -n "$kafka_stopped" ] && bash scripts/services start kafka >/dev/null 2>&1
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT

# The topic exists before the outage (as in production).
"$BIN/orders" -c "$conf" --mode outbox --orders 2 --events-per-order 5 --quiet >/dev/null 2>&1
"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/relay.log" 2>&1 &
pid=$!
drained() { [ "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" = "0" ]; }
wait_for 30 drained
ok $? "with Kafka up the first 10 events go out"

kafka_stopped=1
bash scripts/services stop kafka >"$tmp/stop.log" 2>&1
ok $? "Kafka stopped"
"$BIN/orders" -c "$conf" --mode outbox --orders 40 --events-per-order 5 --concurrency 4 \
	--quiet >/dev/null 2>&1
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" "200" \
	"200 events written while Kafka is down"

tried() {
	[ "$(q "SELECT count(*) FROM public.outbox
	        WHERE sent_at IS NULL AND attempts > 0 AND last_error IS NOT NULL")" -ge 100 ]
}
wait_for 30 tried
ok $? "the relay records attempts and last_error on the unsent rows"
diag "last_error: $(q "SELECT last_error FROM public.outbox WHERE last_error IS NOT NULL LIMIT 1")"
a1=$(q "SELECT sum(attempts) FROM public.outbox")
# A pass fails after the delivery timeout (2 s, checked by librdkafka about
# once a second) and the next comes after the capped backoff (1 s, +-25%).
more_attempts() { [ "$(q "SELECT sum(attempts) FROM public.outbox")" -gt "$a1" ]; }
t0=$SECONDS
wait_for 15 more_attempts
ok $? "the relay keeps trying, with backoff (attempts $a1 -> $(q "SELECT sum(attempts) FROM public.outbox") in $((SECONDS - t0)) s)"
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" "200" \
	"while Kafka is down nothing is marked sent"
kill -0 "$pid" 2>/dev/null
ok $? "the relay is still running"

bash scripts/services start kafka >"$tmp/start.log" 2>&1
ok $? "Kafka started again"
kafka_stopped=
wait_for 45 drained
ok $? "after Kafka is back everything drains"
kill -TERM "$pid"
wait "$pid"
is "$?" "0" "SIGTERM: the relay exits 0"
pid=
read -r messages distinct < <(topic_counts "$OUTBOX_TOPIC")
is "$distinct" "210" "all 210 event ids are on the topic: nothing lost"
diag "$messages messages for $distinct events (duplicates are allowed: at-least-once)"
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" "0" "no row left unsent"
bad=$(kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -e -q -f '%p\t%o\t%k\t%h\n' 2>/dev/null |
	sort -t"$(printf '\t')" -k1,1n -k2,2n | awk -F'\t' '{
	s = ""; n = split($4, h, ",")
	for (i = 1; i <= n; i++) if (h[i] ~ /^aggregate_seq=/) s = substr(h[i], 15) + 0
	if (s > max[$3] + 1) bad++
	if (s > max[$3]) max[$3] = s
} END { print bad + 0 }')
is "$bad" "0" "per order no event overtakes an earlier one on the topic"
grep -c 'WARN' "$tmp/relay.log" | sed 's/^/# relay warnings: /'
done_testing
