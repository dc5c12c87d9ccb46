#include "conf.h"

#include <errno.h>
#include <ini.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "db.h"

enum conf_type { CT_STR, CT_INT, CT_BOOL, CT_MODE };

/* The key table: every key we own, its type, range and default. Defaults go
 * through the same setter as the file's values. */
struct conf_key {
	const char *section;
	const char *name;
	enum conf_type type;
	size_t offset;
	size_t size;      /* CT_STR: buffer size */
	long min, max;    /* CT_INT */
	const char *def;
};

#define S(sec, key, field, def) \
	{ sec, key, CT_STR, offsetof(struct conf, field), sizeof(((struct conf *)0)->field), 0, 0, def }
#define I(sec, key, field, lo, hi, def) \
	{ sec, key, CT_INT, offsetof(struct conf, field), 0, lo, hi, def }
#define B(sec, key, field, def) \
	{ sec, key, CT_BOOL, offsetof(struct conf, field), 0, 0, 0, def }

static const struct conf_key conf_keys[] = {
	S("database", "conninfo", db_conninfo, ""),
	S("kafka", "brokers", kafka_brokers, "127.0.0.1:9092"),
	S("kafka", "topic", kafka_topic, "orders.events"),
	I("kafka", "partitions", kafka_partitions, 1, 10000, "12"),
	I("kafka", "delivery_timeout_ms", kafka_delivery_timeout_ms, 1000, 3600000, "30000"),
	{ "relay", "mode", CT_MODE, offsetof(struct conf, relay_mode), 0, 0, 0, "poll" },
	I("relay", "poll_interval_ms", relay_poll_interval_ms, 1, 3600000, "500"),
	B("relay", "notify", relay_notify, "on"),
	I("relay", "batch_size", relay_batch_size, 1, 100000, "500"),
	I("relay", "backoff_max_ms", relay_backoff_max_ms, 10, 600000, "10000"),
	S("relay", "publish_log", relay_publish_log, ""),
	S("relay", "slot_name", relay_slot, "outboxd"),
	S("relay", "publication", relay_publication, "outboxd_outbox"),
	I("relay", "heartbeat_ms", relay_heartbeat_ms, 100, 3600000, "5000"),
	I("relay", "wal_warn_mb", relay_wal_warn_mb, 1, 100000000, "1024"),
	I("relay", "wal_budget_mb", relay_wal_budget_mb, 1, 100000000, "16384"),
	S("consumer", "group_id", consumer_group, "outboxd"),
	S("consumer", "conninfo", consumer_conninfo, ""),
	I("consumer", "commit_interval_ms", consumer_commit_interval_ms, 0, 60000, "200"),
	I("consumer", "batch_size", consumer_batch_size, 1, CONF_CONSUMER_BATCH_MAX, "500"),
	I("consumer", "retry_max_attempts", consumer_retry_max_attempts, 1, 1000, "5"),
	I("consumer", "retry_max_ms", consumer_retry_max_ms, 0, 3600000, "30000"),
	I("consumer", "retry_backoff_ms", consumer_retry_backoff_ms, 1, 600000, "200"),
	S("consumer", "event_types", consumer_event_types, "*"),
	I("consumer", "inbox_retention_hours", consumer_inbox_retention_hours, 1, 87600, "168"),
	I("consumer", "inbox_sweep_interval_ms", consumer_inbox_sweep_interval_ms, 0, 86400000,
	  "300000"),
	I("consumer", "inbox_sweep_batch", consumer_inbox_sweep_batch, 1, 1000000, "5000"),
	S("supervisor", "http_listen", sup_http_listen, "127.0.0.1:8780"),
	S("supervisor", "audit_file", sup_audit_file, "outboxd-audit.jsonl"),
	S("supervisor", "pid_file", sup_pid_file, ""),
	S("supervisor", "bin_dir", sup_bin_dir, ""),
	I("supervisor", "shutdown_timeout_ms", sup_shutdown_timeout_ms, 100, 3600000, "15000"),
	I("supervisor", "backoff_max_ms", sup_backoff_max_ms, 10, 3600000, "10000"),
	I("supervisor", "stable_ms", sup_stable_ms, 100, 3600000, "30000"),
	I("supervisor", "stall_ms", sup_stall_ms, 1000, 86400000, "60000"),
	B("supervisor", "ready_probe", sup_ready_probe, "on"),
	B("cleanup", "partitioned", cleanup_partitioned, "off"),
	I("cleanup", "partition_interval_s", cleanup_partition_interval_s, 1, 31622400, "86400"),
	I("cleanup", "partitions_ahead", cleanup_partitions_ahead, 1, 1000, "3"),
	I("cleanup", "retention_s", cleanup_retention_s, 0, 2147483647, "604800"),
	I("cleanup", "janitor_interval_s", cleanup_janitor_interval_s, 0, 86400, "60"),
	I("cleanup", "delete_batch_size", cleanup_delete_batch, 1, 1000000, "5000"),
	I("cleanup", "round_budget_ms", cleanup_round_budget_ms, 100, 3600000, "10000"),
	I("cleanup", "lock_timeout_ms", cleanup_lock_timeout_ms, 10, 600000, "2000"),
};

