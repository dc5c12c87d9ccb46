/* apply: one Kafka message, one sink transaction.
 *
 * The inbox row, the side effect and the projection's new high-water mark
 * commit together or not at all, and the caller stores the Kafka offset
 * only after that commit. So a crash anywhere re-delivers the message, and
 * the redelivery finds its inbox row (or a last_seq at or past its seq) and
 * is dropped: every event is applied exactly once, in aggregate_seq order.
 *
 * apply_event takes one event through these stages, in one transaction:
 *   event_lock    BEGIN; the order's projection row locked until commit
 *                 (SQL_LOCK): two consumers that share a partition during a
 *                 rebalance still apply an order in seq order.
 *   event_park    a quarantined order's event is parked (SQL_PARK), not
 *                 applied, until its dead letter is retried or dropped.
 *   event_dedupe  the inbox row (SQL_INBOX): an event seen before, or a seq
 *                 at or below last_seq, is dropped (rolled back, audited).
 *   event_hold    a seq past last_seq + 1 is held (SQL_HOLD) in place of its
 *                 inbox row and the gap audited; the event before it applies it.
 *   event_apply   seq = last_seq + 1: the side effect and the new high-water
 *                 mark (SQL_APPLY), then the held events that now follow.
 *   event_commit  COMMIT; only after it the audit lines, and the caller's
 *                 offset.
 * apply_batch does lock, dedupe, apply and commit for a run of events in
 * one transaction of three round trips (batch_lock; batch_dedupe_apply,
 * whose side effects a duplicate rolls back; COMMIT), or nothing: an event
 * the batch cannot take goes the one-by-one way. */
#include "apply.h"

#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "crash.h"
#include "db.h"
#include "kafka.h"
#include "log.h"
#include "util.h"

#define TS_UTC(col) \
	"to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* Dedupe: a second delivery of the same event id inserts nothing. */
static const char SQL_INBOX[] =
	"INSERT INTO sink.inbox (event_id) VALUES ($1::uuid) ON CONFLICT DO NOTHING";

/* The order's high-water mark, locked until commit, so two consumers that
 * briefly share a partition during a rebalance still apply in seq order;
 * whether it is quarantined, and whether it has held events (drain_held
 * runs only then: no extra round trip per message otherwise). */
static const char SQL_LOCK[] =
	"SELECT p.last_seq, EXISTS (SELECT 1 FROM sink.quarantine q WHERE q.order_id = p.order_id), "
	"  EXISTS (SELECT 1 FROM sink.held h WHERE h.aggregate_id = p.order_id) "
	"FROM sink.order_projection p WHERE p.order_id = $1 FOR UPDATE OF p";

/* A quarantined order's event, parked under the order's projection lock (the
 * release takes it too, so nothing is parked behind a release's back). A
 * redelivery of a parked event, or of the open dead letter itself (a crash
 * before its offset was committed), parks nothing. */
static const char SQL_PARK[] =
	"INSERT INTO sink.parked (aggregate_id, aggregate_seq, event_id, event_type, status, "
	"  total_cents, topic, kafka_partition, kafka_offset, consumer_id) "
	"SELECT $1, $2::bigint, $3::uuid, $4, $5, $6::bigint, $7, $8::int, $9::bigint, $10::int "
	"WHERE NOT EXISTS (SELECT 1 FROM sink.dead_letters WHERE aggregate_id = $1 "
	"  AND status = 'open' AND event_id = $3::uuid) "
	"ON CONFLICT (event_id) DO NOTHING";

/* A dead letter, once per Kafka message: the id of the row, new or not.
 * $14 and $16 (key, payload) are binary parameters: their bytes are stored
 * as they came, nothing in them is interpreted (sql/007). */
static const char SQL_DEAD[] =
	"WITH d AS (INSERT INTO sink.dead_letters (reason, error, attempts, first_failure_at, "
	"    last_failure_at, topic, kafka_partition, kafka_offset, consumer_id, event_id, "
	"    event_type, aggregate_id, aggregate_seq, msg_key, headers, payload, headers_hex) "
	"  VALUES ($1, $2, $3::int, to_timestamp($4::float8 / 1e6), to_timestamp($5::float8 / 1e6), "
	"    $6, $7::int, $8::bigint, $9::int, $10::uuid, $11, $12, $13::bigint, $14::bytea, "
	"    $15::jsonb, $16::bytea, $17::jsonb) "
	"  ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING RETURNING id) "
	"SELECT id FROM d UNION ALL SELECT id FROM sink.dead_letters "
	"WHERE topic = $6 AND kafka_partition = $7::int AND kafka_offset = $8::bigint";

/* Quarantine the order of an open dead letter whose seq the order has not
 * reached yet (a stale copy breaks nothing). Under the projection lock. */
static const char SQL_QUARANTINE[] =
	"INSERT INTO sink.quarantine (order_id, dead_letter_id) "
	"SELECT $1, $2::bigint WHERE $3::bigint > (SELECT last_seq FROM sink.order_projection "
	"  WHERE order_id = $1) "
	"  AND EXISTS (SELECT 1 FROM sink.dead_letters WHERE id = $2::bigint AND status = 'open') "
	"ON CONFLICT (order_id) DO NOTHING";

static const char SQL_PROJ_NEW[] =
	"INSERT INTO sink.order_projection (order_id) VALUES ($1) ON CONFLICT DO NOTHING";

/* The apply itself, only for seq = last_seq + 1 under the lock above: the
 * side effect, the new high-water mark, and the healing of every open gap
 * this event closes (a gap "expected E, got G" is closed once G - 1 is
 * applied). Returns the healed gap rows for the audit file. */
static const char SQL_APPLY[] =
	"WITH e AS (INSERT INTO sink.side_effects (event_id, aggregate_id, aggregate_seq, "
	"    event_type, consumer_id, kafka_partition, kafka_offset) "
	"  VALUES ($1::uuid, $2, $3::bigint, $4, $5::int, $6::int, $7::bigint)), "
	"p AS (UPDATE sink.order_projection SET last_seq = $3::bigint, "
	"    events_applied = events_applied + 1, status = COALESCE($8, status), "
	"    total_cents = COALESCE($9::bigint, total_cents), updated_at = now() "
	"  WHERE order_id = $2) "
	"UPDATE sink.ordering_audit SET healed_at = clock_timestamp() "
	"WHERE kind = 'gap' AND healed_at IS NULL AND aggregate_id = $2 "
	"  AND got_seq <= $3::bigint + 1 "
	"RETURNING expected_seq, got_seq, " TS_UTC("healed_at");

/* A gap's event, held (see sql/009_sink_held.sql) under the projection
 * lock, which the apply of the event before it takes too. */
static const char SQL_HOLD[] =
	"INSERT INTO sink.held (aggregate_id, aggregate_seq, event_id, event_type, status, "
	"  total_cents, topic, kafka_partition, kafka_offset, consumer_id) "
	"VALUES ($1, $2::bigint, $3::uuid, $4, $5, $6::bigint, $7, $8::int, $9::bigint, $10::int) "
	"ON CONFLICT (event_id) DO NOTHING";

