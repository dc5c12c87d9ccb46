#!/usr/bin/env bash
# A consumer applies its own topic's events only.
#
# 1. The issue's scenario: three consumers of group G on topic A, stopped
#    (static members stay in the group until their sessions expire), then
#    one consumer of the same group G on a fresh topic B with 600 events.
#    With the static member id "consumer-0" of before, that consumer was
#    handed its previous assignment, 4 partitions of A, and applied A's
#    events as its own (with false gaps). Now its static member id is
#    derived from group and topic: it is a new member, the group rebalances
#    and it gets B's 12 partitions. The sink holds exactly B's events.
# 2. A foreign message by hand: the same hand-set kafka.group.instance.id
#    for topics C and D in one group, so the group hands the D consumer C's
#    partitions (the old failure, on purpose). It takes none of them and
#    says what to change. Then, with OUTBOX_TEST_ASSIGN_FOREIGN=1 (the
#    partitions are taken after all, so that the message guard is what is
#    tested), a well-formed event on C reaches it: it is neither applied nor
#    dead-lettered nor parked, it is counted, and its offset is not committed.
. "$(dirname "$0")/../lib.sh"

services_up
reset_db
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-134.XXXXXX")
pids=
trap 'for p in $pids; do kill -KILL $p 2>/dev/null; done; rm -rf "$tmp" "$conf_a" "$conf_b" "$conf_c" "$conf_d"' EXIT
conf_a= conf_b= conf_c= conf_d=

fresh_topic
topic_a=$OUTBOX_TOPIC.a topic_b=$OUTBOX_TOPIC.b group=$OUTBOX_GROUP
unset OUTBOX_TOPIC OUTBOX_GROUP # the config files say which topic
# topic_conf TOPIC [KAFKA_LINE]: a config for TOPIC in group $group.
topic_conf() {
	test_conf <<EOF
[kafka]
topic = $1
${2:-}
[consumer]
group_id = $group
commit_interval_ms = 100
[supervisor]
audit_file = $tmp/audit.jsonl
EOF
}
# The first run's static members expire 10 s after it stops, so the group
# rebalances for the newcomer within seconds instead of the default 45.
conf_a=$(topic_conf "$topic_a" "kafka.session.timeout.ms = 10000") conf_b=$(topic_conf "$topic_b")
# start NAME CONF ID [VAR=VALUE...]: consumer ID on CONF, logging to $tmp/NAME.log
start() {
	env "${@:4}" "$BIN/outbox-consumer" -c "$2" --id "$3" >"$tmp/$1.log" 2>&1 &
	pids="$pids $!"
}
logged() { grep -q "$2" "$tmp/$1.log"; } # logged NAME PATTERN
applied() { q "SELECT count(*) FROM sink.side_effects"; }
at_least() { [ "$(applied)" -ge "$1" ]; }
stop_all() {
	local p rc=0
	for p in $pids; do kill -TERM "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" || rc=$?; done
	pids=
	return $rc
}

out=$("$BIN/orders" -c "$conf_a" --mode naive --orders 300 --events-per-order 5 --quiet 2>>"$tmp/orders.log")
ok $? "topic A: 1,500 events ($out)"
for i in 0 1 2; do start "a-$i" "$conf_a" $i; done
wait_for 60 at_least 1500
ok $? "three consumers on topic A applied its 1,500 events"
spread() { [ "$(cat "$tmp"/a-*.log | grep -c 'assigned 4 partition(s)')" -ge 3 ]; }
wait_for 30 spread
ok $? "each of the three holds 4 of A's 12 partitions"
out=$("$BIN/orders" -c "$conf_b" --mode naive --orders 120 --events-per-order 5 --quiet 2>>"$tmp/orders.log")
ok $? "topic B: 600 events ($out)"
read -r b_total b_distinct < <(topic_counts "$topic_b")
is "$b_total $b_distinct" "600 600" "600 distinct events on B"
stop_all
ok $? "the three A consumers stop cleanly (their static members stay in the group)"
# More of A that nobody has read: what a consumer handed A's partitions applies.
out=$("$BIN/orders" -c "$conf_a" --mode naive --orders 120 --events-per-order 5 --quiet 2>>"$tmp/orders.log")
ok $? "topic A: 600 more events, unread ($out)"
# And seq 6 of A's orders 1..12, on their orders' partitions (the relay's
# murmur2_random): a consumer handed A's partitions logs gaps for them, as
# the issue's consumer logged 8 false gaps.
for o in $(seq 1 12); do
	printf '{"order_id":"%s","seq":6,"status":"shipped","total_cents":600}\n' "$o" |
		kcat -b "$OUTBOX_KAFKA" -P -t "$topic_a" -X topic.partitioner=murmur2_random -k "$o" \
			-H "event_id=$(cat /proc/sys/kernel/random/uuid)" -H event_type=order.shipped \
			-H aggregate_type=order -H aggregate_seq=6 2>/dev/null || break
