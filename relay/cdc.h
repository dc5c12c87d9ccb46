#ifndef OUTBOXD_RELAY_CDC_H
#define OUTBOXD_RELAY_CDC_H

/* The CDC relay: streams inserted outbox rows from a logical replication
 * slot (pgoutput), publishes each as the same Kafka message the polling
 * relay sends, marks them sent, and confirms a transaction's end LSN to the
 * server only after that. See cdc.c for the whole argument. */

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

/* Run until *stop is set: as the active relay of the slot when this one
 * gets the slot's leader lock, else as a standby that takes over when the
 * active one dies. Returns the exit code (0 clean stop, 1 retryable, 2
 * configuration error). */
int cdc_run(const struct conf *c, int relay_id, volatile sig_atomic_t *stop,
	    volatile sig_atomic_t *hup) __attribute__((warn_unused_result));

/* Big-endian readers for the replication protocol, bounds-checked: each
 * returns false (and leaves *p unchanged) when fewer than the needed bytes
 * remain between *p and end. */
struct cdc_reader {
	const unsigned char *p, *end;
};

bool cdc_get_u8(struct cdc_reader *r, uint8_t *v) __attribute__((warn_unused_result));
bool cdc_get_u16(struct cdc_reader *r, uint16_t *v) __attribute__((warn_unused_result));
bool cdc_get_u32(struct cdc_reader *r, uint32_t *v) __attribute__((warn_unused_result));
bool cdc_get_u64(struct cdc_reader *r, uint64_t *v) __attribute__((warn_unused_result));
/* A NUL-terminated string inside the message; *s points into it. */
bool cdc_get_str(struct cdc_reader *r, const char **s) __attribute__((warn_unused_result));

/* "X/Y" text form of an LSN. */
void cdc_lsn_str(uint64_t lsn, char out[24]);

#endif
