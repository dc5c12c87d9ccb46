/* The outbox janitor's schedule inside outboxd (see janitor.h). The work is
 * common/outbox_cleanup.c, the same round `outboxctl cleanup` runs. */
#include "janitor.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "outbox_cleanup.h"
#include "proc.h"

#define JANITOR_OFF_CHECK_S 60 /* while off, how often to look whether a reload turned it on */

struct janitor {
	const struct conf *cfg;
	struct event *timer;
	pid_t child;            /* running round, 0: none */
	bool stopped;
	long rounds;
};

static void janitor_timer_cb(evutil_socket_t fd, short what, void *arg);

struct janitor *janitor_new(struct event_base *base, const struct conf *cfg)
{
	struct janitor *j = calloc(1, sizeof *j);

	if (j == NULL)
		return NULL;
	j->cfg = cfg;
	j->timer = evtimer_new(base, janitor_timer_cb, j);
	if (j->timer == NULL) {
		free(j);
		return NULL;
	}
	return j;
}

/* In the child: one round on a connection of its own, then _exit. Never
 * returns. Signals back to their defaults first: the supervisor's handlers
 * would wake ITS event loop. */
static void janitor_child(const struct conf *c, pid_t parent) __attribute__((noreturn));
static void janitor_child(const struct conf *c, pid_t parent)
{
	const int sigs[] = { SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD };
	struct outbox_cleanup_report rep;
	sigset_t none;
	char err[1024];
	struct db_err e;
	PGconn *conn;
	int rc = 1;

	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		signal(sigs[i], SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
		_exit(1);
	log_setup("janitor", -1);
	conn = db_open(c->db_conninfo, NULL, &e);
	if (conn == NULL) {
		log_warn("cannot connect to the database: %s; next round in %d s", e.msg,
			 c->cleanup_janitor_interval_s);
		_exit(1);
	}
	if (outbox_cleanup_round(conn, c, false, &rep, err, sizeof err)) {
		rc = 0;
		if (!rep.skipped)
			log_debug("round done in %lld ms: %d created, %d dropped, %d refused, "
				  "%d busy, %lld deleted", rep.elapsed_ms, rep.created, rep.dropped,
				  rep.refused, rep.busy, rep.deleted);
	} else {
		log_warn("round failed: %s; next round in %d s", err, c->cleanup_janitor_interval_s);
	}
	outbox_cleanup_report_free(&rep);
	PQfinish(conn);
	_exit(rc);
}

static void janitor_schedule(struct janitor *j, int seconds)
{
	struct timeval tv = { seconds, 0 };

	evtimer_add(j->timer, &tv);
}

static void janitor_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct janitor *j = arg;
	pid_t pid, parent = getpid();

	(void)fd;
	(void)what;
	if (j->stopped)
		return;
	if (j->cfg->cleanup_janitor_interval_s <= 0) {
		/* Off; look again later in case a reload turns it on. */
		janitor_schedule(j, JANITOR_OFF_CHECK_S);
		return;
	}
	janitor_schedule(j, j->cfg->cleanup_janitor_interval_s);
	if (j->child > 0) {
		log_info("janitor: previous round (pid %d) still running; skipping this one",
			 (int)j->child);
		return;
	}
	pid = fork();
	if (pid < 0) {
		log_warn("janitor: fork: %s", strerror(errno));
		return;
	}
	if (pid == 0)
		janitor_child(j->cfg, parent);
	j->child = pid;
	j->rounds++;
}

void janitor_start(struct janitor *j)
{
	if (j->cfg->cleanup_janitor_interval_s <= 0)
		log_info("janitor off ([cleanup] janitor_interval_s = 0)");
	else
		log_info("janitor: outbox cleanup every %d s", j->cfg->cleanup_janitor_interval_s);
	janitor_schedule(j, 0);
}

bool janitor_reap(struct janitor *j, pid_t pid, int status)
{
	char what[96];

	if (j == NULL || j->child <= 0 || pid != j->child)
		return false;
	j->child = 0;
	if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		proc_describe_exit(status, what, sizeof what);
		log_warn("janitor round %ld (pid %d) %s", j->rounds, (int)pid, what);
	}
	return true;
}

void janitor_stop(struct janitor *j)
{
	if (j == NULL)
		return;
	j->stopped = true;
	evtimer_del(j->timer);
	if (j->child > 0)
		kill(j->child, SIGTERM);
}

void janitor_free(struct janitor *j)
{
	if (j == NULL)
		return;
	event_free(j->timer);
	free(j);
}
