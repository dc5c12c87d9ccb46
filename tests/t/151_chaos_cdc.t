#!/usr/bin/env bash
# The crash-injection proof with CDC relays: scripts/chaos --relay-mode cdc
# runs the outbox pipeline under 3 CDC relays (one streams, two stand by)
# and 3 consumers through the same kind of schedule as 150 (every relay
# SIGKILL hits the relay that streams; the supervisor is SIGKILLed; Kafka
# restarts twice and PostgreSQL once; crash points in every process). The
# thresholds are polling mode's: nothing lost, nothing applied twice, no
# order out of sequence, no gap left open.
. "$(dirname "$0")/../lib.sh"

services_up
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
res="$dir/result.json"
jr() { chaos_field "$res" "$1" "$2"; }   # jr MODE FIELD

crash="orders.after_commit:0.004,relay.after_publish:0.05,relay.after_mark:0.05"
crash="$crash,consumer.after_apply:0.01,consumer.after_commit:0.01"
bash scripts/chaos --relay-mode cdc --modes outbox --events 2000 --rate 250 --seed 12 \
	--crash "$crash" --out "$res" --quiet >"$dir/chaos.out" 2>&1
rc=$?
is "$rc" "0" "scripts/chaos --relay-mode cdc exits 0"
[ "$rc" = 0 ] || sed 's/^/# /' "$dir/chaos.out"

cmp_ok "$(jr outbox committed)" -ge 2000 "at least 2,000 events committed"
is "$(jr outbox kill_supervisor)" "1" "the supervisor was SIGKILLed once (and restarted)"
is "$(jr outbox restart_kafka)" "2" "two Kafka broker restarts"
is "$(jr outbox restart_pg)" "1" "one PostgreSQL restart"
cmp_ok "$(jr outbox kill_relay)" -ge 3 "the streaming CDC relay was SIGKILLed ($(jr outbox kill_relay))"
is "$(jr outbox lost)" "0" "nothing lost"
is "$(jr outbox double_applied)" "0" "nothing applied twice"
is "$(jr outbox out_of_order)" "0" "nothing out of order"
is "$(jr outbox open_gaps)" "0" "no gap left open"
is "$(jr outbox topic_distinct)" "$(jr outbox committed)" "every committed event reached the topic"
cmp_ok "$(jr outbox delivered_twice)" -ge 1 \
	"events were streamed again after crashes ($(jr outbox delivered_twice))"
is "$(jr outbox redelivered_applied_not_once)" "0" "every redelivered event has exactly one side_effects row"
is "$(jr outbox published_twice_in_pass)" "0" "no event id published twice within one stream session"
relay_crashes=$(( $(jr outbox crash_relay.after_publish) + $(jr outbox crash_relay.after_mark) ))
diag "relay crash points fired: $relay_crashes"

is "$(q "SELECT count(*) FROM (SELECT aggregate_seq, row_number() OVER
	(PARTITION BY aggregate_id ORDER BY id) AS n FROM sink.side_effects) s WHERE aggregate_seq <> n")" "0" \
	"per order, side_effects in application order are seq 1..n"
is "$(q "SELECT count(*) FROM public.outbox o WHERE NOT EXISTS
	(SELECT 1 FROM sink.side_effects s WHERE s.event_id = o.event_id)")" "0" \
	"every outbox row has its side effect"
is "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'chaos\_%'")" "0" \
	"the run's slot was dropped afterwards"
done_testing
