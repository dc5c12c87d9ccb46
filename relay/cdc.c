/* The CDC relay.
 *
 * Why nothing is lost:
 *
 *  1. The slot's confirmed position (the flush LSN we report) moves past a
 *     transaction only after Kafka acknowledged every event of it and of
 *     every earlier transaction, AND those rows were marked sent. A restart
 *     (ours, a standby's, after a crash anywhere) streams again from the
 *     confirmed position: at-least-once, in commit order.
 *
 *  2. Rows committed before the slot existed are not in it. Whenever this
 *     relay creates the slot (first start, or after giving an invalidated
 *     slot up), it first publishes the backlog by polling, then creates the
 *     slot. Before every stream session (so also after a relay died right
 *     after creating the slot) it polls for every unsent row with an id up
 *     to the largest one visible then: every transaction that committed
 *     before the slot's consistent point is visible then, every later one
 *     is in the slot. Only then does it stream. The polling and the
 *     streaming run one after the other in this process, so an order's
 *     events still go out in sequence. A row the catch-up published and
 *     marked is in the slot too when it committed after the slot's
 *     confirmed position (a backlog written while the relay was down): the
 *     stream skips the ids the catch-up marked (poll_marked) until it
 *     passes the WAL insert position read after the catch-up (every row the
 *     catch-up saw committed before it), so such a backlog goes out once.
 *     The record outlives a session that ends before the stream passes
 *     that position: the next catch-up adds to it (it finds those rows
 *     sent), and the next stream, from the same confirmed position, still
 *     skips them.
 *
 *  3. sent_at stays the truth for "published": a streamed row is marked
 *     before its transaction is confirmed, so a polling relay that takes
 *     over (mode switch, fallback) publishes exactly the rows that may not
 *     have been.
 *
 *  4. Only the recorded Kafka cluster's acknowledgements count (cluster.h):
 *     the broker's cluster id is asked afresh when a session starts and
 *     before every mark UPDATE, after the reports it marks. When it is not
 *     the recorded cluster's, nothing is marked, so nothing past those
 *     events is confirmed: the session ends, and the next one starts with
 *     the catch-up poll, which publishes nothing until the recorded cluster
 *     answers again (or the new one is accepted).
 *
 *  5. A row Kafka refuses for good (publish_err_permanent) blocks only its
 *     own aggregate, as with polling: it gets refused_at and last_error
 *     and stays unsent, its aggregate joins the blocked set, and every
 *     later streamed event of a blocked aggregate is left unsent (not
 *     produced). The transaction is then settled like any other, so the
 *     slot moves on and every other aggregate streams at full speed. What
 *     was left unsent is in the table: every CDC_BLOCKED_MS the relay asks
 *     which aggregates are still refused (sql/008), and when one no longer
 *     is (its payload was fixed, refused_at cleared or older than
 *     PUBLISH_REFUSED_RETRY_S) it ends the session, whose successor's
 *     catch-up poll (2) publishes that aggregate's events in order before
 *     the stream goes on. A session starts with the blocked set read from
 *     the table, after the catch-up poll.
 *
 * Why exactly one relay streams: the active relay holds a session advisory
 * lock keyed by the slot name on its ordinary connection; standbys try it
 * every CDC_STANDBY_MS. A killed relay's sessions end with it, the lock is
 * released, a standby gets it and starts streaming (the server also refuses
 * a second walsender on an active slot: we retry until the old one is gone).
 *
 * Slot safety: heartbeats (pg_logical_emit_message) put something in the
 * WAL every heartbeat_ms so an idle outbox does not hold the slot back;
 * keepalive positions are confirmed when nothing is in flight; retained
 * WAL is checked every CDC_SLOT_CHECK_MS, warned about above wal_warn_mb,
 * and above wal_budget_mb (or when the server invalidated the slot) the
 * slot is dropped and recreated by way of 2.
 */
#include "cdc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "crash.h"
#include "db.h"
#include "kafka.h"
#include "log.h"
#include "pgoutput.h"
#include "poll.h"
#include "publish.h"
#include "util.h"

/* First key of the slot's leader lock (the second is hashtext(slot)). */
#define CDC_LOCK_NS 1868724325
#define CDC_STR_(x) #x
#define CDC_STR(x) CDC_STR_(x)
#define CDC_STANDBY_MS 500        /* standby's lock attempts */
#define CDC_STATUS_MS 1000        /* standby status update at least this often */
#define CDC_SLOT_CHECK_MS 5000    /* retained WAL check */
#define CDC_WARN_EVERY_MS 60000   /* retained-WAL warning repeat */
#define CDC_MARK_MS 50            /* mark acknowledged rows at least this often */
#define CDC_MARK_MAX 5000         /* ... or when this many are waiting */
#define CDC_COUNTERS_MS 1000
#define CDC_SUMMARY_MS 10000
#define CDC_BACKOFF_BASE_MS 100
#define CDC_WAIT_MS 100           /* socket wait slice */
#define CDC_CLUSTER_MS 5000       /* cluster id check before marking: timeout */
#define CDC_BLOCKED_MS 5000       /* are the blocked aggregates still refused? (point 5) */

/* One streamed event. row must come first: the delivery report's opaque
 * is &row (publish.c records the outcome there). */
struct cdc_event {
	struct publish_row row;
	char event_id[37];
	char strs[];        /* aggregate_id, aggregate_type, event_type */
};

/* One transaction, from Begin to the acknowledgement of its last event. */
struct cdc_txn {
	struct cdc_txn *next;
	uint64_t end_lsn;   /* from Commit; 0 until then */
	int64_t recv_us;
	int n, cap;
	int reported;       /* ev[0 .. reported-1] have their report (cdc_collect) */
	int enqueue_failed; /* events whose enqueue failed (cdc_on_insert) */
	struct cdc_event **ev;
};

struct cdc_counters {
	int64_t txns, published, acked, failed, marked, heartbeats, restarts;
};

struct cdc {
	const struct conf *cfg;
	int id;
	volatile sig_atomic_t *stop;
	char host[256];
	int64_t started_us;
	PGconn *db;            /* leader lock, marks, heartbeats, slot checks */
	PGconn *repl;          /* replication=database, COPY BOTH while streaming */
	struct publisher pub;
	bool leader;
	int log_fd;
	int64_t session;       /* stream sessions started, for the publish log */
	char pass_id[64];

	struct pgo_rel *rels;
	int nrels, relcap;
	struct cdc_txn *head, *tail; /* committed, not yet fully acknowledged */
	struct cdc_txn *cur;         /* between Begin and Commit */

	uint64_t write_lsn;    /* last position received */
	uint64_t flush_lsn;    /* last position confirmed to the server */
	uint64_t pending_lsn;  /* end of the acknowledged prefix awaiting its marks */
	int64_t *mark_ids;
	int nmark, markcap;
	int64_t mark_first_ms;
	bool mark_busy;        /* a mark UPDATE is in flight on db */
	uint64_t mark_lsn;     /* ... and the position it settles */
	int mark_n;
	struct db_array arr;   /* the mark's id array */

	int64_t status_ms, heartbeat_ms, slot_ms, warn_ms, counters_ms, summary_ms;
	int64_t summary_published;
	struct cdc_counters ctr;
	struct cluster_guard cluster;

