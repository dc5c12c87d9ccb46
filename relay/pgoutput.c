#include "pgoutput.h"

#include <stdio.h>
#include <string.h>

#define PGO_EPOCH_US INT64_C(946684800000000) /* 2000-01-01 in Unix µs */

const char *const pgo_colnames[PGO_NCOLS] = {
	"id", "event_id", "aggregate_type", "aggregate_id", "aggregate_seq", "event_type",
	"payload",
};

static bool pgo_uint(struct pgo_reader *r, size_t n, uint64_t *v)
{
	uint64_t x = 0;

	if ((size_t)(r->end - r->p) < n)
		return false;
	for (size_t i = 0; i < n; i++)
		x = x << 8 | r->p[i];
	r->p += n;
	*v = x;
	return true;
}

bool pgo_u8(struct pgo_reader *r, uint8_t *v)
{
	uint64_t x;

	if (!pgo_uint(r, 1, &x))
		return false;
	*v = (uint8_t)x;
	return true;
}

bool pgo_u16(struct pgo_reader *r, uint16_t *v)
{
	uint64_t x;

	if (!pgo_uint(r, 2, &x))
		return false;
	*v = (uint16_t)x;
	return true;
}

bool pgo_u32(struct pgo_reader *r, uint32_t *v)
{
	uint64_t x;

	if (!pgo_uint(r, 4, &x))
		return false;
	*v = (uint32_t)x;
	return true;
}

bool pgo_u64(struct pgo_reader *r, uint64_t *v)
{
	return pgo_uint(r, 8, v);
}

bool pgo_str(struct pgo_reader *r, const char **s)
{
	const unsigned char *nul = memchr(r->p, '\0', (size_t)(r->end - r->p));

	if (nul == NULL)
		return false;
	*s = (const char *)r->p;
	r->p = nul + 1;
	return true;
}

bool pgo_relation(struct pgo_reader *r, struct pgo_rel *rel, char *err, size_t errlen)
{
	uint32_t typoid, typmod;
	uint16_t ncols;
	uint8_t ident, flags;
	const char *nsp, *name, *col;

	if (!pgo_u32(r, &rel->relid) || !pgo_str(r, &nsp) || !pgo_str(r, &name) ||
	    !pgo_u8(r, &ident) || !pgo_u16(r, &ncols))
		goto bad;
	rel->outbox = strcmp(nsp, "public") == 0 && strcmp(name, "outbox") == 0;
	for (int k = 0; k < PGO_NCOLS; k++)
		rel->col[k] = -1;
	for (int i = 0; i < ncols; i++) {
		if (!pgo_u8(r, &flags) || !pgo_str(r, &col) || !pgo_u32(r, &typoid) ||
		    !pgo_u32(r, &typmod))
			goto bad;
		for (int k = 0; k < PGO_NCOLS; k++)
			if (strcmp(col, pgo_colnames[k]) == 0)
				rel->col[k] = i;
	}
	return !rel->outbox || pgo_rel_complete(rel, err, errlen);
bad:
	snprintf(err, errlen, "malformed Relation message");
	return false;
}

bool pgo_rel_complete(const struct pgo_rel *rel, char *err, size_t errlen)
{
	for (int k = 0; k < PGO_NCOLS; k++)
		if (rel->col[k] < 0) {
			snprintf(err, errlen, "%s has no column %s",
				 rel->outbox ? "public.outbox" : "the relation", pgo_colnames[k]);
			return false;
		}
	return true;
}

bool pgo_insert_relid(struct pgo_reader *r, uint32_t *relid)
{
	struct pgo_reader save = *r;
	uint8_t kind;

	if (pgo_u32(r, relid) && pgo_u8(r, &kind) && kind == 'N')
		return true;
	*r = save;
	return false;
}

/* A decimal int64 from text that is not NUL-terminated. */
static bool pgo_int64(const char *s, uint32_t len, int64_t *out)
{
	int64_t v = 0;
	bool neg = len > 0 && s[0] == '-';

	if (len == (uint32_t)neg || len > 20)
		return false;
	for (uint32_t i = neg; i < len; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (INT64_MAX - (s[i] - '0')) / 10)
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = neg ? -v : v;
	return true;
}

bool pgo_tuple(struct pgo_reader *r, const struct pgo_rel *rel, struct pgo_row *row,
	       char *err, size_t errlen)
{
	uint16_t ncols;
	uint32_t len;
	uint8_t kind;

	memset(row, 0, sizeof *row);
	if (!pgo_u16(r, &ncols))
		goto bad;
	for (int i = 0; i < ncols; i++) {
		if (!pgo_u8(r, &kind))
			goto bad;
		if (kind == 'n' || kind == 'u')
			continue;
		if (kind != 't' || !pgo_u32(r, &len) || (size_t)(r->end - r->p) < len)
			goto bad;
		for (int k = 0; k < PGO_NCOLS; k++)
			if (rel->col[k] == i) {
				row->val[k] = (const char *)r->p;
				row->len[k] = len;
			}
		r->p += len;
	}
	for (int k = 0; k < PGO_NCOLS; k++)
		if (row->val[k] == NULL || (k != PGO_PAYLOAD && row->len[k] > 4096)) {
			snprintf(err, errlen, "outbox row without a usable %s", pgo_colnames[k]);
			return false;
		}
	if (row->len[PGO_EVENT_ID] != 36 || !pgo_int64(row->val[PGO_ID], row->len[PGO_ID], &row->id) ||
	    !pgo_int64(row->val[PGO_SEQ], row->len[PGO_SEQ], &row->seq)) {
		snprintf(err, errlen, "outbox row with a malformed id, event_id or aggregate_seq");
		return false;
	}
	return true;
bad:
	snprintf(err, errlen, "malformed Insert message");
	return false;
}

bool pgo_begin(struct pgo_reader *r)
{
	uint64_t lsn, ts;
	uint32_t xid;

	return pgo_u64(r, &lsn) && pgo_u64(r, &ts) && pgo_u32(r, &xid);
}

bool pgo_commit(struct pgo_reader *r, uint64_t *end_lsn)
{
	uint64_t lsn, ts;
	uint8_t flags;

	return pgo_u8(r, &flags) && pgo_u64(r, &lsn) && pgo_u64(r, end_lsn) && pgo_u64(r, &ts);
}

bool pgo_xlogdata(struct pgo_reader *r, uint64_t *start)
{
	uint64_t end, ts;

	return pgo_u64(r, start) && pgo_u64(r, &end) && pgo_u64(r, &ts);
}

bool pgo_keepalive(struct pgo_reader *r, uint64_t *wal_end, bool *reply)
{
	uint64_t ts;
	uint8_t rep;

	if (!pgo_u64(r, wal_end) || !pgo_u64(r, &ts) || !pgo_u8(r, &rep))
		return false;
	*reply = rep != 0;
	return true;
}

static void pgo_put64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)(v & 0xff);
}

void pgo_status(unsigned char out[PGO_STATUS_LEN], uint64_t write, uint64_t flush,
		int64_t now_us, bool reply)
{
	out[0] = 'r';
	pgo_put64(out + 1, write > flush ? write : flush);
	pgo_put64(out + 9, flush);
	pgo_put64(out + 17, flush);
	pgo_put64(out + 25, (uint64_t)(now_us - PGO_EPOCH_US));
	out[33] = reply ? 1 : 0;
}

void pgo_lsn_str(uint64_t lsn, char out[24])
{
	snprintf(out, 24, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}
