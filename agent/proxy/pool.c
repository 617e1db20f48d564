#include "proxy/pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "identity/identity.h"
#include "obs/metrics.h"
#include "proxy/connector.h"
#include "proxy/engine.h"
#include "proxy/proxy.h"

/* A request waiting for its pooled connection to be connected. */
struct pending {
	char *authority;
	char **headers;
	int n_headers;
	int app_fd;
	const struct h2stream_ops *ops;
	void *user;
	struct pending *next;
};

struct pool_conn {
	struct hbone_pool *pool;
	struct pod *src;
	char *src_id, *dst_id;
	struct moat_addr dst_ip;
	struct connector *connecting;
	struct h2conn *h2;
	/* The client context (certificate) this connection was made with: after a rotation
	 * new streams go to a connection with the new certificate; this one drains. */
	SSL_CTX *ctx;
	bool ready; /* the handshake completed: a later close is not a refusal */
	struct pending *queue, **queue_tail;
	int n_queued;
	struct loop_timer idle;
	char desc[160];
	struct pool_conn *next;
};

struct hbone_pool {
	struct agent *agent;
	struct pool_conn *conns;
	/* Refusals are logged at most once a second, with how many the line stands for. */
	uint64_t refused_logged_ms;
	uint64_t refused_unlogged;
};

struct hbone_pool *hbone_pool_new(struct agent *a)
{
	struct hbone_pool *p = xcalloc(1, sizeof(*p));
	p->agent = a;
	return p;
}

static void pending_free(struct pending *q)
{
	free(q->authority);
	for (int i = 0; i < 2 * q->n_headers; i++)
		free(q->headers[i]);
	free(q->headers);
	free(q);
}

/* Fail a request that never got a stream: RST the app and tell its owner. */
static void pending_fail(struct pending *q, const char *why)
{
	close_rst(q->app_fd);
	struct h2stream_stats st = {0};
	if (q->ops && q->ops->on_close)
		q->ops->on_close(NULL, q->user, &st, why);
	pending_free(q);
}

static void pc_unlink(struct pool_conn *pc)
{
	struct pool_conn **pp = &pc->pool->conns;
	while (*pp && *pp != pc)
		pp = &(*pp)->next;
	if (*pp)
		*pp = pc->next;
}

static void pc_free(struct pool_conn *pc)
{
	loop_timer_cancel(pc->pool->agent->loop, &pc->idle);
	free(pc->src_id);
	free(pc->dst_id);
	free(pc);
}

static void pc_fail_queue(struct pool_conn *pc, const char *why)
{
	while (pc->queue) {
		struct pending *q = pc->queue;
		pc->queue = q->next;
		pc->n_queued--;
		pending_fail(q, why);
	}
	pc->queue_tail = &pc->queue;
}

static void pc_on_closed(struct h2conn *c, const char *why)
{
	struct pool_conn *pc = h2conn_owner(c);
	engine_hbone_closed(pc->pool->agent, c);
	if (why && !pc->ready)
		log_warn("HBONE %s (pod %s as %s): refused: %s", pc->desc, pc->src->key, pc->src_id, why);
	else if (why)
		log_info("HBONE %s closed: %s", pc->desc, why);
	pc->h2 = NULL;
	pc_unlink(pc);
	pc_fail_queue(pc, why ? why : "HBONE connection closed");
	pc_free(pc);
}

static void pc_on_streams(struct h2conn *c, int n)
{
	struct pool_conn *pc = h2conn_owner(c);
	struct agent *a = pc->pool->agent;
	bool superseded = pc->ctx != identity_client_ctx(a->ids, pc->src_id);
	if (n == 0 && !pc->n_queued)
		loop_timer_arm(a->loop, &pc->idle, superseded ? 0 : (uint64_t)a->opts.pool_idle_ms);
	else
		loop_timer_cancel(a->loop, &pc->idle);
}

static void pc_on_ready(struct h2conn *c)
{
	struct pool_conn *pc = h2conn_owner(c);
	pc->ready = true;
	engine_hbone_ready(pc->pool->agent, c);
	log_debug("HBONE %s ready, peer %s (certificate serial %s)", pc->desc, h2conn_peer_id(c),
		  h2conn_peer_serial(c));
}

