#ifndef OUTBOXD_CTL_H
#define OUTBOXD_CTL_H

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "conf.h"

/* What every subcommand gets: the configuration and the parsed options. */
struct ctl {
	struct conf conf;
	bool json;
	long wait_s;          /* verify --wait */
	const char *since;    /* audit --since */
	const char *kind;     /* audit --kind */
	char **args;          /* dlq, replay, inbox-sweep: arguments after the subcommand */
	int nargs;
	const char *reason;   /* dlq drop --reason */
	const char *order;    /* replay --order */
	long from_seq;        /* replay --from-seq (default 1) */
	long hours;           /* inbox-sweep --hours (-1: the configuration's) */
	bool all;             /* dlq list --all */
	bool dry_run;         /* cleanup --dry-run */
	const char *cluster_id; /* accept-cluster --cluster-id */
};

/* Connect or print why not; NULL means "exit 1". */
PGconn *ctl_connect(const char *conninfo, const char *what);

/* A consumer handle for [consumer] group_id that never joins the group;
 * NULL with a message. */
rd_kafka_t *ctl_lag_open(const struct conf *c, char *err, size_t errlen);

/* The group's lag on topic: messages after its committed offsets (from the
 * start of a partition it committed nothing on), summed; 0 when the topic
 * does not exist. -1 with a message when Kafka did not answer. */
long long ctl_lag(rd_kafka_t *rk, const char *topic, char *err, size_t errlen);

/* Subcommands: each returns the process exit code. */
int ctl_migrate(struct ctl *ctl);
int ctl_verify(struct ctl *ctl);
int ctl_status(struct ctl *ctl);
int ctl_audit(struct ctl *ctl);
int ctl_dlq(struct ctl *ctl);
int ctl_replay(struct ctl *ctl);
int ctl_inbox_sweep(struct ctl *ctl);
int ctl_accept_cluster(struct ctl *ctl);

/* The inbox sweep with c's batch size and the given retention (for
 * outboxctl cleanup too): prints what it deleted; the exit code. */
int ctl_inbox_sweep_run(const struct conf *c, int hours, bool json);
int ctl_cleanup(struct ctl *ctl);

#endif
