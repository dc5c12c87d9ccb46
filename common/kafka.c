#include "kafka.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

static bool kafka_fatal;
static char kafka_fatal_msg[512];
static char kafka_last_err[512];
static atomic_uint kafka_clusterid_changes;

/* Runs on librdkafka's threads: count its "reports different ClusterId"
 * warnings (kafka_cluster_changes), then print the line as librdkafka's
 * default logger does. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	if (strcmp(fac, "CLUSTERID") == 0)
		atomic_fetch_add(&kafka_clusterid_changes, 1);
	rd_kafka_log_print(rk, level, fac, buf);
}

/* Runs on librdkafka's poll path (our thread): log and remember. */
static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	(void)opaque;
	snprintf(kafka_last_err, sizeof kafka_last_err, "%s: %s",
		 rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		char fe[512];
		rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, fe, sizeof fe);

		kafka_fatal = true;
		snprintf(kafka_fatal_msg, sizeof kafka_fatal_msg, "%s: %s",
			 rd_kafka_err2name(orig), fe);
		log_error("kafka fatal error: %s", kafka_fatal_msg);
		return;
	}
	/* Broker down and transport errors are retried by librdkafka itself. */
	log_warn("kafka: %s", kafka_last_err);
}

static bool kafka_set(rd_kafka_conf_t *kc, const char *name, const char *value,
		      char *err, size_t errlen)
{
	char why[256];

	if (rd_kafka_conf_set(kc, name, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
		snprintf(err, errlen, "kafka property %s=%s: %s", name, value, why);
		return false;
	}
	return true;
}

rd_kafka_conf_t *kafka_conf_new(const struct conf *c, char *err, size_t errlen)
{
	rd_kafka_conf_t *kc = rd_kafka_conf_new();

	if (!kafka_set(kc, "bootstrap.servers", c->kafka_brokers, err, errlen) ||
	    !kafka_set(kc, "client.id", "outboxd", err, errlen))
		goto fail;
	rd_kafka_conf_set_error_cb(kc, kafka_error_cb);
	rd_kafka_conf_set_log_cb(kc, kafka_log_cb);
	for (int i = 0; i < c->kafka_nprops; i++) {
		const struct conf_kafka_prop *p = &c->kafka_props[i];

		if (!kafka_set(kc, p->name, p->value, err, errlen)) {
			char why[512];

			snprintf(why, sizeof why, "%s", err);
			snprintf(err, errlen, "%s:%d: %s", c->path, p->line, why);
			goto fail;
		}
	}
	return kc;
fail:
	rd_kafka_conf_destroy(kc);
	return NULL;
}

rd_kafka_t *kafka_producer_new(const struct conf *c,
			       void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *),
			       char *err, size_t errlen)
{
	rd_kafka_conf_t *kc = kafka_conf_new(c, err, errlen);
	rd_kafka_t *rk;
	char timeout[32];

	if (kc == NULL)
		return NULL;
	snprintf(timeout, sizeof timeout, "%d", c->kafka_delivery_timeout_ms);
	/* Ours first, so a kafka.* line can still override linger and the like;
	 * idempotence is set last because the guarantees depend on it. */
	if (!kafka_set(kc, "linger.ms", "2", err, errlen) ||
	    !kafka_set(kc, "message.timeout.ms", timeout, err, errlen) ||
	    !kafka_set(kc, "partitioner", "murmur2_random", err, errlen) ||
	    !kafka_set(kc, "enable.idempotence", "true", err, errlen)) {
		rd_kafka_conf_destroy(kc);
		return NULL;
	}
	if (dr_cb != NULL)
		rd_kafka_conf_set_dr_msg_cb(kc, dr_cb);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, errlen);
	if (rk == NULL)
		rd_kafka_conf_destroy(kc);
	return rk;
}

rd_kafka_t *kafka_consumer_new(const struct conf *c, const char *group,
			       const char *instance_id, const char *topic,
			       char *err, size_t errlen)
{
	rd_kafka_conf_t *kc = kafka_conf_new(c, err, errlen);
	rd_kafka_topic_partition_list_t *topics;
	rd_kafka_resp_err_t e;
	rd_kafka_t *rk;

	if (kc == NULL)
		return NULL;
	if (!kafka_set(kc, "group.id", group, err, errlen) ||
	    !kafka_set(kc, "enable.auto.commit", "false", err, errlen) ||
	    !kafka_set(kc, "enable.auto.offset.store", "false", err, errlen) ||
	    !kafka_set(kc, "auto.offset.reset", "earliest", err, errlen) ||
	    !kafka_set(kc, "enable.partition.eof", "false", err, errlen) ||
	    (instance_id != NULL &&
	     !kafka_set(kc, "group.instance.id", instance_id, err, errlen))) {
		rd_kafka_conf_destroy(kc);
		return NULL;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, errlen);
	if (rk == NULL) {
		rd_kafka_conf_destroy(kc);
		return NULL;
	}
	rd_kafka_poll_set_consumer(rk);
	topics = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
	e = rd_kafka_subscribe(rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "subscribe %s: %s", topic, rd_kafka_err2str(e));
		rd_kafka_destroy(rk);
		return NULL;
	}
	return rk;
}