static const char SQL_INBOX_UNDO[] = "DELETE FROM sink.inbox WHERE event_id = $1::uuid";

/* The held event that comes next (the first held of that seq), taken out;
 * held rows the order has passed (redeliveries, copies) go with it. */
static const char SQL_HELD_NEXT[] =
	"WITH stale AS (DELETE FROM sink.held WHERE aggregate_id = $1 AND aggregate_seq < $2::bigint), "
	"n AS (DELETE FROM sink.held WHERE id = (SELECT id FROM sink.held WHERE aggregate_id = $1 "
	"    AND aggregate_seq = $2::bigint ORDER BY id LIMIT 1) "
	"  RETURNING event_id, event_type, status, total_cents, kafka_partition, kafka_offset) "
	"SELECT event_id, event_type, status, total_cents, kafka_partition, kafka_offset FROM n";

/* An audit row (duplicate, poison). expected_seq NULL means "one past the
 * order's current high-water mark". */
static const char SQL_AUDIT[] =
	"INSERT INTO sink.ordering_audit (kind, aggregate_id, expected_seq, got_seq, event_id, "
	"  consumer_id, kafka_partition, kafka_offset, detail) "
	"VALUES ($1, $2, COALESCE($3::bigint, (SELECT last_seq + 1 FROM sink.order_projection "
	"    WHERE order_id = $2)), $4::bigint, $5::uuid, $6::int, $7::int, $8::bigint, $9) "
	"RETURNING " TS_UTC("detected_at") ", expected_seq";

/* A gap row, once per open gap: the relay re-publishes the missing events
 * and everything after them, so the same gap is seen again until healed. */
static const char SQL_GAP[] =
	"INSERT INTO sink.ordering_audit (kind, aggregate_id, expected_seq, got_seq, event_id, "
	"  consumer_id, kafka_partition, kafka_offset) "
	"SELECT 'gap', $1, $2::bigint, $3::bigint, $4::uuid, $5::int, $6::int, $7::bigint "
	"WHERE NOT EXISTS (SELECT 1 FROM sink.ordering_audit WHERE kind = 'gap' "
	"  AND healed_at IS NULL AND aggregate_id = $1 AND got_seq = $3::bigint) "
	"RETURNING " TS_UTC("detected_at");

/* This consumer's counters since it started (outboxctl status). */
static const char SQL_REPORT[] =
	"INSERT INTO sink.consumers (consumer_id, host, pid, started_at, updated_at, received, "
	"  applied, duplicates, gaps, poison, retries, dead_lettered, parked, foreign_messages, "
	"  foreign_partitions, reconnects) "
	"VALUES ($1::int, $2, $3::int, to_timestamp($4::float8 / 1e6), now(), $5::bigint, "
	"  $6::bigint, $7::bigint, $8::bigint, $9::bigint, $10::bigint, $11::bigint, $12::bigint, "
	"  $13::bigint, $14::bigint, $15::bigint) "
	"ON CONFLICT (host, consumer_id) DO UPDATE SET pid = EXCLUDED.pid, "
	"  started_at = EXCLUDED.started_at, updated_at = EXCLUDED.updated_at, "
	"  received = EXCLUDED.received, applied = EXCLUDED.applied, "
	"  duplicates = EXCLUDED.duplicates, gaps = EXCLUDED.gaps, poison = EXCLUDED.poison, "
	"  retries = EXCLUDED.retries, dead_lettered = EXCLUDED.dead_lettered, "
	"  parked = EXCLUDED.parked, foreign_messages = EXCLUDED.foreign_messages, "
	"  foreign_partitions = EXCLUDED.foreign_partitions, reconnects = EXCLUDED.reconnects";

/* The batch path (apply_batch): the same three stages for many events at
 * once. The orders' projection rows, created if new and locked in one
 * order (byte order: two consumers sharing orders during a rebalance lock
 * them alike), each with whether anything makes the order need the
 * one-by-one path: a quarantine, held events, an open gap. */
static const char SQL_B_PROJ_NEW[] =
	"INSERT INTO sink.order_projection (order_id) SELECT DISTINCT unnest($1::text[]) "
	"ON CONFLICT DO NOTHING";

static const char SQL_B_LOCK[] =
	"SELECT p.order_id, p.last_seq, "
	"  EXISTS (SELECT 1 FROM sink.quarantine q WHERE q.order_id = p.order_id) "
	"  OR EXISTS (SELECT 1 FROM sink.held h WHERE h.aggregate_id = p.order_id) "
	"  OR EXISTS (SELECT 1 FROM sink.ordering_audit g WHERE g.kind = 'gap' "
	"    AND g.healed_at IS NULL AND g.aggregate_id = p.order_id) "
	"FROM sink.order_projection p WHERE p.order_id = ANY ($1::text[]) "
	"ORDER BY p.order_id COLLATE \"C\" FOR UPDATE OF p";

static const char SQL_B_INBOX[] =
	"INSERT INTO sink.inbox (event_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING";

/* Every event's side effect, and per order the new high-water mark, the
 * count, and the last status and total the events carried (as SQL_APPLY
 * does event by event). */
static const char SQL_B_APPLY[] =
	"WITH v AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], "
	"    $5::int[], $6::bigint[], $7::text[], $8::bigint[]) "
	"  AS v(event_id, aggregate_id, seq, event_type, part, off, status, total)), "
	"e AS (INSERT INTO sink.side_effects (event_id, aggregate_id, aggregate_seq, event_type, "
	"    consumer_id, kafka_partition, kafka_offset) "
	"  SELECT event_id, aggregate_id, seq, event_type, $9::int, part, off FROM v) "
	"UPDATE sink.order_projection p SET last_seq = a.seq, "
	"  events_applied = events_applied + a.n, status = COALESCE(a.status, p.status), "
	"  total_cents = COALESCE(a.total, p.total_cents), updated_at = now() "
	"FROM (SELECT aggregate_id, max(seq) AS seq, count(*) AS n, "
	"    (array_agg(status ORDER BY seq DESC) FILTER (WHERE status IS NOT NULL))[1] AS status, "
	"    (array_agg(total ORDER BY seq DESC) FILTER (WHERE total IS NOT NULL))[1] AS total "
	"  FROM v GROUP BY aggregate_id) a WHERE p.order_id = a.aggregate_id";

static const struct {
	const char *name;
	const char *sql;
} statements[] = {
	{ "c_inbox", SQL_INBOX },   { "c_lock", SQL_LOCK }, { "c_proj_new", SQL_PROJ_NEW },
	{ "c_apply", SQL_APPLY },   { "c_audit", SQL_AUDIT }, { "c_gap", SQL_GAP },
	{ "c_report", SQL_REPORT }, { "c_park", SQL_PARK }, { "c_dead", SQL_DEAD },
	{ "c_quarantine", SQL_QUARANTINE }, { "c_hold", SQL_HOLD },
	{ "c_inbox_undo", SQL_INBOX_UNDO }, { "c_held_next", SQL_HELD_NEXT },
	{ "c_b_proj_new", SQL_B_PROJ_NEW }, { "c_b_lock", SQL_B_LOCK },
	{ "c_b_inbox", SQL_B_INBOX }, { "c_b_apply", SQL_B_APPLY },
};

