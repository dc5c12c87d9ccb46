/* Crash-point parsing and the probability draw (the _exit itself is tested
 * by the integration tests, where processes really die). */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crash.h"
#include "log.h"
#include "tap.h"

/* In a child with OUTBOX_CRASH_SEED=seed and OUTBOX_CRASH_SALT=salt (NULL:
 * unset), draw a 0.5 point up to 64 times; return the index of the draw that
 * crashed (64 if none did). */
static int first_crash(const char *seed, const char *salt)
{
	int fd[2], status, last = 64;
	char buf[64];
	pid_t pid;
	ssize_t n;

	if (pipe(fd) != 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		char err[256];

		close(fd[0]);
		setenv("OUTBOX_CRASH", "relay.after_claim:0.5", 1);
		setenv("OUTBOX_CRASH_SEED", seed, 1);
		if (salt != NULL)
			setenv("OUTBOX_CRASH_SALT", salt, 1);
		else
			unsetenv("OUTBOX_CRASH_SALT");
		if (!crash_setup(err, sizeof err))
			_exit(3);
		for (unsigned char i = 0; i < 64; i++) {
			if (write(fd[1], &i, 1) != 1)
				_exit(3);
			crash_point("relay.after_claim");
		}
		_exit(0);
	}
	close(fd[1]);
	while ((n = read(fd[0], buf, sizeof buf)) > 0)
		last = (unsigned char)buf[n - 1];
	close(fd[0]);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != CRASH_EXIT_CODE)
		return 64;
	return last;
}

int main(void)
{
	char err[256];
	int crashed = 0, status;
	pid_t pid;

	ok(crash_parse("relay.after_publish:0.05,orders.after_commit:1", err, sizeof err),
	   "two points parse");
	ok(crash_probability("relay.after_publish") == 0.05, "first probability");
	ok(crash_probability("orders.after_commit") == 1.0, "second probability");
	ok(crash_probability("consumer.after_apply") == 0.0, "unarmed point is 0");
	ok(!crash_parse("relay.after_publish", err, sizeof err), "missing probability rejected");
	ok(!crash_parse("relay.after_publish:1.5", err, sizeof err), "probability above 1 rejected");
	ok(!crash_parse("relay.after_publish:x", err, sizeof err), "non-number rejected");
	ok(!crash_parse(":0.5", err, sizeof err), "missing name rejected");
	ok(!crash_parse("a:0.1,,b:0.2", err, sizeof err), "empty item rejected");
	ok(strstr(err, "OUTBOX_CRASH") != NULL, "message names the variable");

	/* A point armed at 1 kills the process with the crash exit code, and
	 * writes its name to OUTBOX_CRASH_LOG first. */
	setenv("OUTBOX_CRASH", "relay.after_mark:1", 1);
	setenv("OUTBOX_CRASH_LOG", "/tmp/outboxd-crash-test.log", 1);
	unlink("/tmp/outboxd-crash-test.log");
	pid = fork();
	if (pid == 0) {
		if (!crash_setup(err, sizeof err))
			_exit(3);
		crash_point("relay.after_publish");
		crash_point("relay.after_mark");
		_exit(0);
	}
	waitpid(pid, &status, 0);
	is_int(WIFEXITED(status) ? WEXITSTATUS(status) : -1, CRASH_EXIT_CODE,
	       "armed point exits with the crash code");
	{
		FILE *f = fopen("/tmp/outboxd-crash-test.log", "r");
		char line[64] = "";

		ok(f != NULL && fgets(line, sizeof line, f) != NULL, "crash log written");
		is_str(line, "relay.after_mark\n", "crash log names the point");
		if (f)
			fclose(f);
	}
	unlink("/tmp/outboxd-crash-test.log");
	unsetenv("OUTBOX_CRASH_LOG");

	/* With probability 0.3, about 30% of 2000 draws crash. */
	setenv("OUTBOX_CRASH", "consumer.after_apply:0.3", 1);
	setenv("OUTBOX_CRASH_SEED", "42", 1);
	for (int i = 0; i < 2000; i++) {
		pid = fork();
		if (pid == 0) {
			char s[16];

			snprintf(s, sizeof s, "%d", i);
			setenv("OUTBOX_CRASH_SEED", s, 1);
			if (!crash_setup(err, sizeof err))
				_exit(3);
			crash_point("consumer.after_apply");
			_exit(0);
		}
		waitpid(pid, &status, 0);
		crashed += WIFEXITED(status) && WEXITSTATUS(status) == CRASH_EXIT_CODE;
	}
	ok(crashed > 450 && crashed < 750, "about 30% of seeded draws crash");
	diag("%d of 2000 crashed", crashed);

	/* The salt outboxd gives each worker incarnation: same seed and salt,
	 * same draws; another salt, other draws (over 8 salts, not all equal). */
	{
		int a = first_crash("5", "relay.0.1"), b = first_crash("5", "relay.0.1");
		int differ = 0;
		char salt[32];

		is_int(a, b, "same seed and salt: the crash comes at the same draw");
		for (int i = 2; i < 10; i++) {
			snprintf(salt, sizeof salt, "relay.0.%d", i);
			differ += first_crash("5", salt) != a;
		}
		ok(differ > 0, "other salts under the same seed crash at other draws");
		diag("first crash at draw %d; %d of 8 other salts differ", a, differ);
	}
	unsetenv("OUTBOX_CRASH_SALT");
	setenv("OUTBOX_CRASH", "bad", 1);
	ok(!crash_setup(err, sizeof err), "crash_setup rejects a malformed OUTBOX_CRASH");
	return done_testing();
}
