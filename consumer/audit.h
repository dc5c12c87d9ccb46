#ifndef OUTBOXD_CONSUMER_AUDIT_H
#define OUTBOXD_CONSUMER_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The JSON-lines copy of sink.ordering_audit ([supervisor] audit_file).
 * One object per line, written with one write(2) on an O_APPEND descriptor,
 * so lines of several consumers sharing the file never interleave. */

/* One audit record. NULL strings and negative numbers become JSON null. */
struct audit_line {
	const char *detected_at;   /* ISO 8601, UTC */
	const char *kind;          /* gap, gap_healed, duplicate, poison */
	const char *aggregate_id;
	int64_t expected_seq;
	int64_t got_seq;
	const char *event_id;
	int consumer_id;
	int32_t kafka_partition;
	int64_t kafka_offset;
	const char *detail;        /* optional extra field, omitted when NULL */
};

struct audit;

/* Open (create, append) the file at path; an empty path gives a writer that
 * writes nothing. NULL with a message on failure. The caller owns it. */
struct audit *audit_open(const char *path, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The line for rec, without the newline: a malloc'ed string the caller
 * frees, or NULL when out of memory. */
char *audit_format(const struct audit_line *rec) __attribute__((warn_unused_result));

/* Append one line. False with a message when the write failed (the
 * database row stays the record; the caller logs). */
bool audit_write(struct audit *a, const struct audit_line *rec, char *err, size_t errlen)
	__attribute__((warn_unused_result));

void audit_close(struct audit *a);

#endif