#define NKEYS (sizeof conf_keys / sizeof conf_keys[0])

static const char *const conf_sections[] = {
	"database", "kafka", "relay", "consumer", "supervisor",
	"cleanup",
};

/* Parse and store one value; false with a message (no location) in err. */
static bool conf_set(struct conf *c, const struct conf_key *k, const char *value,
		     char *err, size_t errlen)
{
	void *field = (char *)c + k->offset;

	switch (k->type) {
	case CT_STR:
		if (strlen(value) >= k->size) {
			snprintf(err, errlen, "[%s] %s: value longer than %zu bytes",
				 k->section, k->name, k->size - 1);
			return false;
		}
		memcpy(field, value, strlen(value) + 1);
		return true;
	case CT_INT: {
		char *end;
		long v;

		errno = 0;
		v = strtol(value, &end, 10);
		if (*value == '\0' || *end != '\0' || errno != 0) {
			snprintf(err, errlen, "[%s] %s: \"%s\" is not an integer",
				 k->section, k->name, value);
			return false;
		}
		if (v < k->min || v > k->max) {
			snprintf(err, errlen, "[%s] %s: %ld is out of range %ld..%ld",
				 k->section, k->name, v, k->min, k->max);
			return false;
		}
		*(int *)field = (int)v;
		return true;
	}
	case CT_BOOL:
		if (strcasecmp(value, "on") == 0 || strcasecmp(value, "true") == 0 ||
		    strcasecmp(value, "yes") == 0 || strcmp(value, "1") == 0) {
			*(bool *)field = true;
			return true;
		}
		if (strcasecmp(value, "off") == 0 || strcasecmp(value, "false") == 0 ||
		    strcasecmp(value, "no") == 0 || strcmp(value, "0") == 0) {
			*(bool *)field = false;
			return true;
		}
		snprintf(err, errlen, "[%s] %s: \"%s\" is not on/off", k->section, k->name, value);
		return false;
	case CT_MODE:
		if (strcmp(value, "poll") == 0) {
			*(int *)field = RELAY_POLL;
			return true;
		}
		if (strcmp(value, "cdc") == 0) {
			*(int *)field = RELAY_CDC;
			return true;
		}
		snprintf(err, errlen, "[%s] %s: \"%s\" is not poll or cdc", k->section, k->name, value);
		return false;
	}
	return false;
}

void conf_defaults(struct conf *c)
{
	char err[256];

	memset(c, 0, sizeof *c);
	for (size_t i = 0; i < NKEYS; i++)
		if (!conf_set(c, &conf_keys[i], conf_keys[i].def, err, sizeof err))
			abort(); /* a bad default is a bug */
}

_Static_assert(NKEYS <= CONF_MAX_KEYS, "raise CONF_MAX_KEYS");

struct conf_parse {
	struct conf *c;
	const char *path;
	char *err;
	size_t errlen;
	bool failed;
	int fail_line;    /* line of our first complaint */
	int line;         /* line the reader handed to inih last */
	FILE *f;
	char seen[NKEYS];
	char *buf;        /* the whole current line (getline) */
	size_t cap;
	char *long_value; /* the value of a line longer than inih's buffer */
	int long_line;    /* ... on this line */
};

