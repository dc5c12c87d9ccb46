/* outboxctl: the operator tool (migrate, status, audit, verify, dlq, replay,
 * inbox-sweep, cleanup, accept-cluster). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "db.h"
#include "log.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: outboxctl [-c FILE] SUBCOMMAND [options] [--json]\n"
		"\n"
		"  migrate                 create or upgrade the schema (idempotent)\n"
		"  status                  unsent events, oldest unsent age, relay and consumer\n"
		"                          counters, consumer lag\n"
		"  audit [--since T] [--kind K]\n"
		"                          the ordering audit log (gaps, duplicates, poison);\n"
		"                          T is a PostgreSQL timestamp or interval (\"10 minutes\")\n"
		"  verify [--wait SECONDS] wait for the pipeline to drain (default 10 s), then\n"
		"                          judge it: exit 0 only when nothing is lost, nothing\n"
		"                          applied twice, nothing out of order, no gap open\n"
		"  dlq list [--all]        open dead letters (--all: resolved ones too)\n"
		"  dlq retry ID            apply a dead letter again, then release its order's\n"
		"                          parked events in order and lift the quarantine\n"
		"  dlq drop ID --reason TEXT\n"
		"                          give up on a dead letter (the order steps over its\n"
		"                          seq; recorded in the audit log), then release\n"
		"  replay --order ID [--from-seq N]\n"
		"                          re-publish an order's sent events from the outbox\n"
		"                          to Kafka (consumers drop what they already have)\n"
		"  inbox-sweep [--hours N] delete inbox rows older than N hours (default\n"
		"                          [consumer] inbox_retention_hours)\n"
		"  cleanup [--dry-run]     one outbox janitor round: create partitions ahead,\n"
		"                          drop expired fully sent partitions, delete old sent\n"
		"                          rows in batches ([cleanup] settings); exit 1 when\n"
		"                          another janitor is running\n"
		"  accept-cluster [--cluster-id ID]\n"
		"                          make ID (default: the id the configured broker\n"
		"                          reports) the Kafka cluster the outbox publishes to,\n"
		"                          replacing the recorded one; prints old and new.\n"
		"                          Relays stop publishing while their broker is on\n"
		"                          another cluster than the recorded one, and pick the\n"
		"                          accepted id up without a restart. Events already\n"
		"                          marked sent stay on the old cluster and are not sent\n"
		"                          again (replay --order re-sends an order's); unsent\n"
		"                          events go to the new one\n"
		"\n"
		"  -c FILE   configuration (default $OUTBOX_CONF or conf/outboxd.conf)\n"
		"  --json    machine-readable output\n");
}

PGconn *ctl_connect(const char *conninfo, const char *what)
{
	struct db_err e;
	PGconn *conn = db_open(conninfo, NULL, &e);

	if (conn == NULL) {
		char masked[1024];

		db_conninfo_masked(conninfo, masked, sizeof masked);
		fprintf(stderr, "outboxctl: cannot connect to the %s database (\"%s\"): %s\n", what,
			masked, e.msg);
	}
	return conn;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "wait", required_argument, NULL, 'w' },
		{ "since", required_argument, NULL, 's' },
		{ "kind", required_argument, NULL, 'k' },
		{ "reason", required_argument, NULL, 'r' },
		{ "order", required_argument, NULL, 'o' },
		{ "from-seq", required_argument, NULL, 'f' },
		{ "hours", required_argument, NULL, 'H' },
		{ "all", no_argument, NULL, 'a' },
		{ "dry-run", no_argument, NULL, 'D' },
		{ "cluster-id", required_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl ctl;
	const char *conf_path = NULL, *cmd;
	char err[1024];
	int c;

	memset(&ctl, 0, sizeof ctl);
	ctl.wait_s = 10;
	ctl.from_seq = 1;
	ctl.hours = -1;
	log_setup("outboxctl", -1);
	while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': conf_path = optarg; break;
		case 'j': ctl.json = true; break;
		case 'w':
			if (!util_parse_int(optarg, 0, 86400, &ctl.wait_s)) {
				fprintf(stderr, "outboxctl: bad value \"%s\" for --wait (0..86400)\n", optarg);
				return 2;
			}
			break;
		case 's': ctl.since = optarg; break;
		case 'k': ctl.kind = optarg; break;
		case 'r': ctl.reason = optarg; break;
		case 'o': ctl.order = optarg; break;
		case 'a': ctl.all = true; break;
		case 'f':
			if (!util_parse_int(optarg, 1, 2147483647L, &ctl.from_seq)) {
				fprintf(stderr, "outboxctl: bad value \"%s\" for --from-seq\n", optarg);
				return 2;
			}
			break;
		case 'H':
			if (!util_parse_int(optarg, 0, 87600, &ctl.hours)) {
				fprintf(stderr, "outboxctl: bad value \"%s\" for --hours (0..87600)\n",
					optarg);
				return 2;
			}
			break;
		case 'D': ctl.dry_run = true; break;
		case 'C': ctl.cluster_id = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "outboxctl: a subcommand is required (migrate, status, audit, "
			"verify, cleanup, dlq, replay, inbox-sweep, accept-cluster)\n");
		return 2;
	}
	cmd = argv[optind];
	if (ctl.cluster_id != NULL && strcmp(cmd, "accept-cluster") != 0) {
		fprintf(stderr, "outboxctl: --cluster-id belongs to accept-cluster, not %s\n", cmd);
		return 2;
	}
	ctl.args = argv + optind + 1;
	ctl.nargs = argc - optind - 1;
	if (strcmp(cmd, "dlq") == 0 || strcmp(cmd, "replay") == 0 ||
	    strcmp(cmd, "inbox-sweep") == 0 || strcmp(cmd, "accept-cluster") == 0) {
		if (!conf_load(&ctl.conf, conf_path, err, sizeof err)) {
			fprintf(stderr, "%s\n", err);
			return 2;
		}
		if (strcmp(cmd, "dlq") == 0)
			return ctl_dlq(&ctl);
		if (strcmp(cmd, "replay") == 0)
			return ctl_replay(&ctl);
		if (strcmp(cmd, "accept-cluster") == 0)
			return ctl_accept_cluster(&ctl);
		return ctl_inbox_sweep(&ctl);
	}
	if (optind + 1 < argc) {
		fprintf(stderr, "outboxctl: unexpected argument \"%s\"\n", argv[optind + 1]);
		return 2;
	}
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "migrate") != 0 && strcmp(cmd, "status") != 0 &&
	    strcmp(cmd, "audit") != 0 && strcmp(cmd, "verify") != 0 &&
	    strcmp(cmd, "cleanup") != 0) {
		fprintf(stderr, "outboxctl: unknown subcommand \"%s\" (see --help)\n", cmd);
		return 2;
	}
	if (!conf_load(&ctl.conf, conf_path, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (strcmp(cmd, "migrate") == 0)
		return ctl_migrate(&ctl);
	if (strcmp(cmd, "status") == 0)
		return ctl_status(&ctl);
	if (strcmp(cmd, "audit") == 0)
		return ctl_audit(&ctl);
	if (strcmp(cmd, "cleanup") == 0)
		return ctl_cleanup(&ctl);
	return ctl_verify(&ctl);
}
