/* Outbox cleanup: one janitor round, shared by outboxd's janitor and
 * `outboxctl cleanup`.
 *
 * Partitioned outbox (sql/003_outbox_cleanup.sql): create the partitions
 * ahead, then drop each partition whose upper bound is older than the
 * retention and that holds no unsent row. The drop itself
 * (outboxd_outbox_drop) detaches the partition first, which waits for every
 * writer and relay transaction in it, re-counts its unsent rows under that
 * lock and only then drops it: an unsent row is never dropped, even one
 * committed between our first look and the drop. Rows of the default
 * partition are deleted in batches like an unpartitioned outbox's.
 *
 * Unpartitioned outbox: walk the table in id order in small batches, each
 * its own short transaction, deleting the sent rows older than the
 * retention; stop at the first batch that reaches rows younger than the
 * retention, at the end of the table, or when the round's time is up.
 *
 * All DDL runs with lock_timeout = [cleanup] lock_timeout_ms, so a janitor
 * queued behind a long transaction never holds writers up for longer than
 * that; it gives up ("busy") and tries again next round. */
#include "outbox_cleanup.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "util.h"

static const char SQL_TRY_LOCK[] = "SELECT pg_try_advisory_lock($1::int, $2::int)";
static const char SQL_UNLOCK[] = "SELECT pg_advisory_unlock($1::int, $2::int)";
static const char SQL_LOCK_TIMEOUT[] = "SELECT set_config('lock_timeout', $1, false)";

/* 'p' partitioned, 'r' plain, no row: no outbox (not migrated). */
static const char SQL_RELKIND[] =
	"SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass('public.outbox')";

/* Upholds "partitions exist ahead of the writers" (see 003). */
static const char SQL_ENSURE[] =
	"SELECT name, lo::text, hi::text, status, coalesce(detail, '') "
	"  FROM public.outboxd_outbox_ensure($1::int, $2::int, $3::boolean)";

/* Expired partitions: every row's created_at is older than the retention. */
static const char SQL_EXPIRED[] =
	"SELECT p.part::text, p.lo::text, p.hi::text, public.outboxd_outbox_unsent(p.part), "
	"       pg_total_relation_size(p.part), greatest(c.reltuples, 0)::bigint "
	"  FROM public.outboxd_outbox_partitions p JOIN pg_class c ON c.oid = p.part "
	" WHERE NOT p.is_default AND p.hi <= now() - make_interval(secs => $1::int) "
	" ORDER BY p.lo";

/* Upholds "a partition with an unsent row is never dropped": the function
 * detaches, then re-counts under the partition's ACCESS EXCLUSIVE lock, and
 * undoes the detach when it finds one. Its own short transaction. */
static const char SQL_DETACH[] = "SELECT public.outboxd_outbox_detach($1::regclass)";

/* Then, in a transaction of its own, drop what was detached (no lock on
 * public.outbox: the files go away while writers and relays carry on).
 * Also finishes a drop a dead janitor left half done. */
static const char SQL_DROP_DETACHED[] = "SELECT public.outboxd_outbox_drop_detached()";

/* One batch of the batched delete: the next delete_batch_size rows after
 * $1 in id order (a bounded index range scan, however big the table);
 * deletes those that are sent and older than the retention. Returns rows
 * deleted, the last id looked at, rows looked at, rows younger than the
 * retention, and old rows kept because unsent. Two copies: the table name
 * is not a parameter. */
#define SQL_BATCH_DELETE(table)                                                              \
	"WITH b AS (SELECT id, created_at, sent_at FROM " table                              \
	"            WHERE id > $1::bigint ORDER BY id LIMIT $2::int), "                      \
	"d AS (DELETE FROM " table " o USING b "                                              \
	"       WHERE o.id = b.id AND o.created_at = b.created_at "                           \
	"         AND b.sent_at IS NOT NULL AND o.sent_at IS NOT NULL "                       \
	"         AND b.created_at < now() - make_interval(secs => $3::int) RETURNING 1) "    \
	"SELECT (SELECT count(*) FROM d), coalesce((SELECT max(id) FROM b), $1::bigint), "    \
	"       (SELECT count(*) FROM b), "                                                   \
	"       (SELECT count(*) FROM b WHERE created_at >= now() - make_interval(secs => $3::int)), " \
	"       (SELECT count(*) FROM b WHERE sent_at IS NULL "                               \
	"           AND created_at < now() - make_interval(secs => $3::int))"

static const char SQL_DELETE_PLAIN[] = SQL_BATCH_DELETE("public.outbox");
static const char SQL_DELETE_DEFAULT[] = SQL_BATCH_DELETE("public.outbox_default");

