/* outboxctl inbox-sweep [--hours N]: inbox retention by hand. Deletes
 * sink.inbox rows received more than N hours ago ([consumer]
 * inbox_retention_hours by default) in batches of [consumer]
 * inbox_sweep_batch, under the same advisory lock as the consumers' own
 * periodic sweep (waiting for it if one is running). */
#include <inttypes.h>
#include <stdio.h>

#include "../consumer/sweep.h"
#include "ctl.h"

int ctl_inbox_sweep_run(const struct conf *c, int hours, bool json)
{
	PGconn *conn = ctl_connect(conf_sink_conninfo(c), "consumer");
	char err[512], state[6];
	int64_t deleted = 0;
	bool busy, more;
	int rc = 1;

	if (conn == NULL)
		return 1;
	if (!sweep_inbox(conn, hours, c->consumer_inbox_sweep_batch, 0, 0, true, &deleted, &busy,
			 &more, state, err, sizeof err)) {
		fprintf(stderr, "outboxctl: inbox sweep: %s\n", err);
		goto out;
	}
	if (json)
		printf("{\"deleted\": %" PRId64 ", \"hours\": %d}\n", deleted, hours);
	else
		printf("inbox: deleted %" PRId64 " row(s) received more than %d hour(s) ago\n",
		       deleted, hours);
	rc = 0;
out:
	PQfinish(conn);
	return rc;
}

int ctl_inbox_sweep(struct ctl *ctl)
{
	if (ctl->nargs > 0) {
		fprintf(stderr, "outboxctl: unexpected argument \"%s\"\n", ctl->args[0]);
		return 2;
	}
	return ctl_inbox_sweep_run(&ctl->conf,
				   ctl->hours >= 0 ? (int)ctl->hours
						   : ctl->conf.consumer_inbox_retention_hours,
				   ctl->json);
}
