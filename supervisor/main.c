/* outboxd: the supervisor.
 *
 * A libevent loop that forks and execs N relay and M consumer workers, keeps
 * them in a fixed process table, reaps them on SIGCHLD, respawns them with a
 * capped exponential backoff (never a worker that exited 2: that is a
 * configuration error), reloads the configuration on SIGHUP and stops
 * gracefully on SIGTERM/SIGINT. Health, readiness, status and metrics are
 * served over HTTP on loopback.
 *
 * The supervisor itself never opens a database or Kafka connection: what it
 * would hold before fork() would be shared by every child. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conf.h"
#include "http.h"
#include "janitor.h"
#include "ready.h"
#include "log.h"
#include "proc.h"
#include "util.h"

struct sup {
	struct event_base *base;
	struct conf cfg;
	const char *conf_arg;         /* -c FILE, or NULL */
	int relay_mode_cli;           /* -1: from the config */
	struct proc_exec exec;
	struct proc_table table;
	struct event *sig_ev[4];
	struct event *shutdown_timer;
	struct http_server *http;
	struct janitor *janitor;      /* outbox cleanup rounds ([cleanup]) */
	struct ready *ready;          /* /readyz: can the pipeline move events */
	char http_listen[128];        /* what http is bound to (reload can't move it) */
	char pid_file[CONF_STR];
	bool pid_file_written;
	bool unclean;                 /* some worker did not end with status 0 on stop */
	int exit_code;
};

static struct sup sup;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: outboxd [-c FILE] [--relays N] [--consumers M] [--relay-mode poll|cdc]\n"
		"               [--pid-file FILE] [--check-config]\n"
		"\n"
		"The supervisor: runs N outbox-relay and M outbox-consumer workers, respawns\n"
		"them with backoff (never one that exits 2), serves /healthz /readyz /status\n"
		"/metrics on [supervisor] http_listen.\n"
		"  -c, --config FILE     configuration (default $OUTBOX_CONF or conf/outboxd.conf)\n"
		"  --relays N            relay workers, 1..64 (default 1)\n"
		"  --consumers M         consumer workers, 1..64 (default N)\n"
		"  --relay-mode MODE     poll or cdc, overrides [relay] mode\n"
		"  --pid-file FILE       write the pid here (overrides [supervisor] pid_file)\n"
		"  --check-config        load and validate the configuration, then exit\n"
		"  -h, --help            this text\n"
		"Signals: SIGTERM/SIGINT stop the workers gracefully (a second one kills them);\n"
		"SIGHUP reloads the configuration and passes SIGHUP on to the workers.\n"
		"Exit: 0 clean stop, 1 runtime failure, 2 usage/configuration error or every\n"
		"worker failed with a configuration error.\n");
}

/* The directory outboxd's own executable is in. */
static bool self_dir(char *out, size_t outlen)
{
	char buf[4096];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);

	if (n <= 0)
		return false;
	buf[n] = '\0';
	snprintf(out, outlen, "%s", dirname(buf));
	return true;
}

/* Everything conf_load() does not know about the supervisor's keys: the
 * listen address parses and the worker binaries exist. Fills exec->bin_dir.
 * Returns false with the reason in err (the caller exits 2 or keeps the old
 * configuration). */
static bool validate(const struct conf *c, struct proc_exec *x, char *err, size_t errlen)
{
	char host[128], path[CONF_STR + 32], why[512], w[CONF_STR + 16];
	const char *names[] = { "outbox-relay", "outbox-consumer" };
	bool enabled;
	int port;

	if (!http_parse_listen(c->sup_http_listen, &enabled, host, sizeof host, &port, why,
			       sizeof why)) {
		snprintf(err, errlen, "%s: [supervisor] %s",
			 conf_where(c, "supervisor", "http_listen", w, sizeof w), why);
		return false;
	}
	if (c->sup_bin_dir[0] != '\0' && strlen(c->sup_bin_dir) < sizeof x->bin_dir)
		snprintf(x->bin_dir, sizeof x->bin_dir, "%s", c->sup_bin_dir);
	else if (c->sup_bin_dir[0] != '\0') {
		snprintf(err, errlen, "%s: [supervisor] bin_dir: longer than %zu bytes",
			 conf_where(c, "supervisor", "bin_dir", w, sizeof w), sizeof x->bin_dir - 1);
		return false;
	} else if (!self_dir(x->bin_dir, sizeof x->bin_dir)) {
		snprintf(err, errlen, "%s: cannot find outboxd's own directory; set [supervisor] "
			 "bin_dir", conf_where(c, "supervisor", "bin_dir", w, sizeof w));
		return false;
	}
	for (size_t i = 0; i < 2; i++) {
		snprintf(path, sizeof path, "%s/%s", x->bin_dir, names[i]);
		if (access(path, X_OK) != 0) {
			snprintf(err, errlen, "%s: [supervisor] bin_dir: worker binary %s: %s",
				 conf_where(c, "supervisor", "bin_dir", w, sizeof w), path,
				 strerror(errno));
			return false;
		}
	}
	return true;
}

