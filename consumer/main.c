/* outbox-consumer: one consumer worker.
 *
 * Reads the event topic in a consumer group and applies each event in one
 * sink transaction (see apply.c). A message's offset is recorded only after
 * its transaction committed (or after it was audited as a duplicate, gap or
 * poison message), and recorded offsets are committed to Kafka every
 * [consumer] commit_interval_ms, on revoke and at shutdown. A crash at any
 * point therefore re-delivers, never skips.
 *
 * With commit_interval_ms > 0 the per-message transactions commit with
 * synchronous_commit = off, and every Kafka offset commit is preceded by one
 * synchronous commit (the counters row), whose WAL flush makes all earlier
 * applies durable: one fsync per interval instead of one per message. If
 * the database connection is lost, applies since that flush are in doubt (a
 * server crash loses them), so the consumer rewinds its partitions to the
 * committed offsets and processes from there again; the inbox and the
 * projection's last_seq drop whatever did survive. With 0, every message
 * commits synchronously and its offset is committed right after. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "audit.h"
#include "conf.h"
#include "crash.h"
#include "db.h"
#include "kafka.h"
#include "log.h"
#include "offsets.h"
#include "util.h"

#define POLL_MS 200
#define REPORT_MS 1000

static struct conf cfg;
static volatile sig_atomic_t stop;
static volatile sig_atomic_t hup;
static struct apply_counters counters;
static struct offsets *done; /* what may be committed to Kafka */
static struct apply *ap;
static int64_t started_us;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		hup = 1;
	else
		stop = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: outbox-consumer [-c FILE] [--id I]\n"
		"\n"
		"One consumer worker: reads [kafka] topic in consumer group [consumer] group_id\n"
		"(static member \"consumer-I\") and applies every event exactly once, in\n"
		"aggregate_seq order, to schema sink ([consumer] conninfo, default the\n"
		"[database] one). Gaps, duplicates and poison messages go to\n"
		"sink.ordering_audit and to the JSON-lines file [supervisor] audit_file.\n"
		"  -c, --config FILE  configuration (default $OUTBOX_CONF or conf/outboxd.conf)\n"
		"  --id I             worker id, 0..1023 (default 0)\n"
		"  -h, --help         this text\n"
		"Stops after the current message on SIGTERM/SIGINT (exit 0). Exit 1: runtime\n"
		"failure; 2: usage or configuration error.\n"
		"Crash injection: OUTBOX_CRASH=consumer.after_apply:P,consumer.after_commit:P\n");
}

/* This consumer's counters to sink.consumers, in a synchronous commit that
 * also makes every earlier (asynchronously committed) apply durable. */
static bool report(void)
{
	char err[512];

	if (apply_lost(ap))
		return false;
	if (!apply_report(ap, &counters, started_us, err, sizeof err)) {
		log_debug("counters not recorded: %s", err);
		return false;
	}
	return true;
}

/* Commit the offsets of the messages done: async during the run, sync on
 * revoke and at shutdown. With asynchronous database commits, first the
 * durability barrier (report): an offset reaches Kafka only once its
 * transaction is on disk. Nothing new since the last commit: nothing to do. */
static void commit_offsets(rd_kafka_t *rk, bool sync)
{
	rd_kafka_topic_partition_list_t *l;
	rd_kafka_resp_err_t e;

	if (!offsets_pending(done))
		return;
	if (cfg.consumer_commit_interval_ms > 0 && !report()) {
		log_debug("offsets not committed: database not reachable for the flush");
		return;
	}
	l = offsets_list(done);
	if (l == NULL) {
		offsets_committed(done);
		return;
	}
	e = rd_kafka_commit(rk, l, sync ? 0 : 1);
	rd_kafka_topic_partition_list_destroy(l);
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR__NO_OFFSET)
		offsets_committed(done);
	else
		log_warn("offset commit failed: %s", rd_kafka_err2str(e));
}

/* After the database connection was lost, transactions committed
 * asynchronously since the last flush may be gone (a server crash): go back
 * to the committed offsets and process from there again (the inbox and
 * last_seq drop what did survive). False when Kafka cannot say where. */
