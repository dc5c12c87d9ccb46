# tests/lib.sh: TAP helpers and local-service set-up for integration tests.
# Source it from a tests/t/1NN_*.t bash script.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
# OUTBOX_BIN: the directory of the binaries under test (default bin/; the
# sanitizer run sets bin-debug/), absolute or relative to the checkout.
BIN="${OUTBOX_BIN:-bin}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
T_NUM=0
T_FAILED=0

ok() {    # ok COND_EXIT_STATUS DESCRIPTION  (use: ok $? "desc" or cmd; ok $? ...)
	T_NUM=$((T_NUM + 1))
	if [ "$1" -eq 0 ]; then echo "ok $T_NUM - $2"
	else echo "not ok $T_NUM - $2"; T_FAILED=$((T_FAILED + 1))
		echo "#   Failed test at ${BASH_SOURCE[1]}:${BASH_LINENO[0]}"; fi
}
is() {    # is GOT EXPECTED DESCRIPTION
	T_NUM=$((T_NUM + 1))
	if [ "$1" = "$2" ]; then echo "ok $T_NUM - $3"
	else echo "not ok $T_NUM - $3"; T_FAILED=$((T_FAILED + 1))
		echo "#   Failed test at ${BASH_SOURCE[1]}:${BASH_LINENO[0]}"
		echo "#          got: '$1'"; echo "#     expected: '$2'"; fi
}
cmp_ok() { # cmp_ok GOT OP EXPECTED DESCRIPTION   (OP: -lt -le -gt -ge -eq -ne)
	T_NUM=$((T_NUM + 1))
	if [ "$1" "$2" "$3" ]; then echo "ok $T_NUM - $4"
	else echo "not ok $T_NUM - $4"; T_FAILED=$((T_FAILED + 1))
		echo "#   Failed test at ${BASH_SOURCE[1]}:${BASH_LINENO[0]}"
		echo "#     '$1' $2 '$3' is false"; fi
}
diag() { echo "# $*"; }
done_testing() { echo "1..$T_NUM"; [ "$T_FAILED" -eq 0 ]; exit $?; }
bail() { echo "Bail out! $*"; exit 255; }

# Start (or reuse) the local PostgreSQL and Kafka and load .run/env.
# Under CI a service that will not start is a failure, never a skip.
services_up() {
	bash "$ROOT/scripts/services" up >"$ROOT/.run-services.log" 2>&1 ||
		{ cat "$ROOT/.run-services.log" | sed 's/^/# /'; bail "scripts/services up failed"; }
	rm -f "$ROOT/.run-services.log"
	# shellcheck disable=SC1091
	. "$ROOT/.run/env"
	"$BIN/outboxctl" migrate >/dev/null || bail "outboxctl migrate failed"
}

# psql returning bare values.
q() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -t -A -v ON_ERROR_STOP=1 -c "$1"; }

# Empty every table of both sides, so a test starts from nothing.
reset_db() {
	q "TRUNCATE public.orders, public.outbox, public.outboxd_relays, public.outboxd_kafka_cluster,
	   sink.inbox, sink.side_effects, sink.order_projection, sink.ordering_audit,
	   sink.consumers, sink.dead_letters, sink.quarantine, sink.parked, sink.held RESTART IDENTITY" >/dev/null
}

# A topic and consumer group of this test's own, so tests never see each
# other's events: sets OUTBOX_TOPIC and OUTBOX_GROUP.
fresh_topic() {
	local tag; tag="$(basename "$0" .t | tr -c 'a-zA-Z0-9\n' '-')-$$-$RANDOM"
	export OUTBOX_TOPIC="t.$tag"
	export OUTBOX_GROUP="g.$tag"
}

# A config file for this test: prints its path. Extra lines (section
# headers included) come from stdin.
test_conf() {
	local f; f=$(mktemp "${TMPDIR:-/tmp}/outboxd-test.XXXXXX.conf")
	cat >"$f"
	echo "$f"
}

# sup_http_port LOG: the port outboxd says (in LOG) it serves HTTP on.
sup_http_port() { sed -n 's|.*on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$1" | head -1; }

# wait_for SECONDS COMMAND...: retry COMMAND every 0.2 s until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1)); shift
	until "$@"; do
		[ $SECONDS -ge $deadline ] && return 1
		sleep 0.2
	done
}

# Count distinct event ids and all messages on a topic, reading it to its end
# with kcat: prints "messages distinct".
topic_counts() {
	kcat -b "$OUTBOX_KAFKA" -C -t "$1" -e -q -f '%h\n' 2>/dev/null |
		tr ',' '\n' | sed -n 's/^event_id=//p' | sort | uniq -c |
		awk '{m += $1; d++} END {print m + 0, d + 0}'
}

