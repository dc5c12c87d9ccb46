/* The consumer's message parsing (what is an event, what is poison) and its
 * audit-file line format. No services. Links consumer/apply.c and
 * consumer/audit.c by including them (the Makefile's unit rule links
 * common/ only). */
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apply.c"
#include "audit.c"
#include "tap.h"

#define UUID1 "0b6f2a4e-8d51-4c3e-9a7b-2f1e5d6c7a80"

static rd_kafka_headers_t *hdrs(const char *eid, const char *seq)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(4);

	if (eid != NULL)
		rd_kafka_header_add(h, "event_id", -1, eid, -1);
	rd_kafka_header_add(h, "event_type", -1, "order.paid", -1);
	rd_kafka_header_add(h, "aggregate_type", -1, "order", -1);
	if (seq != NULL)
		rd_kafka_header_add(h, "aggregate_seq", -1, seq, -1);
	return h;
}

static bool parse(const char *key, const char *eid, const char *seq, const char *payload,
		  struct apply_msg *m, char *why)
{
	rd_kafka_headers_t *h = hdrs(eid, seq);
	bool r = apply_parse_parts(key, key ? strlen(key) : 0, h, payload,
				   payload ? strlen(payload) : 0, 7, 42, m, why, 256);

	rd_kafka_headers_destroy(h);
	return r;
}

int main(void)
{
	struct apply_msg m;
	char why[256], *line;
	json_t *j;

	ok(parse("17", UUID1, "2", "{\"order_id\":\"17\",\"status\":\"paid\",\"total_cents\":1234}",
		 &m, why), "a complete event parses");
	is_str(m.aggregate_id, "17", "key is the aggregate id");
	is_str(m.event_id, UUID1, "event id");
	is_int(m.seq, 2, "seq");
	is_str(m.event_type, "order.paid", "event type");
	is_str(m.status, "paid", "status from the payload");
	ok(m.has_total && m.total_cents == 1234, "total from the payload");
	is_int(m.partition, 7, "partition");
	is_int(m.offset, 42, "offset");

	ok(apply_check(&m, "*", why, sizeof why), "and passes apply_check");
	ok(parse("17", UUID1, "3", "not json", &m, why), "a non-JSON payload parses (headers read)");
	ok(m.status[0] == '\0' && !m.has_total, "with no status or total");
	ok(!apply_check(&m, "*", why, sizeof why), "but apply_check calls it poison");
	is_str(why, "payload is not JSON", "and says why");
	ok(parse("17", UUID1, "3", NULL, &m, why), "an empty payload parses");
	ok(!apply_check(&m, "*", why, sizeof why), "and is poison");
	is_str(why, "no payload", "and says why");

	ok(!parse(NULL, UUID1, "1", "{}", &m, why), "no key: poison");
	is_str(why, "no key (aggregate_id)", "and says so");
	is_int(m.offset, 42, "poison keeps its offset");
	ok(!parse("17", NULL, "1", "{}", &m, why), "no event_id: poison");
	ok(!parse("17", "not-a-uuid", "1", "{}", &m, why), "malformed event_id: poison");
	ok(!parse("17", UUID1 "0", "1", "{}", &m, why), "too long event_id: poison");
	ok(m.event_id[0] == '\0', "a malformed event id is not kept");
	ok(!parse("17", UUID1, NULL, "{}", &m, why), "no aggregate_seq: poison");
	ok(!parse("17", UUID1, "0", "{}", &m, why), "seq 0: poison");
	ok(!parse("17", UUID1, "-3", "{}", &m, why), "negative seq: poison");
	ok(!parse("17", UUID1, "2x", "{}", &m, why), "seq with junk: poison");
	ok(!parse("17", UUID1, "99999999999999999999", "{}", &m, why), "seq overflow: poison");
	is_str(m.aggregate_id, "17", "fields read before the problem are kept");

	{
		struct audit_line l = {
			.detected_at = "2026-01-02T03:04:05.000006Z", .kind = "gap",
			.aggregate_id = "17", .expected_seq = 3, .got_seq = 5, .event_id = UUID1,
			.consumer_id = 2, .kafka_partition = 0, .kafka_offset = 9,
		};
		char path[] = "/tmp/outboxd-030.XXXXXX", buf[2048], err[256];
		int fd = mkstemp(path);
		struct audit *a;
		ssize_t n;

		line = audit_format(&l);
		j = line ? json_loads(line, 0, NULL) : NULL;
		ok(j != NULL && strchr(line, '\n') == NULL, "a line is one JSON object");
		is_str(json_string_value(json_object_get(j, "kind")), "gap", "kind");
		is_int(json_integer_value(json_object_get(j, "expected_seq")), 3, "expected_seq");
		is_int(json_integer_value(json_object_get(j, "got_seq")), 5, "got_seq");
		is_int(json_integer_value(json_object_get(j, "kafka_partition")), 0, "partition 0 is 0");
		is_int(json_integer_value(json_object_get(j, "kafka_offset")), 9, "kafka_offset");
		is_str(json_string_value(json_object_get(j, "detected_at")),
		       "2026-01-02T03:04:05.000006Z", "detected_at");
		ok(json_object_get(j, "detail") == NULL, "no detail key when there is none");
		ok(strncmp(line, "{\"detected_at\":", 15) == 0, "fields in the documented order");
		json_decref(j);
		free(line);

		l.expected_seq = -1;
		l.aggregate_id = NULL;
		l.detail = "no key";
		line = audit_format(&l);
		j = line ? json_loads(line, 0, NULL) : NULL;
		ok(json_is_null(json_object_get(j, "expected_seq")), "unknown numbers are null");
		ok(json_is_null(json_object_get(j, "aggregate_id")), "unknown strings are null");
		is_str(json_string_value(json_object_get(j, "detail")), "no key", "detail");
		json_decref(j);
		free(line);

		close(fd);
		a = audit_open(path, err, sizeof err);
		ok(a != NULL, "audit file opens");
		ok(a != NULL && audit_write(a, &l, err, sizeof err), "write one line");
		ok(a != NULL && audit_write(a, &l, err, sizeof err), "write another");
		audit_close(a);
		fd = open(path, O_RDONLY);
		n = read(fd, buf, sizeof buf - 1);
		close(fd);
		unlink(path);
		buf[n > 0 ? n : 0] = '\0';
		{
			int lines = 0;

			for (char *p = buf; *p; p++)
				lines += *p == '\n';
			is_int(lines, 2, "two newline-terminated lines in the file");
		}
		a = audit_open("/nonexistent-dir/x.jsonl", err, sizeof err);
		ok(a == NULL && strstr(err, "/nonexistent-dir/x.jsonl") != NULL,
		   "an unwritable audit file is an error naming it");
		a = audit_open("", err, sizeof err);
		ok(a != NULL && audit_write(a, &l, err, sizeof err), "an empty path writes nothing");
		audit_close(a);
	}
	return done_testing();
}
