#!/usr/bin/env bash
# The Kafka cluster guard, on real brokers. The first relay to publish
# records its broker's cluster id. Then the stack's broker is stopped and an
# impostor (another cluster id, the same port: scripts/services start
# kafka-impostor) takes its place under a running poll relay: nothing written
# meanwhile is marked sent (a batch the impostor acknowledged is rolled back),
# the relay log names both ids and the command, outboxctl status shows the
# relay blocked; with the right broker back everything goes out to it. Then a
# CDC relay: the same swap confirms and marks nothing; outboxctl
# accept-cluster makes the impostor the recorded cluster and the relay
# publishes there without a restart; accepting the first id again and
# bringing its broker back delivers the rest to it.
. "$(dirname "$0")/../lib.sh"

# --- CLI (no services needed) ---
"$BIN/outboxctl" --help | grep -q 'accept-cluster \[--cluster-id ID\]'
ok $? "outboxctl --help documents accept-cluster"
"$BIN/outboxctl" accept-cluster --cluster-id 'not an id' >/dev/null 2>&1
is "$?" "2" "accept-cluster with a malformed --cluster-id exits 2"
"$BIN/outboxctl" accept-cluster extra >/dev/null 2>&1
is "$?" "2" "accept-cluster with an extra argument exits 2"
"$BIN/outboxctl" status --cluster-id abc >/dev/null 2>&1
is "$?" "2" "--cluster-id on another subcommand exits 2"

services_up
reset_db
cdc_reset
fresh_topic
real_id=$(cat .run/kafka/cluster.id)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-128.XXXXXX")
# A long delivery timeout: a batch produced while no broker answers is still
# waiting when the impostor is up (which took 26 s on a loaded machine), so
# the impostor acknowledges it and the check after the reports is the one
# that must stop it.
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
delivery_timeout_ms = 60000
[relay]
batch_size = 100
poll_interval_ms = 200
backoff_max_ms = 1000
heartbeat_ms = 500
EOF
)
pid=
swapped=
cleanup() {
	kill -KILL $pid 2>/dev/null
	if [ -n "$swapped" ]; then
		bash scripts/services stop kafka-impostor >/dev/null 2>&1
		bash scripts/services start kafka >/dev/null 2>&1
	fi
	"$BIN/outboxctl" accept-cluster --cluster-id "$real_id" >/dev/null 2>&1
	[ "$T_FAILED" -gt 0 ] && cp -r "$tmp" "${TMPDIR:-/tmp}/outboxd-128.failed.$$" &&
		diag "logs kept in ${TMPDIR:-/tmp}/outboxd-128.failed.$$"
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT
unsent() { q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL"; }
drained() { [ "$(unsent)" = "0" ]; }
write() { "$BIN/orders" -c "$conf" --mode outbox --orders "$1" --events-per-order "$2" \
	--concurrency 4 --quiet >/dev/null 2>&1; }
# A poll relay's pass holds the advisory locks of the aggregates it claimed.
claimed() { [ "$(q "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                    AND classid = 1868724324")" -ge "$1" ]; }
# to_impostor ORDERS EVENTS [RELAY_PID]: stop the stack's broker, write that
# many events (the relay takes them while no broker answers: a batch in
# flight during the swap), note the WAL position after them in wal_after,
# start the impostor. With RELAY_PID (a poll relay) the relay is held
# (SIGSTOP) from its claim until the impostor has the topic, so the batch is
# delivered there, not failed for want of partitions while it starts.
to_impostor() {
	swapped=1
	bash scripts/services stop kafka >>"$tmp/services.log" 2>&1 || return 1
	write "$1" "$2"
	wal_after=$(q "SELECT pg_current_wal_lsn()")
	if [ -n "${3:-}" ]; then
		wait_for 20 claimed "$1" || diag "the relay did not claim the batch"
		sleep 0.5
		kill -STOP "$3"
	fi
	bash scripts/services start kafka-impostor >>"$tmp/services.log" 2>&1
	local rc=$?
	[ -n "${3:-}" ] && kill -CONT "$3"
	return $rc
}
to_real() {
	bash scripts/services stop kafka-impostor >>"$tmp/services.log" 2>&1 &&
		bash scripts/services start kafka >>"$tmp/services.log" 2>&1 && swapped=
}
mismatches() { grep -c 'KAFKA CLUSTER MISMATCH' "$1"; }
# Event ids on the topic of whichever broker answers now.
topic_ids() { kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -e -q -f '%h\n' 2>/dev/null |
	tr ',' '\n' | sed -n 's/^event_id=//p' | sort -u; }
new_ids() { q "SELECT event_id FROM public.outbox WHERE id > $1 ORDER BY 1"; }

# --- poll relay: the first publish records the cluster ---
write 4 5
"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/poll.log" 2>&1 &
pid=$!
wait_for 30 drained
ok $? "with the stack's broker the first 20 events go out"
is "$(q "SELECT cluster_id || ' / ' || accepted_by FROM public.outboxd_kafka_cluster")" \
	"$real_id / relay 0 first publish" "the relay recorded the broker's cluster id"
grep -q "recorded Kafka cluster $real_id" "$tmp/poll.log"
ok $? "and says so in its log"

# --- swap the broker under it ---
last=$(q "SELECT max(id) FROM public.outbox")
to_impostor 4 5 "$pid"
ok $? "an impostor broker started on the same port"
imp_id=$(cat .run/kafka-impostor/cluster.id)
[ -n "$imp_id" ] && [ "$imp_id" != "$real_id" ]
ok $? "with another cluster id ($imp_id, not $real_id)"
blocked() { [ "$(mismatches "$tmp/poll.log")" -ge 1 ]; }
wait_for 40 blocked
ok $? "the relay notices the other cluster"
sleep 2
is "$(q "SELECT count(*) FROM public.outbox WHERE id > $last AND sent_at IS NOT NULL")" "0" \
	"none of the 20 events written since is marked sent"
line=$(grep -m1 'KAFKA CLUSTER MISMATCH' "$tmp/poll.log")
case "$line" in *ERROR*"$imp_id"*"$real_id"*"outboxctl accept-cluster"*) r=0 ;; *) r=1 ;; esac
ok $r "the relay's ERROR line names both cluster ids and the command"
grep -q "20 events acknowledged by a broker that is not on the recorded Kafka cluster $real_id" \
	"$tmp/poll.log"
