/* outboxctl accept-cluster [--cluster-id ID]: make ID (default: the id the
 * configured broker reports now) the Kafka cluster the outbox publishes to,
 * replacing the recorded one (relay/cluster.h). The relays read the row at
 * every check, so a relay blocked on that cluster publishes there within
 * its backoff, without a restart.
 *
 * What the old cluster held stays there: events already marked sent are
 * not published again (outboxctl replay --order can re-send one order's
 * sent events to the new cluster); every unsent event goes to the new one. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../relay/cluster.h"
#include "ctl.h"
#include "kafka.h"

#define ACCEPT_TIMEOUT_MS 10000

/* The configured broker's cluster id, asked with a plain (non-idempotent)
 * producer handle. False with a message. */
static bool accept_broker_id(const struct conf *c, char *id, size_t idlen, char *err,
			     size_t errlen)
{
	rd_kafka_conf_t *kc = kafka_conf_new(c, err, errlen);
	rd_kafka_t *rk;
	bool ok;

	if (kc == NULL)
		return false;
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, errlen);
	if (rk == NULL) {
		rd_kafka_conf_destroy(kc);
		return false;
	}
	ok = kafka_cluster_id(rk, ACCEPT_TIMEOUT_MS, id, idlen, err, errlen);
	rd_kafka_destroy(rk);
	return ok;
}

int ctl_accept_cluster(struct ctl *ctl)
{
	char id[KAFKA_CLUSTER_ID_MAX], by[512], host[256], err[1024];
	const char *user = getenv("USER");
	struct cluster_record old;
	PGconn *conn = NULL;
	int rc = 1;

	if (ctl->nargs > 0) {
		fprintf(stderr, "outboxctl: unexpected argument \"%s\"\n", ctl->args[0]);
		return 2;
	}
	if (ctl->cluster_id != NULL && !cluster_id_valid(ctl->cluster_id)) {
		fprintf(stderr, "outboxctl: --cluster-id \"%s\" is not a Kafka cluster id (1 to %d "
			"characters of A-Z a-z 0-9 - _ .)\n", ctl->cluster_id, KAFKA_CLUSTER_ID_MAX - 1);
		return 2;
	}
	if (ctl->cluster_id != NULL) {
		snprintf(id, sizeof id, "%s", ctl->cluster_id);
	} else if (!accept_broker_id(&ctl->conf, id, sizeof id, err, sizeof err)) {
		fprintf(stderr, "outboxctl: accept-cluster: cannot get the cluster id of the broker "
			"at %s: %s (give it with --cluster-id ID)\n", ctl->conf.kafka_brokers, err);
		return 1;
	}
	if (gethostname(host, sizeof host) != 0)
		snprintf(host, sizeof host, "localhost");
	host[sizeof host - 1] = '\0';
	snprintf(by, sizeof by, "outboxctl accept-cluster (%s@%s%s%s)", user != NULL ? user : "?",
		 host, ctl->cluster_id != NULL ? ", --cluster-id" : ", broker ",
		 ctl->cluster_id != NULL ? "" : ctl->conf.kafka_brokers);
	conn = ctl_connect(ctl->conf.db_conninfo, "outbox");
	if (conn == NULL)
		return 1;
	if (!cluster_accept(conn, id, by, &old, err, sizeof err)) {
		fprintf(stderr, "outboxctl: accept-cluster: %s\n", err);
		goto out;
	}
	if (ctl->json) {
		json_t *o = json_pack("{s:o, s:s, s:b, s:s}", "old",
				      old.id[0] ? json_string(old.id) : json_null(), "new", id,
				      "changed", strcmp(old.id, id) != 0, "accepted_by", by);
		char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

		if (s != NULL)
			printf("%s\n", s);
		free(s);
		json_decref(o);
	} else if (old.id[0] == '\0') {
		printf("Kafka cluster: none recorded -> %s (accepted)\n", id);
	} else if (strcmp(old.id, id) == 0) {
		printf("Kafka cluster: %s -> %s (unchanged; it was accepted %s by %s)\n", old.id, id,
		       old.accepted_at, old.accepted_by);
	} else {
		printf("Kafka cluster: %s -> %s (accepted)\n"
		       "Unsent events go to cluster %s from now on. Events already marked sent stay\n"
		       "where they went (cluster %s) and are not published again; to re-send an\n"
		       "order's sent events to the new cluster: outboxctl replay --order ID\n",
		       old.id, id, id, old.id);
	}
	rc = 0;
out:
	PQfinish(conn);
	return rc;
}
