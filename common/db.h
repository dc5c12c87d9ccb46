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

/* One connection attempt. Returns the connection, or NULL with libpq's
 * message in err. The caller owns the connection (PQfinish). */
PGconn *db_connect(const char *conninfo, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* One attempt that gives up after timeout_s, its statements too (the
 * conninfo, string or URI, with connect_timeout and statement_timeout
 * added): for probes. NULL with the message in err. */
PGconn *db_connect_quick(const char *conninfo, int timeout_s, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Connect, retrying with capped exponential backoff (and saying so in the
 * log, password masked) until it works or *stop becomes non-zero. Returns
 * NULL only when stopped. what names the connection in the log. */
PGconn *db_connect_retry(const char *conninfo, const char *what,
			 volatile sig_atomic_t *stop) __attribute__((warn_unused_result));

/* Run a command without parameters (BEGIN, COMMIT, LISTEN ...) expecting
 * PGRES_COMMAND_OK or PGRES_TUPLES_OK. False with the message in err. */
bool db_exec(PGconn *conn, const char *sql, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* SQLSTATE of a result, "" when there is none. */
const char *db_sqlstate(const PGresult *res);

/* True when the connection is gone (the caller reconnects). */
bool db_lost(PGconn *conn);

/* Copy PQerrorMessage / PQresultErrorMessage into err without the newline. */
void db_error(PGconn *conn, const PGresult *res, char *err, size_t errlen);

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
