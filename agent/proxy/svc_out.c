/* Outbound connections to a service VIP (issue 9; docs/architecture.md "Service
 * connections"). The connect hook captured the VIP and recorded the service; here moatd
 * decides every endpoint for the source pod exactly as a direct connection to it would be
 * decided, picks one by weight among those that allow (state/svc_choice.c), and reaches it
 * as a direct connection would: HBONE to its agent with CONNECT authority = endpoint
 * address:targetPort, a same-node join, or plaintext to a workload without an agent. When
 * reaching it fails before a byte is carried, another allowed endpoint is tried (at most
 * SVC_MAX_ATTEMPTS in all, never one twice), counted in moat_service_endpoint_retries_total
 * and logged. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/reasons.h"
#include "obs/access.h"
#include "obs/metrics.h"
#include "proxy/conn.h"
#include "proxy/decide.h"
#include "proxy/join.h"
#include "proxy/proxy.h"
#include "state/services.h"
#include "state/svc_choice.h"

struct svc_attempt {
	struct conn *c;
	struct svc_table *t;         /* held: svc and port point into it */
	const struct svc *svc;
	const struct svc_port *port;
	bool *allowed, *tried;       /* per endpoint of port */
	int attempts;
	int keep_fd;                 /* the app socket, kept while HBONE owns its other fd */
	struct loop_timer timer;     /* the next attempt runs from the loop, not a callback */
};

static uint64_t draw(void)
{
	uint64_t r;
	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
		r = now_ms() * 0x9e3779b97f4a7c15ull;
	return r;
}

void svc_attempt_free(struct conn *c)
{
	struct svc_attempt *at = c->attempt;
	if (!at)
		return;
	c->attempt = NULL;
	loop_timer_cancel(c->agent->loop, &at->timer);
	if (at->keep_fd >= 0)
		close(at->keep_fd);
	svc_table_unref(at->t);
	free(at->allowed);
	free(at->tried);
	free(at);
}

static void deny_service(struct agent *a, struct pod *p, int fd, const struct moat_orig_dst *od,
			 uint16_t cport, const struct svc *s, const struct svc_port *port,
			 const struct svc_ep_verdict *v)
{
	struct sbuf why;
	sbuf_init(&why);
	sbuf_printf(&why, "service %s (%s/%s) port %u: no endpoint allows this source: ", s->host,
		    s->ns, s->name, od->port);
	svc_deny_summary(port, v, &why);
	struct svc_ep_verdict pv = svc_port_verdict(port, v, 0);
	struct deny_record r = {
		.phase = "outbound",
		.src_workload = p->key,
		.src_identity = p->spiffe_id,
		.src = pod_addr_like(p, &od->addr),
		.sport = cport,
		.dst = &od->addr,
		.dport = od->port,
		.dst_workload = s->host,
		.policy = pv.policy,
		.reason = why.s,
		.reason_code = moat_reason_code(MOAT_REASON_NO_ENDPOINT),
	};
	access_log_deny(a->metrics, &r);
	sbuf_free(&why);
	close_rst(fd);
}

/* Give up on c: reset the app and close the record with error. */
static void attempt_fail(struct conn *c, const char *error)
{
	if (c->app_fd >= 0) {
		close_rst(c->app_fd);
		c->app_fd = -1;
	}
	conn_close(c, 0, 0, error);
}

static void direct_ready(void *arg, int fd, int err_no, const char *error)
{
	struct conn *c = arg;
	if (fd < 0 && svc_retry(c, error))
		return;
	conn_upstream_relay(arg, fd, err_no, error);
}

/* Reach endpoint i of the attempt as a direct connection to it would be reached: the same
 * decision (proxy/decide.c) picks the path. The endpoint was judged allowed when the choice
 * was made; a deny now (the configuration changed in between) counts as a failed attempt. */
