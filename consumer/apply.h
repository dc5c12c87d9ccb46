#ifndef OUTBOXD_CONSUMER_APPLY_H
#define OUTBOXD_CONSUMER_APPLY_H

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.h"

/* One event as the consumer needs it, parsed from a Kafka message.
 * Everything is copied out of the message (it may be destroyed). */
struct apply_msg {
	char event_id[37];         /* canonical UUID text */
	char event_type[128];      /* "" when the header is absent */
	char aggregate_type[64];
	char aggregate_id[256];    /* the message key */
	int64_t seq;               /* aggregate_seq, >= 1 */
	char status[64];           /* payload's "status", "" when absent */
	bool has_total;
	int64_t total_cents;       /* payload's "total_cents" when has_total */
	int32_t partition;
	int64_t offset;
	char payload_problem[96];  /* why the payload is unusable, "" when fine */
	char header_problem[96];   /* why the event_type header is, "" when fine or absent */
	char topic[256];           /* apply_parse only; "" from apply_parse_parts */
};

/* Outcome of one message. */
enum apply_result {
	APPLY_APPLIED,     /* side effect committed */
	APPLY_DUPLICATE,   /* seen before (inbox) or stale seq: nothing applied */
	APPLY_GAP,         /* seq beyond last_seq + 1: held in sink.held, gap audited */
	APPLY_POISON,      /* unusable message: audited, nothing applied */
	APPLY_RETRY,       /* transient database error: retry the same message */
	APPLY_FAILED,      /* permanent database error (not the message's fault) */
	APPLY_REJECTED,    /* the sink refused this event (constraint, trigger): retry
			    * within the budget, then dead-letter */
	APPLY_PARKED,      /* the order is quarantined: parked in sink.parked */
};

/* What sink.consumers shows of one consumer. retries: attempts of an apply
 * that failed and were made again (a connection lost between messages is
 * not one); reconnects: sink sessions re-established after a loss;
 * foreign, foreign_partitions: messages, and partitions the group assigned,
 * of a topic not ours (refused, see member.h). received counts our topic's
 * messages only. */
struct apply_counters {
	int64_t received, applied, duplicates, gaps, poison, retries, dead_lettered, parked;
	int64_t foreign, foreign_partitions, reconnects;
};

/* What the consumer knows about a message it gives up on (sink.dead_letters). */
struct apply_dead {
	const char *reason;        /* "poison" or "exhausted" */
	const char *error;         /* why, for people */
	int attempts;              /* 1 for poison: no budget spent */
	int64_t first_failure_us;  /* wall clock, µs since the epoch */
	int64_t last_failure_us;
	const char *topic;
	const void *key;           /* the message as it came (may be NULL) */
	size_t key_len;
	const char *headers_json;  /* [[name, value], ...] or NULL (dlq_headers_json) */
	const char *headers_hex;   /* the same, names and values hex (dlq_headers_hex) */
	const void *payload;
	size_t payload_len;
};

struct apply;

/* Parse a consumed message into m: key and headers by kafka_event_decode,
 * then the payload's status and total. False when it lacks what an event
 * needs (key, event_id, aggregate_seq) with the reason in why (the
 * decoder's): the caller records it as poison. partition and offset are
 * filled in either case; so are the fields that could be read. */
bool apply_parse(const rd_kafka_message_t *rkm, struct apply_msg *m, char *why, size_t whylen)
	__attribute__((warn_unused_result));

/* The same from the message's parts (unit tests build these by hand). */
bool apply_parse_parts(const void *key, size_t key_len, rd_kafka_headers_t *hdrs,
		       const void *payload, size_t len, int32_t partition, int64_t offset,
		       struct apply_msg *m, char *why, size_t whylen)
	__attribute__((warn_unused_result));

/* Check a parsed event against what the consumer accepts: an event_type
 * header matching one of event_types (comma separated; "p.*" a prefix, "*"
 * any) and a payload that is a JSON object agreeing with the headers. False
 * with the reason in why: the message is poison. */
bool apply_check(const struct apply_msg *m, const char *event_types, char *why, size_t whylen)
	__attribute__((warn_unused_result));

