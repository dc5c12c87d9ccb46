#!/usr/bin/env bash
# The consumer's batch path. 300 events of 60 orders (seq 1..5 each) are on
# the topic before the consumer starts, so it fetches them in batches. One
# order's events are refused by a sink trigger (P0001, always), one event
# comes twice, one order id holds a quote, a backslash, a comma and braces.
# The batches are applied in a few transactions; a batch the trigger refuses
# goes one by one, where the refused event uses its retry budget and is
# dead-lettered and its order quarantined; the duplicate is audited; every
# other event is applied once, in seq order.
#
# Tried by hand (not left in the code): with batch_size = 1 check 5 fails
# (one event per transaction).
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-136.XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	q "DROP TRIGGER IF EXISTS t136_fault ON sink.side_effects;
	   DROP FUNCTION IF EXISTS sink.t136_fault()" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT

services_up
reset_db
q "TRUNCATE sink.dead_letters, sink.parked, sink.quarantine RESTART IDENTITY CASCADE" >/dev/null
fresh_topic
odd='q"uo\te, {x}'
q "CREATE FUNCTION sink.t136_fault() RETURNS trigger LANGUAGE plpgsql AS \$\$
   BEGIN
     IF NEW.aggregate_id = 'bad-1' THEN
       RAISE EXCEPTION 't136: order % is refused', NEW.aggregate_id USING ERRCODE = 'P0001';
     END IF;
     RETURN NEW;
   END \$\$;
   CREATE TRIGGER t136_fault BEFORE INSERT ON sink.side_effects
     FOR EACH ROW EXECUTE FUNCTION sink.t136_fault()" >/dev/null
ok $? "installed the fault trigger"

conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
[consumer]
group_id = $OUTBOX_GROUP
retry_max_attempts = 2
retry_backoff_ms = 50
[supervisor]
audit_file = $tmp/audit.jsonl
EOF
)
# 58 ordinary orders, bad-1 and the odd one; seq 1..5 each, in id order.
q "INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type, payload)
   SELECT 'order', CASE o WHEN 0 THEN 'bad-1' WHEN 1 THEN \$o\$$odd\$o\$ ELSE 'b-' || o END,
          s, 'order.updated', jsonb_build_object('status', 'st' || s, 'total_cents', o * 10 + s)
     FROM generate_series(1, 5) s, generate_series(0, 59) o ORDER BY s, o" >/dev/null
"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/relay.log" 2>&1 &
rpid=$!
sent() { [ "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" = 0 ]; }
wait_for 30 sent
ok $? "the relay published the 300 events"
kill -TERM "$rpid"; wait "$rpid"
# The duplicate: b-7 seq 2 once more, same event id.
read -r dkey dseq dev < <(q "SELECT aggregate_id, aggregate_seq, event_id FROM public.outbox
                             WHERE aggregate_id = 'b-7' AND aggregate_seq = 2" | tr '|' ' ')
q "SELECT payload FROM public.outbox WHERE event_id = '$dev'" |
	kcat -b "$OUTBOX_KAFKA" -P -t "$OUTBOX_TOPIC" -k "$dkey" -H "event_id=$dev" \
		-H aggregate_seq="$dseq" -H event_type=order.updated -H aggregate_type=order 2>/dev/null

OUTBOX_LOG_LEVEL=debug "$BIN/outbox-consumer" -c "$conf" --id 0 >"$tmp/consumer.log" 2>&1 &
pid=$!
done_yet() {
	[ "$(q "SELECT count(*) FROM sink.side_effects")" -ge 295 ] &&
		[ "$(q "SELECT count(*) FROM sink.dead_letters")" -ge 1 ] &&
		[ "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'duplicate'")" -ge 1 ]
}
wait_for 60 done_yet
ok $? "every other event applied, the refused one dead-lettered, the duplicate seen"
sleep 1.5
kill -TERM "$pid"; wait "$pid"; rc=$?; pid=
is "$rc" 0 "the consumer exits 0 on SIGTERM"

# How many events a batch takes depends on what librdkafka has fetched when
# it is gathered (on a busy machine, less): the largest transaction must
# still hold many, since each partition's 25 events arrive in one fetch.
read -r tx biggest < <(q "SELECT count(*), max(n) FROM (SELECT count(*) AS n FROM sink.side_effects
                          GROUP BY xmin::text) t" | tr '|' ' ')
diag "295 side effects in $tx transactions, the largest holding $biggest"
cmp_ok "$biggest" -ge 10 "they were applied in batches (one transaction held 10 or more)"
is "$(q "SELECT count(*), count(DISTINCT event_id) FROM sink.side_effects")" "295|295" \
	"295 side effects, each event once"
is "$(q "SELECT count(*) FROM sink.side_effects a JOIN sink.side_effects b
         ON a.aggregate_id = b.aggregate_id AND a.id < b.id AND a.aggregate_seq > b.aggregate_seq")" \
	0 "applied in seq order per order"
is "$(q "SELECT count(*) FROM sink.order_projection
         WHERE order_id <> 'bad-1' AND last_seq = 5 AND events_applied = 5
           AND status = 'st5' AND total_cents = substring(order_id FROM '[0-9]+\$')::int * 10 + 5
            OR order_id = \$o\$$odd\$o\$ AND last_seq = 5 AND events_applied = 5 AND total_cents = 15")" \
	59 "59 projections at seq 5 with the last status and total"
is "$(q "SELECT count(*) FROM sink.side_effects WHERE aggregate_id = \$o\$$odd\$o\$")" 5 \
	"the order id with a quote, backslash, comma and braces: its 5 events"
is "$(q "SELECT reason, attempts, aggregate_id, aggregate_seq FROM sink.dead_letters")" \
	"exhausted|2|bad-1|1" "bad-1 seq 1 dead-lettered after its 2 attempts one by one"
is "$(q "SELECT count(*) FROM sink.quarantine WHERE order_id = 'bad-1'")" 1 "bad-1 is quarantined"
is "$(q "SELECT count(*) FROM sink.parked WHERE aggregate_id = 'bad-1'")" 4 \
	"its seq 2..5 are parked behind the dead letter"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'duplicate' AND event_id = '$dev'")" 1 \
	"the duplicate is audited once"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind IN ('gap', 'poison')")" 0 "no gap, no poison"
if [ "$T_FAILED" -gt 0 ]; then grep "refused at" "$tmp/consumer.log" | tail -n 30 | sed 's/^/# /'; fi
done_testing
