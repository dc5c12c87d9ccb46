/* outboxctl migrate: apply the compiled-in sql/ files that have not been
 * applied yet, each in its own transaction, recording it by name. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "db.h"
#include "sql_files.h"

/* Serializes concurrent migrates (session lock, released at disconnect). */
static const char SQL_LOCK[] = "SELECT pg_advisory_lock(727000, 1)";

static const char SQL_VERSIONS[] =
	"CREATE TABLE IF NOT EXISTS public.outboxd_migrations ("
	" name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())";

static const char SQL_APPLIED[] = "SELECT 1 FROM public.outboxd_migrations WHERE name = $1";
static const char SQL_RECORD[] = "INSERT INTO public.outboxd_migrations (name) VALUES ($1)";

/* Apply one file on conn unless recorded there. Returns 1 applied, 0 already
 * there, -1 failed (message printed, transaction rolled back). */
static int migrate_one(PGconn *conn, const struct sql_file *f)
{
	const char *params[1] = { f->name };
	struct db_err e;
	PGresult *res = NULL;
	int rc = -1;

	if (!db_begin(conn, &e) ||
	    (res = db_query(conn, SQL_APPLIED, 1, params, PGRES_TUPLES_OK, &e)) == NULL)
		goto out;
	if (PQntuples(res) > 0) {
		rc = 0;
		goto out;
	}
	/* The file as one simple query: it may hold several statements. */
	if (!db_run(conn, f->text, 0, NULL, &e) || !db_run(conn, SQL_RECORD, 1, params, &e) ||
	    !db_commit(conn, &e))
		goto out;
	rc = 1;
out:
	PQclear(res);
	if (rc < 0)
		fprintf(stderr, "outboxctl: migration %s failed: %s\n", f->name, e.msg);
	db_rollback(conn);
	return rc;
}

/* Move an unpartitioned outbox to the partitioned layout (no-op when it
 * already is), keeping every unsent row; see outboxd_outbox_partition() in
 * sql/003_outbox_cleanup.sql. One transaction, so a failure changes nothing. */
static const char SQL_PARTITION[] =
	"SELECT copied, kept_old FROM public.outboxd_outbox_partition($1::int, $2::int, $3::int)";
static const char SQL_ENSURE[] =
	"SELECT count(*) FROM public.outboxd_outbox_ensure($1::int, $2::int)";
static const char SQL_LOCK_TIMEOUT[] = "SELECT set_config('lock_timeout', $1, true)";
/* The refused-row column, index and trigger on the new table after a
 * conversion (sql/008_outbox_refused.sql). */
static const char SQL_REFUSED_SETUP[] = "SELECT public.outboxd_outbox_refused_setup()";
/* ... and, first, the re-check's index (sql/010_outbox_unsent_aggregate.sql). */
static const char SQL_UNSENT_AGGREGATE_SETUP[] =
	"SELECT public.outboxd_outbox_unsent_aggregate_setup()";
static const char SQL_IS_PARTITIONED[] =
	"SELECT c.relkind = 'p' FROM pg_class c WHERE c.oid = to_regclass('public.outbox')";

