#!/usr/bin/env bash
# Atomicity: with orders.before_commit armed at 5%, the order service dies
# between its statement and COMMIT again and again; no business row may
# exist without its outbox row, nor an outbox row without its business row.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
crashes=0 runs=0
while :; do
	n=$(q "SELECT coalesce(sum(version), 0) FROM public.orders")
	[ "$n" -ge 1000 ] && break
	runs=$((runs + 1))
	[ $runs -gt 400 ] && break
	OUTBOX_CRASH=orders.before_commit:0.05 OUTBOX_CRASH_SEED=$runs \
		"$BIN/orders" --mode outbox --orders 50 --events-per-order 5 --concurrency 4 \
		--seed $runs --quiet >/dev/null 2>&1
	[ $? -eq 86 ] && crashes=$((crashes + 1))
done
diag "$n events committed over $runs runs, $crashes of them crashed before COMMIT"
cmp_ok "$n" -ge 1000 "at least 1,000 events committed"
cmp_ok "$crashes" -ge 5 "the crash point really fired (5% per event)"
is "$(q "SELECT count(*) FROM public.outbox")" "$n" "outbox rows = committed order changes"
is "$(q "SELECT count(*) FROM public.orders o WHERE o.version <> (SELECT count(*) FROM public.outbox x WHERE x.aggregate_id = o.id::text)")" \
	"0" "every order has exactly version outbox rows"
is "$(q "SELECT count(*) FROM public.outbox x LEFT JOIN public.orders o ON o.id::text = x.aggregate_id WHERE o.id IS NULL OR x.aggregate_seq > o.version")" \
	"0" "no outbox row without its business change"
is "$(q "SELECT count(*) FROM public.outbox x JOIN public.orders o ON o.id::text = x.aggregate_id WHERE x.aggregate_seq = o.version AND x.payload->>'status' <> o.status")" \
	"0" "each order's last outbox row carries the order's current status"
done_testing
