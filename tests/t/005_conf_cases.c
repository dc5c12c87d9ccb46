/* The configuration parser, case by case: each input with the outcome it
 * must have (loads, or exit 2 with FILE:LINE and a phrase of the message).
 * Add a row for every case found wrong; the count is printed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "tap.h"

struct conf_case {
	const char *name;
	const char *text;   /* "%L" is replaced by a long filler, see expand() */
	int line;           /* 0: must load; else the line the error names */
	const char *needle; /* in the error (or, loading, checked by the caller) */
};

static char path[] = "/tmp/outboxd-conf-cases-XXXXXX";

/* %L: 300 characters; %H: 3,000; %X: 20,000 (longer than any line may be). */
static char *expand(const char *text)
{
	size_t cap = strlen(text) + 30000, o = 0;
	char *out = malloc(cap);

	for (const char *p = text; *p != '\0'; p++) {
		size_t n = 0;

		if (p[0] == '%' && (p[1] == 'L' || p[1] == 'H' || p[1] == 'X')) {
			n = p[1] == 'L' ? 300 : p[1] == 'H' ? 3000 : 20000;
			memset(out + o, 'a', n);
			o += n;
			p++;
			continue;
		}
		out[o++] = *p;
	}
	out[o] = '\0';
	return out;
}

static bool load(const char *text, size_t len, struct conf *c, char *err, size_t errlen)
{
	FILE *f = fopen(path, "w");

	fwrite(text, 1, len, f);
	fclose(f);
	return conf_load(c, path, err, errlen);
}

static void run_case(const struct conf_case *k)
{
	static struct conf c;
	char *text = expand(k->text), err[2048] = "", want[600], desc[300];
	bool loaded = load(text, strlen(text), &c, err, sizeof err);

	snprintf(want, sizeof want, "%s:%d: ", path, k->line);
	if (k->line == 0) {
		snprintf(desc, sizeof desc, "loads: %s", k->name);
		if (!ok(loaded, desc))
			diag("error: %s", err);
	} else {
		snprintf(desc, sizeof desc, "exit 2 at line %d: %s", k->line, k->name);
		if (!ok(!loaded && strncmp(err, want, strlen(want)) == 0 &&
			strstr(err, k->needle) != NULL, desc))
			diag("error was \"%s\" (wanted \"%s...%s\")", err, want, k->needle);
	}
	free(text);
}

static const struct conf_case cases[] = {
	/* Refused although valid, before. */
	{ "a 300-character conninfo", "[database]\nconninfo = host=db sslrootcert=/%L\n", 0, "" },
	{ "a 3,000-character value", "[consumer]\nevent_types = x%H\n", 0, "" },
	{ "a long comment line", "; %L\n[relay]\nbatch_size = 7\n", 0, "" },
	{ "a long line with an inline comment", "[database]\nconninfo = host=%L ; why\n", 0, "" },
	{ "CRLF line ends", "[relay]\r\nbatch_size = 7\r\n", 0, "" },
	/* Accepted although wrong, before. */
	{ "a line longer than 16384 bytes", "[database]\nconninfo = host=%X\n", 2,
	  "line longer than 16384 bytes" },
	{ "a key longer than a line may hold", "[relay]\n%L = 1\n", 2, "key too long" },
	{ "a long section header", "[%L]\n", 1, "line too long" },
	{ "conninfo with an unknown keyword", "[relay]\nbatch_size = 5\n[database]\n"
	  "conninfo = host=db frobnicate=1\n", 4, "[database] conninfo: invalid connection option" },
	{ "conninfo with an unterminated quote", "[database]\nconninfo = host=db password='x\n", 2,
	  "[database] conninfo: unterminated quoted string" },
	{ "a URI with an unknown parameter", "[database]\nconninfo = postgresql://h/x?frobnicate=1\n",
	  2, "[database] conninfo: invalid URI query parameter" },
	{ "a bad [consumer] conninfo", "[consumer]\nconninfo = dbname='x\n", 2,
	  "[consumer] conninfo" },
	{ "a topic with a space", "[kafka]\ntopic = my topic\n", 2, "[kafka] topic \"my topic\"" },
	{ "a topic with a slash", "[kafka]\ntopic = a/b\n", 2, "[kafka] topic" },
	{ "an empty topic", "[kafka]\ntopic =\n", 2, "[kafka] topic \"\"" },
	{ "a topic named ..", "[kafka]\ntopic = ..\n", 2, "[kafka] topic" },
	{ "a 300-character topic", "[kafka]\ntopic = %L\n", 2, "[kafka] topic" },
	{ "an empty group id", "[consumer]\n\ngroup_id =\n", 3, "[consumer] group_id is empty" },
	{ "a librdkafka property set twice", "[kafka]\nkafka.acks = all\nkafka.linger.ms = 5\n"
	  "kafka.acks = 1\n", 4, "[kafka] kafka.acks: set twice (first on line 2)" },
	{ "audit_file in a missing directory", "[supervisor]\naudit_file = /nonexistent/a.jsonl\n",
	  2, "[supervisor] audit_file \"/nonexistent/a.jsonl\": its directory does not exist" },
	{ "publish_log in a missing directory", "[relay]\npublish_log = /nonexistent/p.log\n", 2,
	  "[relay] publish_log" },
	{ "pid_file in a missing directory", "[supervisor]\npid_file = /nonexistent/x.pid\n", 2,
	  "[supervisor] pid_file" },
	/* Refused before, and still. */
	{ "an unknown section", "[bogus]\nkey = 1\n", 2, "unknown section [bogus]" },
	{ "an unknown key", "[relay]\nfrobnicate = 1\n", 2, "unknown key \"frobnicate\"" },
	{ "a key set twice", "[relay]\nmode = poll\nmode = cdc\n", 3, "set twice" },
	{ "a line without =", "[relay]\nno equals\n", 2, "syntax error" },
	{ "an out-of-range value", "[relay]\nbatch_size = 0\n", 2, "out of range" },
};

