#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log_threshold = LOG_INFO;

static char log_role[32] = "outboxd";
static int log_id = -1;

static const char *const log_names[] = { "ERROR", "WARN", "INFO", "DEBUG" };

void log_setup(const char *role, int id)
{
	const char *lvl = getenv("OUTBOX_LOG_LEVEL");

	snprintf(log_role, sizeof log_role, "%s", role);
	log_id = id;
	if (lvl == NULL)
		return;
	for (int i = LOG_ERROR; i <= LOG_DEBUG; i++)
		if (strcasecmp(lvl, log_names[i]) == 0)
			log_threshold = (enum log_level)i;
}

void log_write(enum log_level level, const char *fmt, ...)
{
	char line[2048];
	struct timeval tv;
	struct tm tm;
	size_t n;
	va_list ap;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
	if (log_id >= 0)
		n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ [%d] %s[%d] %s ",
				      (long)tv.tv_usec / 1000, (int)getpid(), log_role,
				      log_id, log_names[level]);
	else
		n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ [%d] %s %s ",
				      (long)tv.tv_usec / 1000, (int)getpid(), log_role,
				      log_names[level]);
	va_start(ap, fmt);
	if (n < sizeof line)
		n += (size_t)vsnprintf(line + n, sizeof line - n, fmt, ap);
	va_end(ap);
	if (n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	/* One write() per line so lines from several processes never interleave. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

/* Masks "password=..." (keyword form) and "user:secret@" (URI form). */
void log_mask_conninfo(const char *conninfo, char *out, size_t outlen)
{
	size_t o = 0;
	const char *p = conninfo;

	if (outlen == 0)
		return;
	while (*p != '\0' && o + 1 < outlen) {
		if (strncasecmp(p, "password", 8) == 0) {
			const char *q = p + 8;

			while (*q == ' ')
				q++;
			if (*q == '=') {
				const char *mask = "password=****";

				for (const char *m = mask; *m != '\0' && o + 1 < outlen; m++)
					out[o++] = *m;
				q++;
				while (*q == ' ')
					q++;
				if (*q == '\'') {
					for (q++; *q != '\0' && *q != '\''; q++)
						if (*q == '\\' && q[1] != '\0')
							q++;
					if (*q == '\'')
						q++;
				} else {
					while (*q != '\0' && *q != ' ' && *q != '&')
						q++;
				}
				p = q;
				continue;
			}
		}
		if (strncmp(p, "://", 3) == 0) {
			/* URI: mask the part between ':' and '@' of the userinfo. */
			const char *at = strchr(p + 3, '@');
			const char *slash = strchr(p + 3, '/');
			const char *colon = strchr(p + 3, ':');

			if (at != NULL && (slash == NULL || at < slash) && colon != NULL &&
			    colon < at) {
				for (const char *m = p; m <= colon && o + 1 < outlen; m++)
					out[o++] = *m;
				for (const char *m = "****"; *m != '\0' && o + 1 < outlen; m++)
					out[o++] = *m;
				p = at;
				continue;
			}
		}
		out[o++] = *p++;
	}
	out[o] = '\0';
}