static const struct h2conn_ops pool_conn_ops = {
	.on_ready = pc_on_ready,
	.on_closed = pc_on_closed,
	.on_streams = pc_on_streams,
};

static void pc_idle(struct loop_timer *t)
{
	struct pool_conn *pc = container_of(t, struct pool_conn, idle);
	if (pc->h2 && h2conn_streams(pc->h2) == 0 && !pc->n_queued) {
		log_debug("HBONE %s idle: releasing", pc->desc);
		h2conn_shutdown(pc->h2);
	}
}

static struct h2stream *pc_open(struct pool_conn *pc, const char *authority,
				const char *const *headers, int n_headers, int app_fd,
				const struct h2stream_ops *ops, void *user, struct err *e)
{
	return h2conn_open_stream(pc->h2, authority, headers, n_headers, app_fd, ops, user, e);
}

static void pc_connected(void *arg, int fd, int err_no, const char *error)
{
	(void)err_no;
	struct pool_conn *pc = arg;
	struct agent *a = pc->pool->agent;
	pc->connecting = NULL;
	if (fd < 0) {
		log_warn("HBONE %s: %s", pc->desc, error);
		pc_unlink(pc);
		pc_fail_queue(pc, error);
		pc_free(pc);
		return;
	}
	SSL_CTX *ctx = identity_client_ctx(a->ids, pc->src_id);
	pc->ctx = ctx;
	struct err e = {{0}};
	pc->h2 = ctx ? h2conn_new(a->loop, H2_CLIENT, fd, ctx, pc->dst_id, &pool_conn_ops, pc,
				  pc->desc, &e)
		     : NULL;
	if (pc->h2) {
		struct h2_limits lim = agent_h2_limits(a);
		h2conn_set_limits(pc->h2, &lim);
		engine_hbone_new(a, pc->h2);
	}
	if (!pc->h2) {
		close(fd);
		char why[1024];
		snprintf(why, sizeof(why), "HBONE %s: %s", pc->desc,
			 ctx ? e.msg : "no certificate for the source identity");
		log_warn("%s", why);
		pc_unlink(pc);
		pc_fail_queue(pc, why);
		pc_free(pc);
		return;
	}
	/* Submit what waited: nghttp2 queues the frames until the handshake is done. */
	while (pc->queue) {
		struct pending *q = pc->queue;
		pc->queue = q->next;
		pc->n_queued--;
		struct err se = {{0}};
		if (!pc_open(pc, q->authority, (const char *const *)q->headers, q->n_headers,
			     q->app_fd, q->ops, q->user, &se))
			pending_fail(q, se.msg);
		else
			pending_free(q);
		if (!pc->h2)
			break; /* the connection died under us; pc is gone */
	}
	if (pc->h2)
		pc->queue_tail = &pc->queue;
}

static bool pc_same_key(const struct pool_conn *pc, const struct pool_req *r)
{
	return pc->src == r->src && addr_eq(&pc->dst_ip, &r->dst_ip) &&
	       strcmp(pc->dst_id, r->dst_id) == 0 && strcmp(pc->src_id, r->src->spiffe_id) == 0;
}

/* Requests of this connection that have no response yet (queued or on the wire). */
static int pc_waiting(const struct pool_conn *pc)
{
	return pc->n_queued + (pc->h2 ? h2conn_waiting(pc->h2) : 0);
}

static struct pool_conn *pc_find(struct hbone_pool *p, const struct pool_req *r)
{
	SSL_CTX *current = identity_client_ctx(p->agent->ids, r->src->spiffe_id);
	for (struct pool_conn *pc = p->conns; pc; pc = pc->next) {
		if (pc->h2 && pc->ctx != current)
			continue; /* made with a certificate that has since been renewed */
		if (!pc_same_key(pc, r))
			continue;
		int load = pc->n_queued + (pc->h2 ? h2conn_streams(pc->h2) : 0);
		if (pc->h2 && !h2conn_usable(pc->h2))
			continue;
		if (load < H2_CLIENT_STREAMS)
			return pc;
	}
	return NULL;
}

