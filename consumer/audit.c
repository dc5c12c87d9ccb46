#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct audit {
	int fd; /* -1: no file configured */
	char path[512];
};

struct audit *audit_open(const char *path, char *err, size_t errlen)
{
	struct audit *a = calloc(1, sizeof *a);

	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->fd = -1;
	if (path == NULL || path[0] == '\0')
		return a;
	snprintf(a->path, sizeof a->path, "%s", path);
	a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (a->fd < 0) {
		snprintf(err, errlen, "%s: cannot open audit file: %s", path, strerror(errno));
		free(a);
		return NULL;
	}
	return a;
}

static void set_str(json_t *o, const char *key, const char *v)
{
	json_object_set_new(o, key, v != NULL ? json_string(v) : json_null());
}

static void set_int(json_t *o, const char *key, int64_t v)
{
	json_object_set_new(o, key, v >= 0 ? json_integer((json_int_t)v) : json_null());
}

char *audit_format(const struct audit_line *rec)
{
	json_t *o = json_object();
	char *s;

	if (o == NULL)
		return NULL;
	set_str(o, "detected_at", rec->detected_at);
	set_str(o, "kind", rec->kind);
	set_str(o, "aggregate_id", rec->aggregate_id);
	set_int(o, "expected_seq", rec->expected_seq);
	set_int(o, "got_seq", rec->got_seq);
	set_str(o, "event_id", rec->event_id);
	set_int(o, "consumer_id", rec->consumer_id);
	set_int(o, "kafka_partition", rec->kafka_partition);
	set_int(o, "kafka_offset", rec->kafka_offset);
	if (rec->detail != NULL)
		set_str(o, "detail", rec->detail);
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}

bool audit_write(struct audit *a, const struct audit_line *rec, char *err, size_t errlen)
{
	char *s;
	size_t n;
	ssize_t w;
	bool ok = false;

	if (a == NULL || a->fd < 0)
		return true;
	s = audit_format(rec);
	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	n = strlen(s);
	/* The formatted string is ours: turn its NUL into the newline so the
	 * whole line goes out in one write. */
	{
		char *line = realloc(s, n + 2);

		if (line == NULL) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		s = line;
	}
	s[n] = '\n';
	s[n + 1] = '\0';
	do
		w = write(a->fd, s, n + 1);
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)(n + 1)) {
		snprintf(err, errlen, "%s: write: %s", a->path,
			 w < 0 ? strerror(errno) : "short write");
		goto out;
	}
	ok = true;
out:
	free(s);
	return ok;
}

void audit_close(struct audit *a)
{
	if (a == NULL)
		return;
	if (a->fd >= 0)
		close(a->fd);
	free(a);
}
