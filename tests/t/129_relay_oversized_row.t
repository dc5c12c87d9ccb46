#!/usr/bin/env bash
# A row the broker refuses for good (a ~2 MB payload, over message.max.bytes)
# waits with last_error and refused_at and blocks only its own aggregate:
# every other aggregate's events go out promptly, with no back-off, first
# with one refused row and then with batch_size of them. The refused
# aggregate stays unsent in order, outboxctl status shows it, and it goes
# out once its payload is fixed.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-129.XXXXXX")
batch=20
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
batch_size = $batch
poll_interval_ms = 200
EOF
)
pid=
cleanup() {
	kill -KILL $pid 2>/dev/null
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT

# big K N: aggregate big-K gets an oversized seq 1 and N-1 normal events after it.
big() {
	q "INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type, payload)
	   SELECT 'order', 'big-$1', s, 'order.updated',
	          CASE WHEN s = 1 THEN jsonb_build_object('blob', repeat('x', 2100000))
	               ELSE jsonb_build_object('n', s) END
	     FROM generate_series(1, $2) s" >/dev/null
}
# normal_lag_ok PHASE: every normal event sent; prints p99 and max lag (s).
normal_unsent() { q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL AND aggregate_id NOT LIKE 'big-%'"; }
normal_drained() { [ "$(normal_unsent)" = "0" ]; }
lag() {
	q "SELECT round(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at))::numeric, 2)
	          || ' ' || round(max(extract(epoch FROM sent_at - created_at))::numeric, 2)
	     FROM public.outbox WHERE aggregate_id NOT LIKE 'big-%' AND id > $1"
}

# burst WHAT CONF BOUND_S: 1,000 normal events at 200/s; asserts that all are
# sent within 60 s and that none waited BOUND_S or more (lag p99/max as diag).
burst() {
	local from t0 p99 max
	from=$(q "SELECT coalesce(max(id), 0) FROM public.outbox")
	t0=$SECONDS
	"$BIN/orders" -c "$2" --mode outbox --orders 200 --events-per-order 5 --concurrency 4 \
		--rate 200 --quiet >/dev/null 2>&1
	wait_for 60 normal_drained
	ok $? "$1: all 1,000 normal events sent ($((SECONDS - t0)) s from the first write)"
	read -r p99 max < <(lag "$from"); max=${max:-999}
	diag "$1: lag p99 $p99 s, max $max s at 200 events/s"
	cmp_ok "$(echo "$max < $3" | bc)" -eq 1 "$1: no normal event waited $3 s or more (max $max s)"
}

"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/relay.log" 2>&1 &
pid=$!

# Phase 1: one refused row (and one event after it) among 1,000 normal events.
big 0 2
burst "one refused row" "$conf" 3

# Phase 2: batch_size refused aggregates, then 1,000 more normal events.
for k in $(seq 1 $batch); do big "$k" 2; done
burst "$batch refused rows (= batch_size)" "$conf" 3

is "$(grep -c 'deliveries failed' "$tmp/relay.log")" "0" "the relay never failed a pass (no back-off)"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_id LIKE 'big-%' AND sent_at IS NULL")" \
	"$((2 * (batch + 1)))" "every refused aggregate's events stay unsent (the refused row and the one after it)"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_seq = 1 AND aggregate_id LIKE 'big-%'
          AND refused_at IS NOT NULL AND attempts >= 1 AND last_error LIKE '%MSG_SIZE_TOO_LARGE%'")" \
	"$((batch + 1))" "each refused row has refused_at, an attempt and last_error naming the size"
diag "last_error: $(q "SELECT last_error FROM public.outbox WHERE aggregate_id = 'big-0' AND aggregate_seq = 1")"
is "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_seq = 2 AND aggregate_id LIKE 'big-%'
          AND (refused_at IS NOT NULL OR attempts > 0)")" "0" \
	"the events after a refused row were never tried (its aggregate is skipped)"
a1=$(q "SELECT sum(attempts) FROM public.outbox WHERE aggregate_id LIKE 'big-%'")
sleep 2
is "$(q "SELECT sum(attempts) FROM public.outbox WHERE aggregate_id LIKE 'big-%'")" "$a1" \
	"refused rows are not retried pass after pass"
kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -e -q -f '%k\n' 2>/dev/null >"$tmp/keys"
is "$(grep -c '^big-' "$tmp/keys")" "0" "nothing of a refused aggregate is on the topic"
is "$(wc -l <"$tmp/keys" | tr -d ' ')" "2000" "the 2,000 normal events are on the topic"

"$BIN/outboxctl" -c "$conf" status >"$tmp/status" 2>&1
grep -q "refused: $((batch + 1)) rows" "$tmp/status"
ok $? "outboxctl status shows the refused rows"
grep -q "MSG_SIZE_TOO_LARGE" "$tmp/status"
ok $? "outboxctl status shows the oldest refused row's error"
sed 's/^/# status: /' "$tmp/status" | grep -i refus
"$BIN/outboxctl" -c "$conf" status --json >"$tmp/status.json" 2>&1
is "$(jq -r '.refused' "$tmp/status.json")" "$((batch + 1))" "status --json: refused"

# The claim, planned as the relay's session plans it, with refused rows in
# the table: still the ordered scan of outbox_unsent, the refused aggregates
# read once from the small outbox_refused index (a hashed subplan). With
# statistics as autovacuum keeps them: planned on the ones migrate took of
# an empty table, the subplan may scan outbox_unsent instead, which a
# backlog makes as long as the backlog.
q "ANALYZE public.outbox" >/dev/null
PGOPTIONS='-c enable_seqscan=off -c enable_bitmapscan=off -c enable_sort=off' psql -X -q -t -A -c "
	EXPLAIN SELECT id FROM public.outbox WHERE sent_at IS NULL AND id <= 1000000
	   AND aggregate_id NOT IN (SELECT b.aggregate_id FROM public.outbox b
	         WHERE b.refused_at IS NOT NULL AND b.sent_at IS NULL
	           AND b.refused_at > now() - interval '600 s')
	   AND pg_try_advisory_xact_lock(1, hashtext(aggregate_id))
	 ORDER BY id LIMIT $batch FOR UPDATE SKIP LOCKED" >"$tmp/plan"
grep -q 'Index Scan using outbox_unsent on outbox ' "$tmp/plan" &&
	grep -q 'hashed SubPlan' "$tmp/plan" && grep -q 'Index Only Scan using outbox_refused' "$tmp/plan"
rc=$?
ok $rc "the claim stays an ordered scan of outbox_unsent with the refused aggregates hashed once"
[ $rc -eq 0 ] || sed 's/^/# plan: /' "$tmp/plan"

# The operator fixes the payload: the row goes out, then the event after it.
q "UPDATE public.outbox SET payload = '{\"blob\": \"trimmed\"}'
    WHERE aggregate_id = 'big-0' AND aggregate_seq = 1" >/dev/null
big0_sent() { [ "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_id = 'big-0' AND sent_at IS NOT NULL")" = "2" ]; }
wait_for 20 big0_sent
ok $? "once its payload is fixed the refused row and the event after it are sent"
kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -e -q -f '%k %h\n' 2>/dev/null |
	sed -n 's/^big-0 .*aggregate_seq=\([0-9]*\).*/\1/p' | tr '\n' ' ' >"$tmp/big0"
is "$(cat "$tmp/big0")" "1 2 " "big-0's events are on the topic in order"

kill -TERM "$pid"
wait "$pid"
is "$?" "0" "SIGTERM: the relay exits 0"
pid=
grep -c 'WARN' "$tmp/relay.log" | sed 's/^/# relay warnings: /'

# The CDC relay: the same rule. A refused row gets refused_at and is left
# unsent, so are the streamed events of its aggregate after it, and the
# transaction settles like any other: no stream restart, the slot's
# confirmed position moves past it, every other aggregate streams on.
# Once the payload is fixed the relay starts a new session, whose catch-up
# poll publishes the aggregate's events in order.
reset_db
cdc_reset
fresh_topic
cdc_conf=$(test_conf <<EOF
[relay]
mode = cdc
heartbeat_ms = 500
batch_size = $batch
EOF
)
trap 'cleanup; rm -f "$cdc_conf"' EXIT
"$BIN/outbox-relay" -c "$cdc_conf" --id 0 >"$tmp/cdc.log" 2>&1 &
pid=$!
streaming() { grep -q 'streaming slot' "$tmp/cdc.log"; }
wait_for 60 streaming
ok $? "CDC: the relay streams"
# One event first, so the topic exists before the lag is measured.
"$BIN/orders" -c "$cdc_conf" --mode outbox --orders 1 --events-per-order 1 --quiet >/dev/null 2>&1
wait_for 30 normal_drained
ok $? "CDC: a first event is sent (the topic exists)"
big 0 2
refused_lsn=$(q "SELECT pg_current_wal_lsn()")
burst "CDC, one refused row" "$cdc_conf" 3
q "INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type, payload)
   VALUES ('order', 'big-0', 3, 'order.updated', '{\"n\": 3}')" >/dev/null
"$BIN/orders" -c "$cdc_conf" --mode outbox --orders 20 --events-per-order 5 --quiet >/dev/null 2>&1
wait_for 30 normal_drained
ok $? "CDC: the events written after big-0's seq 3 are sent"
is "$(q "SELECT string_agg((sent_at IS NULL)::text || '/' || (refused_at IS NOT NULL)::text, ' '
                           ORDER BY aggregate_seq)
          FROM public.outbox WHERE aggregate_id = 'big-0'")" "true/true true/false true/false" \
	"CDC: the refused row has refused_at; it, the event after it and seq 3 (a later transaction) stay unsent"
is "$(grep -c 'stream stopped' "$tmp/cdc.log")" "0" "CDC: the refusal restarted no stream"
grep -q "refused by Kafka for good" "$tmp/cdc.log"
ok $? "CDC: the relay logs the refusal"
confirmed_past() {
	[ "$(q "SELECT confirmed_flush_lsn >= '$refused_lsn'::pg_lsn FROM pg_replication_slots
	          WHERE slot_name = 'outboxd'")" = "t" ]
}
wait_for 20 confirmed_past
ok $? "CDC: the slot's confirmed position moved past the refused row"
kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -e -q -f '%k\n' 2>/dev/null >"$tmp/cdc_keys"
is "$(grep -c '^big-' "$tmp/cdc_keys")" "0" "CDC: nothing of the refused aggregate is on the topic"
is "$(wc -l <"$tmp/cdc_keys" | tr -d ' ')" "1101" "CDC: the 1,101 normal events are on the topic"

q "UPDATE public.outbox SET payload = '{\"blob\": \"trimmed\"}'
    WHERE aggregate_id = 'big-0' AND aggregate_seq = 1" >/dev/null
big0_cdc_sent() { [ "$(q "SELECT count(*) FROM public.outbox WHERE aggregate_id = 'big-0' AND sent_at IS NOT NULL")" = "3" ]; }
wait_for 30 big0_cdc_sent
ok $? "CDC: once its payload is fixed the refused row and both events after it are sent"
kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -e -q -f '%k %h\n' 2>/dev/null |
	sed -n 's/^big-0 .*aggregate_seq=\([0-9]*\).*/\1/p' | tr '\n' ' ' >"$tmp/big0"
is "$(cat "$tmp/big0")" "1 2 3 " "CDC: big-0's events are on the topic once each, in order"
is "$(grep -c 'no longer refused' "$tmp/cdc.log")" "1" "CDC: one new session for the released aggregate"
"$BIN/orders" -c "$cdc_conf" --mode outbox --orders 10 --events-per-order 2 --quiet >/dev/null 2>&1
wait_for 30 normal_drained
ok $? "CDC: the stream goes on after that session change"
kill -TERM "$pid"
wait "$pid"
is "$?" "0" "CDC: SIGTERM, the relay exits 0"
pid=
cdc_reset
done_testing
