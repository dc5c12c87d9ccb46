/* common/kafka's message codec: kafka_event_decode reads the contract's
 * message (CONTRACT.md, Kafka: key = aggregate_id, headers event_id,
 * event_type, aggregate_type, aggregate_seq), with the headers built here
 * by their contract names, every check and its text; and what
 * kafka_produce_event writes decodes to what it was given (through
 * librdkafka's in-process mock cluster: no services). */
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "kafka.h"
#include "tap.h"

#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h (kafka.h) */

#define UUID1 "0b6f2a4e-8d51-4c3e-9a7b-2f1e5d6c7a80"

/* Headers by the contract's names; a NULL value leaves the header out. */
static rd_kafka_headers_t *hdrs(const char *eid, const char *type, const char *agg_type,
				const char *seq)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(4);

	if (eid != NULL)
		rd_kafka_header_add(h, "event_id", -1, eid, -1);
	if (type != NULL)
		rd_kafka_header_add(h, "event_type", -1, type, -1);
	if (agg_type != NULL)
		rd_kafka_header_add(h, "aggregate_type", -1, agg_type, -1);
	if (seq != NULL)
		rd_kafka_header_add(h, "aggregate_seq", -1, seq, -1);
	return h;
}

/* Decode key (NUL-terminated) and h, then destroy h; why gets the reason. */
static bool decode(const char *key, rd_kafka_headers_t *h, struct kafka_envelope *ev, char *why)
{
	bool r;

	why[0] = '\0';
	r = kafka_event_decode(key, key != NULL ? strlen(key) : 0, h, ev, why, 256);
	if (h != NULL)
		rd_kafka_headers_destroy(h);
	return r;
}

/* decode must refuse with exactly want. */
static void refused(const char *key, rd_kafka_headers_t *h, const char *want, const char *desc)
{
	struct kafka_envelope ev;
	char why[256], d[256];

	snprintf(d, sizeof d, "%s: not an event", desc);
	ok(!decode(key, h, &ev, why), d);
	is_str(why, want, "  and says so");
}

