#include "publish.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "kafka.h"
#include "log.h"
#include "util.h"

/* Reports the current batch still waits for. Only our thread touches it:
 * librdkafka runs dr_msg_cb from rd_kafka_poll(), which we call. */
static int publish_pending;

/* Delivery report: record the outcome in the row's slot. A report for a
 * slot that is not pending (an abandoned batch) is ignored; the slots
 * array lives as long as the relay, so the pointer is always valid. */
static void publish_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct publish_row *row = m->_private;

	(void)rk;
	(void)opaque;
	if (row == NULL || !row->pending)
		return;
	row->pending = false;
	row->err = m->err;
	row->partition = m->partition;
	row->offset = m->offset;
	row->acked_us = util_now_us();
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
	    rd_kafka_message_status(m) != RD_KAFKA_MSG_STATUS_PERSISTED)
		row->err = RD_KAFKA_RESP_ERR__FAIL; /* never call "not sure" sent */
	publish_pending--;
}

bool publish_open(struct publisher *p, const struct conf *c, char *err, size_t errlen)
{
	p->cfg = c;
	p->rk = kafka_producer_new(c, publish_dr_cb, err, errlen);
	return p->rk != NULL;
}

void publish_close(struct publisher *p)
{
	if (p->rk == NULL)
		return;
	/* Whatever is still queued is purged with the producer; the rows it
	 * belonged to were never marked sent. */
	rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	rd_kafka_destroy(p->rk);
	p->rk = NULL;
	publish_pending = 0;
}

int publish_send(struct publisher *p, struct publish_row *rows, int n)
{
	int sent = 0;

	for (int i = 0; i < n; i++) {
		struct publish_row *r = &rows[i];
		struct kafka_event ev;
		rd_kafka_resp_err_t e;

		if (!r->publish)
			continue;
		ev.event_id = r->event_id;
		ev.event_type = r->event_type;
		ev.aggregate_type = r->aggregate_type;
		ev.aggregate_id = r->aggregate_id;
		ev.aggregate_seq = r->seq;
		ev.payload = r->payload;
		ev.payload_len = r->payload_len;
		r->pending = true;
		r->enqueued = true;
		r->err = RD_KAFKA_RESP_ERR_NO_ERROR;
		r->partition = -1;
		r->offset = -1;
		r->acked_us = 0;
		publish_pending++;
		e = kafka_produce_event(p->rk, p->cfg->kafka_topic, &ev, r);
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
			/* No report will come for it: it failed here. */
			r->pending = false;
			r->err = e;
			r->acked_us = util_now_us();
			publish_pending--;
			/* Skip the rest of this aggregate in this pass. */
			for (int j = i + 1; j < n; j++)
				if (rows[j].group == r->group)
					rows[j].publish = false;
			continue;
		}
		sent++;
	}
	return sent;
}

bool publish_wait(struct publisher *p, const struct publish_row *rows, int n, long timeout_ms)
{
	int64_t deadline = util_mono_ms() + timeout_ms;
	int i = 0;

	for (;;) {
		/* A report only ever clears pending: rows before i stay done. */
		while (rows != NULL && i < n && !rows[i].pending)
			i++;
		if (rows != NULL ? i == n : publish_pending == 0)
			return true;
		if (util_mono_ms() >= deadline)
			return false;
		rd_kafka_poll(p->rk, 100);
	}
}

bool publish_err_permanent(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
		return true;
	default:
		return false;
	}
}

int publish_outstanding(void)
{
	return publish_pending;
}

void publish_poll(struct publisher *p)
{
	if (p->rk != NULL)
		rd_kafka_poll(p->rk, 0);
}

static const char SQL_COUNTERS[] =
	"INSERT INTO public.outboxd_relays AS r (relay_id, host, pid, mode, started_at, "
	"    updated_at, passes, published, acked, failed, marked, cluster_id, cluster_mismatch) "
	"VALUES ($1::int, $2, $3::int, $4, to_timestamp($5::double precision / 1000000), "
	"    now(), $6::bigint, $7::bigint, $8::bigint, $9::bigint, $10::bigint, $11, $12) "
	"ON CONFLICT (host, relay_id) DO UPDATE SET pid = EXCLUDED.pid, mode = EXCLUDED.mode, "
	"    started_at = EXCLUDED.started_at, updated_at = EXCLUDED.updated_at, "
	"    passes = EXCLUDED.passes, published = EXCLUDED.published, acked = EXCLUDED.acked, "
	"    failed = EXCLUDED.failed, marked = EXCLUDED.marked, "
	"    cluster_id = coalesce(EXCLUDED.cluster_id, r.cluster_id), "
	"    cluster_mismatch = EXCLUDED.cluster_mismatch";

void publish_counters_save(PGconn *conn, int relay_id, const char *host, const char *mode,
			   int64_t started_us, const struct publish_counters *c,
			   const char *cluster_id, const char *cluster_mismatch)
{
	char v[8][32];
	const char *params[12];
	struct db_err e;

	snprintf(v[0], sizeof v[0], "%d", relay_id);
	snprintf(v[1], sizeof v[1], "%d", (int)getpid());
	snprintf(v[2], sizeof v[2], "%" PRId64, started_us);
	snprintf(v[3], sizeof v[3], "%" PRId64, c->passes);
	snprintf(v[4], sizeof v[4], "%" PRId64, c->published);
	snprintf(v[5], sizeof v[5], "%" PRId64, c->acked);
	snprintf(v[6], sizeof v[6], "%" PRId64, c->failed);
	snprintf(v[7], sizeof v[7], "%" PRId64, c->marked);
	params[0] = v[0];
	params[1] = host;
	params[2] = v[1];
	params[3] = mode;
	for (int i = 4; i < 10; i++)
		params[i] = v[i - 2];
	params[10] = cluster_id;
	params[11] = cluster_mismatch;
	if (!db_run(conn, SQL_COUNTERS, 12, params, &e))
		log_debug("counters not saved: %s", e.msg);
}

bool publish_log_write(int fd, int relay_id, const char *pass_id,
		       const struct publish_row *rows, int n, int64_t claimed_us)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	bool ok = false;
	ssize_t w;

	if (buf == NULL)
		return false;
	for (int i = 0; i < n; i++) {
		const struct publish_row *r = &rows[i];
		const char *status;
		int k;

		if (!r->enqueued)
			continue;
		status = r->err == RD_KAFKA_RESP_ERR_NO_ERROR ? "ok" : rd_kafka_err2name(r->err);
		for (;;) {
			k = snprintf(buf + len, cap - len,
				     "%d\t%s\t%s\t%s\t%" PRId64 "\t%" PRId32 "\t%" PRId64
				     "\t%s\t%" PRId64 "\t%" PRId64 "\n",
				     relay_id, pass_id, r->event_id, r->aggregate_id, r->seq,
				     r->partition, r->offset, status, claimed_us, r->acked_us);
			if (k >= 0 && (size_t)k < cap - len)
				break;
			char *nb = realloc(buf, cap * 2 + (size_t)(k > 0 ? k : 0));

			if (nb == NULL)
				goto out;
			cap = cap * 2 + (size_t)(k > 0 ? k : 0);
			buf = nb;
		}
		len += (size_t)k;
	}
	if (len == 0) {
		ok = true;
		goto out;
	}
	w = write(fd, buf, len);
	if (w == (ssize_t)len)
		ok = true;
	else if (w >= 0)
		errno = EIO;
out:
	free(buf);
	return ok;
}
