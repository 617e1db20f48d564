/* A small HTTP/1.1 server on the agent loop for the node ports: metrics (15020), admin
 * (15000, bound to 127.0.0.1) and readiness (15021). One request per connection
 * (Connection: close), GET/HEAD only, bounded header size (8 KiB) and idle time (10 s);
 * the handler builds the whole response body synchronously. */
#ifndef MOAT_OBS_HTTP_H
#define MOAT_OBS_HTTP_H

#include <stdint.h>

#include "core/util.h"

struct loop;
struct http_server;

struct http_response {
	int status;               /* default 200 */
	const char *content_type; /* default "text/plain; charset=utf-8" */
	struct sbuf body;
};

/* path excludes the query; query is "" when absent. */
typedef void (*http_handler)(void *arg, const char *method, const char *path, const char *query,
			     struct http_response *resp);

/* Whether text is a bind address http_server_new takes ("0.0.0.0", "::1", "[::1]"). */
bool http_bind_addr_valid(const char *text);
/* bind_addr: "0.0.0.0", "127.0.0.1", "::" ... */
struct http_server *http_server_new(struct loop *l, const char *bind_addr, uint16_t port,
				    http_handler h, void *arg, struct err *e);
void http_server_free(struct http_server *s);
uint16_t http_server_port(const struct http_server *s); /* useful with port 0 in tests */
/* Per-connection time limit (default 10000 ms): the whole request must arrive within it, and
 * a response that makes no write progress for that long is dropped. Tests shorten it. */
void http_server_set_timeout(struct http_server *s, uint32_t timeout_ms);
/* Count the times accepting paused for want of descriptors or memory in *pauses (the
 * agent's moat_accept_pauses_total, shared with the pod listeners and the control socket). */
void http_server_count_pauses(struct http_server *s, uint64_t *pauses);

#endif
