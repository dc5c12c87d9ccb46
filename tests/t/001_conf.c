/* Config parsing: defaults, good values, and malformed files rejected with
 * FILE:LINE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "tap.h"

static char path[] = "/tmp/outboxd-conf-XXXXXX";

static bool load_text(struct conf *c, const char *text, char *err, size_t errlen)
{
	FILE *f = fopen(path, "w");

	fputs(text, f);
	fclose(f);
	return conf_load(c, path, err, errlen);
}

/* The error must name our file and the given line. */
static void rejects(const char *text, int line, const char *needle, const char *desc)
{
	struct conf c;
	char err[1024] = "", want[512];
	bool loaded = load_text(&c, text, err, sizeof err);

	snprintf(want, sizeof want, "%s:%d: ", path, line);
	ok(!loaded && strncmp(err, want, strlen(want)) == 0 && strstr(err, needle) != NULL, desc);
	if (loaded || strncmp(err, want, strlen(want)) != 0 || strstr(err, needle) == NULL)
		diag("error was: %s (wanted prefix %s and \"%s\")", err, want, needle);
}

int main(void)
{
	struct conf c;
	char err[1024];
	int fd = mkstemp(path);

	close(fd);
	unsetenv("OUTBOX_PG");
	unsetenv("OUTBOX_KAFKA");
	unsetenv("OUTBOX_TOPIC");
	unsetenv("OUTBOX_CONF");

	conf_defaults(&c);
	is_int(c.relay_poll_interval_ms, 500, "default poll interval is 500 ms");
	is_str(c.kafka_topic, "orders.events", "default topic");
	ok(c.relay_notify, "notify defaults to on");
	is_int(c.relay_mode, RELAY_POLL, "mode defaults to poll");

	ok(load_text(&c,
		     "; comment\n[database]\nconninfo = host=db password=secret\n"
		     "[kafka]\nbrokers = k1:9092,k2:9092\ntopic = t1\nkafka.compression.type = lz4\n"
		     "[relay]\nmode = cdc\npoll_interval_ms = 50\nnotify = off\nbatch_size = 1000\n"
		     "[consumer]\ngroup_id = g1\n[supervisor]\naudit_file = /tmp/a.jsonl\n",
		     err, sizeof err),
	   "a full valid file loads");
	is_str(c.db_conninfo, "host=db password=secret", "conninfo read");
	is_str(c.kafka_brokers, "k1:9092,k2:9092", "brokers read");
	is_str(c.kafka_dlq_topic, "t1.dlq", "dead-letter topic is topic + .dlq");
	is_int(c.kafka_nprops, 1, "one kafka.* passthrough property");
	is_str(c.kafka_props[0].name, "compression.type", "passthrough name without prefix");
	is_int(c.kafka_props[0].line, 7, "passthrough remembers its line");
	is_int(c.relay_mode, RELAY_CDC, "mode = cdc");
	is_int(c.relay_poll_interval_ms, 50, "poll_interval_ms = 50");
	ok(!c.relay_notify, "notify = off");
	is_str(conf_sink_conninfo(&c), "host=db password=secret", "sink conninfo defaults to the database's");

	setenv("OUTBOX_PG", "dbname=fromenv", 1);
	setenv("OUTBOX_KAFKA", "envbroker:1", 1);
	setenv("OUTBOX_TOPIC", "envtopic", 1);
	ok(load_text(&c, "[database]\nconninfo = dbname=file\n", err, sizeof err), "loads with env set");
	is_str(c.db_conninfo, "dbname=fromenv", "OUTBOX_PG overrides the file");
	is_str(c.kafka_brokers, "envbroker:1", "OUTBOX_KAFKA overrides");
	is_str(c.kafka_dlq_topic, "envtopic.dlq", "OUTBOX_TOPIC overrides, dlq follows");
	unsetenv("OUTBOX_PG");
	unsetenv("OUTBOX_KAFKA");
	unsetenv("OUTBOX_TOPIC");

	/* Malformed files: each names the file and the offending line. */
	rejects("[database]\nconninfo = x\n[bogus]\nkey = 1\n", 4, "unknown section [bogus]",
		"unknown section");
	rejects("[relay]\nmode = poll\nfrobnicate = 1\n", 3, "unknown key \"frobnicate\"",
		"unknown key");
	rejects("[relay]\npoll_interval_ms = fast\n", 2, "is not an integer", "non-integer value");
	rejects("[relay]\n\n\nbatch_size = 0\n", 4, "out of range", "value below range");
	rejects("[relay]\nbatch_size = 99999999\n", 2, "out of range", "value above range");
	rejects("[relay]\nnotify = maybe\n", 2, "is not on/off", "bad boolean");
	rejects("[relay]\nmode = push\n", 2, "is not poll or cdc", "bad mode");
	rejects("[kafka]\nkafka.no.such.property = 1\n", 2, "No such configuration property",
		"librdkafka rejects an unknown passthrough property, with our line");
	rejects("[kafka]\nkafka.acks = sometimes\n", 2, "kafka.acks",
		"librdkafka rejects a bad passthrough value");
	rejects("[relay]\nthis line has no equals sign\n", 2, "syntax error", "line without =");
	rejects("[relay\nmode = poll\n", 1, "syntax error", "unclosed section header");
	rejects("mode = poll\n", 1, "unknown section []", "key before any section");
	rejects("[relay]\nmode = poll\nmode = cdc\n", 3, "set twice", "key set twice");
	rejects("[relay]\npoll_interval_ms = 10ms\n", 2, "is not an integer", "trailing garbage");

	ok(!conf_load(&c, "/nonexistent/outboxd.conf", err, sizeof err) &&
		   strstr(err, "/nonexistent/outboxd.conf: cannot open") != NULL,
	   "an explicit missing file is an error");
	unlink(path);
	return done_testing();
}
