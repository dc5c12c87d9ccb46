/* outboxctl verify: judge the pipeline from the database alone.
 *
 * committed: every (order, seq) with seq <= orders.version, i.e. every event
 *   the business side committed, whichever mode wrote it;
 * applied: distinct (order, seq) with a side_effects row;
 * lost: committed events with no side_effects row (of the outbox row's
 *   event id, where the outbox still has the row: an event applied under
 *   another event's id and seq does not count);
 * wrong_event_applied: side_effects rows whose (order, seq) belongs to
 *   another event id in the outbox (a forged or foreign message);
 * double_applied: (order, seq) with more than one side_effects row;
 * out_of_order: side_effects rows whose seq differs from their position in
 *   that order's application order (1, 2, 3 ...);
 * open_gaps / healed_gaps / duplicates_delivered: from sink.ordering_audit.
 * It needs the outbox and the sink in the same database. With --wait it asks
 * Kafka for the consumer group's lag too: what is missing is only judged
 * lost once the consumers have processed everything on the topic. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "db.h"
#include "util.h"

static const char SQL_VERIFY[] =
	"WITH committed AS ("
	"  SELECT o.id::text AS aggregate_id, s.seq, x.event_id"
	"  FROM public.orders o CROSS JOIN LATERAL generate_series(1, o.version) AS s(seq)"
	"  LEFT JOIN public.outbox x ON x.aggregate_type = 'order'"
	"    AND x.aggregate_id = o.id::text AND x.aggregate_seq = s.seq"
	"), applied AS ("
	"  SELECT aggregate_id, aggregate_seq, count(*) AS n"
	"  FROM sink.side_effects GROUP BY aggregate_id, aggregate_seq"
	"), ord AS ("
	"  SELECT aggregate_seq,"
	"         row_number() OVER (PARTITION BY aggregate_id ORDER BY id) AS pos"
	"  FROM sink.side_effects"
	") SELECT"
	" (SELECT count(*) FROM committed),"
	" (SELECT count(*) FROM applied),"
	" (SELECT count(*) FROM committed c WHERE NOT EXISTS (SELECT 1 FROM sink.side_effects e"
	"   WHERE e.aggregate_id = c.aggregate_id AND e.aggregate_seq = c.seq"
	"     AND (c.event_id IS NULL OR e.event_id = c.event_id))),"
	" (SELECT count(*) FROM applied WHERE n > 1),"
	" (SELECT count(*) FROM ord WHERE aggregate_seq <> pos),"
	" (SELECT count(*) FROM sink.ordering_audit WHERE kind = 'gap' AND healed_at IS NULL),"
	" (SELECT count(*) FROM sink.ordering_audit WHERE kind = 'gap' AND healed_at IS NOT NULL),"
	" (SELECT count(*) FROM sink.ordering_audit WHERE kind = 'duplicate'),"
	" (SELECT count(*) FROM public.outbox),"
	" (SELECT count(*) FROM public.outbox WHERE sent_at IS NULL),"
	" (SELECT count(*) FROM committed c JOIN sink.side_effects e"
	"   ON e.aggregate_id = c.aggregate_id AND e.aggregate_seq = c.seq"
	"   WHERE c.event_id IS NOT NULL AND e.event_id <> c.event_id)";

enum { V_COMMITTED, V_APPLIED, V_LOST, V_DOUBLE, V_OOO, V_OPEN, V_HEALED, V_DUPS,
       V_OUTBOX, V_UNSENT, V_WRONG, V_N };

static const char *const v_names[V_N] = {
	"committed", "applied", "lost", "double_applied", "out_of_order", "open_gaps",
	"healed_gaps", "duplicates_delivered", "outbox_rows", "unsent", "wrong_event_applied",
};

static bool verify_measure(PGconn *conn, long long v[V_N])
{
	struct db_err e;
	PGresult *res = db_query(conn, SQL_VERIFY, 0, NULL, PGRES_TUPLES_OK, &e);

	if (res == NULL) {
		fprintf(stderr, "outboxctl: %s\n", e.msg);
		return false;
	}
	for (int i = 0; i < V_N; i++)
		v[i] = atoll(PQgetvalue(res, 0, i));
	PQclear(res);
	return true;
}

int ctl_verify(struct ctl *ctl)
{
	long long v[V_N], prev_applied = -1, prev_open = -1, lag = -1;
	char kerr[512] = "";
	int64_t deadline = util_mono_ms() + ctl->wait_s * 1000, settled_since = 0;
	bool drained = false, ok;
	rd_kafka_t *rk = NULL;
	PGconn *conn;

	if (strcmp(ctl->conf.db_conninfo, conf_sink_conninfo(&ctl->conf)) != 0) {
		fprintf(stderr, "outboxctl: verify needs the outbox and schema sink in one database "
				"([consumer] conninfo differs from [database] conninfo)\n");
		return 2;
	}
	conn = ctl_connect(ctl->conf.db_conninfo, "outbox");
	if (conn == NULL)
		return 1;
	if (ctl->wait_s > 0 && (rk = ctl_lag_open(&ctl->conf, kerr, sizeof kerr)) == NULL)
		fprintf(stderr, "outboxctl: verify: consumer lag unknown: %s\n", kerr);
	/* Wait until everything is applied, or until nothing is left to send,
	 * the consumer group has processed all the topic holds (when Kafka can
	 * say) and the consumer side stopped moving for 5 s (what is missing
	 * then is lost), or until --wait runs out. A consumer that is slow to
	 * rejoin after a restart is waited for, not judged. */
	for (;;) {
		int64_t now;

		if (!verify_measure(conn, v)) {
			PQfinish(conn);
			if (rk != NULL)
				rd_kafka_destroy(rk);
			return 1;
		}
		now = util_mono_ms();
		if (rk != NULL && v[V_UNSENT] == 0)
			lag = ctl_lag(rk, ctl->conf.kafka_topic, kerr, sizeof kerr);
		if (v[V_UNSENT] == 0 && v[V_LOST] == 0 && v[V_OPEN] == 0) {
			drained = true;
			break;
		}
		if (v[V_UNSENT] == 0 && (rk == NULL || lag == 0) && v[V_APPLIED] == prev_applied &&
		    v[V_OPEN] == prev_open) {
			if (settled_since == 0)
				settled_since = now;
			if (now - settled_since >= 5000) {
				drained = true;
				break;
			}
		} else {
			settled_since = 0;
		}
		prev_applied = v[V_APPLIED];
		prev_open = v[V_OPEN];
		if (now >= deadline)
			break;
		util_sleep_ms(500, NULL);
	}
	PQfinish(conn);
	if (rk != NULL)
		rd_kafka_destroy(rk);
	ok = v[V_LOST] == 0 && v[V_DOUBLE] == 0 && v[V_OOO] == 0 && v[V_OPEN] == 0;
	if (ctl->json) {
		json_t *o = json_object();
		char *s;

		for (int i = 0; i < V_N; i++)
			json_object_set_new(o, v_names[i], json_integer(v[i]));
		json_object_set_new(o, "drained", json_boolean(drained));
		json_object_set_new(o, "consumer_lag", json_integer(lag));
		json_object_set_new(o, "ok", json_boolean(ok));
		s = json_dumps(o, JSON_COMPACT);
		printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		for (int i = 0; i < V_N; i++)
			printf("%-22s %lld\n", v_names[i], v[i]);
		printf("%-22s %s\n", "drained", drained ? "yes" : "no (--wait ran out)");
		if (lag >= 0)
			printf("%-22s %lld\n", "consumer_lag", lag);
		printf("%s\n", ok ? "OK: nothing lost, nothing applied twice, in order, no open gap"
			       : "FAILED: see the counts above and `outboxctl audit`");
	}
	return ok ? 0 : 1;
}