static const char *relay_mode_name(int m)
{
	return m == RELAY_CDC ? "cdc" : "poll";
}

static void apply_conf(void)
{
	int mode = sup.relay_mode_cli >= 0 ? sup.relay_mode_cli : sup.cfg.relay_mode;

	sup.exec.relay_mode = relay_mode_name(mode);
	/* Children load the same file; without -c they resolve it themselves
	 * ($OUTBOX_CONF or conf/outboxd.conf, in the same working directory). */
	if (sup.conf_arg != NULL)
		snprintf(sup.exec.conf_path, sizeof sup.exec.conf_path, "%s", sup.conf_arg);
	else
		sup.exec.conf_path[0] = '\0';
}

/* Pid file: refuses (false) when it names another live outboxd. */
static bool pid_file_write(const char *path, char *err, size_t errlen)
{
	char buf[32];
	FILE *f = fopen(path, "r");
	int fd;
	ssize_t n;

	if (f != NULL) {
		long old = 0;

		if (fscanf(f, "%ld", &old) == 1 && old > 0 && old != (long)getpid() &&
		    kill((pid_t)old, 0) == 0) {
			fclose(f);
			snprintf(err, errlen, "pid file %s: outboxd is already running as pid %ld",
				 path, old);
			return false;
		}
		fclose(f);
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		snprintf(err, errlen, "pid file %s: %s", path, strerror(errno));
		return false;
	}
	snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
	n = write(fd, buf, strlen(buf));
	if (close(fd) != 0 || n != (ssize_t)strlen(buf)) {
		snprintf(err, errlen, "pid file %s: write failed", path);
		unlink(path);
		return false;
	}
	return true;
}

static void start_worker(struct proc *p);

static void schedule_respawn(struct proc *p)
{
	struct timeval tv = { p->next_delay_ms / 1000, (p->next_delay_ms % 1000) * 1000 };

	evtimer_add((struct event *)p->timer, &tv);
}

static void respawn_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	if (sup.table.stopping)
		return;
	start_worker(arg);
}

static void start_worker(struct proc *p)
{
	char err[256];

	if (!proc_spawn(p, &sup.exec, err, sizeof err)) {
		p->backoff_ms = p->backoff_ms <= 0 ? PROC_BACKOFF_BASE_MS : p->backoff_ms * 2;
		if (p->backoff_ms > sup.cfg.sup_backoff_max_ms)
			p->backoff_ms = sup.cfg.sup_backoff_max_ms;
		p->next_delay_ms = p->backoff_ms;
		p->state = PROC_BACKOFF;
		log_error("%s[%d]: cannot start: %s; retrying in %ld ms", proc_role_name(p->role),
			  p->index, err, p->next_delay_ms);
		schedule_respawn(p);
		return;
	}
	log_info("%s[%d] started as pid %d%s", proc_role_name(p->role), p->index, (int)p->pid,
		 p->ctr.restarts > 0 ? " (respawn)" : "");
}

static void check_all_stopped(void)
{
	if (sup.table.stopping && proc_count(&sup.table, PROC_RUNNING) == 0) {
		if (sup.shutdown_timer != NULL)
			evtimer_del(sup.shutdown_timer);
		sup.exit_code = sup.unclean ? 1 : 0;
		log_info("all workers stopped; exiting %d", sup.exit_code);
		event_base_loopbreak(sup.base);
	}
}

