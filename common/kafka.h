#ifndef OUTBOXD_KAFKA_H
#define OUTBOXD_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/* ---- the message ----------------------------------------------------------
 *
 * One outbox event as it travels on the topic (CONTRACT.md, Kafka): key =
 * aggregate_id, these headers, value = the payload JSON. kafka_produce_event
 * writes it, kafka_event_decode reads its key and headers back; nothing else
 * spells these names. */
#define KAFKA_HEADER_EVENT_ID "event_id"             /* canonical UUID text */
#define KAFKA_HEADER_EVENT_TYPE "event_type"
#define KAFKA_HEADER_AGGREGATE_TYPE "aggregate_type"
#define KAFKA_HEADER_AGGREGATE_SEQ "aggregate_seq"   /* decimal, 1, 2, 3 ... */

/* An event to produce. */
struct kafka_event {
	const char *event_id;
	const char *event_type;
	const char *aggregate_type;
	const char *aggregate_id;
	int64_t aggregate_seq;
	const char *payload;
	size_t payload_len;
};

/* A consumed event's key and headers, decoded: every field copied out of
 * the message as NUL-terminated text. */
struct kafka_envelope {
	char event_id[37];             /* canonical UUID text */
	char event_type[128];          /* "" when absent or unusable */
	char aggregate_type[64];       /* "" when absent or unusable */
	char aggregate_id[256];        /* the key */
	int64_t aggregate_seq;         /* >= 1 */
	char event_type_problem[96];   /* why event_type is unusable, "" when fine or absent */
};

/* Decode a message's key and headers (hdrs may be NULL) into ev, the mirror
 * of kafka_produce_event; the value (payload) is the caller's. True when it
 * is an event: a key that is UTF-8 text, an event_id header that is a UUID
 * and an aggregate_seq header that is an integer >= 1 (the last of a
 * repeated header counts). False with the reason in why: the message is
 * poison; the fields read before the problem are kept (a malformed
 * event_id is not). event_type and aggregate_type never fail it: absent,
 * empty, too long or not UTF-8 text they are "", event_type_problem saying
 * why for the last two. */
bool kafka_event_decode(const void *key, size_t key_len, const rd_kafka_headers_t *hdrs,
			struct kafka_envelope *ev, char *why, size_t whylen)
	__attribute__((warn_unused_result));

/* A librdkafka configuration with bootstrap servers, our error callback and
 * every kafka.* passthrough property. NULL with a message on failure; the
 * caller owns it until it is handed to rd_kafka_new. */
rd_kafka_conf_t *kafka_conf_new(const struct conf *c, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* An idempotent producer (acks=all, murmur2_random partitioner). dr_cb gets
 * each delivery report with the message's opaque. NULL with a message. */
rd_kafka_t *kafka_producer_new(const struct conf *c,
			       void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *),
			       char *err, size_t errlen) __attribute__((warn_unused_result));

/* A group consumer subscribed to topic with auto commit and auto offset
 * store off; instance_id (may be NULL) sets static membership. */
rd_kafka_t *kafka_consumer_new(const struct conf *c, const char *group,
			       const char *instance_id, const char *topic,
			       char *err, size_t errlen) __attribute__((warn_unused_result));

/* Enqueue one event; on QUEUE_FULL it polls and retries. Returns
 * RD_KAFKA_RESP_ERR_NO_ERROR when enqueued (the delivery report tells the
 * rest), or the error. msg_opaque comes back in the delivery report. */
rd_kafka_resp_err_t kafka_produce_event(rd_kafka_t *rk, const char *topic,
					const struct kafka_event *ev, void *msg_opaque);

/* True (and cleared) when the error callback saw a fatal error since the
 * last call: the producer must be destroyed and re-created. */
bool kafka_take_fatal(char *err, size_t errlen);

/* The last error the error callback saw (for last_error columns). */
const char *kafka_last_error(void);

/* Ask the cluster for metadata; true when a broker answered in timeout_ms. */
bool kafka_ping(rd_kafka_t *rk, int timeout_ms);

/* Longest cluster id we keep (Kafka's are 22 characters). */
#define KAFKA_CLUSTER_ID_MAX 128

/* The id of the cluster rk's brokers belong to, asked afresh: a metadata
 * request, then the id its answer carried (rd_kafka_clusterid alone returns
 * the id cached from an earlier answer, stale once the broker behind the
 * address was replaced). True with the id in id (idlen >= 1); false with a
 * message in err when no broker answered within timeout_ms or the answer
 * carried no id (brokers before 0.10.1). */
bool kafka_cluster_id(rd_kafka_t *rk, int timeout_ms, char *id, size_t idlen,
		      char *err, size_t errlen) __attribute__((warn_unused_result));

/* How many times, in this process, librdkafka saw a broker report another
 * cluster id than the one it knew (its CLUSTERID warning). Compare two
 * readings: a change means a cluster swap happened in between, even if
 * the broker is back to the first cluster by now. */
unsigned kafka_cluster_changes(void);

#endif
