#!/usr/bin/env bash
# The crash-injection proof at a small size: scripts/chaos runs one seeded
# schedule (SIGKILL of relays, consumers and the supervisor, two Kafka
# restarts, one PostgreSQL restart, crash points in every process) against
# outboxd with 3 relays and 3 consumers, once with the order service in naive
# mode and once in outbox mode. The crash odds are higher than the demo's so
# that 2,000 events are enough to see every effect: the naive run must lose
# events, the outbox run must lose none, apply none twice, keep every order in
# sequence and leave no gap open, while events are delivered more than once.
. "$(dirname "$0")/../lib.sh"

services_up
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
res="$dir/result.json"

jr() { chaos_field "$res" "$1" "$2"; }   # jr MODE FIELD

crash="orders.after_commit:0.004,relay.after_claim:0.05,relay.after_publish:0.2"
crash="$crash,relay.after_mark:0.2,consumer.after_apply:0.01,consumer.after_commit:0.01"
bash scripts/chaos --events 2000 --rate 250 --seed 11 --crash "$crash" --out "$res" --quiet \
	>"$dir/chaos.out" 2>&1
rc=$?
is "$rc" "0" "scripts/chaos exits 0 (outbox run clean, naive run lost events)"
[ "$rc" = 0 ] || sed 's/^/# /' "$dir/chaos.out"
ok "$([ -s "$res" ]; echo $?)" "it wrote the result JSON"

for mode in naive outbox; do
	cmp_ok "$(jr $mode committed)" -ge 2000 "$mode: at least 2,000 events committed"
	is "$(jr $mode kill_supervisor)" "1" "$mode: the supervisor was SIGKILLed once (and restarted)"
	is "$(jr $mode restart_kafka)" "2" "$mode: two Kafka broker restarts"
	is "$(jr $mode restart_pg)" "1" "$mode: one PostgreSQL restart"
	cmp_ok "$(jr $mode kill_relay)" -ge 1 "$mode: relays SIGKILLed ($(jr $mode kill_relay))"
	cmp_ok "$(jr $mode kill_consumer)" -ge 1 "$mode: consumers SIGKILLed ($(jr $mode kill_consumer))"
done

cmp_ok "$(jr naive lost)" -ge 1 "naive: events were lost ($(jr naive lost) of $(jr naive committed))"
cmp_ok "$(jr naive crash_orders.after_commit)" -ge 1 \
	"naive: the order service crashed between commit and produce"

is "$(jr outbox lost)" "0" "outbox: nothing lost"
is "$(jr outbox double_applied)" "0" "outbox: nothing applied twice"
is "$(jr outbox out_of_order)" "0" "outbox: nothing out of order"
is "$(jr outbox open_gaps)" "0" "outbox: no gap left open"
is "$(jr outbox topic_distinct)" "$(jr outbox committed)" "outbox: every committed event reached the topic"
relay_crashes=$(( $(jr outbox crash_relay.after_claim) + $(jr outbox crash_relay.after_publish) + $(jr outbox crash_relay.after_mark) ))
cmp_ok "$relay_crashes" -ge 1 "outbox: relays crashed at their crash points ($relay_crashes)"
cmp_ok "$(jr outbox delivered_twice)" -ge 1 \
	"outbox: events were delivered more than once ($(jr outbox delivered_twice))"
cmp_ok "$(jr outbox duplicates_delivered)" -ge 1 "outbox: the consumers counted the duplicates they dropped"
is "$(jr outbox redelivered_applied_not_once)" "0" "outbox: every redelivered event has exactly one side_effects row"
is "$(jr outbox published_twice_in_pass)" "0" "outbox: no event id published twice within one relay pass"
cmp_ok "$(jr outbox crashes_total)" -ge 20 "outbox: crashes of all kinds ($(jr outbox crashes_total))"

# The database after the outbox run, with our own SQL.
is "$(q "SELECT count(*) FROM (SELECT aggregate_seq, row_number() OVER
	(PARTITION BY aggregate_id ORDER BY id) AS n FROM sink.side_effects) s WHERE aggregate_seq <> n")" "0" \
	"per order, side_effects in application order are seq 1..n"
is "$(q "SELECT count(*) FROM (SELECT event_id FROM sink.side_effects GROUP BY event_id
	HAVING count(*) > 1) d")" "0" "no event id has two side_effects rows"
is "$(q "SELECT count(*) FROM public.outbox o WHERE NOT EXISTS
	(SELECT 1 FROM sink.side_effects s WHERE s.event_id = o.event_id)")" "0" \
	"every outbox row has its side effect"
grep -q "outbox lost 0 of" "$dir/chaos.out"
ok $? "the reading names the outbox result"
done_testing
