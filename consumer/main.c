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
 * commits synchronously and its offset is committed right after.
 *
 * A message that cannot be applied is never skipped silently: transient
 * database errors are retried without limit; a constraint or trigger
 * refusing the event is retried within the retry budget; then (and at once
 * for poison) it is produced to the dead-letter topic, recorded in
 * sink.dead_letters with its order quarantined, and only then is its offset
 * recorded (see dlq.h and apply.h). Errors that would refuse every message
 * alike (a missing table, a privilege) stop the worker, as before: the
 * message comes again after the restart, nothing is dead-lettered.
 *
 * Messages are taken from librdkafka in batches of what is already fetched
 * (up to [consumer] batch_size, never waiting for more): a run of good events goes to
 * apply_batch, one transaction for all of them; whatever it refuses, and
 * every other message, goes through the one-by-one path above. A batch's
 * offsets are recorded only after its commit, so the invariant holds for
 * each message alike. Messages of partitions revoked while a batch is taken
 * are dropped from it unhandled: their next owner reads them again. */
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
#include "dlq.h"
#include "kafka.h"
#include "log.h"
#include "member.h"
#include "offsets.h"
#include "sweep.h"
#include "util.h"

#define POLL_MS 200
#define REPORT_MS 1000
#define BATCH_MAX CONF_CONSUMER_BATCH_MAX

static struct conf cfg;
static volatile sig_atomic_t stop;
static volatile sig_atomic_t hup;
static struct apply_counters counters;
static struct offsets *done; /* what may be committed to Kafka */
static struct apply *ap;
static int64_t started_us;
static int consumer_id;
static struct dlq *dlq; /* the dead-letter topic */
/* OUTBOX_TEST_ASSIGN_FOREIGN=1 (tests of the message guard only): partitions
 * of other topics are assigned after all, so that their messages reach
 * handle() and its guard can be seen to refuse them. */
static bool test_assign_foreign;
static char instance[MEMBER_ID_MAX]; /* our static member id (group.instance.id) */
static bool instance_hand_set;       /* from kafka.group.instance.id */
static int64_t t_first;             /* when the first message came */

/* Messages taken from librdkafka and not handled yet (gather), and the
 * parsed events of a run of them (handle_gathered). */
static rd_kafka_message_t *gathered[BATCH_MAX];
static int ngathered;
static struct apply_msg run_msgs[BATCH_MAX];

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
		"(static member \"consumer-I-H\", H: 8 hex digits of a hash of group and topic,\n"
		"unless kafka.group.instance.id is set) and applies every event exactly once,\n"
		"in aggregate_seq order, to schema sink ([consumer] conninfo, default the\n"
		"[database] one). Partitions and messages of any other topic are refused:\n"
		"never applied, dead-lettered or parked, their offsets never committed\n"
		"(logged as errors, counted in sink.consumers). Gaps, duplicates and poison\n"
		"messages go to sink.ordering_audit and to the JSON-lines file [supervisor]\n"
		"audit_file.\n"
		"Poison, and messages still failing after the retry budget ([consumer]\n"
		"retry_max_attempts, retry_max_ms), go to the dead-letter topic (topic +\n"
		"\".dlq\") and sink.dead_letters; later events of their order are parked\n"
		"until outboxctl dlq retry or drop. Inbox rows older than [consumer]\n"
		"inbox_retention_hours are swept every inbox_sweep_interval_ms.\n"
		"  -c, --config FILE  configuration (default $OUTBOX_CONF or conf/outboxd.conf)\n"
		"  --id I             worker id, 0..1023 (default 0)\n"
		"  -h, --help         this text\n"
		"Stops after the current message on SIGTERM/SIGINT (exit 0). Exit 1: runtime\n"
		"failure; 2: usage or configuration error.\n"
		"Crash injection: OUTBOX_CRASH=consumer.after_apply:P,consumer.after_commit:P,\n"
		"consumer.after_dlq_publish:P,consumer.after_dead_letter:P\n");
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

