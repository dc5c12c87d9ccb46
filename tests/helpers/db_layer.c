/* common/db against the real PostgreSQL of tests/t/106_db_layer.t (the
 * conninfo in argv[1]); prints TAP. */
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "tap.h"

static int notices;

static void count_notice(void *arg, const PGresult *res)
{
	(void)arg;
	(void)res;
	notices++;
}

/* One value of a one-row query, "" when it failed. */
static const char *one(PGconn *conn, const char *sql, char *out, size_t outlen)
{
	struct db_err e;
	PGresult *res = db_query(conn, sql, 0, NULL, PGRES_TUPLES_OK, &e);

	snprintf(out, outlen, "%s", res != NULL && PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
	if (res == NULL)
		diag("%s: %s", sql, e.msg);
	PQclear(res);
	return out;
}

int main(int argc, char **argv)
{
	char ci[1024], v[256], pid[32];
	const char *p1[1];
	struct db_conn_opts app = { .appname = "t106-app" };
	struct db_conn_opts quick = { .appname = "t106-quick", .timeout_s = 3 };
	struct db_conn_opts repl = { .appname = "t106-repl", .replication = true };
	struct db_conn_opts nojit = { .appname = "t106-nojit", .no_jit = true };
	struct db_err e;
	PGconn *conn, *victim;
	PGresult *res;

	if (argc != 2)
		skip_all("usage: db_layer CONNINFO");

	/* (a) connect: the user's conninfo stays, application_name is ours. */
	snprintf(ci, sizeof ci, "%s application_name=user-app options='-c search_path=t106'",
		 argv[1]);
	conn = db_open(ci, &app, &e);
	if (!ok(conn != NULL, "db_open connects"))
		diag("%s", e.msg);
	if (conn == NULL)
		return done_testing();
	is_str(one(conn, "SELECT current_setting('application_name')", v, sizeof v), "t106-app",
	       "application_name is the one given, over the conninfo's");
	is_str(one(conn, "SHOW search_path", v, sizeof v), "t106",
	       "the conninfo's own options stay");
	PQfinish(conn);
	conn = db_open(ci, &quick, &e);
	ok(conn != NULL, "db_open with a timeout connects");
	is_str(one(conn, "SHOW statement_timeout", v, sizeof v), "3s", "  statement_timeout set");
	is_str(one(conn, "SHOW search_path", v, sizeof v), "t106", "  the user's options kept");
	PQfinish(conn);
	conn = db_open(ci, &nojit, &e);
	ok(conn != NULL, "db_open with no_jit connects");
	is_str(one(conn, "SHOW jit", v, sizeof v), "off", "  jit off");
	is_str(one(conn, "SHOW search_path", v, sizeof v), "t106", "  the user's options kept");
	PQfinish(conn);
	conn = db_open(argv[1], &repl, &e);
	ok(conn != NULL, "db_open with replication connects");
	res = db_query(conn, "IDENTIFY_SYSTEM", 0, NULL, PGRES_TUPLES_OK, &e);
	ok(res != NULL && PQntuples(res) == 1, "  a replication connection (IDENTIFY_SYSTEM)");
	PQclear(res);
	PQfinish(conn);
	conn = db_open_retry(argv[1], &app, "t106", NULL);
	if (conn == NULL)
		return done_testing();
	ok(1, "db_open_retry connects");
	PQsetNoticeReceiver(conn, count_notice, NULL);

	/* (b) statements. */
	p1[0] = NULL;
	res = db_query(conn, "SELECT $1::text IS NULL", 1, p1, PGRES_TUPLES_OK, &e);
	ok(res != NULL && strcmp(PQgetvalue(res, 0, 0), "t") == 0, "a NULL parameter is SQL NULL");
	PQclear(res);
	ok(db_run(conn, "CREATE TEMP TABLE t106 (id int PRIMARY KEY); SELECT 1", 0, NULL, &e),
	   "db_run: several statements without parameters");
	p1[0] = "1";
	ok(db_run(conn, "INSERT INTO t106 VALUES ($1::int)", 1, p1, &e), "db_run with a parameter");
	memset(&e, 0, sizeof e);
	ok(!db_run(conn, "INSERT INTO t106 VALUES ($1::int)", 1, p1, &e), "a duplicate key fails");
	is_str(e.sqlstate, DB_UNIQUE_VIOLATION, "  SQLSTATE 23505 (unique_violation)");
	ok(strstr(e.msg, "duplicate key") != NULL && strchr(e.msg, '\n') == NULL,
	   "  the server's message, on one line");
	ok(!e.lost, "  the connection is not lost");
	res = db_query(conn, "SELEC 1", 0, NULL, PGRES_TUPLES_OK, &e);
	ok(res == NULL, "a syntax error fails");
	is_str(e.sqlstate, "42601", "  SQLSTATE 42601 (syntax_error)");
	res = db_query(conn, "SELECT 1", 0, NULL, PGRES_COMMAND_OK, &e);
	ok(res == NULL, "rows where a command was wanted fail");
	is_str(e.msg, "unexpected result PGRES_TUPLES_OK", "  and say so");
	ok(db_prepare(conn, "t106_get", "SELECT count(*) FROM t106 WHERE id = $1::int", 1, &e),
	   "db_prepare");
	res = db_query_prepared(conn, "t106_get", 1, p1, NULL, NULL, PGRES_TUPLES_OK, &e);
	ok(res != NULL && strcmp(PQgetvalue(res, 0, 0), "1") == 0, "db_query_prepared");
	PQclear(res);
	res = db_query_prepared(conn, "t106_none", 1, p1, NULL, NULL, PGRES_TUPLES_OK, &e);
	ok(res == NULL && strcmp(e.sqlstate, "26000") == 0, "  an unknown statement: 26000");

	/* (c) transactions. */
	p1[0] = "2";
	ok(db_begin(conn, &e) && db_run(conn, "INSERT INTO t106 VALUES ($1::int)", 1, p1, &e),
	   "db_begin, then a statement");
	db_rollback(conn);
	is_str(one(conn, "SELECT count(*) FROM t106", v, sizeof v), "1", "db_rollback undid it");
	ok(PQtransactionStatus(conn) == PQTRANS_IDLE, "  and left the session idle");
	ok(db_begin(conn, &e) && !db_run(conn, "SELECT 1/0", 0, NULL, &e) &&
	   PQtransactionStatus(conn) == PQTRANS_INERROR, "a failed statement in a transaction");
	is_str(e.sqlstate, "22012", "  SQLSTATE 22012");
	db_rollback(conn);
	ok(PQtransactionStatus(conn) == PQTRANS_IDLE, "db_rollback ends a failed transaction");
	notices = 0;
	db_rollback(conn);
	is_int(notices, 0, "db_rollback when idle sends nothing (no \"no transaction\" warning)");
	ok(db_begin(conn, &e) && db_run(conn, "INSERT INTO t106 VALUES ($1::int)", 1, p1, &e) &&
	   db_commit(conn, &e), "db_begin, db_commit");
	is_str(one(conn, "SELECT count(*) FROM t106", v, sizeof v), "2", "  committed");

	/* (d) a pipeline: a transaction in one round trip, and one that fails
	 * in its middle. */
	{
		const char *p10[] = { "10" }, *p11[] = { "11" }, *p12[] = { "12" };
		struct db_step good[] = {
			{ .sql = "BEGIN", .want = PGRES_COMMAND_OK },
			{ .sql = "INSERT INTO t106 VALUES ($1::int)", .n = 1, .params = p10,
			  .want = PGRES_COMMAND_OK },
			{ .name = "t106_get", .n = 1, .params = p10, .want = PGRES_TUPLES_OK,
			  .keep = true },
			{ .sql = "COMMIT", .want = PGRES_COMMAND_OK },
		};
		struct db_step bad[] = {
			{ .sql = "BEGIN", .want = PGRES_COMMAND_OK },
			{ .sql = "INSERT INTO t106 VALUES ($1::int)", .n = 1, .params = p11,
			  .want = PGRES_COMMAND_OK, .keep = true },
			{ .sql = "INSERT INTO t106 VALUES ($1::int)", .n = 1, .params = p11,
			  .want = PGRES_COMMAND_OK },
			{ .sql = "INSERT INTO t106 VALUES ($1::int)", .n = 1, .params = p12,
			  .want = PGRES_COMMAND_OK },
			{ .sql = "COMMIT", .want = PGRES_COMMAND_OK },
		};

		ok(db_pipeline(conn, good, 4, &e), "db_pipeline: BEGIN, INSERT, a prepared SELECT, COMMIT");
		ok(good[2].res != NULL && strcmp(PQgetvalue(good[2].res, 0, 0), "1") == 0,
		   "  the kept result is the SELECT's");
		ok(good[1].res == NULL, "  a step not kept hands back nothing");
		PQclear(good[2].res);
		ok(PQtransactionStatus(conn) == PQTRANS_IDLE && PQpipelineStatus(conn) == PQ_PIPELINE_OFF,
		   "  committed, idle, out of pipeline mode");
		is_str(one(conn, "SELECT count(*) FROM t106 WHERE id = 10", v, sizeof v), "1",
		       "  the row is there");
		ok(!db_pipeline(conn, bad, 5, &e), "db_pipeline with a duplicate key in its middle fails");
		is_str(e.sqlstate, "23505", "  with the failed step's SQLSTATE");
		ok(bad[1].res == NULL, "  and keeps no result, not even a success's");
		ok(PQtransactionStatus(conn) == PQTRANS_INERROR, "  the transaction is left failed");
		db_rollback(conn);
		is_str(one(conn, "SELECT count(*) FROM t106 WHERE id IN (11, 12)", v, sizeof v), "0",
		       "  db_rollback: neither the step before nor the one after it stayed");
	}
	PQfinish(conn);

	/* A connection lost in the middle of a transaction. */
	victim = db_open(argv[1], &app, &e);
	conn = db_open(argv[1], NULL, &e);
	if (victim == NULL || conn == NULL)
		return done_testing();
	snprintf(pid, sizeof pid, "%d", PQbackendPID(victim));
	ok(db_begin(victim, &e), "a transaction on the victim");
	p1[0] = pid;
	ok(db_run(conn, "SELECT pg_terminate_backend($1::int, 5000)", 1, p1, &e),
	   "pg_terminate_backend");
	memset(&e, 0, sizeof e);
	res = db_query(victim, "SELECT 1", 0, NULL, PGRES_TUPLES_OK, &e);
	ok(res == NULL, "the next statement fails");
	ok(e.lost && db_lost(victim), "  the connection is lost");
	ok(e.msg[0] != '\0' && strchr(e.msg, '\n') == NULL, "  with a one-line message");
	diag("lost: '%s' (SQLSTATE '%s')", e.msg, e.sqlstate);
	db_rollback(victim);
	ok(db_lost(victim), "db_rollback after the loss is harmless");
	ok(!db_commit(victim, &e) && e.lost, "db_commit after the loss fails, lost");
	{
		struct db_step one_step[] = { { .sql = "SELECT 1", .want = PGRES_TUPLES_OK } };

		memset(&e, 0, sizeof e);
		ok(!db_pipeline(victim, one_step, 1, &e) && e.lost, "db_pipeline after the loss fails, lost");
	}
	PQfinish(victim);
	PQfinish(conn);
	return done_testing();
}