enum { B_EID, B_AGG, B_SEQ, B_TYPE, B_PART, B_OFF, B_STATUS, B_TOTAL, B_NARR };

struct apply {
	PGconn *conn;
	char *conninfo;
	char appname[32]; /* application_name: outbox-consumer-<id> */
	int consumer_id;
	char consumer_id_s[16];
	struct audit *audit;
	char host[256];
	bool async_commit;
	bool release;    /* outboxctl dlq: apply to quarantined orders */
	int held_applied; /* by the last apply_event, after its own event */
	struct db_array arr[B_NARR]; /* apply_batch's parameters */
	int order[CONF_CONSUMER_BATCH_MAX]; /* apply_batch: message indexes by order id */
};

/* ---------------------------------------------------------------- parsing */

/* The key and headers are kafka_event_decode's (common/kafka.c, the mirror
 * of what the relay produces); the payload's status and total are the
 * builtin handler's, read here. The envelope's fields and apply_msg's are
 * the same size (copied whole). */
#define SAME_SIZE(f, g) \
	_Static_assert(sizeof ((struct apply_msg *)0)->f == sizeof ((struct kafka_envelope *)0)->g, \
		       #f " and " #g " differ in size")
SAME_SIZE(event_id, event_id);
SAME_SIZE(event_type, event_type);
SAME_SIZE(aggregate_type, aggregate_type);
SAME_SIZE(aggregate_id, aggregate_id);
SAME_SIZE(header_problem, event_type_problem);

bool apply_parse(const rd_kafka_message_t *rkm, struct apply_msg *m, char *why, size_t whylen)
{
	rd_kafka_headers_t *hdrs = NULL;

	bool ok;

	if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
		hdrs = NULL;
	ok = apply_parse_parts(rkm->key, rkm->key_len, hdrs, rkm->payload, rkm->len,
			       rkm->partition, rkm->offset, m, why, whylen);
	if (rkm->rkt != NULL)
		snprintf(m->topic, sizeof m->topic, "%s", rd_kafka_topic_name(rkm->rkt));
	return ok;
}

bool apply_parse_parts(const void *key, size_t key_len, rd_kafka_headers_t *hdrs,
		       const void *payload, size_t len, int32_t partition, int64_t offset,
		       struct apply_msg *m, char *why, size_t whylen)
{
	struct kafka_envelope ev;
	bool is_event = kafka_event_decode(key, key_len, hdrs, &ev, why, whylen);
	json_t *root;

	memset(m, 0, sizeof *m);
	m->partition = partition;
	m->offset = offset;
	/* What could be read, whether or not it is an event. */
	memcpy(m->event_id, ev.event_id, sizeof m->event_id);
	memcpy(m->event_type, ev.event_type, sizeof m->event_type);
	memcpy(m->aggregate_type, ev.aggregate_type, sizeof m->aggregate_type);
	memcpy(m->aggregate_id, ev.aggregate_id, sizeof m->aggregate_id);
	memcpy(m->header_problem, ev.event_type_problem, sizeof m->header_problem);
	m->seq = ev.aggregate_seq;
	if (!is_event)
		return false;
	/* The payload only feeds the projection's status and total; a payload
	 * that is not a JSON object still applies (the headers are the event). */
	root = payload != NULL && len > 0 ? json_loadb(payload, len, 0, NULL) : NULL;
	if (payload == NULL || len == 0)
		snprintf(m->payload_problem, sizeof m->payload_problem, "no payload");
	else if (root == NULL)
		snprintf(m->payload_problem, sizeof m->payload_problem, "payload is not JSON");
	else if (!json_is_object(root))
		snprintf(m->payload_problem, sizeof m->payload_problem,
			 "payload is not a JSON object");
	if (json_is_object(root)) {
		json_t *st = json_object_get(root, "status");
		json_t *tot = json_object_get(root, "total_cents");
		json_t *oid = json_object_get(root, "order_id");
		json_t *ps = json_object_get(root, "seq");

		if (oid != NULL && (!json_is_string(oid) ||
				    strcmp(json_string_value(oid), m->aggregate_id) != 0))
			snprintf(m->payload_problem, sizeof m->payload_problem,
				 "payload order_id disagrees with the key");
		else if (ps != NULL && (!json_is_integer(ps) || json_integer_value(ps) != m->seq))
			snprintf(m->payload_problem, sizeof m->payload_problem,
				 "payload seq disagrees with the aggregate_seq header");

		if (json_is_string(st) && strlen(json_string_value(st)) < sizeof m->status)
			snprintf(m->status, sizeof m->status, "%s", json_string_value(st));
		if (json_is_integer(tot)) {
			m->has_total = true;
			m->total_cents = (int64_t)json_integer_value(tot);
		}
	}
	json_decref(root);
	return true;
}

bool apply_check(const struct apply_msg *m, const char *event_types, char *why, size_t whylen)
{
	const char *p = event_types;

	if (m->header_problem[0] != '\0') {
		snprintf(why, whylen, "%s", m->header_problem);
		return false;
	}
	if (m->event_type[0] == '\0') {
		snprintf(why, whylen, "missing event_type header");
		return false;
	}
	if (m->payload_problem[0] != '\0') {
		snprintf(why, whylen, "%s", m->payload_problem);
		return false;
	}
	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, ',');
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);

		while (n > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			n--;
		}
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n > 0 && p[n - 1] == '*') {
			if (strncmp(m->event_type, p, n - 1) == 0)
				return true;
		} else if (n > 0 && strlen(m->event_type) == n && strncmp(m->event_type, p, n) == 0) {
			return true;
		}
		p = end != NULL ? end + 1 : NULL;
	}
	snprintf(why, whylen, "unknown event type \"%s\"", m->event_type);
	return false;
}

/* --------------------------------------------------------------- database */

struct apply *apply_new(const char *conninfo, int consumer_id, struct audit *audit,
			bool async_commit)
{
	struct apply *a = calloc(1, sizeof *a);

	if (a == NULL)
		return NULL;
	a->conninfo = strdup(conninfo);
	if (a->conninfo == NULL) {
		free(a);
		return NULL;
	}
	a->consumer_id = consumer_id;
	snprintf(a->appname, sizeof a->appname, "outbox-consumer-%d", consumer_id);
	snprintf(a->consumer_id_s, sizeof a->consumer_id_s, "%d", consumer_id);
	a->audit = audit;
	a->async_commit = async_commit;
	if (gethostname(a->host, sizeof a->host) != 0)
		snprintf(a->host, sizeof a->host, "localhost");
	a->host[sizeof a->host - 1] = '\0';
	return a;
}

void apply_free(struct apply *a)
{
	if (a == NULL)
		return;
	PQfinish(a->conn);
	free(a->conninfo);
	for (int i = 0; i < B_NARR; i++)
		db_array_free(&a->arr[i]);
	free(a);
}

bool apply_lost(const struct apply *a)
{
	return a->conn == NULL || db_lost(a->conn);
}

