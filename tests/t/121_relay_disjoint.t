#!/usr/bin/env bash
# Disjoint batches: 4 relays with a publish log drain a 50,000-event backlog
# (10,000 orders x 5 events, written before the relays start). Every row is
# sent; no event id appears twice within one pass; an event id published in
# two passes was claimed by the later pass only after the earlier pass had
# its delivery report (passes holding the same event never overlap); all 4
# relays took part; per order the topic holds seq 1..5 in offset order.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-121.XXXXXX")
plog="$tmp/publish.log"
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
batch_size = 500
poll_interval_ms = 200
publish_log = $plog
EOF
)
pids=()
trap 'for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp" "$conf"' EXIT

"$BIN/orders" -c "$conf" --mode outbox --orders 10000 --events-per-order 5 --concurrency 8 \
	--quiet >/dev/null 2>&1
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" "50000" "a backlog of 50,000 unsent events"

unsent() { q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL"; }
drained() { [ "$(unsent)" = "0" ]; }
t0=$(date +%s%N)
for i in 0 1 2 3; do
	"$BIN/outbox-relay" -c "$conf" --id "$i" >"$tmp/relay$i.log" 2>&1 &
	pids+=($!)
done
wait_for 50 drained
ok $? "4 relays drain the backlog"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
diag "drained 50,000 events with 4 relays in $ms ms: $(( 50000 * 1000 / (ms + 1) )) events/s (incl. start-up)"
rcs=""
for p in "${pids[@]}"; do kill -TERM "$p"; done
for p in "${pids[@]}"; do wait "$p"; rcs="$rcs$?"; done
pids=()
is "$rcs" "0000" "SIGTERM: all 4 relays exit 0"

is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NOT NULL")" "50000" "all 50,000 rows sent"
lines=$(wc -l <"$plog")
cmp_ok "$lines" -ge 50000 "the publish log has a line per publish ($lines)"
is "$(awk -F'\t' 'NF != 10 || $8 != "ok"' "$plog" | wc -l)" "0" "every line has 10 fields and status ok"
is "$(cut -f3 "$plog" | sort -u | wc -l)" "50000" "the log covers all 50,000 event ids"
is "$(cut -f2,3 "$plog" | sort | uniq -d | wc -l)" "0" "no event id twice within one pass"
is "$(cut -f1 "$plog" | sort -u | tr '\n' ' ')" "0 1 2 3 " "all 4 relays published"
for i in 0 1 2 3; do diag "relay $i published $(awk -F'\t' -v i=$i '$1 == i' "$plog" | wc -l)"; done
# Passes of different relays holding the same event must not overlap: the
# later claim comes after the earlier acknowledgement.
overlap=$(sort -t"$(printf '\t')" -k3,3 -k9,9n "$plog" | awk -F'\t' '
	$3 == ev && $9 <= acked { bad++ }
	{ ev = $3; acked = $10 } END { print bad + 0 }')
is "$overlap" "0" "an event in two passes: the later pass claimed it after the earlier one's ack"
dups=$(( lines - 50000 ))
diag "$dups events were published more than once"
# A pass's claim time never precedes... sanity: claimed_us <= acked_us on every line.
is "$(awk -F'\t' '$9 > $10' "$plog" | wc -l)" "0" "claimed_us <= acked_us on every line"

read -r messages distinct < <(topic_counts "$OUTBOX_TOPIC")
is "$distinct" "50000" "the topic has all 50,000 event ids"
bad=$(kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -e -q -f '%p\t%o\t%k\t%h\n' 2>/dev/null |
	sort -t"$(printf '\t')" -k1,1n -k2,2n | awk -F'\t' '{
	s = ""; n = split($4, h, ",")
	for (i = 1; i <= n; i++) if (h[i] ~ /^aggregate_seq=/) s = substr(h[i], 15) + 0
	if (s > max[$3] + 1) bad++
	if (s > max[$3]) max[$3] = s
} END { print bad + 0 }')
is "$bad" "0" "per order no event overtakes an earlier one on the topic"
grep -h 'ERROR' "$tmp"/relay*.log | head -5 | sed 's/^/# /'
done_testing