	struct poll_marked caught; /* ids the catch-up poll marked (point 2) ... */
	uint64_t caught_lsn;       /* ... skipped in the stream up to this position */
	int64_t skipped;           /* streamed events skipped so far (this session) */

	char **blocked;        /* aggregates with a refused unsent row (point 5) */
	int nblocked, blockedcap;
	int64_t blocked_ms;    /* last check of the blocked set */
};

enum lead_result {
	LEAD_OK,        /* go on (to the next step: streaming) */
	LEAD_STOPPED,   /* *stop: clean end */
	LEAD_RETRY,     /* stream or broker trouble: back off, stream again */
	LEAD_DB_LOST,   /* the ordinary connection is gone: leadership too */
	LEAD_CONFIG,    /* cannot work with this configuration/schema */
};

static bool cdc_mark_done(struct cdc *x, bool wait, bool *moved, char *err, size_t errlen);

static const char SQL_MARK[] =
	"UPDATE public.outbox SET sent_at = now() "
	" WHERE id = ANY($1::bigint[]) AND sent_at IS NULL";

/* A row Kafka refused for good: left unsent, its aggregate skipped by
 * both relays (sql/008). */
static const char SQL_REFUSE[] =
	"UPDATE public.outbox SET attempts = attempts + 1, last_error = $2, refused_at = now() "
	" WHERE id = $1::bigint";

/* The aggregates still blocked by a refused row (the small partial index
 * outbox_refused). Upholds point 5: the same rule as the poll relay's claim. */
static const char SQL_REFUSED_AGGS[] =
	"SELECT DISTINCT aggregate_id FROM public.outbox "
	" WHERE refused_at IS NOT NULL AND sent_at IS NULL "
	"   AND refused_at > now() - interval '" PUBLISH_STR(PUBLISH_REFUSED_RETRY_S) " s'";

static const char SQL_SLOT[] =
	"SELECT plugin, coalesce(wal_status, ''), coalesce(active_pid, 0), "
	"       coalesce((pg_current_wal_lsn() - restart_lsn)::bigint, -1), "
	"       coalesce((confirmed_flush_lsn - '0/0'::pg_lsn)::bigint, 0) "
	"  FROM pg_replication_slots WHERE slot_name = $1";

/* ---- connections --------------------------------------------------------- */

static PGconn *cdc_repl_connect(struct cdc *x, char *err, size_t errlen)
{
	char appname[64];
	struct db_conn_opts o = { .appname = appname, .replication = true };
	struct db_err e;
	PGconn *conn;

	snprintf(appname, sizeof appname, "outbox-relay[%d] cdc", x->id);
	conn = db_open(x->cfg->db_conninfo, &o, &e);
	if (conn == NULL)
		snprintf(err, errlen, "%s", e.msg);
	return conn;
}

/* Rows of sql on the ordinary connection; NULL with the message in err. */
static PGresult *cdc_rows(struct cdc *x, const char *sql, int n, const char *const *params,
			  char *err, size_t errlen)
{
	struct db_err e;
	PGresult *res = db_query(x->db, sql, n, params, PGRES_TUPLES_OK, &e);

	if (res == NULL)
		snprintf(err, errlen, "%s", e.msg);
	return res;
}

static void cdc_counters_flush(struct cdc *x)
{
	struct publish_counters c = {
		x->ctr.txns, x->ctr.published, x->ctr.acked, x->ctr.failed, x->ctr.marked,
	};

	if (x->db == NULL)
		return;
	publish_counters_save(x->db, x->id, x->host, x->leader ? "cdc" : "cdc-standby",
			      x->started_us, &c, cluster_seen(&x->cluster),
			      cluster_mismatch(&x->cluster));
	x->counters_ms = util_mono_ms();
}

/* ---- the stream's state -------------------------------------------------- */

static void cdc_txn_free(struct cdc_txn *t)
{
	if (t == NULL)
		return;
	for (int i = 0; i < t->n; i++)
		free(t->ev[i]);
	free(t->ev);
	free(t);
}

/* Forget everything in flight: the producer first (so no delivery report
 * can touch a freed event), then the transactions and the relation cache.
 * What was not confirmed is streamed again by the next session. */
static void cdc_stream_reset(struct cdc *x)
{
	publish_close(&x->pub);
	if (x->repl != NULL) {
		PQfinish(x->repl);
		x->repl = NULL;
	}
	while (x->head != NULL) {
		struct cdc_txn *t = x->head;

		x->head = t->next;
		cdc_txn_free(t);
	}
	x->tail = NULL;
	cdc_txn_free(x->cur);
	x->cur = NULL;
	x->nrels = 0;
	x->nmark = 0;
	x->pending_lsn = 0;
	if (x->mark_busy) {
		/* The marks may or may not commit; either is fine (sent_at is
		 * only ever set for acknowledged rows). Free the connection. */
		(void)db_collect(x->db, NULL);
		x->mark_busy = false;
	}
}

/* ---- aggregates blocked by a refused row (point 5) ------------------------ */

static bool cdc_blocked_has(const struct cdc *x, const char *aggregate_id)
{
	for (int i = 0; i < x->nblocked; i++)
		if (strcmp(x->blocked[i], aggregate_id) == 0)
			return true;
	return false;
}

static bool cdc_blocked_add(struct cdc *x, const char *aggregate_id)
{
	if (cdc_blocked_has(x, aggregate_id))
		return true;
	if (x->nblocked == x->blockedcap) {
		int cap = x->blockedcap ? x->blockedcap * 2 : 8;
		char **n = realloc(x->blocked, (size_t)cap * sizeof *n);

		if (n == NULL)
			return false;
		x->blocked = n;
		x->blockedcap = cap;
	}
	x->blocked[x->nblocked] = strdup(aggregate_id);
	if (x->blocked[x->nblocked] == NULL)
		return false;
	x->nblocked++;
	return true;
}

static void cdc_blocked_clear(struct cdc *x)
{
	for (int i = 0; i < x->nblocked; i++)
		free(x->blocked[i]);
	x->nblocked = 0;
}

/* Read the refused aggregates. With fill, the blocked set becomes them
 * (a session's start); otherwise *released says whether a blocked one is
 * no longer among them, which ends the session (point 5). */
static bool cdc_blocked_read(struct cdc *x, bool fill, bool *released, char *err, size_t errlen)
{
	PGresult *res = cdc_rows(x, SQL_REFUSED_AGGS, 0, NULL, err, errlen);
	int n;

	*released = false;
	x->blocked_ms = util_mono_ms();
	if (res == NULL)
		return false;
	n = PQntuples(res);
	if (fill) {
		cdc_blocked_clear(x);
		for (int i = 0; i < n; i++)
			if (!cdc_blocked_add(x, PQgetvalue(res, i, 0))) {
				PQclear(res);
				snprintf(err, errlen, "out of memory");
				return false;
			}
	}
	for (int b = 0; b < x->nblocked && !*released; b++) {
		bool still = false;

		for (int i = 0; i < n && !still; i++)
			still = strcmp(PQgetvalue(res, i, 0), x->blocked[b]) == 0;
		if (!still) {
			snprintf(err, errlen, "aggregate %s is no longer refused by Kafka: a new "
				 "session's catch-up poll publishes its events in order",
				 x->blocked[b]);
			*released = true;
		}
	}
	PQclear(res);
	return true;
}

