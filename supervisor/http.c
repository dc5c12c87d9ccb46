#include "http.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

enum { HTTP_MAX_BODY = 4096, HTTP_MAX_HEADERS = 16384 };

struct http_server {
	struct evhttp *http;
	const struct proc_table *table;
	const struct ready *ready;
	int port;
};

bool http_parse_listen(const char *listen, bool *enabled, char *host, size_t hostlen, int *port,
		       char *err, size_t errlen)
{
	const char *colon, *h = listen;
	size_t hl;
	long p;
	unsigned char addr[sizeof(struct in6_addr)];
	char tmp[128];

	*enabled = false;
	if (listen[0] == '\0' || strcasecmp(listen, "off") == 0)
		return true;
	if (listen[0] == '[') {
		const char *close = strchr(listen, ']');

		if (close == NULL || close[1] != ':') {
			snprintf(err, errlen, "http_listen \"%s\": expected [address]:port", listen);
			return false;
		}
		h = listen + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(listen, ':');
		if (colon == NULL || colon == listen) {
			snprintf(err, errlen, "http_listen \"%s\": expected host:port or \"off\"",
				 listen);
			return false;
		}
		hl = (size_t)(colon - listen);
	}
	if (hl == 0 || hl >= sizeof tmp || hl >= hostlen) {
		snprintf(err, errlen, "http_listen \"%s\": bad address", listen);
		return false;
	}
	memcpy(tmp, h, hl);
	tmp[hl] = '\0';
	if (inet_pton(AF_INET, tmp, addr) != 1 && inet_pton(AF_INET6, tmp, addr) != 1 &&
	    strcmp(tmp, "localhost") != 0) {
		snprintf(err, errlen, "http_listen \"%s\": \"%s\" is not an IP address", listen, tmp);
		return false;
	}
	if (!util_parse_int(colon + 1, 0, 65535, &p)) {
		snprintf(err, errlen, "http_listen \"%s\": port must be 0..65535", listen);
		return false;
	}
	memcpy(host, tmp, hl + 1);
	*port = (int)p;
	*enabled = true;
	return true;
}

static void http_reply(struct evhttp_request *req, int code, const char *reason,
		       const char *ctype, struct evbuffer *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Type", ctype);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply(req, code, reason, body);
}

/* Ready: every worker runs and the pipeline can move events (ready.h).
 * why says what is wrong otherwise. */
static bool http_ready(const struct http_server *s, const char **why)
{
	const struct proc_table *t = s->table;

	*why = "";
	if (t->stopping || t->n == 0) {
		*why = t->stopping ? "stopping" : "no workers";
		return false;
	}
	for (int i = 0; i < t->n; i++)
		if (t->slots[i].state != PROC_RUNNING) {
			*why = "a worker is not running";
			return false;
		}
	return s->ready == NULL || ready_ok(s->ready, why);
}

/* /status: the process table as one JSON object. */
static char *http_status_json(const struct http_server *srv)
{
	const struct proc_table *t = srv->table;
	const char *why;
	bool ready = http_ready(srv, &why);
	json_t *root = json_object(), *arr = json_array();
	int64_t now = util_mono_ms();
	char *s;

	json_object_set_new(root, "pid", json_integer(getpid()));
	json_object_set_new(root, "stopping", json_boolean(t->stopping));
	json_object_set_new(root, "ready", json_boolean(ready));
	json_object_set_new(root, "not_ready_because", ready ? json_null() : json_string(why));
	for (int i = 0; i < t->n; i++) {
		const struct proc *p = &t->slots[i];
		json_t *w = json_object();

		json_object_set_new(w, "role", json_string(proc_role_name(p->role)));
		json_object_set_new(w, "index", json_integer(p->index));
		json_object_set_new(w, "state", json_string(proc_state_name(p->state)));
		json_object_set_new(w, "pid", p->pid > 0 ? json_integer(p->pid) : json_null());
		json_object_set_new(w, "started_at_us", json_integer(p->ctr.started_at_us));
		json_object_set_new(w, "uptime_ms", p->state == PROC_RUNNING
				    ? json_integer(now - p->ctr.started_mono_ms) : json_integer(0));
		json_object_set_new(w, "starts", json_integer((json_int_t)p->ctr.starts));
		json_object_set_new(w, "restarts", json_integer((json_int_t)p->ctr.restarts));
		json_object_set_new(w, "exits", json_integer((json_int_t)p->ctr.exits));
		json_object_set_new(w, "crashes", json_integer((json_int_t)p->ctr.crashes));
		json_object_set_new(w, "backoff_ms", json_integer(p->backoff_ms));
		if (p->ctr.last_status >= 0) {
			char d[96];

			proc_describe_exit(p->ctr.last_status, d, sizeof d);
			json_object_set_new(w, "last_exit", json_string(d));
		} else {
			json_object_set_new(w, "last_exit", json_null());
		}
		json_array_append_new(arr, w);
	}
	json_object_set_new(root, "workers", arr);
	s = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	return s;
}

