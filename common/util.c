#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t util_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t util_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void util_sleep_ms(long ms, volatile sig_atomic_t *stop)
{
	while (ms > 0 && (stop == NULL || !*stop)) {
		long slice = ms > 50 ? 50 : ms;
		struct timespec ts = { 0, slice * 1000000L };

		nanosleep(&ts, NULL);
		ms -= slice;
	}
}

long util_backoff_next(long *cur, long base_ms, long max_ms)
{
	long d;

	if (*cur <= 0)
		*cur = base_ms;
	else
		*cur = *cur * 2 > max_ms ? max_ms : *cur * 2;
	d = *cur - *cur / 4 + (long)(random() % (*cur / 2 + 1));
	return d > 0 ? d : 1;
}

void util_uuid4(char out[37])
{
	unsigned char b[16];
	size_t got = 0;

	while (got < sizeof b) {
		ssize_t n = getrandom(b + got, sizeof b - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			abort(); /* no randomness at all: nothing sane to do */
		got += (size_t)n;
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
		 b[12], b[13], b[14], b[15]);
}

bool util_parse_int(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (*end != '\0' || errno != 0 || v < min || v > max)
		return false;
	*out = v;
	return true;
}

size_t util_utf8_char(const unsigned char *p, size_t n)
{
	size_t len;
	uint32_t cp;

	if (n == 0)
		return 0;
	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		cp = p[0] & 0x07;
	} else {
		return 0; /* a continuation byte, 0xc0, 0xc1 or above 0xf4 */
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

bool util_utf8_text(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n;) {
		size_t c = util_utf8_char(b + i, n - i);

		if (c == 0 || b[i] == '\0')
			return false;
		i += c;
	}
	return true;
}

char *util_utf8_escape(const void *p, size_t n, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *b = p;
	size_t o = 0;

	if (outlen == 0)
		return out;
	for (size_t i = 0; i < n;) {
		size_t c = util_utf8_char(b + i, n - i);
		bool esc = c == 0 || (c == 1 && (b[i] < 0x20 || b[i] == 0x7f));
		size_t step = esc ? 1 : c, need = esc ? 4 : c;
		size_t reserve = i + step >= n ? 1 : 4; /* the NUL, or "..." and the NUL */

		if (o + need + reserve > outlen) {
			snprintf(out + o, outlen - o, "%s", outlen - o >= 4 ? "..." : "");
			return out;
		}
		if (esc) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[b[i] >> 4];
			out[o++] = hex[b[i] & 15];
		} else {
			memcpy(out + o, b + i, c);
			o += c;
		}
		i += step;
	}
	out[o] = '\0';
	return out;
}

void util_on_signals(void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}
