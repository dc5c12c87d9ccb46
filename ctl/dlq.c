/* outboxctl dlq: the dead letters and the orders they quarantine.
 *
 *   dlq list [--all]        open dead letters (--all: resolved ones too)
 *   dlq retry ID            apply the dead letter again, then release the
 *                           order's parked events in arrival order
 *   dlq drop ID --reason T  give up on it: the order's high-water mark steps
 *                           over its seq, a 'dropped' row goes to the
 *                           ordering audit log, then the release
 *
 * Applying goes through the consumer's own apply_event (consumer/apply.c)
 * in release mode, so a retried or released event is deduplicated and
 * ordered exactly as the consumer would. The release and the consumer's
 * parking both run under the order's sink.order_projection row lock, and
 * the quarantine is lifted, under that lock, only when no event of the
 * order is parked and none of its dead letters is open: nothing can be
 * parked behind the release's back. Rows written here carry consumer_id -1. */
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../consumer/apply.h"
#include "../consumer/audit.h"
#include "../consumer/dlq.h"
#include "ctl.h"
#include "db.h"
#include "util.h"

#define CTL_CONSUMER_ID -1
#define RETRIES 20 /* transient database errors, per statement */

static volatile sig_atomic_t dlq_stop;

static void dlq_on_signal(int sig)
{
	(void)sig;
	dlq_stop = 1;
}

static const char SQL_LIST[] =
	"SELECT d.id, d.dead_at, d.reason, d.status, d.aggregate_id, d.aggregate_seq, d.event_id,"
	" d.event_type, d.attempts, d.first_failure_at, d.last_failure_at, d.topic,"
	" d.kafka_partition, d.kafka_offset, d.consumer_id, d.error, d.resolved_at, d.resolution,"
	" (SELECT count(*) FROM sink.parked p WHERE p.aggregate_id = d.aggregate_id) AS parked,"
	" EXISTS (SELECT 1 FROM sink.quarantine q WHERE q.order_id = d.aggregate_id)"
	"   AS quarantined,"
	" d.msg_key"
	" FROM sink.dead_letters d WHERE $1::bool OR d.status = 'open' ORDER BY d.id";

static const char SQL_SCHEMA[] =
	"SELECT 1 FROM sink.dead_letters, sink.parked, sink.quarantine LIMIT 0";

static const char SQL_GET[] =
	"SELECT status, topic, kafka_partition, kafka_offset, msg_key, headers::text, payload,"
	" aggregate_id, aggregate_seq, event_id, reason, headers_hex::text"
	" FROM sink.dead_letters WHERE id = $1::bigint";

static const char SQL_RESOLVE[] =
	"UPDATE sink.dead_letters SET status = $2, resolved_at = clock_timestamp(),"
	" resolution = $3 WHERE id = $1::bigint AND status = 'open'";

/* The drop, under the order's projection lock: step the high-water mark
 * over the dropped seq when it is the next one, so later events apply, and
 * put its event id in the inbox, so a late copy is a duplicate. */
static const char SQL_PROJ_NEW[] =
	"INSERT INTO sink.order_projection (order_id) VALUES ($1) ON CONFLICT DO NOTHING";
static const char SQL_PROJ_LOCK[] =
	"SELECT last_seq FROM sink.order_projection WHERE order_id = $1 FOR UPDATE";
static const char SQL_DL_LOCK[] =
	"SELECT status FROM sink.dead_letters WHERE id = $1::bigint FOR UPDATE";
static const char SQL_SKIP[] =
	"UPDATE sink.order_projection SET last_seq = $2::bigint, updated_at = now()"
	" WHERE order_id = $1 AND last_seq = $2::bigint - 1";
static const char SQL_INBOX[] =
	"INSERT INTO sink.inbox (event_id) VALUES ($1::uuid) ON CONFLICT DO NOTHING";
static const char SQL_AUDIT_DROP[] =
	"INSERT INTO sink.ordering_audit (kind, aggregate_id, expected_seq, got_seq, event_id,"
	" consumer_id, kafka_partition, kafka_offset, detail)"
	" VALUES ('dropped', $1, $2::bigint, $3::bigint, $4::uuid, NULL, $5::int, $6::bigint, $7)"
	" RETURNING to_char(detected_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

