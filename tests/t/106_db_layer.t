#!/usr/bin/env bash
# common/db against the real PostgreSQL (tests/helpers/db_layer.c): the
# connection options over the user's conninfo, SQLSTATE and message of a
# unique violation and a syntax error, transactions, a connection lost
# after pg_terminate_backend and a harmless rollback after it; db_pipeline:
# a transaction in one round trip with a kept result, one that fails in its
# middle (SQLSTATE of the failed step, nothing kept, nothing of it stays
# after db_rollback), and one on a lost connection. The same
# calls without a server: tests/t/007_db_layer.c.
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/outboxd-106.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Icommon -Itests $(pkg-config --cflags libpq) \
	-o "$tmp/db_layer" tests/helpers/db_layer.c common/db.c common/log.c \
	$(pkg-config --libs libpq) >"$tmp/cc.log" 2>&1 ||
	{ sed 's/^/# /' "$tmp/cc.log"; bail "cannot build tests/helpers/db_layer.c"; }
services_up
"$tmp/db_layer" "$OUTBOX_PG"
