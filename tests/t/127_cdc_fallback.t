#!/usr/bin/env bash
# Slot invalidation: with a small max_slot_wal_keep_size, the CDC relay
# stopped, events written and then more WAL than the limit, the server
# invalidates the slot (wal_status = lost). The relay, started again, must
# say so loudly, publish the backlog by polling, recreate the slot and
# stream again, losing nothing.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
cdc_reset
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-127.XXXXXX")
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
mode = cdc
heartbeat_ms = 1000
EOF
)
pid=
restore() {
	q "ALTER SYSTEM RESET max_slot_wal_keep_size" >/dev/null
	q "SELECT pg_reload_conf()" >/dev/null
	q "DROP TABLE IF EXISTS public.wal_filler" >/dev/null
}
trap 'kill -KILL $pid 2>/dev/null; restore; rm -rf "$tmp" "$conf"' EXIT
write() { "$BIN/orders" -c "$conf" --mode outbox --orders "$1" --events-per-order "$2" \
	--concurrency 4 --quiet >/dev/null 2>&1; }
unsent() { q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL"; }
drained() { [ "$(unsent)" = "0" ]; }
streams() { [ "$(grep -c 'streaming slot' "$tmp/relay.log")" -ge "$1" ]; }

"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/relay.log" 2>&1 &
pid=$!
wait_for 30 streams 1
ok $? "the CDC relay streams"
write 20 5
wait_for 30 drained
ok $? "100 events streamed"
kill -TERM "$pid"; wait "$pid"; pid=

q "ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
write 40 5
is "$(unsent)" "200" "200 events written while the relay is stopped"
q "DROP TABLE IF EXISTS public.wal_filler; CREATE TABLE public.wal_filler (id bigint, pad text)" \
	>/dev/null
filler() { q "INSERT INTO public.wal_filler SELECT g, repeat(md5(g::text), 28)
                FROM generate_series(1, 11000) g" >/dev/null; }
filler
warnconf=$(printf '[relay]\nwal_warn_mb = 1\n' | test_conf)
out=$("$BIN/outboxctl" -c "$warnconf" status 2>/dev/null)
case "$out" in *"WARNING: slot outboxd retains "*"MB of WAL, above [relay] wal_warn_mb = 1"*) r=0 ;; *) r=1 ;; esac
ok $r "outboxctl status warns about the WAL the stopped relay's slot retains"
rm -f "$warnconf"
lost() { [ "$(q "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'outboxd'")" = lost ]; }
for i in 1 2 3 4 5 6; do
	filler
	q "CHECKPOINT" >/dev/null
	lost && break
done
lost
ok $? "the server invalidated the slot (wal_status = lost)"
out=$("$BIN/outboxctl" -c "$conf" status --json 2>/dev/null)
case "$out" in *'"wal_status":"lost"'*'"warnings":["slot outboxd is invalidated'*) r=0 ;; *) r=1 ;; esac
ok $r "outboxctl status --json shows the slot lost, with a warning"

"$BIN/outbox-relay" -c "$conf" --id 0 >>"$tmp/relay.log" 2>&1 &
pid=$!
wait_for 30 streams 2
ok $? "the relay streams again"
grep -q 'SLOT outboxd IS INVALIDATED' "$tmp/relay.log"
ok $? "it says loudly that the slot was invalidated"
grep -q 'publishing the outbox backlog by polling' "$tmp/relay.log"
ok $? "it falls back to polling for the backlog"
wait_for 30 drained
ok $? "the 200 events written meanwhile are published and marked"
is "$(q "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'outboxd'")" "reserved" \
	"the slot was recreated"
restore
write 10 5
wait_for 30 drained
ok $? "new events stream through the new slot"
is "$(missing_from_topic "$OUTBOX_TOPIC" | wc -l)" "0" "none of the 350 events is missing from the topic"
kill -TERM "$pid"; wait "$pid"; pid=
cdc_reset
done_testing