static struct pool_conn *pc_create(struct hbone_pool *p, const struct pool_req *r)
{
	struct agent *a = p->agent;
	struct pool_conn *pc = xcalloc(1, sizeof(*pc));
	pc->pool = p;
	pc->src = r->src;
	pc->src_id = xstrdup(r->src->spiffe_id);
	pc->dst_id = xstrdup(r->dst_id);
	pc->dst_ip = r->dst_ip;
	pc->queue_tail = &pc->queue;
	loop_timer_init(&pc->idle, pc_idle);
	char s[ADDR_STRLEN], d[ADDR_STRLEN + 8];
	snprintf(pc->desc, sizeof(pc->desc), "%s -> %s", addr_str(pod_addr_like(r->src, &r->dst_ip), s, sizeof(s)),
		 addr_port_str(&r->dst_ip, MOAT_PORT_HBONE, d, sizeof(d)));
	pc->next = p->conns;
	p->conns = pc;
	char who[300];
	snprintf(who, sizeof(who), "pod %s", r->src->key);
	struct connect_req cr = {
		.netns_fd = r->src->netns_fd,
		.dst = r->dst_ip,
		.dst_port = MOAT_PORT_HBONE,
		.timeout_ms = 10000,
		.who = who,
	};
	pc->connecting = connector_start(a->loop, &cr, pc_connected, pc);
	return pc;
}

static void pc_enqueue(struct pool_conn *pc, const struct pool_req *r)
{
	struct pending *q = xcalloc(1, sizeof(*q));
	q->authority = xstrdup(r->authority);
	q->n_headers = r->n_headers;
	q->headers = xcalloc((size_t)(2 * r->n_headers + 1), sizeof(char *));
	for (int i = 0; i < 2 * r->n_headers; i++)
		q->headers[i] = xstrdup(r->headers[i]);
	q->app_fd = r->app_fd;
	q->ops = r->ops;
	q->user = r->user;
	*pc->queue_tail = q;
	pc->queue_tail = &q->next;
	pc->n_queued++;
}

/* Fail a request before it got anywhere: RST the app and tell its owner why. */
static void req_fail(const struct pool_req *r, const char *why)
{
	struct pending *q = xcalloc(1, sizeof(*q));
	q->app_fd = r->app_fd;
	q->ops = r->ops;
	q->user = r->user;
	pending_fail(q, why);
}

static void pool_refuse(struct hbone_pool *p, const struct pool_req *r, const char *reason,
			const char *why)
{
	struct agent *a = p->agent;
	struct metric_labels l = {0};
	metric_label(&l, "reason", reason);
	metrics_counter_add(a->metrics, "moat_hbone_streams_refused_total", &l, 1);
	uint64_t now = now_ms();
	if (now - p->refused_logged_ms >= 1000) {
		log_warn("HBONE: refused a new connection from pod %s: %s (%llu more refused since "
			 "the last such line)",
			 r->src->key, why, (unsigned long long)p->refused_unlogged);
		p->refused_logged_ms = now;
		p->refused_unlogged = 0;
	} else {
		p->refused_unlogged++;
	}
	req_fail(r, why);
}

/* The caps that keep a stalling destination from exhausting the node: CONNECTs awaiting a
 * response per destination and per source pod. Returns the refusal reason or NULL. */
static const char *pool_over_cap(struct hbone_pool *p, const struct pool_req *r, char *why,
				 size_t len)
{
	const struct agent_opts *o = &p->agent->opts;
	int dest = 0, pod = 0;
	for (struct pool_conn *pc = p->conns; pc; pc = pc->next) {
		int w = pc_waiting(pc);
		if (addr_eq(&pc->dst_ip, &r->dst_ip))
			dest += w;
		if (pc->src == r->src)
			pod += w;
	}
	char d[ADDR_STRLEN];
	addr_str(&r->dst_ip, d, sizeof(d));
	if (dest >= o->max_pending_dest) {
		snprintf(why, len, "%d CONNECTs to %s already await a response "
			 "(--max-pending-per-destination %d)", dest, d, o->max_pending_dest);
		return "pending_per_destination";
	}
	if (pod >= o->max_pending_pod) {
		snprintf(why, len, "%d CONNECTs from pod %s already await a response "
			 "(--max-pending-per-pod %d)", pod, r->src->key, o->max_pending_pod);
		return "pending_per_pod";
	}
	return NULL;
}

