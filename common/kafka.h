#ifndef OUTBOXD_KAFKA_H
#define OUTBOXD_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/* One outbox event as it travels on the topic: key = aggregate_id, the
 * contract's headers, value = payload JSON. */
struct kafka_event {
	const char *event_id;
	const char *event_type;
	const char *aggregate_type;
	const char *aggregate_id;
	int64_t aggregate_seq;
	const char *payload;
	size_t payload_len;
};

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