done
ok $? "topic A: seq 6 of orders 1..12, unread"
reset_db

start b "$conf_b" 0
wait_for 90 at_least 600
ok $? "the consumer on B, same group id, applied 600 events"
sleep 2 # anything of A it was handed would show by now
stop_all
ok $? "it stops cleanly"
is "$(applied)" "600" "the sink holds 600 side effects, no more"
kcat -b "$OUTBOX_KAFKA" -C -t "$topic_b" -e -q -f '%h\n' 2>/dev/null |
	tr ',' '\n' | sed -n 's/^event_id=//p' | sort >"$tmp/b.ids"
q "SELECT event_id FROM sink.side_effects ORDER BY 1" | sort >"$tmp/sink.ids"
cmp -s "$tmp/b.ids" "$tmp/sink.ids"
ok $? "exactly B's events were applied, each once"
is "$(q "SELECT count(*) FROM sink.order_projection WHERE last_seq <> 5 OR events_applied <> 5")" \
	"0" "all 120 of B's orders at seq 5 with 5 events applied"
is "$(q "SELECT count(*) FROM sink.order_projection")" "120" "and no other order"
is "$(q "SELECT count(*) FROM sink.ordering_audit WHERE kind = 'gap'")" "0" \
	"no false gaps in sink.ordering_audit"
is "$(q "SELECT count(*) FROM sink.dead_letters") $(q "SELECT count(*) FROM sink.parked")" "0 0" \
	"nothing dead-lettered or parked"
is "$(q "SELECT foreign_messages, foreign_partitions FROM sink.consumers WHERE consumer_id = 0")" \
	"0|0" "the group never handed it anything of A"
member=$(sed -n 's/.* as \(consumer-0-[0-9a-f]\{8\}\) in group .*/\1/p' "$tmp/b.log" | head -n 1)
member_a=$(sed -n 's/.* as \(consumer-0-[0-9a-f]\{8\}\) in group .*/\1/p' "$tmp/a-0.log" | head -n 1)
ok "$([ -n "$member" ] && [ -n "$member_a" ] && [ "$member" != "$member_a" ]; echo $?)" \
	"its static member id ($member) is not the A run's worker 0's ($member_a)"
grep -q 'assigned 12 partition(s)' "$tmp/b.log"
ok $? "it ended up with B's 12 partitions"
if [ "$T_FAILED" -gt 0 ]; then grep -v DEBUG "$tmp/b.log" | tail -n 30 | sed 's/^/# b: /'; fi