static void http_metrics(const struct proc_table *t, struct evbuffer *b)
{
	evbuffer_add_printf(b, "# HELP outboxd_worker_up Whether the worker process is running.\n"
			       "# TYPE outboxd_worker_up gauge\n");
	for (int i = 0; i < t->n; i++)
		evbuffer_add_printf(b, "outboxd_worker_up{role=\"%s\",index=\"%d\"} %d\n",
				    proc_role_name(t->slots[i].role), t->slots[i].index,
				    t->slots[i].state == PROC_RUNNING);
	evbuffer_add_printf(b, "# HELP outboxd_worker_restarts_total Times the worker was started "
			       "again after an exit.\n"
			       "# TYPE outboxd_worker_restarts_total counter\n");
	for (int i = 0; i < t->n; i++)
		evbuffer_add_printf(b, "outboxd_worker_restarts_total{role=\"%s\",index=\"%d\"} %" PRIu64
				    "\n", proc_role_name(t->slots[i].role), t->slots[i].index,
				    t->slots[i].ctr.restarts);
	evbuffer_add_printf(b, "# HELP outboxd_worker_crashes_total Worker exits with a non-zero "
			       "status or a signal.\n"
			       "# TYPE outboxd_worker_crashes_total counter\n");
	for (int i = 0; i < t->n; i++)
		evbuffer_add_printf(b, "outboxd_worker_crashes_total{role=\"%s\",index=\"%d\"} %" PRIu64
				    "\n", proc_role_name(t->slots[i].role), t->slots[i].index,
				    t->slots[i].ctr.crashes);
}

static void http_request_cb(struct evhttp_request *req, void *arg)
{
	struct http_server *s = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evbuffer *b = evbuffer_new();

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	if (path == NULL)
		path = "/";
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evbuffer_add_printf(b, "method not allowed\n");
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		http_reply(req, 405, "Method Not Allowed", "text/plain", b);
	} else if (strcmp(path, "/healthz") == 0) {
		evbuffer_add_printf(b, "ok\n");
		http_reply(req, HTTP_OK, "OK", "text/plain", b);
	} else if (strcmp(path, "/readyz") == 0) {
		const char *why;
		bool ready = http_ready(s, &why);

		if (ready)
			evbuffer_add_printf(b, "ready\n");
		else
			evbuffer_add_printf(b, "not ready: %s\n", why);
		http_reply(req, ready ? HTTP_OK : 503, ready ? "OK" : "Service Unavailable",
			   "text/plain", b);
	} else if (strcmp(path, "/status") == 0) {
		char *j = http_status_json(s);

		if (j == NULL) {
			evhttp_send_error(req, HTTP_INTERNAL, NULL);
		} else {
			evbuffer_add_printf(b, "%s\n", j);
			free(j);
			http_reply(req, HTTP_OK, "OK", "application/json", b);
		}
	} else if (strcmp(path, "/metrics") == 0) {
		http_metrics(s->table, b);
		http_reply(req, HTTP_OK, "OK", "text/plain; version=0.0.4", b);
	} else {
		evbuffer_add_printf(b, "not found; try /healthz /readyz /status /metrics\n");
		http_reply(req, HTTP_NOTFOUND, "Not Found", "text/plain", b);
	}
	evbuffer_free(b);
}

struct http_server *http_new(struct event_base *base, const char *host, int port,
			     const struct proc_table *table, const struct ready *ready,
			     char *err, size_t errlen)
{
	struct http_server *s = calloc(1, sizeof *s);
	struct evhttp_bound_socket *bs;

	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->table = table;
	s->ready = ready;
	s->http = evhttp_new(base);
	if (s->http == NULL) {
		snprintf(err, errlen, "evhttp_new failed");
		free(s);
		return NULL;
	}
	evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
				   EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	/* Every endpoint is a GET: a body is never read past HTTP_MAX_BODY (413
	 * and the connection closed), headers never past HTTP_MAX_HEADERS, and
	 * an idle or slow connection is dropped after 10 s. */
	evhttp_set_max_body_size(s->http, HTTP_MAX_BODY);
	evhttp_set_max_headers_size(s->http, HTTP_MAX_HEADERS);
	evhttp_set_timeout(s->http, 10);
	evhttp_set_gencb(s->http, http_request_cb, s);
	bs = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port);
	if (bs == NULL) {
		snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port,
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		evhttp_free(s->http);
		free(s);
		return NULL;
	}
	s->port = port;
	{
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		evutil_socket_t fd = evhttp_bound_socket_get_fd(bs);

		if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
			if (ss.ss_family == AF_INET)
				s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
			else if (ss.ss_family == AF_INET6)
				s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		}
	}
	return s;
}

int http_port(const struct http_server *s)
{
	return s->port;
}

void http_free(struct http_server *s)
{
	if (s == NULL)
		return;
	evhttp_free(s->http);
	free(s);
}