static bool rewind_to_committed(rd_kafka_t *rk)
{
	rd_kafka_topic_partition_list_t *parts = NULL;
	rd_kafka_resp_err_t e;
	rd_kafka_error_t *kerr;
	bool ok = false;

	offsets_forget_all(done);
	e = rd_kafka_assignment(rk, &parts);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		goto out;
	if (parts->cnt == 0) {
		ok = true;
		goto out;
	}
	e = rd_kafka_committed(rk, parts, 10000);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		goto out;
	for (int i = 0; i < parts->cnt; i++)
		if (parts->elems[i].offset < 0)
			parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING; /* auto.offset.reset */
	kerr = rd_kafka_seek_partitions(rk, parts, 10000);
	if (kerr != NULL) {
		log_error("rewind: seek: %s", rd_kafka_error_string(kerr));
		rd_kafka_error_destroy(kerr);
		goto out;
	}
	for (int i = 0; i < parts->cnt; i++)
		if (parts->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			e = parts->elems[i].err;
			goto out;
		}
	log_info("rewound %d partition(s) to their committed offsets", parts->cnt);
	ok = true;
out:
	if (!ok && e != RD_KAFKA_RESP_ERR_NO_ERROR)
		log_error("rewind: %s", rd_kafka_err2str(e));
	if (parts != NULL)
		rd_kafka_topic_partition_list_destroy(parts);
	return ok;
}

static void offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			     rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	(void)rk;
	(void)offsets;
	(void)opaque;
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
		log_warn("offset commit failed: %s (committed again later)", rd_kafka_err2str(err));
		offsets_uncommitted(done);
	}
}

/* On revoke, commit what has been processed before the partitions go, so
 * the next owner starts right after it; eager and cooperative both. */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
	rd_kafka_error_t *kerr = NULL;
	rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;

	(void)opaque;
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		log_info("assigned %d partition(s)", parts->cnt);
		if (cooperative)
			kerr = rd_kafka_incremental_assign(rk, parts);
		else
			e = rd_kafka_assign(rk, parts);
	} else {
		log_info("revoked %d partition(s)%s", parts->cnt,
			 rd_kafka_assignment_lost(rk) ? " (lost)" : "");
		if (!rd_kafka_assignment_lost(rk)) {
			offsets_uncommitted(done); /* commit all we have, now */
			commit_offsets(rk, true);
		}
		offsets_forget(done, parts);
		if (cooperative)
			kerr = rd_kafka_incremental_unassign(rk, parts);
		else
			e = rd_kafka_assign(rk, NULL);
	}
	if (kerr != NULL) {
		log_error("rebalance: %s", rd_kafka_error_string(kerr));
		rd_kafka_error_destroy(kerr);
	} else if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		log_error("rebalance: %s", rd_kafka_err2str(e));
	}
}

/* Our own consumer (not kafka_consumer_new) because the rebalance and
 * commit callbacks must be set before rd_kafka_new. Same settings. */
static rd_kafka_t *consumer_new(const char *instance_id, char *err, size_t errlen)
{
	static const char *const props[][2] = {
		{ "enable.auto.commit", "false" },
		{ "enable.auto.offset.store", "false" },
		{ "auto.offset.reset", "earliest" },
		{ "enable.partition.eof", "false" },
	};
	static const char *const tunables[][2] = {
		{ "fetch.wait.max.ms", "100" },
	};
	rd_kafka_conf_t *kc = kafka_conf_new(&cfg, err, errlen);
	rd_kafka_topic_partition_list_t *topics;
	rd_kafka_resp_err_t e;
	rd_kafka_t *rk;

	if (kc == NULL)
		return NULL;
	if (rd_kafka_conf_set(kc, "group.id", cfg.consumer_group, err, errlen) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(kc, "group.instance.id", instance_id, err, errlen) !=
		    RD_KAFKA_CONF_OK)
		goto fail;
	for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
		if (rd_kafka_conf_set(kc, props[i][0], props[i][1], err, errlen) != RD_KAFKA_CONF_OK)
			goto fail;
	/* Defaults a kafka.* line may override: a partition that has nothing
	 * yet must not hold up one whose offset was just looked up for long. */
	for (size_t i = 0; i < sizeof tunables / sizeof tunables[0]; i++) {
		bool set_by_user = false;

		for (int j = 0; j < cfg.kafka_nprops; j++)
			if (strcmp(cfg.kafka_props[j].name, tunables[i][0]) == 0)
				set_by_user = true;
		if (!set_by_user &&
		    rd_kafka_conf_set(kc, tunables[i][0], tunables[i][1], err, errlen) !=
			    RD_KAFKA_CONF_OK)
			goto fail;
	}
	rd_kafka_conf_set_rebalance_cb(kc, rebalance_cb);
	rd_kafka_conf_set_offset_commit_cb(kc, offset_commit_cb);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, errlen);
	if (rk == NULL)
		goto fail;
	rd_kafka_poll_set_consumer(rk);
	topics = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(topics, cfg.kafka_topic, RD_KAFKA_PARTITION_UA);
	e = rd_kafka_subscribe(rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "subscribe %s: %s", cfg.kafka_topic, rd_kafka_err2str(e));
		rd_kafka_destroy(rk);
		return NULL;
	}
	return rk;
