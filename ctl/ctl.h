#ifndef OUTBOXD_CTL_H
#define OUTBOXD_CTL_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "conf.h"

/* What every subcommand gets: the configuration and the parsed options. */
struct ctl {
	struct conf conf;
	bool json;
	long wait_s;          /* verify --wait */
	const char *since;    /* audit --since */
	const char *kind;     /* audit --kind */
	bool dry_run;         /* cleanup --dry-run */
};

/* Connect or print why not; NULL means "exit 1". */
PGconn *ctl_connect(const char *conninfo, const char *what);

/* Run a query with text parameters expecting rows; NULL (message printed)
 * on failure. The caller clears the result. */
PGresult *ctl_query(PGconn *conn, const char *sql, int n, const char *const *params);

/* Subcommands: each returns the process exit code. */
int ctl_migrate(struct ctl *ctl);
int ctl_verify(struct ctl *ctl);
int ctl_status(struct ctl *ctl);
int ctl_audit(struct ctl *ctl);
int ctl_cleanup(struct ctl *ctl);

#endif