/* Dry run: what the batched delete would remove now, and keep. */
#define SQL_COUNT_OLD(table)                                                                 \
	"SELECT count(*) FILTER (WHERE sent_at IS NOT NULL), count(*) FILTER (WHERE sent_at IS NULL) " \
	"  FROM " table " WHERE created_at < now() - make_interval(secs => $1::int)"

static const char SQL_COUNT_PLAIN[] = SQL_COUNT_OLD("public.outbox");
static const char SQL_COUNT_DEFAULT[] = SQL_COUNT_OLD("public.outbox_default");

static const char SQL_HAS_DEFAULT[] = "SELECT to_regclass('public.outbox_default') IS NOT NULL";

static void cleanup_action(struct outbox_cleanup_report *rep, const char *action,
			   const char *part, json_t *extra)
{
	json_t *a = json_pack("{s:s, s:s}", "action", action, "table", part);

	if (a != NULL && extra != NULL)
		json_object_update(a, extra);
	json_decref(extra);
	if (a != NULL)
		json_array_append_new(rep->actions, a);
}

static bool cleanup_budget_left(const struct conf *c, int64_t t0)
{
	return util_mono_ms() - t0 < c->cleanup_round_budget_ms;
}

/* Create the partitions ahead. False only on a database error other than
 * a lock timeout. */
static bool cleanup_ensure(PGconn *conn, const struct conf *c, struct outbox_cleanup_report *rep,
			   struct db_err *e)
{
	char step[16], ahead[16];
	const char *params[3] = { step, ahead, rep->dry_run ? "true" : "false" };
	PGresult *res;
	bool ok = false;

	snprintf(step, sizeof step, "%d", c->cleanup_partition_interval_s);
	snprintf(ahead, sizeof ahead, "%d", c->cleanup_partitions_ahead);
	res = db_query(conn, SQL_ENSURE, 3, params, PGRES_TUPLES_OK, e);
	if (res == NULL) {
		if (strcmp(e->sqlstate, DB_LOCK_NOT_AVAILABLE) == 0) {
			log_warn("creating partitions ahead: lock not granted within %d ms; "
				 "next round", c->cleanup_lock_timeout_ms);
			rep->busy++;
			cleanup_action(rep, "busy", "public.outbox", json_pack("{s:s}", "what",
									     "create partitions"));
			ok = true;
		}
		goto out;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		const char *name = PQgetvalue(res, i, 0), *lo = PQgetvalue(res, i, 1);
		const char *hi = PQgetvalue(res, i, 2), *status = PQgetvalue(res, i, 3);

		if (strcmp(status, "refused") == 0) {
			log_warn("NOT creating partition %s [%s, %s): %s; its rows stay in "
				 "public.outbox_default", name, lo, hi, PQgetvalue(res, i, 4));
			rep->refused++;
			cleanup_action(rep, "refuse-create", name,
				       json_pack("{s:s, s:s, s:s}", "lo", lo, "hi", hi, "reason",
						 PQgetvalue(res, i, 4)));
			continue;
		}
		rep->created++;
		if (!rep->dry_run)
			log_info("created partition %s [%s, %s)", name, lo, hi);
		cleanup_action(rep, rep->dry_run ? "would-create" : "create", name,
			       json_pack("{s:s, s:s}", "lo", lo, "hi", hi));
	}
	ok = true;
out:
	PQclear(res);
	return ok;
}

/* Drop every expired partition without unsent rows; log each refusal. */
static bool cleanup_drop_expired(PGconn *conn, const struct conf *c, int64_t t0,
				 struct outbox_cleanup_report *rep, struct db_err *e)
{
	char ret[16];
	const char *params[1] = { ret };
	PGresult *list = NULL, *res = NULL;
	bool ok = false;