/* A child stopped by a signal (SIGSTOP, SIGTSTP; not a debugger's stop,
 * which its tracer sees) is killed at once, and respawned like any worker
 * that died. A stopped relay still holds its claim until its session is
 * ended, after which another relay sends the same events and newer ones;
 * resumed, it would let the batch queued in its Kafka producer reach the
 * broker after them, out of order. Killed while stopped, that queue is
 * gone (README, "A frozen worker"). */
static void kill_stopped(pid_t pid, const char *what)
{
	struct proc *p = proc_find(&sup.table, pid);

	if (p != NULL)
		log_warn("%s[%d] (pid %d) %s: killing it (a stopped worker's queued messages "
			 "would reach Kafka late, behind newer ones); it is respawned",
			 proc_role_name(p->role), p->index, (int)pid, what);
	else
		log_warn("child pid %d %s: killing it", (int)pid, what);
	kill(pid, SIGKILL);
}

static void reap(void)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG | WUNTRACED)) > 0) {
		struct proc *p;
		char what[96];

		proc_describe_exit(status, what, sizeof what);
		if (WIFSTOPPED(status)) {
			kill_stopped(pid, what);
			continue;
		}
		if (janitor_reap(sup.janitor, pid, status) || ready_reap(sup.ready, pid, status))
			continue;
		p = proc_find(&sup.table, pid);
		if (p == NULL) {
			log_warn("unknown child pid %d %s", (int)pid, what);
			continue;
		}
		proc_exited(&sup.table, p, status, util_mono_ms(), sup.cfg.sup_stable_ms,
			    sup.cfg.sup_backoff_max_ms);
		switch (p->state) {
		case PROC_STOPPED:
			if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
				sup.unclean = true;
			log_info("%s[%d] (pid %d) %s", proc_role_name(p->role), p->index, (int)pid,
				 what);
			break;
		case PROC_FAILED:
			log_error("%s[%d] (pid %d) %s: configuration or usage error, NOT respawning it",
				  proc_role_name(p->role), p->index, (int)pid, what);
			break;
		case PROC_BACKOFF:
			log_warn("%s[%d] (pid %d) %s; respawning in %ld ms", proc_role_name(p->role),
				 p->index, (int)pid, what, p->next_delay_ms);
			schedule_respawn(p);
			break;
		default:
			break;
		}
	}
	if (pid < 0 && errno != ECHILD)
		log_warn("waitpid: %s", strerror(errno));
	if (!sup.table.stopping && proc_count(&sup.table, PROC_FAILED) == sup.table.n) {
		log_error("every worker failed with a configuration error; exiting 2");
		sup.exit_code = 2;
		event_base_loopbreak(sup.base);
		return;
	}
	check_all_stopped();
}

static void shutdown_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_warn("shutdown timeout (%d ms): killing %d worker(s) still running",
		 sup.cfg.sup_shutdown_timeout_ms, proc_count(&sup.table, PROC_RUNNING));
	for (int i = 0; i < sup.table.n; i++) {
		struct proc *p = &sup.table.slots[i];

		if (p->state == PROC_RUNNING && p->pid > 0) {
			log_warn("%s[%d] (pid %d): SIGKILL", proc_role_name(p->role), p->index,
				 (int)p->pid);
			kill(p->pid, SIGKILL);
		}
	}
	sup.unclean = true;
}

/* Second SIGTERM/SIGINT: SIGKILL everyone, reap for at most a second, exit. */
static void kill_now(void)
{
	int64_t deadline = util_mono_ms() + 1000;

	log_warn("second stop signal: killing %d worker(s) now",
		 proc_count(&sup.table, PROC_RUNNING));
	for (int i = 0; i < sup.table.n; i++)
		if (sup.table.slots[i].state == PROC_RUNNING && sup.table.slots[i].pid > 0)
			kill(sup.table.slots[i].pid, SIGKILL);
	while (proc_count(&sup.table, PROC_RUNNING) > 0 && util_mono_ms() < deadline) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		struct proc *p;

		if (pid < 0)
			break;
		if (pid == 0) {
			usleep(10000);
			continue;
		}
		p = proc_find(&sup.table, pid);
		if (p != NULL)
			proc_exited(&sup.table, p, status, util_mono_ms(), sup.cfg.sup_stable_ms,
				    sup.cfg.sup_backoff_max_ms);
	}
	sup.exit_code = 1;
	event_base_loopbreak(sup.base);
}