static void decoder(void)
{
	struct kafka_envelope ev;
	char why[256], longer[300];

	ok(decode("17", hdrs(UUID1, "order.paid", "order", "2"), &ev, why), "a complete event");
	is_str(ev.aggregate_id, "17", "  the key is the aggregate id");
	is_str(ev.event_id, UUID1, "  event_id");
	is_str(ev.event_type, "order.paid", "  event_type");
	is_str(ev.aggregate_type, "order", "  aggregate_type");
	is_int(ev.aggregate_seq, 2, "  aggregate_seq");
	is_str(ev.event_type_problem, "", "  no problem");

	is_str(KAFKA_HEADER_EVENT_ID, "event_id", "the header names are the contract's: event_id");
	is_str(KAFKA_HEADER_EVENT_TYPE, "event_type", "  event_type");
	is_str(KAFKA_HEADER_AGGREGATE_TYPE, "aggregate_type", "  aggregate_type");
	is_str(KAFKA_HEADER_AGGREGATE_SEQ, "aggregate_seq", "  aggregate_seq");

	{
		rd_kafka_headers_t *h = hdrs("not-a-uuid", "order.placed", "order", "1");

		rd_kafka_header_add(h, "event_id", -1, UUID1, -1);
		rd_kafka_header_add(h, "aggregate_seq", -1, "7", -1);
		ok(decode("17", h, &ev, why) && strcmp(ev.event_id, UUID1) == 0 &&
			   ev.aggregate_seq == 7, "a repeated header: the last one counts");
	}
	ok(decode("17", hdrs(UUID1, NULL, NULL, "1"), &ev, why), "no event_type or aggregate_type: "
	   "still an event (the consumer's check decides)");
	ok(ev.event_type[0] == '\0' && ev.aggregate_type[0] == '\0' &&
		   ev.event_type_problem[0] == '\0', "  both empty, no problem");
	ok(decode("17", hdrs(UUID1, "order.\xc3(", "order", "1"), &ev, why), "an event_type that "
	   "is not UTF-8: still an event");
	is_str(ev.event_type, "", "  the type is not kept");
	is_str(ev.event_type_problem, "event_type header is not UTF-8 text (8 bytes)",
	       "  the problem says why");
	memset(longer, 'x', 200);
	longer[200] = '\0';
	ok(decode("17", hdrs(UUID1, longer, longer, "1"), &ev, why) &&
		   strcmp(ev.event_type_problem, "event_type header too long (200 bytes)") == 0 &&
		   ev.aggregate_type[0] == '\0', "a too long event_type (and aggregate_type): said");

	refused(NULL, hdrs(UUID1, "t", "order", "1"), "no key (aggregate_id)", "no key");
	refused("", hdrs(UUID1, "t", "order", "1"), "no key (aggregate_id)", "an empty key");
	memset(longer, 'k', 256);
	longer[256] = '\0';
	refused(longer, hdrs(UUID1, "t", "order", "1"), "unusable key (256 bytes)", "a too long key");
	{
		struct kafka_envelope e2;

		ok(!kafka_event_decode("a\0b", 3, NULL, &e2, why, sizeof why) &&
			   strcmp(why, "unusable key (3 bytes)") == 0, "a key with a NUL byte: unusable");
	}
	refused("K\xff", hdrs(UUID1, "t", "order", "1"), "key is not UTF-8 text (2 bytes)",
		"a key that is not UTF-8");
	refused("17", NULL, "missing or malformed event_id header", "no headers at all");
	refused("17", hdrs(NULL, "t", "order", "1"), "missing or malformed event_id header",
		"no event_id");
	refused("17", hdrs("", "t", "order", "1"), "missing or malformed event_id header",
		"an empty event_id");
	refused("17", hdrs("0b6f2a4e-8d51-4c3e-9a7b-2f1e5d6c7a8g", "t", "order", "1"),
		"missing or malformed event_id header", "an event_id with a non-hex digit");
	refused("17", hdrs("0b6f2a4e8d51-4c3e-9a7b-2f1e5d6c7a80-", "t", "order", "1"),
		"missing or malformed event_id header", "an event_id with a misplaced dash");
	refused("17", hdrs(UUID1 "0", "t", "order", "1"), "missing or malformed event_id header",
		"a too long event_id");
	refused("17", hdrs("0b6f2a4e-8d51-4c3e-9a7b-2f1e5d6c7a8", "t", "order", "1"),
		"missing or malformed event_id header", "a too short event_id");
	ok(!decode("17", hdrs("nope", "t", "order", "1"), &ev, why) && ev.event_id[0] == '\0' &&
		   strcmp(ev.aggregate_id, "17") == 0,
	   "a malformed event_id is not kept; the key read before it is");
	{
		rd_kafka_headers_t *h = rd_kafka_headers_new(2);

		rd_kafka_header_add(h, "eventId", -1, UUID1, -1);
		rd_kafka_header_add(h, "aggregate_seq", -1, "1", -1);
		refused("17", h, "missing or malformed event_id header",
			"an event id under another name");
	}
	refused("17", hdrs(UUID1, "t", "order", NULL), "missing aggregate_seq header",
		"no aggregate_seq");
	refused("17", hdrs(UUID1, "t", "order", ""), "missing aggregate_seq header",
		"an empty aggregate_seq");
	refused("17", hdrs(UUID1, "t", "order", "0"), "malformed aggregate_seq header", "seq 0");
	refused("17", hdrs(UUID1, "t", "order", "-3"), "malformed aggregate_seq header",
		"a negative seq");
	refused("17", hdrs(UUID1, "t", "order", "2x"), "malformed aggregate_seq header",
		"a seq with junk after it");
	refused("17", hdrs(UUID1, "t", "order", " "), "malformed aggregate_seq header",
		"a seq of no digits");
	refused("17", hdrs(UUID1, "t", "order", "99999999999999999999"),
		"malformed aggregate_seq header", "a seq past int64");
	ok(!decode("17", hdrs(UUID1, "t", "order", "x"), &ev, why) && ev.aggregate_seq == 0 &&
		   strcmp(ev.event_id, UUID1) == 0, "a malformed seq is 0; the event_id is kept");
}