/* Returns 1 converted, 0 nothing to do, -1 failed (message printed). */
static int migrate_partition(PGconn *conn, const struct conf *c, bool *kept_old,
			     long long *copied)
{
	char step[16], ahead[16], ret[16], lt[16];
	const char *params[3] = { step, ahead, ret }, *lt_params[1] = { lt };
	struct db_err e = { .msg = "" };
	PGresult *res = NULL;
	int rc = -1;

	snprintf(step, sizeof step, "%d", c->cleanup_partition_interval_s);
	snprintf(ahead, sizeof ahead, "%d", c->cleanup_partitions_ahead);
	snprintf(ret, sizeof ret, "%d", c->cleanup_retention_s);
	res = db_query(conn, SQL_IS_PARTITIONED, 0, NULL, PGRES_TUPLES_OK, &e);
	if (res == NULL)
		goto out;
	if (PQntuples(res) != 1) {
		snprintf(e.msg, sizeof e.msg, "public.outbox does not exist");
		goto out;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
		/* Already partitioned: make sure the partitions ahead exist. */
		if (!db_run(conn, SQL_ENSURE, 2, params, &e))
			goto out;
		rc = 0;
		goto out;
	}
	PQclear(res);
	res = NULL;
	/* Writers queue behind the conversion's lock while it waits for it:
	 * wait at most [cleanup] lock_timeout_ms, then fail (retry later). */
	snprintf(lt, sizeof lt, "%d", c->cleanup_lock_timeout_ms);
	if (!db_begin(conn, &e) || !db_run(conn, SQL_LOCK_TIMEOUT, 1, lt_params, &e) ||
	    (res = db_query(conn, SQL_PARTITION, 3, params, PGRES_TUPLES_OK, &e)) == NULL)
		goto out;
	*copied = atoll(PQgetvalue(res, 0, 0));
	*kept_old = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	if (!db_run(conn, SQL_UNSENT_AGGREGATE_SETUP, 0, NULL, &e) ||
	    !db_run(conn, SQL_REFUSED_SETUP, 0, NULL, &e) || !db_commit(conn, &e))
		goto out;
	rc = 1;
out:
	if (rc < 0)
		fprintf(stderr, "outboxctl: migrate: partitioning public.outbox failed: %s%s\n", e.msg,
			strcmp(e.sqlstate, DB_LOCK_NOT_AVAILABLE) == 0
				? " (its lock was not granted within [cleanup] lock_timeout_ms; "
				  "run migrate again)" : "");
	PQclear(res);
	db_rollback(conn);
	return rc;
}

static bool migrate_prepare(PGconn *conn)
{
	struct db_err e;

	if (db_run(conn, SQL_LOCK, 0, NULL, &e) &&
	    db_run(conn, "SET client_min_messages = warning", 0, NULL, &e) &&
	    db_run(conn, SQL_VERSIONS, 0, NULL, &e))
		return true;
	fprintf(stderr, "outboxctl: migrate: %s\n", e.msg);
	return false;
}

int ctl_migrate(struct ctl *ctl)
{
	const char *db_ci = ctl->conf.db_conninfo, *sink_ci = conf_sink_conninfo(&ctl->conf);
	PGconn *db = ctl_connect(db_ci, "outbox"), *sink = NULL;
	int applied = 0, rc = 1;
	bool partitioned = false;

	if (db == NULL)
		return 1;
	if (strcmp(db_ci, sink_ci) == 0)
		sink = db;
	else if ((sink = ctl_connect(sink_ci, "consumer")) == NULL)
		goto out;
	if (!migrate_prepare(db) || (sink != db && !migrate_prepare(sink)))
		goto out;
	for (int i = 0; i < sql_nfiles; i++) {
		const struct sql_file *f = &sql_files[i];
		int r = migrate_one(strstr(f->name, "_sink") != NULL ? sink : db, f);

		if (r < 0)
			goto out;
		if (r > 0) {
			applied++;
			if (!ctl->json)
				printf("applied %s\n", f->name);
		}
	}
	if (ctl->conf.cleanup_partitioned) {
		bool kept_old = false;
		long long copied = 0;
		int r = migrate_partition(db, &ctl->conf, &kept_old, &copied);

		if (r < 0)
			goto out;
		if (r > 0) {
			partitioned = true;
			if (!ctl->json)
				printf("partitioned public.outbox by created_at (%d s partitions); "
				       "%lld row(s) carried over%s\n",
				       ctl->conf.cleanup_partition_interval_s, copied,
				       kept_old ? "; the sent rows older than the retention stay in "
				       "public.outbox_pre_partition (drop it when you no longer need "
				       "them)" : "");
		}
	}
	if (ctl->json)
		printf("{\"applied\": %d, \"migrations\": %d, \"partitioned_now\": %s}\n",
		       applied, sql_nfiles, partitioned ? "true" : "false");
	else if (applied == 0 && !partitioned)
		printf("schema up to date (%d migrations)\n", sql_nfiles);
	rc = 0;
out:
	if (sink != NULL && sink != db)
		PQfinish(sink);
	PQfinish(db);
	return rc;
}
