/* The agent's listeners inside each enrolled pod's netns and what happens on accept:
 *   15001 outbound  captured connects: original destination from BPF, authorize, then HBONE
 *                   (pooled), plaintext to workloads without an agent, or egress;
 *   15008 HBONE     mTLS + HTTP/2 CONNECT: authorize the verified peer, connect to the app;
 *   15006 plaintext PERMISSIVE inbound steered here by sk_lookup: authorize as no identity. */
#ifndef MOAT_PROXY_PROXY_H
#define MOAT_PROXY_PROXY_H

#include "hbone/h2.h"
#include "proxy/connector.h"
#include "state/agent.h"

struct conn;
struct proxy_state;

enum listener_kind { LSN_OUTBOUND = 0, LSN_HBONE = 1, LSN_PLAIN = 2 };

/* The agent's own ports are never valid destinations (ztunnel's rule). */
static inline bool is_agent_port(uint16_t port)
{
	return port == MOAT_PORT_OUTBOUND || port == MOAT_PORT_INBOUND_PLAIN ||
	       port == MOAT_PORT_HBONE;
}

/* The HBONE deadlines the agent was started with (moatd --hbone-response-timeout...). */
static inline struct h2_limits agent_h2_limits(const struct agent *a)
{
	return (struct h2_limits){.response_ms = a->opts.hbone_response_ms,
				  .suspect_ms = a->opts.hbone_suspect_ms,
				  .stream_idle_ms = a->opts.stream_idle_ms};
}

/* Connect to the app of local pod p at dst:dport from inside its netns, from src (the
 * client's address) where policy routing allows (IP_TRANSPARENT), else from the pod. */
struct connector *pod_app_connect(struct agent *a, struct pod *p, const struct moat_addr *src,
				  const struct moat_addr *dst, uint16_t dport, connector_cb cb,
				  void *arg);

/* Open one listener of the pod (bound inside its netns) and watch it. */
int listener_open(struct agent *a, struct pod *p, struct listener *l, enum listener_kind kind,
		  int family, struct err *e);
void listener_close(struct agent *a, struct listener *l);
/* The outbound paths (outbound.c), for a connection record whose destination is set:
 * HBONE to the agent in front of d (CONNECT authority = c->dst:c->dport), or a direct
 * connect from the pod's netns that calls cb (conn_upstream_relay unless the caller needs
 * to see a failure first). */
void outbound_hbone(struct agent *a, struct conn *c, const struct dest *d);
void outbound_direct(struct agent *a, struct conn *c, connector_cb cb);

/* Services (svc_out.c). A connect the hook captured as service od->service: choose an
 * endpoint by weight among those that allow the pod and reach it as a direct connection to
 * it would be. Takes fd and returns true; false (fd untouched) when od's VIP:port is no
 * service any more: the caller decides it as a direct connect to that address. */
bool svc_outbound(struct agent *a, struct pod *p, int fd, const struct moat_orig_dst *od,
		  uint16_t cport);
/* Reaching c's endpoint failed before anything was carried: true when another endpoint will
 * be tried (bounded, counted, logged; c stays alive and the caller leaves it alone), false
 * when the caller should close c as usual. */
bool svc_retry(struct conn *c, const char *error);
/* Drop c's endpoint-choice state (opened, closed or discarded). */
void svc_attempt_free(struct conn *c);

/* Accept handlers: one accepted connection each (the listener's acceptor, core/accept.c,
 * runs the accept loop and its back-off). */
void outbound_accept(struct agent *a, struct listener *l, int fd, const struct sockaddr *sa);
void inbound_hbone_accept(struct agent *a, struct listener *l, int fd,
			  const struct sockaddr *sa);
void inbound_plain_accept(struct agent *a, struct listener *l, int fd);

/* Inbound HBONE connections of a pod are aborted (unenroll). */
void inbound_drop_pod(struct agent *a, struct pod *p);
/* Policy changed: re-evaluate established inbound connections, close those now denied
 * (logged as late rejections naming the policy). */
void inbound_recheck(struct agent *a);
void inbound_free_all(struct agent *a);
/* The proxy's per-agent state (a->proxy: connection records, accepted HBONE connections);
 * created before the first pod listens, freed after the pods were released and the pool
 * freed (aborts the HBONE connections still open). proxy_free(a) with a->proxy NULL does
 * nothing. */
struct proxy_state *proxy_new(struct agent *a);
void proxy_free(struct agent *a);
/* Close every remaining connection (relays, pending connects) that involves the pod. */
void conns_drop_pod(struct agent *a, struct pod *p);
/* /metrics is about to render: the HBONE pool's gauges and the relay engine in use. */
void proxy_export_gauges(struct agent *a);
/* Live connection records, and how many each kernel engine carries (sockmap, ktls,
 * ktls-splice); the rest are userspace. */
void conns_count(struct agent *a, int *all, int *sockmap, int *ktls, int *ktls_splice);
/* Live connections as text (moatctl connections) or JSON. */
void conns_dump(struct agent *a, bool json, struct sbuf *out);

#endif
