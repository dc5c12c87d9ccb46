#ifndef OUTBOXD_READY_H
#define OUTBOXD_READY_H

#include <event2/event.h>
#include <stdbool.h>
#include <sys/types.h>

#include "conf.h"

/* Whether the pipeline can move events, for /readyz: every
 * READY_INTERVAL_MS a libevent timer forks a short-lived child that
 * connects to the database, asks Kafka for metadata and reads how far the
 * outbox has been sent, writes one line to a pipe and exits; the
 * supervisor itself opens no connection. Not ready while the database or
 * Kafka does not answer, or while unsent events wait and nothing has been
 * sent for [supervisor] stall_ms. */
struct ready;

struct ready *ready_new(struct event_base *base, const struct conf *cfg)
	__attribute__((warn_unused_result));

/* The first probe now, then on the schedule. */
void ready_start(struct ready *r);

/* If pid is the probe's child, take its answer and return true. */
bool ready_reap(struct ready *r, pid_t pid, int status);

/* The last answer: true when ready; why says what is wrong otherwise
 * (and before the first probe answered). */
bool ready_ok(const struct ready *r, const char **why);

void ready_stop(struct ready *r);
void ready_free(struct ready *r);

#endif
