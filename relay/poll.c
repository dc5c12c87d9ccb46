/* The polling relay.
 *
 * One pass is one database transaction:
 *
 *   BEGIN; claim; re-check; publish; wait for every delivery report;
 *   mark the acknowledged per-aggregate prefix; COMMIT.
 *
 * (the stages pass_claim, pass_recheck, pass_publish, pass_mark and
 * pass_commit of relay_pass, below).
 *
 * Publish first, mark second, in the same transaction that holds the row
 * locks: a crash anywhere before COMMIT leaves every row unsent, so the
 * next pass publishes it again (at-least-once, never lost). sent_at is set
 * only for a row whose own delivery report said "persisted".
 *
 * Why the batches of several relays are disjoint: the claim takes row locks
 * with FOR UPDATE SKIP LOCKED, so a row claimed by one open pass is skipped,
 * not waited for, by every other.
 *
 * Why an aggregate's events cannot be reordered across relays:
 *
 *  1. The claim only returns rows whose aggregate's transaction-scoped
 *     advisory lock this pass holds: pg_try_advisory_xact_lock() is in the
 *     claim's WHERE clause, so there is no window between "claimed" and
 *     "locked". The lock is held until COMMIT/ROLLBACK, i.e. until every
 *     delivery report is in and the marks are durable. So at most one relay
 *     at a time has an aggregate's events in flight.
 *
 *  2. A relay that gets the lock right after another relay committed may
 *     still work with a claim snapshot taken before that commit, and so
 *     "see" rows as unsent that were just marked sent. FOR UPDATE re-checks
 *     a row that a committed transaction updated (EvalPlanQual): the
 *     newest version is re-tested against WHERE sent_at IS NULL and dropped.
 *     A row is therefore never claimed after its sent_at committed.
 *
 *  3. Under the lock we re-check with a fresh statement (a new snapshot in
 *     READ COMMITTED, so every committed mark is visible): the lowest unsent
 *     seq of each aggregate. From each aggregate we publish only the rows of
 *     the batch that form a contiguous run starting at that seq. Rows after
 *     a hole (an earlier event locked by someone else, or cut off by LIMIT)
 *     stay unsent for a later pass. Since seq n+1 is inserted only after
 *     seq n committed (the order row's lock), any claim that sees n+1 also
 *     sees n, and the run we publish always starts at the oldest unsent
 *     event. Nobody else can publish that aggregate until we commit (1).
 *
 *  4. Marking stops at the first failed report of an aggregate: if seq 2
 *     failed and seq 3 was acknowledged, neither is marked, so both go out
 *     again, in order, in a later pass.
 *
 *  5. A row Kafka refuses for good (publish_err_permanent: too large, an
 *     invalid record) is point 4 with refused_at set: the claim then skips
 *     its whole aggregate (SQL_CLAIM), so no later event of it is claimed
 *     while the refused one is unsent, and the pass does not back off, so
 *     every other aggregate goes on at full speed. The aggregate is claimed
 *     again, from the refused row, once refused_at is cleared (a payload
 *     update does it) or older than PUBLISH_REFUSED_RETRY_S.
 *
 * Why an acknowledgement counts only from the recorded Kafka cluster: the
 * pass asks the broker for its cluster id before claiming and again after
 * the last delivery report, before marking (cluster.h). A pass whose second
 * answer is not the recorded cluster (or a swap librdkafka saw in between)
 * rolls back: nothing marked, the producer re-created, the rows go out
 * again once the recorded cluster answers.
 *
 * Why starting the claim at a cursor loses nothing: while the backlog keeps
 * the passes full, a pass claims only ids >= the cursor (the lowest id the
 * previous pass claimed and left unsent, else one past its highest), so it
 * does not walk the index entries of every row marked since the last
 * vacuum. A row below the cursor (committed late with a low id, locked by
 * another relay, left unsent) is not lost: the next claim to start after
 * a pass that is not full, and a claim at least every RELAY_RESCAN_MS,
 * scans from id 0 (struct cursor and its cursor_* functions hold these
 * rules). Nor can
 * it reorder: an aggregate's later event claimed above the cursor while an
 * earlier one waits below it fails the re-check (point 3: its run must
 * start at the oldest unsent seq), so it stays unsent too.
 *
 * Why two passes in flight at once change none of this: a relay pipelines
 * on two lanes (relay_pass), each its own connection and transaction, so
 * they are two relays as far as points 1-5 go.
 *
 * Within a pass, rows are produced in id order (= seq order per aggregate)
 * with key = aggregate_id, by an idempotent producer that keeps
 * per-partition order across its retries.
 */
#include "poll.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "crash.h"
#include "db.h"
#include "kafka.h"
#include "log.h"
#include "publish.h"
#include "util.h"

/* First key of every relay advisory lock (the second is the aggregate id's
 * hashtext). A constant, so every relay agrees; "obxd" in ASCII. */
#define RELAY_LOCK_NS 1868724324
#define RELAY_STR_(x) #x
#define RELAY_STR(x) RELAY_STR_(x)

#define RELAY_WAIT_SLICE_MS 200   /* every wait is bounded by this */
#define RELAY_COUNTERS_MS 1000    /* outboxd_relays refresh period */
#define RELAY_SUMMARY_MS 10000    /* info summary period */
#define RELAY_BACKOFF_BASE_MS 100
#define RELAY_REPORT_MARGIN_MS 5000
#define RELAY_CLUSTER_BEFORE_MS 1000 /* cluster id check before a batch (broker down: go on) */
#define RELAY_CLUSTER_AFTER_MS 5000  /* ... and before marking (no answer: mark nothing) */
#define RELAY_RESCAN_MS 1000      /* a claim from id 0 at least this often (the cursor, above) */

/* Claim (READ COMMITTED). Upholds disjointness (SKIP LOCKED) and the
 * one-relay-per-aggregate rule (the advisory lock is taken IN the WHERE
 * clause, so every returned row's aggregate is locked by this transaction
 * until it ends). The lock function runs as a filter of the ordered scan of
 * the partial index outbox_unsent, so it touches only unsent rows, in id
 * order, and only as many as the LIMIT pulls (see relay_db_open for how the
 * plan is pinned to that scan).
 *
 * Upholds "a row Kafka refused for good blocks only its own aggregate"
 * (sql/008_outbox_refused.sql): an aggregate with an unsent row refused
 * less than PUBLISH_REFUSED_RETRY_S ago is not claimed at all, so its later
 * events stay unsent behind it and the batch is filled with others. NOT IN
 * over the small partial index outbox_refused (an index-only range scan on
 * refused_at) is a hashed subplan, run once per claim, and stays a filter
 * of the ordered scan. */
