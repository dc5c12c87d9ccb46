#!/usr/bin/env bash
# Ordering race across relays. Order 1 has 3 events (outbox ids 1..3) and
# 20 more orders follow. Relay A (batch_size 1) claims order 1's seq 1 and
# is held inside the claim-to-publish window by OUTBOX_PAUSE
# (relay.after_claim, 3 s). Relay B starts during the pause and drains
# everything else; it must not publish order 1's seq 2 or 3 before A's
# seq 1 was acknowledged: B does not even get order 1's advisory lock.
#
# Tried by hand (not left in the code): with the advisory lock removed from
# the claim, only check 4 (A holds order 1's lock) fails: the re-check
# still refuses seq 2 and 3 (order 1's oldest unsent seq is 1), but B then
# claims and row-locks them for nothing. With the lock AND the re-check
# removed, B publishes seq 2 and 3 during A's pause: checks 5-8, 12 and 14
# fail and the topic holds order 1 as 2,3,1.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-122.XXXXXX")
plog="$tmp/publish.log"
mk_conf() {
	test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
batch_size = $1
poll_interval_ms = 100
publish_log = $plog
EOF
}
conf_a=$(mk_conf 1)
conf_b=$(mk_conf 500)
pa= pb=
trap 'kill -KILL $pa $pb 2>/dev/null; rm -rf "$tmp" "$conf_a" "$conf_b"' EXIT

"$BIN/orders" -c "$conf_a" --mode outbox --orders 1 --events-per-order 3 --concurrency 1 \
	--quiet >/dev/null 2>&1
"$BIN/orders" -c "$conf_a" --mode outbox --orders 20 --events-per-order 3 --concurrency 2 \
	--quiet >/dev/null 2>&1
is "$(q "SELECT string_agg(aggregate_id || ':' || aggregate_seq, ',' ORDER BY id)
         FROM public.outbox WHERE id <= 3")" "1:1,1:2,1:3" "outbox ids 1..3 are order 1's seq 1..3"
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" "63" "63 unsent events"

pause="$tmp/pause"
OUTBOX_PAUSE=relay.after_claim:3000 OUTBOX_PAUSE_FILE="$pause" \
	"$BIN/outbox-relay" -c "$conf_a" --id 1 >"$tmp/relayA.log" 2>&1 &
pa=$!
wait_for 10 test -e "$pause"
ok $? "relay A pauses after claiming"
is "$(q "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1868724324
           AND l.objid::bigint = (hashtext('1')::bigint & 4294967295)
           AND a.application_name = 'outbox-relay[1]'")" "1" \
	"relay A holds order 1's advisory lock during the pause"

"$BIN/outbox-relay" -c "$conf_b" --id 2 >"$tmp/relayB.log" 2>&1 &
pb=$!
only_order1_left() {
	[ "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" = "3" ]
}
wait_for 10 only_order1_left
ok $? "relay B drains the other 60 events"
test -e "$pause"
ok $? "... while relay A is still paused"
is "$(q "SELECT string_agg(aggregate_seq::text, ',' ORDER BY aggregate_seq)
         FROM public.outbox WHERE aggregate_id = '1' AND sent_at IS NULL")" "1,2,3" \
	"during the pause order 1 stays entirely unsent"
is "$(awk -F'\t' '$1 == 2 && $4 == "1"' "$plog" | wc -l)" "0" \
	"relay B published nothing of order 1 during the pause"

drained() { [ "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" = "0" ]; }
wait_for 20 drained
ok $? "after the pause everything is sent"
kill -TERM $pa $pb
wait $pa; ra=$?
wait $pb; rb=$?
pa= pb=
is "$ra$rb" "00" "both relays exit 0 on SIGTERM"

# The publish log: order 1's seq 1 (relay A) acked before any of its later
# seqs was even claimed.
read -r a1_relay a1_acked < <(awk -F'\t' '$4 == "1" && $5 == 1 && $8 == "ok" { print $1, $10; exit }' "$plog")
is "$a1_relay" "1" "order 1's seq 1 went out through relay A"
later=$(awk -F'\t' -v t="${a1_acked:-0}" '$4 == "1" && $5 > 1 && $9 <= t' "$plog" | wc -l)
is "$later" "0" "order 1's seq 2 and 3 were claimed only after seq 1 was acknowledged"
is "$(awk -F'\t' '$4 == "1"' "$plog" | wc -l)" "3" "order 1's three events were published once each"

# And on the topic: order 1 is 1, 2, 3 in offset order.
is "$(kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -e -q -f '%k\t%o\t%h\n' 2>/dev/null |
	awk -F'\t' '$1 == "1"' | sort -t"$(printf '\t')" -k2,2n |
	sed -n 's/.*aggregate_seq=\([0-9]*\).*/\1/p' | tr '\n' ',')" "1,2,3," \
	"the topic holds order 1 as seq 1, 2, 3 in offset order"
read -r messages distinct < <(topic_counts "$OUTBOX_TOPIC")
is "$distinct" "63" "all 63 events on the topic"
done_testing