/* Errors worth retrying the same message for: the connection, serialization
 * and deadlock failures, shutdowns and resource shortages (and a failure
 * with no SQLSTATE: the client's side, out of memory). */
static bool transient(PGconn *conn, const struct db_err *e)
{
	const char *state = e->sqlstate;

	if (db_lost(conn) || state[0] == '\0')
		return true;
	return strncmp(state, "08", 2) == 0 || strncmp(state, "40", 2) == 0 ||
	       strncmp(state, "53", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
	       strncmp(state, "58", 2) == 0 || strcmp(state, DB_LOCK_NOT_AVAILABLE) == 0;
}

/* Errors that refuse this message rather than say the sink is broken: an
 * integrity constraint (23), a trigger's or routine's exception (P0, 09,
 * 27, 2F, 38, 39), a view's check option (44). Worth the retry budget, then
 * the dead-letter queue. Anything else that is not transient (an undefined
 * table, a privilege, a syntax error) is the sink's fault and would refuse
 * every message alike: never a reason to dead-letter. */
static bool rejected(const struct db_err *e)
{
	static const char *const classes[] = { "23", "P0", "09", "27", "2F", "38", "39", "44" };

	for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++)
		if (strncmp(e->sqlstate, classes[i], 2) == 0)
			return true;
	return false;
}

/* The database refused the message's own data (bad UTF-8, say). */
static bool data_refused(const struct db_err *e)
{
	return strncmp(e->sqlstate, DB_CLASS_DATA_EXCEPTION, 2) == 0;
}

/* Fill e for a failure of our own (out of memory, a row that should be
 * there): no SQLSTATE, so transient() retries it as a client-side one. */
static void own_err(struct db_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void own_err(struct db_err *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	e->sqlstate[0] = '\0';
	e->lost = false;
}

/* The session's settings, then every statement prepared. False with e.
 * No sequential scans: every statement here finds its rows through an
 * index, but a prepared statement's generic plan is made from the
 * statistics of the moment, and one made while sink.order_projection was
 * small (a new sink, or one just truncated: autovacuum analyses it later)
 * scanned the whole table for every batch from then on (SQL_B_LOCK's
 * = ANY: 21.8 PostgreSQL CPU-s for 200k events in batches of 100, 6.9
 * without). Planning at each call avoids that too, but costs a small
 * batch more than it runs. */
static bool prepare_all(struct apply *a, struct db_err *e)
{
	if (!db_run(a->conn, "SET enable_seqscan = off", 0, NULL, e))
		return false;
	if (a->async_commit && !db_run(a->conn, "SET synchronous_commit = off", 0, NULL, e))
		return false;
	for (size_t i = 0; i < sizeof statements / sizeof statements[0]; i++)
		if (!db_prepare(a->conn, statements[i].name, statements[i].sql, 0, e))
			return false;
	return true;
}

bool apply_connect(struct apply *a, volatile sig_atomic_t *stop)
{
	/* No JIT: the batch statements cross jit_above_cost, and compiling
	 * them costs more than running them. */
	const struct db_conn_opts o = { .appname = a->appname, .no_jit = true };
	long backoff = 0;

	for (;;) {
		struct db_err e;

		PQfinish(a->conn);
		a->conn = db_open_retry(a->conninfo, &o, "sink database", stop);
		if (a->conn == NULL)
			return false;
		if (prepare_all(a, &e))
			return true;
		/* A sink schema that is not there yet (migrate still running) or a
		 * lost connection: keep trying; the caller's stop ends it. */
		log_warn("sink database: preparing statements failed (SQLSTATE %s): %s",
			 e.sqlstate[0] ? e.sqlstate : "none", e.msg);
		util_sleep_ms(util_backoff_next(&backoff, 200, 5000), stop);
		if (*stop)
			return false;
	}
}

/* Run a prepared statement with text parameters: its result when it
 * returned want (the caller clears it), else NULL with e. */
static PGresult *run(struct apply *a, const char *name, int n, const char *const *params,
		     ExecStatusType want, struct db_err *e)
{
	return db_query_prepared(a->conn, name, n, params, NULL, NULL, want, e);
}

/* A failure's message for the caller of the apply_* call. */
static void err_out(const struct db_err *e, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s", e->msg);
}

static void write_audit(struct apply *a, const struct audit_line *l)
{
	char err[256];

	if (!audit_write(a->audit, l, err, sizeof err))
		log_warn("audit file: %s", err);
}

/* Insert one audit row of kind kind outside any transaction and write its
 * JSON line. expected < 0: computed from the projection. */
static enum apply_result audit_row(struct apply *a, const struct apply_msg *m, const char *kind,
				   int64_t expected, const char *detail, bool with_fields,
				   char *err, size_t errlen)
{
	char exp_s[24], got_s[24], part_s[16], off_s[24];
	const char *params[9];
	struct db_err e;
	PGresult *res;
	struct audit_line l;
	bool has_agg = with_fields && m->aggregate_id[0] != '\0';
	bool has_eid = with_fields && m->event_id[0] != '\0';

	snprintf(exp_s, sizeof exp_s, "%" PRId64, expected);
	snprintf(got_s, sizeof got_s, "%" PRId64, m->seq);
	snprintf(part_s, sizeof part_s, "%" PRId32, m->partition);
	snprintf(off_s, sizeof off_s, "%" PRId64, m->offset);
	params[0] = kind;
	params[1] = has_agg ? m->aggregate_id : NULL;
	params[2] = expected >= 0 ? exp_s : NULL;
	params[3] = m->seq > 0 ? got_s : NULL;
	params[4] = has_eid ? m->event_id : NULL;
	params[5] = a->consumer_id_s;
	params[6] = part_s;
	params[7] = off_s;
	params[8] = detail;
	res = run(a, "c_audit", 9, params, PGRES_TUPLES_OK, &e);
	if (res == NULL) {
		err_out(&e, err, errlen);
		if (transient(a->conn, &e))
			return APPLY_RETRY;
		/* A field the database refuses as text (bad UTF-8, say): record the
		 * message by its position alone. */
		if (data_refused(&e) && with_fields)
			return audit_row(a, m, kind, expected, detail, false, err, errlen);
		return APPLY_FAILED;
	}
	memset(&l, 0, sizeof l);
	l.detected_at = PQgetvalue(res, 0, 0);
	l.kind = kind;
	l.aggregate_id = params[1];
	l.expected_seq = PQgetisnull(res, 0, 1) ? -1 : strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	l.got_seq = m->seq > 0 ? m->seq : -1;
	l.event_id = params[4];
	l.consumer_id = a->consumer_id;
	l.kafka_partition = m->partition;
	l.kafka_offset = m->offset;
	l.detail = detail;
	write_audit(a, &l);
	PQclear(res);
	return strcmp(kind, "poison") == 0 ? APPLY_POISON : APPLY_DUPLICATE;
}

enum apply_result apply_poison(struct apply *a, const struct apply_msg *m, const char *detail,
			       char *err, size_t errlen)
{
	if (apply_lost(a)) {
		snprintf(err, errlen, "not connected");
		return APPLY_RETRY;
	}
	return audit_row(a, m, "poison", -1, detail, true, err, errlen);
}

static enum apply_result gap_row(struct apply *a, const struct apply_msg *m, int64_t expected,
				 char *err, size_t errlen)
{
	char exp_s[24], got_s[24], part_s[16], off_s[24];
	const char *params[7] = { m->aggregate_id, exp_s, got_s, m->event_id, a->consumer_id_s,
				  part_s, off_s };
	struct db_err e;
	PGresult *res;

	snprintf(exp_s, sizeof exp_s, "%" PRId64, expected);
	snprintf(got_s, sizeof got_s, "%" PRId64, m->seq);
	snprintf(part_s, sizeof part_s, "%" PRId32, m->partition);
	snprintf(off_s, sizeof off_s, "%" PRId64, m->offset);
	res = run(a, "c_gap", 7, params, PGRES_TUPLES_OK, &e);
	if (res == NULL) {
		err_out(&e, err, errlen);
		return transient(a->conn, &e) ? APPLY_RETRY : APPLY_FAILED;
	}
	if (PQntuples(res) == 1) {
		struct audit_line l = {
			.detected_at = PQgetvalue(res, 0, 0), .kind = "gap",
			.aggregate_id = m->aggregate_id, .expected_seq = expected, .got_seq = m->seq,
			.event_id = m->event_id, .consumer_id = a->consumer_id,
			.kafka_partition = m->partition, .kafka_offset = m->offset,
		};

		write_audit(a, &l);
	}
	PQclear(res);
	return APPLY_GAP;
}

/* Hold a gap's event instead of its inbox row (same transaction). */
static bool hold(struct apply *a, const struct apply_msg *m, const char *const v[4],
		 struct db_err *e)
{
	const char *p_eid[1] = { m->event_id };
	const char *params[10] = {
		m->aggregate_id, v[0], m->event_id, m->event_type,
		m->status[0] ? m->status : NULL, m->has_total ? v[3] : NULL,
		m->topic, v[1], v[2], a->consumer_id_s,
	};

	return db_run_prepared(a->conn, "c_inbox_undo", 1, p_eid, e) &&
	       db_run_prepared(a->conn, "c_hold", 10, params, e);
}

/* After the apply of seq next - 1, in its transaction: apply the held
 * events that follow it, in seq order, each with its inbox row. Their
 * healed-gap results go to *healed (*n of them; the caller clears them). */
static bool drain_held(struct apply *a, const char *agg, int64_t next, PGresult ***healed,
		       int *n, struct db_err *e)
{
	for (;;) {
		char seq_s[24];
		const char *p[2] = { agg, seq_s };
		PGresult *res, *r, **grown;
		bool fresh;

		snprintf(seq_s, sizeof seq_s, "%" PRId64, next);
		res = run(a, "c_held_next", 2, p, PGRES_TUPLES_OK, e);
		if (res == NULL)
			return false;
		if (PQntuples(res) == 0) {
			PQclear(res);
			return true;
		}
		{
			const char *p_eid[1] = { PQgetvalue(res, 0, 0) };

			r = run(a, "c_inbox", 1, p_eid, PGRES_COMMAND_OK, e);
		}
		if (r == NULL) {
			PQclear(res);
			return false;
		}
		fresh = strcmp(PQcmdTuples(r), "1") == 0;
		PQclear(r);
		if (!fresh) { /* applied already under another seq: drop the copy */
			PQclear(res);
			continue;
		}
		{
			const char *params[9] = {
				PQgetvalue(res, 0, 0), agg, seq_s, PQgetvalue(res, 0, 1),
				a->consumer_id_s, PQgetvalue(res, 0, 4), PQgetvalue(res, 0, 5),
				PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2),
				PQgetisnull(res, 0, 3) ? NULL : PQgetvalue(res, 0, 3),
			};

			r = run(a, "c_apply", 9, params, PGRES_TUPLES_OK, e);
		}
		PQclear(res);
		if (r == NULL)
			return false;
		grown = realloc(*healed, (size_t)(*n + 1) * sizeof *grown);
		if (grown == NULL) {
			PQclear(r);
			own_err(e, "out of memory");
			return false;
		}
		*healed = grown;
		(*healed)[(*n)++] = r;
		a->held_applied++;
		next++;
	}
}