int main(void)
{
	struct conf c;
	char err[1024], dir[] = "/tmp/outboxd-conf-dir-XXXXXX", text[600];
	int fd = mkstemp(path), n = (int)(sizeof cases / sizeof cases[0]);

	close(fd);
	unsetenv("OUTBOX_PG");
	unsetenv("OUTBOX_KAFKA");
	unsetenv("OUTBOX_TOPIC");
	unsetenv("OUTBOX_GROUP");
	unsetenv("OUTBOX_CONF");
	diag("%d table cases, and the checks below them", n);
	for (int i = 0; i < n; i++)
		run_case(&cases[i]);

	/* What the table cannot say. */
	ok(load("[database]\nconninfo = host=db sslrootcert=/x\n", 44, &c, err, sizeof err) &&
	   strcmp(c.db_conninfo, "host=db sslrootcert=/x") == 0, "a short conninfo reads back");
	snprintf(text, sizeof text, "[relay]\npublish_log = /tmp/%0210d batch_size = 1\n", 0);
	ok(load(text, strlen(text), &c, err, sizeof err) && c.relay_batch_size == 500 &&
	   strstr(c.relay_publish_log, " batch_size = 1") != NULL,
	   "a 240-byte line is one value: its tail sets nothing");
	ok(load("[database]\nconninfo = host=x ; the primary\n", 43, &c, err, sizeof err) &&
	   strcmp(c.db_conninfo, "host=x") == 0, "an inline comment is not part of the value");
	{
		char *t = expand("[database]\nconninfo = host=%L ; the primary\n");

		ok(load(t, strlen(t), &c, err, sizeof err) && strlen(c.db_conninfo) == 305 &&
		   strstr(c.db_conninfo, ";") == NULL, "  nor of a long one");
		free(t);
	}
	ok(!load("[kafka]\ntopic = a\0b\n", 20, &c, err, sizeof err) &&
	   strstr(err, ":2: NUL byte in the line") != NULL, "a NUL byte in a value: exit 2, line 2");
	diag("%s", err);
	ok(mkdtemp(dir) != NULL, "a directory to give as the file");
	ok(!conf_load(&c, dir, err, sizeof err) && strstr(err, "not a configuration file (a directory)"),
	   "a directory as the configuration file is refused");
	rmdir(dir);
	setenv("OUTBOX_PG", "host=db frobnicate=1", 1);
	ok(!load("[relay]\nbatch_size = 5\n", 23, &c, err, sizeof err) &&
	   strncmp(err, "OUTBOX_PG: [database] conninfo:", 31) == 0,
	   "a bad OUTBOX_PG is named as such");
	diag("%s", err);
	unsetenv("OUTBOX_PG");
	setenv("OUTBOX_TOPIC", "bad topic", 1);
	ok(!load("[relay]\nbatch_size = 5\n", 23, &c, err, sizeof err) &&
	   strncmp(err, "OUTBOX_TOPIC: [kafka] topic", 27) == 0, "so is a bad OUTBOX_TOPIC");
	unsetenv("OUTBOX_TOPIC");
	unlink(path);
	return done_testing();
}