static const char SQL_CLAIM[] =
	"SELECT id, event_id::text, aggregate_type, aggregate_id, aggregate_seq, "
	"       event_type, payload::text "
	"  FROM public.outbox "
	" WHERE sent_at IS NULL "
	"   AND id <= $2 AND id >= $3 "
	"   AND aggregate_id NOT IN (SELECT b.aggregate_id FROM public.outbox b "
	"         WHERE b.refused_at IS NOT NULL AND b.sent_at IS NULL "
	"           AND b.refused_at > now() - interval '" PUBLISH_STR(PUBLISH_REFUSED_RETRY_S) " s') "
	"   AND pg_try_advisory_xact_lock(" RELAY_STR(RELAY_LOCK_NS) ", hashtext(aggregate_id)) "
	" ORDER BY id "
	" LIMIT $1 "
	"   FOR UPDATE SKIP LOCKED";

/* Re-check under the lock, fresh snapshot: the oldest unsent seq of each
 * claimed aggregate. Upholds "publish only a contiguous run from the oldest
 * unsent event" (point 3 above). One probe of the (aggregate_id,
 * aggregate_seq) unique index per aggregate, so its cost depends on the
 * batch, not on the backlog (a plain "aggregate_id = ANY(..) GROUP BY" was
 * planned as a scan of the whole outbox_unsent index). NULL: none unsent. */
static const char SQL_RECHECK[] =
	"SELECT a.id, (SELECT o.aggregate_seq FROM public.outbox o "
	"               WHERE o.aggregate_id = a.id AND o.sent_at IS NULL "
	"               ORDER BY o.aggregate_seq LIMIT 1) "
	"  FROM unnest($1::text[]) AS a(id)";

/* Mark sent: only rows whose own report said persisted, and only an
 * aggregate's acknowledged prefix (upholds "sent_at stays NULL until the
 * broker acknowledged the event" and point 4 above). */
static const char SQL_MARK_SENT[] =
	"UPDATE public.outbox SET sent_at = now() WHERE id = ANY($1::bigint[])";

/* Record a failed or unmarked attempt; the row stays unsent. A row Kafka
 * refused for good ($3 true) gets refused_at, which makes the claim skip
 * its aggregate (see SQL_CLAIM). */
static const char SQL_MARK_FAILED[] =
	"UPDATE public.outbox o SET attempts = o.attempts + 1, last_error = u.err, "
	"       refused_at = CASE WHEN u.refused THEN now() ELSE o.refused_at END "
	"  FROM unnest($1::bigint[], $2::text[], $3::boolean[]) AS u(id, err, refused) "
	" WHERE o.id = u.id";

static const struct {
	const char *name;
	const char *sql;
	int nparams;
} relay_statements[] = {
	{ "relay_claim", SQL_CLAIM, 3 },
	{ "relay_recheck", SQL_RECHECK, 1 },
	{ "relay_mark_failed", SQL_MARK_FAILED, 3 },
};

/* One aggregate of the batch and its oldest unsent seq (from the re-check). */
struct agg_min {
	const char *aggregate_id;
	int64_t min_seq;
};

enum pass_result {
	PASS_IDLE,      /* nothing claimed */
	PASS_OK,        /* work done, batch not full */
	PASS_FULL,      /* batch_size rows claimed: go again at once */
	PASS_AGAIN,     /* less, but claimed while the other lane held aggregates: not
			 * caught up, go again at once (from id 0) */
	PASS_RETRY,     /* something failed (broker, timeouts, SQL): back off */
	PASS_DB_LOST,   /* the connection is gone: reconnect */
	PASS_PRODUCER,  /* fatal producer error or lost reports: re-create it */
	PASS_CLUSTER,   /* the broker is on another Kafka cluster: re-create, back off */
	PASS_CLUSTER_BACK, /* the recorded cluster is back: re-create, go again */
};

/* One pass, and the lane it runs on. A relay has two lanes, each with its
 * own connection and batch, so one pass's marks can run while the next
 * pass claims (relay_pass). The fields before conn are the pass's own,
 * zeroed at its start; the rest is the lane's. */
struct pass {
	char id[64];                /* relay.pid.pass, for the log and the publish log */
	PGresult *claim;            /* the rows' strings point into it */
	int n;                      /* rows claimed */
	int enq, acked, failed;     /* publish */
	int marked, unmarked, refused, transient; /* mark */
	int64_t left;               /* lowest id claimed and not marked */
	int64_t claimed_us;         /* wall clock of the claim, for the publish log */
	int64_t t0, t_claim, t_kafka, t_mark;
	char first_err[256], first_refused[256];
	struct db_err e;            /* why a statement failed */
	bool marking;               /* the mark UPDATE is in flight (pass_mark_send) */
	bool overlapped;            /* claimed while the other lane's pass was open */

	PGconn *conn;               /* NULL until opened (lane 1: when first needed) */
	bool busy;                  /* claimed and published, not yet committed */
	struct publish_row *rows;   /* batch_size slots, live as long as the relay */
	int *order;                 /* row indexes sorted by (aggregate_id, seq) */
	struct agg_min *mins;
	struct db_array aggs;       /* the re-check's aggregates */
	struct db_array sent, failed_ids, failed_why, failed_refused; /* the marks */
};

/* Where a claim starts (the cursor of the proof at the top): all of its
 * state, and its rules in the cursor_* functions below. Zeroed: from id 0. */
struct cursor {
	int64_t low;                /* claim only ids >= this; 0: from id 0 */
	int64_t rescan_ms;          /* when the last claim from id 0 started */
};

struct relay {
	const struct conf *cfg;
	int id;
	volatile sig_atomic_t *stop;
	char host[256];
	int64_t started_us;
	struct pass lane[2];        /* lane[0]'s connection also LISTENs and saves counters */
	int cur;                    /* the lane whose pass finishes next */
	struct publisher pub;
	int cap;
	int64_t pass_no;
	int64_t max_id;             /* claim only rows with id <= this */
	struct cursor cursor;       /* ... and >= cursor.low (see the top) */
	int log_fd;
	struct publish_counters ctr;
	struct cluster_guard cluster;
	const char *mode;           /* outboxd_relays.mode */
	int64_t counters_ms;        /* last outboxd_relays refresh */
	int64_t summary_ms;
	int64_t summary_published;
	bool notified;
	struct poll_marked *marked; /* a drain's record of what it marked, or NULL */
};

