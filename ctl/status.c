/* outboxctl status and audit: what the pipeline is doing, and what the
 * consumers' sequence-gap detector has seen. */
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../relay/cluster.h"
#include "ctl.h"
#include "db.h"
#include "kafka.h"

static const char SQL_UNSENT[] =
	"SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::numeric(12,3)"
	" FROM public.outbox WHERE sent_at IS NULL";

/* Rows Kafka refused for good (sql/008_outbox_refused.sql): how many, how
 * many aggregates they hold up, how many events wait behind them, and the
 * oldest with its error. Reads the partial index outbox_refused. */
static const char SQL_REFUSED[] =
	"WITH r AS (SELECT id, aggregate_id, aggregate_seq, refused_at, last_error"
	"             FROM public.outbox WHERE refused_at IS NOT NULL AND sent_at IS NULL)"
	" SELECT (SELECT count(*) FROM r), (SELECT count(DISTINCT aggregate_id) FROM r),"
	"        (SELECT count(*) FROM public.outbox o WHERE o.sent_at IS NULL"
	"           AND o.refused_at IS NULL AND o.aggregate_id IN (SELECT aggregate_id FROM r)),"
	"        f.id, f.aggregate_id, f.aggregate_seq, f.refused_at, f.last_error"
	"   FROM (SELECT 1) one"
	"   LEFT JOIN LATERAL (SELECT * FROM r ORDER BY id LIMIT 1) f ON true";

static const char SQL_RELAYS[] =
	"SELECT relay_id, host, pid, mode, passes, published, acked, failed, marked,"
	" extract(epoch FROM now() - updated_at)::numeric(12,1), cluster_id, cluster_mismatch"
	" FROM public.outboxd_relays ORDER BY host, relay_id";

static const char SQL_CONSUMERS[] =
	"SELECT consumer_id, host, pid, received, applied, duplicates, gaps, poison, retries,"
	" reconnects, foreign_messages, foreign_partitions, extract(epoch FROM now() - updated_at)::numeric(12,1)"
	" FROM sink.consumers ORDER BY host, consumer_id";

/* The CDC relay's slot, if it exists: the WAL it holds back is what fills
 * disks when a slot is forgotten. */
static const char SQL_SLOT[] =
	"SELECT slot_name::text, active::text, coalesce(wal_status, '')::text,"
	" coalesce(confirmed_flush_lsn::text, ''),"
	" coalesce(((pg_current_wal_lsn() - restart_lsn) / 1048576)::numeric(14,1), -1),"
	" current_setting('max_slot_wal_keep_size')::text"
	" FROM pg_replication_slots WHERE slot_name = $1";

/* Put a result's rows into an array of objects named by its columns. */
static json_t *rows_json(const PGresult *res, const char *const *names)
{
	json_t *a = json_array();

	for (int r = 0; r < PQntuples(res); r++) {
		json_t *o = json_object();

		for (int c = 0; c < PQnfields(res); c++) {
			const char *v = PQgetvalue(res, r, c);

			if (PQgetisnull(res, r, c))
				json_object_set_new(o, names[c], json_null());
			else if (PQftype(res, c) == 25 /* text */ || PQftype(res, c) == 2950 /* uuid */ ||
				 PQftype(res, c) == 1184 /* timestamptz */)
				json_object_set_new(o, names[c], json_string(v));
			else
				json_object_set_new(o, names[c], json_real(atof(v)));
		}
		json_array_append_new(a, o);
	}
	return a;
}

/* The group's lag, with a handle of its own: -1 when Kafka did not answer.
 * The broker's cluster id goes to cid ("" when it did not say). */
static long long status_lag(const struct conf *c, char *cid, size_t cidlen, char *err,
			    size_t errlen)
{
	rd_kafka_t *rk = ctl_lag_open(c, err, errlen);
	long long lag;

	cid[0] = '\0';
	if (rk == NULL)
		return -1;
	if (!kafka_cluster_id(rk, 5000, cid, cidlen, err, errlen))
		cid[0] = '\0';
	lag = ctl_lag(rk, c->kafka_topic, err, errlen);
	rd_kafka_destroy(rk);
	return lag;
}

