/* The readiness probe inside outboxd (see ready.h). */
#include "ready.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "db.h"
#include "kafka.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#define READY_INTERVAL_MS 2000
#define READY_TIMEOUT_S 3      /* each check's own limit */

struct ready {
	const struct conf *cfg;
	struct event *timer;
	pid_t child;          /* running probe, 0: none */
	int fd;               /* its answer, read end */
	int64_t child_ms;     /* when it started */
	bool stopped;
	bool ok;
	char why[256];
	long long sent_max;   /* highest sent id seen, and since when */
	int64_t sent_since_ms;
};

/* Unsent rows the relays may send (a row Kafka refused waits for the
 * operator, see sql/008), and the highest id sent (both cheap: the partial
 * index of unsent rows, the primary key read from its end). */
static const char SQL_PROGRESS[] =
	"SELECT (SELECT count(*) FROM public.outbox WHERE sent_at IS NULL AND refused_at IS NULL),"
	" coalesce((SELECT max(id) FROM public.outbox WHERE sent_at IS NOT NULL), 0)";

static void ready_timer_cb(evutil_socket_t fd, short what, void *arg);

struct ready *ready_new(struct event_base *base, const struct conf *cfg)
{
	struct ready *r = calloc(1, sizeof *r);

	if (r == NULL)
		return NULL;
	r->cfg = cfg;
	r->fd = -1;
	snprintf(r->why, sizeof r->why, "not checked yet");
	r->timer = evtimer_new(base, ready_timer_cb, r);
	if (r->timer == NULL) {
		free(r);
		return NULL;
	}
	return r;
}

/* In the child: the three checks, one line to out ("ok UNSENT SENT_MAX" or
 * "down WHY"), then _exit. Never returns. */
static void ready_child(const struct conf *c, pid_t parent, int out) __attribute__((noreturn));
static void ready_child(const struct conf *c, pid_t parent, int out)
{
	const int sigs[] = { SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD };
	const struct db_conn_opts quick = { .timeout_s = READY_TIMEOUT_S };
	char err[512], line[600];
	sigset_t none;
	rd_kafka_t *rk = NULL;
	struct db_err e;
	PGconn *conn;
	PGresult *res;
	int n;

	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		signal(sigs[i], SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
		_exit(1);
	log_setup("ready", -1);
	log_threshold = LOG_ERROR; /* what it finds goes to /readyz and the supervisor's log */
	conn = db_open(c->db_conninfo, &quick, &e);
	if (conn == NULL) {
		n = snprintf(line, sizeof line, "down the database does not answer: %s\n", e.msg);
		goto out;
	}
	res = db_query(conn, SQL_PROGRESS, 0, NULL, PGRES_TUPLES_OK, &e);
	if (res == NULL) {
		n = snprintf(line, sizeof line, "down the outbox cannot be read: %s\n", e.msg);
		PQfinish(conn);
		goto out;
	}
	n = snprintf(line, sizeof line, "ok %s %s\n", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
	PQclear(res);
	PQfinish(conn);
	rk = kafka_producer_new(c, NULL, err, sizeof err);
	if (rk == NULL || !kafka_ping(rk, READY_TIMEOUT_S * 1000))
		n = snprintf(line, sizeof line, "down Kafka (%s) does not answer\n", c->kafka_brokers);
out:
	if (rk != NULL)
		rd_kafka_destroy(rk);
	if (n > 0 && write(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0)
		_exit(1);
	_exit(0);
}

static void ready_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct timeval tv = { READY_INTERVAL_MS / 1000, (READY_INTERVAL_MS % 1000) * 1000 };
	struct ready *r = arg;
	pid_t pid, parent = getpid();
	int p[2];

	(void)fd;
	(void)what;
	if (r->stopped)
		return;
	evtimer_add(r->timer, &tv);
	if (r->child > 0) {
		if (util_mono_ms() - r->child_ms > 4 * READY_TIMEOUT_S * 1000) {
			kill(r->child, SIGKILL);
			r->ok = false;
			snprintf(r->why, sizeof r->why, "the readiness probe hangs");
		}
		return;
	}
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
		log_warn("ready: pipe: %s", strerror(errno));
		return;
	}
	pid = fork();
	if (pid < 0) {
		log_warn("ready: fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return;
	}
	if (pid == 0) {
		close(p[0]);
		ready_child(r->cfg, parent, p[1]);
	}
	close(p[1]);
	r->child = pid;
	r->fd = p[0];
	r->child_ms = util_mono_ms();
}

void ready_start(struct ready *r)
{
	struct timeval tv = { 0, 0 };

	evtimer_add(r->timer, &tv);
}

/* Judge one answer: up, and either nothing waits or the sent mark moved
 * within stall_ms. */
static void ready_judge(struct ready *r, const char *line)
{
	long long unsent, sent_max;
	int64_t now = util_mono_ms();

	if (strncmp(line, "down ", 5) == 0 || sscanf(line, "ok %lld %lld", &unsent, &sent_max) != 2) {
		r->ok = false;
		snprintf(r->why, sizeof r->why, "%s", strncmp(line, "down ", 5) == 0 ? line + 5
			 : "the readiness probe gave no answer");
		r->why[strcspn(r->why, "\n")] = '\0';
		return;
	}
	if (sent_max != r->sent_max || unsent == 0 || r->sent_since_ms == 0) {
		r->sent_max = sent_max;
		r->sent_since_ms = now;
	}
	if (unsent > 0 && now - r->sent_since_ms >= r->cfg->sup_stall_ms) {
		r->ok = false;
		snprintf(r->why, sizeof r->why, "stalled: %lld unsent events and nothing sent for %" PRId64
			 " s", unsent, (now - r->sent_since_ms) / 1000);
		return;
	}
	r->ok = true;
	r->why[0] = '\0';
}

bool ready_reap(struct ready *r, pid_t pid, int status)
{
	char line[600] = "";
	ssize_t n;

	if (r == NULL || r->child <= 0 || pid != r->child)
		return false;
	r->child = 0;
	n = read(r->fd, line, sizeof line - 1);
	close(r->fd);
	r->fd = -1;
	line[n > 0 ? n : 0] = '\0';
	if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		line[0] = '\0';
	{
		bool was = r->ok;

		ready_judge(r, line);
		if (was && !r->ok)
			log_warn("not ready: %s", r->why);
		else if (!was && r->ok)
			log_info("ready: the database and Kafka answer and the outbox is moving");
	}
	return true;
}

bool ready_ok(const struct ready *r, const char **why)
{
	*why = r->why;
	return r->ok;
}

void ready_stop(struct ready *r)
{
	if (r == NULL)
		return;
	r->stopped = true;
	evtimer_del(r->timer);
	if (r->child > 0)
		kill(r->child, SIGKILL);
}

void ready_free(struct ready *r)
{
	if (r == NULL)
		return;
	if (r->fd >= 0)
		close(r->fd);
	event_free(r->timer);
	free(r);
}