static const char SQL_PARKED[] =
	"SELECT id, aggregate_seq, event_id, event_type, status, total_cents, topic,"
	" kafka_partition, kafka_offset"
	" FROM sink.parked WHERE aggregate_id = $1 ORDER BY aggregate_seq, id LIMIT 500";
static const char SQL_UNPARK[] = "DELETE FROM sink.parked WHERE id = $1::bigint";

/* Lift the quarantine when nothing holds it any more (under the lock). */
static const char SQL_LIFT_CHECK[] =
	"SELECT EXISTS (SELECT 1 FROM sink.parked WHERE aggregate_id = $1),"
	" (SELECT string_agg(id::text, ', ' ORDER BY id) FROM sink.dead_letters"
	"   WHERE aggregate_id = $1 AND status = 'open')";
static const char SQL_LIFT[] = "DELETE FROM sink.quarantine WHERE order_id = $1";

/* ------------------------------------------------------------------ helpers */

/* A database error, when there was one (e zero-initialised, filled only
 * by a failed call), the way every subcommand says it. */
static void dlq_db_failed(const struct db_err *e)
{
	if (e->msg[0] != '\0')
		fprintf(stderr, "outboxctl: %s\n", e->msg);
}

/* apply_event, retrying transient errors a bounded number of times. */
static enum apply_result dlq_apply(struct apply *ap, const struct apply_msg *m, char *err,
				   size_t errlen)
{
	long backoff = 0;
	enum apply_result r = APPLY_RETRY;

	for (int i = 0; i < RETRIES && !dlq_stop; i++) {
		if (apply_lost(ap) && !apply_connect(ap, &dlq_stop))
			break;
		r = apply_event(ap, m, err, errlen);
		if (r != APPLY_RETRY)
			return r;
		util_sleep_ms(util_backoff_next(&backoff, 100, 2000), &dlq_stop);
	}
	return r;
}

/* Apply the parked events of order in seq order (arrival order among
 * copies of one seq: a republished missing event parks after the later
 * ones it unblocks), deleting each once
 * applied (or found applied before). *gap is set when one cannot apply yet
 * (an earlier event is missing): it and those after it stay parked. True
 * when everything went as far as it could; false on an error (printed). */
static bool dlq_unpark(struct apply *ap, const char *order, bool *gap, int64_t *released,
		       int64_t *dups)
{
	const char *p_order[1] = { order };
	struct db_err e = { .msg = "" };
	PGconn *conn;
	PGresult *res = NULL;
	char err[1024];
	bool ok = false;
	int n;

	*gap = false;
	do {
		conn = apply_conn(ap);
		if (conn == NULL ||
		    (res = db_query(conn, SQL_PARKED, 1, p_order, PGRES_TUPLES_OK, &e)) == NULL)
			goto out;
		n = PQntuples(res);
		for (int i = 0; i < n; i++) {
			struct apply_msg m;
			enum apply_result r;
			const char *p_id[1] = { PQgetvalue(res, i, 0) };

			memset(&m, 0, sizeof m);
			snprintf(m.aggregate_id, sizeof m.aggregate_id, "%s", order);
			m.seq = strtoll(PQgetvalue(res, i, 1), NULL, 10);
			snprintf(m.event_id, sizeof m.event_id, "%s", PQgetvalue(res, i, 2));
			snprintf(m.event_type, sizeof m.event_type, "%s", PQgetvalue(res, i, 3));
			snprintf(m.status, sizeof m.status, "%s", PQgetvalue(res, i, 4));
			if (!PQgetisnull(res, i, 5)) {
				m.has_total = true;
				m.total_cents = strtoll(PQgetvalue(res, i, 5), NULL, 10);
			}
			snprintf(m.topic, sizeof m.topic, "%s", PQgetvalue(res, i, 6));
			m.partition = (int32_t)strtol(PQgetvalue(res, i, 7), NULL, 10);
			m.offset = strtoll(PQgetvalue(res, i, 8), NULL, 10);
			r = dlq_apply(ap, &m, err, sizeof err);
			if (r == APPLY_GAP) {
				*gap = true;
				ok = true;
				goto out;
			}
			if (r != APPLY_APPLIED && r != APPLY_DUPLICATE) {
				fprintf(stderr, "outboxctl: order %s: parked seq %" PRId64
					" (event %s) failed: %s\n", order, m.seq, m.event_id, err);
				goto out;
			}
			*(r == APPLY_APPLIED ? released : dups) += 1;
			conn = apply_conn(ap);
			if (conn == NULL || !db_run(conn, SQL_UNPARK, 1, p_id, &e))
				goto out;
		}
		PQclear(res);
		res = NULL;
	} while (n > 0);
	ok = true;
out:
	dlq_db_failed(&e);
	if (!ok && apply_conn(ap) == NULL)
		fprintf(stderr, "outboxctl: lost the sink database\n");
	PQclear(res);
	return ok;
}

