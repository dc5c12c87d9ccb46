#!/usr/bin/env bash
# The CDC relay end to end: a backlog written before any slot existed goes
# out (polled before the slot is created); streamed events match their
# outbox rows exactly (key, headers, value) and keep each order's sequence
# in offset order; rows get sent_at; the slot's confirmed position follows;
# a schema change of the outbox (Relation resent) does not stop it; a
# SIGKILLed relay restarted later loses nothing written meanwhile and sends
# it once (by the catch-up poll, not again from the slot); SIGTERM exits 0.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
cdc_reset
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-124.XXXXXX")
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
mode = cdc
heartbeat_ms = 500
poll_interval_ms = 60000
EOF
)
pid=
trap 'kill -KILL $pid 2>/dev/null; rm -rf "$tmp" "$conf"' EXIT
unsent() { q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL"; }
drained() { [ "$(unsent)" = "0" ]; }
write() { "$BIN/orders" -c "$conf" --mode outbox --orders "$1" --events-per-order "$2" \
	--concurrency 4 --quiet >/dev/null 2>&1; }
start_relay() { "$BIN/outbox-relay" -c "$conf" --id 0 >>"$tmp/relay.log" 2>&1 & pid=$!; }
streaming() { grep -q 'streaming slot outboxd' "$tmp/relay.log"; }

write 25 4
is "$(unsent)" "100" "100 events written before any slot exists"
start_relay
wait_for 30 streaming
ok $? "the relay creates publication and slot and streams"
is "$(q "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'outboxd_outbox'
          AND schemaname = 'public' AND tablename = 'outbox'")" "1" "publication on public.outbox"
is "$(q "SELECT plugin || ' ' || slot_type || ' ' || (active_pid IS NOT NULL)
          FROM pg_replication_slots WHERE slot_name = 'outboxd'")" "pgoutput logical true" \
	"slot outboxd: logical, pgoutput, active"
wait_for 20 drained
ok $? "the backlog from before the slot is published (by polling) and marked"
grep -q 'publishing the outbox backlog by polling' "$tmp/relay.log"
ok $? "the log says the backlog is polled first"

write 100 4
wait_for 30 drained
ok $? "400 streamed events are acknowledged and marked sent"
lsn=$(q "SELECT pg_current_wal_lsn()")
confirmed() { [ "$(q "SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots
                       WHERE slot_name = 'outboxd'")" = "t" ]; }
wait_for 20 confirmed
ok $? "the slot's confirmed position moves past the last write"

topic_vs_outbox "$OUTBOX_TOPIC" "$tmp"
ok $? "every message matches its outbox row (event id, key, seq, type, aggregate type, payload)"
is "$(wc -l <"$tmp/from_db") $(wc -l <"$tmp/from_topic")" "500 500" "500 rows, 500 messages"
diff "$tmp/from_db" "$tmp/from_topic" | head -5 | sed 's/^/# /'
bad=$(topic_order_faults "$tmp/topic.tsv")
is "$bad" "0" "per order the topic holds seq 1, 2, 3, ... in offset order, in one partition"

# A schema change: the server sends the Relation again; the relay follows.
q "ALTER TABLE public.outbox ADD COLUMN cdc_test_note text DEFAULT 'x'" >/dev/null
write 10 5
wait_for 30 drained
ok $? "after ALTER TABLE outbox ADD COLUMN, new events still go out"
is "$(missing_from_topic "$OUTBOX_TOPIC" | wc -l)" "0" "none of the 550 is missing from the topic"
q "ALTER TABLE public.outbox DROP COLUMN cdc_test_note" >/dev/null

# SIGKILL, write while it is down, start again: nothing lost.
kill -KILL "$pid"; wait "$pid" 2>/dev/null; pid=
write 20 5
is "$(unsent)" "100" "100 events written while the relay is dead"
start_relay
wait_for 30 drained
ok $? "a restarted relay catches up and publishes them"
is "$(missing_from_topic "$OUTBOX_TOPIC" | wc -l)" "0" "none of the 650 is missing from the topic"
is "$(q "SELECT count(*) FROM pg_replication_slots")" "1" "still one slot"

# Written once the restarted relay streams (after its catch-up): a commit
# the stream reaches after the catch-up's position, as the check below needs.
streaming_again() { [ "$(grep -c 'streaming slot outboxd' "$tmp/relay.log")" -ge 2 ]; }
wait_for 30 streaming_again
ok $? "the restarted relay streams after its catch-up"
write 2 5 # streamed (the restart's catch-up above went out by polling)
wait_for 30 drained
# The 100 written while it was dead are in the slot too: the stream skips
# what the catch-up published, so each went out once.
passed() { grep -q 'the stream passed the catch-up poll: 100 events' "$tmp/relay.log"; }
wait_for 30 passed
ok $? "the stream skipped the 100 events the catch-up poll had published"
read -r messages distinct < <(topic_counts "$OUTBOX_TOPIC")
is "$messages $distinct" "660 660" "660 messages on the topic, each event once"
sleep 1.2 # counters refresh about once a second
is "$(q "SELECT mode || ' ' || (acked >= 10) FROM public.outboxd_relays WHERE relay_id = 0")" \
	"cdc true" "outboxd_relays: mode cdc with its counters"
kill -TERM "$pid"
wait "$pid"
is "$?" "0" "SIGTERM: the relay exits 0"
pid=
grep -q 'ERROR' "$tmp/relay.log"
ok $((!$?)) "no ERROR in the relay's log"
grep 'ERROR\|WARN' "$tmp/relay.log" | head -5 | sed 's/^/# /'
cdc_reset
done_testing
