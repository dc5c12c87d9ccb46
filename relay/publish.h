#ifndef OUTBOXD_RELAY_PUBLISH_H
#define OUTBOXD_RELAY_PUBLISH_H

/* The relay's Kafka side: one idempotent producer, a batch of rows produced
 * with each row's slot as the message opaque, and a bounded wait until every
 * delivery report of the batch is in. A row counts as "sent" only after its
 * own successful delivery report (never from rd_kafka_produce's return). */

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/* One claimed outbox row and what became of it in this pass. The strings
 * point into the claim's PGresult and are valid until the pass ends. */
struct publish_row {
	int64_t id;
	int64_t seq;
	const char *event_id;
	const char *aggregate_type;
	const char *aggregate_id;
	const char *event_type;
	const char *payload;
	size_t payload_len;
	int group;                  /* index of this row's aggregate in the batch */
	bool publish;               /* chosen by the re-check (contiguous run) */
	bool enqueued;              /* handed to librdkafka */
	bool pending;               /* enqueued, report not in yet */
	bool marked;                /* the pass marks it sent (poll relay) */
	rd_kafka_resp_err_t err;    /* enqueue error or the report's error */
	int32_t partition;
	int64_t offset;
	int64_t acked_us;           /* wall clock when the report (or error) came */
};

struct publisher {
	rd_kafka_t *rk;
	const struct conf *cfg;
};

/* Create the producer (idempotent, our dr_msg_cb). False with a message
 * in err; the producer is then NULL. */
bool publish_open(struct publisher *p, const struct conf *c, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Destroy the producer (if any). Reports still outstanding are abandoned:
 * their rows stay unmarked, which only ever means "publish again". */
void publish_close(struct publisher *p);

/* Enqueue every row with publish set, in array order. After an enqueue
 * error the remaining rows of the same aggregate are not enqueued (their
 * publish flag is cleared) so an order never goes out with a hole in front
 * of it. Returns the number of rows enqueued. */
int publish_send(struct publisher *p, struct publish_row *rows, int n);

/* Serve delivery reports until none of rows[0..n-1] is outstanding (rows
 * NULL: none at all, whichever batch it belongs to) or timeout_ms passed.
 * True when every report is in; false on timeout (the caller must then
 * abandon the producer: see publish_close). The stop flag deliberately
 * does not shorten this wait. */
bool publish_wait(struct publisher *p, const struct publish_row *rows, int n, long timeout_ms);

/* Whether err (an enqueue error or a delivery report's) means Kafka will
 * never accept this message as it is, whatever the retries: too large for
 * the producer's or the broker's message.max.bytes (MSG_SIZE_TOO_LARGE,
 * INVALID_MSG_SIZE), a batch of it too large (RECORD_LIST_TOO_LARGE), or a
 * record the broker rejects (INVALID_RECORD). Every other error (timeouts,
 * a broker down, leadership moves, fatal producer errors, the local queue
 * full) is transient: the pass backs off and tries again. */
bool publish_err_permanent(rd_kafka_resp_err_t err);

/* How long an aggregate with a refused row (refused_at, sql/008) is left
 * alone by both relays before its row is tried again as it is. */
#define PUBLISH_REFUSED_RETRY_S 600
#define PUBLISH_STR_(x) #x
#define PUBLISH_STR(x) PUBLISH_STR_(x)

/* Reports still outstanding. */
int publish_outstanding(void);

/* Serve callbacks without blocking (idle loop). */
void publish_poll(struct publisher *p);

/* Append one line per enqueued row to fd in ONE write() (fd is opened
 * O_APPEND, so lines of several relays never interleave). Format, tab
 * separated, one row per line:
 *   relay_id pass_id event_id aggregate_id seq partition offset status claimed_us acked_us
 * status is "ok" or the librdkafka error name (e.g. _MSG_TIMED_OUT);
 * claimed_us is the wall clock (µs since the epoch) when the claim
 * statement returned; acked_us when this row's delivery report arrived.
 * False with errno set when the write failed or was short. */
bool publish_log_write(int fd, int relay_id, const char *pass_id,
		       const struct publish_row *rows, int n, int64_t claimed_us)
	__attribute__((warn_unused_result));

/* A relay's counters, as public.outboxd_relays shows them. */
struct publish_counters {
	int64_t passes;     /* polling passes that committed (CDC: transactions) */
	int64_t published;  /* rows handed to librdkafka */
	int64_t acked;      /* successful delivery reports */
	int64_t failed;     /* failed reports and enqueue errors */
	int64_t marked;     /* rows marked sent */
};

/* Upsert this relay's row of public.outboxd_relays (outboxctl status), mode
 * "poll", "cdc", ..., with the cluster guard's view: the broker's cluster id
 * (NULL: none seen yet, the row keeps the last one) and why the relay is
 * blocked (NULL: it is not). Failures are logged at debug and ignored: the
 * counters are for humans, the next second tries again. */
void publish_counters_save(PGconn *conn, int relay_id, const char *host, const char *mode,
			   int64_t started_us, const struct publish_counters *c,
			   const char *cluster_id, const char *cluster_mismatch);

#endif
