#ifndef OUTBOXD_CONSUMER_SWEEP_H
#define OUTBOXD_CONSUMER_SWEEP_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Inbox retention: delete sink.inbox rows received more than hours ago, in
 * transactions of at most batch rows (each a short index range delete, so
 * no long lock), under advisory lock SWEEP_LOCK so that one sweeper works
 * at a time. A late duplicate of a swept event is still dropped by the
 * order's high-water mark (sink.order_projection.last_seq).
 *
 * Runs until nothing older is left, max_batches transactions were done
 * (0 = no limit) or max_ms passed (0 = no limit). *deleted gets the count.
 * *busy is set (and nothing deleted) when another session holds the lock
 * and wait is false; with wait true it waits for the lock. *more is set when
 * rows older than the cut-off are probably left (a limit stopped it). True
 * on success; false with the message (and SQLSTATE in state, 6 bytes) in
 * err, the transaction rolled back. conn must not be in a transaction. */
bool sweep_inbox(PGconn *conn, int hours, int batch, int max_batches, long max_ms, bool wait,
		 int64_t *deleted, bool *busy, bool *more, char state[6], char *err,
		 size_t errlen) __attribute__((warn_unused_result));

#endif
