#!/usr/bin/env bash
# The local services: up is idempotent, the broker is real (a message goes
# through it), and restarts of both bring them back.
. "$(dirname "$0")/../lib.sh"

services_up
bash scripts/services up >/dev/null 2>&1
ok $? "scripts/services up twice in a row succeeds"
bash scripts/services status >/dev/null 2>&1
ok $? "status says both services are up"
is "$(q 'SELECT 1')" "1" "PostgreSQL answers on \$PGPORT"
is "$(q 'SHOW wal_level')" "logical" "wal_level is logical"

fresh_topic
# one partition, so the order read back is the order written
msg="hello-$RANDOM"
printf '%s\n' "$msg" | kcat -b "$OUTBOX_KAFKA" -P -p 0 -t "$OUTBOX_TOPIC" 2>/dev/null
ok $? "kcat produced a message to the real broker"
got=$(kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -o beginning -e -q 2>/dev/null)
is "$got" "$msg" "and consumed the same message back"

bash scripts/services restart kafka >/dev/null 2>&1
ok $? "restart kafka"
printf 'after-restart\n' | kcat -b "$OUTBOX_KAFKA" -P -p 0 -t "$OUTBOX_TOPIC" 2>/dev/null
got=$(kcat -b "$OUTBOX_KAFKA" -C -t "$OUTBOX_TOPIC" -o beginning -e -q 2>/dev/null | tr '\n' ' ')
is "$got" "$msg after-restart " "the broker kept its data and takes new messages after a restart"

bash scripts/services restart pg >/dev/null 2>&1
ok $? "restart pg"
is "$(q 'SELECT 2')" "2" "PostgreSQL answers after a restart"
"$BIN/outboxctl" migrate >/dev/null
ok $? "outboxctl migrate works after the restart (idempotent)"
is "$(q "SELECT count(*) FROM public.outboxd_migrations")" "$(ls sql/*.sql | wc -l)" \
	"every migration recorded once"
done_testing
