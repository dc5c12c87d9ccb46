#!/usr/bin/env bash
# Slot safety on an idle outbox: while the CDC relay streams and nobody
# writes an event, 200 MB of WAL go into an unrelated table. The slot's
# confirmed position must follow the WAL (heartbeats and keepalive
# acknowledgements) and the WAL it retains must fall back to a few MB:
# without that, a quiet outbox on a busy server fills the disk.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
cdc_reset
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-126.XXXXXX")
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
mode = cdc
heartbeat_ms = 1000
EOF
)
pid=
trap 'kill -KILL $pid 2>/dev/null; q "DROP TABLE IF EXISTS public.wal_filler" >/dev/null 2>&1;
      rm -rf "$tmp" "$conf"' EXIT
"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/relay.log" 2>&1 &
pid=$!
streaming() { grep -q 'streaming slot' "$tmp/relay.log"; }
wait_for 30 streaming
ok $? "the CDC relay streams"

q "DROP TABLE IF EXISTS public.wal_filler; CREATE TABLE public.wal_filler (id bigint, pad text)" \
	>/dev/null
start=$(q "SELECT pg_current_wal_lsn()")
for i in $(seq 1 20); do
	q "INSERT INTO public.wal_filler SELECT g, repeat(md5(g::text), 28)
	     FROM generate_series(1, 11000) g" >/dev/null
done
end=$(q "SELECT pg_current_wal_lsn()")
written=$(q "SELECT (('$end'::pg_lsn - '$start'::pg_lsn) / 1048576)::int")
cmp_ok "$written" -ge 200 "200 MB or more of WAL written into an unrelated table ($written MB)"
is "$(q "SELECT count(*) FROM public.outbox")" "0" "no outbox event meanwhile"

confirmed_past() { [ "$(q "SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots
                           WHERE slot_name = 'outboxd'")" = t ]; }
wait_for 15 confirmed_past
ok $? "the slot's confirmed_flush_lsn moves past the end of that WAL"
retained_mb() { q "SELECT ((pg_current_wal_lsn() - restart_lsn) / 1048576)::int
                     FROM pg_replication_slots WHERE slot_name = 'outboxd'"; }
small() { [ "$(retained_mb)" -lt 4 ]; }
# restart_lsn follows once the server logs its next running-transactions
# snapshot (about every 15 s while WAL is written).
wait_for 45 small
ok $? "the WAL the slot retains falls under 4 MB ($(retained_mb) MB)"
kill -TERM "$pid"; wait "$pid"; pid=
grep -q 'heartbeats [1-9]' "$tmp/relay.log"
ok $? "the relay sent heartbeats"
cdc_reset
done_testing
