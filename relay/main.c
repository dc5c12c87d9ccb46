/* outbox-relay: one relay worker. Moves committed outbox rows to Kafka and
 * marks them sent only after the broker acknowledged them.
 *
 * Runnable on its own or exec'd by the supervisor (outboxd). Exit codes:
 * 0 clean stop (SIGTERM/SIGINT: the in-flight pass finishes first),
 * 1 retryable failure, 2 usage or configuration error (never respawned). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc.h"
#include "conf.h"
#include "crash.h"
#include "log.h"
#include "poll.h"
#include "util.h"

static volatile sig_atomic_t relay_stop;
static volatile sig_atomic_t relay_hup;

/* Signal handlers only set flags; the loop notices within 200 ms. */
static void relay_on_signal(int sig)
{
	if (sig == SIGHUP)
		relay_hup = 1;
	else
		relay_stop = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: outbox-relay [-c FILE] [--id I] [--mode poll|cdc]\n"
		"\n"
		"One relay worker: publishes committed outbox rows to Kafka and marks them\n"
		"sent once the broker acknowledged them. Several relays may run at once;\n"
		"their batches are disjoint and each order's events stay in order.\n"
		"  -c, --config FILE  configuration (default $OUTBOX_CONF or conf/outboxd.conf)\n"
		"  --id I             relay id (0..1000000), default 0\n"
		"  --mode poll|cdc    overrides [relay] mode\n"
		"  -h, --help         this text\n"
		"Signals: SIGTERM/SIGINT finish the in-flight batch and exit 0.\n"
		"Crash injection: OUTBOX_CRASH=relay.after_claim:P,relay.after_publish:P,"
		"relay.after_mark:P\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "id", required_argument, NULL, 'i' },
		{ "mode", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *conf_path = NULL, *mode = NULL;
	static struct conf cfg;
	char err[1024];
	long id = 0;
	int c;

	log_setup("relay", 0);
	while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': conf_path = optarg; break;
		case 'i':
			if (!util_parse_int(optarg, 0, 1000000, &id)) {
				fprintf(stderr, "outbox-relay: bad value \"%s\" for --id\n", optarg);
				return 2;
			}
			break;
		case 'm': mode = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outbox-relay: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	if (mode != NULL && strcmp(mode, "poll") != 0 && strcmp(mode, "cdc") != 0) {
		fprintf(stderr, "outbox-relay: --mode must be poll or cdc, not \"%s\"\n", mode);
		return 2;
	}
	log_setup("relay", (int)id);
	if (!conf_load(&cfg, conf_path, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (mode != NULL)
		cfg.relay_mode = strcmp(mode, "cdc") == 0 ? RELAY_CDC : RELAY_POLL;
	if (!crash_setup(err, sizeof err)) {
		fprintf(stderr, "outbox-relay: %s\n", err);
		return 2;
	}
	util_on_signals(relay_on_signal);
	if (cfg.relay_mode == RELAY_CDC)
		return cdc_run(&cfg, (int)id, &relay_stop, &relay_hup);
	return poll_run(&cfg, (int)id, &relay_stop, &relay_hup);
}