/* Marks a value that did not fit inih's line buffer: p->long_value has it. */
#define CONF_LONG_MARK "\x01"

/* A reader error: inih sees the end of the file, conf_load the message. */
static char *conf_reader_fail(struct conf_parse *p, const char *msg)
{
	snprintf(p->err, p->errlen, "%s:%d: %s", p->path, p->line, msg);
	p->failed = true;
	p->fail_line = p->line;
	return NULL;
}

/* inih's reader: whole lines, counted (the handler gets no line number).
 * inih's buffer holds 200 bytes; a longer "key = value" line reaches it as
 * "key = <mark>" and its value waits in p->long_value, so that no line is
 * ever cut and its tail parsed as a line of its own. */
static char *conf_reader(char *buf, int size, void *stream)
{
	struct conf_parse *p = stream;
	ssize_t n = getline(&p->buf, &p->cap, p->f);
	char *line = p->buf, *delim, *start;

	if (n < 0 || p->failed)
		return NULL;
	p->line++;
	if (memchr(line, '\0', (size_t)n) != NULL)
		return conf_reader_fail(p, "NUL byte in the line");
	if (n > CONF_MAX_LINE)
		return conf_reader_fail(p, "line longer than 16384 bytes");
	if (n < size) {
		memcpy(buf, line, (size_t)n + 1);
		return buf;
	}
	start = line + strspn(line, " \t");
	if (*start == ';' || *start == '#') {
		snprintf(buf, (size_t)size, "#\n"); /* a long comment */
		return buf;
	}
	delim = strpbrk(start, "=:");
	if (*start == '[' || start != line || delim == NULL)
		return conf_reader_fail(p, "line too long for anything but \"key = value\"");
	if (delim - line + 3 > size)
		return conf_reader_fail(p, "key too long");
	free(p->long_value);
	p->long_value = strdup(delim + 1);
	if (p->long_value == NULL)
		return conf_reader_fail(p, "out of memory");
	p->long_line = p->line;
	snprintf(buf, (size_t)size, "%.*s" CONF_LONG_MARK "\n", (int)(delim - line + 1), line);
	return buf;
}

/* What inih does to a value, for one that went around it: leading and
 * trailing blanks off, an inline comment (";" after a blank) cut. */
static const char *conf_long_value(char *v)
{
	char *end;

	v += strspn(v, " \t");
	for (end = v; *end != '\0'; end++)
		if (*end == ';' && end > v && (end[-1] == ' ' || end[-1] == '\t'))
			break;
	*end = '\0';
	while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	return v;
}

static int conf_fail(struct conf_parse *p, int line, const char *msg)
{
	snprintf(p->err, p->errlen, "%s:%d: %s", p->path, line, msg);
	p->failed = true;
	p->fail_line = line;
	return 0;
}

