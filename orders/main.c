/* orders: the order service and load generator.
 *
 * Every event of an order is one database transaction that changes the
 * order row (status, version = version + 1). In outbox mode the same
 * statement inserts the outbox row with aggregate_seq = the new version, so
 * the event is durable exactly when the order change is. In naive mode the
 * transaction commits first and the event is produced to Kafka afterwards:
 * the dual write, kept on purpose to show what it loses. */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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

#define WINDOW 4 /* orders each connection keeps in flight at once */

static const char *const event_types[] = {
	"order.placed", "order.paid", "order.packed", "order.shipped", "order.delivered",
};
#define N_NAMED (sizeof event_types / sizeof event_types[0])

/* The first event creates the order and its outbox row in one statement. */
static const char SQL_PLACE_OUTBOX[] =
	"WITH o AS (INSERT INTO public.orders (customer_id, status, total_cents, version) "
	"  VALUES ($1, 'placed', $2, 1) RETURNING id, version, status, total_cents, customer_id) "
	"INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type, payload) "
	"SELECT 'order', o.id::text, o.version, $3, jsonb_build_object('order_id', o.id::text, "
	"  'seq', o.version, 'status', o.status, 'total_cents', o.total_cents, "
	"  'customer_id', o.customer_id) FROM o "
	"RETURNING aggregate_id, aggregate_seq";

/* Later events: the UPDATE takes the order's row lock, so version (and with
 * it aggregate_seq) is assigned in commit order, 1, 2, 3 ... without gaps. */
static const char SQL_NEXT_OUTBOX[] =
	"WITH o AS (UPDATE public.orders SET status = $2, version = version + 1, "
	"  total_cents = total_cents + $3, updated_at = now() WHERE id = $1 "
	"  RETURNING id, version, status, total_cents, customer_id) "
	"INSERT INTO public.outbox (aggregate_type, aggregate_id, aggregate_seq, event_type, payload) "
	"SELECT 'order', o.id::text, o.version, $4, jsonb_build_object('order_id', o.id::text, "
	"  'seq', o.version, 'status', o.status, 'total_cents', o.total_cents, "
	"  'customer_id', o.customer_id) FROM o "
	"RETURNING aggregate_id, aggregate_seq";

/* Naive mode: the business change alone; the event is built in C. */
static const char SQL_PLACE_NAIVE[] =
	"INSERT INTO public.orders (customer_id, status, total_cents, version) "
	"VALUES ($1, 'placed', $2, 1) "
	"RETURNING id::text, version, jsonb_build_object('order_id', id::text, 'seq', version, "
	"  'status', status, 'total_cents', total_cents, 'customer_id', customer_id)::text";

static const char SQL_NEXT_NAIVE[] =
	"UPDATE public.orders SET status = $2, version = version + 1, "
	"  total_cents = total_cents + $3, updated_at = now() WHERE id = $1 "
	"RETURNING id::text, version, jsonb_build_object('order_id', id::text, 'seq', version, "
	"  'status', status, 'total_cents', total_cents, 'customer_id', customer_id)::text";

struct opts {
	bool naive;
	long orders;
	long events_per_order;
	long concurrency;
	long rate;
	long seed;
	bool quiet;
};

static struct conf cfg;
static struct opts opt = { false, 0, 5, 4, 0, 1, false };
static rd_kafka_t *producer; /* naive mode only */
static volatile sig_atomic_t stop;

static atomic_long n_committed;
static atomic_long n_produced;
static atomic_long n_produce_failed;
static atomic_long n_db_errors;

struct worker {
	int index;
	pthread_t thread;
	bool joined;
	uint64_t rng;
};

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	(void)opaque;
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		atomic_fetch_add(&n_produced, 1);
	} else {
		atomic_fetch_add(&n_produce_failed, 1);
		log_warn("naive produce failed, event skipped: %s", rd_kafka_err2str(m->err));
	}
}

static const char *event_type(long seq)
{
	return seq <= (long)N_NAMED ? event_types[seq - 1] : "order.updated";
}

/* One event of an order in its own transaction. order_id is "" for the
 * first event and is filled in from the new row. Returns false on a
 * database error (the transaction is rolled back or the connection gone). */
