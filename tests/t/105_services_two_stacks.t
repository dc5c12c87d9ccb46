#!/usr/bin/env bash
# Two checkouts on one machine: a second checkout's stack comes up while this
# one restarts its broker in a loop. Every port of the two stacks is distinct
# and this stack's ports do not move; each stack's relay publishes to its own
# broker only; the servers a restart starts do not hold the caller's
# descriptors (a caller's flock is free once the caller lets go of it).
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
fresh_topic
tmp=$(mktemp -d /tmp/outboxd-105.XXXXXX)
chmod 755 "$tmp"    # the second stack's PostgreSQL runs as another user
other="$tmp/checkout"
mkdir -p "$other/scripts/kafka"
cp scripts/services scripts/deps "$other/scripts/"
cp scripts/kafka/pom.xml "$other/scripts/kafka/"
PORTS_DIR=${OUTBOX_PORTS_DIR:-/tmp/outboxd-ports}
pids=
cleanup() {
	# shellcheck disable=SC2086
	[ -n "$pids" ] && { kill -KILL $pids; wait $pids; } 2>/dev/null
	bash "$other/scripts/services" down --purge >/dev/null 2>&1
	bash scripts/services start kafka >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT

# ports RUN: the ports reserved for a checkout's .run, one per line.
ports() { grep -lx "$1 .*" "$PORTS_DIR"/[0-9]* 2>/dev/null | xargs -r -n1 basename | sort -n; }
own_before=$(ports "$ROOT/.run")
cmp_ok "$(echo "$own_before" | wc -w)" -ge 3 "this stack holds its reservations ($(echo $own_before))"

# This stack's relay runs through it all, on this stack's database and broker.
conf=$(test_conf <<EOF
[kafka]
topic = $OUTBOX_TOPIC
delivery_timeout_ms = 3000
[relay]
poll_interval_ms = 200
backoff_max_ms = 1000
EOF
)
"$BIN/outbox-relay" -c "$conf" --id 0 >"$tmp/relay-a.log" 2>&1 &
pids="$pids $!"
"$BIN/orders" -c "$conf" --mode outbox --orders 20 --events-per-order 2 --rate 20 --quiet \
	>"$tmp/orders-a.log" 2>&1 &
orders_a=$!

# Restart this broker until the other stack is up (at least twice).
bash "$other/scripts/services" up >"$tmp/up-b.log" 2>&1 &
up_b=$!
restarts=0
while kill -0 "$up_b" 2>/dev/null || [ "$restarts" -lt 2 ]; do
	bash scripts/services restart kafka >>"$tmp/restart-a.log" 2>&1 && restarts=$((restarts + 1))
	[ "$restarts" -ge 6 ] && break
done
wait "$up_b"
ok $? "the other checkout's stack comes up meanwhile"
[ -s "$other/.run/env" ] || sed 's/^/# /' "$tmp/up-b.log"
cmp_ok "$restarts" -ge 2 "this broker restarted $restarts times meanwhile"
wait "$orders_a"
ok $? "this stack's order service wrote its 40 events"

own_after=$(ports "$ROOT/.run")
theirs=$(ports "$other/.run")
is "$(echo $own_after)" "$(echo $own_before)" "this stack's ports did not move"
cmp_ok "$(echo "$theirs" | wc -w)" -ge 3 "the other stack holds its own reservations ($(echo $theirs))"
is "$(printf '%s\n' $own_after $theirs | sort | uniq -d | wc -l)" "0" "no port is reserved by both"
. "$ROOT/.run/env"
kafka_a=$OUTBOX_KAFKA
kafka_b=$(. "$other/.run/env"; echo "$OUTBOX_KAFKA")
[ "$kafka_a" != "$kafka_b" ]
ok $? "the brokers listen on different addresses ($kafka_a, $kafka_b)"

# The other stack's relay, on its own database and broker, the same topic name.
(
	. "$other/.run/env"
	"$BIN/outboxctl" migrate >/dev/null &&
		"$BIN/orders" -c "$conf" --mode outbox --orders 10 --events-per-order 3 --quiet
) >"$tmp/orders-b.log" 2>&1
ok $? "the other stack's order service wrote its 30 events"
(
	. "$other/.run/env"
	exec "$BIN/outbox-relay" -c "$conf" --id 0
) >"$tmp/relay-b.log" 2>&1 &
pids="$pids $!"
pg_b_q() { ( . "$other/.run/env"; q "$1" ); }
drained_a() { [ "$(q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" = 0 ]; }
drained_b() { [ "$(pg_b_q "SELECT count(*) FROM public.outbox WHERE sent_at IS NULL")" = 0 ]; }
wait_for 60 drained_a
ok $? "this stack's relay sent all 40 of its events"
wait_for 60 drained_b
ok $? "the other stack's relay sent all 30 of its events"

distinct_on() { # BROKER: distinct event ids on the topic there
	kcat -b "$1" -C -t "$OUTBOX_TOPIC" -e -q -f '%h\n' 2>/dev/null |
		tr ',' '\n' | sed -n 's/^event_id=//p' | sort -u | wc -l
}
is "$(distinct_on "$kafka_a")" "40" "this broker holds this stack's 40 events and nothing else"
is "$(distinct_on "$kafka_b")" "30" "the other broker holds the other stack's 30 events and nothing else"
missing=$(q "SELECT event_id FROM public.outbox" | sort | comm -23 - <(
	kcat -b "$kafka_a" -C -t "$OUTBOX_TOPIC" -e -q -f '%h\n' 2>/dev/null |
	tr ',' '\n' | sed -n 's/^event_id=//p' | sort -u) | wc -l)
is "$missing" "0" "every event of this stack's outbox is on this stack's broker"

# A caller's lock is not held by the servers a restart starts.
exec 7>"$tmp/caller.lock"
flock 7
bash "$other/scripts/services" restart pg >"$tmp/restart-b.log" 2>&1 &&
	bash "$other/scripts/services" restart kafka >>"$tmp/restart-b.log" 2>&1
ok $? "the other stack restarts its PostgreSQL and its broker while the caller holds a lock"
exec 7>&-
flock -n "$tmp/caller.lock" true
ok $? "the lock is free once the caller closes it (no server inherited it)"

bash "$other/scripts/services" down --purge >/dev/null 2>&1
ok $? "the other stack goes down and releases its ports"
is "$(ports "$other/.run" | wc -l)" "0" "none of its reservations is left"
is "$(echo $(ports "$ROOT/.run"))" "$(echo $own_before)" "and this stack's are untouched"
done_testing