/* A database session of consumer consumer_id on the sink side. Does not
 * connect yet (apply_connect does). audit may be NULL. async_commit: the
 * per-message transactions commit with synchronous_commit = off, and only
 * apply_report (a synchronous commit) makes them durable; the caller must
 * then commit Kafka offsets only after a successful apply_report. The
 * caller owns the session. */
struct apply *apply_new(const char *conninfo, int consumer_id, struct audit *audit,
			bool async_commit) __attribute__((warn_unused_result));

/* (Re)connect with backoff and prepare the statements. False only when
 * *stop became non-zero first. */
bool apply_connect(struct apply *a, volatile sig_atomic_t *stop)
	__attribute__((warn_unused_result));

/* Process one event in one transaction: projection lock, park it if the
 * order is quarantined, else inbox, then apply, drop as duplicate, or audit
 * a gap. APPLY_RETRY means nothing happened that matters (retry after
 * backoff; the session reconnects itself on the next call if the connection
 * went away). APPLY_POISON: the database refused the message's own data
 * (nothing recorded; err says why). APPLY_REJECTED: a constraint or trigger
 * refused it (SQLSTATE classes 23, P0, 09, 27, 2F, 38, 39, 44). err says
 * why on RETRY/REJECTED/FAILED. */
enum apply_result apply_event(struct apply *a, const struct apply_msg *m, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Apply n events (parsed and checked, in the order they came) in one
 * transaction with set-based statements, when each order's events in it
 * are exactly the next seqs, new to the inbox, and the order has no
 * quarantine, held event or open gap. True when all are applied and
 * committed; otherwise nothing is (rolled back), why says what stood in
 * the way, and the caller applies them one by one with apply_event, which
 * knows every other case (and a database error, transient or not). When
 * the check refused one event, *refused_at is its position (the events
 * before it would pass as a batch of their own); otherwise -1. */
bool apply_batch(struct apply *a, const struct apply_msg *m, int n, int *refused_at, char *why,
		 size_t whylen) __attribute__((warn_unused_result));

/* How many held events (sink.held) the last apply_event applied after its
 * own event, in its transaction. */
int apply_held_applied(const struct apply *a);

/* Record a message that apply_parse rejected (or that the database refused
 * as data) as kind 'poison' with detail. APPLY_POISON, APPLY_RETRY or
 * APPLY_FAILED. */
enum apply_result apply_poison(struct apply *a, const struct apply_msg *m, const char *detail,
			       char *err, size_t errlen) __attribute__((warn_unused_result));

/* Record a message given up on: its sink.dead_letters row (one per topic,
 * partition and offset: a redelivery adds nothing) and, when it is an event
 * of an order not yet past its seq, the order's quarantine, in one
 * transaction. Whatever its bytes: key and payload go as binary bytea
 * parameters, headers also as hex (headers_hex), and a text column whose
 * value is not UTF-8 text is NULL (event_type) or escaped (error). *id gets the dead letter's id. APPLY_DUPLICATE on success
 * (nothing applied), APPLY_RETRY or APPLY_FAILED with err. */
enum apply_result apply_dead_letter(struct apply *a, const struct apply_msg *m,
				    const struct apply_dead *d, int64_t *id, char *err,
				    size_t errlen) __attribute__((warn_unused_result));

/* Release mode (outboxctl dlq): apply_event applies to a quarantined order
 * instead of parking. Off by default. */
void apply_set_release(struct apply *a, bool on);

/* The session's connection (NULL when not connected), for statements of
 * other modules between messages (inbox sweep, dlq release). Owned by a. */
PGconn *apply_conn(struct apply *a);

/* One audit row of kind kind (dropped, dead_letter, ...) with detail, and
 * its audit-file line. APPLY_DUPLICATE on success, else RETRY / FAILED. */
enum apply_result apply_audit(struct apply *a, const struct apply_msg *m, const char *kind,
			      const char *detail, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Upsert this consumer's row of sink.consumers in a synchronous commit:
 * when it returns true, every transaction this process committed before
 * the call is durable (the WAL is flushed in order), so the offsets of
 * those messages may be committed to Kafka. False with a message. */
bool apply_report(struct apply *a, const struct apply_counters *c, int64_t started_us,
		  char *err, size_t errlen) __attribute__((warn_unused_result));

/* True when the session has no usable connection. */
bool apply_lost(const struct apply *a);

void apply_free(struct apply *a);

#endif
