#ifndef OUTBOXD_UTIL_H
#define OUTBOXD_UTIL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wall clock in microseconds since the epoch. */
int64_t util_now_us(void);

/* Monotonic clock in milliseconds. */
int64_t util_mono_ms(void);

/* Sleep ms milliseconds in slices of at most 50 ms, returning early when
 * *stop becomes non-zero (stop may be NULL). */
void util_sleep_ms(long ms, volatile sig_atomic_t *stop);

/* Next delay of a capped exponential backoff with +-25% jitter:
 * doubles *cur (starting at base_ms), never above max_ms. */
long util_backoff_next(long *cur, long base_ms, long max_ms);

/* A random version-4 UUID in canonical text form (37 bytes with NUL). */
void util_uuid4(char out[37]);

/* Parse a decimal int in [min, max]; false when it is not one. */
bool util_parse_int(const char *s, long min, long max, long *out)
	__attribute__((warn_unused_result));

/* Install handler for SIGTERM, SIGINT and SIGHUP (no SA_RESTART). */
void util_on_signals(void (*handler)(int));

#endif
