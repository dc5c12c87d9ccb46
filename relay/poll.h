#ifndef OUTBOXD_RELAY_POLL_H
#define OUTBOXD_RELAY_POLL_H

/* The polling relay: claim a batch of unsent outbox rows, publish them,
 * wait for every delivery report, mark the acknowledged per-aggregate
 * prefix sent, commit; repeat. See poll.c for why it cannot lose an event
 * and cannot reorder an aggregate's events across relays. */

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"

/* Run until *stop is set. *hup is set by SIGHUP (logged, cleared).
 * Returns the process exit code: 0 after a clean stop (the in-flight pass
 * finishes first), 1 on a retryable failure, 2 on a configuration error. */
int poll_run(const struct conf *c, int relay_id, volatile sig_atomic_t *stop,
	     volatile sig_atomic_t *hup) __attribute__((warn_unused_result));

/* The ids a drain marked sent (committed), as sorted, disjoint runs of
 * consecutive ids: a backlog written by a few writers is a few runs.
 * Zero-initialised is empty. */
struct poll_marked {
	struct poll_run { int64_t lo, hi; } *run;
	int n, cap;
	bool failed;    /* out of memory: some marked id is missing */
};

/* Whether id is in the set (binary search). */
bool poll_marked_has(const struct poll_marked *m, int64_t id);
void poll_marked_free(struct poll_marked *m);

/* Publish the backlog by polling, then return (the CDC relay's catch-up).
 * Only rows with id <= max_id are claimed. until_idle: return once a pass
 * claims nothing; otherwise once a pass claims less than a batch. marked
 * (may be NULL) gets every id the drain marked sent. Returns 0 when caught
 * up, 1 when stopped or on a failure that needs a restart, 2 on a
 * configuration error. */
int poll_drain(const struct conf *c, int relay_id, int64_t max_id, bool until_idle,
	       struct poll_marked *marked, volatile sig_atomic_t *stop)
	__attribute__((warn_unused_result));

#endif
