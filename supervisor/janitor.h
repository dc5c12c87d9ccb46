#ifndef OUTBOXD_JANITOR_H
#define OUTBOXD_JANITOR_H

#include <event2/event.h>
#include <stdbool.h>
#include <sys/types.h>

#include "conf.h"

/* The outbox janitor inside outboxd: every [cleanup] janitor_interval_s
 * seconds (first round at start-up) a libevent timer forks a short-lived
 * child that connects to the database, runs one outbox_cleanup_round() and
 * exits (0 done or skipped, 1 failed). The supervisor itself opens no
 * connection. At most one child at a time per supervisor; across
 * supervisors the round's advisory lock lets one of them work. */
struct janitor;

/* A janitor reading its settings from *cfg at each round (so a SIGHUP
 * reload applies from the next round). NULL when libevent fails. */
struct janitor *janitor_new(struct event_base *base, const struct conf *cfg)
	__attribute__((warn_unused_result));

/* Start the schedule. While janitor_interval_s is 0 no round runs; a reload
 * that sets it takes effect within a minute. */
void janitor_start(struct janitor *j);

/* If pid is the janitor's child, note its exit, log it and return true. */
bool janitor_reap(struct janitor *j, pid_t pid, int status);

/* No more rounds; a running child gets SIGTERM (its transaction rolls back). */
void janitor_stop(struct janitor *j);

void janitor_free(struct janitor *j);

#endif
