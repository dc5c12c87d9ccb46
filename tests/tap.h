/* tests/tap.h: a tiny TAP producer for the unit tests (header only). */
#ifndef OUTBOXD_TAP_H
#define OUTBOXD_TAP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_n, tap_failed;

static inline int tap_ok(int cond, const char *file, int line, const char *desc)
{
	tap_n++;
	printf("%sok %d - %s\n", cond ? "" : "not ", tap_n, desc);
	if (!cond) {
		tap_failed++;
		printf("#   Failed test at %s:%d\n", file, line);
	}
	return cond;
}

#define ok(cond, desc) tap_ok((cond) ? 1 : 0, __FILE__, __LINE__, (desc))
#define is_int(got, want, desc)                                                          \
	do {                                                                             \
		long long g_ = (long long)(got), w_ = (long long)(want);                 \
		if (!tap_ok(g_ == w_, __FILE__, __LINE__, (desc)))                       \
			printf("#          got: %lld\n#     expected: %lld\n", g_, w_);     \
	} while (0)
#define is_str(got, want, desc)                                                          \
	do {                                                                             \
		const char *g_ = (got), *w_ = (want);                                    \
		if (!tap_ok(g_ != NULL && w_ != NULL && strcmp(g_, w_) == 0, __FILE__,   \
			    __LINE__, (desc)))                                           \
			printf("#          got: '%s'\n#     expected: '%s'\n",               \
			       g_ ? g_ : "(null)", w_ ? w_ : "(null)");                  \
	} while (0)
#define diag(...) (printf("# "), printf(__VA_ARGS__), printf("\n"))
#define skip_all(why) (printf("1..0 # SKIP %s\n", (why)), exit(0))

static inline int done_testing(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed == 0 ? 0 : 1;
}

#endif