static void begin_shutdown(int sig)
{
	struct timeval tv = { sup.cfg.sup_shutdown_timeout_ms / 1000,
			      (sup.cfg.sup_shutdown_timeout_ms % 1000) * 1000 };

	if (sup.table.stopping) {
		kill_now();
		return;
	}
	sup.table.stopping = true;
	janitor_stop(sup.janitor);
	ready_stop(sup.ready);
	log_info("SIG%s: stopping %d worker(s) (timeout %d ms)", sigabbrev_np(sig),
		 proc_count(&sup.table, PROC_RUNNING), sup.cfg.sup_shutdown_timeout_ms);
	for (int i = 0; i < sup.table.n; i++) {
		struct proc *p = &sup.table.slots[i];

		if (p->state == PROC_BACKOFF || p->state == PROC_IDLE) {
			evtimer_del((struct event *)p->timer);
			p->state = PROC_STOPPED;
		} else if (p->state == PROC_RUNNING && p->pid > 0) {
			kill(p->pid, SIGTERM);
		}
	}
	evtimer_add(sup.shutdown_timer, &tv);
	check_all_stopped();
}

/* SIGHUP: parse into a new struct, validate, swap only if valid; then pass
 * SIGHUP on so the workers reload too. */
static void reload(void)
{
	static struct conf next;
	struct proc_exec x = sup.exec;
	char err[1024];

	if (!conf_load(&next, sup.conf_arg, err, sizeof err) ||
	    !validate(&next, &x, err, sizeof err)) {
		log_error("reload failed, keeping the old configuration: %s", err);
	} else {
		if (strcmp(next.sup_http_listen, sup.http_listen) != 0)
			log_warn("[supervisor] http_listen changed to \"%s\"; it takes a restart "
				 "(still serving \"%s\")", next.sup_http_listen, sup.http_listen);
		sup.cfg = next;
		sup.exec = x;
		apply_conf();
		log_info("configuration reloaded from %s",
			 sup.cfg.path[0] != '\0' ? sup.cfg.path : "(defaults)");
	}
	for (int i = 0; i < sup.table.n; i++)
		if (sup.table.slots[i].state == PROC_RUNNING && sup.table.slots[i].pid > 0)
			kill(sup.table.slots[i].pid, SIGHUP);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	switch (sig) {
	case SIGCHLD: reap(); break;
	case SIGTERM:
	case SIGINT: begin_shutdown((int)sig); break;
	case SIGHUP:
		log_info("SIGHUP: reloading the configuration");
		reload();
		break;
	default: break;
	}
}

static void cleanup(void)
{
	for (int i = 0; i < sup.table.n; i++)
		if (sup.table.slots[i].timer != NULL)
			event_free(sup.table.slots[i].timer);
	for (size_t i = 0; i < sizeof sup.sig_ev / sizeof sup.sig_ev[0]; i++)
		if (sup.sig_ev[i] != NULL)
			event_free(sup.sig_ev[i]);
	if (sup.shutdown_timer != NULL)
		event_free(sup.shutdown_timer);
	http_free(sup.http);
	janitor_free(sup.janitor);
	ready_free(sup.ready);
	if (sup.base != NULL)
		event_base_free(sup.base);
	if (sup.pid_file_written)
		unlink(sup.pid_file);
}