static bool place_event(PGconn *conn, struct worker *w, char order_id[32], long seq)
{
	char amount[24], customer[32];
	char row_id[32] = "", payload[512] = "", event_id[37];
	const char *params[4];
	const char *sql;
	int nparams;
	struct db_err dbe;
	PGresult *res = NULL;
	bool ok = false;

	snprintf(amount, sizeof amount, "%ld", (long)(rng_next(&w->rng) % 10000) + 100);
	if (!db_begin(conn, &dbe))
		goto out;
	if (seq == 1) {
		snprintf(customer, sizeof customer, "c-%ld", (long)(rng_next(&w->rng) % 100000));
		params[0] = customer;
		params[1] = amount;
		params[2] = event_type(1);
		nparams = opt.naive ? 2 : 3;
		sql = opt.naive ? SQL_PLACE_NAIVE : SQL_PLACE_OUTBOX;
	} else {
		params[0] = order_id;
		params[1] = event_type(seq) + 6; /* status = the verb after "order." */
		params[2] = amount;
		params[3] = event_type(seq);
		nparams = opt.naive ? 3 : 4;
		sql = opt.naive ? SQL_NEXT_NAIVE : SQL_NEXT_OUTBOX;
	}
	res = db_query(conn, sql, nparams, params, PGRES_TUPLES_OK, &dbe);
	if (res == NULL)
		goto out;
	if (PQntuples(res) != 1) {
		snprintf(dbe.msg, sizeof dbe.msg, "%d rows where one was expected", PQntuples(res));
		goto out;
	}
	snprintf(row_id, sizeof row_id, "%s", PQgetvalue(res, 0, 0));
	if (opt.naive)
		snprintf(payload, sizeof payload, "%s", PQgetvalue(res, 0, 2));
	PQclear(res);
	res = NULL;
	crash_point("orders.before_commit");
	if (!db_commit(conn, &dbe))
		goto out;
	ok = true;
	snprintf(order_id, 32, "%s", row_id);
	atomic_fetch_add(&n_committed, 1);
	crash_point("orders.after_commit");
	if (opt.naive) {
		/* The dual write: the order is committed; now tell Kafka. If this
		 * process dies here, or the produce fails, the event is gone. */
		struct kafka_event ev = {
			.event_id = event_id, .event_type = event_type(seq),
			.aggregate_type = "order", .aggregate_id = row_id,
			.aggregate_seq = seq, .payload = payload, .payload_len = strlen(payload),
		};
		rd_kafka_resp_err_t e;

		util_uuid4(event_id);
		e = kafka_produce_event(producer, cfg.kafka_topic, &ev, NULL);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			atomic_fetch_add(&n_produce_failed, 1);
			log_warn("naive produce of %s seq %ld failed, event skipped: %s", row_id, seq,
				 rd_kafka_err2str(e));
		}
	}
out:
	if (!ok) {
		log_debug("event %s seq %ld: %s", order_id[0] ? order_id : "(new)", seq, dbe.msg);
		atomic_fetch_add(&n_db_errors, 1);
		db_rollback(conn);
	}
	PQclear(res);
	return ok;
}

struct slot {
	char order_id[32];
	long next_seq; /* 0 = free */
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const char *conninfo = cfg.db_conninfo;
	long mine = opt.orders / opt.concurrency + (w->index < opt.orders % opt.concurrency);
	long started = 0, active = 0;
	double per_sec = opt.rate > 0 ? (double)opt.rate / (double)opt.concurrency : 0;
	int64_t t0 = util_mono_ms();
	long done_events = 0;
	struct slot slots[WINDOW];
	PGconn *conn = db_open_retry(conninfo, NULL, "orders", &stop);

