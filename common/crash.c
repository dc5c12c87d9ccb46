#include "crash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct crash_arm {
	char name[64];
	double probability;  /* crash */
	long pause_ms;       /* pause, once */
	bool paused;
};

static struct crash_arm crash_table[CRASH_MAX_POINTS];
static int crash_count;
static uint64_t crash_rng = 0x9e3779b97f4a7c15ULL;

/* xorshift64*: small, seedable, good enough to draw crash coins. */
static double crash_draw(void)
{
	crash_rng ^= crash_rng >> 12;
	crash_rng ^= crash_rng << 25;
	crash_rng ^= crash_rng >> 27;
	return (double)((crash_rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static struct crash_arm *crash_find(const char *point, bool create)
{
	for (int i = 0; i < crash_count; i++)
		if (strcmp(crash_table[i].name, point) == 0)
			return &crash_table[i];
	if (!create || crash_count >= CRASH_MAX_POINTS)
		return NULL;
	memset(&crash_table[crash_count], 0, sizeof crash_table[0]);
	snprintf(crash_table[crash_count].name, sizeof crash_table[0].name, "%s", point);
	return &crash_table[crash_count++];
}

/* Parse "name:number[,name:number]"; is_pause picks which field is set. */
static bool crash_parse_list(const char *spec, bool is_pause, const char *what,
			     char *err, size_t errlen)
{
	const char *p = spec;

	while (*p != '\0') {
		const char *comma = strchr(p, ',');
		size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		char item[128], *colon, *end;
		struct crash_arm *a;
		double v;

		if (len == 0 || len >= sizeof item) {
			snprintf(err, errlen, "%s: empty or overlong item in \"%s\"", what, spec);
			return false;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		colon = strchr(item, ':');
		if (colon == NULL || colon == item || colon[1] == '\0') {
			snprintf(err, errlen, "%s: \"%s\" is not point:%s", what, item,
				 is_pause ? "milliseconds" : "probability");
			return false;
		}
		*colon = '\0';
		errno = 0;
		v = strtod(colon + 1, &end);
		if (*end != '\0' || errno != 0 || v < 0 || (!is_pause && v > 1) ||
		    (is_pause && v > 3600000)) {
			snprintf(err, errlen, "%s: bad %s \"%s\" for point %s", what,
				 is_pause ? "pause" : "probability", colon + 1, item);
			return false;
		}
		a = crash_find(item, true);
		if (a == NULL) {
			snprintf(err, errlen, "%s: more than %d points", what, CRASH_MAX_POINTS);
			return false;
		}
		if (is_pause)
			a->pause_ms = (long)v;
		else
			a->probability = v;
		p += len;
		if (*p == ',')
			p++;
	}
	return true;
}

bool crash_parse(const char *spec, char *err, size_t errlen)
{
	crash_count = 0;
	return crash_parse_list(spec, false, "OUTBOX_CRASH", err, errlen);
}

/* Every crash point in the product; OUTBOX_CRASH and OUTBOX_PAUSE name
 * only these (a misspelt point would arm nothing, silently). */
static const char *const crash_points[] = {
	"orders.before_commit", "orders.after_commit", "relay.after_claim",
	"relay.after_publish", "relay.after_mark", "consumer.after_apply",
	"consumer.after_commit", "consumer.after_dlq_publish", "consumer.after_dead_letter",
};

static bool crash_known(const char *what, char *err, size_t errlen)
{
	for (int i = 0; i < crash_count; i++) {
		bool known = false;

		for (size_t k = 0; k < sizeof crash_points / sizeof crash_points[0]; k++)
			known = known || strcmp(crash_table[i].name, crash_points[k]) == 0;
		if (!known) {
			int n = snprintf(err, errlen, "%s: unknown crash point \"%s\" (points:", what,
					 crash_table[i].name);

			for (size_t k = 0; k < sizeof crash_points / sizeof crash_points[0]; k++)
				if (n >= 0 && (size_t)n < errlen)
					n += snprintf(err + n, errlen - (size_t)n, " %s", crash_points[k]);
			if (n >= 0 && (size_t)n < errlen)
				snprintf(err + n, errlen - (size_t)n, ")");
			return false;
		}
	}
	return true;
}

bool crash_setup(char *err, size_t errlen)
{
	const char *spec = getenv("OUTBOX_CRASH");
	const char *seed = getenv("OUTBOX_CRASH_SEED");
	const char *pause = getenv("OUTBOX_PAUSE");
	const char *salt;

	crash_count = 0;
	if (seed != NULL && *seed != '\0') {
		char *end;
		unsigned long long s = strtoull(seed, &end, 10);

		if (*end != '\0') {
			snprintf(err, errlen, "OUTBOX_CRASH_SEED: \"%s\" is not a number", seed);
			return false;
		}
		crash_rng ^= s * 0xbf58476d1ce4e5b9ULL;
		/* A respawned worker must not replay its predecessor's coins (a
		 * crash on the first draw would repeat forever): the supervisor
		 * names each incarnation, and the name is mixed into the seed. */
		salt = getenv("OUTBOX_CRASH_SALT");
		if (salt != NULL) {
			uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */

			for (const char *c = salt; *c != '\0'; c++)
				h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
			crash_rng ^= h * 0x94d049bb133111ebULL;
		}
	} else {
		crash_rng ^= ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);
	}
	if (crash_rng == 0)
		crash_rng = 1;
	if (spec != NULL && (!crash_parse_list(spec, false, "OUTBOX_CRASH", err, errlen) ||
			     !crash_known("OUTBOX_CRASH", err, errlen)))
		return false;
	if (pause != NULL && (!crash_parse_list(pause, true, "OUTBOX_PAUSE", err, errlen) ||
			      !crash_known("OUTBOX_PAUSE", err, errlen)))
		return false;
	return true;
}

double crash_probability(const char *point)
{
	struct crash_arm *a = crash_find(point, false);

	return a != NULL ? a->probability : 0.0;
}

void crash_point(const char *point)
{
	struct crash_arm *a;

	if (crash_count == 0)
		return;
	a = crash_find(point, false);
	if (a == NULL)
		return;
	if (a->pause_ms > 0 && !a->paused) {
		const char *file = getenv("OUTBOX_PAUSE_FILE");
		struct timespec ts = { a->pause_ms / 1000, (a->pause_ms % 1000) * 1000000L };
		int fd = -1;

		a->paused = true;
		if (file != NULL && *file != '\0')
			fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		if (fd >= 0) {
			close(fd);
			unlink(file);
		}
	}
	if (a->probability > 0 && crash_draw() < a->probability) {
		const char *log = getenv("OUTBOX_CRASH_LOG");

		if (log != NULL && *log != '\0') {
			char line[96];
			int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
			int n = snprintf(line, sizeof line, "%s\n", point);

			if (fd >= 0) {
				if (write(fd, line, (size_t)n) < 0)
					_exit(CRASH_EXIT_CODE);
			}
		}
		_exit(CRASH_EXIT_CODE);
	}
}