/* Before a pass: back to id 0 when the last claim from there started
 * RELAY_RESCAN_MS or more before now_ms. */
static void cursor_tick(struct cursor *c, int64_t now_ms)
{
	if (now_ms - c->rescan_ms >= RELAY_RESCAN_MS)
		c->low = 0;
}

/* The lower bound of a claim that starts at now_ms; a claim from id 0
 * restarts the RELAY_RESCAN_MS clock. */
static int64_t cursor_claim(struct cursor *c, int64_t now_ms)
{
	if (c->low == 0)
		c->rescan_ms = now_ms;
	return c->low;
}

/* After pass p. A full one's rows are in id order: the next claim starts
 * at the lowest id it left unsent, else one past its last row. Any other
 * pass (caught up, or in trouble) sends the next claim back to id 0. */
static void cursor_pass_done(struct cursor *c, const struct pass *p, bool full)
{
	if (!full)
		c->low = 0;
	else
		c->low = p->left != INT64_MAX ? p->left : p->rows[p->n - 1].id + 1;
}

/* Add one id; a pass adds its ids in ascending order, so a backlog's
 * consecutive ids extend the last run. */
static void poll_marked_add(struct poll_marked *m, int64_t id)
{
	if (m->failed)
		return;
	if (m->n > 0 && m->run[m->n - 1].hi + 1 == id) {
		m->run[m->n - 1].hi = id;
		return;
	}
	if (m->n == m->cap) {
		int cap = m->cap ? m->cap * 2 : 16;
		struct poll_run *n = realloc(m->run, (size_t)cap * sizeof *n);

		if (n == NULL) {
			m->failed = true;
			return;
		}
		m->run = n;
		m->cap = cap;
	}
	m->run[m->n].lo = m->run[m->n].hi = id;
	m->n++;
}

static int poll_cmp_runs(const void *a, const void *b)
{
	const struct poll_run *x = a, *y = b;

	return (x->lo > y->lo) - (x->lo < y->lo);
}

/* Passes add their runs in pass order (a claim from id 0 may come after
 * higher ids): sort, and join runs that touch. */
static void poll_marked_settle(struct poll_marked *m)
{
	int k = 0;

	if (m->n == 0)
		return;
	qsort(m->run, (size_t)m->n, sizeof *m->run, poll_cmp_runs);
	for (int i = 1; i < m->n; i++) {
		if (m->run[i].lo <= m->run[k].hi + 1) {
			if (m->run[i].hi > m->run[k].hi)
				m->run[k].hi = m->run[i].hi;
		} else {
			m->run[++k] = m->run[i];
		}
	}
	m->n = k + 1;
}