/* Release the parked events of order, then lift its
 * quarantine if nothing holds it any more. 0 when the order is released, or
 * still held only by an open dead letter (said so); 1 on failure or when a
 * parked event waits for an event that is missing. */
static int dlq_release(struct apply *ap, const char *order, bool json, json_t *out)
{
	const char *p_order[1] = { order };
	struct db_err e = { .msg = "" };
	PGconn *conn;
	PGresult *res = NULL;
	int64_t released = 0, dups = 0;
	char open_dls[256] = "";
	bool gap, parked_left, lifted = false;
	int rc = 1;

	for (;;) {
		if (!dlq_unpark(ap, order, &gap, &released, &dups))
			goto out;
		conn = apply_conn(ap);
		if (conn == NULL) {
			fprintf(stderr, "outboxctl: lost the sink database\n");
			goto out;
		}
		/* Under the order's lock, as the consumer parks. */
		if (!db_begin(conn, &e) || !db_run(conn, SQL_PROJ_NEW, 1, p_order, &e) ||
		    !db_run(conn, SQL_PROJ_LOCK, 1, p_order, &e) ||
		    (res = db_query(conn, SQL_LIFT_CHECK, 1, p_order, PGRES_TUPLES_OK, &e)) == NULL)
			goto out;
		parked_left = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		snprintf(open_dls, sizeof open_dls, "%s",
			 PQgetisnull(res, 0, 1) ? "" : PQgetvalue(res, 0, 1));
		PQclear(res);
		res = NULL;
		if (!parked_left && open_dls[0] == '\0') {
			if (!db_run(conn, SQL_LIFT, 1, p_order, &e) || !db_commit(conn, &e))
				goto out;
			lifted = true;
			rc = 0;
			break;
		}
		db_rollback(conn);
		if (parked_left && !gap && open_dls[0] == '\0')
			continue; /* parked by a consumer meanwhile: once more */
		rc = open_dls[0] != '\0' ? 0 : 1;
		break;
	}
	if (json) {
		json_object_set_new(out, "released", json_integer(released));
		json_object_set_new(out, "duplicates", json_integer(dups));
		json_object_set_new(out, "quarantined", json_boolean(!lifted));
	} else if (lifted) {
		printf("order %s: released %" PRId64 " parked event(s)", order, released);
		if (dups > 0)
			printf(", dropped %" PRId64 " already applied", dups);
		printf("; quarantine lifted\n");
	} else if (open_dls[0] != '\0') {
		printf("order %s: released %" PRId64 " parked event(s); still quarantined by open "
		       "dead letter(s) %s\n", order, released, open_dls);
	}
	if (!lifted && open_dls[0] == '\0')
		fprintf(stderr, "outboxctl: order %s stays quarantined: its next event is missing; "
			"republish it (outboxctl replay --order %s) and run dlq retry again\n",
			order, order);
out:
	dlq_db_failed(&e);
	PQclear(res);
	db_rollback(apply_conn(ap)); /* a transaction only between BEGIN and out */
	return rc;
}

/* ------------------------------------------------------------- subcommands */

/* Row r's key (column c, bytea) for display, escaped (util_utf8_escape);
 * "" when it has none. */
static const char *dlq_key_shown(const PGresult *res, int r, int c, char *out, size_t outlen)
{
	unsigned char *key;
	size_t len = 0;

	out[0] = '\0';
	if (PQgetisnull(res, r, c))
		return out;
	key = PQunescapeBytea((const unsigned char *)PQgetvalue(res, r, c), &len);
	if (key != NULL)
		util_utf8_escape(key, len, out, outlen);
	PQfreemem(key);
	return out;
}

