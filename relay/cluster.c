#include "cluster.h"

#include <stdio.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "util.h"

#define CLUSTER_LOG_EVERY_MS 30000  /* the mismatch ERROR repeats this often */

/* The recorded cluster: the one row (the boolean primary key allows no
 * second). */
static const char SQL_READ[] =
	"SELECT cluster_id, accepted_at::text, accepted_by FROM public.outboxd_kafka_cluster";

/* Record the first cluster: a row that exists (another relay was quicker,
 * or an operator accepted one) is left alone. */
static const char SQL_RECORD[] =
	"INSERT INTO public.outboxd_kafka_cluster (cluster_id, accepted_by) VALUES ($1, $2)"
	" ON CONFLICT (one) DO NOTHING";

/* accept-cluster: lock the row (if any) so two accepts serialize, then
 * replace it. */
static const char SQL_LOCK[] =
	"SELECT cluster_id, accepted_at::text, accepted_by FROM public.outboxd_kafka_cluster"
	" FOR UPDATE";
static const char SQL_REPLACE[] =
	"INSERT INTO public.outboxd_kafka_cluster (cluster_id, accepted_at, accepted_by)"
	" VALUES ($1, now(), $2) ON CONFLICT (one) DO UPDATE SET cluster_id = EXCLUDED.cluster_id,"
	" accepted_at = EXCLUDED.accepted_at, accepted_by = EXCLUDED.accepted_by";

void cluster_guard_init(struct cluster_guard *g, int relay_id, const char *brokers)
{
	memset(g, 0, sizeof *g);
	g->relay_id = relay_id;
	g->brokers = brokers;
	g->changes = kafka_cluster_changes();
}

/* Run sql (rows expected) and copy its first row into rec; rec->id "" when
 * there is none. */
static bool cluster_fetch(PGconn *conn, const char *sql, struct cluster_record *rec,
			  char *err, size_t errlen)
{
	struct db_err e;
	PGresult *res = db_query(conn, sql, 0, NULL, PGRES_TUPLES_OK, &e);

	memset(rec, 0, sizeof *rec);
	if (res == NULL) {
		snprintf(err, errlen, "%s%s", e.msg, strcmp(e.sqlstate, DB_UNDEFINED_TABLE) == 0
			 ? " (run outboxctl migrate: the Kafka cluster guard needs sql/005)" : "");
		return false;
	}
	if (PQntuples(res) == 1) {
		snprintf(rec->id, sizeof rec->id, "%s", PQgetvalue(res, 0, 0));
		snprintf(rec->accepted_at, sizeof rec->accepted_at, "%s", PQgetvalue(res, 0, 1));
		snprintf(rec->accepted_by, sizeof rec->accepted_by, "%s", PQgetvalue(res, 0, 2));
	}
	PQclear(res);
	return true;
}

bool cluster_read(PGconn *conn, struct cluster_record *rec, char *err, size_t errlen)
{
	return cluster_fetch(conn, SQL_READ, rec, err, errlen);
}

/* Run a parameterized command expecting PGRES_COMMAND_OK. */
static bool cluster_command(PGconn *conn, const char *sql, const char *id, const char *by,
			    char *err, size_t errlen)
{
	const char *params[2] = { id, by };
	struct db_err e;

	if (db_run(conn, sql, 2, params, &e))
		return true;
	snprintf(err, errlen, "%s", e.msg);
	return false;
}

/* The recorded cluster, recording id first when there is none. */
static bool cluster_read_or_record(struct cluster_guard *g, PGconn *conn, const char *id,
				   struct cluster_record *rec, char *err, size_t errlen)
{
	char by[64];

	if (!cluster_read(conn, rec, err, errlen))
		return false;
	if (rec->id[0] != '\0')
		return true;
	snprintf(by, sizeof by, "relay %d first publish", g->relay_id);
	if (!cluster_command(conn, SQL_RECORD, id, by, err, errlen) ||
	    !cluster_read(conn, rec, err, errlen))
		return false;
	if (rec->id[0] == '\0') {
		snprintf(err, errlen, "public.outboxd_kafka_cluster is still empty after recording");
		return false;
	}
	if (strcmp(rec->accepted_by, by) == 0)
		log_info("recorded Kafka cluster %s (the broker at %s) as the cluster this outbox "
			 "publishes to", rec->id, g->brokers);
	return true;
}

