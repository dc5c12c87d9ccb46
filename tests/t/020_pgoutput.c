/* The CDC relay's protocol decoding (relay/pgoutput.c) on hand-built
 * messages: a Relation of public.outbox with its columns in another order
 * and extra ones, an Insert into it, Begin/Commit, the replication
 * envelope, the status update's bytes, and truncated or malformed input,
 * which must be refused, never read past. No server. */
#include "pgoutput.c"
#include "tap.h"

struct buf {
	unsigned char b[4096];
	size_t n;
};

static void put(struct buf *m, const void *p, size_t n)
{
	memcpy(m->b + m->n, p, n);
	m->n += n;
}
static void put_u(struct buf *m, uint64_t v, int bytes)
{
	for (int i = bytes - 1; i >= 0; i--)
		m->b[m->n++] = (unsigned char)(v >> (8 * i));
}
static void put_s(struct buf *m, const char *s)
{
	put(m, s, strlen(s) + 1);
}
static void put_col(struct buf *m, const char *name)
{
	put_u(m, 0, 1);
	put_s(m, name);
	put_u(m, 25, 4);
	put_u(m, (uint32_t)-1, 4);
}
static void put_text(struct buf *m, const char *v)
{
	put_u(m, 't', 1);
	put_u(m, strlen(v), 4);
	put(m, v, strlen(v));
}
static struct pgo_reader rd(const struct buf *m, size_t n)
{
	struct pgo_reader r = { m->b, m->b + n };

	return r;
}

/* Relation of public.outbox: payload first, an unrelated column, the rest. */
static void relation(struct buf *m, const char *nsp, const char *name, bool with_seq)
{
	static const char *const cols[] = {
		"payload", "sent_at", "id", "event_id", "aggregate_type", "aggregate_id",
		"aggregate_seq", "event_type", "created_at",
	};
	int n = 0;

	m->n = 0;
	put_u(m, 16384, 4);
	put_s(m, nsp);
	put_s(m, name);
	put_u(m, 'd', 1);
	for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
		n += with_seq || strcmp(cols[i], "aggregate_seq") != 0;
	put_u(m, (uint64_t)n, 2);
	for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
		if (with_seq || strcmp(cols[i], "aggregate_seq") != 0)
			put_col(m, cols[i]);
}

static void insert(struct buf *m, const char *seq)
{
	m->n = 0;
	put_u(m, 16384, 4);
	put_u(m, 'N', 1);
	put_u(m, 9, 2);
	put_text(m, "{\"status\": \"paid\"}");
	put_u(m, 'n', 1); /* sent_at NULL */
	put_text(m, "42");
	put_text(m, "0b6f2a4e-8d51-4c3e-9a7b-2f1e5d6c7a80");
	put_text(m, "order");
	put_text(m, "1234");
	put_text(m, seq);
	put_text(m, "order.paid");
	put_text(m, "2026-11-29 10:00:00+00");
}

static bool same(const char *v, uint32_t len, const char *want)
{
	return v != NULL && len == strlen(want) && memcmp(v, want, len) == 0;
}