fail:
	rd_kafka_conf_destroy(kc);
	return NULL;
}

enum handled { HANDLED, STOPPED, REWIND, FAILED };

/* Process one message to a final outcome, retrying transient database
 * errors with backoff (never skipping the message). STOPPED: a stop came
 * during the retries and nothing was recorded; REWIND: the connection was
 * re-established with asynchronous commits on, go back to the committed
 * offsets (this message comes again); FAILED: a permanent error. */
static enum handled handle(const rd_kafka_message_t *rkm)
{
	struct apply_msg m;
	char why[256], err[1024];
	bool good = apply_parse(rkm, &m, why, sizeof why);
	long backoff = 0;
	int64_t t0 = util_mono_ms();
	int attempts = 0;
	enum apply_result r;

	counters.received++;
	for (;;) {
		if (apply_lost(ap)) {
			if (!apply_connect(ap, &stop))
				return STOPPED;
			if (cfg.consumer_commit_interval_ms > 0)
				return REWIND;
		}
		r = good ? apply_event(ap, &m, err, sizeof err)
			 : apply_poison(ap, &m, why, err, sizeof err);
		if (r != APPLY_RETRY)
			break;
		attempts++;
		counters.retries++;
		if (attempts == 1 || attempts % 10 == 0)
			log_warn("[%" PRId32 "] offset %" PRId64 ": transient database error, retry %d "
				 "(%.1f s so far): %s", m.partition, m.offset, attempts,
				 (double)(util_mono_ms() - t0) / 1000.0, err);
		if (stop)
			return STOPPED;
		util_sleep_ms(util_backoff_next(&backoff, 50, 5000), &stop);
	}
	if (attempts > 0)
		log_info("[%" PRId32 "] offset %" PRId64 ": done after %d retries", m.partition,
			 m.offset, attempts);
	switch (r) {
	case APPLY_APPLIED: counters.applied++; break;
	case APPLY_DUPLICATE:
		counters.duplicates++;
		log_debug("duplicate: order %s seq %" PRId64 " event %s", m.aggregate_id, m.seq,
			  m.event_id);
		break;
	case APPLY_GAP:
		counters.gaps++;
		log_info("gap: order %s got seq %" PRId64 " ([%" PRId32 "] offset %" PRId64 ")",
			 m.aggregate_id, m.seq, m.partition, m.offset);
		break;
	case APPLY_POISON:
		counters.poison++;
		log_warn("poison message [%" PRId32 "] offset %" PRId64 ": %s", m.partition,
			 m.offset, good ? "refused by the database" : why);
		break;
	case APPLY_RETRY:
	case APPLY_FAILED:
		log_error("[%" PRId32 "] offset %" PRId64 ": %s", m.partition, m.offset, err);
		return FAILED;
	}
	return HANDLED;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "id", required_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *conf_path = NULL;
	char err[1024], instance[32];
	long id = 0;
	int c, rc = 1;
	rd_kafka_t *rk = NULL;
	struct audit *au = NULL;
	int64_t last_report, last_commit, t_first = 0;