# Drop the CDC relay's idle replication slots and its publication, so a CDC
# test starts from nothing (and no slot of an earlier test retains WAL).
cdc_reset() {
	q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
	    WHERE NOT active" >/dev/null
	q "DROP PUBLICATION IF EXISTS outboxd_outbox" >/dev/null
}

# Every event id in public.outbox that is not on topic $1 (one per line).
missing_from_topic() {
	kcat -b "$OUTBOX_KAFKA" -C -t "$1" -e -q -f '%h\n' 2>/dev/null |
		tr ',' '\n' | sed -n 's/^event_id=//p' | sort -u >"${TMPDIR:-/tmp}/.topic.$$"
	q "SELECT event_id FROM public.outbox" | sort | comm -23 - "${TMPDIR:-/tmp}/.topic.$$"
	rm -f "${TMPDIR:-/tmp}/.topic.$$"
}

# topic_vs_outbox TOPIC DIR: read TOPIC to its end into DIR/topic.tsv
# (partition, offset, key, headers, value) and compare every message with its
# outbox row: event id, key, seq, event type, aggregate type, payload.
# DIR/from_db and DIR/from_topic hold both sides, sorted; exit 0 when equal.
topic_vs_outbox() {
	kcat -b "$OUTBOX_KAFKA" -C -t "$1" -e -q -f '%p\t%o\t%k\t%h\t%s\n' >"$2/topic.tsv" 2>/dev/null
	awk -F'\t' '{
		n = split($4, h, ","); delete v
		for (i = 1; i <= n; i++) { j = index(h[i], "="); v[substr(h[i], 1, j - 1)] = substr(h[i], j + 1) }
		print v["event_id"] "\t" $3 "\t" v["aggregate_seq"] "\t" v["event_type"] "\t" v["aggregate_type"] "\t" $5
	}' "$2/topic.tsv" | sort >"$2/from_topic"
	q "SELECT event_id || E'\t' || aggregate_id || E'\t' || aggregate_seq || E'\t' || event_type
	          || E'\t' || aggregate_type || E'\t' || payload::text FROM public.outbox" |
		sort >"$2/from_db"
	cmp -s "$2/from_db" "$2/from_topic"
}

# topic_order_faults TSV: in a topic_vs_outbox dump, the messages that break
# "per order, seq 1, 2, 3, ... in offset order, in one partition".
topic_order_faults() {
	sort -t"$(printf '\t')" -k1,1n -k2,2n "$1" | awk -F'\t' '{
		s = ""; n = split($4, h, ",")
		for (i = 1; i <= n; i++) if (h[i] ~ /^aggregate_seq=/) s = substr(h[i], 15) + 0
		if (s != last[$3] + 1) bad++
		last[$3] = s; if (($3 in part) && part[$3] != $1) bad++; part[$3] = $1
	} END { print bad + 0 }'
}

# chaos_field JSON MODE FIELD: a field of one run in scripts/chaos's result
# (the run's own counters first, then its outboxctl verify object).
chaos_field() {
	perl -MJSON::PP -0777 -e '
		my $j = decode_json(<STDIN>);
		for my $r (@{$j->{runs}}) {
			next unless $r->{mode} eq $ARGV[0];
			my $v = exists $r->{$ARGV[1]} ? $r->{$ARGV[1]} : $r->{verify}{$ARGV[1]};
			print defined $v ? $v : "missing";
		}' "$2" "$3" <"$1"
}

# A benchmark script's test: $tmp (removed at exit unless KEEP is set) and $B,
# the script.
bench_setup() {   # TEST_NUMBER SCRIPT_NAME
	tmp=$(mktemp -d "/tmp/outboxd-$1.XXXXXX")
	trap '[ "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
	B="$ROOT/scripts/$2"
}
# A benchmark script's command line: bench_cli checks that --help exits 0 and
# lists HELP_TEXT; bench_usage_error DESCRIPTION ARGS... that the script exits
# 2 with one line starting with its name, run with --out NEVER_DIR (which a
# usage error must not create).
bench_cli() {   # SCRIPT HELP_TEXT NEVER_DIR
	local out rc
	BENCH_SCRIPT=$1 BENCH_NEVER=$3
	out=$(bash "$1" --help 2>&1); rc=$?
	is "$rc" 0 "--help exits 0"
	echo "$out" | grep -q -- "$2"; ok $? "--help lists the options"
}
bench_usage_error() {   # DESCRIPTION ARGS...
	local d=$1 err rc
	shift
	err=$(bash "$BENCH_SCRIPT" "$@" --out "$BENCH_NEVER" 2>&1 >/dev/null); rc=$?
	is "$rc" 2 "$d: exit 2"
	echo "$err" | grep -q "^$(basename "$BENCH_SCRIPT"): "; ok $? "$d: says so ($err)"
}
