#!/usr/bin/env bash
# CDC failover: three CDC relays, exactly one streams the slot, the others
# stand by. SIGKILL the active one while orders are written: a standby is
# streaming within 5 s; then kill that one too. Nothing is lost, and per
# order the first copy of each event on the topic comes in seq order.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
cdc_reset
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-125.XXXXXX")
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
mode = cdc
heartbeat_ms = 500
EOF
)
pids=(0 0 0) writer=
cleanup() {
	local p
	for p in "${pids[@]}" $writer; do [ "$p" != 0 ] && kill -KILL "$p" 2>/dev/null; done
	rm -rf "$tmp" "$conf"
}
trap cleanup EXIT
start_relay() { "$BIN/outbox-relay" -c "$conf" --id "$1" >>"$tmp/relay$1.log" 2>&1 & pids[$1]=$!; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# The relay whose log says it streams, after line $1 of each log ("" if none).
streaming_since() {
	local i
	for i in 0 1 2; do
		[ "${pids[$i]}" = 0 ] && continue
		if tail -n +"$(( ${mark[$i]:-0} + 1 ))" "$tmp/relay$i.log" | grep -q 'streaming slot'; then
			echo "$i"; return 0
		fi
	done
	return 1
}
has_leader() { leader=$(streaming_since) && [ -n "$leader" ]; }
mark_logs() { local i; for i in 0 1 2; do mark[$i]=$(wc -l <"$tmp/relay$i.log"); done; }

mark=(0 0 0)
for i in 0 1 2; do : >"$tmp/relay$i.log"; start_relay "$i"; done
wait_for 30 has_leader
ok $? "one of three relays streams (relay $leader)"
sleep 1
n=0; for i in 0 1 2; do grep -q 'streaming slot' "$tmp/relay$i.log" && n=$((n + 1)); done
is "$n" "1" "exactly one relay streams"
n=0; for i in 0 1 2; do grep -q 'standing by' "$tmp/relay$i.log" && n=$((n + 1)); done
is "$n" "2" "the two others stand by"

"$BIN/orders" -c "$conf" --mode outbox --orders 400 --events-per-order 10 --concurrency 4 \
	--rate 400 --quiet >/dev/null 2>&1 &
writer=$!
for round in 1 2; do
	sleep 3
	old=$leader
	mark_logs
	t0=$(now_ms)
	kill -KILL "${pids[$old]}"; wait "${pids[$old]}" 2>/dev/null; pids[$old]=0
	wait_for 15 has_leader
	took=$(( $(now_ms) - t0 ))
	ok $? "round $round: after SIGKILL of relay $old, relay $leader streams"
	cmp_ok "$took" -lt 5000 "round $round: the standby took over within 5 s ($took ms)"
done
wait "$writer"; writer=
is "$(q "SELECT count(*) FROM public.outbox")" "4000" "4000 events written meanwhile"
drained() { [ "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" = 0 ]; }
wait_for 60 drained
ok $? "every event is acknowledged and marked sent"
is "$(missing_from_topic "$OUTBOX_TOPIC" | wc -l)" "0" "no event is missing from the topic"
# First copy of each (order, seq) in offset order must be 1, 2, 3, ...
bad=$(kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -e -q -f '%p\t%o\t%k\t%h\n' 2>/dev/null |
	sort -t"$(printf '\t')" -k1,1n -k2,2n | awk -F'\t' '{
	s = ""; n = split($4, h, ",")
	for (i = 1; i <= n; i++) if (h[i] ~ /^aggregate_seq=/) s = substr(h[i], 15) + 0
	if (s <= last[$3]) next          # a re-streamed copy
	if (s != last[$3] + 1) bad++
	last[$3] = s
} END { print bad + 0 }')
is "$bad" "0" "per order, first copies on the topic come in seq order"
cdc_pids=$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'outboxd' AND active")
is "$cdc_pids" "1" "the slot is streamed by one relay"
for i in 0 1 2; do [ "${pids[$i]}" != 0 ] && kill -TERM "${pids[$i]}"; done
for i in 0 1 2; do [ "${pids[$i]}" != 0 ] && wait "${pids[$i]}"; done
pids=(0 0 0)
cdc_reset
done_testing
