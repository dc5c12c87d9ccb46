#ifndef OUTBOXD_RELAY_CDC_H
#define OUTBOXD_RELAY_CDC_H

/* The CDC relay: streams inserted outbox rows from a logical replication
 * slot (pgoutput), publishes each as the same Kafka message the polling
 * relay sends, marks them sent, and confirms a transaction's end LSN to the
 * server only after that. See cdc.c for the whole argument. */

#include <signal.h>

#include "conf.h"

/* Run until *stop is set: as the active relay of the slot when this one
 * gets the slot's leader lock, else as a standby that takes over when the
 * active one dies. Returns the exit code (0 clean stop, 1 retryable, 2
 * configuration error). */
int cdc_run(const struct conf *c, int relay_id, volatile sig_atomic_t *stop,
	    volatile sig_atomic_t *hup) __attribute__((warn_unused_result));

#endif
