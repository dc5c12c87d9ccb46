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

/* ---- errors -------------------------------------------------------------- */

void db_err_fill(struct db_err *e, PGconn *conn, const PGresult *res)
{
	const char *msg = res != NULL ? PQresultErrorMessage(res) : "";
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	size_t n;

	if (e == NULL)
		return;
	if ((msg == NULL || *msg == '\0') && res != NULL && PQresultStatus(res) != PGRES_FATAL_ERROR)
		/* A status nobody asked for (rows from a command, ...): say so
		 * rather than show the connection's last, older, message. */
		snprintf(e->msg, sizeof e->msg, "unexpected result %s", PQresStatus(PQresultStatus(res)));
	else
		snprintf(e->msg, sizeof e->msg, "%s",
			 msg != NULL && *msg != '\0' ? msg
			 : conn != NULL ? PQerrorMessage(conn) : "no connection");
	n = strlen(e->msg);
	while (n > 0 && (e->msg[n - 1] == '\n' || e->msg[n - 1] == ' '))
		e->msg[--n] = '\0';
	for (char *p = e->msg; *p != '\0'; p++)
		if (*p == '\n')
			*p = ' ';
	snprintf(e->sqlstate, sizeof e->sqlstate, "%s", state != NULL ? state : "");
	e->lost = db_lost(conn);
}

bool db_lost(PGconn *conn)
{
	return conn == NULL || PQstatus(conn) != CONNECTION_OK;
}

/* ---- connecting ----------------------------------------------------------- */

/* The user's own options (from conninfo) with the settings o asks for
 * added after them, so ours win; into opt, which is returned. */
static const char *db_options(const char *conninfo, const struct db_conn_opts *o, char *opt,
			      size_t optlen)
{
	PQconninfoOption *parsed = PQconninfoParse(conninfo, NULL);
	size_t n = 0;

	opt[0] = '\0';
	for (const PQconninfoOption *p = parsed; p != NULL && p->keyword != NULL; p++)
		if (strcmp(p->keyword, "options") == 0 && p->val != NULL)
			db_put(opt, optlen, &n, p->val);
	PQconninfoFree(parsed);
	if (o->no_jit)
		db_put(opt, optlen, &n, n > 0 ? " -c jit=off" : "-c jit=off");
	if (o->timeout_s > 0) {
		char st[48];

		snprintf(st, sizeof st, "%s-c statement_timeout=%d", n > 0 ? " " : "",
			 o->timeout_s * 1000);
		db_put(opt, optlen, &n, st);
	}
	return opt;
}

PGconn *db_open(const char *conninfo, const struct db_conn_opts *o, struct db_err *e)
{
	static const struct db_conn_opts plain = { 0 };
	const char *keys[6], *vals[6];
	char t[16], opt[1024];
	struct db_err scratch;
	PGconn *conn;
	int k = 0;

	if (o == NULL)
		o = &plain;
	if (e == NULL)
		e = &scratch;
	if (!db_conninfo_check(conninfo, e->msg, sizeof e->msg)) {
		e->sqlstate[0] = '\0';
		e->lost = true;
		return NULL;
	}
	/* The user's conninfo first (expanded), then what we set over it. */
	keys[k] = "dbname";
	vals[k++] = conninfo;
	if (o->appname != NULL) {
		keys[k] = "application_name";
		vals[k++] = o->appname;
	}
	if (o->replication) {
		keys[k] = "replication";
		vals[k++] = "database";
	}
	if (o->timeout_s > 0) {
		snprintf(t, sizeof t, "%d", o->timeout_s);
		keys[k] = "connect_timeout";
		vals[k++] = t;
	}
	if (o->timeout_s > 0 || o->no_jit) {
		keys[k] = "options";
		vals[k++] = db_options(conninfo, o, opt, sizeof opt);
	}
	keys[k] = NULL;
	vals[k] = NULL;
	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL) {
		snprintf(e->msg, sizeof e->msg, "out of memory");
		e->sqlstate[0] = '\0';
		e->lost = true;
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		db_err_fill(e, conn, NULL);
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

PGconn *db_open_retry(const char *conninfo, const struct db_conn_opts *o, const char *what,
		      volatile sig_atomic_t *stop)
{
	long delay_ms = 100;
	int attempt = 0;

	while (stop == NULL || !*stop) {
		struct db_err e;
		PGconn *conn = db_open(conninfo, o, &e);

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
				 what, masked, e.msg, delay_ms, attempt);
		}
		for (long slept = 0; slept < delay_ms && (stop == NULL || !*stop); slept += 50) {
			struct timespec ts = { 0, 50 * 1000000L };

			nanosleep(&ts, NULL);
		}
		delay_ms = delay_ms * 2 > 5000 ? 5000 : delay_ms * 2;
	}
	return NULL;
}

/* ---- statements ----------------------------------------------------------- */

/* res when its status is want (or, with any_ok, a command or rows), else
 * NULL with e filled and res cleared. */
static PGresult *db_check(PGconn *conn, PGresult *res, ExecStatusType want, bool any_ok,
			  struct db_err *e)
{
	ExecStatusType st = PQresultStatus(res);

	if (st == want || (any_ok && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)))
		return res;
	db_err_fill(e, conn, res);
	PQclear(res);
	return NULL;
}

static PGresult *db_send(PGconn *conn, const char *sql, int n, const char *const *params)
{
	if (n == 0)
		return PQexec(conn, sql);
	return PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
}

PGresult *db_query(PGconn *conn, const char *sql, int n, const char *const *params,
		   ExecStatusType want, struct db_err *e)
{
	return db_check(conn, db_send(conn, sql, n, params), want, false, e);
}