/* inih handler: returns 0 to stop at the first error. */
static int conf_line_cb(void *user, const char *section, const char *name,
			const char *value)
{
	struct conf_parse *p = user;
	int line = p->line;
	char msg[CONF_STR + 128];
	bool known = false;

	for (size_t i = 0; i < sizeof conf_sections / sizeof conf_sections[0]; i++)
		if (strcmp(section, conf_sections[i]) == 0)
			known = true;
	if (!known) {
		snprintf(msg, sizeof msg, "unknown section [%s]", section);
		return conf_fail(p, line, msg);
	}
	if (value == NULL) {
		snprintf(msg, sizeof msg, "[%s] %s: expected \"key = value\"", section, name);
		return conf_fail(p, line, msg);
	}
	if (line == p->long_line && strcmp(value, CONF_LONG_MARK) == 0 && p->long_value != NULL)
		value = conf_long_value(p->long_value);
	if (strcmp(section, "kafka") == 0 && strncmp(name, "kafka.", 6) == 0) {
		struct conf_kafka_prop *kp;
		rd_kafka_conf_t *probe;
		char rkerr[256];
		rd_kafka_conf_res_t res;

		for (int i = 0; i < p->c->kafka_nprops; i++)
			if (strcmp(p->c->kafka_props[i].name, name + 6) == 0) {
				snprintf(msg, sizeof msg, "[kafka] %s: set twice (first on line %d)",
					 name, p->c->kafka_props[i].line);
				return conf_fail(p, line, msg);
			}
		if (p->c->kafka_nprops >= CONF_MAX_KAFKA_PROPS)
			return conf_fail(p, line, "too many kafka.* properties");
		if (strlen(name + 6) >= sizeof kp->name || strlen(value) >= sizeof kp->value)
			return conf_fail(p, line, "kafka property name or value too long");
		/* Ask librdkafka now, so its complaint comes with our file:line. */
		probe = rd_kafka_conf_new();
		res = rd_kafka_conf_set(probe, name + 6, value, rkerr, sizeof rkerr);
		rd_kafka_conf_destroy(probe);
		if (res != RD_KAFKA_CONF_OK) {
			snprintf(msg, sizeof msg, "[kafka] %s: %s", name, rkerr);
			return conf_fail(p, line, msg);
		}
		kp = &p->c->kafka_props[p->c->kafka_nprops++];
		snprintf(kp->name, sizeof kp->name, "%s", name + 6);
		snprintf(kp->value, sizeof kp->value, "%s", value);
		kp->line = line;
		return 1;
	}
	for (size_t i = 0; i < NKEYS; i++) {
		const struct conf_key *k = &conf_keys[i];
		char why[CONF_STR + 64];

		if (strcmp(k->section, section) != 0 || strcmp(k->name, name) != 0)
			continue;
		if (p->seen[i]) {
			snprintf(msg, sizeof msg, "[%s] %s: set twice", section, name);
			return conf_fail(p, line, msg);
		}
		p->seen[i] = 1;
		if (!conf_set(p->c, k, value, why, sizeof why))
			return conf_fail(p, line, why);
		p->c->key_line[i] = line;
		return 1;
	}
	snprintf(msg, sizeof msg, "[%s] unknown key \"%s\"", section, name);
	return conf_fail(p, line, msg);
}

/* Keys the environment overrides, and by which variable. */
static const struct {
	const char *section, *key, *env;
} conf_env_keys[] = {
	{ "database", "conninfo", "OUTBOX_PG" },
	{ "kafka", "brokers", "OUTBOX_KAFKA" },
	{ "kafka", "topic", "OUTBOX_TOPIC" },
	{ "consumer", "group_id", "OUTBOX_GROUP" },
};

/* The environment's overrides, through the key table's setter. */
static bool conf_env_apply(struct conf *c, char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof conf_env_keys / sizeof conf_env_keys[0]; i++) {
		const char *v = getenv(conf_env_keys[i].env);
		char why[CONF_STR + 64];

		if (v == NULL || *v == '\0')
			continue;
		for (size_t k = 0; k < NKEYS; k++)
			if (strcmp(conf_keys[k].section, conf_env_keys[i].section) == 0 &&
			    strcmp(conf_keys[k].name, conf_env_keys[i].key) == 0 &&
			    !conf_set(c, &conf_keys[k], v, why, sizeof why)) {
				snprintf(err, errlen, "%s: %s", conf_env_keys[i].env, why);
				return false;
			}
	}
	return true;
}

const char *conf_where(const struct conf *c, const char *section, const char *key,
		       char *buf, size_t buflen)
{
	for (size_t i = 0; i < sizeof conf_env_keys / sizeof conf_env_keys[0]; i++) {
		const char *v = getenv(conf_env_keys[i].env);

		if (strcmp(conf_env_keys[i].section, section) == 0 &&
		    strcmp(conf_env_keys[i].key, key) == 0 && v != NULL && *v != '\0') {
			snprintf(buf, buflen, "%s", conf_env_keys[i].env);
			return buf;
		}
	}
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(conf_keys[i].section, section) == 0 && strcmp(conf_keys[i].name, key) == 0 &&
		    c->key_line[i] > 0) {
			snprintf(buf, buflen, "%s:%d", c->path, c->key_line[i]);
			return buf;
		}
	snprintf(buf, buflen, "%s", c->path[0] != '\0' ? c->path : "the defaults");
	return buf;
}

