#!/usr/bin/env bash
# The polling relay end to end: its CLI; one relay drains 500 events; every
# outbox row gets sent_at; the topic holds exactly the outbox's event ids
# once each, with key = aggregate_id, the contract's headers and value =
# payload; per order the seqs on the topic are 1, 2, ... in offset order;
# LISTEN/NOTIFY wakes it long before its (here: 60 s) poll interval; the
# counters row is written; SIGTERM exits 0.
. "$(dirname "$0")/../lib.sh"

# --- CLI (no services needed) ---
"$BIN/outbox-relay" --help >/dev/null 2>&1
is "$?" "0" "--help exits 0"
"$BIN/outbox-relay" --bogus >/dev/null 2>&1
is "$?" "2" "a bad flag exits 2"
"$BIN/outbox-relay" --id nope >/dev/null 2>&1
is "$?" "2" "a bad --id exits 2"
bad=$(printf '[relay]\npoll_interval_ms = 100\nbatch_size = 0\n' | test_conf)
out=$("$BIN/outbox-relay" -c "$bad" 2>&1)
is "$?" "2" "a bad config exits 2"
case "$out" in "$bad:3: "*batch_size*) r=0 ;; *) r=1 ;; esac
ok $r "a bad config says FILE:LINE: what ($out)"
rm -f "$bad"
"$BIN/outbox-relay" --mode cdx >/dev/null 2>&1
is "$?" "2" "a bad --mode exits 2"

# --- one relay drains 500 events ---
services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-120.XXXXXX")
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
batch_size = 100
poll_interval_ms = 60000
notify = on
EOF
)
pid=
trap 'kill -KILL $pid 2>/dev/null; rm -rf "$tmp" "$conf"' EXIT

"$BIN/orders" -c "$conf" --mode outbox --orders 100 --events-per-order 5 --concurrency 4 \
	--quiet >/dev/null 2>&1
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" "500" "500 unsent events"

unsent() { q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL"; }
drained() { [ "$(unsent)" = "0" ]; }
"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/relay.log" 2>&1 &
pid=$!
wait_for 30 drained
ok $? "one relay drains the 500 events"
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NOT NULL AND sent_at >= created_at")" \
	"500" "every outbox row has sent_at (after created_at)"

read -r messages distinct < <(topic_counts "$OUTBOX_TOPIC")
is "$messages $distinct" "500 500" "500 messages on the topic, 500 distinct event ids"

# Every message against its outbox row: key, the four headers, the value.
topic_vs_outbox "$OUTBOX_TOPIC" "$tmp"
ok $? "every message matches its outbox row (event id, key, seq, type, aggregate type, payload)"
[ "$(wc -l <"$tmp/from_db")" -eq 500 ]
ok $? "and there are 500 of them"
diff "$tmp/from_db" "$tmp/from_topic" | head -5 | sed 's/^/# /'

# Per order, in offset order: seq 1, 2, 3, 4, 5 (one partition per key).
bad=$(topic_order_faults "$tmp/topic.tsv")
is "$bad" "0" "per order the topic holds seq 1, 2, 3, ... in offset order, in one partition"
parts=$(cut -f1 "$tmp/topic.tsv" | sort -u | wc -l)
cmp_ok "$parts" -gt 1 "keys spread over several partitions ($parts)"

# NOTIFY wakes the relay: its poll interval is 60 s.
t0=$(date +%s%N)
"$BIN/orders" -c "$conf" --mode outbox --orders 1 --events-per-order 1 --quiet >/dev/null 2>&1
wait_for 5 drained
ok $? "a new event is sent within 5 s although the poll interval is 60 s (LISTEN/NOTIFY)"
diag "new event sent $(( ($(date +%s%N) - t0) / 1000000 )) ms after orders started"

sleep 1.2 # the counters row is refreshed about once a second
kill -TERM "$pid"
wait "$pid"
is "$?" "0" "SIGTERM: the relay exits 0"
pid=
is "$(q "SELECT mode, published, acked, failed, marked, passes > 0, pid > 0
         FROM public.outboxd_relays WHERE relay_id = 0")" "poll|501|501|0|501|t|t" \
	"outboxd_relays: the relay's counters"
grep -q 'ERROR' "$tmp/relay.log"
ok $((!$?)) "no ERROR in the relay's log"
grep 'ERROR\|WARN' "$tmp/relay.log" | head -5 | sed 's/^/# /'
done_testing