enum cluster_verdict cluster_check(struct cluster_guard *g, PGconn *conn, rd_kafka_t *rk,
				   int timeout_ms, char *err, size_t errlen)
{
	char id[KAFKA_CLUSTER_ID_MAX];
	struct cluster_record rec;
	unsigned changes;
	bool swapped, newly;
	int64_t now;

	if (!kafka_cluster_id(rk, timeout_ms, id, sizeof id, err, errlen))
		return CLUSTER_UNKNOWN;
	changes = kafka_cluster_changes();
	if (!cluster_read_or_record(g, conn, id, &rec, err, errlen))
		return CLUSTER_UNKNOWN;
	swapped = changes != g->changes;
	g->changes = changes;
	if (g->rec.id[0] != '\0' && strcmp(g->rec.id, rec.id) != 0)
		log_info("the recorded Kafka cluster changed from %s to %s (accepted %s by %s)",
			 g->rec.id, rec.id, rec.accepted_at, rec.accepted_by);
	g->rec = rec;
	newly = strcmp(g->seen, id) != 0;
	snprintf(g->seen, sizeof g->seen, "%s", id);
	now = util_mono_ms();
	/* While blocked, the producer is re-created anyway: a swap it saw
	 * (the recorded cluster coming back) is no reason to stay blocked. */
	if (strcmp(id, rec.id) == 0 && (!swapped || g->blocked)) {
		if (!g->blocked)
			return CLUSTER_OK;
		log_info("Kafka cluster %s answers at %s again: publishing resumed (blocked for "
			 "%.1f s)", id, g->brokers, (double)(now - g->blocked_since_ms) / 1000.0);
		g->blocked = false;
		g->mismatch[0] = '\0';
		return CLUSTER_BACK;
	}
	if (strcmp(id, rec.id) == 0)
		snprintf(g->mismatch, sizeof g->mismatch,
			 "the broker at %s switched Kafka clusters since the last check (it reports "
			 "the recorded %s now): this batch is not trusted", g->brokers, id);
	else
		snprintf(g->mismatch, sizeof g->mismatch,
			 "the broker at %s belongs to Kafka cluster %s, not to the recorded %s "
			 "(accepted %s by %s): nothing is published or marked sent until %s answers "
			 "there again or the new one is accepted with `outboxctl accept-cluster`",
			 g->brokers, id, rec.id, rec.accepted_at, rec.accepted_by, rec.id);
	if (!g->blocked) {
		g->blocked_since_ms = now;
		g->logged_ms = 0;
	}
	if (!g->blocked || newly || now - g->logged_ms >= CLUSTER_LOG_EVERY_MS) {
		log_error("KAFKA CLUSTER MISMATCH: %s. Retrying with backoff; if the cluster "
			  "changed on purpose, run: outboxctl accept-cluster", g->mismatch);
		g->logged_ms = now;
	}
	g->blocked = true;
	return CLUSTER_OTHER;
}

const char *cluster_seen(const struct cluster_guard *g)
{
	return g->seen[0] != '\0' ? g->seen : NULL;
}

const char *cluster_mismatch(const struct cluster_guard *g)
{
	return g->blocked && g->mismatch[0] != '\0' ? g->mismatch : NULL;
}

bool cluster_accept(PGconn *conn, const char *id, const char *by, struct cluster_record *old,
		    char *err, size_t errlen)
{
	struct db_err e;

	if (!db_begin(conn, &e)) {
		snprintf(err, errlen, "%s", e.msg);
		return false;
	}
	if (!cluster_fetch(conn, SQL_LOCK, old, err, errlen) ||
	    !cluster_command(conn, SQL_REPLACE, id, by, err, errlen)) {
		db_rollback(conn);
		return false;
	}
	if (!db_commit(conn, &e)) {
		snprintf(err, errlen, "%s", e.msg);
		return false;
	}
	return true;
}

bool cluster_id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= KAFKA_CLUSTER_ID_MAX)
		return false;
	for (const char *p = s; *p != '\0'; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
			return false;
	return true;
}