/* Every dead letter as it is shown: text columns escaped where they are not
 * UTF-8 text (a row recorded before sql/007), the key (column "key", from
 * the bytes of msg_key) always. */
static int dlq_list(struct ctl *ctl)
{
	const char *params[1] = { ctl->all ? "true" : "false" };
	PGconn *conn = ctl_connect(conf_sink_conninfo(&ctl->conf), "consumer");
	PGresult *res = NULL;
	struct db_err dbe = { .msg = "" };
	char key[1100], shown[4096];
	int rc = 1;

	if (conn == NULL)
		return 1;
	res = db_query(conn, SQL_LIST, 1, params, PGRES_TUPLES_OK, &dbe);
	if (res == NULL)
		goto out;
	if (ctl->json) {
		for (int r = 0; r < PQntuples(res); r++) {
			json_t *o = json_object();
			char *s;

			for (int c = 0; c < PQnfields(res); c++) {
				const char *v = PQgetvalue(res, r, c);
				const char *name = PQfname(res, c);
				Oid t = PQftype(res, c);
				json_t *j;

				if (t == 17) { /* bytea: msg_key */
					name = "key";
					j = PQgetisnull(res, r, c)
						    ? json_null()
						    : json_string(dlq_key_shown(res, r, c, key,
										sizeof key));
				} else if (PQgetisnull(res, r, c)) {
					j = json_null();
				} else if (t == 20 || t == 23) { /* int8, int4 */
					j = json_integer(strtoll(v, NULL, 10));
				} else if (t == 16) { /* bool */
					j = json_boolean(strcmp(v, "t") == 0);
				} else {
					j = json_string(util_utf8_escape(v, strlen(v), shown,
									 sizeof shown));
				}
				json_object_set_new(o, name, j != NULL ? j : json_null());
			}
			s = json_dumps(o, JSON_COMPACT);
			if (s != NULL)
				printf("%s\n", s);
			free(s);
			json_decref(o);
		}
	} else {
		printf("%-6s %-19s %-9s %-7s %-14s %6s %8s %6s  %s\n", "id", "dead_at", "reason",
		       "status", "order", "seq", "attempts", "parked", "error");
		for (int r = 0; r < PQntuples(res); r++) {
			const char *order;
			const char *e = PQgetvalue(res, r, 15);

			/* The order, else the key that is not one (escaped), else "-". */
			if (!PQgetisnull(res, r, 4))
				order = util_utf8_escape(PQgetvalue(res, r, 4),
							 strlen(PQgetvalue(res, r, 4)), key, sizeof key);
			else
				order = dlq_key_shown(res, r, 20, key, sizeof key);
			printf("%-6s %-19.19s %-9s %-7s %-14s %6s %8s %6s  %s\n",
			       PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
			       PQgetvalue(res, r, 3), order[0] ? order : "-",
			       PQgetisnull(res, r, 5) ? "-" : PQgetvalue(res, r, 5),
			       PQgetvalue(res, r, 8), PQgetvalue(res, r, 18),
			       util_utf8_escape(e, strlen(e), shown, sizeof shown));
		}
		printf("%d dead letter(s)%s\n", PQntuples(res), ctl->all ? "" : " open");
	}
	rc = 0;
out:
	dlq_db_failed(&dbe);
	PQclear(res);
	PQfinish(conn);
	return rc;
}

/* A bytea column's bytes (PQunescapeBytea); NULL for SQL NULL. */
static unsigned char *dlq_bytes(const PGresult *res, int c, size_t *len)
{
	*len = 0;
	if (PQgetisnull(res, 0, c))
		return NULL;
	return PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, c), len);
}

/* Apply dead letter id again and mark it retried; order gets its order id
 * ("" when it has none) for the release. 0 when applied, found applied, or
 * already resolved; 1 otherwise (said why). */
