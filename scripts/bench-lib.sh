# shellcheck shell=bash
# bench-lib.sh: what the benchmark scripts share (sourced, not run). Expects
# .run/env loaded; backlog() reads EVENTS, ORDERS and PAYLOAD, conf_for()
# OUT, BATCH and SLOT, pg_reaped_cpu() ROOT, from the caller.

say() { echo "$*" >&2; }
q() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -t -A -v ON_ERROR_STOP=1 -c "$1"; }
# Empty tables: the writing side, the relays' records and the sink.
bench_reset() {
	q "TRUNCATE public.orders, public.outbox, public.outboxd_relays,
	   sink.inbox, sink.side_effects, sink.order_projection, sink.ordering_audit,
	   sink.consumers, sink.dead_letters, sink.quarantine, sink.parked, sink.held RESTART IDENTITY" >/dev/null
}
bench_reset_sink() {
	q "TRUNCATE sink.inbox, sink.side_effects, sink.order_projection, sink.ordering_audit,
	   sink.consumers, sink.dead_letters, sink.quarantine, sink.parked, sink.held RESTART IDENTITY" >/dev/null
}
# EVENTS events of about PAYLOAD bytes over ORDERS orders, each order's seq
# 1, 2, 3 ... in outbox id order, in one INSERT ... SELECT; with TXN (a
# number), in transactions of TXN events each (a procedure's COMMITs).
backlog() {   # [TXN]
	local sel="SELECT 'order', 'o-' || (s % $ORDERS), s / $ORDERS + 1, 'order.updated',
	          jsonb_build_object('status', 'paid', 'total_cents', s, 'pad', repeat('x', $PAYLOAD - 60))"
	local ins="INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type, payload)"
	if [ -n "${1:-}" ]; then
		q "DO \$\$ BEGIN FOR c IN 0 .. ($EVENTS - 1) / $1 LOOP
		     $ins $sel FROM generate_series(c * $1, least((c + 1) * $1, $EVENTS) - 1) s;
		     COMMIT; END LOOP; END \$\$" >/dev/null
	else
		q "$ins $sel FROM generate_series(0, $EVENTS - 1) s" >/dev/null
	fi
	q "ANALYZE public.outbox" >/dev/null
}
conf_for() {   # TOPIC GROUP RELAY_MODE: a config file's path
	local f="$OUT/$1.conf"
	printf '[kafka]\ntopic = %s\n[relay]\nmode = %s\nbatch_size = %s\nnotify = off\npoll_interval_ms = 100\nslot_name = %s\n[consumer]\ngroup_id = %s\n[supervisor]\naudit_file =\n' \
		"$1" "$3" "$BATCH" "$SLOT" "$2" >"$f"
	echo "$f"
}
make_topic() {  # TOPIC: auto-created by a metadata request
	local i
	for i in $(seq 50); do
		kcat -b "$OUTBOX_KAFKA" -L -t "$1" 2>/dev/null | grep -q ' 12 partitions' && return 0
		sleep 0.2
	done
	return 1
}
TICK=$(getconf CLK_TCK)
cpu_s() { awk -v t="$TICK" '{ s += ($14 + $15) / t } END { printf "%.2f", s + 0 }' "$@" 2>/dev/null; }
backend_pids() { q "SELECT pid FROM pg_stat_activity WHERE application_name LIKE '$1%'"; }
backends_cpu() { local f=(); for p in $(backend_pids "$1"); do f+=("/proc/$p/stat"); done
	[ ${#f[@]} -gt 0 ] && cpu_s "${f[@]}" || echo 0; }
# CPU seconds of the PostgreSQL sessions that have ended so far (the
# postmaster's reaped children): a session that ends before the run does
# (the CDC relay's catch-up poll) is counted by the difference across the
# run, with the few short sessions of the bench's own queries.
pg_reaped_cpu() {
	awk -v t="$TICK" '{ printf "%.2f", ($16 + $17) / t }' \
		"/proc/$(head -n 1 "$ROOT/.run/pg/data/postmaster.pid")/stat" 2>/dev/null || echo 0
}
hwm_mb() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }
unsent() { q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL"; }
sent_zero() { [ "$(unsent)" = 0 ] && echo 0 || echo 1; }
wait_drained() {  # COUNT_CMD TARGET PID...: until COUNT_CMD prints TARGET; 1 when stuck 60 s or a PID exits
	local last=-1 n since=$SECONDS cmd=$1 target=$2 p
	shift 2
	while :; do
		n=$($cmd)
		if [ "$n" = "$target" ]; then T_END=$(date +%s.%N); return 0; fi
		for p in "$@"; do kill -0 "$p" 2>/dev/null || return 1; done
		if [ "$n" != "$last" ]; then last=$n since=$SECONDS
		elif [ $((SECONDS - since)) -ge 60 ]; then return 1; fi
		sleep 0.2
	done
}
topic_msgs() {   # TOPIC: "messages distinct"
	kcat -b "$OUTBOX_KAFKA" -C -t "$1" -e -q -f '%h\n' 2>/dev/null |
		sed -n 's/.*event_id=\([^,]*\).*/\1/p' | sort | uniq -c | awk '{m += $1; d++} END {print m + 0, d + 0}'
}
