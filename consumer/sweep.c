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

bool sweep_inbox(PGconn *conn, int hours, int batch, int max_batches, long max_ms, bool wait,
		 int64_t *deleted, bool *busy, bool *more, char state[6], char *err,
		 size_t errlen)
{
	char hours_s[16], batch_s[16];
	const char *params[2] = { hours_s, batch_s };
	int64_t t0 = util_mono_ms();
	struct db_err e;
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
		if (!db_begin(conn, &e) ||
		    (res = db_query(conn, wait ? SQL_WAIT_LOCK : SQL_TRY_LOCK, 0, NULL,
				    PGRES_TUPLES_OK, &e)) == NULL)
			goto out;
		if (!wait && strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
			PQclear(res);
			res = NULL;
			db_rollback(conn);
			*busy = true;
			break;
		}
		PQclear(res);
		res = db_query(conn, SQL_SWEEP, 2, params, PGRES_COMMAND_OK, &e);
		if (res == NULL)
			goto out;
		got = strtol(PQcmdTuples(res), NULL, 10);
		PQclear(res);
		res = NULL;
		if (!db_commit(conn, &e))
			goto out;
		*deleted += got;
		if (got < batch)
			break;
	}
	ok = true;
out:
	if (!ok) {
		snprintf(err, errlen, "%s", e.msg);
		snprintf(state, 6, "%s", e.sqlstate);
		db_rollback(conn);
	}
	PQclear(res);
	return ok;
}