static int dlq_retry_apply(struct ctl *ctl, struct apply *ap, const char *id, json_t *out,
			   char *order, size_t orderlen)
{
	const char *p_id[1] = { id };
	struct db_err e = { .msg = "" };
	PGresult *res = NULL;
	unsigned char *key = NULL, *payload = NULL;
	size_t key_len, payload_len;
	rd_kafka_headers_t *hdrs = NULL;
	struct apply_msg m;
	char why[256], err[1024];
	enum apply_result r;
	int rc = 1;

	res = db_query(apply_conn(ap), SQL_GET, 1, p_id, PGRES_TUPLES_OK, &e);
	if (res == NULL)
		goto out;
	if (PQntuples(res) == 0) {
		fprintf(stderr, "outboxctl: no dead letter %s\n", id);
		goto out;
	}
	snprintf(order, orderlen, "%s", PQgetvalue(res, 0, 7));
	if (strcmp(PQgetvalue(res, 0, 0), "open") != 0) {
		if (!ctl->json)
			printf("dead letter %s is already %s\n", id, PQgetvalue(res, 0, 0));
		json_object_set_new(out, "applied", json_string("already"));
		rc = 0;
		goto out;
	}
	key = dlq_bytes(res, 4, &key_len);
	payload = dlq_bytes(res, 6, &payload_len);
	/* The exact headers (headers_hex), or for a row recorded before
	 * sql/007 the readable ones. */
	if (!PQgetisnull(res, 0, 11))
		hdrs = dlq_headers_parse(PQgetvalue(res, 0, 11), true);
	else
		hdrs = dlq_headers_parse(PQgetisnull(res, 0, 5) ? NULL : PQgetvalue(res, 0, 5),
					 false);
	if (hdrs == NULL) {
		fprintf(stderr, "outboxctl: dead letter %s: unreadable headers\n", id);
		goto out;
	}
	if (!apply_parse_parts(key, key_len, hdrs, payload, payload_len,
			       (int32_t)strtol(PQgetvalue(res, 0, 2), NULL, 10),
			       strtoll(PQgetvalue(res, 0, 3), NULL, 10), &m, why, sizeof why) ||
	    !apply_check(&m, ctl->conf.consumer_event_types, why, sizeof why)) {
		fprintf(stderr, "outboxctl: dead letter %s is still poison (%s); give up on it "
			"with: outboxctl dlq drop %s --reason TEXT\n", id, why, id);
		goto out;
	}
	snprintf(m.topic, sizeof m.topic, "%s", PQgetvalue(res, 0, 1));
	r = dlq_apply(ap, &m, err, sizeof err);
	if (r == APPLY_GAP) {
		fprintf(stderr, "outboxctl: dead letter %s (order %s seq %" PRId64 ") cannot apply: "
			"an earlier event of the order is missing; republish it (outboxctl replay "
			"--order %s) or drop this one\n", id, m.aggregate_id, m.seq, m.aggregate_id);
		goto out;
	}
	if (r != APPLY_APPLIED && r != APPLY_DUPLICATE) {
		fprintf(stderr, "outboxctl: dead letter %s still fails: %s\n", id, err);
		goto out;
	}
	{
		const char *p[3] = { id, "retried",
				     r == APPLY_APPLIED ? "applied by outboxctl dlq retry"
							: "already applied (duplicate)" };

		if (!db_run(apply_conn(ap), SQL_RESOLVE, 3, p, &e))
			goto out;
	}
	json_object_set_new(out, "applied", json_string(r == APPLY_APPLIED ? "yes" : "duplicate"));
	if (!ctl->json)
		printf("dead letter %s: order %s seq %" PRId64 " %s\n", id, m.aggregate_id, m.seq,
		       r == APPLY_APPLIED ? "applied" : "was already applied");
	rc = 0;
out:
	dlq_db_failed(&e);
	PQclear(res);
	PQfreemem(key);
	PQfreemem(payload);
	if (hdrs != NULL)
		rd_kafka_headers_destroy(hdrs);
	return rc;
}

static int dlq_retry(struct ctl *ctl, struct apply *ap, const char *id, json_t *out)
{
	char order[256] = "";
	int rc = dlq_retry_apply(ctl, ap, id, out, order, sizeof order);

	if (rc != 0 || order[0] == '\0')
		return rc; /* failed, or not an order's event: nothing quarantined */
	json_object_set_new(out, "order", json_string(order));
	return dlq_release(ap, order, ctl->json, out);
}

/* Give up on dead letter id (see the header comment); order gets its order
 * id for the release. 0 when dropped or already resolved; 1 otherwise. */
