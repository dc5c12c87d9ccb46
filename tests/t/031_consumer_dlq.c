/* What the consumer calls poison beyond parsing (apply_check: event types,
 * payload shape, payload against headers) and the dead-letter helpers
 * (headers to JSON and back, failure times). No services. Links the
 * consumer's modules by including them (the Makefile's unit rule links
 * common/ only). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "apply.c"
#include "audit.c"
#include "dlq.c"
#include "tap.h"

#define UUID1 "0b6f2a4e-8d51-4c3e-9a7b-2f1e5d6c7a80"

/* Parse an event of type type with payload, then check it against types. */
static bool check(const char *type, const char *payload, const char *types, char *why)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(4);
	struct apply_msg m;
	bool r;

	rd_kafka_header_add(h, "event_id", -1, UUID1, -1);
	rd_kafka_header_add(h, "aggregate_seq", -1, "2", -1);
	if (type != NULL)
		rd_kafka_header_add(h, "event_type", -1, type, -1);
	r = apply_parse_parts("17", 2, h, payload, payload ? strlen(payload) : 0, 0, 1, &m, why,
			      256) &&
	    apply_check(&m, types, why, 256);
	rd_kafka_headers_destroy(h);
	return r;
}

int main(void)
{
	char why[256], ts[40];

	ok(check("order.paid", "{\"order_id\":\"17\",\"seq\":2}", "*", why), "* accepts any type");
	ok(check("order.paid", "{}", "order.*", why), "order.* accepts order.paid");
	ok(check("order.paid", "{}", "invoice.sent, order.paid", why), "a listed type, spaces ok");
	ok(!check("order.paidx", "{}", "order.paid", why), "an exact entry is not a prefix");
	ok(!check("invoice.sent", "{}", "order.*", why), "an unlisted type is poison");
	is_str(why, "unknown event type \"invoice.sent\"", "and says which");
	ok(!check(NULL, "{}", "*", why), "no event_type header is poison, even with *");
	is_str(why, "missing event_type header", "and says so");
	ok(!check("order.paid", "[1]", "*", why), "a JSON array payload is poison");
	is_str(why, "payload is not a JSON object", "and says so");
	ok(!check("order.paid", "{\"order_id\":\"18\"}", "*", why), "payload order_id != key");
	is_str(why, "payload order_id disagrees with the key", "and says so");
	ok(!check("order.paid", "{\"seq\":3}", "*", why), "payload seq != header");
	is_str(why, "payload seq disagrees with the aggregate_seq header", "and says so");
	ok(!check("order.paid", "{\"seq\":\"2\"}", "*", why), "payload seq of the wrong type");

	{
		rd_kafka_headers_t *h = rd_kafka_headers_new(4), *back;
		const void *v;
		size_t n;
		char *js;

		rd_kafka_header_add(h, "event_id", -1, UUID1, -1);
		rd_kafka_header_add(h, "quote", -1, "a \"b\"", -1);
		rd_kafka_header_add(h, "bin", -1, "\xff\xfe", 2);
		rd_kafka_header_add(h, "event_id", -1, "second", -1);
		js = dlq_headers_json(h);
		is_str(js, "[[\"event_id\",\"" UUID1 "\"],[\"quote\",\"a \\\"b\\\"\"],[\"bin\",null],"
			   "[\"event_id\",\"second\"]]",
		       "headers to JSON: wire order, repeats kept, non-UTF-8 as null");
		back = dlq_headers_parse(js);
		ok(back != NULL, "and back");
		ok(rd_kafka_header_get_last(back, "event_id", &v, &n) == 0 && n == 6 &&
			   memcmp(v, "second", 6) == 0, "the last event_id wins, as on the wire");
		ok(rd_kafka_header_get_last(back, "quote", &v, &n) == 0 && n == 5 &&
			   memcmp(v, "a \"b\"", 5) == 0, "quotes survive");
		ok(rd_kafka_header_get_last(back, "bin", &v, &n) == 0 && v == NULL,
		   "a null value comes back as a header without value");
		rd_kafka_headers_destroy(back);
		free(js);
		rd_kafka_headers_destroy(h);
		ok(dlq_headers_json(NULL) == NULL, "no headers: NULL");
		back = dlq_headers_parse(NULL);
		ok(back != NULL && rd_kafka_header_cnt(back) == 0, "NULL parses as no headers");
		rd_kafka_headers_destroy(back);
		ok(dlq_headers_parse("{\"a\":1}") == NULL, "an object is not headers");
	}

	dlq_iso8601(1767322445000006LL, ts, sizeof ts);
	is_str(ts, "2026-01-02T02:54:05.000006Z", "failure times in ISO 8601 UTC with microseconds");
	return done_testing();
}