	snprintf(ret, sizeof ret, "%d", c->cleanup_retention_s);
	list = db_query(conn, SQL_EXPIRED, 1, params, PGRES_TUPLES_OK, e);
	if (list == NULL)
		goto out;
	for (int i = 0; i < PQntuples(list); i++) {
		const char *part = PQgetvalue(list, i, 0), *lo = PQgetvalue(list, i, 1);
		const char *hi = PQgetvalue(list, i, 2);
		long long unsent = atoll(PQgetvalue(list, i, 3));
		long long bytes = atoll(PQgetvalue(list, i, 4)), rows = atoll(PQgetvalue(list, i, 5));
		const char *dp[1] = { part };

		if (unsent > 0) {
			log_warn("NOT dropping partition %s [%s, %s): it holds %lld unsent row(s) "
				 "(older than the retention; is a relay running?)", part, lo, hi,
				 unsent);
			rep->refused++;
			rep->kept_unsent += unsent;
			cleanup_action(rep, "refuse-drop", part,
				       json_pack("{s:s, s:s, s:I}", "lo", lo, "hi", hi, "unsent",
						 (json_int_t)unsent));
			continue;
		}
		if (!cleanup_budget_left(c, t0)) {
			rep->budget_hit = true;
			break;
		}
		if (rep->dry_run) {
			rep->dropped++;
			rep->freed_bytes += bytes;
			cleanup_action(rep, "would-drop", part,
				       json_pack("{s:s, s:s, s:I, s:I}", "lo", lo, "hi", hi, "rows",
						 (json_int_t)rows, "bytes", (json_int_t)bytes));
			continue;
		}
		res = db_query(conn, SQL_DETACH, 1, dp, PGRES_TUPLES_OK, e);
		if (res == NULL) {
			if (strcmp(e->sqlstate, DB_LOCK_NOT_AVAILABLE) != 0)
				goto out;
			log_warn("partition %s: lock not granted within %d ms; drop retried next "
				 "round", part, c->cleanup_lock_timeout_ms);
			rep->busy++;
			cleanup_action(rep, "busy", part, json_pack("{s:s}", "what", "drop"));
			continue;
		}
		unsent = atoll(PQgetvalue(res, 0, 0));
		PQclear(res);
		res = NULL;
		if (unsent > 0) {
			log_warn("NOT dropping partition %s [%s, %s): %lld unsent row(s) found "
				 "under its lock; kept", part, lo, hi, unsent);
			rep->refused++;
			rep->kept_unsent += unsent;
			cleanup_action(rep, "refuse-drop", part,
				       json_pack("{s:s, s:s, s:I}", "lo", lo, "hi", hi, "unsent",
						 (json_int_t)unsent));
			continue;
		}
		if (!db_run(conn, SQL_DROP_DETACHED, 0, NULL, e)) {
			log_warn("partition %s [%s, %s) detached (it held no unsent row) but not "
				 "dropped yet: %s; next round", part, lo, hi, e->msg);
			goto out;
		}
		log_info("dropped partition %s [%s, %s): %lld bytes, %lld sent rows by the "
			 "planner's estimate", part, lo, hi, bytes, rows);
		rep->dropped++;
		rep->freed_bytes += bytes;
		cleanup_action(rep, "drop", part,
			       json_pack("{s:s, s:s, s:I, s:I}", "lo", lo, "hi", hi, "rows",
					 (json_int_t)rows, "bytes", (json_int_t)bytes));
	}
	ok = true;
out:
	PQclear(res);
	PQclear(list);
	return ok;
}

/* Batched delete of old sent rows from table (public.outbox when it is
 * not partitioned, public.outbox_default when it is). */
static bool cleanup_delete(PGconn *conn, const struct conf *c, int64_t t0, bool plain,
			   struct outbox_cleanup_report *rep, struct db_err *e)
{
	const char *table = plain ? "public.outbox" : "public.outbox_default";
	char last[32] = "0", batch[16], ret[16];
	const char *params[3] = { last, batch, ret };
	long long deleted = 0, kept = 0;
	int batches = 0;
	PGresult *res = NULL;
	bool ok = false;

