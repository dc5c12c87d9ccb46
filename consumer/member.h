#ifndef OUTBOXD_CONSUMER_MEMBER_H
#define OUTBOXD_CONSUMER_MEMBER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/* Who this consumer is in its group, and which messages are its own.
 *
 * A static member (group.instance.id) that rejoins a stable group gets the
 * assignment it had before, without a rebalance, whatever it subscribes to
 * now: a consumer whose [kafka] topic changed but whose group_id did not
 * was handed the partitions of the old topic and applied another service's
 * events as its own. So the static member id is derived from the group
 * and the topic (a topic change makes a new member, which the group
 * rebalances for), and whatever the group assigns of another topic is
 * refused: not assigned, and a message of another topic that arrives all
 * the same is never applied, dead-lettered or parked, nor its offset
 * committed (offsets are recorded by partition of the own topic: a foreign
 * message's offset would move that partition of ours). */

/* Room for any static member id this module builds or passes on. */
#define MEMBER_ID_MAX 256

/* FNV-1a, 32 bits, over group, one NUL byte, then topic. */
uint32_t member_hash(const char *group, const char *topic);

/* Worker id's static member id (group.instance.id) into out: the
 * configuration's kafka.group.instance.id as is when one is set (the last
 * one; *hand_set becomes true), else "consumer-<id>-<8 hex digits of
 * member_hash([consumer] group_id, [kafka] topic)>". False when it does not
 * fit in outlen, with the message in err. */
bool member_instance_id(const struct conf *c, int id, char *out, size_t outlen, bool *hand_set,
			char *err, size_t errlen) __attribute__((warn_unused_result));

/* True when topic (may be NULL: not ours) is [kafka] topic, the only one
 * whose messages this consumer applies. */
bool member_topic_ours(const struct conf *c, const char *topic);

/* The partitions in parts that are of our topic, as a new list the caller
 * destroys. *foreign gets how many were not; foreign_topics (len > 0) the
 * distinct topics they were of, comma separated (cut short when long), for
 * the log. NULL when out of memory. */
rd_kafka_topic_partition_list_t *member_own_partitions(const struct conf *c,
						       const rd_kafka_topic_partition_list_t *parts,
						       int *foreign, char *foreign_topics,
						       size_t len) __attribute__((warn_unused_result));

#endif