/* Parse --relays/--consumers: 1..64 or a clear error. */
static bool parse_count(const char *flag, const char *s, long *out)
{
	if (!util_parse_int(s, 1, PROC_MAX_PER_ROLE, out)) {
		fprintf(stderr, "outboxd: %s must be a number from 1 to %d, not \"%s\"\n", flag,
			PROC_MAX_PER_ROLE, s);
		return false;
	}
	return true;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "relays", required_argument, NULL, 'r' },
		{ "consumers", required_argument, NULL, 'n' },
		{ "relay-mode", required_argument, NULL, 'm' },
		{ "pid-file", required_argument, NULL, 'p' },
		{ "check-config", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP };
	const char *pid_arg = NULL, *mode = NULL;
	long nrelays = 1, nconsumers = -1;
	bool check_only = false, http_on;
	char err[1024], host[128];
	int c, port;

	log_setup("outboxd", -1);
	sup.relay_mode_cli = -1;
	while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': sup.conf_arg = optarg; break;
		case 'r':
			if (!parse_count("--relays", optarg, &nrelays))
				return 2;
			break;
		case 'n':
			if (!parse_count("--consumers", optarg, &nconsumers))
				return 2;
			break;
		case 'm': mode = optarg; break;
		case 'p': pid_arg = optarg; break;
		case 'k': check_only = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outboxd: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	if (mode != NULL) {
		if (strcmp(mode, "poll") != 0 && strcmp(mode, "cdc") != 0) {
			fprintf(stderr, "outboxd: --relay-mode must be poll or cdc, not \"%s\"\n",
				mode);
			return 2;
		}
		sup.relay_mode_cli = strcmp(mode, "cdc") == 0 ? RELAY_CDC : RELAY_POLL;
	}
	if (nconsumers < 0)
		nconsumers = nrelays;

	if (!conf_load(&sup.cfg, sup.conf_arg, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (!validate(&sup.cfg, &sup.exec, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (check_only) {
		printf("configuration ok: %s\n",
		       sup.cfg.path[0] != '\0' ? sup.cfg.path : "(defaults, no file)");
		return 0;
	}
	apply_conf();
	if (!http_parse_listen(sup.cfg.sup_http_listen, &http_on, host, sizeof host, &port, err,
			       sizeof err)) {
		fprintf(stderr, "outboxd: %s\n", err); /* validate() has checked it */
		return 2;
	}
	snprintf(sup.http_listen, sizeof sup.http_listen, "%s", sup.cfg.sup_http_listen);
	snprintf(sup.pid_file, sizeof sup.pid_file, "%s",
		 pid_arg != NULL ? pid_arg : sup.cfg.sup_pid_file);

	sup.base = event_base_new();
	if (sup.base == NULL) {
		fprintf(stderr, "outboxd: event_base_new failed\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN); /* children get it back to default before exec */
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		sup.sig_ev[i] = evsignal_new(sup.base, sigs[i], signal_cb, NULL);
		if (sup.sig_ev[i] == NULL || evsignal_add(sup.sig_ev[i], NULL) != 0) {
			fprintf(stderr, "outboxd: cannot install signal handlers\n");
			cleanup();
			return 1;
		}
	}
	/* After the signal events: a SIGTERM from now on removes the file. */
	if (sup.pid_file[0] != '\0') {
		if (!pid_file_write(sup.pid_file, err, sizeof err)) {
			fprintf(stderr, "outboxd: %s\n", err);
			cleanup();
			return 1;
		}
		sup.pid_file_written = true;
	}
	sup.shutdown_timer = evtimer_new(sup.base, shutdown_timeout_cb, NULL);
	proc_table_init(&sup.table, (int)nrelays, (int)nconsumers);
	for (int i = 0; i < sup.table.n; i++) {
		sup.table.slots[i].timer = evtimer_new(sup.base, respawn_cb, &sup.table.slots[i]);
		if (sup.table.slots[i].timer == NULL || sup.shutdown_timer == NULL) {
			fprintf(stderr, "outboxd: evtimer_new failed\n");
			cleanup();
			return 1;
		}
	}
	if (http_on && sup.cfg.sup_ready_probe) {
		sup.ready = ready_new(sup.base, &sup.cfg);
		if (sup.ready == NULL)
			log_warn("readiness probe disabled: cannot create its timer");
		else
			ready_start(sup.ready);
	}
	if (http_on) {
		sup.http = http_new(sup.base, host, port, &sup.table, sup.ready, err, sizeof err);
		if (sup.http == NULL)
			log_warn("http endpoints disabled: %s", err);
		else
			log_info("serving /healthz /readyz /status /metrics on http://%s%s%s:%d/",
				 strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
				 http_port(sup.http));
	}
	log_info("starting %ld relay(s) (%s) and %ld consumer(s) from %s, config %s", nrelays,
		 sup.exec.relay_mode, nconsumers, sup.exec.bin_dir,
		 sup.cfg.path[0] != '\0' ? sup.cfg.path : "(defaults)");
	for (int i = 0; i < sup.table.n; i++)
		start_worker(&sup.table.slots[i]);
	sup.janitor = janitor_new(sup.base, &sup.cfg);
	if (sup.janitor == NULL)
		log_warn("janitor disabled: cannot create its timer");
	else
		janitor_start(sup.janitor);

	event_base_dispatch(sup.base);
	cleanup();
	return sup.exit_code;
}
