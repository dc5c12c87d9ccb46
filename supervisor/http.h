#ifndef OUTBOXD_HTTP_H
#define OUTBOXD_HTTP_H

/* The supervisor's HTTP endpoints (libevent evhttp): /healthz, /readyz,
 * /status (JSON) and /metrics (Prometheus text), all read from the process
 * table. */

#include <stdbool.h>
#include <stddef.h>

#include "proc.h"
#include "ready.h"

struct event_base;
struct http_server;

/* Parse "host:port" or "[v6addr]:port" (port 0..65535). "off" or "" means
 * disabled: returns true with *enabled false. On a malformed value returns
 * false with a message in err. */
bool http_parse_listen(const char *listen, bool *enabled, char *host, size_t hostlen, int *port,
		       char *err, size_t errlen) __attribute__((warn_unused_result));

/* Start serving on host:port. Returns the server (free with http_free) or
 * NULL with the reason in err when the address cannot be bound. The table
 * and the readiness probe (NULL: none) are read on every request; they
 * must outlive the server. */
struct http_server *http_new(struct event_base *base, const char *host, int port,
			     const struct proc_table *table, const struct ready *ready,
			     char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The port actually bound (useful with port 0). */
int http_port(const struct http_server *s);

void http_free(struct http_server *s);

#endif
