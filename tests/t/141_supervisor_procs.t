#!/usr/bin/env bash
# outboxd's process control with fake workers (small bash scripts in a
# temporary bin_dir): start with the right --id, respawn after SIGKILL with
# capped backoff, never respawn an exit 2, graceful SIGTERM, SIGKILL after the
# shutdown timeout, second SIGTERM, SIGHUP reload (broken and good), pid file,
# HTTP endpoints. Needs no services.
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d /tmp/outboxd-141.XXXXXX)
SUP_PID=
cleanup() {
	[ -n "$SUP_PID" ] && kill -KILL "$SUP_PID" 2>/dev/null
	# Every fake worker ever started wrote its pid into a log.
	cat "$tmp"/*.events 2>/dev/null | awk '$1 == "start" {print $4}' |
		while read -r p; do kill -KILL "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT

# The fake worker. Behaviour per role and id from $tmp/behave.<role>.<id>:
#   run (default) loop until SIGTERM, then exit 0; log SIGHUP
#   exit2         exit 2 at once (configuration error)
#   exit1         exit 1 after 0.2 s
#   ignore_term   ignore SIGTERM forever
# Events go to $FAKE_EVENTS: "start ROLE ID PID ARGS", "term ROLE ID PID", "hup ROLE ID PID".
mkdir "$tmp/bin"
cat >"$tmp/bin/fake-worker" <<'EOF'
#!/usr/bin/env bash
role=$(basename "$0"); role=${role#outbox-}
id=-1; args="$*"
while [ $# -gt 0 ]; do [ "$1" = --id ] && id=$2; shift; done
echo "start $role $id $$ $args" >>"$FAKE_EVENTS"
b=run; [ -f "$FAKE_DIR/behave.$role.$id" ] && b=$(cat "$FAKE_DIR/behave.$role.$id")
trap 'echo "hup $role $id $$" >>"$FAKE_EVENTS"' HUP
case $b in
exit2) exit 2 ;;
exit1) sleep 0.2; exit 1 ;;
ignore_term) trap '' TERM; trap 'echo "hup $role $id $$" >>"$FAKE_EVENTS"' HUP ;;
*) trap 'echo "term $role $id $$" >>"$FAKE_EVENTS"; exit 0' TERM ;;
esac
while :; do sleep 0.05; done
EOF
chmod +x "$tmp/bin/fake-worker"
ln -s fake-worker "$tmp/bin/outbox-relay"
ln -s fake-worker "$tmp/bin/outbox-consumer"
export FAKE_DIR="$tmp"

# write_conf FILE [extra lines...]
write_conf() {
	local f=$1; shift
	{
		echo "[supervisor]"
		echo "bin_dir = $tmp/bin"
		echo "http_listen = 127.0.0.1:0"
		echo "ready_probe = off"   # fake workers, no services: /readyz is the workers'
		echo "shutdown_timeout_ms = ${TIMEOUT_MS:-1000}"
		echo "backoff_max_ms = 400"
		echo "stable_ms = 5000"
		for l in "$@"; do echo "$l"; done
	} >"$f"
}

# start_sup NAME ARGS...: outboxd in the background, its stderr in $tmp/NAME.log,
# its workers' events in $tmp/NAME.events.
start_sup() {
	local name=$1; shift
	export FAKE_EVENTS="$tmp/$name.events"
	LOG="$tmp/$name.log"; EV="$FAKE_EVENTS"
	: >"$EV"
	"$BIN/outboxd" "$@" 2>"$LOG" &
	SUP_PID=$!
}
# wait_exit SECONDS: wait for outboxd to end; sets RC (or 255 on timeout).
wait_exit() {
	if wait_for "$1" eval '! kill -0 $SUP_PID 2>/dev/null'; then
		wait "$SUP_PID"; RC=$?
	else
		RC=255
	fi
	SUP_PID=
}
nstart() { awk -v r="$1" -v i="$2" '$1 == "start" && $2 == r && $3 == i' "$EV" | wc -l; }
nlines() { grep -c -- "$1" "$2" 2>/dev/null || true; }
pid_of() { awk -v r="$1" -v i="$2" '$1 == "start" && $2 == r && $3 == i {p = $4} END {print p}' "$EV"; }
http_port() { sup_http_port "$LOG"; }
count_ge() { [ "$(nlines "$1" "$EV")" -ge "$2" ]; }
nstart_ge() { [ "$(nstart "$1" "$2")" -ge "$3" ]; }
have_port() { [ -n "$(http_port)" ]; }
get() { curl -s -o "$tmp/body" -w '%{http_code}' "http://127.0.0.1:$PORT$1"; }

# --- 2 relays + 3 consumers: ids, arguments, pid file, HTTP --------------------
conf="$tmp/a.conf"
write_conf "$conf" "pid_file = $tmp/outboxd.pid"
start_sup a -c "$conf" --relays 2 --consumers 3 --relay-mode poll
wait_for 5 count_ge "^start" 5
is "$(awk '$1 == "start" {print $2, $3}' "$EV" | sort | tr '\n' ,)" \
	"consumer 0,consumer 1,consumer 2,relay 0,relay 1," "2 relays and 3 consumers started with ids 0..N-1"
is "$(awk '$1 == "start" && $2 == "relay" && $3 == 1 {$1=$2=$3=$4=""; print}' "$EV" | sed 's/^ *//')" \
	"--id 1 --mode poll -c $conf" "a relay gets --id I --mode poll -c FILE"
is "$(awk '$1 == "start" && $2 == "consumer" && $3 == 2 {$1=$2=$3=$4=""; print}' "$EV" | sed 's/^ *//')" \
	"--id 2 -c $conf" "a consumer gets --id I -c FILE"
is "$(cat "$tmp/outboxd.pid" 2>/dev/null)" "$SUP_PID" "the pid file holds outboxd's pid"

wait_for 5 have_port
PORT=$(http_port)
ok $([ -n "$PORT" ] && [ "$PORT" -gt 0 ]; echo $?) "HTTP listens on a free loopback port ($PORT)"
is "$(get /healthz) $(cat "$tmp/body")" "200 ok" "/healthz answers 200 ok"
wait_for 3 eval '[ "$(get /readyz)" = 200 ]'
is "$(get /readyz)" 200 "/readyz is 200 when every worker runs"
is "$(get /metrics)" 200 "/metrics answers 200"
ok $(grep -qx 'outboxd_worker_up{role="relay",index="1"} 1' "$tmp/body"; echo $?) \
	"/metrics: outboxd_worker_up of relay 1 is 1"
ok $(grep -qx 'outboxd_worker_restarts_total{role="consumer",index="2"} 0' "$tmp/body"; echo $?) \
	"/metrics: outboxd_worker_restarts_total of consumer 2 is 0"
is "$(grep -c '^outboxd_worker_up{' "$tmp/body")" 5 "/metrics has one up line per worker"
is "$(get /status)" 200 "/status answers 200"
is "$(jq -r '[.workers[] | select(.state == "running")] | length' "$tmp/body")" 5 \
	"/status: 5 workers running"
is "$(jq -r '.workers[1] | "\(.role) \(.index) \(.pid)"' "$tmp/body")" "relay 1 $(pid_of relay 1)" \
	"/status: relay 1 with its pid"
is "$(get /nope)" 404 "an unknown path is 404"

# SIGKILL relay 1: a new pid within the first backoff step.
old=$(pid_of relay 1)
kill -KILL "$old"
wait_for 3 nstart_ge relay 1 2
is "$(nstart relay 1)" 2 "a SIGKILLed relay is respawned once"
new=$(pid_of relay 1)
ok $([ -n "$new" ] && [ "$new" != "$old" ]; echo $?) "the respawned relay has a new pid ($old -> $new)"
ok $(grep -q "relay\[1\] (pid $old) killed by signal SIGKILL; respawning in 100 ms" "$LOG"; echo $?) \
	"the exit is logged with the signal name and the backoff"
get /metrics >/dev/null
ok $(grep -qx 'outboxd_worker_restarts_total{role="relay",index="1"} 1' "$tmp/body"; echo $?) \
	"/metrics: relay 1 restarted once"
kill -KILL "$(pid_of consumer 0)"
wait_for 3 nstart_ge consumer 0 2
is "$(nstart consumer 0)" 2 "a SIGKILLed consumer is respawned too"

# SIGSTOP consumer 1: a stopped worker is killed at once and respawned (a
# stopped relay's queued messages would reach Kafka late, out of order).
old=$(pid_of consumer 1)
kill -STOP "$old"
wait_for 3 nstart_ge consumer 1 2
is "$(nstart consumer 1)" 2 "a stopped worker is respawned"
ok $(! kill -0 "$old" 2>/dev/null; echo $?) "... and the stopped one is gone (pid $old)"
ok $(grep -q "consumer\[1\] (pid $old) stopped by signal SIGSTOP: killing it" "$LOG" &&
	grep -q "consumer\[1\] (pid $old) killed by signal SIGKILL; respawning" "$LOG"; echo $?) \
	"the stop and the kill are logged"

# SIGHUP with a broken config: keeps running, keeps the old one, passes SIGHUP on.
cp "$conf" "$tmp/a.conf.good"
echo "backoff_max_ms = lots" >>"$conf"
kill -HUP "$SUP_PID"
wait_for 3 count_ge "^hup" 5
ok $(grep -q "reload failed, keeping the old configuration: $conf:9: \[supervisor\] backoff_max_ms" "$LOG"; echo $?) \
	"SIGHUP with a broken config logs FILE:LINE and keeps the old configuration"
ok $(kill -0 "$SUP_PID" 2>/dev/null; echo $?) "outboxd is still running after a broken reload"
is "$(nlines '^hup' "$EV")" 5 "SIGHUP is passed on to all 5 workers"
cp "$tmp/a.conf.good" "$conf"
kill -HUP "$SUP_PID"
wait_for 3 grep -q "configuration reloaded from $conf" "$LOG"
ok $? "SIGHUP with a good config reloads it"

# SIGTERM: every worker gets TERM, outboxd exits 0 well within the timeout.
t0=$SECONDS
kill -TERM "$SUP_PID"
wait_exit 5
is "$RC" 0 "SIGTERM: outboxd exits 0 when every worker stopped cleanly"
cmp_ok $((SECONDS - t0)) -le 2 "... within the shutdown timeout"
is "$(awk '$1 == "term" {print $2, $3}' "$EV" | sort | tr '\n' ,)" \
	"consumer 0,consumer 1,consumer 2,relay 0,relay 1," "every worker got SIGTERM"
ok $([ ! -e "$tmp/outboxd.pid" ]; echo $?) "the pid file is removed at exit"
ok $(grep -q "all workers stopped; exiting 0" "$LOG"; echo $?) "the clean stop is logged"

# --- exit 2 is never respawned; exit 1 is, with capped exponential backoff ----
echo exit2 >"$tmp/behave.relay.0"
echo exit1 >"$tmp/behave.consumer.0"
write_conf "$tmp/b.conf"
start_sup b -c "$tmp/b.conf" --relays 2 --consumers 1
sleep 2.5
is "$(nstart relay 0)" 1 "a worker that exits 2 is not respawned"
ok $(grep -q "relay\[0\] (pid [0-9]*) exited with status 2: configuration or usage error, NOT respawning" "$LOG"; echo $?) \
	"the exit 2 is logged loudly"
cmp_ok "$(nstart relay 1)" -eq 1 "the other relay keeps running"
cmp_ok "$(nstart consumer 0)" -ge 4 "a worker that exits 1 is respawned again and again"
ok $(grep -q "consumer\[0\] .*exited with status 1; respawning in 200 ms" "$LOG" &&
	grep -q "consumer\[0\] .*exited with status 1; respawning in 400 ms" "$LOG"; echo $?) \
	"the backoff doubles (100, 200, 400 ms)"
ok $(! grep -q "respawning in 800 ms" "$LOG"; echo $?) "the backoff is capped at backoff_max_ms"
PORT=$(http_port)
is "$(get /readyz)" 503 "/readyz is 503 while a worker slot is down"
kill -TERM "$SUP_PID"
wait_exit 5
ok $([ "$RC" = 0 ] || [ "$RC" = 1 ]; echo $?) "SIGTERM ends it (rc $RC)"
rm -f "$tmp"/behave.*

# --- every worker exits 2: outboxd exits 2 ------------------------------------
echo exit2 >"$tmp/behave.relay.0"
echo exit2 >"$tmp/behave.consumer.0"
start_sup c -c "$tmp/b.conf"
wait_exit 5
is "$RC" 2 "when every worker failed with exit 2, outboxd exits 2"
ok $(grep -q "every worker failed with a configuration error" "$LOG"; echo $?) "and says why"
rm -f "$tmp"/behave.*

# --- a worker that ignores SIGTERM is SIGKILLed after shutdown_timeout_ms -----
echo ignore_term >"$tmp/behave.relay.0"
start_sup d -c "$tmp/b.conf"
wait_for 5 count_ge "^start" 2
sleep 0.3
stubborn=$(pid_of relay 0)
ok $([ -n "$stubborn" ] && kill -0 "$stubborn"; echo $?) "the stubborn relay runs (pid $stubborn)"
t0=$(date +%s%N)
kill -TERM "$SUP_PID"
wait_exit 6
ms=$((($(date +%s%N) - t0) / 1000000))
is "$RC" 1 "a worker had to be killed: outboxd exits 1"
cmp_ok "$ms" -ge 900 "it waited for the shutdown timeout (${ms} ms)"
cmp_ok "$ms" -le 3000 "and not much longer"
ok $(grep -q "relay\[0\] (pid $stubborn): SIGKILL" "$LOG" &&
	grep -q "relay\[0\] (pid $stubborn) killed by signal SIGKILL" "$LOG"; echo $?) \
	"the stubborn worker was SIGKILLed and reaped"
ok $(! kill -0 "$stubborn" 2>/dev/null; echo $?) "the stubborn worker is gone"
is "$(awk '$1 == "term" && $2 == "consumer"' "$EV" | wc -l)" 1 "the well-behaved consumer still stopped on TERM"

# --- a second SIGTERM kills at once ------------------------------------------
TIMEOUT_MS=20000 write_conf "$tmp/e.conf"
start_sup e -c "$tmp/e.conf"
wait_for 5 count_ge "^start" 2
sleep 0.3
stubborn=$(pid_of relay 0)
ok $([ -n "$stubborn" ] && kill -0 "$stubborn"; echo $?) "the stubborn relay runs (pid $stubborn)"
t0=$(date +%s%N)
kill -TERM "$SUP_PID"; sleep 0.2; kill -INT "$SUP_PID"
wait_exit 5
ms=$((($(date +%s%N) - t0) / 1000000))
is "$RC" 1 "a second stop signal: outboxd exits 1"
cmp_ok "$ms" -le 2000 "at once, not after the 20 s timeout (${ms} ms)"
ok $(! kill -0 "$stubborn" 2>/dev/null; echo $?) "the stubborn worker was killed"
rm -f "$tmp"/behave.*

# --- a busy HTTP port is a warning, not fatal ---------------------------------
start_sup f1 -c "$tmp/b.conf"
wait_for 5 have_port
busy=$(http_port); first=$SUP_PID; firstlog=$LOG
write_conf "$tmp/f.conf"
sed -i "s/^http_listen = .*/http_listen = 127.0.0.1:$busy/" "$tmp/f.conf"
start_sup f2 -c "$tmp/f.conf" --pid-file "$tmp/f2.pid"
wait_for 5 count_ge "^start" 2
ok $(grep -q "http endpoints disabled: cannot listen on 127.0.0.1:$busy" "$LOG"; echo $?) \
	"a busy port is logged as a warning"
ok $(kill -0 "$SUP_PID" 2>/dev/null; echo $?) "and outboxd keeps running"
is "$(cat "$tmp/f2.pid" 2>/dev/null)" "$SUP_PID" "--pid-file is written"
kill -TERM "$SUP_PID"; wait_exit 5
is "$RC" 0 "the second instance stops cleanly"
ok $([ ! -e "$tmp/f2.pid" ]; echo $?) "--pid-file is removed"
SUP_PID=$first; LOG=$firstlog
kill -TERM "$SUP_PID"; wait_exit 5
is "$RC" 0 "the first instance stops cleanly"

done_testing
