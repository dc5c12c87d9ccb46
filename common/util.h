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

/* Length of the well-formed UTF-8 character at p (n bytes left): 1 to 4,
 * or 0 when it is not one (a stray or truncated sequence, an overlong form,
 * a surrogate, above U+10FFFF). */
size_t util_utf8_char(const unsigned char *p, size_t n);

/* True when the n bytes at p are text PostgreSQL accepts: well-formed
 * UTF-8 without a NUL byte. */
bool util_utf8_text(const void *p, size_t n);

/* The n bytes at p for a log line, a terminal or a text column: well-formed
 * UTF-8 stays as it is; any other byte, NUL and the ASCII control
 * characters become \xNN (a backslash itself is not escaped: for people,
 * not for decoding). Always NUL-terminates out; what does not fit is cut at
 * a character and ends in "...". Returns out. */
char *util_utf8_escape(const void *p, size_t n, char *out, size_t outlen);

/* Install handler for SIGTERM, SIGINT and SIGHUP (no SA_RESTART). */
void util_on_signals(void (*handler)(int));

#endif