PGresult *db_query_prepared(PGconn *conn, const char *name, int n, const char *const *params,
			    const int *lengths, const int *formats, ExecStatusType want,
			    struct db_err *e)
{
	return db_check(conn, PQexecPrepared(conn, name, n, params, lengths, formats, 0), want,
			false, e);
}

bool db_run(PGconn *conn, const char *sql, int n, const char *const *params, struct db_err *e)
{
	PGresult *res = db_check(conn, db_send(conn, sql, n, params), PGRES_COMMAND_OK, true, e);

	PQclear(res);
	return res != NULL;
}

bool db_run_prepared(PGconn *conn, const char *name, int n, const char *const *params,
		     struct db_err *e)
{
	PGresult *res = db_check(conn, PQexecPrepared(conn, name, n, params, NULL, NULL, 0),
				 PGRES_COMMAND_OK, true, e);

	PQclear(res);
	return res != NULL;
}

bool db_send_run(PGconn *conn, const char *sql, int n, const char *const *params,
		 struct db_err *e)
{
	if (PQsendQueryParams(conn, sql, n, NULL, params, NULL, NULL, 0))
		return true;
	db_err_fill(e, conn, NULL);
	return false;
}

bool db_busy(PGconn *conn)
{
	return PQconsumeInput(conn) != 0 && PQisBusy(conn);
}

bool db_collect(PGconn *conn, struct db_err *e)
{
	PGresult *res;
	bool ok = true;

	while ((res = PQgetResult(conn)) != NULL) {
		ExecStatusType st = PQresultStatus(res);

		if (ok && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			db_err_fill(e, conn, res);
			ok = false;
		}
		PQclear(res);
	}
	if (ok && db_lost(conn)) {
		db_err_fill(e, conn, NULL);
		ok = false;
	}
	return ok;
}

static bool db_pipeline_send(PGconn *conn, const struct db_step *s, int n)
{
	for (int i = 0; i < n; i++) {
		int sent = s[i].name != NULL
				   ? PQsendQueryPrepared(conn, s[i].name, s[i].n, s[i].params, NULL,
							 NULL, 0)
				   : PQsendQueryParams(conn, s[i].sql, s[i].n, NULL, s[i].params, NULL,
						       NULL, 0);
		if (!sent)
			return false;
	}
	return PQpipelineSync(conn) == 1;
}

/* Step s's result, checked (into e and *failed when it is the first that
 * failed), then the NULL that ends it. False when the connection gave out. */
static bool db_pipeline_take(PGconn *conn, struct db_step *s, bool *failed, struct db_err *e)
{
	PGresult *res = PQgetResult(conn);
	ExecStatusType st = PQresultStatus(res);

	if (res == NULL) {
		if (!*failed)
			db_err_fill(e, conn, NULL);
		*failed = true;
		return false;
	}
	if (!*failed && st != s->want) {
		db_err_fill(e, conn, res); /* a later step's is PGRES_PIPELINE_ABORTED */
		*failed = true;
	}
	if (!*failed && s->keep)
		s->res = res;
	else
		PQclear(res);
	while ((res = PQgetResult(conn)) != NULL) /* one result per step; the NULL after it */
		PQclear(res);
	return true;
}

bool db_pipeline(PGconn *conn, struct db_step *s, int n, struct db_err *e)
{
	bool failed = false, whole = true;
	PGresult *sync;
	int i;

	for (i = 0; i < n; i++)
		s[i].res = NULL;
	if (!PQenterPipelineMode(conn) || !db_pipeline_send(conn, s, n)) {
		db_err_fill(e, conn, NULL);
		(void)PQexitPipelineMode(conn);
		return false;
	}
	/* Every result is read, past a failed step too (PostgreSQL answers each
	 * skipped one with PGRES_PIPELINE_ABORTED), so the session is idle
	 * again; only a connection that gave out stops the reading. */
	for (i = 0; whole && i < n; i++)
		whole = db_pipeline_take(conn, &s[i], &failed, e);
	sync = whole ? PQgetResult(conn) : NULL;
	if (whole && PQresultStatus(sync) != PGRES_PIPELINE_SYNC && !failed) {
		db_err_fill(e, conn, sync);
		failed = true;
	}
	PQclear(sync);
	if (!PQexitPipelineMode(conn) && !failed) {
		db_err_fill(e, conn, NULL);
		failed = true;
	}
	if (!failed)
		return true;
	for (i = 0; i < n; i++) {
		PQclear(s[i].res);
		s[i].res = NULL;
	}
	return false;
}

bool db_prepare(PGconn *conn, const char *name, const char *sql, int n, struct db_err *e)
{
	PGresult *res = db_check(conn, PQprepare(conn, name, sql, n, NULL), PGRES_COMMAND_OK,
				 false, e);

	PQclear(res);
	return res != NULL;
}

/* ---- transactions --------------------------------------------------------- */

bool db_begin(PGconn *conn, struct db_err *e)
{
	return db_run(conn, "BEGIN", 0, NULL, e);
}

bool db_commit(PGconn *conn, struct db_err *e)
{
	return db_run(conn, "COMMIT", 0, NULL, e);
}

void db_rollback(PGconn *conn)
{
	PGTransactionStatusType ts = conn != NULL ? PQtransactionStatus(conn) : PQTRANS_UNKNOWN;

	if (db_lost(conn) || (ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR))
		return;
	PQclear(PQexec(conn, "ROLLBACK"));
}

/* ---- a message into a plain buffer -------------------------------------- */

void db_error(PGconn *conn, const PGresult *res, char *err, size_t errlen)
{
	struct db_err e;

	db_err_fill(&e, conn, res);
	snprintf(err, errlen, "%s", e.msg);
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
