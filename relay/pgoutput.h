#ifndef OUTBOXD_RELAY_PGOUTPUT_H
#define OUTBOXD_RELAY_PGOUTPUT_H

/* Decoding of what a logical walsender sends: the streaming replication
 * envelope (XLogData 'w', keepalive 'k', our standby status 'r') and the
 * pgoutput protocol v1 messages the CDC relay needs (Begin, Commit,
 * Relation, Insert). Pure functions over byte buffers, so they are unit
 * tested without a server. Every reader is bounds-checked: a truncated or
 * malformed message is an error, never a read past the buffer. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pgo_reader {
	const unsigned char *p, *end;
};

/* Big-endian integers and NUL-terminated strings; false (and *r
 * unchanged) when the message is too short. *s points into the buffer. */
bool pgo_u8(struct pgo_reader *r, uint8_t *v) __attribute__((warn_unused_result));
bool pgo_u16(struct pgo_reader *r, uint16_t *v) __attribute__((warn_unused_result));
bool pgo_u32(struct pgo_reader *r, uint32_t *v) __attribute__((warn_unused_result));
bool pgo_u64(struct pgo_reader *r, uint64_t *v) __attribute__((warn_unused_result));
bool pgo_str(struct pgo_reader *r, const char **s) __attribute__((warn_unused_result));

/* The outbox columns a Kafka message is made of. */
enum pgo_col {
	PGO_ID, PGO_EVENT_ID, PGO_AGG_TYPE, PGO_AGG_ID, PGO_SEQ, PGO_EVENT_TYPE, PGO_PAYLOAD,
	PGO_NCOLS
};
extern const char *const pgo_colnames[PGO_NCOLS];

/* A relation as a Relation message describes it. */
struct pgo_rel {
	uint32_t relid;
	bool outbox;             /* public.outbox */
	int col[PGO_NCOLS];      /* tuple position of each column we need, -1 missing */
};

/* Relation message body (after the 'R'). For public.outbox, false with
 * the reason in err when a needed column is missing. */
bool pgo_relation(struct pgo_reader *r, struct pgo_rel *rel, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* True when rel has every column a message needs; false with the first
 * missing one named in err. */
bool pgo_rel_complete(const struct pgo_rel *rel, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Insert message body (after the 'I') up to its tuple: the relation id. */
bool pgo_insert_relid(struct pgo_reader *r, uint32_t *relid) __attribute__((warn_unused_result));

/* The new tuple of an Insert into rel (an outbox relation): each needed
 * column's text, NOT NUL-terminated, pointing into the buffer. False with
 * the reason when malformed or when a needed value is NULL/unusable. */
struct pgo_row {
	const char *val[PGO_NCOLS];
	uint32_t len[PGO_NCOLS];
	int64_t id, seq;         /* parsed from their text */
};
bool pgo_tuple(struct pgo_reader *r, const struct pgo_rel *rel, struct pgo_row *row,
	       char *err, size_t errlen) __attribute__((warn_unused_result));

/* Begin body: nothing we keep, but it must be well formed. Commit body:
 * the transaction's end LSN (what the server wants confirmed). */
bool pgo_begin(struct pgo_reader *r) __attribute__((warn_unused_result));
bool pgo_commit(struct pgo_reader *r, uint64_t *end_lsn) __attribute__((warn_unused_result));

/* The envelope: XLogData header (after 'w'): the message's WAL start.
 * Keepalive (after 'k'): the server's WAL end and whether it wants a
 * reply at once. */
bool pgo_xlogdata(struct pgo_reader *r, uint64_t *start) __attribute__((warn_unused_result));
bool pgo_keepalive(struct pgo_reader *r, uint64_t *wal_end, bool *reply)
	__attribute__((warn_unused_result));

/* Standby status update: received up to write, durable up to flush (also
 * reported as applied), at now_us (Unix µs). */
#define PGO_STATUS_LEN 34
void pgo_status(unsigned char out[PGO_STATUS_LEN], uint64_t write, uint64_t flush,
		int64_t now_us, bool reply);

/* "X/Y", the form PostgreSQL prints an LSN in. */
void pgo_lsn_str(uint64_t lsn, char out[24]);

#endif