static int dlq_drop_record(struct ctl *ctl, struct apply *ap, struct audit *au, const char *id,
			   json_t *out, char *order, size_t orderlen)
{
	const char *p_id[1] = { id };
	PGconn *conn = apply_conn(ap);
	PGresult *res = NULL;
	struct db_err e = { .msg = "" };
	char event_id[40] = "", seq_s[24] = "", exp_s[24] = "", part_s[16] = "",
	     off_s[24] = "", detail[1200], detected[40] = "", err[1024];
	bool skipped = false;
	int64_t last = -1;
	int rc = 1;

	res = db_query(conn, SQL_GET, 1, p_id, PGRES_TUPLES_OK, &e);
	if (res == NULL)
		goto out;
	if (PQntuples(res) == 0) {
		fprintf(stderr, "outboxctl: no dead letter %s\n", id);
		goto out;
	}
	snprintf(order, orderlen, "%s", PQgetvalue(res, 0, 7));
	snprintf(seq_s, sizeof seq_s, "%s", PQgetvalue(res, 0, 8));
	snprintf(event_id, sizeof event_id, "%s", PQgetvalue(res, 0, 9));
	snprintf(part_s, sizeof part_s, "%s", PQgetvalue(res, 0, 2));
	snprintf(off_s, sizeof off_s, "%s", PQgetvalue(res, 0, 3));
	PQclear(res);
	res = NULL;
	snprintf(detail, sizeof detail, "dead letter %s dropped: %s", id, ctl->reason);
	if (!db_begin(conn, &e))
		goto out;
	if (order[0] != '\0') {
		const char *p_order[1] = { order };

		if (!db_run(conn, SQL_PROJ_NEW, 1, p_order, &e) ||
		    (res = db_query(conn, SQL_PROJ_LOCK, 1, p_order, PGRES_TUPLES_OK, &e)) == NULL)
			goto out;
		last = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
		res = NULL;
	}
	res = db_query(conn, SQL_DL_LOCK, 1, p_id, PGRES_TUPLES_OK, &e);
	if (res == NULL)
		goto out;
	if (strcmp(PQgetvalue(res, 0, 0), "open") != 0) {
		if (!ctl->json)
			printf("dead letter %s is already %s\n", id, PQgetvalue(res, 0, 0));
		rc = 0;
		goto out;
	}
	PQclear(res);
	res = NULL;
	if (order[0] != '\0' && seq_s[0] != '\0') {
		const char *p[2] = { order, seq_s };

		res = db_query(conn, SQL_SKIP, 2, p, PGRES_COMMAND_OK, &e);
		if (res == NULL)
			goto out;
		skipped = strcmp(PQcmdTuples(res), "1") == 0;
		PQclear(res);
		res = NULL;
	}
	if (event_id[0] != '\0') {
		const char *p[1] = { event_id };

		if (!db_run(conn, SQL_INBOX, 1, p, &e))
			goto out;
	}
	{
		const char *p[3] = { id, "dropped", ctl->reason };

		if (!db_run(conn, SQL_RESOLVE, 3, p, &e))
			goto out;
	}
	if (last >= 0)
		snprintf(exp_s, sizeof exp_s, "%" PRId64, last + 1);
	{
		const char *p[7] = { order[0] ? order : NULL, exp_s[0] ? exp_s : NULL,
				     seq_s[0] ? seq_s : NULL, event_id[0] ? event_id : NULL, part_s,
				     off_s, detail };

		res = db_query(conn, SQL_AUDIT_DROP, 7, p, PGRES_TUPLES_OK, &e);
		if (res == NULL)
			goto out;
		snprintf(detected, sizeof detected, "%s", PQgetvalue(res, 0, 0));
		PQclear(res);
		res = NULL;
	}
	if (!db_commit(conn, &e))
		goto out;
	{
		struct audit_line l = {
			.detected_at = detected, .kind = "dropped",
			.aggregate_id = order[0] ? order : NULL,
			.expected_seq = last >= 0 ? last + 1 : -1,
			.got_seq = seq_s[0] ? strtoll(seq_s, NULL, 10) : -1,
			.event_id = event_id[0] ? event_id : NULL, .consumer_id = CTL_CONSUMER_ID,
			.kafka_partition = (int32_t)strtol(part_s, NULL, 10),
			.kafka_offset = strtoll(off_s, NULL, 10), .detail = detail,
		};

		if (!audit_write(au, &l, err, sizeof err))
			fprintf(stderr, "outboxctl: audit file: %s\n", err);
	}
	json_object_set_new(out, "dropped", json_true());
	json_object_set_new(out, "skipped_seq", skipped ? json_integer(strtoll(seq_s, NULL, 10))
							: json_null());
	if (!ctl->json)
		printf("dead letter %s dropped (%s)%s\n", id, ctl->reason,
		       skipped ? "; the order steps over its seq" : "");
	rc = 0;
out:
	dlq_db_failed(&e);
	PQclear(res);
	db_rollback(conn);
	return rc;
}

