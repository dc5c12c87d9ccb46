/* The consumer group's lag, for outboxctl status and verify: committed
 * offsets of [consumer] group_id against the topic's high watermarks, read
 * with a consumer handle that never joins the group. */
#include <stdio.h>

#include "ctl.h"
#include "kafka.h"

rd_kafka_t *ctl_lag_open(const struct conf *c, char *err, size_t errlen)
{
	rd_kafka_conf_t *kc = kafka_conf_new(c, err, errlen);
	rd_kafka_t *rk;

	if (kc == NULL)
		return NULL;
	if (rd_kafka_conf_set(kc, "group.id", c->consumer_group, err, errlen) != RD_KAFKA_CONF_OK ||
	    (rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, errlen)) == NULL) {
		rd_kafka_conf_destroy(kc);
		return NULL;
	}
	return rk;
}

long long ctl_lag(rd_kafka_t *rk, const char *topic, char *err, size_t errlen)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_partition_list_t *parts = NULL;
	rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
	long long lag = -1, sum = 0;
	rd_kafka_resp_err_t e;

	if (t == NULL) {
		snprintf(err, errlen, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
		return -1;
	}
	e = rd_kafka_metadata(rk, 0, t, &md, 5000);
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
	    md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
		lag = 0; /* nothing was ever published */
		goto out;
	}
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err) {
		snprintf(err, errlen, "metadata: %s", rd_kafka_err2str(e ? e : md->topics[0].err));
		goto out;
	}
	parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
	for (int i = 0; i < md->topics[0].partition_cnt; i++)
		rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id);
	e = rd_kafka_committed(rk, parts, 5000);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "committed offsets: %s", rd_kafka_err2str(e));
		goto out;
	}
	for (int i = 0; i < parts->cnt; i++) {
		int64_t lo, hi, off = parts->elems[i].offset;

		e = rd_kafka_query_watermark_offsets(rk, topic, parts->elems[i].partition, &lo, &hi,
						     5000);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			snprintf(err, errlen, "watermarks: %s", rd_kafka_err2str(e));
			goto out;
		}
		if (off < lo)
			off = lo; /* nothing committed, or committed before a deletion */
		if (hi > off)
			sum += hi - off;
	}
	lag = sum;
out:
	if (parts != NULL)
		rd_kafka_topic_partition_list_destroy(parts);
	if (md != NULL)
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(t);
	return lag;
}
