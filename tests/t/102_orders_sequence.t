#!/usr/bin/env bash
# Per-aggregate sequence: 10,000 events from 16 connections; every order's
# outbox rows are 1..n without gap or duplicate, and seq order is commit order.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
out=$("$BIN/orders" --mode outbox --orders 2000 --events-per-order 5 --concurrency 16 --quiet)
ok $? "orders ran: $out"
is "$(q "SELECT count(*) FROM public.outbox")" "10000" "10,000 outbox rows"
is "$(q "SELECT count(*) FROM (SELECT aggregate_id FROM public.outbox GROUP BY 1
          HAVING min(aggregate_seq) <> 1 OR max(aggregate_seq) <> count(*)
              OR count(DISTINCT aggregate_seq) <> count(*)) g")" \
	"0" "every order's seqs are exactly 1..n"
# Commit order: the commit timestamp of seq n+1's transaction is later than
# seq n's (track_commit_timestamp is on in the local cluster).
is "$(q "SELECT count(*) FROM (SELECT aggregate_seq,
          pg_xact_commit_timestamp(xmin) AS committed,
          lag(pg_xact_commit_timestamp(xmin)) OVER w AS prev_committed,
          id, lag(id) OVER w AS prev_id
        FROM public.outbox WINDOW w AS (PARTITION BY aggregate_id ORDER BY aggregate_seq)) s
        WHERE prev_id IS NOT NULL AND (committed <= prev_committed OR id <= prev_id)")" \
	"0" "seq order equals commit order (commit timestamps and ids increase with seq)"
# The writers really interleaved: consecutive ids belong to different orders.
cmp_ok "$(q "SELECT count(*) FROM (SELECT aggregate_id, lag(aggregate_id) OVER (ORDER BY id) p
               FROM public.outbox) s WHERE aggregate_id <> p")" -gt 5000 \
	"events of different orders interleave"
done_testing