	memset(slots, 0, sizeof slots);
	while (conn != NULL && !stop && (started < mine || active > 0)) {
		int i = (int)(rng_next(&w->rng) % WINDOW);
		struct slot *s = &slots[i];

		if (s->next_seq == 0) {
			if (started >= mine)
				continue; /* pick an active one */
			started++;
			active++;
			s->next_seq = 1;
			s->order_id[0] = '\0';
		}
		if (per_sec > 0) {
			int64_t due = t0 + (int64_t)((double)done_events * 1000.0 / per_sec);
			int64_t now = util_mono_ms();

			if (due > now)
				util_sleep_ms((long)(due - now), &stop);
		}
		if (!place_event(conn, w, s->order_id, s->next_seq)) {
			if (db_lost(conn)) {
				PQfinish(conn);
				conn = db_open_retry(conninfo, NULL, "orders", &stop);
			} else {
				util_sleep_ms(50, &stop);
			}
			continue;
		}
		done_events++;
		if (++s->next_seq > opt.events_per_order) {
			s->next_seq = 0;
			active--;
		}
	}
	PQfinish(conn);
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: orders [-c FILE] --mode outbox|naive --orders N [--events-per-order K]\n"
		"              [--concurrency C] [--rate R] [--seed S] [--quiet]\n"
		"\n"
		"The order service and load generator. Places N orders, each with K events\n"
		"(order.placed, order.paid, order.packed, ...), over C connections that each\n"
		"interleave several orders.\n"
		"  --mode outbox   each event changes the order row and inserts its outbox row\n"
		"                  in ONE transaction (the relay publishes it)\n"
		"  --mode naive    commit the order change, then produce to Kafka directly\n"
		"                  (the dual write: a crash in between loses the event)\n"
		"  --orders N            orders to place (required)\n"
		"  --events-per-order K  events per order, default 5\n"
		"  --concurrency C       database connections, default 4\n"
		"  --rate R              events per second in all, default unlimited\n"
		"  --seed S              makes amounts and interleaving repeatable, default 1\n"
		"  -c FILE               configuration (default $OUTBOX_CONF or conf/outboxd.conf)\n"
		"Crash injection: OUTBOX_CRASH=orders.before_commit:P,orders.after_commit:P\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "mode", required_argument, NULL, 'm' },
		{ "orders", required_argument, NULL, 'n' },
		{ "events-per-order", required_argument, NULL, 'k' },
		{ "concurrency", required_argument, NULL, 'j' },
		{ "rate", required_argument, NULL, 'r' },
		{ "seed", required_argument, NULL, 's' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *conf_path = NULL, *mode = NULL;
	char err[1024];
	struct worker *workers = NULL;
	int64_t t0, last_progress;
	long total;
	double secs;
	int c, rc = 1;

	log_setup("orders", -1);
	while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		bool good = true;

		switch (c) {
		case 'c': conf_path = optarg; break;
		case 'm': mode = optarg; break;
		case 'n': good = util_parse_int(optarg, 1, 100000000, &opt.orders); break;
		case 'k': good = util_parse_int(optarg, 1, 1000000, &opt.events_per_order); break;
		case 'j': good = util_parse_int(optarg, 1, 256, &opt.concurrency); break;
		case 'r': good = util_parse_int(optarg, 0, 100000000, &opt.rate); break;
		case 's': good = util_parse_int(optarg, 0, 2147483647, &opt.seed); break;
		case 'q': opt.quiet = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (!good) {
			const char *name = "?";

			for (const struct option *o = longopts; o->name != NULL; o++)
				if (o->val == c)
					name = o->name;
			fprintf(stderr, "orders: bad value \"%s\" for --%s\n", optarg, name);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "orders: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	if (mode == NULL || (strcmp(mode, "outbox") != 0 && strcmp(mode, "naive") != 0)) {
		fprintf(stderr, "orders: --mode outbox|naive is required\n");
		return 2;
	}
	if (opt.orders == 0) {
		fprintf(stderr, "orders: --orders N is required\n");
		return 2;
	}
	opt.naive = strcmp(mode, "naive") == 0;
	if (!conf_load(&cfg, conf_path, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (!crash_setup(err, sizeof err)) {
		fprintf(stderr, "orders: %s\n", err);
		return 2;
	}
	if (opt.concurrency > opt.orders)
		opt.concurrency = opt.orders;
	util_on_signals(on_signal);
	if (opt.naive) {
		producer = kafka_producer_new(&cfg, dr_cb, err, sizeof err);
		if (producer == NULL) {
			fprintf(stderr, "orders: %s\n", err);
			return 2;
		}
	}
	workers = calloc((size_t)opt.concurrency, sizeof *workers);
	if (workers == NULL)
		goto out;
	t0 = last_progress = util_mono_ms();
	for (long i = 0; i < opt.concurrency; i++) {
		workers[i].index = (int)i;
		workers[i].rng = ((uint64_t)opt.seed + 1) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(i + 1);
		if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
			log_error("cannot start thread %ld", i);
			stop = 1;
			opt.concurrency = i;
			break;
		}
	}
	total = opt.orders * opt.events_per_order;
	/* The main thread serves librdkafka's callbacks and the progress line
	 * until every worker thread has finished. */
	for (;;) {
		bool all_done = true;

		for (long i = 0; i < opt.concurrency; i++) {
			if (!workers[i].joined && pthread_tryjoin_np(workers[i].thread, NULL) == 0)
				workers[i].joined = true;
			if (!workers[i].joined)
				all_done = false;
		}
		if (all_done)
			break;
		if (producer != NULL)
			rd_kafka_poll(producer, 100);
		else
			util_sleep_ms(100, NULL);
		if (!opt.quiet && util_mono_ms() - last_progress >= 1000) {
			long n = atomic_load(&n_committed);

			last_progress = util_mono_ms();
			fprintf(stderr, "\rorders: %ld/%ld events committed (%.0f/s)   ", n, total,
				(double)n * 1000.0 / (double)(last_progress - t0 + 1));
		}
	}
	if (producer != NULL) {
		rd_kafka_resp_err_t e = rd_kafka_flush(producer, cfg.kafka_delivery_timeout_ms);

		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			log_warn("naive mode: %d events still unacknowledged at exit",
				 rd_kafka_outq_len(producer));
	}
	secs = (double)(util_mono_ms() - t0) / 1000.0;
	if (!opt.quiet && secs >= 1.0)
		fprintf(stderr, "\n");
	printf("orders: mode=%s committed=%ld produced=%ld produce_failed=%ld db_errors=%ld "
	       "seconds=%.2f rate=%.0f\n",
	       mode, atomic_load(&n_committed),
	       opt.naive ? atomic_load(&n_produced) : 0L, atomic_load(&n_produce_failed),
	       atomic_load(&n_db_errors), secs, (double)atomic_load(&n_committed) / (secs > 0 ? secs : 1));
	rc = stop ? 1 : 0;
out:
	free(workers);
	if (producer != NULL)
		rd_kafka_destroy(producer);
	return rc;
}
