#ifndef OUTBOXD_PROC_H
#define OUTBOXD_PROC_H

/* The supervisor's process table: one fixed slot per worker (relay or
 * consumer), its state machine, fork+exec and the respawn backoff. The
 * libevent glue (signals, timers) lives in main.c; this module only decides. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROC_MAX_PER_ROLE 64
#define PROC_MAX (2 * PROC_MAX_PER_ROLE)
#define PROC_BACKOFF_BASE_MS 100

enum proc_role { PROC_RELAY = 0, PROC_CONSUMER = 1 };

enum proc_state {
	PROC_IDLE = 0,   /* not started yet */
	PROC_RUNNING,    /* pid is alive (as far as we know) */
	PROC_BACKOFF,    /* exited; a respawn timer is pending */
	PROC_FAILED,     /* exited 2 (configuration error): never respawned */
	PROC_STOPPED,    /* exited during shutdown */
};

/* Per-worker counters, kept together in one plain struct (no pointers) so
 * they can later move into shared memory created before the fork. */
struct proc_counters {
	uint64_t starts;        /* successful fork()s */
	uint64_t restarts;      /* starts after the first */
	uint64_t exits;         /* every reaped exit */
	uint64_t crashes;       /* exits that were not status 0 */
	int64_t started_at_us;  /* wall clock of the current/last start */
	int64_t started_mono_ms;
	int last_status;        /* raw wait status of the last exit, -1: none */
};

struct proc {
	pid_t pid;              /* 0 when not running */
	enum proc_role role;
	int index;              /* the worker's --id */
	enum proc_state state;
	long backoff_ms;        /* current backoff step, 0 = reset */
	long next_delay_ms;     /* delay of the pending respawn (PROC_BACKOFF) */
	struct proc_counters ctr;
	void *timer;            /* main.c's respawn evtimer (struct event *) */
};

struct proc_table {
	struct proc slots[PROC_MAX];
	int n;
	bool stopping;          /* SIGTERM seen: no more respawns */
};

/* What to exec: <bin_dir>/outbox-relay --id I --mode M [-c conf] and
 * <bin_dir>/outbox-consumer --id I [-c conf]. */
struct proc_exec {
	char bin_dir[512];
	char conf_path[512];    /* "" = no -c */
	const char *relay_mode; /* "poll" or "cdc" */
};

/* Fill t with nrelays relay slots then nconsumers consumer slots, all idle. */
void proc_table_init(struct proc_table *t, int nrelays, int nconsumers);

const char *proc_role_name(enum proc_role r);
const char *proc_state_name(enum proc_state s);

/* fork() and execv() the worker of p. Returns true with p RUNNING and its
 * pid set; false (errno-style message in err) when fork failed, p unchanged.
 * A failing execv in the child logs and _exit(2)s: a missing binary is a
 * configuration error. */
bool proc_spawn(struct proc *p, const struct proc_exec *x, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The slot running pid, or NULL. */
struct proc *proc_find(struct proc_table *t, pid_t pid);

/* "exited with status N" / "killed by signal SIGKILL (core dumped)". */
void proc_describe_exit(int status, char *out, size_t outlen);

/* Record that p's process ended with wait status `status` at monotonic time
 * now_ms, and move p to its next state: STOPPED when the table is stopping,
 * FAILED on exit status 2, else BACKOFF with p->next_delay_ms set (capped
 * exponential, reset when it had run at least stable_ms). */
void proc_exited(struct proc_table *t, struct proc *p, int status, int64_t now_ms,
		 long stable_ms, long backoff_max_ms);

/* Number of slots in state s. */
int proc_count(const struct proc_table *t, enum proc_state s);

#endif