static int dlq_drop(struct ctl *ctl, struct apply *ap, struct audit *au, const char *id,
		    json_t *out)
{
	char order[256] = "";
	int rc = dlq_drop_record(ctl, ap, au, id, out, order, sizeof order);

	if (rc != 0 || order[0] == '\0')
		return rc;
	json_object_set_new(out, "order", json_string(order));
	return dlq_release(ap, order, ctl->json, out);
}

int ctl_dlq(struct ctl *ctl)
{
	const char *what = ctl->nargs > 0 ? ctl->args[0] : NULL;
	const char *id = ctl->nargs > 1 ? ctl->args[1] : NULL;
	PGconn *probe;
	PGresult *res;
	struct db_err e;
	struct apply *ap = NULL;
	struct audit *au = NULL;
	json_t *out = NULL;
	char err[512];
	long idv;
	int rc = 1;

	if (what == NULL || (strcmp(what, "list") != 0 && strcmp(what, "retry") != 0 &&
			     strcmp(what, "drop") != 0)) {
		fprintf(stderr, "outboxctl: dlq needs list, retry ID or drop ID --reason TEXT\n");
		return 2;
	}
	if (strcmp(what, "list") == 0) {
		if (ctl->nargs > 1) {
			fprintf(stderr, "outboxctl: unexpected argument \"%s\"\n", ctl->args[1]);
			return 2;
		}
		return dlq_list(ctl);
	}
	if (id == NULL || ctl->nargs > 2 || !util_parse_int(id, 1, 2147483647L, &idv)) {
		fprintf(stderr, "outboxctl: dlq %s needs one dead letter id (see dlq list)\n", what);
		return 2;
	}
	if (strcmp(what, "drop") == 0 && (ctl->reason == NULL || ctl->reason[0] == '\0')) {
		fprintf(stderr, "outboxctl: dlq drop needs --reason TEXT (it goes to the audit log)\n");
		return 2;
	}
	/* Fail fast on a database that is not there (apply_connect would wait). */
	probe = ctl_connect(conf_sink_conninfo(&ctl->conf), "consumer");
	if (probe == NULL)
		return 1;
	/* ... nor on a schema that is not there yet (migrate not run). */
	res = db_query(probe, SQL_SCHEMA, 0, NULL, PGRES_TUPLES_OK, &e);
	PQfinish(probe);
	if (res == NULL) {
		dlq_db_failed(&e);
		return 1;
	}
	PQclear(res);
	util_on_signals(dlq_on_signal);
	au = audit_open(ctl->conf.sup_audit_file, err, sizeof err);
	if (au == NULL) {
		fprintf(stderr, "outboxctl: %s\n", err);
		return 1;
	}
	ap = apply_new(conf_sink_conninfo(&ctl->conf), CTL_CONSUMER_ID, au, false);
	out = json_object();
	if (ap == NULL || out == NULL) {
		fprintf(stderr, "outboxctl: out of memory\n");
		goto out;
	}
	if (!apply_connect(ap, &dlq_stop))
		goto out;
	apply_set_release(ap, true);
	json_object_set_new(out, "id", json_integer(idv));
	json_object_set_new(out, "action", json_string(what));
	rc = strcmp(what, "retry") == 0 ? dlq_retry(ctl, ap, id, out)
					: dlq_drop(ctl, ap, au, id, out);
	if (ctl->json) {
		char *s;

		json_object_set_new(out, "ok", json_boolean(rc == 0));
		s = json_dumps(out, JSON_COMPACT);
		printf("%s\n", s);
		free(s);
	}
out:
	json_decref(out);
	apply_free(ap);
	audit_close(au);
	return rc;
}
