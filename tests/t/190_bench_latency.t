#!/usr/bin/env bash
# scripts/bench-latency: its command line, and a tiny run of its plumbing
# (not a benchmark: no figure is asserted, only that every committed event of
# the measured load is counted once, the warm-up is not, and every output is
# written). The real run is make bench-latency.
. "$(dirname "$0")/../lib.sh"

bench_setup 190 bench-latency

# --- command line ----------------------------------------------------------
bench_cli "$B" "--modes LIST" "$tmp/never"
bench_usage_error "unknown flag" --frobnicate
bench_usage_error "unknown mode" --modes "poll500 turbo"
bench_usage_error "rate 0" --rate 0
bench_usage_error "rate not a number" --rate fast
bench_usage_error "events not a multiple of the order size" --rate 7 --seconds 1 --events-per-order 5
bench_usage_error "kafka property without a value" --kafka linger.ms
bench_usage_error "slot name with a quote" --slot "x'y"
ok $([ ! -e "$tmp/never" ]; echo $?) "a usage error runs nothing (no output folder)"

# --- a tiny run: two modes, 1 s of warm-up, 200 events measured each ---------
services_up
bash "$B" --modes "poll500 notify" --rate 200 --seconds 1 --warmup 1 \
	--out "$tmp/out" --plot "$tmp/out/plot.png" --label "test" >"$tmp/stdout" 2>"$tmp/stderr"
rc=$?
is "$rc" 0 "a run of poll500 and notify exits 0"
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$tmp/stderr"
tsv="$tmp/out/latency.tsv"
for m in poll500 notify; do
	row=$(awk -F'\t' -v m="$m" '$1 == m' "$tsv" 2>/dev/null)
	# events committed applied applied_twice ok
	is "$(echo "$row" | awk -F'\t' '{print $2, $7, $8, $9, $13}')" "200 200 200 0 yes" \
		"$m: the 200 measured events counted, all applied once (the 200 of the warm-up not counted)"
	p50=$(echo "$row" | cut -f3) p99=$(echo "$row" | cut -f5) max=$(echo "$row" | cut -f6)
	ok $(awk -v a="$p50" -v b="$p99" -v c="$max" 'BEGIN { exit !(a > 0 && a <= b && b <= c) }'; echo $?) \
		"$m: 0 < p50 <= p99 <= max ($p50, $p99, $max)"
	is "$(wc -l <"$tmp/out/$m.cdf")" 200 "$m: one CDF line per measured event"
	is "$(tail -n 1 "$tmp/out/$m.cdf" | awk '{print $2}')" "1.000000" "$m: the CDF ends at 1"
	is "$(awk '{s += $2} END {print s}' "$tmp/out/$m.hist")" 200 "$m: the histogram holds every event"
	is "$(wc -l <"$tmp/out/$m.sent.cdf")" 200 "$m: one commit-to-Kafka CDF line per measured event"
	sp50=$(echo "$row" | cut -f14) sp99=$(echo "$row" | cut -f16) smax=$(echo "$row" | cut -f17)
	ok $(awk -v a="$sp50" -v b="$sp99" -v c="$smax" 'BEGIN { exit !(a >= 0 && a <= b && b <= c) }'; echo $?) \
		"$m: commit to Kafka 0 <= p50 <= p99 <= max ($sp50, $sp99, $smax)"
	grep -q "^| $m | 200 | " "$tmp/out/latency.md"; ok $? "$m: its row in latency.md"
	topic=$(sed -n 's/^topic = //p' "$tmp/out/$m.conf")
	case "$topic" in bench.latency.$m.*) r=0 ;; *) r=1 ;; esac
	ok $r "$m: a topic of its own ($topic)"
	is "$(sed -n 's/^group_id = //p' "$tmp/out/$m.conf")" "$topic" "$m: a consumer group of its own"
	is "$(sed -n 's/^notify = //p' "$tmp/out/$m.conf")" "$([ $m = notify ] && echo on || echo off)" \
		"$m: notify set for its mode"
done
grep -q "^| mode | events | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) |$" "$tmp/out/latency.md"
ok $? "latency.md has the table header"
grep -q "warm-up of 200 events" "$tmp/out/latency.md"; ok $? "latency.md says a warm-up was not counted"
grep -q "poll500 p50 / cdc p50 = -" "$tmp/out/latency.md"; ok $? "no ratio without a cdc run"
is "$(head -c 8 "$tmp/out/plot.png" | od -An -c | tr -d ' ')" '211PNG\r\n032\n' "the plot is a PNG"
is "$(grep -c '^notify ' "$tmp/stdout")" 1 "the table is printed"
is "$(q "SELECT count(*) FROM public.outbox")" 400 "the last mode's tables hold its warm-up and its load"

done_testing