int main(void)
{
	struct buf m;
	struct pgo_rel rel;
	struct pgo_row row;
	struct pgo_reader r;
	char err[256];
	uint32_t relid;
	uint64_t lsn;
	bool reply;
	unsigned char st[PGO_STATUS_LEN];
	char s[24];

	relation(&m, "public", "outbox", true);
	r = rd(&m, m.n);
	ok(pgo_relation(&r, &rel, err, sizeof err), "Relation of public.outbox parses");
	ok(rel.outbox && rel.relid == 16384, "it is the outbox, relation 16384");
	is_int(rel.col[PGO_PAYLOAD], 0, "payload is column 0");
	is_int(rel.col[PGO_ID], 2, "id is column 2");
	is_int(rel.col[PGO_EVENT_TYPE], 7, "event_type is column 7");
	ok(r.p == r.end, "the whole message was read");

	{
		bool all_refused = true;

		for (size_t cut = 0; cut < m.n; cut++) {
			r = rd(&m, cut);
			if (pgo_relation(&r, &rel, err, sizeof err))
				all_refused = false;
		}
		ok(all_refused, "every truncation of the Relation is refused");
	}
	relation(&m, "public", "outbox", false);
	r = rd(&m, m.n);
	ok(!pgo_relation(&r, &rel, err, sizeof err), "an outbox without aggregate_seq is refused");
	is_str(err, "public.outbox has no column aggregate_seq", "and the reason names the column");
	relation(&m, "public", "orders", false);
	r = rd(&m, m.n);
	ok(pgo_relation(&r, &rel, err, sizeof err) && !rel.outbox,
	   "another table's Relation parses and is not the outbox");

	relation(&m, "public", "outbox", true);
	r = rd(&m, m.n);
	ok(pgo_relation(&r, &rel, err, sizeof err), "the outbox Relation again");
	insert(&m, "7");
	r = rd(&m, m.n);
	ok(pgo_insert_relid(&r, &relid) && relid == 16384, "Insert: relation 16384, new tuple");
	ok(pgo_tuple(&r, &rel, &row, err, sizeof err), "Insert: the tuple parses");
	is_int(row.id, 42, "id 42");
	is_int(row.seq, 7, "aggregate_seq 7");
	ok(same(row.val[PGO_EVENT_ID], row.len[PGO_EVENT_ID], "0b6f2a4e-8d51-4c3e-9a7b-2f1e5d6c7a80"),
	   "event_id");
	ok(same(row.val[PGO_AGG_ID], row.len[PGO_AGG_ID], "1234"), "aggregate_id (the key)");
	ok(same(row.val[PGO_AGG_TYPE], row.len[PGO_AGG_TYPE], "order"), "aggregate_type");
	ok(same(row.val[PGO_EVENT_TYPE], row.len[PGO_EVENT_TYPE], "order.paid"), "event_type");
	ok(same(row.val[PGO_PAYLOAD], row.len[PGO_PAYLOAD], "{\"status\": \"paid\"}"), "payload");
	ok(r.p == r.end, "the whole Insert was read");

	{
		bool all_refused = true;

		for (size_t cut = 5; cut < m.n; cut++) {
			r = rd(&m, cut);
			if (pgo_insert_relid(&r, &relid) && pgo_tuple(&r, &rel, &row, err, sizeof err))
				all_refused = false;
		}
		ok(all_refused, "every truncation of the Insert is refused");
	}
	insert(&m, "7x");
	r = rd(&m, m.n);
	ok(pgo_insert_relid(&r, &relid) && !pgo_tuple(&r, &rel, &row, err, sizeof err),
	   "a non-numeric aggregate_seq is refused");
	insert(&m, "7");
	m.b[4] = 'K'; /* an Insert carries a New tuple */
	r = rd(&m, m.n);
	ok(!pgo_insert_relid(&r, &relid), "an Insert without 'N' is refused");

	m.n = 0;
	put_u(&m, 0x16B3748, 8);
	put_u(&m, 1, 8);
	put_u(&m, 777, 4);
	r = rd(&m, m.n);
	ok(pgo_begin(&r) && r.p == r.end, "Begin parses");
	m.n = 0;
	put_u(&m, 0, 1);
	put_u(&m, 0x16B3748, 8);
	put_u(&m, 0x16B3778, 8);
	put_u(&m, 1, 8);
	r = rd(&m, m.n);
	ok(pgo_commit(&r, &lsn), "Commit parses");
	is_int(lsn, 0x16B3778, "Commit: its end LSN");
	r = rd(&m, m.n - 1);
	ok(!pgo_commit(&r, &lsn), "a short Commit is refused");

	m.n = 0;
	put_u(&m, 0x100000028, 8);
	put_u(&m, 5, 8);
	put_u(&m, 1, 1);
	r = rd(&m, m.n);
	ok(pgo_keepalive(&r, &lsn, &reply) && lsn == 0x100000028 && reply,
	   "keepalive: WAL end and reply request");
	m.n = 0;
	put_u(&m, 0xABC, 8);
	put_u(&m, 0xABC, 8);
	put_u(&m, 5, 8);
	r = rd(&m, m.n);
	ok(pgo_xlogdata(&r, &lsn) && lsn == 0xABC, "XLogData: the message's start");

	pgo_status(st, 0x200, 0x100, PGO_EPOCH_US + 1000000, true);
	ok(st[0] == 'r', "status update starts with 'r'");
	ok(st[7] == 0x02 && st[8] == 0x00 && st[15] == 0x01 && st[16] == 0x00 && st[23] == 0x01,
	   "write 0x200, flush and apply 0x100, big-endian");
	ok(st[30] == 0x0F && st[31] == 0x42 && st[32] == 0x40 && st[33] == 1,
	   "time in µs since 2000-01-01 (1 s = 0x0F4240), reply flag");
	pgo_status(st, 0x50, 0x100, PGO_EPOCH_US, false);
	ok(st[8] == 0x00 && st[7] == 0x01, "write is never reported behind flush");

	pgo_lsn_str(UINT64_C(0x16B3748), s);
	is_str(s, "0/16B3748", "LSN text form");
	pgo_lsn_str(UINT64_C(0x1000000A0), s);
	is_str(s, "1/A0", "LSN text form with a high part");
	return done_testing();
}