static struct pgo_rel *cdc_rel_find(struct cdc *x, uint32_t relid)
{
	for (int i = 0; i < x->nrels; i++)
		if (x->rels[i].relid == relid)
			return &x->rels[i];
	return NULL;
}

/* Whether relation relid (not named public.outbox in the stream) holds
 * outbox rows: a partition of public.outbox. The publication names the
 * partitioned root (publish_via_partition_root), yet PostgreSQL 15 was seen
 * to send a leaf partition's name after a server restart; skipping those
 * rows would lose them. A relation that no longer exists but has every
 * outbox column is taken for a partition dropped since (its rows were all
 * sent before a janitor dropped it). */
static bool cdc_outbox_partition(struct cdc *x, const struct pgo_rel *rel, bool *yes,
				 char *err, size_t errlen)
{
	char oid[16], tmp[256];
	const char *params[1] = { oid };
	PGresult *res;
	bool moved;

	/* The ordinary connection must be free: finish a mark in flight. */
	if (!cdc_mark_done(x, true, &moved, err, errlen))
		return false;
	snprintf(oid, sizeof oid, "%u", rel->relid);
	res = cdc_rows(x,
			"SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = $1::oid)"
			"  THEN 'gone' WHEN EXISTS (SELECT 1 FROM pg_partition_ancestors($1::oid::regclass) a"
			"                    WHERE a.relid = 'public.outbox'::regclass)"
			"  THEN 'outbox' ELSE 'other' END",
			1, params, err, errlen);
	if (res == NULL)
		return false;
	*yes = strcmp(PQgetvalue(res, 0, 0), "outbox") == 0 ||
	       (strcmp(PQgetvalue(res, 0, 0), "gone") == 0 && pgo_rel_complete(rel, tmp, sizeof tmp));
	PQclear(res);
	return true;
}

/* Relation message: cache (or replace) the relation's column positions. */
static bool cdc_on_relation(struct cdc *x, struct pgo_reader *r, char *err, size_t errlen)
{
	struct pgo_rel rel, *slot;

	if (!pgo_relation(r, &rel, err, errlen))
		return false;
	if (!rel.outbox) {
		if (!cdc_outbox_partition(x, &rel, &rel.outbox, err, errlen))
			return false;
		if (rel.outbox && !pgo_rel_complete(&rel, err, errlen))
			return false;
		if (rel.outbox)
			log_info("relation %u is a partition of public.outbox; its rows are streamed "
				 "as the outbox's", rel.relid);
	}
	slot = cdc_rel_find(x, rel.relid);
	if (slot == NULL) {
		if (x->nrels == x->relcap) {
			int cap = x->relcap ? x->relcap * 2 : 8;
			struct pgo_rel *n = realloc(x->rels, (size_t)cap * sizeof *n);

			if (n == NULL) {
				snprintf(err, errlen, "out of memory");
				return false;
			}
			x->rels = n;
			x->relcap = cap;
		}
		slot = &x->rels[x->nrels++];
	}
	*slot = rel;
	if (!rel.outbox)
		log_warn("publication %s carries a table other than public.outbox (relation %u); "
			 "its rows are ignored", x->cfg->relay_publication, rel.relid);
	return true;
}

/* Insert message: one outbox row, produced at once (the server sends a
 * transaction only after it committed). */
static bool cdc_on_insert(struct cdc *x, struct pgo_reader *r, char *err, size_t errlen)
{
	const struct pgo_rel *rel;
	struct pgo_row row;
	struct cdc_event *ev;
	struct cdc_txn *t = x->cur;
	uint32_t relid;
	char *s;

	if (!pgo_insert_relid(r, &relid)) {
		snprintf(err, errlen, "malformed Insert message");
		return false;
	}
	rel = cdc_rel_find(x, relid);
	if (rel == NULL) {
		snprintf(err, errlen, "Insert for relation %u before its Relation message", relid);
		return false;
	}
	if (!rel->outbox)
		return true;
	if (t == NULL) {
		snprintf(err, errlen, "Insert outside a transaction");
		return false;
	}
	if (!pgo_tuple(r, rel, &row, err, errlen))
		return false;
	/* Published and marked by the catch-up poll (point 2). */
	if (x->caught.n > 0 && poll_marked_has(&x->caught, row.id)) {
		x->skipped++;
		return true;
	}
	if (t->n == t->cap) {
		int cap = t->cap ? t->cap * 2 : 4;
		struct cdc_event **n = realloc(t->ev, (size_t)cap * sizeof *n);

		if (n == NULL)
			goto oom;
		t->ev = n;
		t->cap = cap;
	}
	ev = calloc(1, sizeof *ev + row.len[PGO_AGG_ID] + row.len[PGO_AGG_TYPE] +
			       row.len[PGO_EVENT_TYPE] + 3);
	if (ev == NULL)
		goto oom;
	t->ev[t->n++] = ev;
	memcpy(ev->event_id, row.val[PGO_EVENT_ID], 36);
	s = ev->strs;
	ev->row.aggregate_id = memcpy(s, row.val[PGO_AGG_ID], row.len[PGO_AGG_ID]);
	s += row.len[PGO_AGG_ID] + 1;
	ev->row.aggregate_type = memcpy(s, row.val[PGO_AGG_TYPE], row.len[PGO_AGG_TYPE]);
	s += row.len[PGO_AGG_TYPE] + 1;
	ev->row.event_type = memcpy(s, row.val[PGO_EVENT_TYPE], row.len[PGO_EVENT_TYPE]);
	ev->row.event_id = ev->event_id;
	ev->row.id = row.id;
	ev->row.seq = row.seq;
	ev->row.payload = row.val[PGO_PAYLOAD];
	ev->row.payload_len = row.len[PGO_PAYLOAD];
	ev->row.publish = true;
	/* Behind a refused event of its aggregate: left unsent, not produced
	 * (point 5); not an error, so the transaction settles. */
	if (cdc_blocked_has(x, ev->row.aggregate_id))
		ev->row.publish = false;
	/* After an enqueue error (e.g. a row too large for Kafka) the later
	 * events of the same aggregate in this transaction are not produced:
	 * they fail too (the transaction is streamed again), so they never
	 * reach the topic ahead of it. */
	for (int i = 0; t->enqueue_failed > 0 && i < t->n - 1 && ev->row.publish; i++)
		if (t->ev[i]->row.err != RD_KAFKA_RESP_ERR_NO_ERROR && !t->ev[i]->row.pending &&
		    strcmp(t->ev[i]->row.aggregate_id, ev->row.aggregate_id) == 0) {
			ev->row.publish = false;
			ev->row.err = RD_KAFKA_RESP_ERR__FAIL; /* not produced */
			break;
		}
	/* One row at a time: an enqueue error is recorded in the row; a
	 * permanent one blocks the aggregate (point 5), any other fails the
	 * transaction, which is then streamed again. */
	if (ev->row.publish && publish_send(&x->pub, &ev->row, 1) == 1)
		x->ctr.published++;
	else if (ev->row.publish)
		t->enqueue_failed++;
	if (publish_err_permanent(ev->row.err) && !cdc_blocked_add(x, ev->row.aggregate_id))
		goto oom;
	ev->row.payload = NULL; /* the message buffer goes away; librdkafka copied it */
	return true;
oom:
	snprintf(err, errlen, "out of memory");
	return false;
}