rd_kafka_resp_err_t kafka_produce_event(rd_kafka_t *rk, const char *topic,
					const struct kafka_event *ev, void *msg_opaque)
{
	char seq[24];
	rd_kafka_resp_err_t e;

	snprintf(seq, sizeof seq, "%" PRId64, ev->aggregate_seq);
	for (;;) {
		e = rd_kafka_producev(
			rk, RD_KAFKA_V_TOPIC(topic),
			RD_KAFKA_V_KEY(ev->aggregate_id, strlen(ev->aggregate_id)),
			RD_KAFKA_V_VALUE((void *)ev->payload, ev->payload_len),
			RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
			RD_KAFKA_V_HEADER(KAFKA_HEADER_EVENT_ID, ev->event_id, -1),
			RD_KAFKA_V_HEADER(KAFKA_HEADER_EVENT_TYPE, ev->event_type, -1),
			RD_KAFKA_V_HEADER(KAFKA_HEADER_AGGREGATE_TYPE, ev->aggregate_type, -1),
			RD_KAFKA_V_HEADER(KAFKA_HEADER_AGGREGATE_SEQ, seq, -1),
			RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
		if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			return e;
		rd_kafka_poll(rk, 10);
	}
}

/* The value of the last header called name, as text in out. False when
 * it is absent, empty, too long or not UTF-8 text (a NUL byte, a stray
 * byte); then, unless problem is NULL, problem says which of the last two
 * ("" for the others). */
static bool kafka_header_text(const rd_kafka_headers_t *hdrs, const char *name, char *out,
			      size_t outlen, char *problem, size_t problemlen)
{
	const void *val = NULL;
	size_t size = 0;

	out[0] = '\0';
	if (problem != NULL)
		problem[0] = '\0';
	if (hdrs == NULL ||
	    rd_kafka_header_get_last(hdrs, name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
	    val == NULL || size == 0)
		return false;
	if (size >= outlen || !util_utf8_text(val, size)) {
		if (problem != NULL)
			snprintf(problem, problemlen, "%s header %s (%zu bytes)", name,
				 size >= outlen ? "too long" : "is not UTF-8 text", size);
		return false;
	}
	memcpy(out, val, size);
	out[size] = '\0';
	return true;
}

/* A canonical UUID: 8-4-4-4-12 hex digits. */
static bool kafka_is_uuid(const char *s)
{
	for (int i = 0; i < 36; i++) {
		char c = s[i];

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			     (c >= 'A' && c <= 'F'))) {
			return false;
		}
	}
	return s[36] == '\0';
}

bool kafka_event_decode(const void *key, size_t key_len, const rd_kafka_headers_t *hdrs,
			struct kafka_envelope *ev, char *why, size_t whylen)
{
	char seq[32];
	long long v;
	char *end;

	memset(ev, 0, sizeof *ev);
	kafka_header_text(hdrs, KAFKA_HEADER_EVENT_TYPE, ev->event_type, sizeof ev->event_type,
			  ev->event_type_problem, sizeof ev->event_type_problem);
	kafka_header_text(hdrs, KAFKA_HEADER_AGGREGATE_TYPE, ev->aggregate_type,
			  sizeof ev->aggregate_type, NULL, 0);
	if (key == NULL || key_len == 0) {
		snprintf(why, whylen, "no key (aggregate_id)");
		return false;
	}
	if (key_len >= sizeof ev->aggregate_id || memchr(key, '\0', key_len)) {
		snprintf(why, whylen, "unusable key (%zu bytes)", key_len);
		return false;
	}
	if (!util_utf8_text(key, key_len)) {
		/* aggregate_id is text in every table: no such order can apply. */
		snprintf(why, whylen, "key is not UTF-8 text (%zu bytes)", key_len);
		return false;
	}
	memcpy(ev->aggregate_id, key, key_len);
	ev->aggregate_id[key_len] = '\0';
	if (!kafka_header_text(hdrs, KAFKA_HEADER_EVENT_ID, ev->event_id, sizeof ev->event_id,
			       NULL, 0) ||
	    !kafka_is_uuid(ev->event_id)) {
		ev->event_id[0] = '\0';
		snprintf(why, whylen, "missing or malformed event_id header");
		return false;
	}
	if (!kafka_header_text(hdrs, KAFKA_HEADER_AGGREGATE_SEQ, seq, sizeof seq, NULL, 0)) {
		snprintf(why, whylen, "missing aggregate_seq header");
		return false;
	}
	errno = 0;
	v = strtoll(seq, &end, 10);
	if (*end != '\0' || end == seq || v < 1 || errno != 0) {
		snprintf(why, whylen, "malformed aggregate_seq header");
		return false;
	}
	ev->aggregate_seq = (int64_t)v;
	return true;
}

bool kafka_take_fatal(char *err, size_t errlen)
{
	bool was = kafka_fatal;

	if (was && err != NULL)
		snprintf(err, errlen, "%s", kafka_fatal_msg);
	kafka_fatal = false;
	return was;
}

const char *kafka_last_error(void)
{
	return kafka_last_err;
}

bool kafka_ping(rd_kafka_t *rk, int timeout_ms)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);

	if (md != NULL)
		rd_kafka_metadata_destroy(md);
	return e == RD_KAFKA_RESP_ERR_NO_ERROR;
}

bool kafka_cluster_id(rd_kafka_t *rk, int timeout_ms, char *id, size_t idlen,
		      char *err, size_t errlen)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
	char *cid;

	if (md != NULL)
		rd_kafka_metadata_destroy(md);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "no broker answered a metadata request within %d ms (%s)",
			 timeout_ms, rd_kafka_err2name(e));
		return false;
	}
	/* The answer just parsed updated the cache: read it without waiting. */
	cid = rd_kafka_clusterid(rk, 0);
	if (cid == NULL || cid[0] == '\0' || strlen(cid) >= idlen) {
		snprintf(err, errlen, "the broker reported %s cluster id",
			 cid == NULL || cid[0] == '\0' ? "no" : "an overlong");
		if (cid != NULL)
			rd_kafka_mem_free(rk, cid);
		return false;
	}
	snprintf(id, idlen, "%s", cid);
	rd_kafka_mem_free(rk, cid);
	return true;
}

unsigned kafka_cluster_changes(void)
{
	return atomic_load(&kafka_clusterid_changes);
}
