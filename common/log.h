#ifndef OUTBOXD_LOG_H
#define OUTBOXD_LOG_H

#include <stdbool.h>
#include <stddef.h>

/* Log levels, most severe first. */
enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Set the role ("relay", "consumer", ...) and worker id (-1: none) that
 * prefix every line; reads OUTBOX_LOG_LEVEL (error|warn|info|debug). */
void log_setup(const char *role, int id);

/* Current threshold; lines above it are not formatted at all. */
extern enum log_level log_threshold;

/* Write one line to stderr: "time [pid] role[id] LEVEL message". */
void log_write(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) \
	do { if (log_threshold >= LOG_WARN) log_write(LOG_WARN, __VA_ARGS__); } while (0)
#define log_info(...) \
	do { if (log_threshold >= LOG_INFO) log_write(LOG_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) \
	do { if (log_threshold >= LOG_DEBUG) log_write(LOG_DEBUG, __VA_ARGS__); } while (0)


#endif