int ctl_status(struct ctl *ctl)
{
	static const char *const relay_cols[] = {
		"relay_id", "host", "pid", "mode", "passes", "published", "acked", "failed",
		"marked", "seconds_since_update", "cluster_id", "cluster_mismatch",
	};
	static const char *const slot_cols[] = {
		"slot_name", "active", "wal_status", "confirmed_flush_lsn", "retained_wal_mb",
		"max_slot_wal_keep_size",
	};
	static const char *const cons_cols[] = {
		"consumer_id", "host", "pid", "received", "applied", "duplicates", "gaps", "poison",
		"retries", "reconnects", "foreign_messages", "foreign_partitions",
		"seconds_since_update",
	};
	PGconn *db = ctl_connect(ctl->conf.db_conninfo, "outbox"), *sink = NULL;
	PGresult *unsent = NULL, *relays = NULL, *cons = NULL, *slot = NULL, *refused = NULL;
	const char *slot_params[1] = { ctl->conf.relay_slot };
	char kerr[512] = "", warning[512] = "", cerr[512] = "", cid[KAFKA_CLUSTER_ID_MAX] = "";
	char cwarn[KAFKA_CLUSTER_ID_MAX * 2 + 256] = "";
	struct cluster_record rec;
	struct db_err e;
	int blocked = 0;
	long long lag;
	int rc = 1;

	if (db == NULL)
		return 1;
	if (strcmp(ctl->conf.db_conninfo, conf_sink_conninfo(&ctl->conf)) == 0)
		sink = db;
	else if ((sink = ctl_connect(conf_sink_conninfo(&ctl->conf), "consumer")) == NULL)
		goto out;
	if ((unsent = db_query(db, SQL_UNSENT, 0, NULL, PGRES_TUPLES_OK, &e)) == NULL ||
	    (refused = db_query(db, SQL_REFUSED, 0, NULL, PGRES_TUPLES_OK, &e)) == NULL ||
	    (relays = db_query(db, SQL_RELAYS, 0, NULL, PGRES_TUPLES_OK, &e)) == NULL ||
	    (cons = db_query(sink, SQL_CONSUMERS, 0, NULL, PGRES_TUPLES_OK, &e)) == NULL ||
	    (slot = db_query(db, SQL_SLOT, 1, slot_params, PGRES_TUPLES_OK, &e)) == NULL) {
		fprintf(stderr, "outboxctl: %s\n", e.msg);
		goto out;
	}
	if (PQntuples(slot) == 1 && strcmp(PQgetvalue(slot, 0, 2), "lost") == 0)
		snprintf(warning, sizeof warning,
			 "slot %s is invalidated (wal_status lost): the CDC relay falls back to "
			 "polling and recreates it", ctl->conf.relay_slot);
	else if (PQntuples(slot) == 1 && atof(PQgetvalue(slot, 0, 4)) > ctl->conf.relay_wal_warn_mb)
		snprintf(warning, sizeof warning,
			 "slot %s retains %s MB of WAL, above [relay] wal_warn_mb = %d (the relay "
			 "gives it up above wal_budget_mb = %d)", ctl->conf.relay_slot,
			 PQgetvalue(slot, 0, 4), ctl->conf.relay_wal_warn_mb,
			 ctl->conf.relay_wal_budget_mb);
	if (!cluster_read(db, &rec, cerr, sizeof cerr)) {
		fprintf(stderr, "outboxctl: %s\n", cerr);
		goto out;
	}
	if (warning[0] != '\0')
		fprintf(stderr, "outboxctl: WARNING: %s\n", warning);
	lag = status_lag(&ctl->conf, cid, sizeof cid, kerr, sizeof kerr);
	if (rec.id[0] != '\0' && cid[0] != '\0' && strcmp(rec.id, cid) != 0)
		snprintf(cwarn, sizeof cwarn,
			 "the broker at %s belongs to Kafka cluster %s, not to the recorded %s: relays "
			 "publish nothing there (outboxctl accept-cluster makes it the recorded one)",
			 ctl->conf.kafka_brokers, cid, rec.id);
	for (int r = 0; r < PQntuples(relays); r++)
		if (!PQgetisnull(relays, r, 11)) {
			blocked++;
			fprintf(stderr, "outboxctl: WARNING: relay %s on %s is BLOCKED: %s\n",
				PQgetvalue(relays, r, 0), PQgetvalue(relays, r, 1),
				PQgetvalue(relays, r, 11));
		}
	if (cwarn[0] != '\0')
		fprintf(stderr, "outboxctl: WARNING: %s\n", cwarn);
	if (ctl->json) {
		json_t *o = json_object();
		char *s;

		json_object_set_new(o, "unsent", json_integer(atoll(PQgetvalue(unsent, 0, 0))));
		json_object_set_new(o, "oldest_unsent_seconds", json_real(atof(PQgetvalue(unsent, 0, 1))));
		json_object_set_new(o, "refused", json_integer(atoll(PQgetvalue(refused, 0, 0))));
		json_object_set_new(o, "refused_aggregates",
				    json_integer(atoll(PQgetvalue(refused, 0, 1))));
		json_object_set_new(o, "refused_waiting", json_integer(atoll(PQgetvalue(refused, 0, 2))));
		json_object_set_new(o, "oldest_refused",
				    PQgetisnull(refused, 0, 3) ? json_null() :
				    json_pack("{s:I, s:s, s:I, s:s, s:s}",
					      "id", (json_int_t)atoll(PQgetvalue(refused, 0, 3)),
					      "aggregate_id", PQgetvalue(refused, 0, 4),
					      "aggregate_seq", (json_int_t)atoll(PQgetvalue(refused, 0, 5)),
					      "refused_at", PQgetvalue(refused, 0, 6),
					      "last_error", PQgetvalue(refused, 0, 7)));
		json_object_set_new(o, "relays", rows_json(relays, relay_cols));
		json_object_set_new(o, "kafka_cluster",
				    rec.id[0] == '\0' ? json_null() :
				    json_pack("{s:s, s:s, s:s}", "cluster_id", rec.id, "accepted_at",
					      rec.accepted_at, "accepted_by", rec.accepted_by));
		json_object_set_new(o, "broker_cluster_id", cid[0] ? json_string(cid) : json_null());
		json_object_set_new(o, "relays_blocked", json_integer(blocked));
		json_object_set_new(o, "consumers", rows_json(cons, cons_cols));
		json_object_set_new(o, "consumer_lag", lag >= 0 ? json_integer(lag) : json_null());
		if (PQntuples(slot) == 1) {
			json_t *a = rows_json(slot, slot_cols);

			json_object_set(o, "slot", json_array_get(a, 0));
			json_decref(a);
		} else {
			json_object_set_new(o, "slot", json_null());
		}
		json_object_set_new(o, "warnings", json_array());
		if (warning[0] != '\0')
			json_array_append_new(json_object_get(o, "warnings"), json_string(warning));
		if (cwarn[0] != '\0')
			json_array_append_new(json_object_get(o, "warnings"), json_string(cwarn));
		for (int r = 0; r < PQntuples(relays); r++)
			if (!PQgetisnull(relays, r, 11))
				json_array_append_new(json_object_get(o, "warnings"),
						      json_pack("s++", "relay ", PQgetvalue(relays, r, 0),
								" is blocked on another Kafka cluster"));
		s = json_dumps(o, JSON_COMPACT);
		printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		printf("outbox: %s unsent, oldest %s s old\n", PQgetvalue(unsent, 0, 0),
		       PQgetvalue(unsent, 0, 1));
		if (!PQgetisnull(refused, 0, 3))
			printf("refused: %s rows Kafka will not take as they are, holding up %s "
			       "aggregates with %s more events behind them; oldest: id %s, %s #%s, "
			       "refused at %s: %s\n  (retried when its payload is updated, when "
			       "refused_at is set to NULL, or 10 minutes after the refusal)\n",
			       PQgetvalue(refused, 0, 0), PQgetvalue(refused, 0, 1),
			       PQgetvalue(refused, 0, 2), PQgetvalue(refused, 0, 3),
			       PQgetvalue(refused, 0, 4), PQgetvalue(refused, 0, 5),
			       PQgetvalue(refused, 0, 6), PQgetvalue(refused, 0, 7));
		if (rec.id[0] != '\0')
			printf("kafka cluster: %s (accepted %s by %s); the broker reports %s\n", rec.id,
			       rec.accepted_at, rec.accepted_by, cid[0] ? cid : "nothing (no answer)");
		else
			printf("kafka cluster: none recorded yet (the first relay to publish records "
			       "its broker's, %s)\n", cid[0] ? cid : "unknown now");
		printf("relays:\n  %-4s %-16s %-8s %-11s %9s %10s %10s %8s %10s %8s\n", "id", "host", "pid",
		       "mode", "passes", "published", "acked", "failed", "marked", "updated");
		for (int r = 0; r < PQntuples(relays); r++)
			printf("  %-4s %-16s %-8s %-11s %9s %10s %10s %8s %10s %6ss\n",
			       PQgetvalue(relays, r, 0), PQgetvalue(relays, r, 1), PQgetvalue(relays, r, 2),
			       PQgetvalue(relays, r, 3), PQgetvalue(relays, r, 4), PQgetvalue(relays, r, 5),
			       PQgetvalue(relays, r, 6), PQgetvalue(relays, r, 7), PQgetvalue(relays, r, 8),
			       PQgetvalue(relays, r, 9));
		for (int r = 0; r < PQntuples(relays); r++)
			if (!PQgetisnull(relays, r, 11))
				printf("  RELAY %s ON %s IS BLOCKED ON ANOTHER KAFKA CLUSTER: %s\n",
				       PQgetvalue(relays, r, 0), PQgetvalue(relays, r, 1),
				       PQgetvalue(relays, r, 11));
		printf("consumers:\n  %-4s %-16s %-8s %10s %10s %10s %6s %6s %8s %10s %8s %8s %8s\n",
		       "id", "host", "pid", "received", "applied", "duplicates", "gaps", "poison",
		       "retries", "reconnects", "foreign", "for.part", "updated");
		for (int r = 0; r < PQntuples(cons); r++)
			printf("  %-4s %-16s %-8s %10s %10s %10s %6s %6s %8s %10s %8s %8s %6ss\n",
			       PQgetvalue(cons, r, 0), PQgetvalue(cons, r, 1), PQgetvalue(cons, r, 2),
			       PQgetvalue(cons, r, 3), PQgetvalue(cons, r, 4), PQgetvalue(cons, r, 5),
			       PQgetvalue(cons, r, 6), PQgetvalue(cons, r, 7), PQgetvalue(cons, r, 8),
			       PQgetvalue(cons, r, 9), PQgetvalue(cons, r, 10),
			       PQgetvalue(cons, r, 11), PQgetvalue(cons, r, 12));
		if (PQntuples(slot) == 1)
			printf("cdc slot %s: active %s, wal_status %s, confirmed %s, retains %s MB of "
			       "WAL (max_slot_wal_keep_size %s)\n", PQgetvalue(slot, 0, 0),
			       PQgetvalue(slot, 0, 1), PQgetvalue(slot, 0, 2), PQgetvalue(slot, 0, 3),
			       PQgetvalue(slot, 0, 4), PQgetvalue(slot, 0, 5));
		if (warning[0] != '\0')
			printf("WARNING: %s\n", warning);
		if (cwarn[0] != '\0')
			printf("WARNING: %s\n", cwarn);
		if (lag >= 0)
			printf("consumer lag: %lld messages (group %s, topic %s)\n", lag,
			       ctl->conf.consumer_group, ctl->conf.kafka_topic);
		else
			printf("consumer lag: unknown (%s)\n", kerr);
	}
	rc = 0;
out:
	PQclear(unsent);
	PQclear(refused);
	PQclear(relays);
	PQclear(cons);
	PQclear(slot);
	if (sink != NULL && sink != db)
		PQfinish(sink);
	PQfinish(db);
	return rc;
}

