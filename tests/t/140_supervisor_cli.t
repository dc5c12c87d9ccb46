#!/usr/bin/env bash
# outboxd's command line: --help, bad flags, worker counts, --relay-mode,
# --check-config on a good and on malformed configurations. Needs no services.
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d /tmp/outboxd-140.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# A fake bin_dir, so the check does not depend on the real workers being built.
mkdir "$tmp/bin"
printf '#!/bin/sh\nexit 0\n' >"$tmp/bin/outbox-relay"
cp "$tmp/bin/outbox-relay" "$tmp/bin/outbox-consumer"
chmod +x "$tmp/bin/"*

good="$tmp/good.conf"
printf '[supervisor]\nbin_dir = %s\nhttp_listen = off\n' "$tmp/bin" >"$good"

out=$("$BIN/outboxd" --help 2>&1); rc=$?
is "$rc" 0 "--help exits 0"
case "$out" in *usage:*--relays*--consumers*) r=0 ;; *) r=1 ;; esac
ok $r "--help prints the usage with --relays and --consumers"

"$BIN/outboxd" --frobnicate >/dev/null 2>&1
is "$?" 2 "a bad flag exits 2"
"$BIN/outboxd" -c "$good" stray-argument >/dev/null 2>&1
is "$?" 2 "a stray argument exits 2"

for n in 0 65 -1 abc; do
	err=$("$BIN/outboxd" -c "$good" --relays "$n" --check-config 2>&1); rc=$?
	is "$rc" 2 "--relays $n exits 2"
	case "$err" in *"--relays must be a number from 1 to 64"*) r=0 ;; *) r=1 ;; esac
	ok $r "--relays $n: the error says the allowed range"
	[ $r -eq 0 ] || diag "stderr was: $err"
done
err=$("$BIN/outboxd" -c "$good" --relays 2 --consumers 65 --check-config 2>&1); rc=$?
is "$rc" 2 "--consumers 65 exits 2"
case "$err" in *"--consumers must be a number from 1 to 64"*) r=0 ;; *) r=1 ;; esac
ok $r "--consumers 65: the error says the allowed range"
"$BIN/outboxd" -c "$good" --relays 64 --consumers 1 --check-config >/dev/null 2>&1
is "$?" 0 "--relays 64 is accepted"

err=$("$BIN/outboxd" -c "$good" --relay-mode sideways --check-config 2>&1); rc=$?
is "$rc" 2 "--relay-mode sideways exits 2"
case "$err" in *"--relay-mode must be poll or cdc"*) r=0 ;; *) r=1 ;; esac
ok $r "--relay-mode: the error names the choices"

out=$("$BIN/outboxd" -c "$good" --check-config 2>&1); rc=$?
is "$rc" 0 "--check-config on a good file exits 0"
is "$out" "configuration ok: $good" "--check-config names the file it checked"

check_bad() {   # DESCRIPTION EXPECTED-SUBSTRING  (config in $tmp/bad.conf)
	local f="$tmp/bad.conf" err rc r
	err=$("$BIN/outboxd" -c "$f" --check-config 2>&1 >/dev/null); rc=$?
	is "$rc" 2 "$1: --check-config exits 2"
	case "$err" in *"$2"*) r=0 ;; *) r=1 ;; esac
	ok $r "$1: the error says \"$2\""
	[ $r -eq 0 ] || diag "stderr was: $err"
}
printf '[supervisor]\nbin_dir = %s\nshutdown_timeout_ms = soon\n' "$tmp/bin" >"$tmp/bad.conf"
check_bad "a non-integer value" "$tmp/bad.conf:3: [supervisor] shutdown_timeout_ms"
printf '[supervisor]\nbin_dir = %s\nno equals sign here\n' "$tmp/bin" >"$tmp/bad.conf"
check_bad "a syntax error" "$tmp/bad.conf:3:"
printf '[supervisor]\nfrobnicate = 1\n' >"$tmp/bad.conf"
check_bad "an unknown key" "$tmp/bad.conf:2:"
printf '[supervisor]\nbin_dir = %s\nhttp_listen = 127.0.0.1\n' "$tmp/bin" >"$tmp/bad.conf"
check_bad "http_listen without a port" "$tmp/bad.conf:3: [supervisor] http_listen \"127.0.0.1\""
printf '[supervisor]\nbin_dir = %s\nhttp_listen = 127.0.0.1:99999\n' "$tmp/bin" >"$tmp/bad.conf"
check_bad "http_listen with port 99999" "$tmp/bad.conf:3: [supervisor] http_listen"
printf '[supervisor]\nbin_dir = %s\n' "$tmp/nowhere" >"$tmp/bad.conf"
check_bad "a bin_dir without the workers" "$tmp/bad.conf:2: [supervisor] bin_dir: worker binary $tmp/nowhere/outbox-relay"

"$BIN/outboxd" -c "$tmp/missing.conf" --check-config >/dev/null 2>&1
is "$?" 2 "a missing explicit config file exits 2"
OUTBOX_CONF="$tmp/bad.conf" "$BIN/outboxd" --check-config >/dev/null 2>&1
is "$?" 2 "\$OUTBOX_CONF is read when -c is absent"

done_testing
