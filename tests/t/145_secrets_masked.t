#!/usr/bin/env bash
# Passwords never leave a process: with passwords holding spaces, quotes,
# backslashes and @, in key/value strings and URIs (userinfo and
# ?password=), neither the log of any process (relay poll and CDC,
# consumer, order service, supervisor), nor /status or /metrics, nor
# outboxctl's output shows them, on a good connection or a refused one.
# The local cluster trusts loopback, so the passwords are never checked.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-145.XXXXXX")
SUP_PID=
cleanup() {
	[ -n "$SUP_PID" ] && { kill -KILL "$SUP_PID"; wait "$SUP_PID"; } 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
SECRET=Sup3rS3cret
good=$OUTBOX_PG
port=$PGPORT
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[relay]
poll_interval_ms = 200
slot_name = t145_$$
[consumer]
group_id = $OUTBOX_GROUP
[supervisor]
http_listen = 127.0.0.1:0
shutdown_timeout_ms = 2000
EOF
)

# run_for SECONDS OUT CMD...: run CMD (its output to OUT) and stop it after SECONDS.
run_for() {
	local s=$1 out=$2 pid; shift 2
	"$@" >>"$out" 2>&1 &
	pid=$!
	sleep "$s"
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}

# exercise NAME CONNINFO: every process and command on CONNINFO, all output to NAME.out
exercise() {
	local out="$tmp/$1.out" c=$2 bad
	bad=${c/port=$port/port=1}
	bad=${bad/127.0.0.1:$port/127.0.0.1:1}
	: >"$out"
	OUTBOX_PG=$c "$BIN/orders" -c "$conf" --mode outbox --orders 2 --events-per-order 2 >>"$out" 2>&1
	OUTBOX_PG=$c "$BIN/outboxctl" -c "$conf" status >>"$out" 2>&1
	OUTBOX_PG=$c "$BIN/outboxctl" -c "$conf" status --json >>"$out" 2>&1
	OUTBOX_PG=$c "$BIN/outboxctl" -c "$conf" verify --wait 0 >>"$out" 2>&1
	OUTBOX_PG=$c run_for 1 "$out" "$BIN/outbox-relay" -c "$conf" --id 0 --mode poll
	OUTBOX_PG=$c run_for 1 "$out" "$BIN/outbox-relay" -c "$conf" --id 0 --mode cdc
	OUTBOX_PG=$c run_for 1 "$out" "$BIN/outbox-consumer" -c "$conf" --id 0
	# A refused connection: every process retries and says so.
	OUTBOX_PG=$bad run_for 1 "$out" "$BIN/outbox-relay" -c "$conf" --id 0 --mode poll
	OUTBOX_PG=$bad run_for 1 "$out" "$BIN/outbox-consumer" -c "$conf" --id 0
	OUTBOX_PG=$bad "$BIN/outboxctl" -c "$conf" status >>"$out" 2>&1
	OUTBOX_PG=$bad run_for 1 "$out" "$BIN/orders" -c "$conf" --mode outbox --orders 1
	# The supervisor, its workers and its HTTP endpoint.
	OUTBOX_PG=$c "$BIN/outboxd" -c "$conf" --relays 1 --consumers 1 >"$tmp/sup.log" 2>&1 &
	SUP_PID=$!
	have_port() { [ -n "$(sup_http_port "$tmp/sup.log")" ]; }
	wait_for 10 have_port
	sleep 2
	local hp; hp=$(sup_http_port "$tmp/sup.log")
	for path in /status /metrics /healthz /readyz; do
		curl -s "http://127.0.0.1:$hp$path" >>"$out"
	done
	kill -TERM "$SUP_PID"; wait "$SUP_PID" 2>/dev/null; SUP_PID=
	cat "$tmp/sup.log" >>"$out"
	q "SELECT pg_drop_replication_slot('t145_$$') FROM pg_replication_slots
	   WHERE slot_name = 't145_$$' AND NOT active" >/dev/null 2>&1
}

check() { # NAME DESCRIPTION
	local out="$tmp/$1.out"
	! grep -q "$SECRET" "$out"
	ok $? "$2: the password appears nowhere ($(wc -l <"$out") lines of output)"
	grep -q "$SECRET" "$out" && grep -n "$SECRET" "$out" | head -5 | sed 's/^/# /'
	grep -q "cannot connect to .*password=\*\*\*\*" "$out"
	ok $? "$2: the refused connections were logged, password masked"
}

exercise kv-space "$good password='x $SECRET'"
check kv-space "key/value, a quoted password with a space"
exercise kv-quote "$good password='q\\'$SECRET\\\\b@c'"
check kv-quote "key/value, a quote, a backslash and an @"
exercise uri-userinfo "postgresql://outboxd:x%20$SECRET%40%27@127.0.0.1:$port/outboxd"
check uri-userinfo "URI, userinfo with %-escapes"
exercise uri-query "postgresql://127.0.0.1:$port/outboxd?user=outboxd&password=$SECRET%20q%5C"
check uri-query "URI, ?password="
grep -q "events committed\|committed" "$tmp/kv-space.out"
is "$(q "SELECT count(*) FROM public.outbox")" "16" "the good connections worked: 4 x 4 events written"
done_testing
