#ifndef OUTBOXD_CONSUMER_OFFSETS_H
#define OUTBOXD_CONSUMER_OFFSETS_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

/* The consumer's own record of what may be committed to Kafka: per
 * partition of one topic, the offset after the last message whose database
 * transaction has committed. Kept here rather than in librdkafka's offset
 * store so that a rewind (after the database connection was lost, when
 * asynchronously committed transactions are in doubt) can simply forget it. */
struct offsets;

/* NULL when out of memory. The caller owns it (offsets_free). */
struct offsets *offsets_new(const char *topic) __attribute__((warn_unused_result));
void offsets_free(struct offsets *o);

/* The message at offset in partition is done: next is offset + 1. */
void offsets_done(struct offsets *o, int32_t partition, int64_t offset);

/* True when something is recorded that has not been committed yet. */
bool offsets_pending(const struct offsets *o);

/* Every recorded position as a list for rd_kafka_commit, or NULL when
 * there is none; the caller destroys it. */
rd_kafka_topic_partition_list_t *offsets_list(const struct offsets *o)
	__attribute__((warn_unused_result));

/* After a commit was handed to librdkafka / after it failed. */
void offsets_committed(struct offsets *o);
void offsets_uncommitted(struct offsets *o);

/* Forget the positions of these partitions (revoked), or of all. */
void offsets_forget(struct offsets *o, const rd_kafka_topic_partition_list_t *parts);
void offsets_forget_all(struct offsets *o);

#endif