	while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': conf_path = optarg; break;
		case 'i':
			if (!util_parse_int(optarg, 0, 1023, &id)) {
				fprintf(stderr, "outbox-consumer: bad value \"%s\" for --id\n", optarg);
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default:
			fprintf(stderr, "usage: outbox-consumer [-c FILE] [--id I] (--help for more)\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outbox-consumer: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	started_us = util_now_us();
	log_setup("consumer", (int)id);
	if (!conf_load(&cfg, conf_path, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (!crash_setup(err, sizeof err)) {
		fprintf(stderr, "outbox-consumer: %s\n", err);
		return 2;
	}
	util_on_signals(on_signal);
	au = audit_open(cfg.sup_audit_file, err, sizeof err);
	if (au == NULL) {
		fprintf(stderr, "outbox-consumer: %s\n", err);
		return 2;
	}
	/* Committing offsets every commit_interval_ms lets the per-message
	 * transactions commit asynchronously: one WAL flush per interval
	 * (commit_offsets) instead of one per message. */
	ap = apply_new(conf_sink_conninfo(&cfg), (int)id, au, cfg.consumer_commit_interval_ms > 0);
	done = offsets_new(cfg.kafka_topic);
	if (ap == NULL || done == NULL) {
		log_error("out of memory");
		goto out;
	}
	snprintf(instance, sizeof instance, "consumer-%ld", id);
	rk = consumer_new(instance, err, sizeof err);
	if (rk == NULL) {
		fprintf(stderr, "outbox-consumer: %s\n", err);
		rc = 2;
		goto out;
	}
	if (!apply_connect(ap, &stop)) {
		rc = 0; /* stopped before the database came up */
		goto out;
	}
	log_info("consuming %s as %s in group %s", cfg.kafka_topic, instance, cfg.consumer_group);
	last_report = last_commit = util_mono_ms();
	rc = 0;
	while (!stop) {
		rd_kafka_message_t *rkm;
		int64_t now = util_mono_ms();

		if (hup) {
			hup = 0;
			log_info("SIGHUP: the consumer has nothing to reload; restart it for new settings");
		}
		if (now - last_commit >= cfg.consumer_commit_interval_ms) {
			commit_offsets(rk, false);
			last_commit = now;
		}
		if (now - last_report >= REPORT_MS) {
			(void)report();
			last_report = now;
		}
		rkm = rd_kafka_consumer_poll(rk, POLL_MS);
		if (rkm == NULL)
			continue;
		if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) {
				char fe[512];

				rd_kafka_fatal_error(rk, fe, sizeof fe);
				log_error("kafka fatal error: %s", fe);
				rd_kafka_message_destroy(rkm);
				rc = 1;
				break;
			}
			log_warn("consume: %s", rd_kafka_message_errstr(rkm));
			rd_kafka_message_destroy(rkm);
			continue;
		}
		if (t_first == 0)
			t_first = util_mono_ms();
		switch (handle(rkm)) {
		case HANDLED:
			offsets_done(done, rkm->partition, rkm->offset);
			if (cfg.consumer_commit_interval_ms == 0)
				commit_offsets(rk, false);
			break;
		case REWIND:
			if (!rewind_to_committed(rk)) {
				rc = 1; /* a restart rewinds too */
				stop = 1;
			}
			break;
		case STOPPED:
			log_info("stopping during retries; [%" PRId32 "] offset %" PRId64
				 " will be delivered again", rkm->partition, rkm->offset);
			break;
		case FAILED:
			rc = 1;
			stop = 1;
			break;
		}
		rd_kafka_message_destroy(rkm);
	}
	log_info("stopping: received %" PRId64 " applied %" PRId64 " duplicates %" PRId64
		 " gaps %" PRId64 " poison %" PRId64 " retries %" PRId64 " (%.0f events/s)",
		 counters.received, counters.applied, counters.duplicates, counters.gaps,
		 counters.poison, counters.retries,
		 t_first ? (double)counters.received * 1000.0 /
				   (double)(util_mono_ms() - t_first + 1) : 0.0);
	commit_offsets(rk, true);
	(void)report();
out:
	if (rk != NULL) {
		rd_kafka_resp_err_t e = rd_kafka_consumer_close(rk);

		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			log_warn("consumer close: %s", rd_kafka_err2str(e));
		rd_kafka_destroy(rk);
	}
	apply_free(ap);
	audit_close(au);
	offsets_free(done);
	return rc;
}
