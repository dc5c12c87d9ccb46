#!/usr/bin/env bash
# The whole pipeline under the supervisor, with real workers: outboxd with 3
# relays and 3 consumers while the order service writes 20,000 events
# (4,000 orders x 5 events) at full speed; outboxctl verify must pass and the
# same facts are checked with our own SQL. Then, while more orders are
# written: SIGKILL of a relay and of a consumer (both come back), SIGTERM of
# outboxd in the middle of the drain (everything stops in time, nothing is
# lost once a new outboxd finishes), and SIGKILL of outboxd itself (its
# workers notice and stop).
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d /tmp/outboxd-142.XXXXXX)
SUP_PID=
cleanup() {
	[ -n "$SUP_PID" ] && kill -KILL "$SUP_PID" 2>/dev/null
	pkill -KILL -f -- "-c $tmp/outboxd.conf" 2>/dev/null
	[ "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

conf=$(test_conf <<EOF
[relay]
poll_interval_ms = 200
[supervisor]
http_listen = off
audit_file = $tmp/audit.jsonl
backoff_max_ms = 1000
stable_ms = 5000
shutdown_timeout_ms = 20000
EOF
)
mv "$conf" "$tmp/outboxd.conf"
conf=$tmp/outboxd.conf

start_outboxd() {
	"$BIN/outboxd" -c "$conf" --relays 3 --consumers 3 >>"$tmp/outboxd.log" 2>&1 &
	SUP_PID=$!
}
# worker ROLE ID: the pid of outboxd's child running that worker.
worker() {
	ps -o pid=,args= --ppid "$SUP_PID" 2>/dev/null |
		awk -v b="outbox-$1" -v id="$2" '$2 ~ b "$" { for (i = 3; i < NF; i++) if ($i == "--id" && $(i+1) == id) print $1 }'
}
workers_running() { [ "$(ps -o pid= --ppid "$SUP_PID" 2>/dev/null | wc -l)" -eq 6 ]; }
no_workers() { ! pgrep -f -- "outbox-(relay|consumer) --id [0-9]+ .*-c $conf" >/dev/null; }
new_pid() { local p; p=$(worker "$1" "$2"); [ -n "$p" ] && [ "$p" != "$3" ]; }

start_outboxd
wait_for 20 workers_running
ok $? "outboxd started 3 relays and 3 consumers"

t0=$(date +%s%3N)
"$BIN/orders" -c "$conf" --mode outbox --orders 4000 --events-per-order 5 --concurrency 8 --quiet \
	>"$tmp/orders1.log" 2>&1
ok $? "the order service wrote 4,000 orders x 5 events"
"$BIN/outboxctl" -c "$conf" verify --json --wait 90 >"$tmp/verify1.json"
ok $? "outboxctl verify exits 0"
diag "20,000 events placed and applied in $(( $(date +%s%3N) - t0 )) ms: $(cat "$tmp/verify1.json")"

# The same facts, with our own SQL.
is "$(q "SELECT count(*) FROM public.outbox")" "20000" "20,000 outbox rows"
is "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" "0" "every one marked sent"
is "$(q "SELECT count(*) || ' ' || count(DISTINCT event_id) FROM sink.side_effects")" "20000 20000" \
	"20,000 side effects, one per event id"
is "$(q "SELECT count(*) FROM public.outbox o WHERE NOT EXISTS
	(SELECT 1 FROM sink.side_effects s WHERE s.event_id = o.event_id)")" "0" "every event has its side effect"
is "$(q "SELECT count(*) FROM sink.order_projection WHERE last_seq = 5")" "4000" \
	"every order's high-water mark is 5"
is "$(q "SELECT count(*) FROM (SELECT aggregate_seq, row_number() OVER
	(PARTITION BY aggregate_id ORDER BY id) AS n FROM sink.side_effects) s WHERE aggregate_seq <> n")" "0" \
	"per order, the side effects were applied as seq 1, 2, 3, 4, 5"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'gap' AND healed_at IS NULL")" "0" \
	"no gap open in the ordering audit"
is "$(q "SELECT count(*) FROM public.outboxd_relays WHERE marked > 0")" "3" "all 3 relays marked events sent"
is "$(q "SELECT count(DISTINCT consumer_id) FROM sink.side_effects")" "3" "all 3 consumers applied events"

# SIGKILL one relay and one consumer while more orders are written.
"$BIN/orders" -c "$conf" --mode outbox --orders 1000 --events-per-order 5 --rate 2500 --seed 2 --quiet \
	>"$tmp/orders2.log" 2>&1 &
orders_pid=$!
sleep 0.5
r=$(worker relay 1) c=$(worker consumer 2)
kill -KILL "$r" "$c"
wait_for 10 new_pid relay 1 "$r"
ok $? "relay 1 was respawned after SIGKILL (pid $r -> $(worker relay 1))"
wait_for 10 new_pid consumer 2 "$c"
ok $? "consumer 2 was respawned after SIGKILL (pid $c -> $(worker consumer 2))"
wait "$orders_pid"
ok $? "the second batch of orders was written"
"$BIN/outboxctl" -c "$conf" verify --json --wait 90 >"$tmp/verify2.json"
ok $? "verify passes after the kills: $(cat "$tmp/verify2.json")"
grep -q "relay\[1\] (pid $r) killed by signal SIGKILL" "$tmp/outboxd.log"
ok $? "the supervisor logged the relay's death"

# SIGTERM in the middle of the flow: while orders are being written.
"$BIN/orders" -c "$conf" --mode outbox --orders 2000 --events-per-order 5 --seed 3 --quiet \
	>"$tmp/orders3.log" 2>&1 &
orders_pid=$!
outbox_at_least() { [ "$(q "SELECT count(*) FROM public.outbox")" -ge "$1" ]; }
wait_for 20 outbox_at_least 27000
diag "committed / applied when SIGTERM is sent: $(q "SELECT (SELECT count(*) FROM public.outbox) || ' / ' ||
	(SELECT count(*) FROM sink.side_effects)")"
t0=$SECONDS
kill -TERM "$SUP_PID"
wait "$SUP_PID"
is "$?" "0" "outboxd exits 0 after SIGTERM"
cmp_ok $((SECONDS - t0)) -le 21 "within the shutdown timeout ($((SECONDS - t0)) s)"
ok "$(no_workers; echo $?)" "no worker is left running"
wait "$orders_pid"
ok $? "the third batch of orders was written"
start_outboxd
"$BIN/outboxctl" -c "$conf" verify --json --wait 90 >"$tmp/verify3.json"
ok $? "after a restart of outboxd, verify passes: nothing was lost ($(cat "$tmp/verify3.json"))"
is "$(q "SELECT count(*) FROM sink.side_effects")" "35000" "35,000 events applied, once each"

# SIGKILL of outboxd itself: its workers are told (PR_SET_PDEATHSIG) and stop.
wait_for 20 workers_running
{ kill -KILL "$SUP_PID"; wait "$SUP_PID"; } 2>/dev/null
SUP_PID=
wait_for 20 no_workers
ok $? "after SIGKILL of outboxd its workers stop on their own"
done_testing
