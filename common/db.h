#ifndef OUTBOXD_DB_H
#define OUTBOXD_DB_H

#include <libpq-fe.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* conninfo (key/value string or URI) for a log line, as libpq parses it:
 * every setting it names, the password as ****; a string libpq cannot
 * parse is not shown at all. Always NUL-terminates out. */
void db_conninfo_masked(const char *conninfo, char *out, size_t outlen);

/* Check conninfo with libpq's own parser (unknown keyword, unterminated
 * quote, bad URI). False with libpq's message, its quoted fragments (maybe
 * a piece of a password) left out. */
bool db_conninfo_check(const char *conninfo, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* ---- errors ---------------------------------------------------------------
 *
 * What a failed call says: libpq's message on one line (no newline), the
 * server's SQLSTATE ("" when it sent none: a client-side failure), and
 * whether the connection is gone (the caller reconnects). Every call below
 * that fails fills one and has already cleared the failed result, so an
 * error is never read from a cleared PGresult. Branch on sqlstate, never on
 * msg. */
struct db_err {
	char msg[1024];
	char sqlstate[6];
	bool lost;
};

/* SQLSTATEs the code branches on. */
#define DB_UNIQUE_VIOLATION "23505"
#define DB_UNDEFINED_TABLE "42P01"
#define DB_DUPLICATE_OBJECT "42710"
#define DB_LOCK_NOT_AVAILABLE "55P03"

/* SQLSTATE classes (the first two characters) the code branches on. */
#define DB_CLASS_DATA_EXCEPTION "22"

/* Fill e (when not NULL) from res, or from conn when res is NULL or holds
 * no message. For the paths that get results themselves (PQgetResult,
 * PQconsumeInput); the caller still clears res. */
void db_err_fill(struct db_err *e, PGconn *conn, const PGresult *res);

/* True when the connection is gone (NULL or CONNECTION_BAD). */
bool db_lost(PGconn *conn);

/* ---- connecting --------------------------------------------------------- */

/* How to connect, on top of the user's conninfo (which stays authoritative
 * for everything else). Zero-initialised (or a NULL pointer) is plain. */
struct db_conn_opts {
	const char *appname; /* application_name; NULL: whatever conninfo says */
	bool replication;    /* replication=database: a logical replication stream */
	int timeout_s;       /* > 0: connect_timeout and statement_timeout (probes) */
	bool no_jit;         /* jit=off: worker sessions whose batch statements cross
			      * jit_above_cost yet run in milliseconds */
};

/* One attempt: conninfo (key/value string or URI) checked by libpq's parser,
 * then PQconnectdbParams with expand_dbname. Returns the connection (the
 * caller owns it: PQfinish), or NULL with e (may be NULL) filled. */
PGconn *db_open(const char *conninfo, const struct db_conn_opts *o, struct db_err *e)
	__attribute__((warn_unused_result));

/* db_open until it works or *stop (may be NULL) becomes non-zero, with
 * capped exponential backoff (100 ms doubling to 5 s); the first failure and
 * every tenth are logged as "what: cannot connect to ..." with the password
 * masked. Returns NULL only when stopped. */
PGconn *db_open_retry(const char *conninfo, const struct db_conn_opts *o, const char *what,
		      volatile sig_atomic_t *stop) __attribute__((warn_unused_result));

/* ---- statements ---------------------------------------------------------
 *
 * Values go as text parameters ($1..$n, a NULL pointer is SQL NULL). With
 * n == 0 the SQL goes as a simple query, so it may hold several statements
 * (a migration file) and works on a replication connection. */

/* Run sql; returns its result when the status is want (the caller clears
 * it), else NULL with e filled and the result cleared. */
PGresult *db_query(PGconn *conn, const char *sql, int n, const char *const *params,
		   ExecStatusType want, struct db_err *e) __attribute__((warn_unused_result));

/* The same for a statement prepared on conn (db_prepare), for hot paths.
 * lengths and formats as PQexecPrepared's (NULL: every parameter text). */
PGresult *db_query_prepared(PGconn *conn, const char *name, int n, const char *const *params,
			    const int *lengths, const int *formats, ExecStatusType want,
			    struct db_err *e) __attribute__((warn_unused_result));

/* Run sql when no result is wanted: true when it succeeded (command or
 * rows, the result cleared), false with e filled. */
bool db_run(PGconn *conn, const char *sql, int n, const char *const *params, struct db_err *e)
	__attribute__((warn_unused_result));

/* db_run for a statement prepared on conn (text parameters). */
bool db_run_prepared(PGconn *conn, const char *name, int n, const char *const *params,
		     struct db_err *e) __attribute__((warn_unused_result));

/* Without waiting: one statement in flight on conn at a time. db_send_run
 * sends sql (text parameters) and returns at once (false with e filled
 * when it could not be sent); db_busy reads what arrived and says whether
 * it still runs (a lost connection is not busy); db_collect waits for it
 * and takes every result: true when it succeeded (command or rows), false
 * with e filled (also when the connection is gone). */
bool db_send_run(PGconn *conn, const char *sql, int n, const char *const *params,
		 struct db_err *e) __attribute__((warn_unused_result));
bool db_busy(PGconn *conn);
bool db_collect(PGconn *conn, struct db_err *e);

/* One statement of db_pipeline: the prepared statement name (or, when name
 * is NULL, sql), n text parameters, and the status it must return. With
 * keep, a success's result is handed back in res for the caller to clear. */
struct db_step {
	const char *name;
	const char *sql;
	int n;
	const char *const *params;
	ExecStatusType want;
	bool keep;
	PGresult *res; /* out */
};

/* The n steps sent at once and their results read in order: one round
 * trip for all of them (libpq's pipeline mode). True when each returned its
 * want. Else false with e of the first that did not; PostgreSQL skipped
 * the steps after it, a transaction they ran in is left failed (for
 * db_rollback), and no result is kept. */
bool db_pipeline(PGconn *conn, struct db_step *s, int n, struct db_err *e)
	__attribute__((warn_unused_result));

/* Prepare sql as name on conn (n parameters, types inferred). False with e
 * filled. */
bool db_prepare(PGconn *conn, const char *name, const char *sql, int n, struct db_err *e)
	__attribute__((warn_unused_result));

/* ---- transactions ------------------------------------------------------- */

/* BEGIN and COMMIT; false with e filled (after a failed COMMIT the
 * transaction is over: committed only if the connection died after the
 * server did it). */
bool db_begin(PGconn *conn, struct db_err *e) __attribute__((warn_unused_result));
bool db_commit(PGconn *conn, struct db_err *e) __attribute__((warn_unused_result));

/* ROLLBACK when conn is in a transaction (open or failed); a no-op when
 * the connection is gone, idle or busy. Safe on every cleanup path. */
void db_rollback(PGconn *conn);

/* db_err_fill's message into err: for code that reports other failures in
 * the same plain buffer (the CDC relay's replication stream). */
void db_error(PGconn *conn, const PGresult *res, char *err, size_t errlen);

/* ---- arrays ------------------------------------------------------------- */

/* One array parameter in PostgreSQL's text form ({"a","b",NULL}), built
 * element by element: every element quoted and escaped, so any text (and
 * NULL) goes through as it is. Zero-initialised is empty and ready;
 * db_array_clear starts a new one and keeps the memory. */
struct db_array {
	char *buf;
	size_t len, cap;
	int n;          /* elements so far */
	bool failed;    /* out of memory: db_array_text returns NULL */
};

void db_array_clear(struct db_array *a);
void db_array_add(struct db_array *a, const char *v); /* NULL: a NULL element */
void db_array_add_int(struct db_array *a, int64_t v);
/* The literal, valid until the next change; NULL when out of memory. */
const char *db_array_text(struct db_array *a) __attribute__((warn_unused_result));
void db_array_free(struct db_array *a);

#endif