/* After a reconnect with asynchronous commits: back to the committed
 * offsets, or stop (exit 1) when that fails: a restart rewinds too. */
static void rewind_or_stop(rd_kafka_t *rk, int *rc)
{
	if (!rewind_to_committed(rk)) {
		*rc = 1;
		stop = 1;
	}
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

/* Say loudly that the group assigned partitions of another topic (which
 * rebalance_cb leaves unassigned), and when it assigned nothing of ours,
 * what to change. */
static void foreign_assignment(int foreign, const char *topics, int own)
{
	counters.foreign_partitions += foreign;
	log_error("the group assigned %d partition(s) of %s, not of our topic %s: %s", foreign,
		  topics, cfg.kafka_topic,
		  test_assign_foreign ? "assigned anyway (OUTBOX_TEST_ASSIGN_FOREIGN)"
				      : "not taken, their messages are not ours to apply");
	if (own > 0 || test_assign_foreign)
		return;
	if (instance_hand_set)
		log_error("none of %s's partitions assigned: static member %s (kafka.group.instance.id)"
			  " is %s's member in group %s, and reads nothing until the group rebalances; "
			  "remove the kafka.group.instance.id line or give this topic its own value",
			  cfg.kafka_topic, instance, topics, cfg.consumer_group);
	else
		log_error("none of %s's partitions assigned: group %s is shared with consumers of %s; "
			  "this consumer reads nothing until the group rebalances; give it a "
			  "[consumer] group_id of its own", cfg.kafka_topic, cfg.consumer_group, topics);
}

/* Drop the gathered messages of these partitions (revoked) unhandled:
 * their offsets are not recorded, so their next owner reads them again. */
static void gathered_drop(const rd_kafka_topic_partition_list_t *parts)
{
	int dropped = 0;

	for (int i = 0; i < ngathered; i++) {
		rd_kafka_message_t *m = gathered[i];

		if (m == NULL || m->rkt == NULL ||
		    rd_kafka_topic_partition_list_find(parts, rd_kafka_topic_name(m->rkt),
						       m->partition) == NULL)
			continue;
		rd_kafka_message_destroy(m);
		gathered[i] = NULL;
		dropped++;
	}
	if (dropped > 0)
		log_info("rebalance: %d fetched message(s) of revoked partitions left to their next "
			 "owner", dropped);
}

/* On assign, take only our topic's partitions: a static member can be
 * handed another topic's (see member.h); those are logged, counted and
 * left unassigned, so nothing of them is fetched. On revoke, commit what
 * has been processed before the partitions go, so the next owner starts
 * right after it; eager and cooperative both. */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
	rd_kafka_error_t *kerr = NULL;
	rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
	rd_kafka_topic_partition_list_t *own, *use;
	char topics[512];
	int foreign;

	(void)opaque;
	own = member_own_partitions(&cfg, parts, &foreign, topics, sizeof topics);
	if (own == NULL) {
		log_error("rebalance: out of memory; taking no partitions");
		own = rd_kafka_topic_partition_list_new(0);
		foreign = 0;
	}
	use = test_assign_foreign ? parts : own;
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		if (foreign > 0)
			foreign_assignment(foreign, topics, own->cnt);
		log_info("assigned %d partition(s)", use->cnt);
		if (cooperative)
			kerr = rd_kafka_incremental_assign(rk, use);
		else
			e = rd_kafka_assign(rk, use);
	} else {
		log_info("revoked %d partition(s)%s", use->cnt,
			 rd_kafka_assignment_lost(rk) ? " (lost)" : "");
		if (!rd_kafka_assignment_lost(rk)) {
			offsets_uncommitted(done); /* commit all we have, now */
			commit_offsets(rk, true);
		}
		offsets_forget(done, parts);
		gathered_drop(parts);
		if (cooperative)
			kerr = rd_kafka_incremental_unassign(rk, use); /* only what was assigned */
		else
			e = rd_kafka_assign(rk, NULL);
	}
	rd_kafka_topic_partition_list_destroy(own);
	if (kerr != NULL) {
		log_error("rebalance: %s", rd_kafka_error_string(kerr));
		rd_kafka_error_destroy(kerr);
	} else if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		log_error("rebalance: %s", rd_kafka_err2str(e));
	}
}

