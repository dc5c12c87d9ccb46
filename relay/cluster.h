#ifndef OUTBOXD_RELAY_CLUSTER_H
#define OUTBOXD_RELAY_CLUSTER_H

/* The cluster guard: which Kafka cluster the outbox publishes to.
 *
 * sent_at means "acknowledged by a broker of the cluster the consumers
 * read". public.outboxd_kafka_cluster (sql/005) records that cluster's id;
 * the first relay to publish records the id its broker reports. Both relays
 * ask the broker for its id afresh (a metadata request) before each batch
 * and again after the batch's delivery reports, before marking anything
 * sent: a relay whose bootstrap address now leads to another cluster (a
 * repointed name, another broker on a freed port) marks nothing and
 * publishes nothing until the recorded cluster answers again or an operator
 * accepts the new one (outboxctl accept-cluster, which this module's
 * cluster_accept serves). The recorded row is read at every check, so an
 * accepted id takes effect without a restart. */

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kafka.h"

/* The recorded cluster (the one row of public.outboxd_kafka_cluster). */
struct cluster_record {
	char id[KAFKA_CLUSTER_ID_MAX];   /* "" when none is recorded */
	char accepted_at[64];
	char accepted_by[256];
};

enum cluster_verdict {
	CLUSTER_OK,       /* the broker belongs to the recorded cluster */
	CLUSTER_BACK,     /* ... again, after CLUSTER_OTHER: re-create the producer
			   * (its producer id came from the other cluster) first */
	CLUSTER_OTHER,    /* the broker belongs to another cluster: publish nothing,
			   * mark nothing, re-create the producer, back off */
	CLUSTER_UNKNOWN,  /* no broker answered, or the database failed (err) */
};

/* One relay's guard state, kept across producers and connections. */
struct cluster_guard {
	struct cluster_record rec;      /* as read at the last check */
	char seen[KAFKA_CLUSTER_ID_MAX]; /* the broker's id at the last answer */
	char mismatch[512];             /* outboxd_relays.cluster_mismatch; "" when fine */
	bool blocked;                   /* the last answer was CLUSTER_OTHER */
	int64_t blocked_since_ms;
	int64_t logged_ms;              /* last ERROR line while blocked */
	unsigned changes;               /* kafka_cluster_changes() at the last check */
	int relay_id;
	const char *brokers;            /* for the log lines */
};

/* Set up a guard for relay relay_id publishing through brokers (kept by
 * pointer). */
void cluster_guard_init(struct cluster_guard *g, int relay_id, const char *brokers);

/* Ask rk's broker for its cluster id and compare it with the recorded one
 * (read on conn, which may be inside a transaction; recorded first when
 * there is none, by "relay <id> first publish"). A swap that librdkafka
 * saw since the previous check (even one that swapped back) also counts as
 * CLUSTER_OTHER: what was acknowledged in between may be the other
 * cluster's. Logs the mismatch (ERROR, naming both ids and the command to
 * run, repeated every 30 s) and the recovery (INFO) itself, so both relays
 * say the same. CLUSTER_UNKNOWN fills err and does not log. */
enum cluster_verdict cluster_check(struct cluster_guard *g, PGconn *conn, rd_kafka_t *rk,
				   int timeout_ms, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The status row's two columns: the broker's id at the last answer and the
 * mismatch text; NULL where there is nothing to say. */
const char *cluster_seen(const struct cluster_guard *g);
const char *cluster_mismatch(const struct cluster_guard *g);

/* Read the recorded cluster (rec->id "" when none). False with a message. */
bool cluster_read(PGconn *conn, struct cluster_record *rec, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Replace the recorded cluster by id (one transaction; the old row, if
 * any, is locked and returned in old). False with a message; nothing
 * changed then. */
bool cluster_accept(PGconn *conn, const char *id, const char *by, struct cluster_record *old,
		    char *err, size_t errlen) __attribute__((warn_unused_result));

/* True when s looks like a cluster id (1..KAFKA_CLUSTER_ID_MAX-1 characters
 * of A-Z a-z 0-9 - _ .). */
bool cluster_id_valid(const char *s);

#endif
