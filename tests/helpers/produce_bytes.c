/* produce_bytes: produce one message whose key, value and header values are
 * given in hex, so tests can send bytes kcat's command line cannot carry (a
 * NUL in a header value, say). Exit 0 once the broker acknowledged it.
 *
 *   produce_bytes BROKERS TOPIC PARTITION KEY_HEX VALUE_HEX [NAME=VALUE_HEX ...]
 *
 * An empty KEY_HEX or VALUE_HEX sends none; "NAME=" an empty header value. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int produce_done = -1;

static void produce_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	(void)opaque;
	produce_done = m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : 1;
	if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
		fprintf(stderr, "produce_bytes: %s\n", rd_kafka_err2str(m->err));
}

/* Hex text to bytes (malloc'ed, *len set); NULL when not hex. */
static unsigned char *unhex(const char *s, size_t *len)
{
	size_t n = strlen(s);
	unsigned char *b = malloc(n / 2 + 1);

	if (b == NULL || n % 2 != 0) {
		free(b);
		return NULL;
	}
	for (size_t i = 0; i < n / 2; i++) {
		unsigned int v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1) {
			free(b);
			return NULL;
		}
		b[i] = (unsigned char)v;
	}
	*len = n / 2;
	return b;
}

int main(int argc, char **argv)
{
	char err[512];
	rd_kafka_conf_t *kc;
	rd_kafka_t *rk;
	rd_kafka_headers_t *h;
	unsigned char *key, *val;
	void *kp, *vp;
	size_t key_len = 0, val_len = 0;
	rd_kafka_resp_err_t e;

	if (argc < 6) {
		fprintf(stderr, "usage: produce_bytes BROKERS TOPIC PARTITION KEY_HEX VALUE_HEX "
			"[NAME=VALUE_HEX ...]\n");
		return 2;
	}
	key = unhex(argv[4], &key_len);
	val = unhex(argv[5], &val_len);
	h = rd_kafka_headers_new(8);
	if (key == NULL || val == NULL) {
		fprintf(stderr, "produce_bytes: key and value must be hex\n");
		return 2;
	}
	for (int i = 6; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		unsigned char *hv;
		size_t hl = 0;

		if (eq == NULL || (hv = unhex(eq + 1, &hl)) == NULL) {
			fprintf(stderr, "produce_bytes: bad header \"%s\"\n", argv[i]);
			return 2;
		}
		rd_kafka_header_add(h, argv[i], eq - argv[i], hv, (ssize_t)hl);
		free(hv);
	}
	kc = rd_kafka_conf_new();
	if (rd_kafka_conf_set(kc, "bootstrap.servers", argv[1], err, sizeof err) !=
	    RD_KAFKA_CONF_OK) {
		fprintf(stderr, "produce_bytes: %s\n", err);
		return 2;
	}
	rd_kafka_conf_set_dr_msg_cb(kc, produce_dr_cb);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof err);
	if (rk == NULL) {
		fprintf(stderr, "produce_bytes: %s\n", err);
		return 1;
	}
	kp = key_len > 0 ? key : NULL;
	vp = val_len > 0 ? val : NULL;
	e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(argv[2]),
			      RD_KAFKA_V_PARTITION(atoi(argv[3])),
			      RD_KAFKA_V_KEY(kp, key_len),
			      RD_KAFKA_V_VALUE(vp, val_len),
			      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
			      RD_KAFKA_V_END);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "produce_bytes: %s\n", rd_kafka_err2str(e));
		return 1;
	}
	rd_kafka_flush(rk, 15000);
	rd_kafka_destroy(rk);
	free(key);
	free(val);
	return produce_done == 0 ? 0 : 1;
}