static int pc_count_key(const struct hbone_pool *p, const struct pool_req *r)
{
	int n = 0;
	for (const struct pool_conn *pc = p->conns; pc; pc = pc->next)
		n += pc_same_key(pc, r);
	return n;
}

void hbone_pool_submit(struct hbone_pool *p, const struct pool_req *r)
{
	char why[400];
	const char *reason = pool_over_cap(p, r, why, sizeof(why));
	if (reason) {
		pool_refuse(p, r, reason, why);
		return;
	}
	struct pool_conn *pc = pc_find(p, r);
	if (!pc && pc_count_key(p, r) >= p->agent->opts.pool_max_conns) {
		char d[ADDR_STRLEN];
		snprintf(why, sizeof(why), "all %d HBONE connections to %s (%s) are full, closing or "
			 "suspect (--pool-max-connections %d)", pc_count_key(p, r),
			 addr_str(&r->dst_ip, d, sizeof(d)), r->dst_id, p->agent->opts.pool_max_conns);
		pool_refuse(p, r, "pool_full", why);
		return;
	}
	if (!pc)
		pc = pc_create(p, r);
	if (!pc->h2) {
		pc_enqueue(pc, r);
		return;
	}
	loop_timer_cancel(p->agent->loop, &pc->idle);
	struct err e = {{0}};
	if (!pc_open(pc, r->authority, r->headers, r->n_headers, r->app_fd, r->ops, r->user, &e))
		req_fail(r, e.msg);
}

void hbone_pool_drop_pod(struct hbone_pool *p, struct pod *pod)
{
	struct pool_conn **pp = &p->conns;
	while (*pp) {
		struct pool_conn *pc = *pp;
		if (pc->src != pod) {
			pp = &pc->next;
			continue;
		}
		if (pc->h2) {
			h2conn_abort(pc->h2, "source pod unenrolled"); /* pc freed in on_closed */
		} else {
			*pp = pc->next;
			connector_cancel(pc->connecting);
			pc_fail_queue(pc, "source pod unenrolled");
			pc_free(pc);
		}
		pp = &p->conns; /* the list changed under us: start over */
	}
}

void hbone_pool_free(struct hbone_pool *p)
{
	if (!p)
		return;
	while (p->conns) {
		struct pool_conn *pc = p->conns;
		if (pc->h2) {
			h2conn_abort(pc->h2, "agent shutting down");
		} else {
			p->conns = pc->next;
			connector_cancel(pc->connecting);
			pc_fail_queue(pc, "agent shutting down");
			pc_free(pc);
		}
	}
	free(p);
}

void hbone_pool_counts(const struct hbone_pool *p, int *conns, int *streams)
{
	*conns = *streams = 0;
	for (const struct pool_conn *pc = p->conns; pc; pc = pc->next) {
		(*conns)++;
		*streams += pc->n_queued + (pc->h2 ? h2conn_streams(pc->h2) : 0);
	}
}

int hbone_pool_waiting(const struct hbone_pool *p)
{
	int n = 0;
	for (const struct pool_conn *pc = p->conns; pc; pc = pc->next)
		n += pc_waiting(pc);
	return n;
}

void hbone_pool_dump(const struct hbone_pool *p, struct sbuf *out)
{
	for (const struct pool_conn *pc = p->conns; pc; pc = pc->next)
		sbuf_printf(out, "%s %s -> %s streams=%d waiting=%d%s\n", pc->desc, pc->src_id,
			    pc->dst_id, pc->n_queued + (pc->h2 ? h2conn_streams(pc->h2) : 0),
			    pc_waiting(pc),
			    !pc->h2 ? " (connecting)" : !h2conn_ready(pc->h2) ? " (handshaking)"
			    : !h2conn_usable(pc->h2) ? " (draining or suspect)" : "");
}
