#ifndef OUTBOXD_OUTBOX_CLEANUP_H
#define OUTBOXD_OUTBOX_CLEANUP_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "conf.h"

/* Second key of the janitor's session advisory lock (the first is the one
 * `outboxctl migrate` uses): one janitor round at a time per database,
 * whichever supervisor or operator starts it. */
#define OUTBOX_CLEANUP_LOCK_NS 727000
#define OUTBOX_CLEANUP_LOCK_ID 6

/* What one round did (or, dry, would do). */
struct outbox_cleanup_report {
	bool skipped;           /* another janitor held the lock: nothing done */
	bool partitioned;       /* public.outbox is partitioned */
	bool dry_run;
	int created;            /* partitions created (or that would be) */
	int dropped;            /* partitions dropped (or that would be) */
	int refused;            /* expired partitions kept: unsent rows, or a refused create */
	int busy;               /* DDL that gave up on lock_timeout; retried next round */
	long long deleted;      /* rows deleted in batches (dry: deletable now) */
	long long kept_unsent;  /* unsent rows older than the retention, kept */
	long long freed_bytes;  /* size of the dropped partitions */
	bool budget_hit;        /* stopped early: round_budget_ms ran out */
	long long elapsed_ms;
	json_t *actions;        /* array of {action, partition, ...}; owned by the report */
};

/* Run one janitor round on conn with the [cleanup] settings of c: take the
 * advisory lock (skipped = true when another janitor has it), then for a
 * partitioned outbox create the partitions ahead, drop every expired
 * partition that holds no unsent row (logging each drop and each refusal)
 * and batch-delete old sent rows of the default partition; for an
 * unpartitioned outbox, batch-delete sent rows older than the retention.
 * Returns true when the round ran (refusals included); false on a database
 * error (message in err; retryable). The caller frees rep with
 * outbox_cleanup_report_free(). Leaves no transaction open. */
bool outbox_cleanup_round(PGconn *conn, const struct conf *c, bool dry_run,
			  struct outbox_cleanup_report *rep, char *err, size_t errlen)
	__attribute__((warn_unused_result));

void outbox_cleanup_report_free(struct outbox_cleanup_report *rep);

#endif
