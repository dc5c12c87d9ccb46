/* common/db without a server: every failure fills the error struct (one
 * line, no SQLSTATE, the connection lost), nothing touches a connection
 * that is not there, and a rollback on one is harmless. The same calls
 * against a real PostgreSQL: tests/t/106_db_layer.t. */
#include <signal.h>
#include <string.h>

#include "db.h"
#include "tap.h"

/* An error as every caller may rely on: a message of one line, lost. */
static void one_line_lost(const struct db_err *e, const char *desc)
{
	if (!ok(e->msg[0] != '\0' && strchr(e->msg, '\n') == NULL && e->lost &&
		e->sqlstate[0] == '\0', desc))
		diag("msg '%s' sqlstate '%s' lost %d", e->msg, e->sqlstate, e->lost);
}

int main(void)
{
	struct db_err e;
	volatile sig_atomic_t stop = 1;
	PGconn *conn;
	PGresult *res;

	memset(&e, 'x', sizeof e);
	conn = db_open("host=db password=s3cret bogus", NULL, &e);
	ok(conn == NULL, "a conninfo libpq cannot parse: no connection");
	one_line_lost(&e, "  a one-line message, no SQLSTATE, lost");
	ok(strstr(e.msg, "s3cret") == NULL, "  the message does not show the password");

	memset(&e, 0, sizeof e);
	conn = db_open("host=/nonexistent/outboxd-007 port=1 password=s3cret", NULL, &e);
	ok(conn == NULL, "nobody there: no connection");
	one_line_lost(&e, "  a one-line message, lost");
	ok(db_open("host=/nonexistent/outboxd-007 port=1", NULL, NULL) == NULL,
	   "  and a NULL error struct is fine");
	ok(db_open_retry("host=/nonexistent/outboxd-007 port=1", NULL, "t007", &stop) == NULL,
	   "db_open_retry returns NULL at once when already stopped");

	memset(&e, 0, sizeof e);
	res = db_query(NULL, "SELECT 1", 0, NULL, PGRES_TUPLES_OK, &e);
	ok(res == NULL, "db_query without a connection: NULL");
	one_line_lost(&e, "  a one-line message, lost");
	ok(!db_run(NULL, "SELECT $1", 1, (const char *[]){ "x" }, &e), "db_run: false");
	ok(!db_prepare(NULL, "s", "SELECT 1", 0, &e), "db_prepare: false");
	ok(db_query_prepared(NULL, "s", 0, NULL, NULL, NULL, PGRES_TUPLES_OK, &e) == NULL,
	   "db_query_prepared: NULL");
	ok(!db_begin(NULL, &e) && !db_commit(NULL, NULL), "db_begin, db_commit: false");
	db_rollback(NULL);
	ok(1, "db_rollback without a connection: a no-op");

	/* A connection that failed (the handle is there, the server is not). */
	conn = PQconnectdb("host=/nonexistent/outboxd-007 port=1");
	ok(conn != NULL && db_lost(conn), "a failed connection is lost");
	memset(&e, 0, sizeof e);
	ok(db_query(conn, "SELECT $1::int", 1, (const char *[]){ NULL }, PGRES_TUPLES_OK, &e) ==
	   NULL, "db_query on it: NULL");
	one_line_lost(&e, "  a one-line message, lost");
	db_rollback(conn);
	ok(db_lost(conn), "db_rollback on it: a no-op");
	PQfinish(conn);

	/* A result of a status nobody asked for says so. */
	res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	db_err_fill(&e, NULL, res);
	is_str(e.msg, "unexpected result PGRES_TUPLES_OK", "a wrong status is named");
	db_err_fill(NULL, NULL, res);
	ok(1, "db_err_fill with no struct: nothing");
	PQclear(res);
	return done_testing();
}