/* The audit lines of the gaps an apply (of seq) healed. */
static void write_healed(struct apply *a, const struct apply_msg *m, const PGresult *healed,
			 int64_t seq)
{
	for (int i = 0; i < PQntuples(healed); i++) {
		struct audit_line l = {
			.detected_at = PQgetvalue(healed, i, 2), .kind = "gap_healed",
			.aggregate_id = m->aggregate_id,
			.expected_seq = strtoll(PQgetvalue(healed, i, 0), NULL, 10),
			.got_seq = strtoll(PQgetvalue(healed, i, 1), NULL, 10),
			.event_id = m->event_id, .consumer_id = a->consumer_id,
			.kafka_partition = m->partition, .kafka_offset = m->offset,
		};

		write_audit(a, &l);
		log_info("gap healed: order %s expected %" PRId64 " got %" PRId64
			 " (closed by seq %" PRId64 ")", m->aggregate_id, l.expected_seq,
			 l.got_seq, seq);
	}
}

int apply_held_applied(const struct apply *a)
{
	return a->held_applied;
}

/* ------------------------------------------------------------ one event */

/* One event's transaction as apply_event's stages hand it on: its values
 * as text, what event_lock read, the healed-gap rows of the applies
 * (event_txn_clear clears them), and why a stage failed. */
struct event_txn {
	const struct apply_msg *m;
	char seq_s[24], part_s[16], off_s[24], total_s[24];
	int64_t last;            /* the order's last_seq, locked */
	bool quarantined, has_held;
	PGresult *healed;        /* the gaps the event's apply healed */
	PGresult **held;         /* the same for each held event applied after it */
	int nheld;
	enum apply_result result; /* the outcome, once a stage says STAGE_DONE */
	struct db_err e;         /* the failure, once a stage says STAGE_FAILED */
};

/* What a stage says: go on to the next stage; the event is done (outside
 * the transaction: committed or rolled back; t->result, with err when it
 * says so); or a statement failed inside the transaction (t->e). */
enum stage { STAGE_NEXT, STAGE_DONE, STAGE_FAILED };

/* The event is dropped: the transaction rolled back, the event audited as
 * a duplicate (expected < 0: one past the order's last_seq). */
static enum stage event_dropped(struct apply *a, struct event_txn *t, int64_t expected,
				const char *detail, char *err, size_t errlen)
{
	db_rollback(a->conn);
	t->result = audit_row(a, t->m, "duplicate", expected, detail, true, err, errlen);
	return STAGE_DONE;
}

/* Stage lock: BEGIN, the order's projection row, created if new, locked
 * until commit (SQL_LOCK); its last_seq, whether it is quarantined and
 * whether it has held events. */
static enum stage event_lock(struct apply *a, struct event_txn *t)
{
	const char *p_agg[1] = { t->m->aggregate_id };
	PGresult *res = NULL;

