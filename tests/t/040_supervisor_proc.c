/* The supervisor's decisions without processes: the process table layout,
 * the respawn state machine (capped exponential backoff, reset after a stable
 * run, exit 2 never respawned, no respawn while stopping), exit descriptions
 * and http_listen parsing. Links supervisor/proc.c, http.c and ready.c by
 * including them (the Makefile's unit rule links common/ only). */
#include <signal.h>
#include <sys/wait.h>

#include "http.c"
#include "ready.c"
#include "proc.c"
#include "tap.h"

#define EXITED(code) ((code) << 8)   /* a wait status as waitpid() builds it */

int main(void)
{
	struct proc_table t;
	struct proc *p;
	char d[96], host[128], err[256];
	bool on;
	int port;

	proc_table_init(&t, 2, 3);
	is_int(t.n, 5, "2 relays + 3 consumers = 5 slots");
	ok(t.slots[1].role == PROC_RELAY && t.slots[1].index == 1, "slot 1 is relay 1");
	ok(t.slots[2].role == PROC_CONSUMER && t.slots[2].index == 0, "slot 2 is consumer 0");
	ok(t.slots[4].role == PROC_CONSUMER && t.slots[4].index == 2, "slot 4 is consumer 2");
	is_int(proc_count(&t, PROC_IDLE), 5, "all idle at first");
	proc_table_init(&t, 64, 64);
	is_int(t.n, PROC_MAX, "64 + 64 fit the fixed table");

	proc_table_init(&t, 1, 1);
	p = &t.slots[0];
	p->pid = 4242;
	p->state = PROC_RUNNING;
	p->ctr.started_mono_ms = 1000;
	ok(proc_find(&t, 4242) == p, "proc_find by pid");
	ok(proc_find(&t, 0) == NULL, "proc_find(0) finds nothing");

	/* Quick crashes: 100, 200, 400, 800, then the cap (1000). */
	{
		const long want[] = { 100, 200, 400, 800, 1000, 1000 };

		for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
			p->pid = 4242;
			p->state = PROC_RUNNING;
			proc_exited(&t, p, SIGKILL, p->ctr.started_mono_ms + 50, 5000, 1000);
			ok(p->state == PROC_BACKOFF, "a crash leads to a respawn");
			is_int(p->next_delay_ms, want[i], "backoff doubles up to the cap");
		}
	}
	is_int(p->pid, 0, "the pid is cleared on exit");
	is_int((long)p->ctr.crashes, 6, "six crashes counted");
	/* A run longer than stable_ms resets the backoff. */
	p->state = PROC_RUNNING;
	proc_exited(&t, p, EXITED(1), p->ctr.started_mono_ms + 6000, 5000, 1000);
	is_int(p->next_delay_ms, 100, "a stable run resets the backoff");
	/* Exit 0 outside a stop is respawned but is not a crash. */
	p->state = PROC_RUNNING;
	proc_exited(&t, p, EXITED(0), p->ctr.started_mono_ms + 10, 5000, 1000);
	ok(p->state == PROC_BACKOFF, "exit 0 while running is respawned");
	is_int((long)p->ctr.crashes, 7, "exit 0 is not a crash");
	is_int((long)p->ctr.exits, 8, "every exit counted");
	/* Exit 2: never again. */
	p->state = PROC_RUNNING;
	proc_exited(&t, p, EXITED(2), p->ctr.started_mono_ms + 10, 5000, 1000);
	ok(p->state == PROC_FAILED, "exit 2 is permanent");
	/* While stopping, nothing is respawned, not even after a crash. */
	t.stopping = true;
	p = &t.slots[1];
	p->state = PROC_RUNNING;
	proc_exited(&t, p, SIGKILL, 10, 5000, 1000);
	ok(p->state == PROC_STOPPED, "an exit while stopping is final");
	is_int(proc_count(&t, PROC_FAILED), 1, "one failed slot");

	proc_describe_exit(EXITED(3), d, sizeof d);
	is_str(d, "exited with status 3", "exit status described");
	proc_describe_exit(SIGKILL, d, sizeof d);
	is_str(d, "killed by signal SIGKILL", "signal described by name");
	proc_describe_exit(SIGSEGV | 0x80, d, sizeof d);
	is_str(d, "killed by signal SIGSEGV (core dumped)", "core dump noted");
	proc_describe_exit((SIGSTOP << 8) | 0x7f, d, sizeof d);
	is_str(d, "stopped by signal SIGSTOP", "a stop described by name");

	ok(http_parse_listen("127.0.0.1:8780", &on, host, sizeof host, &port, err, sizeof err) &&
	   on && strcmp(host, "127.0.0.1") == 0 && port == 8780, "host:port parses");
	ok(http_parse_listen("[::1]:0", &on, host, sizeof host, &port, err, sizeof err) && on &&
	   strcmp(host, "::1") == 0 && port == 0, "[v6]:port parses");
	ok(http_parse_listen("off", &on, host, sizeof host, &port, err, sizeof err) && !on,
	   "off disables");
	ok(http_parse_listen("", &on, host, sizeof host, &port, err, sizeof err) && !on,
	   "empty disables");
	ok(!http_parse_listen("127.0.0.1", &on, host, sizeof host, &port, err, sizeof err),
	   "no port is an error");
	ok(!http_parse_listen("127.0.0.1:http", &on, host, sizeof host, &port, err, sizeof err),
	   "a named port is an error");
	ok(!http_parse_listen("127.0.0.1:65536", &on, host, sizeof host, &port, err, sizeof err),
	   "port 65536 is an error");
	ok(!http_parse_listen("example.com:80", &on, host, sizeof host, &port, err, sizeof err),
	   "a host name other than localhost is an error");
	ok(!http_parse_listen("[::1:80", &on, host, sizeof host, &port, err, sizeof err),
	   "an unclosed bracket is an error");
	ok(strstr(err, "[::1:80") != NULL, "the error quotes the value");
	return done_testing();
}