static void reach_endpoint(struct conn *c, int i)
{
	struct svc_attempt *at = c->attempt;
	struct agent *a = c->agent;
	const struct svc_endpoint *ep = &at->port->eps[i];
	struct moat_addr dst = *svc_endpoint_addr_like(ep, &c->svc_vip);
	uint16_t dport = ep->target_port;
	struct outbound_decision o;
	outbound_decide(a, c->pod, &dst, dport, &o);
	conn_set_src(c, pod_addr_like(c->pod, &dst), c->sport, c->pod->key, c->pod->spiffe_id);
	conn_set_dst(c, &dst, dport, o.d.name ? o.d.name : ep->name,
		     o.path == OUT_PLAINTEXT ? NULL : o.d.spiffe_id);
	conn_set_endpoint(c, ep->name);
	conn_set_policy(c, o.authorized ? o.policy : NULL);
	switch (o.path) {
	case OUT_DENY:
		if (!svc_retry(c, o.reason))
			attempt_fail(c, o.reason);
		return;
	case OUT_SAME_NODE: {
		/* Joined in the kernel, as a direct connection is (its records carry the service;
		 * a failing upstream there is not retried). */
		int fd = c->app_fd;
		c->app_fd = -1;
		join_start(a, c->pod, o.d.local, fd, &o.d, &dst, dport, c->sport, o.policy, c);
		conn_discard(c);
		return;
	}
	case OUT_HBONE:
		c->path = PATH_HBONE;
		at->keep_fd = fcntl(c->app_fd, F_DUPFD_CLOEXEC, 0);
		outbound_hbone(a, c, &o.d);
		return;
	default:
		c->path = o.path == OUT_PLAINTEXT ? PATH_PLAINTEXT : PATH_EGRESS;
		outbound_direct(a, c, direct_ready);
	}
}

static void next_attempt(struct conn *c)
{
	struct svc_attempt *at = c->attempt;
	int i = svc_choose(at->port, at->allowed, at->tried, draw());
	if (i < 0) {
		attempt_fail(c, "no allowed endpoint of the service is left to try");
		return;
	}
	at->tried[i] = true;
	at->attempts++;
	reach_endpoint(c, i);
}

static void on_retry_timer(struct loop_timer *t)
{
	struct svc_attempt *at = container_of(t, struct svc_attempt, timer);
	next_attempt(at->c);
}

static bool pod_enrolled(struct agent *a, const struct pod *p)
{
	for (struct pod *q = a->pods; q; q = q->next)
		if (q == p)
			return true;
	return false;
}

bool svc_retry(struct conn *c, const char *error)
{
	struct svc_attempt *at = c->attempt;
	struct agent *a = c->agent;
	if (!at || at->attempts >= SVC_MAX_ATTEMPTS || !pod_enrolled(a, c->pod) ||
	    svc_choose(at->port, at->allowed, at->tried, 0) < 0)
		return false;
	if (c->app_fd < 0) { /* HBONE took the app's fd and reset it: take the kept one */
		if (at->keep_fd < 0)
			return false;
		struct linger lg = {0}; /* undo the reset the failed attempt asked for */
		setsockopt(at->keep_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		c->app_fd = at->keep_fd;
		at->keep_fd = -1;
	}
	c->connecting = NULL;
	c->stream = NULL;
	char dst[ADDR_STRLEN + 8];
	log_warn("service %s: pod %s could not reach endpoint %s (%s): %s; trying another "
		 "endpoint (attempt %d of at most %d)",
		 c->svc_host, c->pod->key, c->svc_endpoint,
		 addr_port_str(&c->dst, c->dport, dst, sizeof(dst)), error, at->attempts + 1,
		 SVC_MAX_ATTEMPTS);
	struct metric_labels l = {0};
	metric_label(&l, "destination_service", c->svc_host);
	metrics_counter_add(a->metrics, "moat_service_endpoint_retries_total", &l, 1);
	loop_timer_arm(a->loop, &at->timer, 0);
	return true;
}

bool svc_outbound(struct agent *a, struct pod *p, int fd, const struct moat_orig_dst *od,
		  uint16_t cport)
{
	const struct svc_port *port;
	const struct svc *s = svc_lookup(a->svcs, &od->addr, od->port, &port);
	if (!s)
		return false;
	size_t ne = port->n_eps ? port->n_eps : 1;
	struct svc_ep_verdict *v = xcalloc(ne, sizeof(*v));
	bool *allowed = xcalloc(ne, sizeof(*allowed));
	size_t n_ok = agent_svc_decide_port(a, p, &od->addr, port, v, allowed);
	if (!n_ok) {
		deny_service(a, p, fd, od, cport, s, port, v);
		free(v);
		free(allowed);
		return true;
	}
	free(v);
	struct conn *c = conn_new(a, CONN_OUTBOUND, PATH_HBONE, p);
	struct svc_attempt *at = xcalloc(1, sizeof(*at));
	*at = (struct svc_attempt){.c = c, .t = svc_table_ref(a->svcs), .svc = s, .port = port,
				   .allowed = allowed, .tried = xcalloc(ne, sizeof(bool)),
				   .keep_fd = -1};
	loop_timer_init(&at->timer, on_retry_timer);
	c->attempt = at;
	c->app_fd = fd;
	c->sport = cport;
	conn_set_service(c, s->host, s->name, s->ns, &od->addr, od->port);
	next_attempt(c);
	return true;
}
