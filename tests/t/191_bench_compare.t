#!/usr/bin/env bash
# scripts/bench-compare: its command line, and a tiny run of its plumbing
# without Debezium (not a benchmark: no figure is asserted, only that every
# part ran, every event was counted once on every topic and in the sink, the
# table has every row, and the doc, the plot and the progress files were
# written). The real run is make bench-compare.
. "$(dirname "$0")/../lib.sh"

bench_setup 191 bench-compare

# --- command line ----------------------------------------------------------
bench_cli "$B" "--no-debezium" "$tmp/never"
bench_usage_error "unknown flag" --frobnicate
bench_usage_error "unknown part" --parts "drain turbo"
bench_usage_error "empty parts" --parts " "
bench_usage_error "events 0" --events 0
bench_usage_error "events not a number" --events many
bench_usage_error "payload too small" --payload 10
ok $([ ! -e "$tmp/never" ]; echo $?) "a usage error runs nothing (no output folder)"

# --- a tiny run of every part but the profile, without Debezium --------------
services_up
N=2000
echo "# existing text" >"$tmp/doc.md"
bash "$B" --no-debezium --parts "writer drain consumer pipeline latency ceiling" \
	--events $N --orders 200 --writer-orders 100 --pipeline-orders 200 \
	--latency-rate 200 --latency-seconds 1 --txn 500 \
	--out "$tmp/out" --plot "$tmp/out/plot.png" --doc "$tmp/doc.md" --label test \
	>"$tmp/stdout" 2>"$tmp/stderr"
rc=$?
is "$rc" 0 "a tiny run exits 0"
[ "$rc" -eq 0 ] || sed 's/^/#   /' "$tmp/stderr"
tsv="$tmp/out/compare.tsv"
rows() { awk -F'\t' -v p="$1" '$1 == p' "$tsv"; }
is "$(rows writer | wc -l)" 4 "writer: four rows (concurrency 4 and 16, synchronous_commit on and off)"
is "$(rows writer | cut -f4 | sort -u)" 500 "writer: each run counted its 500 events"
is "$(rows drain | wc -l)" 8 "drain: eight rows (six poll, CDC restart, CDC stream)"
# Each event at least once (a relay may send one twice: the CDC restart's
# catch-up poll and its stream both do, see docs/benchmarks.md; counted,
# not hidden).
is "$(rows drain | awk -F'\t' '{ split($11, m, " / ") } m[2] != 2000 || m[1] < m[2]' | wc -l)" 0 \
	"drain: every topic holds each of the $N events"
for s in "poll relay x1, batch 500" "poll relay x4, batch 2000" "CDC relay, restarted on the backlog" \
	"CDC relay, streaming (transactions of 500)"; do
	is "$(rows drain | awk -F'\t' -v s="$s" '$3 == s' | wc -l)" 1 "drain: a row for $s"
done
drains="poll-1x500 poll-1x2000 poll-2x500 poll-2x2000 poll-4x500 poll-4x2000 cdc-restart cdc-stream"
rows drain | cut -f11 | cut -d' ' -f1 >"$tmp/msgs"
for f in $drains; do
	is "$(tail -n 1 "$tmp/out/drain.$f.dat" 2>/dev/null | cut -d' ' -f2)" "$(sed -n 1p "$tmp/msgs")" \
		"drain $f: its progress file ends at the messages counted on its topic"
	sed -i 1d "$tmp/msgs"
done
is "$(rows consumer | wc -l)" 3 "consumer: three rows (1, 2, 4 consumers)"
is "$(rows consumer | awk -F'\t' '$11 != "2000 / 2000"' | wc -l)" 0 "consumer: every event applied once in each run"
is "$(rows pipeline | cut -f2,4 | tr '\t' ' ')" "bin/orders 1000
outboxd 1000
bin/orders 1000
outboxd 1000" "pipeline: the writer's and the applied row, 1000 events, twice"
is "$(rows pipeline | awk -F'\t' '$2 == "bin/orders" { print $3 }' | sed 's/.*synchronous_commit //')" "on
off" "pipeline: the writer with synchronous_commit on, then off"
is "$(rows pipeline | awk -F'\t' '$2 == "outboxd" { print $11 }')" "1000 / 1000
1000 / 1000" "pipeline: every event applied once in each run"
is "$(tail -n 1 "$tmp/out/pipeline.dat" | awk '{ print $2, $3 }')" "1000 1000" "pipeline: lag ends at 0"
is "$(tail -n 1 "$tmp/out/pipeline.off.dat" | awk '{ print $2, $3 }')" "1000 1000" "pipeline: and without synchronous commits"
is "$(rows latency | wc -l)" 4 "latency: four rows (notify and cdc, to Kafka and to applied)"
is "$(rows latency | cut -f4 | sort -u)" 200 "latency: each counts the 200 measured events"
rows latency | cut -f7 | while IFS=' /' read -r a b c d; do
	awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" 'BEGIN { exit !(a >= 0 && a <= b && b <= c && c <= d) }' || echo bad
done >"$tmp/bad"
is "$(wc -l <"$tmp/bad")" 0 "latency: p50 <= p95 <= p99 <= max in every row"
is "$(rows ceiling | cut -f2,4,11 | tr '\t' ' ')" "kcat $N $N / -" "ceiling: kcat's $N messages all on the topic"
is "$(grep -c . "$tsv")" 24 "24 rows in all, none from Debezium"
grep -q "Debezium left out" "$tmp/out/compare.md"; ok $? "the results say Debezium was left out"
is "$(head -n 1 "$tmp/doc.md")" "# existing text" "the doc keeps what it held"
grep -q "^### Run of .* (test)$" "$tmp/doc.md"; ok $? "the run is appended to the doc, with its label"
grep -q "^Command: \`scripts/bench-compare --no-debezium " "$tmp/doc.md"; ok $? "with its command"
is "$(grep -c '^| \(writer\|drain\|consumer\|pipeline\|latency\|ceiling\) |' "$tmp/doc.md")" 24 "the doc's table has every row"
is "$(grep -c '^| \(writer\|drain\|consumer\|pipeline\|latency\|ceiling\) |' "$tmp/stdout")" 24 "the table is printed"
is "$(head -c 8 "$tmp/out/plot.png" | od -An -c | tr -d ' ')" '211PNG\r\n032\n' "the plot is a PNG"
grep -q "pipeline.dat" "$tmp/out/compare.gp" && grep -q "cdc.sent.cdf" "$tmp/out/compare.gp" &&
	grep -q "drain.cdc-stream.dat" "$tmp/out/compare.gp"
ok $? "the plot has the drain, latency and pipeline panels"
is "$(q "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'outboxd_bench_cmp_%'")" 0 \
	"no replication slot is left behind"

done_testing
