#include "proc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

void proc_table_init(struct proc_table *t, int nrelays, int nconsumers)
{
	memset(t, 0, sizeof *t);
	for (int i = 0; i < nrelays + nconsumers && t->n < PROC_MAX; i++) {
		struct proc *p = &t->slots[t->n++];

		p->role = i < nrelays ? PROC_RELAY : PROC_CONSUMER;
		p->index = i < nrelays ? i : i - nrelays;
		p->state = PROC_IDLE;
		p->ctr.last_status = -1;
	}
}

const char *proc_role_name(enum proc_role r)
{
	return r == PROC_RELAY ? "relay" : "consumer";
}

const char *proc_state_name(enum proc_state s)
{
	switch (s) {
	case PROC_IDLE: return "idle";
	case PROC_RUNNING: return "running";
	case PROC_BACKOFF: return "backoff";
	case PROC_FAILED: return "failed";
	case PROC_STOPPED: return "stopped";
	}
	return "?";
}

/* In the child, between fork and exec: undo what the supervisor changed in
 * the signal state (ignored signals and the mask survive execve). */
static void proc_child_reset_signals(void)
{
	sigset_t none;
	const int sigs[] = { SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD };

	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		signal(sigs[i], SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

bool proc_spawn(struct proc *p, const struct proc_exec *x, char *err, size_t errlen)
{
	char path[1024], id[16], salt[64];
	const char *argv[10];
	int n = 0;
	pid_t pid, parent = getpid();

	snprintf(path, sizeof path, "%s/%s", x->bin_dir,
		 p->role == PROC_RELAY ? "outbox-relay" : "outbox-consumer");
	snprintf(id, sizeof id, "%d", p->index);
	argv[n++] = path;
	argv[n++] = "--id";
	argv[n++] = id;
	if (p->role == PROC_RELAY) {
		argv[n++] = "--mode";
		argv[n++] = x->relay_mode;
	}
	if (x->conf_path[0] != '\0') {
		argv[n++] = "-c";
		argv[n++] = x->conf_path;
	}
	argv[n] = NULL;

	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		return false;
	}
	if (pid == 0) {
		proc_child_reset_signals();
		/* If the supervisor dies without a goodbye (SIGKILL), its workers
		 * get SIGTERM and finish their batch instead of running on as
		 * orphans beside the next supervisor's workers. */
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
			_exit(1);
		snprintf(salt, sizeof salt, "%s.%d.%llu", proc_role_name(p->role), p->index,
			 (unsigned long long)p->ctr.starts);
		setenv("OUTBOX_CRASH_SALT", salt, 1);
		execv(path, (char *const *)argv);
		log_error("%s[%d]: cannot exec %s: %s", proc_role_name(p->role), p->index, path,
			  strerror(errno));
		_exit(2);
	}
	p->pid = pid;
	p->state = PROC_RUNNING;
	if (p->ctr.starts > 0)
		p->ctr.restarts++;
	p->ctr.starts++;
	p->ctr.started_at_us = util_now_us();
	p->ctr.started_mono_ms = util_mono_ms();
	return true;
}

struct proc *proc_find(struct proc_table *t, pid_t pid)
{
	for (int i = 0; i < t->n; i++)
		if (t->slots[i].pid == pid && pid > 0)
			return &t->slots[i];
	return NULL;
}

void proc_describe_exit(int status, char *out, size_t outlen)
{
	if (WIFEXITED(status)) {
		snprintf(out, outlen, "exited with status %d", WEXITSTATUS(status));
	} else if (WIFSIGNALED(status)) {
		const char *name = sigabbrev_np(WTERMSIG(status));

		snprintf(out, outlen, "killed by signal %s%s%s", name ? "SIG" : "",
			 name ? name : "?", WCOREDUMP(status) ? " (core dumped)" : "");
		if (name == NULL)
			snprintf(out, outlen, "killed by signal %d%s", WTERMSIG(status),
				 WCOREDUMP(status) ? " (core dumped)" : "");
	} else if (WIFSTOPPED(status) && sigabbrev_np(WSTOPSIG(status)) != NULL) {
		snprintf(out, outlen, "stopped by signal SIG%s", sigabbrev_np(WSTOPSIG(status)));
	} else {
		snprintf(out, outlen, "ended with wait status 0x%x", (unsigned)status);
	}
}

void proc_exited(struct proc_table *t, struct proc *p, int status, int64_t now_ms,
		 long stable_ms, long backoff_max_ms)
{
	int64_t ran = now_ms - p->ctr.started_mono_ms;

	p->pid = 0;
	p->ctr.exits++;
	p->ctr.last_status = status;
	if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		p->ctr.crashes++;
	if (t->stopping) {
		p->state = PROC_STOPPED;
		return;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 2) {
		p->state = PROC_FAILED;
		return;
	}
	/* Capped exponential backoff: 100, 200, 400 ... backoff_max_ms; a
	 * worker that stayed up for stable_ms starts again from the bottom. */
	if (ran >= stable_ms || p->backoff_ms <= 0)
		p->backoff_ms = PROC_BACKOFF_BASE_MS;
	else
		p->backoff_ms = p->backoff_ms * 2;
	if (p->backoff_ms > backoff_max_ms)
		p->backoff_ms = backoff_max_ms;
	p->next_delay_ms = p->backoff_ms;
	p->state = PROC_BACKOFF;
}

int proc_count(const struct proc_table *t, enum proc_state s)
{
	int n = 0;

	for (int i = 0; i < t->n; i++)
		n += t->slots[i].state == s;
	return n;
}