/* One pgoutput message (the payload of an XLogData). */
static bool cdc_on_message(struct cdc *x, struct pgo_reader *r, char *err, size_t errlen)
{
	uint64_t end;
	uint8_t tag = 0;

	if (!pgo_u8(r, &tag))
		goto bad;
	switch (tag) {
	case 'B':
		if (!pgo_begin(r))
			goto bad;
		cdc_txn_free(x->cur);
		x->cur = calloc(1, sizeof *x->cur);
		if (x->cur == NULL) {
			snprintf(err, errlen, "out of memory");
			return false;
		}
		x->cur->recv_us = util_now_us();
		return true;
	case 'C':
		if (!pgo_commit(r, &end))
			goto bad;
		if (x->cur == NULL) {
			snprintf(err, errlen, "Commit without Begin");
			return false;
		}
		x->cur->end_lsn = end;
		if (x->caught.n > 0 && end > x->caught_lsn) {
			log_info("the stream passed the catch-up poll: %" PRId64 " events it had "
				 "published were not sent again", x->skipped);
			poll_marked_free(&x->caught);
			x->skipped = 0;
		}
		if (x->tail != NULL)
			x->tail->next = x->cur;
		else
			x->head = x->cur;
		x->tail = x->cur;
		x->cur = NULL;
		x->ctr.txns++;
		return true;
	case 'R':
		return cdc_on_relation(x, r, err, errlen);
	case 'I':
		return cdc_on_insert(x, r, err, errlen);
	default:
		/* Origin, Type, logical Message (our heartbeats), and the
		 * kinds the publication excludes: nothing to do. */
		return true;
	}
bad:
	snprintf(err, errlen, "malformed pgoutput message '%c'", tag);
	return false;
}

/* Standby status update: received up to write_lsn, durable up to
 * flush_lsn (the slot's confirmed position follows flush). */
static bool cdc_send_status(struct cdc *x, bool reply)
{
	unsigned char m[PGO_STATUS_LEN];

	pgo_status(m, x->write_lsn, x->flush_lsn, util_now_us(), reply);
	x->status_ms = util_mono_ms();
	return PQputCopyData(x->repl, (const char *)m, sizeof m) == 1 && PQflush(x->repl) == 0;
}

/* Nothing received and unconfirmed: a keepalive's position may be
 * confirmed as is. */
static bool cdc_idle(const struct cdc *x)
{
	return x->head == NULL && x->cur == NULL && x->nmark == 0 && x->pending_lsn == 0 &&
	       !x->mark_busy;
}

/* Record an event Kafka refused for good (point 5): refused_at, an
 * attempt and last_error, after the mark in flight (if any) is settled.
 * Its aggregate is already in the blocked set (cdc_on_insert, or here for a
 * refusal that came in a delivery report). */
static bool cdc_refuse(struct cdc *x, const struct cdc_event *ev, char *err, size_t errlen)
{
	char id[32], why[512];
	const char *params[2] = { id, why };
	struct db_err e;
	bool moved;

	if (!cdc_blocked_add(x, ev->row.aggregate_id)) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	if (!cdc_mark_done(x, true, &moved, err, errlen))
		return false;
	snprintf(id, sizeof id, "%" PRId64, ev->row.id);
	snprintf(why, sizeof why, "%s: %s (refused by Kafka for good: this aggregate waits until "
		 "the payload is updated or refused_at is cleared, or for %d s)",
		 rd_kafka_err2name(ev->row.err), rd_kafka_err2str(ev->row.err),
		 PUBLISH_REFUSED_RETRY_S);
	if (!db_run(x->db, SQL_REFUSE, 2, params, &e)) {
		snprintf(err, errlen, "%s", e.msg);
		return false;
	}
	x->ctr.failed++;
	log_warn("event %s (%s #%" PRId64 ", %zu bytes) refused by Kafka for good: %s; left "
		 "unsent with refused_at, the later events of %s wait behind it (outboxctl "
		 "status), every other aggregate goes on", ev->event_id, ev->row.aggregate_id,
		 ev->row.seq, ev->row.payload_len, rd_kafka_err2str(ev->row.err),
		 ev->row.aggregate_id);
	return true;
}

/* The first event of t whose failure means "stream t again": one Kafka
 * may still take (publish_err_permanent says which it never will). NULL
 * when there is none. */
static const struct cdc_event *cdc_txn_failed(const struct cdc_txn *t)
{
	for (int i = 0; i < t->n; i++)
		if (t->ev[i]->row.err != RD_KAFKA_RESP_ERR_NO_ERROR &&
		    !publish_err_permanent(t->ev[i]->row.err))
			return t->ev[i];
	return NULL;
}

/* Move fully reported transactions, oldest first, to the mark batch: their
 * acknowledged events are marked, refused ones recorded, the ones behind a
 * refused event left unsent (point 5). False (err set) when one had an
 * event that failed otherwise: the stream must restart. */
static bool cdc_collect(struct cdc *x, char *err, size_t errlen)
{
	while (x->head != NULL) {
		struct cdc_txn *t = x->head;
		const struct cdc_event *bad;

		/* A report, once in, stays in: resume where the last call stopped
		 * (a transaction of 100k events is otherwise scanned again on
		 * every round of the stream loop). */
		while (t->reported < t->n && !t->ev[t->reported]->row.pending)
			t->reported++;
		if (t->reported < t->n)
			return true;
		if (x->log_fd >= 0 && t->n > 0) {
			struct publish_row *rows = malloc((size_t)t->n * sizeof *rows);

			if (rows != NULL) {
				for (int i = 0; i < t->n; i++)
					rows[i] = t->ev[i]->row;
				if (!publish_log_write(x->log_fd, x->id, x->pass_id, rows, t->n,
						       t->recv_us))
					log_warn("publish_log: %s", strerror(errno));
				free(rows);
			}
		}
		bad = cdc_txn_failed(t);
		if (bad != NULL) {
			x->ctr.failed++;
			snprintf(err, errlen, "event %s (%s #%" PRId64 ") not acknowledged: %s; "
				 "streaming again from %X/%X", bad->event_id, bad->row.aggregate_id,
				 bad->row.seq, rd_kafka_err2str(bad->row.err),
				 (unsigned)(x->flush_lsn >> 32), (unsigned)x->flush_lsn);
			return false;
		}
		for (int i = 0; i < t->n; i++) {
			const struct cdc_event *ev = t->ev[i];

			if (ev->row.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
				if (!cdc_refuse(x, ev, err, errlen))
					return false;
				continue;
			}
			/* Behind a refused event of its aggregate (not produced, or
			 * acknowledged after a refusal that came in a delivery
			 * report): left unsent, so the catch-up poll sends it
			 * again after the refused one, in order (poll.c point 4). */
			if (!ev->row.enqueued || cdc_blocked_has(x, ev->row.aggregate_id))
				continue;
			if (x->nmark == x->markcap) {
				int cap = x->markcap ? x->markcap * 2 : 1024;
				int64_t *n = realloc(x->mark_ids, (size_t)cap * sizeof *n);

				if (n == NULL) {
					snprintf(err, errlen, "out of memory");
					return false;
				}
				x->mark_ids = n;
				x->markcap = cap;
			}
			if (x->nmark == 0)
				x->mark_first_ms = util_mono_ms();
			x->mark_ids[x->nmark++] = ev->row.id;
			x->ctr.acked++;
		}
		x->pending_lsn = t->end_lsn;
		x->head = t->next;
		if (x->head == NULL)
			x->tail = NULL;
		cdc_txn_free(t);
	}
	return true;
}

