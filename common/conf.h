#ifndef OUTBOXD_CONF_H
#define OUTBOXD_CONF_H

#include <stdbool.h>
#include <stddef.h>

#define CONF_STR 4096         /* longest value of a string key */
#define CONF_MAX_LINE 16384   /* longest line of a configuration file */
#define CONF_MAX_KEYS 64      /* room for the line of every key we own */
#define CONF_MAX_KAFKA_PROPS 64

enum relay_mode { RELAY_POLL = 0, RELAY_CDC = 1 };

/* One "kafka.<property> = value" line, passed to librdkafka as is. */
struct conf_kafka_prop {
	char name[128];
	char value[CONF_STR];
	int line;
};

/* The whole configuration. Every field has a default (see conf.c's key
 * table); conf_load() fills it from the file, then from the environment. */
#define CONF_CONSUMER_BATCH_MAX 500

struct conf {
	char path[CONF_STR];                /* file it came from ("" = defaults) */
	int key_line[CONF_MAX_KEYS];        /* line each key was set on (0 = default) */

	char db_conninfo[CONF_STR];         /* [database] conninfo */

	char kafka_brokers[CONF_STR];       /* [kafka] brokers */
	char kafka_topic[256];              /* [kafka] topic */
	char kafka_dlq_topic[300];          /* derived: topic + ".dlq" */
	int kafka_partitions;               /* [kafka] partitions */
	int kafka_delivery_timeout_ms;      /* [kafka] delivery_timeout_ms */
	struct conf_kafka_prop kafka_props[CONF_MAX_KAFKA_PROPS];
	int kafka_nprops;

	int relay_mode;                     /* [relay] mode: enum relay_mode */
	int relay_poll_interval_ms;         /* [relay] poll_interval_ms */
	bool relay_notify;                  /* [relay] notify */
	int relay_batch_size;               /* [relay] batch_size */
	int relay_backoff_max_ms;           /* [relay] backoff_max_ms */
	char relay_publish_log[CONF_STR];   /* [relay] publish_log ("" = off) */
	char relay_slot[64];                /* [relay] slot_name */
	char relay_publication[64];         /* [relay] publication */
	int relay_heartbeat_ms;             /* [relay] heartbeat_ms (cdc) */
	int relay_wal_warn_mb;              /* [relay] wal_warn_mb (cdc) */
	int relay_wal_budget_mb;            /* [relay] wal_budget_mb (cdc) */

	char consumer_group[256];           /* [consumer] group_id */
	char consumer_conninfo[CONF_STR];   /* [consumer] conninfo ("" = database's) */
	int consumer_commit_interval_ms;    /* [consumer] commit_interval_ms */
	int consumer_batch_size;            /* [consumer] batch_size, 1..CONF_CONSUMER_BATCH_MAX */
	int consumer_retry_max_attempts;    /* [consumer] retry_max_attempts */
	int consumer_retry_max_ms;          /* [consumer] retry_max_ms */
	int consumer_retry_backoff_ms;      /* [consumer] retry_backoff_ms */
	char consumer_event_types[CONF_STR]; /* [consumer] event_types ("*" = any) */
	int consumer_inbox_retention_hours; /* [consumer] inbox_retention_hours */
	int consumer_inbox_sweep_interval_ms; /* [consumer] inbox_sweep_interval_ms (0 = off) */
	int consumer_inbox_sweep_batch;     /* [consumer] inbox_sweep_batch */

	char sup_http_listen[128];          /* [supervisor] http_listen */
	char sup_audit_file[CONF_STR];      /* [supervisor] audit_file */
	char sup_pid_file[CONF_STR];        /* [supervisor] pid_file */
	char sup_bin_dir[CONF_STR];         /* [supervisor] bin_dir ("" = outboxd's own) */
	int sup_shutdown_timeout_ms;        /* [supervisor] shutdown_timeout_ms */
	int sup_backoff_max_ms;             /* [supervisor] backoff_max_ms */
	int sup_stable_ms;                  /* [supervisor] stable_ms */
	int sup_stall_ms;                   /* [supervisor] stall_ms: /readyz */
	bool sup_ready_probe;               /* [supervisor] ready_probe: /readyz asks the
					     * database and Kafka (off: the workers only) */

	bool cleanup_partitioned;           /* [cleanup] partitioned */
	int cleanup_partition_interval_s;   /* [cleanup] partition_interval_s */
	int cleanup_partitions_ahead;       /* [cleanup] partitions_ahead */
	int cleanup_retention_s;            /* [cleanup] retention_s */
	int cleanup_janitor_interval_s;     /* [cleanup] janitor_interval_s (0 = off) */
	int cleanup_delete_batch;           /* [cleanup] delete_batch_size */
	int cleanup_round_budget_ms;        /* [cleanup] round_budget_ms */
	int cleanup_lock_timeout_ms;        /* [cleanup] lock_timeout_ms */
};

/* Fill c with the defaults only. */
void conf_defaults(struct conf *c);

/* Load the configuration. path NULL means $OUTBOX_CONF, else
 * conf/outboxd.conf, and a missing default file means "defaults only"; an
 * explicit path must exist. Environment overrides (OUTBOX_PG, OUTBOX_KAFKA,
 * OUTBOX_TOPIC, OUTBOX_GROUP) apply last. On error returns false with "FILE:LINE: message"
 * (or "FILE: message") in err; the caller exits 2. */
bool conf_load(struct conf *c, const char *path, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Where [section] key was set, for an error found after loading:
 * "FILE:LINE" (or "FILE" / "the default" when it was not set there, the
 * environment variable's name when that overrode it). */
const char *conf_where(const struct conf *c, const char *section, const char *key,
		       char *buf, size_t buflen);

/* The conninfo the consumer's side (schema sink) uses. */
const char *conf_sink_conninfo(const struct conf *c);

#endif
