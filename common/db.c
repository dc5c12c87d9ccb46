#include "db.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

PGconn *db_connect(const char *conninfo, char *err, size_t errlen)
{
	PGconn *conn = PQconnectdb(conninfo);

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

			log_mask_conninfo(conninfo, masked, sizeof masked);
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
