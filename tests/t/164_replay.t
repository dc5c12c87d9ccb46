#!/usr/bin/env bash
# outboxctl replay: a relay and a consumer carry 5 orders of 4 events to the
# sink; replaying an order puts its events on the topic again (same event
# ids, keys and headers) and the consumer applies none of them twice;
# --from-seq replays the tail only. As a repair: after one order's sink rows
# are lost (deleted here, as if the sink were restored from an old backup),
# a replay applies its events again, once each, in order.
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-164.XXXXXX")
rpid=
cpid=
conf=
trap '[ -n "$rpid" ] && kill -KILL $rpid 2>/dev/null; [ -n "$cpid" ] && kill -KILL $cpid 2>/dev/null;
      rm -rf "$tmp" "$conf"' EXIT

"$BIN/outboxctl" replay >/dev/null 2>&1
is "$?" "2" "replay without --order exits 2"
"$BIN/outboxctl" replay --order x --from-seq 0 >/dev/null 2>&1
is "$?" "2" "replay --from-seq 0 exits 2"

services_up
reset_db
q "TRUNCATE sink.dead_letters, sink.parked, sink.quarantine RESTART IDENTITY CASCADE" >/dev/null
fresh_topic
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
poll_interval_ms = 200
[consumer]
group_id = $OUTBOX_GROUP
[supervisor]
audit_file = $tmp/audit.jsonl
EOF
)
"$BIN/orders" -c "$conf" --mode outbox --orders 5 --events-per-order 4 --concurrency 1 \
	--quiet >/dev/null 2>&1
ok $? "5 orders of 4 events written"
"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/relay.log" 2>&1 &
rpid=$!
"$BIN/outbox-consumer" -c "$conf" --id 0 >"$tmp/consumer.log" 2>&1 &
cpid=$!
applied() { [ "$(q "SELECT count(*) FROM sink.side_effects")" = "$1" ]; }
wait_for 60 applied 20
ok $? "all 20 events applied"
kill -TERM "$rpid"; wait "$rpid"; rpid=

order=$(q "SELECT id FROM public.orders ORDER BY id LIMIT 1")
other=$(q "SELECT id FROM public.orders ORDER BY id DESC LIMIT 1")
out=$("$BIN/outboxctl" -c "$conf" replay --order "$order")
is "$?" "0" "replay --order exits 0"
is "$out" "order $order: 4 of 4 event(s) from seq 1 re-published to $OUTBOX_TOPIC" "and says what it did"
out=$("$BIN/outboxctl" -c "$conf" --json replay --order "$order" --from-seq 3)
is "$(echo "$out" | jq -c '[.published, .failed, .from_seq]')" "[2,0,3]" \
	"--from-seq 3 --json: 2 events re-published"
read -r messages distinct < <(topic_counts "$OUTBOX_TOPIC")
is "$messages $distinct" "26 20" "the topic holds 26 messages of 20 distinct events"
is "$(kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -e -q -f '%k %h\n' 2>/dev/null | grep "^$order " |
      sed -n 's/.*aggregate_seq=\([0-9]*\).*/\1/p' | tr '\n' ' ')" "1 2 3 4 1 2 3 4 3 4 " \
	"the order's events, then the replay's, then the tail, in seq order, one key"
dups() { [ "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'duplicate'")" = 6 ]; }
wait_for 30 dups
ok $? "the consumer drops the 6 replayed messages as duplicates"
is "$(q "SELECT count(*) FROM sink.side_effects")" "20" "still 20 side effects"

# Repair: the sink loses one order's rows; a replay brings them back once.
q "DELETE FROM sink.side_effects WHERE aggregate_id = '$other';
   DELETE FROM sink.inbox WHERE event_id IN (SELECT event_id FROM public.outbox
                                             WHERE aggregate_id = '$other');
   DELETE FROM sink.order_projection WHERE order_id = '$other'" >/dev/null
"$BIN/outboxctl" -c "$conf" replay --order "$other" >/dev/null
ok $? "replay of the order the sink lost"
wait_for 30 applied 20
ok $? "its 4 events are applied again"
is "$(q "SELECT string_agg(aggregate_seq::text, ',' ORDER BY id) FROM sink.side_effects
         WHERE aggregate_id = '$other'")" "1,2,3,4" "in order"
is "$(q "SELECT count(*) FROM (SELECT 1 FROM sink.side_effects GROUP BY aggregate_id, aggregate_seq
         HAVING count(*) > 1) d")" "0" "nothing applied twice"
"$BIN/outboxctl" -c "$conf" verify --wait 5 >/dev/null
ok $? "outboxctl verify passes"
"$BIN/outboxctl" -c "$conf" replay --order no-such-order >/dev/null 2>&1
is "$?" "1" "replay of an order the outbox does not have exits 1"
kill -TERM "$cpid"; wait "$cpid"; rc=$?; cpid=
is "$rc" "0" "consumer exits 0 on SIGTERM"
if [ "$T_FAILED" -gt 0 ]; then sed 's/^/# /' "$tmp/consumer.log"; fi
done_testing