	if (db_begin(a->conn, &t->e))
		res = run(a, "c_lock", 1, p_agg, PGRES_TUPLES_OK, &t->e);
	if (res != NULL && PQntuples(res) == 0) {
		PQclear(res);
		res = NULL;
		if (db_run_prepared(a->conn, "c_proj_new", 1, p_agg, &t->e))
			res = run(a, "c_lock", 1, p_agg, PGRES_TUPLES_OK, &t->e);
		if (res != NULL && PQntuples(res) != 1) {
			PQclear(res);
			res = NULL;
			own_err(&t->e, "projection row of %s vanished", t->m->aggregate_id);
		}
	}
	if (res == NULL)
		return STAGE_FAILED;
	t->last = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	t->quarantined = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	t->has_held = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	PQclear(res);
	return STAGE_NEXT;
}

/* Stage park: an order quarantined (and not being released) has a
 * dead-lettered event; keep this one, in arrival order, until the dead
 * letter is retried or dropped (SQL_PARK), and commit. A stale copy
 * (redelivered after a crash, say), or one parked already, is dropped. */
static enum stage event_park(struct apply *a, struct event_txn *t, char *err, size_t errlen)
{
	const struct apply_msg *m = t->m;
	const char *params[10] = {
		m->aggregate_id, t->seq_s, m->event_id, m->event_type,
		m->status[0] ? m->status : NULL, m->has_total ? t->total_s : NULL,
		m->topic, t->part_s, t->off_s, a->consumer_id_s,
	};
	PGresult *res;
	bool parked;

	if (!t->quarantined || a->release)
		return STAGE_NEXT;
	if (m->seq <= t->last)
		return event_dropped(a, t, t->last + 1, "stale aggregate_seq", err, errlen);
	res = run(a, "c_park", 10, params, PGRES_COMMAND_OK, &t->e);
	if (res == NULL)
		return STAGE_FAILED;
	parked = strcmp(PQcmdTuples(res), "1") == 0;
	PQclear(res);
	if (!db_commit(a->conn, &t->e))
		return STAGE_FAILED;
	t->result = APPLY_PARKED;
	if (!parked)
		t->result = audit_row(a, m, "duplicate", t->last + 1,
				      "already parked or dead-lettered", true, err, errlen);
	return STAGE_DONE;
}

/* Stage dedupe: the inbox row (SQL_INBOX); none inserted means the event
 * was seen before, a seq at or below last_seq that it is stale: either
 * way it is dropped. */
static enum stage event_dedupe(struct apply *a, struct event_txn *t, char *err, size_t errlen)
{
	const char *p_eid[1] = { t->m->event_id };
	PGresult *res = run(a, "c_inbox", 1, p_eid, PGRES_COMMAND_OK, &t->e);
	bool seen;

	if (res == NULL)
		return STAGE_FAILED;
	seen = strcmp(PQcmdTuples(res), "0") == 0;
	PQclear(res);
	if (seen)
		return event_dropped(a, t, -1, "event_id already in inbox", err, errlen);
	if (t->m->seq <= t->last)
		return event_dropped(a, t, t->last + 1, "stale aggregate_seq", err, errlen);
	return STAGE_NEXT;
}

/* Stage hold: a seq beyond last_seq + 1 is not applied but held in place
 * of its inbox row (hold), committed, and the gap audited; the apply of
 * the event before it applies it (drain_held). */
static enum stage event_hold(struct apply *a, struct event_txn *t, char *err, size_t errlen)
{
	const char *v[4] = { t->seq_s, t->part_s, t->off_s, t->total_s };

	if (t->m->seq <= t->last + 1)
		return STAGE_NEXT;
	if (!hold(a, t->m, v, &t->e) || !db_commit(a->conn, &t->e))
		return STAGE_FAILED;
	t->result = gap_row(a, t->m, t->last + 1, err, errlen);
	return STAGE_DONE;
}

/* Stage apply: seq = last_seq + 1 under the lock, so the side effect, the
 * new high-water mark and the healed gaps (SQL_APPLY); then the held
 * events that now follow, each with its inbox row (drain_held). */
static enum stage event_apply(struct apply *a, struct event_txn *t)
{
	const struct apply_msg *m = t->m;
	const char *params[9] = {
		m->event_id, m->aggregate_id, t->seq_s, m->event_type, a->consumer_id_s,
		t->part_s, t->off_s, m->status[0] ? m->status : NULL,
		m->has_total ? t->total_s : NULL,
	};

	t->healed = run(a, "c_apply", 9, params, PGRES_TUPLES_OK, &t->e);
	if (t->healed == NULL)
		return STAGE_FAILED;
	if (t->has_held &&
	    !drain_held(a, m->aggregate_id, m->seq + 1, &t->held, &t->nheld, &t->e))
		return STAGE_FAILED;
	return STAGE_NEXT;
}

/* Stage commit: COMMIT (when it fails on a lost connection the outcome is
 * unknown: the retry finds the inbox row if it did commit), then the
 * audit lines of the gaps it healed. */
static enum stage event_commit(struct apply *a, struct event_txn *t)
{
	const struct apply_msg *m = t->m;

	crash_point("consumer.after_apply");
	if (!db_commit(a->conn, &t->e))
		return STAGE_FAILED;
	crash_point("consumer.after_commit");
	write_healed(a, m, t->healed, m->seq);
	for (int i = 0; i < t->nheld; i++)
		write_healed(a, m, t->held[i], m->seq + 1 + i);
	if (t->nheld > 0)
		log_info("order %s: %d held event(s) after seq %" PRId64 " applied", m->aggregate_id,
			 t->nheld, m->seq);
	t->result = APPLY_APPLIED;
	return STAGE_DONE;
}

/* A stage failed inside the transaction: roll it back and say what the
 * failure means for the message. */
static enum apply_result event_failed(struct apply *a, const struct event_txn *t, char *err,
				      size_t errlen)
{
	a->held_applied = 0;
	db_rollback(a->conn);
	err_out(&t->e, err, errlen);
	if (transient(a->conn, &t->e))
		return APPLY_RETRY;
	if (data_refused(&t->e)) {
		/* The message's own data was refused (bad UTF-8, say). */
		char detail[512];

		snprintf(detail, sizeof detail, "refused by the database (SQLSTATE %s): %s",
			 t->e.sqlstate, err);
		snprintf(err, errlen, "%s", detail);
		return APPLY_POISON;
	}
	return rejected(&t->e) ? APPLY_REJECTED : APPLY_FAILED;
}

static void event_txn_clear(struct event_txn *t)
{
	PQclear(t->healed);
	for (int i = 0; i < t->nheld; i++)
		PQclear(t->held[i]);
	free(t->held);
}

enum apply_result apply_event(struct apply *a, const struct apply_msg *m, char *err, size_t errlen)
{
	struct event_txn t = { .m = m, .e = { .msg = "" } };
	enum stage s;

