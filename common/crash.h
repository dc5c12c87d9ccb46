#ifndef OUTBOXD_CRASH_H
#define OUTBOXD_CRASH_H

#include <stdbool.h>
#include <stddef.h>

/* Crash injection. OUTBOX_CRASH="point:probability[,point:probability...]"
 * arms named points; OUTBOX_CRASH_SEED=N makes the draws repeatable (the
 * worker's pid is mixed in unless OUTBOX_CRASH_SEED is set; OUTBOX_CRASH_SALT,
 * which outboxd sets to "role.index.start" for each worker it forks, gives
 * every incarnation draws of its own under the same seed). A crash is
 * _exit(CRASH_EXIT_CODE) with no cleanup and no flush. When OUTBOX_CRASH_LOG
 * names a file, the point's name is appended to it (one write) first, so a
 * harness can count crashes by kind.
 *
 * OUTBOX_PAUSE="point:ms[,...]" makes a point sleep instead, once per
 * process (a test hook for race windows); OUTBOX_PAUSE_FILE names a file
 * that is created while the pause lasts. */

#define CRASH_EXIT_CODE 86
#define CRASH_MAX_POINTS 16

/* Parse a spec like "relay.after_publish:0.05,orders.after_commit:1" into
 * the armed table. Returns false with a message on a malformed spec. */
bool crash_parse(const char *spec, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Read OUTBOX_CRASH, OUTBOX_CRASH_SEED and OUTBOX_PAUSE. False with a
 * message on a malformed value (the caller exits 2). */
bool crash_setup(char *err, size_t errlen) __attribute__((warn_unused_result));

/* Probability armed for a point (0 when not armed). */
double crash_probability(const char *point);

/* Maybe crash (or pause) here. Cheap when nothing is armed. */
void crash_point(const char *point);

#endif