ok $? "the batch in flight during the swap was acknowledged by the impostor and rolled back"
comm -12 <(new_ids "$last") <(topic_ids) >"$tmp/on_impostor"
diag "$(wc -l <"$tmp/on_impostor") of the 20 new events reached the impostor's topic (none marked)"
status=$("$BIN/outboxctl" status 2>/dev/null)
grep -q "RELAY 0 ON .* IS BLOCKED ON ANOTHER KAFKA CLUSTER: .*$imp_id" <<<"$status"
ok $? "outboxctl status shows the relay blocked on the impostor's cluster"
grep -q "^kafka cluster: $real_id " <<<"$status"
ok $? "outboxctl status shows the recorded cluster id"
json=$("$BIN/outboxctl" status --json 2>/dev/null)
is "$(jq -r '[.relays_blocked, .kafka_cluster.cluster_id, .broker_cluster_id,
	(.relays[0].cluster_mismatch != null)] | join(" ")' <<<"$json")" \
	"1 $real_id $imp_id true" "status --json: one relay blocked, recorded and broker ids"
sleep 3
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NOT NULL")" "20" \
	"still nothing marked sent a few retries later"

# --- the right broker back ---
to_real
ok $? "the stack's broker is back"
wait_for 45 drained
ok $? "the relay resumes and every event is marked sent"
grep -q "Kafka cluster $real_id answers at .* again: publishing resumed" "$tmp/poll.log"
ok $? "the relay logs that it resumed"
missing=$(comm -23 <(q "SELECT event_id FROM public.outbox ORDER BY 1") <(topic_ids) | wc -l)
is "$missing" "0" "all 40 events are on the right cluster's topic"
unblocked() { [ "$(jq -r '.relays_blocked' <<<"$("$BIN/outboxctl" status --json 2>/dev/null)")" = 0 ]; }
wait_for 5 unblocked
ok $? "outboxctl status no longer shows the relay blocked"
kill -TERM "$pid"
wait "$pid"
is "$?" "0" "SIGTERM: the poll relay exits 0"
pid=

