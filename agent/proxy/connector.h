/* Non-blocking TCP connect on the loop, from inside a pod's network namespace, optionally
 * from a foreign source address (IP_TRANSPARENT) so the destination app sees the real
 * client. One callback, exactly once: the connected socket, or an error that names the
 * destination, the pod and the errno ("connect 10.1.0.2:8080 from pod ns1/web: ECONNREFUSED"). */
#ifndef MOAT_PROXY_CONNECTOR_H
#define MOAT_PROXY_CONNECTOR_H

#include <stdbool.h>
#include <stdint.h>

#include "core/loop.h"
#include "core/util.h"

/* Every connect the agent makes (upstream apps, plaintext workloads, egress, HBONE peers) is
 * given up after this long unless the request says otherwise. */
#define CONNECT_TIMEOUT_MS 10000

struct connector;
/* fd >= 0 on success (non-blocking, owned by the callee now), else fd = -1 and err set. */
typedef void (*connector_cb)(void *arg, int fd, int err_no, const char *error);

struct connect_req {
	int netns_fd;               /* netns to create the socket in (-1: the agent's own) */
	struct moat_addr dst;
	uint16_t dst_port;
	const struct moat_addr *src; /* bind to this source (transparent), NULL = kernel picks */
	uint16_t src_port;          /* with src; 0 = any */
	bool transparent;           /* IP_TRANSPARENT: src may be an address not on this host */
	uint32_t mark;              /* SO_MARK (0 = none) */
	int timeout_ms;             /* 0: CONNECT_TIMEOUT_MS */
	const char *who;            /* "pod ns/name" for messages */
};

struct connector *connector_start(struct loop *l, const struct connect_req *r, connector_cb cb,
				  void *arg);
/* Cancel a pending connect: the callback will not run. */
void connector_cancel(struct connector *c);

#endif
