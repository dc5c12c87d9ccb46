#!/usr/bin/env bash
# Every command of the contract: --help exits 0, a bad flag exits 2, a bad
# config exits 2 with FILE:LINE. Needs no services.
. "$(dirname "$0")/../lib.sh"

bad=$(mktemp /tmp/outboxd-bad.XXXXXX.conf)
printf '[relay]\nmode = poll\npoll_interval_ms = soon\n' >"$bad"

for cmd in outboxd outbox-relay outbox-consumer orders outboxctl; do
	out=$("$BIN/$cmd" --help 2>&1); rc=$?
	is "$rc" "0" "$cmd --help exits 0"
	case "$out" in *usage*) r=0 ;; *) r=1 ;; esac
	ok $r "$cmd --help prints usage"
	"$BIN/$cmd" --no-such-flag >/dev/null 2>&1
	is "$?" "2" "$cmd with a bad flag exits 2"
done

check_bad_conf() {   # NAME ARGS...
	local name=$1; shift
	local err rc
	err=$("$@" 2>&1 >/dev/null); rc=$?
	is "$rc" "2" "$name with a malformed config exits 2"
	case "$err" in *"$bad:3: [relay] poll_interval_ms: \"soon\" is not an integer"*) r=0 ;; *) r=1 ;; esac
	ok $r "$name names FILE:LINE and the problem"
	[ $r -eq 0 ] || diag "stderr was: $err"
}
check_bad_conf outboxd "$BIN/outboxd" -c "$bad" --check-config
check_bad_conf outbox-relay "$BIN/outbox-relay" -c "$bad"
check_bad_conf outbox-consumer "$BIN/outbox-consumer" -c "$bad"
check_bad_conf orders "$BIN/orders" -c "$bad" --mode outbox --orders 1
check_bad_conf outboxctl "$BIN/outboxctl" -c "$bad" status
OUTBOX_CONF="$bad" "$BIN/outboxctl" status >/dev/null 2>&1
is "$?" "2" "\$OUTBOX_CONF is read when -c is absent"

"$BIN/orders" --mode sideways --orders 1 >/dev/null 2>&1
is "$?" "2" "orders --mode must be outbox or naive"
"$BIN/orders" --mode outbox >/dev/null 2>&1
is "$?" "2" "orders without --orders exits 2"
"$BIN/orders" --mode outbox --orders -5 >/dev/null 2>&1
is "$?" "2" "orders --orders -5 exits 2"
"$BIN/outboxctl" frobnicate >/dev/null 2>&1
is "$?" "2" "outboxctl with an unknown subcommand exits 2"
"$BIN/outboxctl" -c /nonexistent.conf status >/dev/null 2>&1
is "$?" "2" "a missing explicit config file exits 2"
OUTBOX_CRASH=bogus "$BIN/orders" --mode outbox --orders 1 >/dev/null 2>&1
is "$?" "2" "a malformed OUTBOX_CRASH exits 2"
err=$(OUTBOX_CRASH=relay.aftr_mark:0.5 "$BIN/outbox-relay" --id 0 2>&1 >/dev/null); rc=$?
is "$rc" "2" "an unknown OUTBOX_CRASH point exits 2"
case "$err" in *'unknown crash point "relay.aftr_mark"'*relay.after_mark*) r=0 ;; *) r=1 ;; esac
ok $r "and the error names it and the points there are"
[ $r = 0 ] || diag "$err"
err=$(OUTBOX_PAUSE=consumer.nowhere:100 "$BIN/outbox-consumer" --id 0 2>&1 >/dev/null); rc=$?
is "$rc" "2" "an unknown OUTBOX_PAUSE point exits 2"
rm -f "$bad"
done_testing
