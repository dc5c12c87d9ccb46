/* sweep: inbox retention (see sweep.h). */
#include "sweep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "util.h"

/* The sweepers' lock: (namespace of outboxd's locks, 3). Transaction
 * scoped, taken by each batch: two sweepers never delete at once. */
static const char SQL_TRY_LOCK[] = "SELECT pg_try_advisory_xact_lock(727000, 3)";
static const char SQL_WAIT_LOCK[] = "SELECT pg_advisory_xact_lock(727000, 3) IS NULL";

/* One batch: the oldest rows past the cut-off, by the received_at index,
 * skipping rows a consumer is inserting right now (it cannot be old). */
static const char SQL_SWEEP[] =
	"DELETE FROM sink.inbox WHERE event_id IN ("
	"  SELECT event_id FROM sink.inbox"
	"  WHERE received_at < now() - make_interval(hours => $1::int)"
	"  ORDER BY received_at LIMIT $2::int FOR UPDATE SKIP LOCKED)";

static void sweep_rollback(PGconn *conn)
{
	if (!db_lost(conn)) {
		PGresult *res = PQexec(conn, "ROLLBACK");

		PQclear(res);
	}
}

bool sweep_inbox(PGconn *conn, int hours, int batch, int max_batches, long max_ms, bool wait,
		 int64_t *deleted, bool *busy, bool *more, char state[6], char *err,
		 size_t errlen)
{
	char hours_s[16], batch_s[16];
	const char *params[2] = { hours_s, batch_s };
	int64_t t0 = util_mono_ms();
	PGresult *res = NULL;
	bool ok = false;

	*deleted = 0;
	*busy = false;
	*more = false;
	state[0] = '\0';
	snprintf(hours_s, sizeof hours_s, "%d", hours);
	snprintf(batch_s, sizeof batch_s, "%d", batch);
	for (int n = 0;; n++) {
		long got;

		if ((max_batches > 0 && n >= max_batches) ||
		    (max_ms > 0 && util_mono_ms() - t0 >= max_ms)) {
			*more = true;
			break;
		}
		res = PQexec(conn, "BEGIN");
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			goto out;
		PQclear(res);
		res = PQexec(conn, wait ? SQL_WAIT_LOCK : SQL_TRY_LOCK);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			goto out;
		if (!wait && strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
			PQclear(res);
			res = NULL;
			sweep_rollback(conn);
			*busy = true;
			break;
		}
		PQclear(res);
		res = PQexecParams(conn, SQL_SWEEP, 2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			goto out;
		got = strtol(PQcmdTuples(res), NULL, 10);
		PQclear(res);
		res = PQexec(conn, "COMMIT");
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			goto out;
		PQclear(res);
		res = NULL;
		*deleted += got;
		if (got < batch)
			break;
	}
	ok = true;
out:
	if (!ok) {
		db_error(conn, res, err, errlen);
		snprintf(state, 6, "%s", db_sqlstate(res));
		sweep_rollback(conn);
	}
	PQclear(res);
	return ok;
}