/* Send the UPDATE that marks the acknowledged batch sent, without waiting
 * for it (the stream keeps flowing meanwhile; cdc_mark_done collects the
 * result). A batch of no rows (transactions without outbox rows) settles
 * at once. False when it could not be sent. */
static bool cdc_mark_send(struct cdc *x, char *err, size_t errlen)
{
	const char *params[1];
	struct db_err e;

	if (x->pending_lsn == 0 || x->mark_busy)
		return true;
	if (x->nmark == 0) {
		if (x->pending_lsn > x->flush_lsn)
			x->flush_lsn = x->pending_lsn;
		x->pending_lsn = 0;
		return true;
	}
	db_array_clear(&x->arr);
	for (int i = 0; i < x->nmark; i++)
		db_array_add_int(&x->arr, x->mark_ids[i]);
	if ((params[0] = db_array_text(&x->arr)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	/* The reports being marked are in: were they the recorded cluster's?
	 * Anything but a plain yes marks nothing and confirms nothing (point 4). */
	if (x->pub.rk == NULL) {
		snprintf(err, errlen, "no producer to check the Kafka cluster with");
		return false;
	}
	switch (cluster_check(&x->cluster, x->db, x->pub.rk, CDC_CLUSTER_MS, err, errlen)) {
	case CLUSTER_OK:
		break;
	case CLUSTER_UNKNOWN: {
		char why[512];

		snprintf(why, sizeof why, "%s", err);
		snprintf(err, errlen, "%d acknowledged events not marked sent: the Kafka cluster id "
			 "could not be checked (%s)", x->nmark, why);
		return false;
	}
	default:
		snprintf(err, errlen, "%d events acknowledged by a broker that is not on the recorded "
			 "Kafka cluster %s: not marked sent, nothing confirmed past them", x->nmark,
			 x->cluster.rec.id);
		return false;
	}
	crash_point("relay.after_publish");
	if (!db_send_run(x->db, SQL_MARK, 1, params, &e)) {
		snprintf(err, errlen, "%s", e.msg);
		return false;
	}
	x->mark_busy = true;
	x->mark_lsn = x->pending_lsn;
	x->mark_n = x->nmark;
	x->nmark = 0;
	x->pending_lsn = 0;
	return true;
}

/* Collect the mark UPDATE's result (waiting for it when wait is set):
 * once it committed, its position may be confirmed (flush_lsn moves and
 * *moved is set). False when it failed: the stream restarts and the rows
 * go out again. */
static bool cdc_mark_done(struct cdc *x, bool wait, bool *moved, char *err, size_t errlen)
{
	struct db_err e;

	*moved = false;
	if (!x->mark_busy)
		return true;
	if (!wait && db_busy(x->db))
		return true;
	x->mark_busy = false;
	if (!db_collect(x->db, &e)) {
		snprintf(err, errlen, "%s", e.msg);
		return false;
	}
	x->ctr.marked += x->mark_n;
	crash_point("relay.after_mark");
	if (x->mark_lsn > x->flush_lsn) {
		x->flush_lsn = x->mark_lsn;
		*moved = true;
	}
	return true;
}

/* ---- slot management ----------------------------------------------------- */

static bool cdc_ensure_publication(struct cdc *x, char *err, size_t errlen)
{
	const char *params[1] = { x->cfg->relay_publication };
	PGresult *res = cdc_rows(x,
				  "SELECT count(*), count(*) FILTER (WHERE EXISTS ("
				  "  SELECT 1 FROM pg_publication_tables t WHERE t.pubname = p.pubname"
				  "   AND t.schemaname = 'public' AND t.tablename = 'outbox'))"
				  "  FROM pg_publication p WHERE p.pubname = $1",
				  1, params, err, errlen);
	char *ident, sql[256];
	struct db_err e;
	bool exists, carries;

	if (res == NULL)
		return false;
	exists = PQgetvalue(res, 0, 0)[0] == '1';
	carries = PQgetvalue(res, 0, 1)[0] == '1';
	PQclear(res);
	if (carries)
		return true;
	ident = PQescapeIdentifier(x->db, x->cfg->relay_publication,
				   strlen(x->cfg->relay_publication));
	if (ident == NULL) {
		db_error(x->db, NULL, err, errlen);
		return false;
	}
	/* Inserts only; a partitioned outbox is published as its root. A
	 * publication that lost the table (the outbox was replaced by a new
	 * one) is pointed at the current public.outbox. */
	if (exists)
		snprintf(sql, sizeof sql, "ALTER PUBLICATION %s SET TABLE public.outbox", ident);
	else
		snprintf(sql, sizeof sql,
			 "CREATE PUBLICATION %s FOR TABLE public.outbox "
			 "WITH (publish = 'insert', publish_via_partition_root = true)", ident);
	PQfreemem(ident);
	if (db_run(x->db, sql, 0, NULL, &e)) {
		log_info("%s publication %s on public.outbox (inserts)",
			 exists ? "re-pointed" : "created", x->cfg->relay_publication);
		return true;
	}
	if (strcmp(e.sqlstate, DB_DUPLICATE_OBJECT) == 0)
		return true; /* another relay was quicker */
	snprintf(err, errlen, "%s", e.msg);
	return false;
}

struct cdc_slot {
	bool exists;
	char wal_status[32];
	int active_pid;
	int64_t retained;    /* bytes, -1 when unknown (lost) */
	uint64_t confirmed;
};

static bool cdc_slot_read(struct cdc *x, struct cdc_slot *s, char *err, size_t errlen)
{
	const char *params[1] = { x->cfg->relay_slot };
	PGresult *res = cdc_rows(x, SQL_SLOT, 1, params, err, errlen);

	memset(s, 0, sizeof *s);
	if (res == NULL)
		return false;
	if (PQntuples(res) == 1) {
		s->exists = true;
		if (strcmp(PQgetvalue(res, 0, 0), "pgoutput") != 0) {
			snprintf(err, errlen, "slot %s uses plugin %s, not pgoutput",
				 x->cfg->relay_slot, PQgetvalue(res, 0, 0));
			PQclear(res);
			return false;
		}
		snprintf(s->wal_status, sizeof s->wal_status, "%s", PQgetvalue(res, 0, 1));
		s->active_pid = atoi(PQgetvalue(res, 0, 2));
		s->retained = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
		s->confirmed = strtoull(PQgetvalue(res, 0, 4), NULL, 10);
	}
	PQclear(res);
	return true;
}

static bool cdc_slot_drop(struct cdc *x, char *err, size_t errlen)
{
	const char *params[1] = { x->cfg->relay_slot };
	PGresult *res = cdc_rows(x, "SELECT pg_drop_replication_slot($1)", 1, params, err,
				  errlen);

	if (res == NULL)
		return false;
	PQclear(res);
	return true;
}

/* Create the slot after publishing the backlog by polling (so the slot
 * does not hold WAL back while a long backlog goes out). */
static enum lead_result cdc_slot_create(struct cdc *x, char *err, size_t errlen)
{
	const char *params[1] = { x->cfg->relay_slot };
	PGresult *res;
	int rc;

	log_info("publishing the outbox backlog by polling before creating slot %s",
		 x->cfg->relay_slot);
	rc = poll_drain(x->cfg, x->id, INT64_MAX, false, NULL, x->stop);
	if (rc != 0)
		return rc == 2 ? LEAD_CONFIG : *x->stop ? LEAD_STOPPED : LEAD_RETRY;
	res = cdc_rows(x, "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')",
			1, params, err, errlen);
	if (res == NULL)
		return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
	log_info("created logical replication slot %s (pgoutput) at %s", x->cfg->relay_slot,
		 PQgetvalue(res, 0, 0));
	PQclear(res);
	return LEAD_OK;
}

/* Before every stream session: publish by polling every unsent row with an
 * id up to the largest visible now (point 2 at the top). Every row that
 * committed before the slot's consistent point is visible and, if not yet
 * marked, goes out here; every later one is in the slot. Done at every
 * start, not only after creating the slot, so a relay killed between
 * creating the slot and this step leaves nothing behind for the next one. */
static enum lead_result cdc_catch_up(struct cdc *x, char *err, size_t errlen)
{
	PGresult *res;
	int64_t max_id;
	int rc;

	res = cdc_rows(x, "SELECT coalesce(max(id), 0) FROM public.outbox", 0, NULL, err,
			errlen);
	if (res == NULL)
		return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
	max_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	rc = poll_drain(x->cfg, x->id, max_id, true, &x->caught, x->stop);
	if (rc != 0)
		return rc == 2 ? LEAD_CONFIG : *x->stop ? LEAD_STOPPED : LEAD_RETRY;
	/* Every row the drain marked committed before this position. */
	res = cdc_rows(x, "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint", 0,
			NULL, err, errlen);
	if (res == NULL)
		return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
	x->caught_lsn = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	if (x->caught.failed) {
		log_warn("out of memory for the ids the catch-up poll published: the stream sends "
			 "them again (consumers drop the copies)");
		poll_marked_free(&x->caught);
	}
	log_info("unsent rows up to id %" PRId64 " published by polling; streaming from the slot "
		 "(skipping what the poll published, %d id runs)", max_id, x->caught.n);
	return LEAD_OK;
}

/* Check the slot before streaming; gives an invalidated or over-budget slot
 * up (loudly) and creates a missing one. LEAD_OK: stream now. */
static enum lead_result cdc_slot_prepare(struct cdc *x, char *err, size_t errlen)
{
	struct cdc_slot s;
	int64_t budget = (int64_t)x->cfg->relay_wal_budget_mb * 1024 * 1024;

	if (!cdc_slot_read(x, &s, err, errlen))
		return db_lost(x->db) ? LEAD_DB_LOST : LEAD_CONFIG;
	if (s.exists && (strcmp(s.wal_status, "lost") == 0 || s.retained > budget)) {
		if (strcmp(s.wal_status, "lost") == 0)
			log_error("SLOT %s IS INVALIDATED (wal_status = lost: the server removed WAL "
				  "it still needed). Falling back to polling for the backlog, then "
				  "recreating the slot", x->cfg->relay_slot);
		else
			log_error("SLOT %s RETAINS %" PRId64 " MB OF WAL, over [relay] "
				  "wal_budget_mb = %d. Giving it up: falling back to polling for "
				  "the backlog, then recreating the slot", x->cfg->relay_slot,
				  s.retained >> 20, x->cfg->relay_wal_budget_mb);
		if (!cdc_slot_drop(x, err, errlen))
			return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
		s.exists = false;
	}
	if (!s.exists) {
		enum lead_result r = cdc_slot_create(x, err, errlen);

		if (r != LEAD_OK)
			return r;
		if (!cdc_slot_read(x, &s, err, errlen))
			return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
	}
	if (x->flush_lsn < s.confirmed)
		x->flush_lsn = s.confirmed;
	return cdc_catch_up(x, err, errlen);
}

/* During streaming: warn above wal_warn_mb, give up above the budget.
 * LEAD_OK: all well. */
static enum lead_result cdc_slot_watch(struct cdc *x, char *err, size_t errlen)
{
	struct cdc_slot s;
	int64_t now = util_mono_ms();

	x->slot_ms = now;
	if (!cdc_slot_read(x, &s, err, errlen))
		return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
	if (!s.exists) {
		snprintf(err, errlen, "slot %s disappeared", x->cfg->relay_slot);
		return LEAD_RETRY;
	}
	if (strcmp(s.wal_status, "lost") == 0 ||
	    s.retained > (int64_t)x->cfg->relay_wal_budget_mb * 1024 * 1024) {
		snprintf(err, errlen, "slot %s: wal_status %s, retained %" PRId64 " MB",
			 x->cfg->relay_slot, s.wal_status, s.retained >> 20);
		return LEAD_RETRY; /* cdc_slot_prepare gives it up on the next round */
	}
	if (s.retained > (int64_t)x->cfg->relay_wal_warn_mb * 1024 * 1024 &&
	    (x->warn_ms == 0 || now - x->warn_ms >= CDC_WARN_EVERY_MS)) {
		log_warn("slot %s retains %" PRId64 " MB of WAL (warning above %d MB, giving the "
			 "slot up above %d MB)", x->cfg->relay_slot, s.retained >> 20,
			 x->cfg->relay_wal_warn_mb, x->cfg->relay_wal_budget_mb);
		x->warn_ms = now;
	}
	return LEAD_OK;
}

/* ---- streaming ----------------------------------------------------------- */

static enum lead_result cdc_start(struct cdc *x, char *err, size_t errlen)
{
	char *slot = NULL, *pub = NULL, sql[512];
	PGresult *res;
	struct db_err e;
	enum lead_result out = LEAD_RETRY;
	bool released;

	/* After the catch-up poll: what it left unsent behind a refused row. */
	if (!cdc_blocked_read(x, true, &released, err, errlen))
		return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
	if (x->nblocked > 0)
		log_info("%d aggregates have an event Kafka refused for good: their streamed "
			 "events are left unsent behind it (outboxctl status)", x->nblocked);
	x->repl = cdc_repl_connect(x, err, errlen);
	if (x->repl == NULL)
		return LEAD_RETRY;
	slot = PQescapeIdentifier(x->repl, x->cfg->relay_slot, strlen(x->cfg->relay_slot));
	pub = PQescapeLiteral(x->repl, x->cfg->relay_publication,
			      strlen(x->cfg->relay_publication));
	if (slot == NULL || pub == NULL) {
		db_error(x->repl, NULL, err, errlen);
		goto out;
	}
	/* From the slot's confirmed position ("0/0"); messages: our heartbeats. */
	snprintf(sql, sizeof sql,
		 "START_REPLICATION SLOT %s LOGICAL 0/0 (\"proto_version\" '1', "
		 "\"publication_names\" %s, \"messages\" 'true')", slot, pub);
	/* 55006: the slot is still held by the walsender of a relay that
	 * just died; it goes away when the server notices (we retry). */
	res = db_query(x->repl, sql, 0, NULL, PGRES_COPY_BOTH, &e);
	if (res == NULL) {
		snprintf(err, errlen, "%s", e.msg);
		goto out;
	}
	PQclear(res);
	if (!publish_open(&x->pub, x->cfg, err, errlen)) {
		out = LEAD_CONFIG;
		goto out;
	}
	/* Stream nothing to another cluster (a broker that does not answer is
	 * no reason not to start: the check before each mark decides). The
	 * producer was created just now, so the recorded cluster coming back
	 * (CLUSTER_BACK) needs no new one. */
	if (cluster_check(&x->cluster, x->db, x->pub.rk, CDC_CLUSTER_MS, err, errlen) ==
	    CLUSTER_OTHER) {
		snprintf(err, errlen, "the broker is not on the recorded Kafka cluster %s",
			 x->cluster.rec.id);
		goto out;
	}
	err[0] = '\0';
	x->session++;
	snprintf(x->pass_id, sizeof x->pass_id, "%d.%d.cdc%" PRId64, x->id, (int)getpid(),
		 x->session);
	out = LEAD_OK; /* streaming */
out:
	PQfreemem(slot);
	PQfreemem(pub);
	if (out != LEAD_OK) {
		PQfinish(x->repl);
		x->repl = NULL;
	}
	return out;
}

/* One CopyData from the server. */
static bool cdc_on_copydata(struct cdc *x, const char *buf, int len, char *err, size_t errlen)
{
	struct pgo_reader r = { (const unsigned char *)buf, (const unsigned char *)buf + len };
	uint64_t lsn;
	uint8_t kind;
	bool reply;

	if (!pgo_u8(&r, &kind))
		goto bad;
	if (kind == 'w') {
		if (!pgo_xlogdata(&r, &lsn))
			goto bad;
		if (lsn > x->write_lsn)
			x->write_lsn = lsn;
		if (!cdc_on_message(x, &r, err, errlen))
			return false;
		/* Settled up to here (e.g. after a heartbeat on an idle outbox). */
		if (cdc_idle(x) && lsn > x->flush_lsn)
			x->flush_lsn = lsn;
		return true;
	}
	if (kind == 'k') {
		if (!pgo_keepalive(&r, &lsn, &reply))
			goto bad;
		if (lsn > x->write_lsn)
			x->write_lsn = lsn;
		if (cdc_idle(x) && lsn > x->flush_lsn)
			x->flush_lsn = lsn; /* everything before it was seen and settled */
		if (reply && !cdc_send_status(x, false)) {
			db_error(x->repl, NULL, err, errlen);
			return false;
		}
	}
	return true;
bad:
	snprintf(err, errlen, "malformed replication message");
	return false;
}

static void cdc_heartbeat(struct cdc *x)
{
	struct db_err e;

	if (db_run(x->db, "SELECT pg_logical_emit_message(false, 'outboxd.heartbeat', '')", 0,
		   NULL, &e))
		x->ctr.heartbeats++;
	else
		log_warn("heartbeat: %s", e.msg);
	x->heartbeat_ms = util_mono_ms();
}

static void cdc_summary(struct cdc *x, bool force)
{
	int64_t now = util_mono_ms();
	int64_t n = x->ctr.published - x->summary_published;
	char lsn[24];

	if (!force && now - x->summary_ms < CDC_SUMMARY_MS)
		return;
	pgo_lsn_str(x->flush_lsn, lsn);
	if (n > 0 || force)
		log_info("streamed %" PRId64 " events in %.1f s (%.0f/s); totals: transactions %"
			 PRId64 ", published %" PRId64 ", acked %" PRId64 ", failed %" PRId64
			 ", marked %" PRId64 ", heartbeats %" PRId64 ", stream restarts %" PRId64
			 "; confirmed %s",
			 n, (double)(now - x->summary_ms) / 1000.0,
			 (double)n * 1000.0 / (double)(now - x->summary_ms + 1), x->ctr.txns,
			 x->ctr.published, x->ctr.acked, x->ctr.failed, x->ctr.marked,
			 x->ctr.heartbeats, x->ctr.restarts, lsn);
	x->summary_ms = now;
	x->summary_published = x->ctr.published;
}

/* Finish what is in flight on a clean stop: wait for the reports, mark,
 * confirm. What does not make it is streamed again next time. */
static void cdc_settle(struct cdc *x)
{
	char err[512];
	bool moved;

	if (x->pub.rk != NULL &&
	    !publish_wait(&x->pub, NULL, 0, x->cfg->kafka_delivery_timeout_ms + 5000))
		log_warn("stopping with %d events unacknowledged; they are streamed again",
			 publish_outstanding());
	if (cdc_collect(x, err, sizeof err) && cdc_mark_done(x, true, &moved, err, sizeof err) &&
	    cdc_mark_send(x, err, sizeof err) && cdc_mark_done(x, true, &moved, err, sizeof err)) {
		if (x->repl != NULL && !cdc_send_status(x, false))
			log_warn("final status update failed");
	}
}

static enum lead_result cdc_stream(struct cdc *x, char *err, size_t errlen)
{
	enum lead_result out;
	char lsn[24];

	out = cdc_start(x, err, errlen);
	if (out != LEAD_OK)
		return out;
	pgo_lsn_str(x->flush_lsn, lsn);
	log_info("streaming slot %s (publication %s) from %s", x->cfg->relay_slot,
		 x->cfg->relay_publication, lsn);
	while (!*x->stop) {
		struct pollfd pfd[2] = {
			{ .fd = PQsocket(x->repl), .events = POLLIN, .revents = 0 },
			{ .fd = PQsocket(x->db), .events = POLLIN, .revents = 0 },
		};
		int64_t now;
		bool moved;
		char *buf;
		int n;

		if (poll(pfd, x->mark_busy ? 2 : 1, CDC_WAIT_MS) < 0 && errno != EINTR) {
			snprintf(err, errlen, "poll: %s", strerror(errno));
			return LEAD_RETRY;
		}
		if (PQconsumeInput(x->repl) == 0) {
			db_error(x->repl, NULL, err, errlen);
			return LEAD_RETRY;
		}
		while ((n = PQgetCopyData(x->repl, &buf, 1)) > 0) {
			bool ok = cdc_on_copydata(x, buf, n, err, errlen);

			PQfreemem(buf);
			if (!ok)
				return LEAD_RETRY;
		}
		if (n == -1) {
			PGresult *res = PQgetResult(x->repl);

			db_error(x->repl, res, err, errlen);
			PQclear(res);
			if (err[0] == '\0')
				snprintf(err, errlen, "the server ended the stream");
			return LEAD_RETRY;
		}
		if (n == -2) {
			db_error(x->repl, NULL, err, errlen);
			return LEAD_RETRY;
		}
		publish_poll(&x->pub);
		if (kafka_take_fatal(err, errlen))
			return LEAD_RETRY;
		if (!cdc_collect(x, err, errlen))
			return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
		now = util_mono_ms();
		if (!cdc_mark_done(x, false, &moved, err, errlen))
			return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
		if (x->pending_lsn != 0 && !x->mark_busy &&
		    (x->nmark >= CDC_MARK_MAX || now - x->mark_first_ms >= CDC_MARK_MS ||
		     x->nmark == 0)) {
			uint64_t before = x->flush_lsn;

			if (!cdc_mark_send(x, err, errlen))
				return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
			moved = moved || x->flush_lsn != before;
		}
		if (moved && !cdc_send_status(x, false)) {
			db_error(x->repl, NULL, err, errlen);
			return LEAD_RETRY;
		}
		if (now - x->status_ms >= CDC_STATUS_MS && !cdc_send_status(x, false)) {
			db_error(x->repl, NULL, err, errlen);
			return LEAD_RETRY;
		}
		if (x->mark_busy)
			continue; /* the database connection is taken until it answers */
		if (now - x->heartbeat_ms >= x->cfg->relay_heartbeat_ms)
			cdc_heartbeat(x);
		if (now - x->slot_ms >= CDC_SLOT_CHECK_MS) {
			out = cdc_slot_watch(x, err, errlen);
			if (out != LEAD_OK)
				return out;
		}
		if (x->nblocked > 0 && now - x->blocked_ms >= CDC_BLOCKED_MS) {
			bool released;

			if (!cdc_blocked_read(x, false, &released, err, errlen))
				return db_lost(x->db) ? LEAD_DB_LOST : LEAD_RETRY;
			if (released) {
				cdc_settle(x);
				return LEAD_RETRY;
			}
		}
		if (now - x->counters_ms >= CDC_COUNTERS_MS)
			cdc_counters_flush(x);
		cdc_summary(x, false);
		if (db_lost(x->db)) {
			snprintf(err, errlen, "database connection lost");
			return LEAD_DB_LOST;
		}
	}
	cdc_settle(x);
	return LEAD_STOPPED;
}

/* ---- leadership ---------------------------------------------------------- */

static bool cdc_db_open(struct cdc *x)
{
	char appname[64];
	/* No JIT for the mark UPDATEs of thousands of ids (as poll.c). */
	struct db_conn_opts o = { .appname = appname, .no_jit = true };

	snprintf(appname, sizeof appname, "outbox-relay[%d]", x->id);
	x->db = db_open_retry(x->cfg->db_conninfo, &o, "relay", x->stop);
	return x->db != NULL;
}

/* Try the slot's leader lock. False with *lost set when the connection
 * broke. */
static bool cdc_try_lead(struct cdc *x, bool *lost)
{
	const char *params[1] = { x->cfg->relay_slot };
	char err[512];
	PGresult *res = cdc_rows(x,
				  "SELECT pg_try_advisory_lock(" CDC_STR(CDC_LOCK_NS) ", hashtext($1))", 1,
				  params, err, sizeof err);
	bool got;

	*lost = false;
	if (res == NULL) {
		*lost = db_lost(x->db);
		log_warn("leader lock: %s", err);
		return false;
	}
	got = PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	return got;
}

static void cdc_free(struct cdc *x)
{
	cdc_stream_reset(x);
	if (x->db != NULL)
		PQfinish(x->db);
	if (x->log_fd >= 0)
		close(x->log_fd);
	cdc_blocked_clear(x);
	poll_marked_free(&x->caught);
	free(x->blocked);
	free(x->rels);
	free(x->mark_ids);
	db_array_free(&x->arr);
}

int cdc_run(const struct conf *c, int relay_id, volatile sig_atomic_t *stop,
	    volatile sig_atomic_t *hup)
{
	static struct cdc x;
	char err[1024], masked[1024];
	long backoff = 0;
	int rc = 1;
	int64_t t0;
	bool said_standby = false;

	memset(&x, 0, sizeof x);
	x.cfg = c;
	x.id = relay_id;
	x.stop = stop;
	x.log_fd = -1;
	x.started_us = util_now_us();
	x.summary_ms = util_mono_ms();
	cluster_guard_init(&x.cluster, relay_id, c->kafka_brokers);
	if (gethostname(x.host, sizeof x.host) != 0)
		snprintf(x.host, sizeof x.host, "localhost");
	x.host[sizeof x.host - 1] = '\0';
	if (c->relay_publish_log[0] != '\0') {
		x.log_fd = open(c->relay_publish_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (x.log_fd < 0) {
			log_error("[relay] publish_log %s: %s", c->relay_publish_log, strerror(errno));
			rc = 2;
			goto out;
		}
	}
	db_conninfo_masked(c->db_conninfo, masked, sizeof masked);
	log_info("cdc relay %d started: database \"%s\", slot %s, publication %s, brokers %s, "
		 "topic %s", relay_id, masked, c->relay_slot, c->relay_publication,
		 c->kafka_brokers, c->kafka_topic);

	while (!*stop) {
		enum lead_result lr;
		bool lost;

		if (*hup) {
			*hup = 0;
			log_info("SIGHUP received (configuration reload is not implemented yet)");
		}
		if (x.db == NULL) {
			x.leader = false;
			if (!cdc_db_open(&x))
				break;
		}
		if (!x.leader) {
			x.leader = cdc_try_lead(&x, &lost);
			if (lost) {
				PQfinish(x.db);
				x.db = NULL;
				continue;
			}
			if (!x.leader) {
				if (!said_standby)
					log_info("standing by: another relay streams slot %s",
						 c->relay_slot);
				said_standby = true;
				if (util_mono_ms() - x.counters_ms >= CDC_COUNTERS_MS)
					cdc_counters_flush(&x);
				util_sleep_ms(CDC_STANDBY_MS, stop);
				continue;
			}
			log_info("leading: this relay streams slot %s", c->relay_slot);
			said_standby = false;
			cdc_counters_flush(&x);
		}
		err[0] = '\0';
		if (!cdc_ensure_publication(&x, err, sizeof err)) {
			lr = db_lost(x.db) ? LEAD_DB_LOST : LEAD_CONFIG;
		} else {
			lr = cdc_slot_prepare(&x, err, sizeof err);
			if (lr == LEAD_OK) {
				t0 = util_mono_ms();
				lr = cdc_stream(&x, err, sizeof err);
				if (util_mono_ms() - t0 > 10000)
					backoff = 0; /* it ran well for a while */
			}
		}
		cdc_stream_reset(&x);
		if (lr == LEAD_STOPPED)
			break;
		if (lr == LEAD_CONFIG) {
			log_error("cannot stream: %s", err);
			rc = 2;
			goto out;
		}
		if (lr == LEAD_DB_LOST) {
			log_warn("database connection lost (%s); leadership released", err);
			PQfinish(x.db);
			x.db = NULL;
			x.leader = false;
		} else if (err[0] != '\0') {
			log_warn("stream stopped: %s; starting again", err);
		}
		x.ctr.restarts++;
		/* Capped low: the usual cause is a slot still held by the
		 * walsender of a relay that just died, gone in a moment. */
		util_sleep_ms(util_backoff_next(&backoff, CDC_BACKOFF_BASE_MS,
						c->relay_backoff_max_ms < 2000 ?
						c->relay_backoff_max_ms : 2000), stop);
	}
	rc = 0;
	cdc_counters_flush(&x);
	cdc_summary(&x, true);
	log_info("stopped");
out:
	cdc_free(&x);
	return rc;
}