/* Our own consumer (not kafka_consumer_new) because the rebalance and
 * commit callbacks must be set before rd_kafka_new. Same settings. */
static rd_kafka_t *consumer_new(char *err, size_t errlen)
{
	static const char *const props[][2] = {
		{ "enable.auto.commit", "false" },
		{ "enable.auto.offset.store", "false" },
		{ "auto.offset.reset", "earliest" },
		{ "enable.partition.eof", "false" },
	};
	static const char *const tunables[][2] = {
		{ "fetch.wait.max.ms", "100" },
		/* librdkafka's pre-fetch queue: 64 MB by default, most of the
		 * worker's memory. librdkafka 2.0.2 looks at a full queue
		 * again only once a second (rd_kafka_max_block_ms), so the
		 * queue must hold a second of events: 8 MB. */
		{ "queued.max.messages.kbytes", "8192" },
		/* One fetch answer lands whole on top of the queue: up to
		 * 1 MB per partition by default (12 MB for 12 partitions).
		 * 2 MB: peak RSS 47-50 -> 35 MB at the same rate. */
		{ "fetch.max.bytes", "2097152" },
	};
	rd_kafka_conf_t *kc = kafka_conf_new(&cfg, err, errlen);
	rd_kafka_topic_partition_list_t *topics;
	rd_kafka_resp_err_t e;
	rd_kafka_t *rk;

	if (kc == NULL)
		return NULL;
	if (rd_kafka_conf_set(kc, "group.id", cfg.consumer_group, err, errlen) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(kc, "group.instance.id", instance, err, errlen) !=
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

/* FOREIGN: a message of a topic not ours, refused (nothing recorded, and
 * its offset must not be: offsets are recorded by partition of our topic). */
enum handled { HANDLED, STOPPED, REWIND, FAILED, FOREIGN };

/* The session is up, or made so: HANDLED. STOPPED when a stop came first;
 * REWIND when it was re-established with asynchronous commits on (applies
 * since the last flush are in doubt: go back to the committed offsets).
 * Every re-established session counts as a reconnect, whether the loss
 * showed in an apply (also a retry) or in the counters flush (not one). */
static enum handled ensure_db(void)
{
	if (!apply_lost(ap))
		return HANDLED;
	if (!apply_connect(ap, &stop))
		return STOPPED;
	counters.reconnects++;
	log_info("sink database: reconnected (reconnect %" PRId64 ")", counters.reconnects);
	return cfg.consumer_commit_interval_ms > 0 ? REWIND : HANDLED;
}

/* Give up on a message: produce it to the dead-letter topic and, once the
 * broker has it, record it in sink.dead_letters (quarantining its order)
 * so that its offset may be committed. Kafka and transient database
 * errors are retried here until they clear or a stop comes (STOPPED: the
 * message will be delivered again, and dead-lettered again). */
static enum handled dead_letter(const rd_kafka_message_t *rkm, const struct apply_msg *m,
				const char *reason, const char *error, int attempts,
				int64_t first_us, int64_t last_us)
{
	struct dlq_why w = { reason, error, attempts, first_us, last_us, consumer_id };
	struct apply_dead d = {
		.reason = reason, .error = error, .attempts = attempts,
		.first_failure_us = first_us, .last_failure_us = last_us,
		.topic = rd_kafka_topic_name(rkm->rkt), .key = rkm->key, .key_len = rkm->key_len,
		.payload = rkm->payload, .payload_len = rkm->len,
	};
	char err[1024];
	long backoff = 0;
	char *hj = NULL, *hx = NULL;
	int64_t id = 0;
	enum handled h = STOPPED;
	enum apply_result r;

	for (;;) {
		if (dlq_publish(dlq, rkm, &w, &stop, err, sizeof err))
			break;
		if (stop)
			goto out;
		log_warn("[%" PRId32 "] offset %" PRId64 ": dead-letter topic %s: %s (retrying)",
			 m->partition, m->offset, cfg.kafka_dlq_topic, err);
		util_sleep_ms(util_backoff_next(&backoff, 200, 5000), &stop);
		if (stop)
			goto out;
	}
	crash_point("consumer.after_dlq_publish");
	{
		rd_kafka_headers_t *hdrs = NULL;

		if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
			hdrs = NULL;
		hj = dlq_headers_json(hdrs);
		hx = dlq_headers_hex(hdrs);
		if (hdrs != NULL && (hj == NULL || hx == NULL)) {
			log_error("[%" PRId32 "] offset %" PRId64 ": out of memory for its headers",
				  m->partition, m->offset);
			h = FAILED;
			goto out;
		}
	}
	d.headers_json = hj;
	d.headers_hex = hx;
	backoff = 0;
	for (;;) {
		h = ensure_db();
		if (h != HANDLED)
			goto out;
		r = apply_dead_letter(ap, m, &d, &id, err, sizeof err);
		if (r != APPLY_RETRY)
			break;
		h = STOPPED;
		if (stop)
			goto out;
		util_sleep_ms(util_backoff_next(&backoff, 50, 5000), &stop);
	}
	if (r == APPLY_FAILED) {
		log_error("[%" PRId32 "] offset %" PRId64 ": recording the dead letter: %s",
			  m->partition, m->offset, err);
		h = FAILED;
		goto out;
	}
	crash_point("consumer.after_dead_letter");
	counters.dead_lettered++;
	log_warn("dead letter %" PRId64 ": [%" PRId32 "] offset %" PRId64 " order %s seq %" PRId64
		 " (%s, %d attempt%s): %s", id, m->partition, m->offset,
		 m->aggregate_id[0] ? m->aggregate_id : "-", m->seq, reason, attempts,
		 attempts == 1 ? "" : "s", error);
	if (strcmp(reason, "exhausted") == 0) {
		char detail[1200];

		snprintf(detail, sizeof detail, "dead letter %" PRId64 " after %d attempts: %s", id,
			 attempts, error);
		if (apply_audit(ap, m, "dead_letter", detail, err, sizeof err) != APPLY_DUPLICATE)
			log_warn("audit row of dead letter %" PRId64 " not written: %s", id, err);
	}
	h = HANDLED;
out:
	free(hj);
	free(hx);
	return h;
}

/* A message that can never apply: the audit row (kind poison), then the
 * dead-letter topic and table at once, without spending a retry budget. */
static enum handled poison(const rd_kafka_message_t *rkm, const struct apply_msg *m,
			   const char *why)
{
	int64_t now = util_now_us();
	char err[1024];
	long backoff = 0;
	enum apply_result r;
	enum handled h;

	for (;;) {
		h = ensure_db();
		if (h != HANDLED)
			return h;
		r = apply_poison(ap, m, why, err, sizeof err);
		if (r != APPLY_RETRY)
			break;
		if (stop)
			return STOPPED;
		util_sleep_ms(util_backoff_next(&backoff, 50, 5000), &stop);
	}
	if (r != APPLY_POISON) {
		log_error("[%" PRId32 "] offset %" PRId64 ": recording poison: %s", m->partition,
			  m->offset, err);
		return FAILED;
	}
	counters.poison++;
	log_warn("poison message [%" PRId32 "] offset %" PRId64 ": %s", m->partition, m->offset,
		 why);
	return dead_letter(rkm, m, "poison", why, 1, now, now);
}

/* The wait before retry number failures + 1 of a permanently failing
 * message: retry_backoff_ms doubled per failure, capped at a minute and at
 * what is left of retry_max_ms. */
static long retry_delay(int failures, int64_t first_ms)
{
	long d = cfg.consumer_retry_backoff_ms;

	for (int i = 1; i < failures && d < 60000; i++)
		d *= 2;
	if (d > 60000)
		d = 60000;
	if (cfg.consumer_retry_max_ms > 0) {
		long left = (long)(first_ms + cfg.consumer_retry_max_ms - util_mono_ms());

		if (d > left)
			d = left > 0 ? left : 0;
	}
	return d;
}

/* A message of a topic this consumer is not configured for (member.h),
 * refused before it is parsed: not applied, dead-lettered or parked; its
 * partition is paused so no more of it is fetched. Logged (the first ten,
 * then every thousandth) and counted. */
static enum handled foreign_message(rd_kafka_t *rk, const rd_kafka_message_t *rkm)
{
	const char *topic = rd_kafka_topic_name(rkm->rkt);
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);

	counters.foreign++;
	if (counters.foreign <= 10 || counters.foreign % 1000 == 0)
		log_error("refused a message of topic %s [%" PRId32 "] offset %" PRId64 ": this "
			  "consumer applies %s only; not applied, not dead-lettered, offset not "
			  "committed (foreign message %" PRId64 ")", topic, rkm->partition,
			  rkm->offset, cfg.kafka_topic, counters.foreign);
	if (l != NULL) {
		rd_kafka_resp_err_t e;

		rd_kafka_topic_partition_list_add(l, topic, rkm->partition);
		e = rd_kafka_pause_partitions(rk, l);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			log_warn("pausing %s [%" PRId32 "]: %s", topic, rkm->partition,
				 rd_kafka_err2str(e));
		rd_kafka_topic_partition_list_destroy(l);
	}
	return FOREIGN;
}

/* Process one message to a final outcome. Transient database errors are
 * retried with backoff without limit (never dead-lettered); a refusal of
 * this event (constraint, trigger) is retried within the budget ([consumer]
 * retry_max_attempts, retry_max_ms), then the message is dead-lettered;
 * poison is dead-lettered at once. STOPPED: a stop came during the retries
 * and nothing was recorded; REWIND: the connection was re-established with
 * asynchronous commits on, go back to the committed offsets (this message
 * comes again); FAILED: the sink is broken for every message alike (an
 * undefined table, a privilege) or the outcome could not be recorded;
 * FOREIGN: the message is not of our topic (foreign_message). */
static enum handled handle(rd_kafka_t *rk, const rd_kafka_message_t *rkm)
{
	struct apply_msg m;
	char why[256], err[1024];
	bool good;
	long backoff = 0;
	int64_t t0 = util_mono_ms(), first_ms = 0, first_us = 0, last_us = 0;
	int attempts = 0, failures = 0;
	enum apply_result r;
	enum handled h;

	if (!member_topic_ours(&cfg, rd_kafka_topic_name(rkm->rkt)))
		return foreign_message(rk, rkm);
	good = apply_parse(rkm, &m, why, sizeof why) &&
	       apply_check(&m, cfg.consumer_event_types, why, sizeof why);
	counters.received++;
	if (!good)
		return poison(rkm, &m, why);
	for (;;) {
		h = ensure_db();
		if (h != HANDLED)
			return h;
		r = apply_event(ap, &m, err, sizeof err);
		if (r == APPLY_REJECTED) {
			long delay;

			failures++;
			counters.retries++;
			last_us = util_now_us();
			if (failures == 1) {
				first_us = last_us;
				first_ms = util_mono_ms();
			}
			if (failures >= cfg.consumer_retry_max_attempts ||
			    (cfg.consumer_retry_max_ms > 0 &&
			     util_mono_ms() - first_ms >= cfg.consumer_retry_max_ms))
				return dead_letter(rkm, &m, "exhausted", err, failures, first_us,
						   last_us);
			delay = retry_delay(failures, first_ms);
			log_warn("[%" PRId32 "] offset %" PRId64 ": order %s seq %" PRId64
				 " failed (attempt %d of %d), retrying in %ld ms: %s", m.partition,
				 m.offset, m.aggregate_id, m.seq, failures,
				 cfg.consumer_retry_max_attempts, delay, err);
			if (stop)
				return STOPPED;
			util_sleep_ms(delay, &stop);
			if (stop)
				return STOPPED;
			continue;
		}
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
	if (attempts > 0 || failures > 0)
		log_info("[%" PRId32 "] offset %" PRId64 ": done after %d transient and %d other "
			 "failures", m.partition, m.offset, attempts, failures);
	switch (r) {
	case APPLY_APPLIED: counters.applied += 1 + apply_held_applied(ap); break;
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
	case APPLY_PARKED:
		counters.parked++;
		log_info("parked: order %s seq %" PRId64 " (the order has a dead letter)",
			 m.aggregate_id, m.seq);
		break;
	case APPLY_POISON:
		return poison(rkm, &m, err); /* the database refused its data */
	case APPLY_RETRY:
	case APPLY_REJECTED:
	case APPLY_FAILED:
		/* The sink itself is broken (not this message): stop; the message
		 * comes again after the restart. */
		log_error("[%" PRId32 "] offset %" PRId64 ": %s", m.partition, m.offset, err);
		return FAILED;
	}
	return HANDLED;
}

/* One round of inbox retention, bounded to a fraction of a second so the
 * partitions keep flowing. Returns when the next round is due. */
static int64_t sweep_round(int64_t now)
{
	PGconn *conn = apply_conn(ap);
	char err[512], state[6];
	int64_t deleted = 0;
	bool busy, more;

	if (conn == NULL)
		return now + 1000;
	if (!sweep_inbox(conn, cfg.consumer_inbox_retention_hours, cfg.consumer_inbox_sweep_batch,
			 0, 200, false, &deleted, &busy, &more, state, err, sizeof err)) {
		log_warn("inbox sweep: %s", err);
		return now + cfg.consumer_inbox_sweep_interval_ms;
	}
	if (deleted > 0)
		log_info("inbox sweep: deleted %" PRId64 " row(s) older than %d hours%s", deleted,
			 cfg.consumer_inbox_retention_hours, more ? " (more to go)" : "");
	return more ? now + 1000 : now + cfg.consumer_inbox_sweep_interval_ms;
}

/* One message the one-by-one way, its offset recorded when handled. False
 * when the rest of the gathered messages must not be handled: the loop
 * stops (rc says how), or the partitions were rewound (they come again). */
static bool dispatch(rd_kafka_t *rk, rd_kafka_message_t *rkm, int *rc)
{
	if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) {
			char fe[512];

			rd_kafka_fatal_error(rk, fe, sizeof fe);
			log_error("kafka fatal error: %s", fe);
			*rc = 1;
			stop = 1;
			return false;
		}
		log_warn("consume: %s", rd_kafka_message_errstr(rkm));
		return true;
	}
	switch (handle(rk, rkm)) {
	case HANDLED:
		offsets_done(done, rkm->partition, rkm->offset);
		if (cfg.consumer_commit_interval_ms == 0)
			commit_offsets(rk, false);
		return true;
	case REWIND:
		rewind_or_stop(rk, rc);
		return false;
	case STOPPED:
		log_info("stopping during retries; [%" PRId32 "] offset %" PRId64
			 " will be delivered again", rkm->partition, rkm->offset);
		return false;
	case FAILED:
		*rc = 1;
		stop = 1;
		return false;
	case FOREIGN:
		return true; /* its offset is not ours to record */
	}
	return true;
}