	snprintf(batch, sizeof batch, "%d", c->cleanup_delete_batch);
	snprintf(ret, sizeof ret, "%d", c->cleanup_retention_s);
	if (rep->dry_run) {
		const char *cp[1] = { ret };

		res = db_query(conn, plain ? SQL_COUNT_PLAIN : SQL_COUNT_DEFAULT, 1, cp,
			       PGRES_TUPLES_OK, e);
		if (res == NULL)
			goto out;
		deleted = atoll(PQgetvalue(res, 0, 0));
		kept = atoll(PQgetvalue(res, 0, 1));
	} else {
		for (;;) {
			long long n, looked, newer;

			if (!cleanup_budget_left(c, t0)) {
				rep->budget_hit = true;
				break;
			}
			res = db_query(conn, plain ? SQL_DELETE_PLAIN : SQL_DELETE_DEFAULT, 3,
				       params, PGRES_TUPLES_OK, e);
			if (res == NULL)
				goto out;
			batches++;
			n = atoll(PQgetvalue(res, 0, 0));
			snprintf(last, sizeof last, "%s", PQgetvalue(res, 0, 1));
			looked = atoll(PQgetvalue(res, 0, 2));
			newer = atoll(PQgetvalue(res, 0, 3));
			kept += atoll(PQgetvalue(res, 0, 4));
			deleted += n;
			PQclear(res);
			res = NULL;
			if (looked < c->cleanup_delete_batch || newer > 0)
				break;
		}
	}
	rep->deleted += deleted;
	rep->kept_unsent += kept;
	if (!rep->dry_run && (deleted > 0 || kept > 0))
		log_info("%s: deleted %lld sent rows older than %d s in %d batch(es)%s", table,
			 deleted, c->cleanup_retention_s, batches,
			 rep->budget_hit ? " (round budget reached; more next round)" : "");
	if (kept > 0)
		log_warn("%s: %lld unsent row(s) older than the retention kept (is a relay "
			 "running?)", table, kept);
	if (deleted > 0 || kept > 0 || rep->dry_run)
		cleanup_action(rep, rep->dry_run ? "would-delete" : "delete", table,
			       json_pack("{s:I, s:I}", "rows", (json_int_t)deleted, "kept_unsent",
					 (json_int_t)kept));
	ok = true;
out:
	PQclear(res);
	return ok;
}

bool outbox_cleanup_round(PGconn *conn, const struct conf *c, bool dry_run,
			  struct outbox_cleanup_report *rep, char *err, size_t errlen)
{
	char ns[16], id[16], lt[16];
	const char *lock_params[2] = { ns, id }, *lt_params[1] = { lt };
	struct db_err e = { .msg = "" };
	PGresult *res = NULL;
	int64_t t0 = util_mono_ms();
	bool locked = false, ok = false, plain, has_default = false;

	memset(rep, 0, sizeof *rep);
	rep->dry_run = dry_run;
	rep->actions = json_array();
	if (rep->actions == NULL) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	snprintf(ns, sizeof ns, "%d", OUTBOX_CLEANUP_LOCK_NS);
	snprintf(id, sizeof id, "%d", OUTBOX_CLEANUP_LOCK_ID);
	snprintf(lt, sizeof lt, "%d", c->cleanup_lock_timeout_ms);
	res = db_query(conn, SQL_TRY_LOCK, 2, lock_params, PGRES_TUPLES_OK, &e);
	if (res == NULL)
		goto out;
	locked = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	res = NULL;
	if (!locked) {
		rep->skipped = true;
		log_info("another janitor holds the cleanup lock; skipping this round");
		ok = true;
		goto out;
	}
	if (!db_run(conn, SQL_LOCK_TIMEOUT, 1, lt_params, &e) ||
	    (res = db_query(conn, SQL_RELKIND, 0, NULL, PGRES_TUPLES_OK, &e)) == NULL)
		goto out;
	if (PQntuples(res) == 0) {
		snprintf(e.msg, sizeof e.msg, "public.outbox does not exist (run outboxctl migrate)");
		goto out;
	}
	rep->partitioned = strcmp(PQgetvalue(res, 0, 0), "p") == 0;
	plain = !rep->partitioned;
	PQclear(res);
	res = NULL;
	if (rep->partitioned && !rep->dry_run) {
		res = db_query(conn, SQL_DROP_DETACHED, 0, NULL, PGRES_TUPLES_OK, &e);
		if (res == NULL)
			goto out;
		for (int i = 0; i < PQntuples(res); i++)
			log_info("dropped %s, detached by an earlier round that did not finish",
				 PQgetvalue(res, i, 0));
		PQclear(res);
		res = NULL;
	}
	if (rep->partitioned) {
		if (!cleanup_ensure(conn, c, rep, &e) || !cleanup_drop_expired(conn, c, t0, rep, &e))
			goto out;
		res = db_query(conn, SQL_HAS_DEFAULT, 0, NULL, PGRES_TUPLES_OK, &e);
		if (res == NULL)
			goto out;
		has_default = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		PQclear(res);
		res = NULL;
	}
	if ((plain || has_default) && !cleanup_delete(conn, c, t0, plain, rep, &e))
		goto out;
	ok = true;
out:
	PQclear(res);
	if (!ok)
		snprintf(err, errlen, "%s", e.msg);
	if (locked && !db_lost(conn) && !db_run(conn, SQL_UNLOCK, 2, lock_params, NULL))
		log_debug("cleanup lock not released (it goes with the session)");
	rep->elapsed_ms = util_mono_ms() - t0;
	return ok;
}

void outbox_cleanup_report_free(struct outbox_cleanup_report *rep)
{
	json_decref(rep->actions);
	rep->actions = NULL;
}