/* What kafka_produce_event writes, read back from a mock cluster and
 * decoded. */
static void round_trip(void)
{
	struct conf c;
	char err[512], why[256];
	rd_kafka_t *p, *k = NULL;
	rd_kafka_conf_t *kc;
	rd_kafka_topic_partition_list_t *l;
	rd_kafka_message_t *rkm = NULL;
	struct kafka_envelope ev;
	const char *payload = "{\"order_id\":\"order-9\"}";
	const struct kafka_event out = {
		.event_id = UUID1, .event_type = "order.shipped", .aggregate_type = "order",
		.aggregate_id = "order-9", .aggregate_seq = 12345678901LL,
		.payload = payload, .payload_len = strlen(payload),
	};

	conf_defaults(&c);
	snprintf(c.kafka_props[0].name, sizeof c.kafka_props[0].name, "test.mock.num.brokers");
	snprintf(c.kafka_props[0].value, sizeof c.kafka_props[0].value, "1");
	snprintf(c.kafka_props[1].name, sizeof c.kafka_props[1].name, "log_level");
	snprintf(c.kafka_props[1].value, sizeof c.kafka_props[1].value, "4"); /* no MOCK notice */
	c.kafka_nprops = 2;
	p = kafka_producer_new(&c, NULL, err, sizeof err);
	if (!ok(p != NULL, "a producer on a mock cluster")) {
		diag("%s", err);
		return;
	}
	rd_kafka_mock_topic_create(rd_kafka_handle_mock_cluster(p), "t008", 1, 1);
	ok(kafka_produce_event(p, "t008", &out, NULL) == RD_KAFKA_RESP_ERR_NO_ERROR &&
		   rd_kafka_flush(p, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR,
	   "kafka_produce_event: delivered");
	kc = rd_kafka_conf_new();
	if (rd_kafka_conf_set(kc, "bootstrap.servers",
			      rd_kafka_mock_cluster_bootstraps(rd_kafka_handle_mock_cluster(p)), err,
			      sizeof err) == RD_KAFKA_CONF_OK &&
	    rd_kafka_conf_set(kc, "group.id", "t008", err, sizeof err) == RD_KAFKA_CONF_OK)
		k = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof err);
	if (!ok(k != NULL, "a consumer of it")) {
		diag("%s", err);
		rd_kafka_conf_destroy(kc);
		rd_kafka_destroy(p);
		return;
	}
	rd_kafka_poll_set_consumer(k);
	l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, "t008", 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
	rd_kafka_assign(k, l);
	rd_kafka_topic_partition_list_destroy(l);
	for (int i = 0; i < 100 && rkm == NULL; i++) {
		rkm = rd_kafka_consumer_poll(k, 100);
		if (rkm != NULL && rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			rd_kafka_message_destroy(rkm);
			rkm = NULL;
		}
	}
	if (ok(rkm != NULL, "the message comes back")) {
		rd_kafka_headers_t *h = NULL;

		if (rd_kafka_message_headers(rkm, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
			h = NULL;
		ok(kafka_event_decode(rkm->key, rkm->key_len, h, &ev, why, sizeof why),
		   "and decodes as an event");
		is_str(ev.aggregate_id, "order-9", "  key: aggregate_id");
		is_str(ev.event_id, UUID1, "  event_id");
		is_str(ev.event_type, "order.shipped", "  event_type");
		is_str(ev.aggregate_type, "order", "  aggregate_type");
		ok(ev.aggregate_seq == 12345678901LL, "  aggregate_seq");
		ok(rkm->len == strlen(payload) && memcmp(rkm->payload, payload, rkm->len) == 0,
		   "  the value is the payload");
		is_int(h != NULL ? (long long)rd_kafka_header_cnt(h) : 0, 4,
		       "  four headers, no more");
		rd_kafka_message_destroy(rkm);
	}
	rd_kafka_consumer_close(k);
	rd_kafka_destroy(k);
	rd_kafka_destroy(p);
}

int main(void)
{
	decoder();
	round_trip();
	return done_testing();
}