/* A session lost while nothing arrives (the counters flush found it: a
 * terminated backend, a database restart) is made again now, not when the
 * next message comes, so that message does not wait for it and the
 * counters keep flowing; with asynchronous commits it rewinds, as a loss in
 * an apply does. */
static void idle_reconnect(rd_kafka_t *rk, int *rc)
{
	if (apply_lost(ap) && ensure_db() == REWIND)
		rewind_or_stop(rk, rc);
}

/* first and whatever else librdkafka has fetched already, up to batch_size,
 * into gathered (an error message ends it). A rebalance served meanwhile
 * may drop some (gathered_drop); handle_gathered skips those. */
static void gather(rd_kafka_t *rk, rd_kafka_message_t *first)
{
	bool more = first->err == RD_KAFKA_RESP_ERR_NO_ERROR;

	gathered[0] = first;
	ngathered = 1;
	while (more && ngathered < cfg.consumer_batch_size) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 0);

		if (m == NULL)
			break;
		gathered[ngathered++] = m;
		more = m->err == RD_KAFKA_RESP_ERR_NO_ERROR;
	}
	if (t_first == 0)
		t_first = util_mono_ms();
}

/* A message of our topic that parses and passes the checks, into m. */
static bool good_event(const rd_kafka_message_t *rkm, struct apply_msg *m)
{
	char why[256];

	return rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
	       member_topic_ours(&cfg, rd_kafka_topic_name(rkm->rkt)) &&
	       apply_parse(rkm, m, why, sizeof why) &&
	       apply_check(m, cfg.consumer_event_types, why, sizeof why);
}

