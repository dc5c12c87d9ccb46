#include "db.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* Append s to out (at *o), keeping room for the NUL. */
static void db_put(char *out, size_t outlen, size_t *o, const char *s)
{
	for (; *s != '\0' && *o + 1 < outlen; s++)
		out[(*o)++] = *s;
	out[*o] = '\0';
}

/* A libpq parse error with its quoted fragments replaced by "...": one may
 * be a piece of a value (missing "=" after "<word>"), so of a password. */
static void db_parse_error(const char *msg, char *err, size_t errlen)
{
	size_t o = 0;

	if (errlen == 0)
		return;
	err[0] = '\0';
	for (const char *p = msg; *p != '\0' && *p != '\n'; p++) {
		const char *close = *p == '"' ? strchr(p + 1, '"') : NULL;
		char c[2] = { *p, '\0' };

		if (close == NULL) {
			db_put(err, errlen, &o, c);
			continue;
		}
		/* "=" is libpq's own text; anything else may be the user's. */
		db_put(err, errlen, &o, close == p + 2 && p[1] == '=' ? "\"=\"" : "\"...\"");
		p = close;
	}
}

bool db_conninfo_check(const char *conninfo, char *err, size_t errlen)
{
	char *msg = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);

	if (opts == NULL) {
		db_parse_error(msg != NULL ? msg : "out of memory", err, errlen);
		PQfreemem(msg);
		return false;
	}
	PQconninfoFree(opts);
	return true;
}

void db_conninfo_masked(const char *conninfo, char *out, size_t outlen)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	size_t o = 0;

	if (outlen == 0)
		return;
	out[0] = '\0';
	if (opts == NULL) {
		db_put(out, outlen, &o, "(not a valid connection string; not shown)");
		return;
	}
	for (const PQconninfoOption *p = opts; p->keyword != NULL; p++) {
		if (p->val == NULL)
			continue;
		if (o > 0)
			db_put(out, outlen, &o, " ");
		db_put(out, outlen, &o, p->keyword);
		/* libpq marks its secrets ("*": password, sslpassword). */
		if (strchr(p->dispchar, '*') != NULL || strstr(p->keyword, "password") != NULL) {
			db_put(out, outlen, &o, "=****");
			continue;
		}
		db_put(out, outlen, &o, "='");
		for (const char *v = p->val; *v != '\0'; v++) {
			char c[3] = { *v, '\0', '\0' };

			if (*v == '\'' || *v == '\\') {
				c[0] = '\\';
				c[1] = *v;
			}
			db_put(out, outlen, &o, c);
		}
		db_put(out, outlen, &o, "'");
	}
	PQconninfoFree(opts);
}

/* conninfo checked, then connected with timeout_s > 0 added as
 * connect_timeout and statement_timeout (0: as it is). */
static PGconn *db_open(const char *conninfo, int timeout_s, char *err, size_t errlen)
{
	char t[16], opt[48];
	const char *keys[] = { "dbname", "connect_timeout", "options", NULL };
	const char *vals[] = { conninfo, t, opt, NULL };
	PGconn *conn;

	if (!db_conninfo_check(conninfo, err, errlen))
		return NULL;
	snprintf(t, sizeof t, "%d", timeout_s);
	snprintf(opt, sizeof opt, "-c statement_timeout=%d", timeout_s * 1000);
	if (timeout_s > 0)
		conn = PQconnectdbParams(keys, vals, 1);
	else
		conn = PQconnectdb(conninfo);
	if (conn == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		db_error(conn, NULL, err, errlen);
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

PGconn *db_connect(const char *conninfo, char *err, size_t errlen)
{
	return db_open(conninfo, 0, err, errlen);
}

PGconn *db_connect_quick(const char *conninfo, int timeout_s, char *err, size_t errlen)
{
	return db_open(conninfo, timeout_s > 0 ? timeout_s : 1, err, errlen);
}

PGconn *db_connect_retry(const char *conninfo, const char *what,
			 volatile sig_atomic_t *stop)
{
	long delay_ms = 100;
	int attempt = 0;

	while (stop == NULL || !*stop) {
		char err[512];
		PGconn *conn = db_connect(conninfo, err, sizeof err);

		if (conn != NULL) {
			if (attempt > 0)
				log_info("%s: connected after %d retries", what, attempt);
			return conn;
		}
		attempt++;
		if (attempt == 1 || attempt % 10 == 0) {
			char masked[1024];

			db_conninfo_masked(conninfo, masked, sizeof masked);
			log_warn("%s: cannot connect to \"%s\": %s; retrying in %ld ms (attempt %d)",
				 what, masked, err, delay_ms, attempt);
		}
		for (long slept = 0; slept < delay_ms && (stop == NULL || !*stop); slept += 50) {
			struct timespec ts = { 0, 50 * 1000000L };

			nanosleep(&ts, NULL);
		}
		delay_ms = delay_ms * 2 > 5000 ? 5000 : delay_ms * 2;
	}
	return NULL;
}

bool db_exec(PGconn *conn, const char *sql, char *err, size_t errlen)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);
	bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

	if (!ok)
		db_error(conn, res, err, errlen);
	PQclear(res);
	return ok;
}

