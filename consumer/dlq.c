/* dlq: the dead-letter topic's producer and the header conversions the
 * dead-letter table needs. */
#include "dlq.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafka.h"
#include "util.h"

struct dlq {
	const struct conf *cfg;
	rd_kafka_t *rk;
};

/* One produce in flight at a time: its report lands here when its number
 * (the message opaque) is the one being waited for; a late report of an
 * abandoned produce is ignored. */
static struct {
	uintptr_t seq;
	bool done;
	rd_kafka_resp_err_t err;
} dlq_rep;

static void dlq_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
	(void)rk;
	(void)opaque;
	if ((uintptr_t)rkm->_private == dlq_rep.seq) {
		dlq_rep.err = rkm->err;
		dlq_rep.done = true;
	}
}

struct dlq *dlq_new(const struct conf *c)
{
	struct dlq *d = calloc(1, sizeof *d);

	if (d != NULL)
		d->cfg = c;
	return d;
}

void dlq_free(struct dlq *d)
{
	if (d == NULL)
		return;
	if (d->rk != NULL) {
		(void)rd_kafka_flush(d->rk, 2000);
		rd_kafka_destroy(d->rk);
	}
	free(d);
}

void dlq_iso8601(int64_t us, char *out, size_t outlen)
{
	time_t s = (time_t)(us / 1000000);
	struct tm tm;
	char buf[32];

	gmtime_r(&s, &tm);
	strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, outlen, "%s.%06" PRId64 "Z", buf, us % 1000000);
}

bool dlq_publish(struct dlq *d, const rd_kafka_message_t *rkm, const struct dlq_why *why,
		 volatile sig_atomic_t *stop, char *err, size_t errlen)
{
	rd_kafka_headers_t *src = NULL, *h = NULL;
	char att[16], first[40], last[40], part[16], off[24], cons[16];
	rd_kafka_resp_err_t e;
	int64_t deadline;
	bool ok = false;

	if (d->rk == NULL) {
		d->rk = kafka_producer_new(d->cfg, dlq_dr_cb, err, errlen);
		if (d->rk == NULL)
			return false;
	}
	if (rd_kafka_message_headers(rkm, &src) == RD_KAFKA_RESP_ERR_NO_ERROR && src != NULL)
		h = rd_kafka_headers_copy(src);
	else
		h = rd_kafka_headers_new(9);
	snprintf(att, sizeof att, "%d", why->attempts);
	dlq_iso8601(why->first_failure_us, first, sizeof first);
	dlq_iso8601(why->last_failure_us, last, sizeof last);
	snprintf(part, sizeof part, "%" PRId32, rkm->partition);
	snprintf(off, sizeof off, "%" PRId64, rkm->offset);
	snprintf(cons, sizeof cons, "%d", why->consumer_id);
	rd_kafka_header_add(h, "dlq_reason", -1, why->reason, -1);
	rd_kafka_header_add(h, "dlq_error", -1, why->error, -1);
	rd_kafka_header_add(h, "dlq_attempts", -1, att, -1);
	rd_kafka_header_add(h, "dlq_first_failure_at", -1, first, -1);
	rd_kafka_header_add(h, "dlq_last_failure_at", -1, last, -1);
	rd_kafka_header_add(h, "dlq_topic", -1, rd_kafka_topic_name(rkm->rkt), -1);
	rd_kafka_header_add(h, "dlq_partition", -1, part, -1);
	rd_kafka_header_add(h, "dlq_offset", -1, off, -1);
	rd_kafka_header_add(h, "dlq_consumer_id", -1, cons, -1);
	dlq_rep.seq++;
	dlq_rep.done = false;
	dlq_rep.err = RD_KAFKA_RESP_ERR_NO_ERROR;
	for (;;) {
		e = rd_kafka_producev(d->rk, RD_KAFKA_V_TOPIC(d->cfg->kafka_dlq_topic),
				      RD_KAFKA_V_KEY(rkm->key, rkm->key_len),
				      RD_KAFKA_V_VALUE(rkm->payload, rkm->len),
				      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
				      RD_KAFKA_V_HEADERS(h),
				      RD_KAFKA_V_OPAQUE((void *)dlq_rep.seq),
				      RD_KAFKA_V_END);
		if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		rd_kafka_poll(d->rk, 10);
	}
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rd_kafka_headers_destroy(h); /* not handed over */
		snprintf(err, errlen, "produce to %s: %s", d->cfg->kafka_dlq_topic,
			 rd_kafka_err2str(e));
		goto out;
	}
	/* The report comes within message.timeout.ms; the stop flag ends the
	 * wait early (the message is then handled again by whoever gets it). */
	deadline = util_mono_ms() + d->cfg->kafka_delivery_timeout_ms + 5000;
	while (!dlq_rep.done && util_mono_ms() < deadline && !*stop)
		rd_kafka_poll(d->rk, 100);
	if (!dlq_rep.done) {
		snprintf(err, errlen, "no delivery report from %s", d->cfg->kafka_dlq_topic);
		goto out;
	}
	if (dlq_rep.err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "delivery to %s: %s", d->cfg->kafka_dlq_topic,
			 rd_kafka_err2str(dlq_rep.err));
		goto out;
	}
	ok = true;