/* A run of n good events (run_msgs) applied as one batch, their offsets
 * recorded: returns n. When the batch's check refused an event, the events
 * before it as a batch of their own, and *solo = 1: the refused one goes
 * one by one next. When the database refused the batch (a trigger, a
 * constraint: which event is unknown), its first half, halved again until
 * it goes through or is too short, so the event is found in a few tries
 * and the others still go in batches. Returns how many were applied (0 if
 * none); *solo says how many to apply one by one next (all of them when
 * not connected: the one-by-one path mends that with ensure_db). */
static int apply_run(rd_kafka_t *rk, int n, int *solo)
{
	char why[512];
	int at, again;

	*solo = n;
	if (n == 0 || cfg.consumer_batch_size == 1) /* batch_size 1: always one by one */
		return 0;
	while (!apply_batch(ap, run_msgs, n, &at, why, sizeof why)) {
		log_debug("batch of %d events refused at %d: %s", n, at, why);
		if (at >= 0) {
			*solo = at + 1;
			if (at < 2 || !apply_batch(ap, run_msgs, at, &again, why, sizeof why))
				return 0;
			*solo = 1;
			n = at;
			break;
		}
		*solo = n;
		if (n < 4 || apply_lost(ap))
			return 0;
		n /= 2;
	}
	if (at < 0)
		*solo = 0;
	counters.received += n;
	counters.applied += n;
	for (int i = 0; i < n; i++)
		offsets_done(done, run_msgs[i].partition, run_msgs[i].offset);
	if (cfg.consumer_commit_interval_ms == 0)
		commit_offsets(rk, false);
	return n;
}