/* A Kafka topic name: 1..249 of [a-zA-Z0-9._-], not "." or "..". */
static bool conf_topic_ok(const char *t, size_t max)
{
	size_t n = strlen(t);

	if (n == 0 || n > max || strcmp(t, ".") == 0 || strcmp(t, "..") == 0)
		return false;
	return strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* A file the process will create: its directory must exist. */
static bool conf_dir_ok(const char *file)
{
	char dir[CONF_STR];
	const char *slash = strrchr(file, '/');
	struct stat st;

	if (file[0] == '\0' || slash == NULL)
		return true;
	snprintf(dir, sizeof dir, "%.*s", slash == file ? 1 : (int)(slash - file), file);
	return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

/* What the key table cannot say: values that must make sense together
 * with the outside (libpq's parser, Kafka's topic rules, the filesystem). */
static bool conf_check(const struct conf *c, char *err, size_t errlen)
{
	char w[CONF_STR + 16], why[512];
	const char *conninfos[][2] = {
		{ "database", c->db_conninfo }, { "consumer", c->consumer_conninfo },
	};
	const char *files[][3] = {
		{ "supervisor", "audit_file", c->sup_audit_file },
		{ "relay", "publish_log", c->relay_publish_log },
		{ "supervisor", "pid_file", c->sup_pid_file },
	};

	for (size_t i = 0; i < 2; i++)
		if (!db_conninfo_check(conninfos[i][1], why, sizeof why)) {
			snprintf(err, errlen, "%s: [%s] conninfo: %s",
				 conf_where(c, conninfos[i][0], "conninfo", w, sizeof w),
				 conninfos[i][0], why);
			return false;
		}
	if (!conf_topic_ok(c->kafka_topic, 249 - 4)) {
		snprintf(err, errlen, "%s: [kafka] topic \"%s\": a Kafka topic is 1 to 245 of "
			 "a-z A-Z 0-9 . _ - (245: the dead-letter topic adds \".dlq\")",
			 conf_where(c, "kafka", "topic", w, sizeof w), c->kafka_topic);
		return false;
	}
	if (c->consumer_group[0] == '\0') {
		snprintf(err, errlen, "%s: [consumer] group_id is empty",
			 conf_where(c, "consumer", "group_id", w, sizeof w));
		return false;
	}
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		if (!conf_dir_ok(files[i][2])) {
			snprintf(err, errlen, "%s: [%s] %s \"%s\": its directory does not exist",
				 conf_where(c, files[i][0], files[i][1], w, sizeof w), files[i][0],
				 files[i][1], files[i][2]);
			return false;
		}
	return true;
}

bool conf_load(struct conf *c, const char *path, char *err, size_t errlen)
{
	struct conf_parse p;
	FILE *f;
	int rc;
	bool explicit_path = path != NULL;

	conf_defaults(c);
	if (path == NULL) {
		path = getenv("OUTBOX_CONF");
		explicit_path = path != NULL && *path != '\0';
		if (!explicit_path)
			path = "conf/outboxd.conf";
	}
	f = fopen(path, "r");
	if (f == NULL) {
		if (explicit_path || errno != ENOENT) {
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
			return false;
		}
	} else {
		struct stat st;

		if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
			snprintf(err, errlen, "%s: not a configuration file (%s)", path,
				 S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
			fclose(f);
			return false;
		}
		memset(&p, 0, sizeof p);
		p.c = c;
		p.path = path;
		p.err = err;
		p.errlen = errlen;
		p.f = f;
		rc = ini_parse_stream(conf_reader, &p, conf_line_cb, &p);
		fclose(f);
		free(p.buf);
		free(p.long_value);
		/* Report whichever problem comes first in the file: inih goes on
		 * past a syntax error, so a later line may have failed too. */
		if (p.failed && (rc <= 0 || p.fail_line <= rc))
			return false;
		if (rc != 0) {
			/* inih reports lines it could not parse (no '=', no ']'). */
			snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)",
				 path, rc);
			return false;
		}
		snprintf(c->path, sizeof c->path, "%s", path);
	}
	if (!conf_env_apply(c, err, errlen))
		return false;
	snprintf(c->kafka_dlq_topic, sizeof c->kafka_dlq_topic, "%s.dlq", c->kafka_topic);
	return conf_check(c, err, errlen);
}

const char *conf_sink_conninfo(const struct conf *c)
{
	return c->consumer_conninfo[0] != '\0' ? c->consumer_conninfo : c->db_conninfo;
}
