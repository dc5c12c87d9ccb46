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
		back = dlq_headers_parse(js, false);
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
		back = dlq_headers_parse(NULL, false);
		ok(back != NULL && rd_kafka_header_cnt(back) == 0, "NULL parses as no headers");
		rd_kafka_headers_destroy(back);
		ok(dlq_headers_parse("{\"a\":1}", false) == NULL, "an object is not headers");
	}

	{
		/* Bytes that are not text (issue 17): NUL, stray bytes, no value. */
		rd_kafka_headers_t *h = rd_kafka_headers_new(4), *back;
		const void *v;
		size_t n;
		char *js, *hx;

		rd_kafka_header_add(h, "nul", -1, "a\0b", 3);
		rd_kafka_header_add(h, "bin", -1, "\xff\xfe", 2);
		rd_kafka_header_add(h, "none", -1, NULL, 0);
		rd_kafka_header_add(h, "empty", -1, "", 0);
		js = dlq_headers_json(h);
		is_str(js, "[[\"nul\",null],[\"bin\",null],[\"none\",null],[\"empty\",\"\"]]",
		       "readable headers: a NUL byte is null too (jsonb refuses \\u0000)");
		hx = dlq_headers_hex(h);
		is_str(hx, "[[\"6e756c\",\"610062\"],[\"62696e\",\"fffe\"],[\"6e6f6e65\",null],"
			   "[\"656d707479\",\"\"]]", "hex headers: every byte");
		back = dlq_headers_parse(hx, true);
		ok(back != NULL && rd_kafka_header_cnt(back) == 4, "and back, all four");
		ok(back != NULL && rd_kafka_header_get_last(back, "nul", &v, &n) == 0 && n == 3 &&
			   memcmp(v, "a\0b", 3) == 0, "the NUL byte survives");
		ok(back != NULL && rd_kafka_header_get_last(back, "bin", &v, &n) == 0 && n == 2 &&
			   memcmp(v, "\xff\xfe", 2) == 0, "so do stray bytes");
		ok(back != NULL && rd_kafka_header_get_last(back, "none", &v, &n) == 0 && v == NULL,
		   "no value stays no value");
		ok(back != NULL && rd_kafka_header_get_last(back, "empty", &v, &n) == 0 && n == 0 &&
			   v != NULL, "an empty value stays empty");
		if (back != NULL)
			rd_kafka_headers_destroy(back);
		ok(dlq_headers_parse("[[\"6e\",\"zz\"]]", true) == NULL, "hex that is not: refused");
		ok(dlq_headers_parse("[[\"6e\",1]]", true) == NULL, "a value that is no string: refused");
		free(js);
		free(hx);
		rd_kafka_headers_destroy(h);
	}

	{
		/* A key that is not text is poison at parse; so is such an event_type. */
		rd_kafka_headers_t *h = rd_kafka_headers_new(4);
		struct apply_msg m;

		rd_kafka_header_add(h, "event_id", -1, UUID1, -1);
		rd_kafka_header_add(h, "aggregate_seq", -1, "2", -1);
		rd_kafka_header_add(h, "event_type", -1, "order.\xc3(", -1);
		ok(!apply_parse_parts("K\xff", 2, h, "{}", 2, 0, 1, &m, why, sizeof why),
		   "a key that is not UTF-8 is poison");
		is_str(why, "key is not UTF-8 text (2 bytes)", "and says so");
		is_str(m.aggregate_id, "", "nothing of it is kept as the order id");
		ok(apply_parse_parts("K1", 2, h, "{}", 2, 0, 1, &m, why, sizeof why) &&
			   !apply_check(&m, "*", why, sizeof why), "an event_type not UTF-8 is poison");
		is_str(why, "event_type header is not UTF-8 text (8 bytes)", "and says so");
		rd_kafka_headers_destroy(h);
	}

	{
		char out[32];

		ok(util_utf8_text("caf\xc3\xa9", 5), "UTF-8 is text");
		ok(!util_utf8_text("a\0b", 3), "a NUL byte is not");
		ok(!util_utf8_text("\xc0\xaf", 2), "an overlong form is not");
		ok(!util_utf8_text("\xed\xa0\x80", 3), "a surrogate is not");
		ok(!util_utf8_text("\xc3", 1), "a cut character is not");
		is_str(util_utf8_escape("K\xff\xfe-\xc3\xa9\n", 7, out, sizeof out),
		       "K\\xff\\xfe-\xc3\xa9\\x0a", "escaped: stray bytes and controls as \\xNN");
		is_str(util_utf8_escape("0123456789abcdefghij0123456789abcdef", 36, out, 16),
		       "0123456789ab...", "cut to fit, with ...");
		is_str(util_utf8_escape("\xff\xff\xff\xff", 4, out, 8), "\\xff...",
		       "an escape is never cut");
	}

	dlq_iso8601(1767322445000006LL, ts, sizeof ts);
	is_str(ts, "2026-01-02T02:54:05.000006Z", "failure times in ISO 8601 UTC with microseconds");
	return done_testing();
}