/* The gathered messages in order: each run of good events as one batch,
 * whatever the batch refuses and every other message one by one; then
 * all of them destroyed. */
static void handle_gathered(rd_kafka_t *rk, int *rc)
{
	int n = 0;
	bool go = true;

	for (int i = 0; i < ngathered; i++) /* without those a rebalance dropped */
		if (gathered[i] != NULL)
			gathered[n++] = gathered[i];
	ngathered = n;
	for (int i = 0; go && !stop && i < n;) {
		int k = 0, solo;

		while (i + k < n && good_event(gathered[i + k], &run_msgs[k]))
			k++;
		i += apply_run(rk, k, &solo);
		if (k == 0)
			solo = 1;  /* not a good event: the one-by-one path says why */
		for (int j = 0; go && j < solo && i < n; j++, i++)
			go = dispatch(rk, gathered[i], rc);
	}
	for (int i = 0; i < n; i++)
		rd_kafka_message_destroy(gathered[i]);
	ngathered = 0;
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
	char err[1024];
	long id = 0;
	int c, rc = 1;
	rd_kafka_t *rk = NULL;
	struct audit *au = NULL;
	int64_t last_report, last_commit, next_sweep;

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
	consumer_id = (int)id;
	ap = apply_new(conf_sink_conninfo(&cfg), (int)id, au, cfg.consumer_commit_interval_ms > 0);
	done = offsets_new(cfg.kafka_topic);
	dlq = dlq_new(&cfg);
	if (ap == NULL || done == NULL || dlq == NULL) {
		log_error("out of memory");
		goto out;
	}
	if (!member_instance_id(&cfg, (int)id, instance, sizeof instance, &instance_hand_set, err,
				sizeof err)) {
		fprintf(stderr, "outbox-consumer: %s\n", err);
		rc = 2;
		goto out;
	}
	test_assign_foreign = getenv("OUTBOX_TEST_ASSIGN_FOREIGN") != NULL &&
			      strcmp(getenv("OUTBOX_TEST_ASSIGN_FOREIGN"), "1") == 0;
	if (test_assign_foreign)
		log_warn("OUTBOX_TEST_ASSIGN_FOREIGN=1: partitions of other topics are assigned "
			 "(for tests of the message guard only)");
	rk = consumer_new(err, sizeof err);
	if (rk == NULL) {
		fprintf(stderr, "outbox-consumer: %s\n", err);
		rc = 2;
		goto out;
	}
	if (!apply_connect(ap, &stop)) {
		rc = 0; /* stopped before the database came up */
		goto out;
	}
	log_info("consuming %s as %s in group %s%s", cfg.kafka_topic, instance, cfg.consumer_group,
		 instance_hand_set ? " (static member id from kafka.group.instance.id)" : "");
	last_report = last_commit = util_mono_ms();
	next_sweep = last_report + (cfg.consumer_inbox_sweep_interval_ms < 10000
					    ? cfg.consumer_inbox_sweep_interval_ms : 10000);
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
		if (cfg.consumer_inbox_sweep_interval_ms > 0 && now >= next_sweep)
			next_sweep = sweep_round(now);
		rkm = rd_kafka_consumer_poll(rk, POLL_MS);
		if (rkm == NULL) {
			idle_reconnect(rk, &rc);
			continue;
		}
		gather(rk, rkm);
		handle_gathered(rk, &rc);
	}
	log_info("stopping: received %" PRId64 " applied %" PRId64 " duplicates %" PRId64
		 " gaps %" PRId64 " poison %" PRId64 " retries %" PRId64 " dead-lettered %" PRId64
		 " parked %" PRId64 " foreign %" PRId64 " (partitions %" PRId64 ") reconnects %"
		 PRId64 " (%.0f events/s)",
		 counters.received, counters.applied, counters.duplicates, counters.gaps,
		 counters.poison, counters.retries, counters.dead_lettered, counters.parked,
		 counters.foreign, counters.foreign_partitions, counters.reconnects,
		 t_first ? (double)counters.received * 1000.0 /
				   (double)(util_mono_ms() - t_first + 1) : 0.0);
	commit_offsets(rk, true);
	(void)report();
out:
	/* The offsets are committed above. No rd_kafka_consumer_close: a
	 * static member does not leave the group on close anyway, and an
	 * assignment that arrives during close makes its rd_kafka_assign block
	 * forever (librdkafka #4884; seen with SIGTERM during the first join). */
	if (rk != NULL)
		rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	apply_free(ap);
	dlq_free(dlq);
	audit_close(au);
	offsets_free(done);
	return rc;
}