out:
	if (!ok && rd_kafka_fatal_error(d->rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		/* An idempotent producer in a fatal state never recovers: the
		 * next attempt gets a new one. */
		rd_kafka_destroy(d->rk);
		d->rk = NULL;
	}
	return ok;
}

/* Lowercase hex of n bytes as a JSON string; NULL when out of memory. */
static json_t *dlq_hex(const void *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *b = p;
	char *s = malloc(2 * n + 1);
	json_t *j;

	if (s == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		s[2 * i] = digits[b[i] >> 4];
		s[2 * i + 1] = digits[b[i] & 15];
	}
	s[2 * n] = '\0';
	j = json_stringn(s, 2 * n);
	free(s);
	return j;
}

/* The bytes of hex text (malloc'ed, *len set, NUL-terminated for names);
 * NULL when it is not hex or out of memory. */
static unsigned char *dlq_unhex(const char *s, size_t n, size_t *len)
{
	unsigned char *b;

	if (n % 2 != 0)
		return NULL;
	b = malloc(n / 2 + 1);
	if (b == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

		if (v < 0) {
			free(b);
			return NULL;
		}
		if (i % 2 == 0)
			b[i / 2] = (unsigned char)(v << 4);
		else
			b[i / 2] |= (unsigned char)v;
	}
	b[n / 2] = '\0';
	*len = n / 2;
	return b;
}

/* [[name, value], ...] of h: as text (null when not text) or as hex. */
static char *dlq_headers_dump(const rd_kafka_headers_t *h, bool hex)
{
	const char *name;
	const void *val;
	size_t size;
	json_t *a;
	char *s;

	if (h == NULL)
		return NULL;
	a = json_array();
	if (a == NULL)
		return NULL;
	for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &val, &size) ==
			   RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
		json_t *n, *v = NULL;

		if (hex) {
			n = dlq_hex(name, strlen(name));
			if (val != NULL)
				v = dlq_hex(val, size);
		} else {
			/* jansson takes a NUL byte, jsonb does not: text or null. */
			n = util_utf8_text(name, strlen(name)) ? json_string(name) : NULL;
			if (val != NULL && util_utf8_text(val, size))
				v = json_stringn(val, size);
		}
		json_array_append_new(a, json_pack("[oo]", n != NULL ? n : json_null(),
						   v != NULL ? v : json_null()));
	}
	s = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return s;
}

char *dlq_headers_json(const rd_kafka_headers_t *h)
{
	return dlq_headers_dump(h, false);
}

char *dlq_headers_hex(const rd_kafka_headers_t *h)
{
	return dlq_headers_dump(h, true);
}

rd_kafka_headers_t *dlq_headers_parse(const char *json, bool hex)
{
	json_t *a, *pair;
	rd_kafka_headers_t *h;
	size_t i;
	bool ok = true;

	if (json == NULL || *json == '\0')
		return rd_kafka_headers_new(1);
	a = json_loads(json, 0, NULL);
	if (!json_is_array(a)) {
		json_decref(a);
		return NULL;
	}
	h = rd_kafka_headers_new(json_array_size(a) + 1);
	json_array_foreach(a, i, pair) {
		json_t *n = json_array_get(pair, 0), *v = json_array_get(pair, 1);
		unsigned char *nb = NULL, *vb = NULL;
		size_t nl = 0, vl = 0;

		if (!json_is_string(n))
			continue;
		if (!hex) {
			if (json_is_string(v))
				rd_kafka_header_add(h, json_string_value(n), -1, json_string_value(v),
						    (ssize_t)json_string_length(v));
			else
				rd_kafka_header_add(h, json_string_value(n), -1, NULL, 0);
			continue;
		}
		nb = dlq_unhex(json_string_value(n), json_string_length(n), &nl);
		if (json_is_string(v))
			vb = dlq_unhex(json_string_value(v), json_string_length(v), &vl);
		if (nb == NULL || (json_is_string(v) && vb == NULL) || (!json_is_string(v) &&
									 !json_is_null(v))) {
			ok = false;
		} else {
			rd_kafka_header_add(h, (const char *)nb, (ssize_t)nl, vb, (ssize_t)vl);
		}
		free(nb);
		free(vb);
		if (!ok)
			break;
	}
	json_decref(a);
	if (!ok) {
		rd_kafka_headers_destroy(h);
		return NULL;
	}
	return h;
}