# 2. A foreign message by hand.
reset_db
fresh_topic
topic_c=$OUTBOX_TOPIC.c topic_d=$OUTBOX_TOPIC.d group=$OUTBOX_GROUP member="hand-$$-$RANDOM"
unset OUTBOX_TOPIC OUTBOX_GROUP
conf_c=$(topic_conf "$topic_c" "kafka.group.instance.id = $member")
conf_d=$(topic_conf "$topic_d" "kafka.group.instance.id = $member")
# Consumers do not create the topics they subscribe to (a metadata request does).
has_12() { kcat -b "$OUTBOX_KAFKA" -L -t "$1" 2>/dev/null | grep -q 'with 12 partitions'; }
wait_for 30 has_12 "$topic_c" && wait_for 30 has_12 "$topic_d"
ok $? "topics C and D exist, empty"
start c "$conf_c" 0
wait_for 60 logged c 'assigned 12 partition(s)'
ok $? "static member $member holds topic C's 12 partitions"
stop_all
ok $? "and stops (the member stays in the group)"

order="F-$$-$RANDOM" event=$(cat /proc/sys/kernel/random/uuid)
printf '{"order_id":"%s","seq":1,"status":"placed","total_cents":100}\n' "$order" |
	kcat -b "$OUTBOX_KAFKA" -P -t "$topic_c" -p 0 -k "$order" -H "event_id=$event" \
		-H event_type=order.placed -H aggregate_type=order -H aggregate_seq=1 2>/dev/null
ok $? "a well-formed event produced by hand to C, partition 0"

# The same member id on D: the group hands it C's partitions; it takes none.
start d1 "$conf_d" 0
wait_for 60 logged d1 "ERROR.*assigned 12 partition(s) of $topic_c, not of our topic $topic_d: not taken"
ok $? "the D consumer, handed C's 12 partitions, says so and takes none"
logged d1 "ERROR none of $topic_d's partitions assigned: static member $member (kafka.group.instance.id)"
ok $? "and says that it reads nothing, and what to change"
logged d1 "assigned 0 partition(s)"
ok $? "its assignment is empty"
sleep 2
stop_all
ok $? "it stops cleanly"
logged d1 "refused a message"
ok "$((! $?))" "no message of C reached it"
is "$(q "SELECT received, foreign_messages, foreign_partitions FROM sink.consumers WHERE consumer_id = 0")" \
	"0|0|12" "counted: 12 foreign partitions, no message"

# The partitions taken after all: the message guard refuses C's event.
start d2 "$conf_d" 0 OUTBOX_TEST_ASSIGN_FOREIGN=1
wait_for 60 logged d2 "ERROR refused a message of topic $topic_c \[0\] offset 0: this consumer applies $topic_d only"
ok $? "the foreign message reaches it, and is refused loudly (topic, partition, offset)"
sleep 2 # a commit interval or twenty
stop_all
ok $? "it stops cleanly"
is "$(q "SELECT count(*) FROM sink.side_effects") $(q "SELECT count(*) FROM sink.inbox")" "0 0" \
	"not applied (no side effect, no inbox row)"
is "$(q "SELECT count(*) FROM sink.dead_letters") $(q "SELECT count(*) FROM sink.parked")" "0 0" \
	"not dead-lettered, not parked"
is "$(q "SELECT count(*) FROM sink.ordering_audit")" "0" "not audited as poison either"
is "$(q "SELECT received, foreign_messages FROM sink.consumers WHERE consumer_id = 0")" "0|1" \
	"counted as a foreign message, not as received"
logged d2 "stopping: .* foreign 1 "
ok $? "the summary line says foreign 1"
lag=$("$BIN/outboxctl" -c "$conf_c" status --json 2>/dev/null | jq -r .consumer_lag)
is "$lag" "1" "its offset was not committed: group $group is still 1 message behind on C"
# Offsets are recorded by partition of our own topic: had the message been
# taken for ours, its offset would have been committed as D's partition 0
# (beyond D's end: a lag that outboxctl cannot compute).
lag=$("$BIN/outboxctl" -c "$conf_d" status --json 2>/dev/null | jq -r .consumer_lag)
is "$lag" "0" "nor was it committed as an offset of D's"
if [ "$T_FAILED" -gt 0 ]; then
	for f in d1 d2; do grep -v DEBUG "$tmp/$f.log" | tail -n 20 | sed "s/^/# $f: /"; done
fi
done_testing