	a->held_applied = 0;
	if (apply_lost(a)) {
		snprintf(err, errlen, "not connected");
		return APPLY_RETRY;
	}
	snprintf(t.seq_s, sizeof t.seq_s, "%" PRId64, m->seq);
	snprintf(t.part_s, sizeof t.part_s, "%" PRId32, m->partition);
	snprintf(t.off_s, sizeof t.off_s, "%" PRId64, m->offset);
	snprintf(t.total_s, sizeof t.total_s, "%" PRId64, m->total_cents);
	s = event_lock(a, &t);
	if (s == STAGE_NEXT)
		s = event_park(a, &t, err, errlen);
	if (s == STAGE_NEXT)
		s = event_dedupe(a, &t, err, errlen);
	if (s == STAGE_NEXT)
		s = event_hold(a, &t, err, errlen);
	if (s == STAGE_NEXT)
		s = event_apply(a, &t);
	if (s == STAGE_NEXT)
		s = event_commit(a, &t);
	event_txn_clear(&t);
	return s == STAGE_DONE ? t.result : event_failed(a, &t, err, errlen);
}

/* ---------------------------------------------------------------- batches */

/* Message indexes by order id (byte order, as SQL_B_LOCK), then position. */
static int by_order(const void *x, const void *y, void *ctx)
{
	const struct apply_msg *m = ctx;
	int i = *(const int *)x, j = *(const int *)y;
	int c = strcmp(m[i].aggregate_id, m[j].aggregate_id);

	return c != 0 ? c : (i > j) - (i < j);
}

/* One array per column of the batch into v. False when out of memory. */
static bool batch_params(struct apply *a, const struct apply_msg *m, int n, const char *v[B_NARR])
{
	struct db_array *r = a->arr;

	for (int i = 0; i < B_NARR; i++)
		db_array_clear(&r[i]);
	for (int i = 0; i < n; i++) {
		db_array_add(&r[B_EID], m[i].event_id);
		db_array_add(&r[B_AGG], m[i].aggregate_id);
		db_array_add_int(&r[B_SEQ], m[i].seq);
		db_array_add(&r[B_TYPE], m[i].event_type);
		db_array_add_int(&r[B_PART], m[i].partition);
		db_array_add_int(&r[B_OFF], m[i].offset);
		db_array_add(&r[B_STATUS], m[i].status[0] ? m[i].status : NULL);
		if (m[i].has_total)
			db_array_add_int(&r[B_TOTAL], m[i].total_cents);
		else
			db_array_add(&r[B_TOTAL], NULL);
	}
	for (int i = 0; i < B_NARR; i++)
		if ((v[i] = db_array_text(&r[i])) == NULL)
			return false;
	return true;
}

/* The check before the batch apply, against the locked projection rows:
 * no order is quarantined, holds events or has an open gap, and each
 * order's events are exactly last_seq + 1, + 2, ... in batch order (the
 * order they came in on its partition). Returns n when all pass, else the
 * first batch position that does not (everything before it does), with
 * the reason in why. */
static int batch_in_sequence(struct apply *a, const struct apply_msg *m, int n,
			     const PGresult *lock, char *why, size_t whylen)
{
	int row = 0, rows = PQntuples(lock), first = n;

	for (int k = 0; k < n; k++)
		a->order[k] = k;
	qsort_r(a->order, (size_t)n, sizeof *a->order, by_order, (void *)m);
	for (int k = 0; k < n;) {
		const char *agg = m[a->order[k]].aggregate_id;
		int64_t next;

		while (row < rows && strcmp(PQgetvalue(lock, row, 0), agg) < 0)
			row++;
		if (row == rows || strcmp(PQgetvalue(lock, row, 0), agg) != 0 ||
		    strcmp(PQgetvalue(lock, row, 2), "t") == 0) {
			/* No projection row, or quarantined, held events, an open gap. */
			if (a->order[k] < first) {
				first = a->order[k];
				snprintf(why, whylen, "order %s is quarantined, holds events or has "
					 "an open gap", agg);
			}
			while (k < n && strcmp(m[a->order[k]].aggregate_id, agg) == 0)
				k++;
			continue;
		}
		next = strtoll(PQgetvalue(lock, row, 1), NULL, 10) + 1;
		for (; k < n && strcmp(m[a->order[k]].aggregate_id, agg) == 0; k++, next++)
			if (m[a->order[k]].seq != next && a->order[k] < first) {
				first = a->order[k];
				snprintf(why, whylen, "order %s: seq %" PRId64 " where %" PRId64
					 " comes next", agg, m[a->order[k]].seq, next);
			}
	}
	return first;
}

/* Batch stage lock: BEGIN, every order's projection row created if new and
 * locked in one order (SQL_B_PROJ_NEW, SQL_B_LOCK), in one round trip; then
 * the check against them (batch_in_sequence). False with e: a failure, or
 * the check refused the event at *refused_at. */
static bool batch_lock(struct apply *a, const struct apply_msg *m, int n,
		       const char *const v[B_NARR], int *refused_at, struct db_err *e)
{
	struct db_step s[] = {
		{ .sql = "BEGIN", .want = PGRES_COMMAND_OK },
		{ .name = "c_b_proj_new", .n = 1, .params = &v[B_AGG], .want = PGRES_COMMAND_OK },
		{ .name = "c_b_lock", .n = 1, .params = &v[B_AGG], .want = PGRES_TUPLES_OK,
		  .keep = true },
	};

	if (!db_pipeline(a->conn, s, 3, e))
		return false;
	*refused_at = batch_in_sequence(a, m, n, s[2].res, e->msg, sizeof e->msg);
	PQclear(s[2].res);
	if (*refused_at < n)
		return false;
	*refused_at = -1;
	return true;
}

/* Batch stages dedupe and apply, in one round trip: every event's inbox row
 * (SQL_B_INBOX), every side effect and each order's new high-water mark
 * (SQL_B_APPLY). An event seen before refuses the batch, which the caller
 * then rolls back, the side effects with it: the one-by-one path drops that
 * event. */
static bool batch_dedupe_apply(struct apply *a, int n, const char *const v[B_NARR],
			       struct db_err *e)
{
	const char *p[B_NARR + 1];
	struct db_step s[] = {
		{ .name = "c_b_inbox", .n = 1, .params = &v[B_EID], .want = PGRES_COMMAND_OK,
		  .keep = true },
		{ .name = "c_b_apply", .n = B_NARR + 1, .params = p, .want = PGRES_COMMAND_OK },
	};
	bool all_new;

	memcpy(p, v, B_NARR * sizeof *p);
	p[B_NARR] = a->consumer_id_s;
	if (!db_pipeline(a->conn, s, 2, e))
		return false;
	all_new = strtol(PQcmdTuples(s[0].res), NULL, 10) == n;
	PQclear(s[0].res);
	if (!all_new)
		own_err(e, "an event of the batch is in the inbox already");
	return all_new;
}

bool apply_batch(struct apply *a, const struct apply_msg *m, int n, int *refused_at, char *why,
		 size_t whylen)
{
	const char *v[B_NARR];
	struct db_err e = { .msg = "" };
	bool ok;

	*refused_at = -1;
	if (a->release || apply_lost(a)) {
		snprintf(why, whylen, a->release ? "release mode" : "not connected");
		return false;
	}
	if (n > CONF_CONSUMER_BATCH_MAX) {
		snprintf(why, whylen, "more than %d events", CONF_CONSUMER_BATCH_MAX);
		return false;
	}
	if (!batch_params(a, m, n, v)) {
		snprintf(why, whylen, "out of memory");
		return false;
	}
	ok = batch_lock(a, m, n, v, refused_at, &e) && batch_dedupe_apply(a, n, v, &e);
	if (ok) {
		crash_point("consumer.after_apply"); /* once per transaction, as apply_event */
		ok = db_commit(a->conn, &e);
	}
	if (ok) {
		crash_point("consumer.after_commit");
		return true;
	}
	err_out(&e, why, whylen);
	db_rollback(a->conn);
	return false;
}

