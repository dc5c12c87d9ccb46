/* outboxctl cleanup: one janitor round by hand (the same code outboxd's
 * janitor runs; see common/outbox_cleanup.c). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "ctl.h"
#include "outbox_cleanup.h"

int ctl_cleanup(struct ctl *ctl)
{
	struct outbox_cleanup_report rep;
	char err[1024];
	PGconn *conn = ctl_connect(ctl->conf.db_conninfo, "outbox");
	int rc = 1;

	if (conn == NULL)
		return 1;
	if (!outbox_cleanup_round(conn, &ctl->conf, ctl->dry_run, &rep, err, sizeof err)) {
		fprintf(stderr, "outboxctl: cleanup: %s\n", err);
		goto out;
	}
	if (ctl->json) {
		json_t *o = json_pack("{s:b, s:b, s:b, s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:b, s:I, s:O}",
				      "skipped", rep.skipped, "partitioned", rep.partitioned,
				      "dry_run", rep.dry_run, "created", rep.created,
				      "dropped", rep.dropped, "refused", rep.refused,
				      "busy", rep.busy, "deleted", (json_int_t)rep.deleted,
				      "kept_unsent", (json_int_t)rep.kept_unsent,
				      "freed_bytes", (json_int_t)rep.freed_bytes,
				      "budget_hit", rep.budget_hit,
				      "elapsed_ms", (json_int_t)rep.elapsed_ms,
				      "actions", rep.actions);
		char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

		if (s == NULL) {
			fprintf(stderr, "outboxctl: cleanup: out of memory\n");
			json_decref(o);
			goto out_rep;
		}
		printf("%s\n", s);
		free(s);
		json_decref(o);
	} else if (rep.skipped) {
		printf("another janitor is running (advisory lock held); nothing done\n");
	} else {
		size_t i;
		json_t *a;

		json_array_foreach(rep.actions, i, a) {
			const char *what = json_string_value(json_object_get(a, "action"));
			const char *table = json_string_value(json_object_get(a, "table"));
			json_t *lo = json_object_get(a, "lo"), *hi = json_object_get(a, "hi");

			printf("%-13s %s", what, table);
			if (lo != NULL && hi != NULL)
				printf(" [%s, %s)", json_string_value(lo), json_string_value(hi));
			if (json_object_get(a, "unsent") != NULL)
				printf(" unsent=%" JSON_INTEGER_FORMAT,
				       json_integer_value(json_object_get(a, "unsent")));
			if (json_object_get(a, "rows") != NULL)
				printf(" rows=%" JSON_INTEGER_FORMAT,
				       json_integer_value(json_object_get(a, "rows")));
			if (json_object_get(a, "kept_unsent") != NULL)
				printf(" kept_unsent=%" JSON_INTEGER_FORMAT,
				       json_integer_value(json_object_get(a, "kept_unsent")));
			printf("\n");
		}
		printf("%s%s outbox: %d partition(s) %s, %d %s, %d refused, %d busy; "
		       "%lld row(s) %s; %lld unsent old row(s) kept; %lld ms\n",
		       rep.dry_run ? "dry run, " : "", rep.partitioned ? "partitioned" : "unpartitioned",
		       rep.created, rep.dry_run ? "to create" : "created", rep.dropped,
		       rep.dry_run ? "to drop" : "dropped", rep.refused, rep.busy, rep.deleted,
		       rep.dry_run ? "to delete" : "deleted", rep.kept_unsent, rep.elapsed_ms);
	}
	rc = rep.skipped ? 1 : 0;
out_rep:
	outbox_cleanup_report_free(&rep);
out:
	PQfinish(conn);
	return rc;
}
