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
