#!/usr/bin/env bash
# The supervisor's HTTP endpoint reads no more than it needs: a 300 MB POST
# is refused without being buffered (RSS stays flat), only GET and HEAD are
# answered, oversized headers are refused, an idle connection is closed, and
# 10,000 ordinary requests leave RSS flat. Fake workers; needs no services.
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d /tmp/outboxd-144.XXXXXX)
SUP_PID=
cleanup() {
	[ -n "$SUP_PID" ] && { kill -KILL "$SUP_PID"; wait "$SUP_PID"; } 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
mkdir "$tmp/bin"
printf '#!/bin/sh\nexec sleep 3600\n' >"$tmp/bin/outbox-relay"
cp "$tmp/bin/outbox-relay" "$tmp/bin/outbox-consumer"
chmod +x "$tmp/bin/"*
printf '[supervisor]\nbin_dir = %s\nhttp_listen = 127.0.0.1:0\nshutdown_timeout_ms = 500\n' \
	"$tmp/bin" >"$tmp/s.conf"
"$BIN/outboxd" -c "$tmp/s.conf" --relays 1 --consumers 1 2>"$tmp/sup.log" &
SUP_PID=$!
port() { sup_http_port "$tmp/sup.log"; }
have_port() { [ -n "$(port)" ]; }
wait_for 10 have_port
ok $? "outboxd serves HTTP on a port of its own"
url="http://127.0.0.1:$(port)"
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$SUP_PID/status"; }   # kB

is "$(curl -s -o /dev/null -w '%{http_code}' "$url/healthz")" "200" "GET /healthz: 200"
is "$(curl -s -o /dev/null -w '%{http_code}' -I "$url/healthz")" "200" "HEAD /healthz: 200"
is "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d x=1 "$url/healthz")" "405" "a small POST: 405"
is "$(curl -s -D - -o /dev/null -X DELETE "$url/status" | tr -d '\r' | sed -n 's/^Allow: //p')" \
	"GET, HEAD" "a DELETE: the answer names the allowed methods"

before=$(rss)
truncate -s 300M "$tmp/big"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/octet-stream' \
	-T "$tmp/big" "$url/status")
is "$code" "413" "a 300 MB POST is refused as too large"
# Chunked, the size is only known as it arrives: the server answers 413 and
# closes, which curl may only see as a broken upload (000).
code=$(head -c 50000000 /dev/zero | curl -s -o /dev/null -w '%{http_code}' -X POST \
	-H 'Transfer-Encoding: chunked' -H 'Expect:' -T - "$url/status")
case "$code" in 413|000) r=0 ;; *) r=1 ;; esac
ok $r "a 50 MB chunked POST is refused as too large ($code)"
after=$(rss)
cmp_ok "$after" -lt "$((before + 4096))" "RSS stayed flat: $before kB before, $after kB after"

code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Big: $(head -c 40000 /dev/zero | tr '\0' a)" \
	"$url/healthz")
case "$code" in 4*) r=0 ;; *) r=1 ;; esac
ok $r "a 40 kB header is refused ($code)"

# An idle connection is closed by the server within its 10 s timeout.
t0=$SECONDS
exec 5<>"/dev/tcp/127.0.0.1/$(port)"
timeout 30 cat <&5 >/dev/null
exec 5<&-
cmp_ok "$((SECONDS - t0))" -le 20 "an idle connection is closed by the server ($((SECONDS - t0)) s)"

before=$(rss)
curl -s -w "%{http_code}\n" -o /dev/null "$url/healthz?[1-5000]" -o /dev/null "$url/metrics?[1-5000]" \
	>"$tmp/codes" 2>/dev/null
is "$(sort "$tmp/codes" | uniq -c | awk '{print $2 ":" $1}')" "200:10000" "10,000 requests, all 200"
after=$(rss)
cmp_ok "$after" -lt "$((before + 2048))" "RSS stayed flat: $before kB before, $after kB after"
kill -0 "$SUP_PID"
ok $? "outboxd is still running"
done_testing
