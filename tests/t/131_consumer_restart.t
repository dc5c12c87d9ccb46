#!/usr/bin/env bash
# Consumer crash safety: 1,500 real events (naive orders, no crash on the
# producing side) consumed by a consumer that dies at a crash point again
# and again (exit 86, no cleanup) and is restarted until everything is
# applied; then a clean run drains the rest. Every event on the topic is
# applied exactly once, in seq order, and the redeliveries after crashes
# were recognised as duplicates. Once with consumer.after_commit (the
# database committed, the offset not: its redelivery must be dropped as a
# duplicate), once with consumer.after_apply (the transaction dies before
# COMMIT: nothing of it may stay applied). The points fire once per
# transaction, and a transaction applies a whole batch of fetched events.
. "$(dirname "$0")/../lib.sh"

services_up
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-131.XXXXXX")
pid=
trap 'kill -KILL $pid 2>/dev/null; rm -rf "$tmp"' EXIT

applied_count() { q "SELECT count(*) FROM sink.side_effects"; }

# crash_run POINT PROBABILITY
crash_run() {
	local point=$1 prob=$2 conf total runs=0 crashes=0 rc deadline parts n
	reset_db
	fresh_topic
	conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
commit_interval_ms = 50
[supervisor]
audit_file = $tmp/audit-$point.jsonl
EOF
)
	out=$("$BIN/orders" -c "$conf" --mode naive --orders 300 --events-per-order 5 --quiet 2>>"$tmp/orders.log")
	ok $? "$point: naive orders produced: $out"
	read -r total distinct < <(topic_counts "$OUTBOX_TOPIC")
	is "$total" "1500" "$point: 1,500 messages on the topic"

	# Restart after every crash until everything is applied (bounded: a
	# clean run below drains whatever is left).
	deadline=$((SECONDS + 25))
	while [ $SECONDS -lt $deadline ]; do
		runs=$((runs + 1))
		OUTBOX_CRASH="$point:$prob" OUTBOX_CRASH_SEED=$runs \
			"$BIN/outbox-consumer" -c "$conf" --id 1 >>"$tmp/consumer-$point.log" 2>&1 &
		pid=$!
		# until it crashes, or (alive for a while) has applied everything
		local ticks=0
		while kill -0 "$pid" 2>/dev/null; do
			sleep 0.05
			ticks=$((ticks + 1))
			[ $((ticks % 20)) -eq 0 ] && [ "$(applied_count)" -ge "$total" ] && break
		done
		kill -TERM "$pid" 2>/dev/null
		wait "$pid"
		rc=$?
		[ $rc -eq 86 ] && crashes=$((crashes + 1))
		[ "$(applied_count)" -ge "$total" ] && break
	done
	diag "$point: $runs runs, $crashes crashes, $(applied_count) of $total applied under crashes"
	cmp_ok "$crashes" -ge 3 "$point: the crash point fired again and again"

	# One clean run: a marker message on every partition; once all are
	# applied, every partition has been read to its end.
	parts=$(kcat -b "$OUTBOX_KAFKA" -L -t "$OUTBOX_TOPIC" 2>/dev/null |
		sed -n 's/^ *partition \([0-9]*\),.*/\1/p')
	n=0
	for p in $parts; do
		echo '{}' | kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -p "$p" -k "marker-$p" \
			-H "event_id=$(cat /proc/sys/kernel/random/uuid)" -H aggregate_seq=1 \
			-H event_type=marker -H aggregate_type=marker 2>/dev/null
		n=$((n + 1))
	done
	"$BIN/outbox-consumer" -c "$conf" --id 1 >>"$tmp/consumer-$point.log" 2>&1 &
	pid=$!
	markers_in() {
		[ "$(q "SELECT count(*) FROM sink.side_effects WHERE aggregate_id LIKE 'marker-%'")" -ge "$1" ]
	}
	wait_for 30 markers_in "$n"
	ok $? "$point: a clean run drains all $n partitions"
	sleep 1.2
	kill -TERM "$pid"
	wait "$pid"
	is "$?" "0" "$point: the clean run exits 0 on SIGTERM"

	is "$(q "SELECT count(*) FROM sink.side_effects WHERE aggregate_id NOT LIKE 'marker-%'")" \
		"$total" "$point: side effects = messages on the topic"
	is "$(q "SELECT count(*) FROM (SELECT event_id FROM sink.side_effects GROUP BY 1
	         HAVING count(*) > 1) d")" "0" "$point: no event id applied twice"
	is "$(q "SELECT count(DISTINCT event_id) FROM sink.side_effects
	         WHERE aggregate_id NOT LIKE 'marker-%'")" "$distinct" \
		"$point: every event id on the topic applied"
	is "$(q "SELECT count(*) FROM (SELECT aggregate_id FROM sink.side_effects
	         WHERE aggregate_id NOT LIKE 'marker-%' GROUP BY 1
	         HAVING count(*) <> 5 OR count(DISTINCT aggregate_seq) <> 5 OR max(aggregate_seq) <> 5) g")" \
		"0" "$point: every order's seqs 1..5 once each"
	is "$(q "SELECT count(*) FROM sink.side_effects a JOIN sink.side_effects b
	         ON a.aggregate_id = b.aggregate_id AND a.id < b.id AND a.aggregate_seq > b.aggregate_seq")" \
		"0" "$point: applied in seq order per order"
	is "$(q "SELECT count(*) FROM sink.order_projection WHERE order_id NOT LIKE 'marker-%'
	         AND (last_seq <> 5 OR events_applied <> 5)")" "0" "$point: projections at seq 5"
	is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind IN ('gap', 'poison')")" "0" \
		"$point: no gap or poison seen"
	[ "$point" = consumer.after_commit ] &&
		cmp_ok "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'duplicate'")" -gt 0 \
			"$point: redeliveries after crashes were dropped as duplicates"
	rm -f "$conf"
}

crash_run consumer.after_commit 0.3
crash_run consumer.after_apply 0.3
if [ "$T_FAILED" -gt 0 ]; then tail -n 50 "$tmp"/consumer-*.log | sed 's/^/# /'; fi
done_testing