void apply_set_release(struct apply *a, bool on)
{
	a->release = on;
}

PGconn *apply_conn(struct apply *a)
{
	return apply_lost(a) ? NULL : a->conn;
}

enum apply_result apply_audit(struct apply *a, const struct apply_msg *m, const char *kind,
			      const char *detail, char *err, size_t errlen)
{
	if (apply_lost(a)) {
		snprintf(err, errlen, "not connected");
		return APPLY_RETRY;
	}
	return audit_row(a, m, kind, -1, detail, true, err, errlen);
}

enum apply_result apply_dead_letter(struct apply *a, const struct apply_msg *m,
				    const struct apply_dead *d, int64_t *id, char *err,
				    size_t errlen)
{
	char att_s[16], first_s[24], last_s[24], part_s[16], off_s[24], seq_s[24], id_s[24];
	char error[1024], reason[64];
	struct db_err e = { .msg = "" };
	const char *params[17];
	int lengths[17] = { 0 }, formats[17] = { 0 };
	PGresult *res = NULL;
	enum apply_result r = APPLY_FAILED;
	bool in_txn = false;
	/* Only an order whose id is text can be quarantined (parse makes sure). */
	bool has_agg = m->aggregate_id[0] != '\0' &&
		       util_utf8_text(m->aggregate_id, strlen(m->aggregate_id));
	bool has_order = has_agg && m->seq > 0;

	if (apply_lost(a)) {
		snprintf(err, errlen, "not connected");
		return APPLY_RETRY;
	}
	if (d->key_len > INT_MAX || d->payload_len > INT_MAX) {
		snprintf(err, errlen, "message too large for a bytea parameter");
		return APPLY_FAILED;
	}
	snprintf(att_s, sizeof att_s, "%d", d->attempts);
	snprintf(first_s, sizeof first_s, "%" PRId64, d->first_failure_us);
	snprintf(last_s, sizeof last_s, "%" PRId64, d->last_failure_us);
	snprintf(part_s, sizeof part_s, "%" PRId32, m->partition);
	snprintf(off_s, sizeof off_s, "%" PRId64, m->offset);
	snprintf(seq_s, sizeof seq_s, "%" PRId64, m->seq);
	/* Text columns take text: what is not (a cut character, say) escaped. */
	util_utf8_escape(d->reason, strlen(d->reason), reason, sizeof reason);
	util_utf8_escape(d->error, strlen(d->error), error, sizeof error);
	params[0] = reason;
	params[1] = error;
	params[2] = att_s;
	params[3] = first_s;
	params[4] = last_s;
	params[5] = d->topic;
	params[6] = part_s;
	params[7] = off_s;
	params[8] = a->consumer_id_s;
	params[9] = m->event_id[0] ? m->event_id : NULL;
	params[10] = m->event_type[0] &&
			     util_utf8_text(m->event_type, strlen(m->event_type)) ? m->event_type
										  : NULL;
	params[11] = has_agg ? m->aggregate_id : NULL;
	params[12] = m->seq > 0 ? seq_s : NULL;
	params[13] = d->key;
	lengths[13] = (int)d->key_len;
	formats[13] = 1;
	params[14] = d->headers_json;
	params[15] = d->payload;
	lengths[15] = (int)d->payload_len;
	formats[15] = 1;
	params[16] = d->headers_hex;
	if (!db_begin(a->conn, &e)) {
		/* As for any failure without a transaction: try again. */
		err_out(&e, err, errlen);
		return APPLY_RETRY;
	}
	in_txn = true;
	if (has_order) {
		/* The projection lock first, as in apply_event and the release. */
		const char *p_agg[1] = { m->aggregate_id };

		if (!db_run_prepared(a->conn, "c_proj_new", 1, p_agg, &e) ||
		    (res = run(a, "c_lock", 1, p_agg, PGRES_TUPLES_OK, &e)) == NULL)
			goto out;
		PQclear(res);
	}
	res = db_query_prepared(a->conn, "c_dead", 17, params, lengths, formats, PGRES_TUPLES_OK,
				&e);
	if (res == NULL)
		goto out;
	if (PQntuples(res) < 1) {
		own_err(&e, "dead letter row not found after insert");
		goto out;
	}
	*id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	snprintf(id_s, sizeof id_s, "%" PRId64, *id);
	PQclear(res);
	res = NULL;
	if (has_order) {
		const char *qp[3] = { m->aggregate_id, id_s, seq_s };

		if (!db_run_prepared(a->conn, "c_quarantine", 3, qp, &e))
			goto out;
	}
	if (!db_commit(a->conn, &e))
		goto out;
	in_txn = false;
	r = APPLY_DUPLICATE;
out:
	if (in_txn) {
		/* Failed inside the transaction (e says why). */
		err_out(&e, err, errlen);
		r = transient(a->conn, &e) ? APPLY_RETRY : APPLY_FAILED;
		PQclear(res);
		res = NULL;
		db_rollback(a->conn);
	}
	PQclear(res);
	return r;
}

bool apply_report(struct apply *a, const struct apply_counters *c, int64_t started_us,
		  char *err, size_t errlen)
{
	const int64_t v[] = {
		c->received, c->applied, c->duplicates, c->gaps, c->poison, c->retries,
		c->dead_lettered, c->parked, c->foreign, c->foreign_partitions, c->reconnects,
	};
	enum { NV = sizeof v / sizeof v[0] };
	char pid_s[16], st_s[24], n[NV][24];
	const char *params[4 + NV];
	struct db_err e;

	if (apply_lost(a)) {
		snprintf(err, errlen, "not connected");
		return false;
	}
	snprintf(pid_s, sizeof pid_s, "%d", (int)getpid());
	snprintf(st_s, sizeof st_s, "%" PRId64, started_us);
	params[0] = a->consumer_id_s;
	params[1] = a->host;
	params[2] = pid_s;
	params[3] = st_s;
	for (int i = 0; i < NV; i++) {
		snprintf(n[i], sizeof n[i], "%" PRId64, v[i]);
		params[4 + i] = n[i];
	}
	/* Synchronous whatever the session says: its WAL flush covers every
	 * transaction this session committed asynchronously before it. */
	if (!db_begin(a->conn, &e)) {
		err_out(&e, err, errlen);
		return false;
	}
	if (!db_run(a->conn, "SET LOCAL synchronous_commit = on", 0, NULL, &e) ||
	    !db_run_prepared(a->conn, "c_report", 4 + NV, params, &e) ||
	    !db_commit(a->conn, &e)) {
		err_out(&e, err, errlen);
		db_rollback(a->conn);
		return false;
	}
	return true;
}