bool poll_marked_has(const struct poll_marked *m, int64_t id)
{
	int lo = 0, hi = m->n - 1;

	while (lo <= hi) {
		int mid = lo + (hi - lo) / 2;

		if (id < m->run[mid].lo)
			hi = mid - 1;
		else if (id > m->run[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

void poll_marked_free(struct poll_marked *m)
{
	free(m->run);
	memset(m, 0, sizeof *m);
}

/* Connect lane p (lane 0 retrying until it works or we are stopped, lane
 * 1 once: without it the relay only does not pipeline), pin the claim's
 * plan, prepare every statement and (lane 0) LISTEN. Returns false when
 * stopped or when set-up failed (logged; the connection is closed). */
static bool relay_db_open(struct relay *r, struct pass *p)
{
	char appname[64];
	struct db_conn_opts o = { .appname = appname, .no_jit = true };
	struct db_err e;
	bool first = p == &r->lane[0];

	snprintf(appname, sizeof appname, "outbox-relay[%d]", r->id);
	p->conn = first ? db_open_retry(r->cfg->db_conninfo, &o, "relay", r->stop)
			: db_open(r->cfg->db_conninfo, &o, &e);
	if (p->conn == NULL)
		return false;
	/* The claim's advisory-lock filter must run on the ordered scan of
	 * outbox_unsent below the LIMIT: a sequential scan plus sort would
	 * evaluate it for EVERY unsent row (locking every aggregate of the
	 * backlog, exhausting the lock table and starving the other relays).
	 * These settings only steer this session's planner, whose only
	 * statements are the ones below. JIT off (no_jit above): the claim
	 * and the marks of a large batch cross jit_above_cost, and compiling
	 * them took about 40 % of the backend's CPU for nothing (each runs in
	 * milliseconds). */
	if (!db_run(p->conn, "SET enable_seqscan = off", 0, NULL, &e) ||
	    !db_run(p->conn, "SET enable_bitmapscan = off", 0, NULL, &e) ||
	    !db_run(p->conn, "SET enable_sort = off", 0, NULL, &e))
		goto fail;
	for (size_t i = 0; i < sizeof relay_statements / sizeof relay_statements[0]; i++)
		if (!db_prepare(p->conn, relay_statements[i].name, relay_statements[i].sql,
				relay_statements[i].nparams, &e))
			goto fail;
	if (first && r->cfg->relay_notify && !db_run(p->conn, "LISTEN outboxd_outbox", 0, NULL, &e))
		goto fail;
	if (first)
		r->notified = true; /* anything may have happened while we were away */
	return true;
fail:
	log_warn("database set-up failed: %s", e.msg);
	PQfinish(p->conn);
	p->conn = NULL;
	return false;
}

/* Drain pending notifications; true when at least one arrived. Returns
 * false in *alive when the connection broke. */
static bool relay_take_notifies(struct relay *r, bool consume, bool *alive)
{
	PGnotify *nt;
	bool any = false;

	*alive = true;
	if (consume && PQconsumeInput(r->lane[0].conn) == 0) {
		*alive = false;
		return false;
	}
	while ((nt = PQnotifies(r->lane[0].conn)) != NULL) {
		any = true;
		PQfreemem(nt);
	}
	return any;
}

/* The counters row, about once a second (only between passes). */
static void relay_counters_flush(struct relay *r)
{
	if (r->lane[0].conn == NULL || r->lane[0].busy ||
	    PQtransactionStatus(r->lane[0].conn) != PQTRANS_IDLE)
		return;
	publish_counters_save(r->lane[0].conn, r->id, r->host, r->mode, r->started_us, &r->ctr,
			      cluster_seen(&r->cluster), cluster_mismatch(&r->cluster));
	r->counters_ms = util_mono_ms();
}

static const struct publish_row *sort_rows;

/* (aggregate_id, seq) order for the row index array. */
static int relay_cmp_rows(const void *a, const void *b)
{
	const struct publish_row *x = &sort_rows[*(const int *)a];
	const struct publish_row *y = &sort_rows[*(const int *)b];
	int c = strcmp(x->aggregate_id, y->aggregate_id);

	if (c != 0)
		return c;
	return (x->seq > y->seq) - (x->seq < y->seq);
}

static int relay_cmp_mins(const void *a, const void *b)
{
	return strcmp(((const struct agg_min *)a)->aggregate_id,
		      ((const struct agg_min *)b)->aggregate_id);
}

/* Decide which claimed rows to publish: for each aggregate the run of
 * consecutive seqs starting at its oldest unsent seq (from the re-check).
 * Sets row->group and row->publish; returns the number of groups. */
static int relay_choose(struct pass *p, int n, const struct agg_min *mins, int nmins)
{
	int groups = 0;

	for (int k = 0; k < n;) {
		const struct publish_row *first = &p->rows[p->order[k]];
		struct agg_min key = { first->aggregate_id, 0 };
		const struct agg_min *m = bsearch(&key, mins, (size_t)nmins, sizeof *mins,
						  relay_cmp_mins);
		int64_t expect = m != NULL ? m->min_seq : -1;
		bool run = m != NULL;
		int g = groups++;

		while (k < n && strcmp(p->rows[p->order[k]].aggregate_id, first->aggregate_id) == 0) {
			struct publish_row *row = &p->rows[p->order[k]];

			row->group = g;
			if (run && row->seq == expect) {
				row->publish = true;
				expect++;
			} else {
				run = false;
			}
			k++;
		}
	}
	return groups;
}

/* ---- one pass, in stages: claim, re-check, publish, mark, commit --------
 *
 * Each stage returns PASS_NEXT to go on, or the pass's result; a stage that
 * returns anything else has left no transaction open (pass_db_fail and
 * db_rollback end it). */

#define PASS_NEXT (-1) /* a stage's "go on"; never a pass's result */


/* The pass is over without its commit: what is in flight on its
 * connection is taken, its transaction rolled back (nothing is marked). */
static void pass_end(struct pass *p)
{
	if (p->marking)
		(void)db_collect(p->conn, NULL);
	p->marking = false;
	db_rollback(p->conn);
	p->busy = false;
}

/* A statement failed: roll back (when the connection still works) and say
 * so. PASS_DB_LOST when the connection is gone, else PASS_RETRY. */
static enum pass_result pass_db_fail(struct pass *p)
{
	pass_end(p);
	if (db_lost(p->conn)) {
		log_warn("pass %s: database connection lost: %s", p->id, p->e.msg);
		return PASS_DB_LOST;
	}
	log_warn("pass %s: %s; rolled back", p->id, p->e.msg);
	return PASS_RETRY;
}

/* Before the batch: publish nothing to another cluster. A broker that does
 * not answer is no reason to stop here (the reports will say); the check
 * before marking is the one that decides. */
static int pass_cluster_before(struct relay *r, struct pass *p)
{
	char err[1024];

	switch (cluster_check(&r->cluster, p->conn, r->pub.rk, RELAY_CLUSTER_BEFORE_MS, err,
			      sizeof err)) {
	case CLUSTER_OK:
		return PASS_NEXT;
	case CLUSTER_BACK:
		return PASS_CLUSTER_BACK;
	case CLUSTER_OTHER:
		return PASS_CLUSTER;
	case CLUSTER_UNKNOWN:
		break;
	}
	if (db_lost(p->conn)) {
		snprintf(p->e.msg, sizeof p->e.msg, "%s", err);
		return pass_db_fail(p);
	}
	log_debug("pass %s: Kafka cluster id not checked before the batch: %s", p->id, err);
	return PASS_NEXT;
}

/* Claim: BEGIN, then the oldest unsent rows (SQL_CLAIM: disjoint, each
 * aggregate locked), in id order from the cursor; p->order sorted by
 * (aggregate_id, seq). PASS_IDLE (committed) when there are none. */
static int pass_claim(struct relay *r, struct pass *p)
{
	char limit[16], bound[24], low[24];
	const char *params[3] = { limit, bound, low };

	if (!db_begin(p->conn, &p->e))
		return pass_db_fail(p);
	snprintf(limit, sizeof limit, "%d", r->cfg->relay_batch_size);
	snprintf(bound, sizeof bound, "%" PRId64, r->max_id);
	snprintf(low, sizeof low, "%" PRId64, cursor_claim(&r->cursor, p->t0));
	p->claim = db_query_prepared(p->conn, "relay_claim", 3, params, NULL, NULL,
				     PGRES_TUPLES_OK, &p->e);
	p->claimed_us = util_now_us();
	if (p->claim == NULL)
		return pass_db_fail(p);
	p->n = PQntuples(p->claim);
	if (p->n == 0)
		return db_commit(p->conn, &p->e) ? PASS_IDLE : pass_db_fail(p);
	for (int i = 0; i < p->n; i++) {
		struct publish_row *row = &p->rows[i];

		memset(row, 0, sizeof *row);
		row->id = strtoll(PQgetvalue(p->claim, i, 0), NULL, 10);
		row->event_id = PQgetvalue(p->claim, i, 1);
		row->aggregate_type = PQgetvalue(p->claim, i, 2);
		row->aggregate_id = PQgetvalue(p->claim, i, 3);
		row->seq = strtoll(PQgetvalue(p->claim, i, 4), NULL, 10);
		row->event_type = PQgetvalue(p->claim, i, 5);
		row->payload = PQgetvalue(p->claim, i, 6);
		row->payload_len = (size_t)PQgetlength(p->claim, i, 6);
		row->partition = -1;
		row->offset = -1;
		p->order[i] = i;
	}
	sort_rows = p->rows;
	qsort(p->order, (size_t)p->n, sizeof *p->order, relay_cmp_rows);
	return PASS_NEXT;
}

/* Re-check under the lock with a fresh snapshot (point 3): each claimed
 * aggregate's oldest unsent seq; relay_choose keeps each aggregate's run
 * from there. */
static int pass_recheck(struct relay *r, struct pass *p)
{
	const char *params[1];
	PGresult *res;
	int nmins = 0;

	db_array_clear(&p->aggs);
	for (int k = 0; k < p->n; k++)
		if (k == 0 || strcmp(p->rows[p->order[k]].aggregate_id,
				     p->rows[p->order[k - 1]].aggregate_id) != 0)
			db_array_add(&p->aggs, p->rows[p->order[k]].aggregate_id);
	if ((params[0] = db_array_text(&p->aggs)) == NULL) {
		snprintf(p->e.msg, sizeof p->e.msg, "out of memory");
		return pass_db_fail(p);
	}
	res = db_query_prepared(p->conn, "relay_recheck", 1, params, NULL, NULL, PGRES_TUPLES_OK,
				&p->e);
	if (res == NULL)
		return pass_db_fail(p);
	for (int i = 0; i < PQntuples(res) && nmins < r->cap; i++) {
		if (PQgetisnull(res, i, 1))
			continue; /* nothing unsent: cannot happen while we hold its rows */
		p->mins[nmins].aggregate_id = PQgetvalue(res, i, 0);
		p->mins[nmins].min_seq = strtoll(PQgetvalue(res, i, 1), NULL, 10);
		nmins++;
	}
	qsort(p->mins, (size_t)nmins, sizeof *p->mins, relay_cmp_mins);
	relay_choose(p, p->n, p->mins, nmins);
	PQclear(res);
	p->t_claim = util_mono_ms();
	crash_point("relay.after_claim");
	return PASS_NEXT;
}

/* Publish: hand the chosen rows to the producer; the pass is in flight
 * (busy) until pass_commit or a rollback ends it. */
static int pass_send(struct relay *r, struct pass *p)
{
	p->enq = publish_send(&r->pub, p->rows, p->n);
	r->ctr.published += p->enq;
	p->busy = true;
	return PASS_NEXT;
}

/* Wait for every report of the pass. The stop flag does not cut this
 * short: on SIGTERM the in-flight batch finishes first. Reports missing or
 * a fatal producer error: nothing of the pass is trusted (librdkafka 2.0.2
 * can raise a spurious fatal idempotence error after "possibly
 * persisted"), so it rolls back and the producer is re-created. */
static int pass_reports(struct relay *r, struct pass *p)
{
	const struct conf *c = r->cfg;
	char err[1024];

	if (!publish_wait(&r->pub, p->rows, p->n,
			  (long)c->kafka_delivery_timeout_ms + RELAY_REPORT_MARGIN_MS)) {
		log_error("pass %s: %d delivery reports still missing after %d ms; "
			  "rolling back and re-creating the producer",
			  p->id, publish_outstanding(),
			  c->kafka_delivery_timeout_ms + RELAY_REPORT_MARGIN_MS);
		pass_end(p);
		return PASS_PRODUCER;
	}
	for (int i = 0; i < p->n; i++) {
		if (!p->rows[i].enqueued)
			continue;
		if (p->rows[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
			p->acked++;
		else
			p->failed++;
	}
	r->ctr.acked += p->acked;
	r->ctr.failed += p->failed;
	if (kafka_take_fatal(err, sizeof err)) {
		log_error("pass %s: fatal producer error (%s); rolled back, re-creating the producer",
			  p->id, err);
		pass_end(p);
		return PASS_PRODUCER;
	}
	p->t_kafka = util_mono_ms();
	/* The log line goes out before the crash point, so a pass that dies
	 * after the broker's acknowledgement still shows what it published. */
	if (r->log_fd >= 0 &&
	    !publish_log_write(r->log_fd, r->id, p->id, p->rows, p->n, p->claimed_us))
		log_warn("publish log %s: write failed: %s", c->relay_publish_log, strerror(errno));
	crash_point("relay.after_publish");
	return PASS_NEXT;
}

/* Decide the marks (point 4): walk each aggregate's rows in seq order,
 * mark while the report is a success, stop at the first failure. Later
 * rows of that aggregate (acknowledged or not) stay unsent and get an
 * attempt recorded. Rows never enqueued (after a hole, or after an enqueue
 * error) are left alone. A row Kafka refused for good
 * (publish_err_permanent) also gets refused_at, so the next claims skip
 * its aggregate (point 5); it does not make the pass back off. */
static bool pass_decide(struct pass *p)
{
	db_array_clear(&p->sent);
	db_array_clear(&p->failed_ids);
	db_array_clear(&p->failed_why);
	db_array_clear(&p->failed_refused);
	for (int k = 0, group = -1, broken = 0; k < p->n; k++) {
		struct publish_row *row = &p->rows[p->order[k]];
		bool permanent = publish_err_permanent(row->err);
		char why[300];

		if (row->group != group) {
			group = row->group;
			broken = 0; /* 1: after a transient failure, 2: after a refusal */
		}
		if (!broken && row->enqueued && row->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
			db_array_add_int(&p->sent, row->id);
			row->marked = true;
			p->marked++;
			continue;
		}
		if (row->id < p->left)
			p->left = row->id;
		if (!row->enqueued)
			continue;
		if (row->err != RD_KAFKA_RESP_ERR_NO_ERROR && permanent)
			snprintf(why, sizeof why, "%s: %s (refused by Kafka for good: this "
				 "aggregate waits until the payload is updated or refused_at is "
				 "cleared, or for %d s)", rd_kafka_err2name(row->err),
				 rd_kafka_err2str(row->err), PUBLISH_REFUSED_RETRY_S);
		else if (row->err != RD_KAFKA_RESP_ERR_NO_ERROR)
			snprintf(why, sizeof why, "%s: %s", rd_kafka_err2name(row->err),
				 rd_kafka_err2str(row->err));
		else
			snprintf(why, sizeof why, "acknowledged but not marked: an earlier event "
				 "of this aggregate failed in pass %s", p->id);
		if (row->err != RD_KAFKA_RESP_ERR_NO_ERROR && permanent) {
			if (p->refused++ == 0)
				snprintf(p->first_refused, sizeof p->first_refused, "%s #%" PRId64
					 ", %zu bytes: %s", row->aggregate_id, row->seq,
					 row->payload_len, rd_kafka_err2name(row->err));
			if (!broken)
				broken = 2;
		} else if (broken != 2) {
			p->transient++;
			if (p->first_err[0] == '\0')
				snprintf(p->first_err, sizeof p->first_err, "%s",
					 rd_kafka_err2name(row->err));
			broken = 1;
		}
		db_array_add_int(&p->failed_ids, row->id);
		db_array_add(&p->failed_why, why);
		db_array_add(&p->failed_refused, permanent ? "t" : "f");
		p->unmarked++;
	}
	return !p->sent.failed && !p->failed_ids.failed && !p->failed_why.failed &&
	       !p->failed_refused.failed;
}

/* Mark: after the reports, before marking, were they the recorded
 * cluster's? (The batch may have gone to a broker swapped in since the
 * check before the claim.) Anything but a plain yes marks nothing: the
 * pass rolls back and the rows go out again. Then the mark UPDATE is sent,
 * not waited for: relay_pass claims the next batch on the other lane
 * meanwhile, and pass_mark_end collects it. */
static int pass_mark_send(struct relay *r, struct pass *p)
{
	const char *params[3];
	enum cluster_verdict v;
	char err[1024];

	if (!pass_decide(p)) {
		snprintf(p->e.msg, sizeof p->e.msg, "out of memory");
		return pass_db_fail(p);
	}
	if (p->marked > 0) {
		v = cluster_check(&r->cluster, p->conn, r->pub.rk, RELAY_CLUSTER_AFTER_MS, err,
				  sizeof err);
		if (v == CLUSTER_UNKNOWN && db_lost(p->conn)) {
			snprintf(p->e.msg, sizeof p->e.msg, "%s", err);
			return pass_db_fail(p);
		}
		if (v != CLUSTER_OK) {
			if (v == CLUSTER_UNKNOWN)
				log_warn("pass %s: %d acknowledged events not marked sent: the Kafka "
					 "cluster id could not be checked (%s); rolled back, they go "
					 "out again", p->id, p->marked, err);
			else
				log_error("pass %s: %d events acknowledged by a broker that is not on "
					  "the recorded Kafka cluster %s: not marked sent, rolled back; "
					  "they go out again to the recorded cluster", p->id, p->marked,
					  r->cluster.rec.id);
			pass_end(p);
			return v == CLUSTER_UNKNOWN ? PASS_RETRY :
			       v == CLUSTER_BACK ? PASS_CLUSTER_BACK : PASS_CLUSTER;
		}
		params[0] = db_array_text(&p->sent);
		if (!db_send_run(p->conn, SQL_MARK_SENT, 1, params, &p->e))
			return pass_db_fail(p);
		p->marking = true;
	}
	return PASS_NEXT;
}

/* The mark UPDATE's outcome, then the failed attempts recorded. */
static int pass_mark_end(struct pass *p)
{
	const char *params[3];

	if (p->marking) {
		p->marking = false;
		if (!db_collect(p->conn, &p->e))
			return pass_db_fail(p);
	}
	if (p->unmarked > 0) {
		params[0] = db_array_text(&p->failed_ids);
		params[1] = db_array_text(&p->failed_why);
		params[2] = db_array_text(&p->failed_refused);
		if (!db_run_prepared(p->conn, "relay_mark_failed", 3, params, &p->e))
			return pass_db_fail(p);
	}
	p->t_mark = util_mono_ms();
	crash_point("relay.after_mark");
	return PASS_NEXT;
}

/* Commit: the marks and the locks go together. Then the drain's record,
 * the counters and the log. */
static int pass_commit(struct relay *r, struct pass *p)
{
	enum pass_result out;

	if (!db_commit(p->conn, &p->e))
		return pass_db_fail(p);
	p->busy = false;
	for (int i = 0; r->marked != NULL && i < p->n; i++)
		if (p->rows[i].marked)
			poll_marked_add(r->marked, p->rows[i].id);
	r->ctr.passes++;
	r->ctr.marked += p->marked;
	if (p->refused > 0)
		log_warn("pass %s: %d events refused by Kafka for good (first: %s); left unsent "
			 "with refused_at and last_error, their aggregates are skipped (outboxctl "
			 "status), every other one goes on", p->id, p->refused, p->first_refused);
	if (p->transient > 0) {
		log_warn("pass %s: %d of %d deliveries failed (first: %s); %d marked sent, "
			 "%d left unsent with the attempt recorded",
			 p->id, p->failed - p->refused, p->acked + p->failed,
			 p->first_err[0] ? p->first_err : "none", p->marked, p->unmarked);
		out = PASS_RETRY;
	} else {
		out = p->n >= r->cfg->relay_batch_size && p->enq > 0 ? PASS_FULL : PASS_OK;
	}
	log_debug("pass %s: claimed %d, published %d, acked %d, failed %d, marked %d in %" PRId64
		  " ms (claim %" PRId64 ", kafka %" PRId64 ", mark %" PRId64 ", commit %" PRId64 ")",
		  p->id, p->n, p->enq, p->acked, p->failed, p->marked, util_mono_ms() - p->t0,
		  p->t_claim - p->t0, p->t_kafka - p->t_claim, p->t_mark - p->t_kafka,
		  util_mono_ms() - p->t_mark);
	return out;
}

/* Start a pass on lane p: claim, re-check, publish. PASS_NEXT: it is in
 * flight (busy); anything else: it is over (nothing claimed, or failed). */
static int pass_start(struct relay *r, struct pass *p)
{
	int out;

	PQclear(p->claim);
	memset(p, 0, offsetof(struct pass, conn));
	p->left = INT64_MAX;
	p->t0 = util_mono_ms();
	r->pass_no++;
	snprintf(p->id, sizeof p->id, "%d.%d.%" PRId64, r->id, (int)getpid(), r->pass_no);
	if ((out = pass_cluster_before(r, p)) == PASS_NEXT &&
	    (out = pass_claim(r, p)) == PASS_NEXT &&
	    (out = pass_recheck(r, p)) == PASS_NEXT)
		out = pass_send(r, p);
	return out;
}

/* A pass that is not going to be marked (the other lane's failed): its
 * reports are taken first when the producer stays (so none arrives for a
 * later batch in these slots), then it rolls back. */
static void pass_abandon(struct relay *r, struct pass *p, bool producer_stays)
{
	if (!producer_stays || !publish_wait(&r->pub, p->rows, p->n,
					     (long)r->cfg->kafka_delivery_timeout_ms +
					     RELAY_REPORT_MARGIN_MS))
		for (int i = 0; i < p->n; i++)
			p->rows[i].pending = false; /* the producer goes: no report comes */
	pass_end(p);
	log_info("pass %s: rolled back unmarked (the pass before it failed); its rows go out "
		 "again", p->id);
}

static bool pass_result_ok(int out)
{
	return out == PASS_IDLE || out == PASS_OK || out == PASS_FULL || out == PASS_AGAIN;
}

/* One pass to its end. The lanes pipeline: while a full pass's mark UPDATE
 * runs on its connection, the next pass claims, re-checks and publishes on
 * the other lane's connection (so both backends work at once, and Kafka
 * acknowledges one batch while the other is marked); the next call
 * finishes that one. Two lanes are two transactions, exactly as two relays:
 * their batches are disjoint and an aggregate's rows are in at most one of
 * them (the advisory lock, point 1), so every proof above holds for each.
 * Returns what happened (enum pass_result); a failure leaves no transaction
 * open on either lane. */
static enum pass_result relay_pass(struct relay *r)
{
	struct pass *p, *o;
	int out, next = PASS_IDLE;

	if (!r->lane[r->cur].busy && r->lane[r->cur].conn == NULL)
		r->cur = 0; /* lane 1 lost its connection: lane 0 (always open) goes on */
	p = &r->lane[r->cur];
	o = &r->lane[!r->cur];
	if (!p->busy && (out = pass_start(r, p)) != PASS_NEXT)
		goto done;
	if ((out = pass_reports(r, p)) == PASS_NEXT && (out = pass_mark_send(r, p)) == PASS_NEXT) {
		if (p->n >= r->cfg->relay_batch_size && !*r->stop &&
		    (o->conn != NULL || relay_db_open(r, o)) &&
		    (next = pass_start(r, o)) == PASS_NEXT)
			o->overlapped = true;
		if ((out = pass_mark_end(p)) == PASS_NEXT)
			out = pass_commit(r, p);
	}
	if (next == PASS_NEXT && !pass_result_ok(out))
		pass_abandon(r, o, out == PASS_RETRY || out == PASS_DB_LOST);
	if (o->busy)
		r->cur = !r->cur; /* it finishes next */
	if (next == PASS_DB_LOST) {
		PQfinish(o->conn);
		o->conn = NULL;
	}
	if (pass_result_ok(out) && next != PASS_NEXT && !pass_result_ok(next))
		out = next; /* the other lane's start failed: the loop backs off */
	if (out == PASS_OK && p->overlapped)
		out = PASS_AGAIN; /* rows it skipped were the other lane's, not absent */
done:
	if (!p->busy) {
		PQclear(p->claim);
		p->claim = NULL;
	}
	if (out == PASS_DB_LOST && p->conn != NULL && db_lost(p->conn)) {
		PQfinish(p->conn);
		p->conn = NULL;
	}
	/* Only pass_commit returns PASS_FULL: p committed a full batch. */
	cursor_pass_done(&r->cursor, p, out == PASS_FULL);
	return (enum pass_result)out;
}

/* Log an info line about every RELAY_SUMMARY_MS when something went out. */
static void relay_summary(struct relay *r, bool force)
{
	int64_t now = util_mono_ms();
	int64_t n = r->ctr.published - r->summary_published;

	if (!force && now - r->summary_ms < RELAY_SUMMARY_MS)
		return;
	if (n > 0)
		log_info("published %" PRId64 " events in %.1f s (%.0f/s); totals: passes %" PRId64
			 ", published %" PRId64 ", acked %" PRId64 ", failed %" PRId64
			 ", marked %" PRId64,
			 n, (double)(now - r->summary_ms) / 1000.0,
			 (double)n * 1000.0 / (double)(now - r->summary_ms + 1), r->ctr.passes,
			 r->ctr.published, r->ctr.acked, r->ctr.failed, r->ctr.marked);
	r->summary_ms = now;
	r->summary_published = r->ctr.published;
}

/* Wait until the next pass is due (due_ms), a notification arrives (and
 * hold_ms, the backoff, has passed), or we are stopped; at most one slice
 * of RELAY_WAIT_SLICE_MS. Serves librdkafka's callbacks meanwhile. */
static void relay_idle(struct relay *r, int64_t due_ms, int64_t hold_ms)
{
	int64_t now = util_mono_ms();
	int64_t target = r->notified ? hold_ms : (due_ms > hold_ms ? due_ms : hold_ms);
	long slice = target - now > RELAY_WAIT_SLICE_MS ? RELAY_WAIT_SLICE_MS : (long)(target - now);
	bool alive = true;

	if (slice < 0)
		slice = 0;
	publish_poll(&r->pub);
	if (r->lane[0].conn != NULL && r->cfg->relay_notify) {
		struct pollfd pfd = { .fd = PQsocket(r->lane[0].conn), .events = POLLIN, .revents = 0 };

		if (relay_take_notifies(r, false, &alive))
			r->notified = true;
		if (slice > 0 && !r->notified && pfd.fd >= 0 && poll(&pfd, 1, (int)slice) > 0) {
			if (relay_take_notifies(r, true, &alive))
				r->notified = true;
		} else if (slice > 0 && r->notified) {
			util_sleep_ms(slice, r->stop); /* notified, but backing off */
		}
		if (!alive) {
			log_warn("database connection lost while idle");
			PQfinish(r->lane[0].conn);
			r->lane[0].conn = NULL;
		}
	} else if (slice > 0) {
		util_sleep_ms(slice, r->stop);
	}
}

static void relay_free(struct relay *r)
{
	publish_close(&r->pub);
	for (int i = 0; i < 2; i++) {
		struct pass *p = &r->lane[i];

		PQclear(p->claim);
		if (p->conn != NULL)
			PQfinish(p->conn);
		free(p->rows);
		free(p->order);
		free(p->mins);
		db_array_free(&p->aggs);
		db_array_free(&p->sent);
		db_array_free(&p->failed_ids);
		db_array_free(&p->failed_why);
		db_array_free(&p->failed_refused);
	}
	if (r->log_fd >= 0)
		close(r->log_fd);
}

/* The relay's loop. drain: return 0 as soon as the backlog is caught up
 * (a pass claimed nothing, or, with until_idle false, less than a batch)
 * instead of waiting for more; only rows with id <= max_id are claimed. */
static int poll_loop(const struct conf *c, int relay_id, volatile sig_atomic_t *stop,
		     volatile sig_atomic_t *hup, int64_t max_id, bool drain, bool until_idle,
		     struct poll_marked *marked)
{
	struct relay r;
	char err[1024], masked[1024];
	long backoff = 0;
	int64_t due = 0, hold = 0;
	int rc = 1;

	memset(&r, 0, sizeof r);
	r.cfg = c;
	r.id = relay_id;
	r.stop = stop;
	r.log_fd = -1;
	r.max_id = max_id;
	r.marked = marked;
	r.mode = drain ? "cdc-catch-up" : "poll";
	r.cap = c->relay_batch_size;
	r.started_us = util_now_us();
	r.summary_ms = util_mono_ms();
	cluster_guard_init(&r.cluster, relay_id, c->kafka_brokers);
	if (gethostname(r.host, sizeof r.host) != 0)
		snprintf(r.host, sizeof r.host, "localhost");
	r.host[sizeof r.host - 1] = '\0';
	for (int i = 0; i < 2; i++) {
		struct pass *p = &r.lane[i];

		p->rows = calloc((size_t)r.cap, sizeof *p->rows);
		p->order = calloc((size_t)r.cap, sizeof *p->order);
		p->mins = calloc((size_t)r.cap, sizeof *p->mins);
		if (p->rows == NULL || p->order == NULL || p->mins == NULL) {
			log_error("out of memory for a batch of %d rows", r.cap);
			goto out;
		}
	}
	if (c->relay_publish_log[0] != '\0') {
		r.log_fd = open(c->relay_publish_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (r.log_fd < 0) {
			log_error("[relay] publish_log %s: %s", c->relay_publish_log, strerror(errno));
			rc = 2;
			goto out;
		}
	}
	if (!publish_open(&r.pub, c, err, sizeof err)) {
		log_error("cannot create the Kafka producer: %s", err);
		rc = 2;
		goto out;
	}
	db_conninfo_masked(c->db_conninfo, masked, sizeof masked);
	if (!drain)
		log_info("poll relay %d started: database \"%s\", brokers %s, topic %s, batch %d, "
		 "interval %d ms, notify %s", relay_id, masked, c->kafka_brokers, c->kafka_topic,
		 c->relay_batch_size, c->relay_poll_interval_ms, c->relay_notify ? "on" : "off");

	while (!*stop) {
		int64_t now;
		enum pass_result pr;

		if (hup != NULL && *hup) {
			*hup = 0;
			log_info("SIGHUP received (configuration reload is not implemented yet)");
		}
		if (r.lane[0].conn == NULL) {
			if (!relay_db_open(&r, &r.lane[0])) {
				if (*stop)
					break;
				util_sleep_ms(util_backoff_next(&backoff, RELAY_BACKOFF_BASE_MS,
								c->relay_backoff_max_ms), stop);
				continue;
			}
			due = 0;
		}
		if (r.pub.rk == NULL || kafka_take_fatal(err, sizeof err)) {
			if (r.pub.rk != NULL)
				log_error("fatal producer error while idle (%s); re-creating the producer",
					  err);
			publish_close(&r.pub);
			if (!publish_open(&r.pub, c, err, sizeof err)) {
				log_error("cannot re-create the Kafka producer: %s", err);
				goto out;
			}
		}
		now = util_mono_ms();
		if (now - r.counters_ms >= RELAY_COUNTERS_MS)
			relay_counters_flush(&r);
		relay_summary(&r, false);
		if (now < hold || (now < due && !r.notified)) {
			relay_idle(&r, due, hold);
			continue;
		}
		r.notified = false;
		cursor_tick(&r.cursor, now);
		pr = relay_pass(&r);
		now = util_mono_ms();
		if (drain && (pr == PASS_IDLE || (pr == PASS_OK && !until_idle))) {
			rc = 0;
			goto out;
		}
		switch (pr) {
		case PASS_IDLE:
		case PASS_OK:
			backoff = 0;
			/* A drain goes on until a pass finds nothing: at once. */
			due = drain ? now : now + c->relay_poll_interval_ms;
			break;
		case PASS_FULL:
		case PASS_AGAIN:
			backoff = 0;
			due = now;
			break;
		case PASS_RETRY:
			hold = now + util_backoff_next(&backoff, RELAY_BACKOFF_BASE_MS,
						       c->relay_backoff_max_ms);
			due = hold;
			break;
		case PASS_DB_LOST: /* relay_pass closed the lane's connection */
			due = now;
			break;
		case PASS_CLUSTER_BACK:
			publish_close(&r.pub); /* its producer id is the other cluster's */
			backoff = 0;
			due = now;
			break;
		case PASS_CLUSTER:
		case PASS_PRODUCER:
			publish_close(&r.pub);
			hold = now + util_backoff_next(&backoff, RELAY_BACKOFF_BASE_MS,
						       c->relay_backoff_max_ms);
			due = hold;
			break;
		}
		/* Notifications that arrived during the pass are for rows it may
		 * not have seen: go again as soon as allowed. */
		if (r.lane[0].conn != NULL && r.cfg->relay_notify) {
			bool alive;

			if (relay_take_notifies(&r, false, &alive))
				r.notified = true;
		}
	}
	/* Stopped: the pass in flight on the other lane finishes first. */
	while (r.lane[r.cur].busy)
		(void)relay_pass(&r);
	rc = drain ? 1 : 0; /* a drain that was stopped did not finish */
	relay_counters_flush(&r);
	relay_summary(&r, true);
	log_info("stopped after %" PRId64 " passes: published %" PRId64 ", acked %" PRId64
		 ", failed %" PRId64 ", marked %" PRId64, r.ctr.passes, r.ctr.published,
		 r.ctr.acked, r.ctr.failed, r.ctr.marked);
out:
	if (marked != NULL)
		poll_marked_settle(marked);
	relay_free(&r);
	return rc;
}

int poll_run(const struct conf *c, int relay_id, volatile sig_atomic_t *stop,
	     volatile sig_atomic_t *hup)
{
	return poll_loop(c, relay_id, stop, hup, INT64_MAX, false, false, NULL);
}

int poll_drain(const struct conf *c, int relay_id, int64_t max_id, bool until_idle,
	       struct poll_marked *marked, volatile sig_atomic_t *stop)
{
	return poll_loop(c, relay_id, stop, NULL, max_id, true, until_idle, marked);
}