# --- CDC relay: the same swap, then accept-cluster ---
"$BIN/outbox-relay" -c "$conf" --id 1 --mode cdc >"$tmp/cdc.log" 2>&1 &
pid=$!
streaming() { grep -q 'streaming slot' "$tmp/cdc.log"; }
wait_for 30 streaming
ok $? "the CDC relay streams"
write 2 5
wait_for 20 drained
ok $? "streamed events go out to the stack's broker"
last=$(q "SELECT max(id) FROM public.outbox")
to_impostor 2 5
ok $? "the impostor again"
cdc_blocked() { [ "$(mismatches "$tmp/cdc.log")" -ge 1 ]; }
wait_for 40 cdc_blocked
ok $? "the CDC relay notices the other cluster"
sleep 2
is "$(q "SELECT count(*) FROM public.outbox WHERE id > $last AND sent_at IS NOT NULL")" "0" \
	"CDC: none of the 10 events written since is marked sent"
is "$(q "SELECT confirmed_flush_lsn < '$wal_after' FROM pg_replication_slots WHERE slot_name = 'outboxd'")" \
	"t" "CDC: the slot is not confirmed past them"
grep 'KAFKA CLUSTER MISMATCH' "$tmp/cdc.log" | grep -q "$imp_id.*$real_id"
ok $? "the CDC relay's log names both ids"
grep -q "events acknowledged by a broker that is not on the recorded Kafka cluster $real_id: not marked sent, nothing confirmed past them" "$tmp/cdc.log"
ok $? "CDC: the events in flight during the swap were acknowledged by the impostor, not marked"

out=$("$BIN/outboxctl" accept-cluster 2>&1)
is "$?" "0" "outboxctl accept-cluster (the broker's id) exits 0"
case "$out" in *"$real_id -> $imp_id (accepted)"*) r=0 ;; *) r=1 ;; esac
ok $r "it prints the old and the new id ($(head -1 <<<"$out"))"
is "$(q "SELECT cluster_id FROM public.outboxd_kafka_cluster")" "$imp_id" "the impostor's id is recorded"
wait_for 30 drained
ok $? "the running CDC relay publishes to the accepted cluster without a restart"
missing=$(comm -23 <(new_ids "$last") <(topic_ids) | wc -l)
is "$missing" "0" "the 10 events are on the accepted cluster's topic"
grep -q "the recorded Kafka cluster changed from $real_id to $imp_id" "$tmp/cdc.log"
ok $? "the relay logs the accepted change"

out=$("$BIN/outboxctl" accept-cluster --cluster-id "$real_id" --json 2>&1)
is "$(jq -r '"\(.old) \(.new) \(.changed)"' <<<"$out")" "$imp_id $real_id true" \
	"accept-cluster --cluster-id puts the first id back (--json: old, new, changed)"
last2=$(q "SELECT max(id) FROM public.outbox")
m0=$(mismatches "$tmp/cdc.log")
write 2 5
lsn_d=$(q "SELECT pg_current_wal_lsn()")
cdc_blocked2() { [ "$(mismatches "$tmp/cdc.log")" -gt "$m0" ]; }
wait_for 40 cdc_blocked2
ok $? "on the impostor again the CDC relay is blocked again"
sleep 1
is "$(q "SELECT count(*) FROM public.outbox WHERE id > $last2 AND sent_at IS NOT NULL")" "0" \
	"CDC: nothing written since is marked sent"
to_real
ok $? "the stack's broker is back"
wait_for 45 drained
ok $? "CDC: every event is marked sent"
missing=$(comm -23 <(new_ids "$last2") <(topic_ids) | wc -l)
is "$missing" "0" "the 10 last events are on the right cluster's topic"
on_real=$(comm -12 <(q "SELECT event_id FROM public.outbox WHERE id > $last AND id <= $last2 ORDER BY 1") \
	<(topic_ids) | wc -l)
diag "$on_real of the 10 events sent while the impostor was accepted are also on the right cluster (they stay where they went)"
confirmed() { [ "$(q "SELECT confirmed_flush_lsn >= '$lsn_d' FROM pg_replication_slots
                       WHERE slot_name = 'outboxd'")" = "t" ]; }
wait_for 20 confirmed
ok $? "CDC: the slot's confirmed position moves past them once they are marked"
kill -TERM "$pid"
wait "$pid"
is "$?" "0" "SIGTERM: the CDC relay exits 0"
pid=
done_testing