const char *db_sqlstate(const PGresult *res)
{
	const char *s = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	return s != NULL ? s : "";
}

bool db_lost(PGconn *conn)
{
	return conn == NULL || PQstatus(conn) != CONNECTION_OK;
}

void db_error(PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
	const char *msg = res != NULL ? PQresultErrorMessage(res) : "";
	size_t n;

	if (msg == NULL || *msg == '\0')
		msg = conn != NULL ? PQerrorMessage(conn) : "no connection";
	snprintf(err, errlen, "%s", msg);
	n = strlen(err);
	while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
		err[--n] = '\0';
	for (char *p = err; *p != '\0'; p++)
		if (*p == '\n')
			*p = ' ';
}

/* ---- array parameters ---------------------------------------------------- */

/* Room for more bytes (and the closing "}" and NUL). */
static bool db_array_room(struct db_array *a, size_t more)
{
	size_t need = a->len + more + 2;
	char *n;

	if (a->failed)
		return false;
	if (need <= a->cap)
		return true;
	if (need < a->cap * 2)
		need = a->cap * 2;
	if (need < 256)
		need = 256;
	n = realloc(a->buf, need);
	if (n == NULL) {
		a->failed = true;
		return false;
	}
	a->buf = n;
	a->cap = need;
	return true;
}

void db_array_clear(struct db_array *a)
{
	a->len = 0;
	a->n = 0;
	a->failed = false;
}

/* The separator before an element ("{" before the first). */
static void db_array_sep(struct db_array *a)
{
	a->buf[a->len++] = a->n++ == 0 ? '{' : ',';
}

void db_array_add(struct db_array *a, const char *v)
{
	size_t vlen = v != NULL ? strlen(v) : 0;

	/* Worst case every byte escaped, two quotes, the separator. */
	if (!db_array_room(a, 2 * vlen + 8))
		return;
	db_array_sep(a);
	if (v == NULL) {
		memcpy(a->buf + a->len, "NULL", 4);
		a->len += 4;
		return;
	}
	a->buf[a->len++] = '"';
	for (; *v != '\0'; v++) {
		if (*v == '"' || *v == '\\')
			a->buf[a->len++] = '\\';
		a->buf[a->len++] = *v;
	}
	a->buf[a->len++] = '"';
}

void db_array_add_int(struct db_array *a, int64_t v)
{
	if (!db_array_room(a, 24))
		return;
	db_array_sep(a);
	a->len += (size_t)snprintf(a->buf + a->len, 22, "%" PRId64, v);
}

const char *db_array_text(struct db_array *a)
{
	if (!db_array_room(a, 2))
		return NULL;
	if (a->n == 0)
		memcpy(a->buf, "{}", 3);
	else {
		a->buf[a->len] = '}';
		a->buf[a->len + 1] = '\0';
	}
	return a->buf;
}

void db_array_free(struct db_array *a)
{
	free(a->buf);
	*a = (struct db_array){ 0 };
}