/* --since takes a timestamp ("2026-11-23 10:00") or an interval ("10 min"). */
static const char SQL_AUDIT[] =
	"SELECT id, detected_at, kind, aggregate_id, expected_seq, got_seq, event_id,"
	" consumer_id, kafka_partition, kafka_offset, healed_at, detail"
	" FROM sink.ordering_audit"
	" WHERE ($1::text IS NULL OR detected_at >= CASE WHEN $1 ~ '^[0-9]{4}-'"
	"   THEN $1::timestamptz ELSE now() - $1::interval END)"
	"   AND ($2::text IS NULL OR kind = $2)"
	" ORDER BY id";

static const char SQL_AUDIT_SUMMARY[] =
	"SELECT kind, coalesce(consumer_id::text, '-'), count(*),"
	" count(*) FILTER (WHERE kind = 'gap' AND healed_at IS NULL),"
	" count(*) FILTER (WHERE kind = 'gap' AND healed_at IS NOT NULL)"
	" FROM sink.ordering_audit GROUP BY 1, 2 ORDER BY 1, 2";

int ctl_audit(struct ctl *ctl)
{
	static const char *const cols[] = {
		"id", "detected_at", "kind", "aggregate_id", "expected_seq", "got_seq", "event_id",
		"consumer_id", "kafka_partition", "kafka_offset", "healed_at", "detail",
	};
	const char *params[2] = { ctl->since, ctl->kind };
	PGconn *conn = ctl_connect(conf_sink_conninfo(&ctl->conf), "consumer");
	PGresult *rows = NULL, *sum = NULL;
	struct db_err e;
	int rc = 1;

	if (conn == NULL)
		return 1;
	if ((rows = db_query(conn, SQL_AUDIT, 2, params, PGRES_TUPLES_OK, &e)) == NULL ||
	    (sum = db_query(conn, SQL_AUDIT_SUMMARY, 0, NULL, PGRES_TUPLES_OK, &e)) == NULL) {
		fprintf(stderr, "outboxctl: %s\n", e.msg);
		goto out;
	}
	if (ctl->json) {
		json_t *a = rows_json(rows, cols);
		size_t i;
		json_t *o;

		json_array_foreach(a, i, o) {
			char *s = json_dumps(o, JSON_COMPACT);

			printf("%s\n", s);
			free(s);
		}
		json_decref(a);
	} else {
		printf("%-6s %-26s %-10s %-12s %8s %8s %-36s %4s %4s %8s %s\n", "id", "detected_at",
		       "kind", "order", "expected", "got", "event_id", "cons", "part", "offset",
		       "healed_at");
		for (int r = 0; r < PQntuples(rows); r++)
			printf("%-6s %-26.26s %-10s %-12s %8s %8s %-36s %4s %4s %8s %s\n",
			       PQgetvalue(rows, r, 0), PQgetvalue(rows, r, 1), PQgetvalue(rows, r, 2),
			       PQgetvalue(rows, r, 3), PQgetvalue(rows, r, 4), PQgetvalue(rows, r, 5),
			       PQgetvalue(rows, r, 6), PQgetvalue(rows, r, 7), PQgetvalue(rows, r, 8),
			       PQgetvalue(rows, r, 9),
			       PQgetisnull(rows, r, 10) ? (strcmp(PQgetvalue(rows, r, 2), "gap") == 0
							   ? "OPEN" : "")
							: PQgetvalue(rows, r, 10));
		printf("\nsummary (all time): kind, consumer, count, open gaps, healed gaps\n");
		for (int r = 0; r < PQntuples(sum); r++)
			printf("  %-10s consumer %-3s %8s %6s open %6s healed\n", PQgetvalue(sum, r, 0),
			       PQgetvalue(sum, r, 1), PQgetvalue(sum, r, 2), PQgetvalue(sum, r, 3),
			       PQgetvalue(sum, r, 4));
	}
	rc = 0;
out:
	PQclear(rows);
	PQclear(sum);
	PQfinish(conn);
	return rc;
}
