#ifndef OUTBOXD_CONSUMER_DLQ_H
#define OUTBOXD_CONSUMER_DLQ_H

/* The dead-letter topic ([kafka] topic + ".dlq"): a message the consumer
 * gives up on is produced there as it came (key, value, headers) plus
 * headers saying why, and only once the broker acknowledged it is it
 * recorded in sink.dead_letters and its offset committed. A crash in
 * between produces it again: the dead-letter topic is at-least-once too. */

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/* Why a message is dead: becomes the dlq_* headers. */
struct dlq_why {
	const char *reason;        /* "poison" or "exhausted" */
	const char *error;
	int attempts;
	int64_t first_failure_us;  /* wall clock, µs since the epoch */
	int64_t last_failure_us;
	int consumer_id;
};

struct dlq;

/* A dead-letter producer for c's dead-letter topic (created on first use).
 * NULL when out of memory. The caller owns it (dlq_free). */
struct dlq *dlq_new(const struct conf *c) __attribute__((warn_unused_result));
void dlq_free(struct dlq *d);

/* Produce rkm (key, value, its headers) with the dlq_* headers of why to
 * the dead-letter topic and wait for the broker's acknowledgement. True
 * when acknowledged; false with err (Kafka down, timed out: the caller
 * retries after a backoff) or when *stop became non-zero while waiting. */
bool dlq_publish(struct dlq *d, const rd_kafka_message_t *rkm, const struct dlq_why *why,
		 volatile sig_atomic_t *stop, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Headers as JSON text [[name, value], ...] in wire order, for people
 * (sink.dead_letters.headers): a name or value that is not UTF-8 text (a
 * NUL byte, a stray byte) is null there. malloc'ed, caller frees; NULL
 * when h is NULL (no headers) or out of memory. */
char *dlq_headers_json(const rd_kafka_headers_t *h) __attribute__((warn_unused_result));

/* The same with every name and value as lowercase hex of its bytes (value
 * null only when absent): the headers exactly, whatever their bytes
 * (sink.dead_letters.headers_hex). Ownership and NULL as above. */
char *dlq_headers_hex(const rd_kafka_headers_t *h) __attribute__((warn_unused_result));

/* Headers rebuilt from the text of dlq_headers_hex (hex true) or of
 * dlq_headers_json (NULL or "" gives none). NULL when the text is not such
 * an array; the caller destroys them. */
rd_kafka_headers_t *dlq_headers_parse(const char *json, bool hex)
	__attribute__((warn_unused_result));

/* ISO 8601 UTC with microseconds of a wall-clock time in µs. */
void dlq_iso8601(int64_t us, char *out, size_t outlen);

#endif
