/* outboxctl replay --order ID [--from-seq N]: publish an order's events
 * from the outbox to Kafka again, in seq order, with the relay's key,
 * headers and partitioner (the repair tool when something downstream was
 * lost). Only events a relay already published (sent_at set) are replayed;
 * unsent ones are the relays' to publish. Consumers drop what they already
 * applied (inbox, high-water mark), so a replay never applies anything
 * twice. Events deleted from the outbox by its retention cannot be
 * replayed. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "db.h"
#include "kafka.h"

static const char SQL_EVENTS[] =
	"SELECT event_id::text, aggregate_type, aggregate_id, aggregate_seq, event_type,"
	" payload::text FROM public.outbox"
	" WHERE aggregate_id = $1 AND aggregate_seq >= $2::bigint AND sent_at IS NOT NULL"
	" ORDER BY aggregate_seq";

static const char SQL_UNSENT[] =
	"SELECT count(*) FILTER (WHERE sent_at IS NULL), count(*) FROM public.outbox"
	" WHERE aggregate_id = $1 AND aggregate_seq >= $2::bigint";

static int replay_acked, replay_failed;
static char replay_err[256];

static void replay_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
	(void)rk;
	(void)opaque;
	if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		replay_acked++;
	} else {
		replay_failed++;
		snprintf(replay_err, sizeof replay_err, "%s", rd_kafka_err2str(rkm->err));
	}
}

int ctl_replay(struct ctl *ctl)
{
	char from_s[24], err[512];
	struct db_err dbe;
	const char *params[2] = { ctl->order, from_s };
	PGconn *conn = NULL;
	PGresult *rows = NULL, *unsent = NULL;
	rd_kafka_t *rk = NULL;
	int n = 0, enqueued = 0, rc = 1;
	long long skipped = 0;

	if (ctl->order == NULL || ctl->order[0] == '\0') {
		fprintf(stderr, "outboxctl: replay needs --order ID\n");
		return 2;
	}
	if (ctl->nargs > 0) {
		fprintf(stderr, "outboxctl: unexpected argument \"%s\"\n", ctl->args[0]);
		return 2;
	}
	snprintf(from_s, sizeof from_s, "%ld", ctl->from_seq);
	conn = ctl_connect(ctl->conf.db_conninfo, "outbox");
	if (conn == NULL)
		return 1;
	if ((rows = db_query(conn, SQL_EVENTS, 2, params, PGRES_TUPLES_OK, &dbe)) == NULL ||
	    (unsent = db_query(conn, SQL_UNSENT, 2, params, PGRES_TUPLES_OK, &dbe)) == NULL) {
		fprintf(stderr, "outboxctl: %s\n", dbe.msg);
		goto out;
	}
	n = PQntuples(rows);
	skipped = atoll(PQgetvalue(unsent, 0, 0));
	if (atoll(PQgetvalue(unsent, 0, 1)) == 0) {
		fprintf(stderr, "outboxctl: no outbox events of order %s from seq %ld\n", ctl->order,
			ctl->from_seq);
		goto out;
	}
	if (n > 0) {
		rk = kafka_producer_new(&ctl->conf, replay_dr_cb, err, sizeof err);
		if (rk == NULL) {
			fprintf(stderr, "outboxctl: kafka: %s\n", err);
			goto out;
		}
	}
	for (int i = 0; i < n; i++) {
		struct kafka_event ev = {
			.event_id = PQgetvalue(rows, i, 0),
			.aggregate_type = PQgetvalue(rows, i, 1),
			.aggregate_id = PQgetvalue(rows, i, 2),
			.aggregate_seq = strtoll(PQgetvalue(rows, i, 3), NULL, 10),
			.event_type = PQgetvalue(rows, i, 4),
			.payload = PQgetvalue(rows, i, 5),
			.payload_len = (size_t)PQgetlength(rows, i, 5),
		};
		rd_kafka_resp_err_t e = kafka_produce_event(rk, ctl->conf.kafka_topic, &ev, NULL);

		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			/* Stop here: what follows must not go out ahead of this one. */
			fprintf(stderr, "outboxctl: produce seq %" PRId64 ": %s\n", ev.aggregate_seq,
				rd_kafka_err2str(e));
			break;
		}
		enqueued++;
	}
	if (rk != NULL)
		(void)rd_kafka_flush(rk, ctl->conf.kafka_delivery_timeout_ms + 5000);
	if (ctl->json) {
		json_t *o = json_pack("{s:s, s:s, s:I, s:i, s:i, s:I}", "order", ctl->order,
				      "topic", ctl->conf.kafka_topic, "from_seq",
				      (json_int_t)ctl->from_seq, "published", replay_acked,
				      "failed", n - replay_acked, "unsent_skipped",
				      (json_int_t)skipped);
		char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

		if (s != NULL)
			printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		printf("order %s: %d of %d event(s) from seq %ld re-published to %s", ctl->order,
		       replay_acked, n, ctl->from_seq, ctl->conf.kafka_topic);
		if (skipped > 0)
			printf(" (%lld unsent left to the relays)", skipped);
		printf("\n");
	}
	if (replay_acked != n) {
		fprintf(stderr, "outboxctl: %d event(s) not acknowledged%s%s\n", n - replay_acked,
			replay_err[0] ? ": " : "", replay_err);
		goto out;
	}
	rc = 0;
out:
	if (rk != NULL)
		rd_kafka_destroy(rk);
	PQclear(rows);
	PQclear(unsent);
	PQfinish(conn);
	return rc;
}
