/* Inbound: 15008 (HBONE, mutual TLS) and 15006 (plaintext steered by sk_lookup in
 * PERMISSIVE mode). The destination agent is authoritative: it never trusts the source's
 * decision and authorizes with the identity it verified itself. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/reasons.h"
#include "state/tproxy.h"
#include "identity/identity.h"
#include "hbone/h2.h"
#include "proxy/conn.h"
#include "proxy/connector.h"
#include "proxy/engine.h"
#include "proxy/decide.h"
#include "proxy/join.h"
#include "proxy/proxy.h"
#include "proxy/proxy_state.h"
#include "proxy/relay.h"

struct srv_conn {
	struct agent *agent;
	struct pod *pod;
	struct h2conn *h2;
	struct loop_timer idle; /* no streams for opts.inbound_idle_ms: GOAWAY */
	char desc[128];
	bool ready;
	struct srv_conn *next;
};

/* The source as the destination agent can name it: the workload owning the address. */
static const char *src_workload_name(struct agent *a, const struct moat_addr *ip)
{
	struct dest d;
	if (agent_lookup_dest(a, ip, &d) && d.kind == DEST_WORKLOAD)
		return d.name;
	return NULL;
}

struct connector *pod_app_connect(struct agent *a, struct pod *p, const struct moat_addr *src,
				  const struct moat_addr *dst, uint16_t dport, connector_cb cb,
				  void *arg)
{
	char who[300];
	snprintf(who, sizeof(who), "pod %s", p->key);
	/* dst is the pod address that was dialed (checked against the pod's addresses). */
	bool transparent = a->opts.transparent && p->transparent_ok &&
			   addr_is_v4(src) == addr_is_v4(dst) && !pod_has_addr(p, src);
	struct connect_req r = {
		.netns_fd = p->netns_fd,
		.dst = *dst,
		.dst_port = dport,
		.src = transparent ? src : NULL,
		.transparent = transparent,
		.mark = transparent ? TPROXY_MARK : 0,
		.timeout_ms = CONNECT_TIMEOUT_MS,
		.who = who,
	};
	return connector_start(a->loop, &r, cb, arg);
}

static void upstream_connect(struct agent *a, struct conn *c, connector_cb cb)
{
	/* To the pod address that was dialed (dual stack: the family the client chose). */
	c->connecting = pod_app_connect(a, c->pod, &c->src, &c->dst, c->dport, cb, c);
}

/* ---- 15008: HBONE ---- */

static void stream_closed(struct h2stream *s, void *user, const struct h2stream_stats *st,
			  const char *error)
{
	(void)s;
	struct conn *c = user;
	c->stream = NULL;
	if (c->connecting) {
		connector_cancel(c->connecting);
		c->connecting = NULL;
	}
	conn_count_copied(c, st->copied_to_peer, st->copied_from_peer);
	conn_close(c, st->bytes_from_peer, st->bytes_to_peer, error ? error : c->note);
}

static const struct h2stream_ops inbound_stream_ops = {.on_close = stream_closed};

static void hbone_upstream(void *arg, int fd, int err_no, const char *error)
{
	(void)err_no;
	struct conn *c = arg;
	c->connecting = NULL;
	if (fd < 0) {
		log_info("HBONE into pod %s: %s (503)", c->pod->key, error);
		c->note = xstrdup(error);
		h2stream_respond(c->stream, 503); /* on_close follows and closes c */
		return;
	}
	struct err e = {{0}};
	if (h2stream_accept(c->stream, fd, &e) < 0) {
		close_rst(fd);
		c->note = xstrdup(e.msg);
		return;
	}
	conn_set_engine(c, h2conn_engine(h2stream_conn(c->stream)));
	conn_opened(c);
}

static void refuse(struct h2stream *s, struct srv_conn *sc, const struct hbone_request *r,
		   int status, const char *why)
{
	char peer[ADDR_STRLEN + 8];
	log_warn("HBONE %s -> pod %s: refused %d: %s (peer %s)",
		 addr_port_str(&r->peer_addr, r->peer_port, peer, sizeof(peer)), sc->pod->key, status,
		 why, r->peer_id);
	h2stream_respond(s, status);
}

/* The source is the verified TLS connection's address and port. The `forwarded` header is
 * the peer's claim about itself, so it never names the source in a record. */
static void on_request(struct h2conn *h, struct h2stream *s, const struct hbone_request *r)
{
	struct srv_conn *sc = h2conn_owner(h);
	struct agent *a = sc->agent;
	struct pod *p = sc->pod;
	struct inbound_decision in;
	inbound_hbone_decide(a, p, r, &in);
	if (in.status != 200 && in.status != 401) {
		refuse(s, sc, r, in.status, in.why);
		return;
	}
	const char *src_name = src_workload_name(a, &r->peer_addr);
	if (in.status == 401) {
		struct deny_record dr = {
			.phase = "inbound",
			.src_workload = src_name,
			.src_identity = r->peer_id,
			.src = &r->peer_addr,
			.sport = r->peer_port,
			.dst = &in.dst,
			.dport = in.dport,
			.dst_workload = p->key,
			.policy = in.policy,
			.reason = in.why,
			.reason_code = in.code,
		};
		access_log_deny(a->metrics, &dr);
		h2stream_respond(s, 401);
		return;
	}
	struct conn *c = conn_new(a, CONN_INBOUND, PATH_HBONE, p);
	conn_set_src(c, &r->peer_addr, r->peer_port, src_name, r->peer_id);
	conn_set_dst(c, &in.dst, in.dport, p->key, p->spiffe_id);
	conn_set_policy(c, in.policy);
	c->stream = s;
	h2stream_set_ops(s, &inbound_stream_ops, c);
	upstream_connect(a, c, hbone_upstream);
}

static void srv_ready(struct h2conn *h)
{
	struct srv_conn *sc = h2conn_owner(h);
	sc->ready = true;
	engine_hbone_ready(sc->agent, h);
	log_debug("HBONE %s: peer %s verified (certificate serial %s)", sc->desc, h2conn_peer_id(h),
		  h2conn_peer_serial(h));
}

/* A connection that carries no stream for inbound_idle_ms is closed (GOAWAY), so a peer
 * cannot hold the agent's fds with connections it never uses. */
static void srv_idle(struct loop_timer *t)
{
	struct srv_conn *sc = container_of(t, struct srv_conn, idle);
	if (h2conn_streams(sc->h2) > 0)
		return;
	log_info("HBONE %s: closed: no streams for %d ms (--inbound-idle)", sc->desc,
		 sc->agent->opts.inbound_idle_ms);
	h2conn_shutdown(sc->h2);
}

static void srv_arm_idle(struct srv_conn *sc, int n_streams)
{
	struct loop *l = sc->agent->loop;
	if (n_streams == 0 && sc->agent->opts.inbound_idle_ms > 0)
		loop_timer_arm(l, &sc->idle, (uint64_t)sc->agent->opts.inbound_idle_ms);
	else
		loop_timer_cancel(l, &sc->idle);
}

static void srv_streams(struct h2conn *h, int n)
{
	srv_arm_idle(h2conn_owner(h), n);
}

static void srv_closed(struct h2conn *h, const char *why)
{
	struct srv_conn *sc = h2conn_owner(h);
	struct agent *a = sc->agent;
	loop_timer_cancel(a->loop, &sc->idle);
	engine_hbone_closed(a, h);
	if (why && !sc->ready)
		log_warn("HBONE %s: refused: %s", sc->desc, why);
	else if (why)
		log_info("HBONE %s closed: %s", sc->desc, why);
	struct srv_conn **pp = &a->proxy->srv_conns;
	while (*pp && *pp != sc)
		pp = &(*pp)->next;
	if (*pp)
		*pp = sc->next;
	free(sc);
}

static const struct h2conn_ops srv_ops = {
	.on_request = on_request,
	.on_ready = srv_ready,
	.on_closed = srv_closed,
	.on_streams = srv_streams,
};

void inbound_hbone_accept(struct agent *a, struct listener *l, int fd,
			  const struct sockaddr *sa)
{
	struct pod *p = l->pod;
	struct moat_addr peer;
	uint16_t pport;
	addr_from_sockaddr(sa, &peer, &pport);
	sock_nodelay(fd); /* HTTP/2 frames are small and latency-bound: no Nagle */
	struct srv_conn *sc = xcalloc(1, sizeof(*sc));
	loop_timer_init(&sc->idle, srv_idle);
	sc->agent = a;
	sc->pod = p;
	char ps[ADDR_STRLEN + 8];
	snprintf(sc->desc, sizeof(sc->desc), "%s -> pod %s:15008",
		 addr_port_str(&peer, pport, ps, sizeof(ps)), p->key);
	SSL_CTX *ctx = identity_server_ctx(a->ids, p->spiffe_id);
	struct err e = {{0}};
	sc->h2 = ctx ? h2conn_new(a->loop, H2_SERVER, fd, ctx, NULL, &srv_ops, sc, sc->desc, &e)
		     : NULL;
	if (sc->h2)
		engine_hbone_new(a, sc->h2);
	if (!sc->h2) {
		log_warn("HBONE %s: %s", sc->desc, ctx ? e.msg : "no certificate for the pod");
		close_rst(fd);
		free(sc);
		return;
	}
	struct h2_limits lim = agent_h2_limits(a);
	h2conn_set_limits(sc->h2, &lim);
	srv_arm_idle(sc, 0);
	sc->next = a->proxy->srv_conns;
	a->proxy->srv_conns = sc;
}

void inbound_drop_pod(struct agent *a, struct pod *p)
{
	for (;;) {
		struct srv_conn *sc = a->proxy->srv_conns;
		while (sc && sc->pod != p)
			sc = sc->next;
		if (!sc)
			break;
		h2conn_abort(sc->h2, "pod unenrolled"); /* unlinks and frees sc */
	}
	conns_drop_pod(a, p);
}

void inbound_free_all(struct agent *a)
{
	while (a->proxy->srv_conns)
		h2conn_abort(a->proxy->srv_conns->h2, "agent shutting down");
}

/* ---- 15006: plaintext (PERMISSIVE) ---- */

static void plain_handle(struct agent *a, struct pod *p, int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct moat_addr src, dst;
	uint16_t sport = 0, dport = 0;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
		addr_from_sockaddr((struct sockaddr *)&ss, &src, &sport);
	sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		addr_from_sockaddr((struct sockaddr *)&ss, &dst, &dport);
	struct inbound_decision in;
	inbound_plain_decide(a, p, &src, &dst, dport, &in);
	if (in.status != 200 && in.status != 401) {
		char s[ADDR_STRLEN + 8];
		log_warn("plaintext into pod %s: destination %s is not the pod's workload; refused",
			 p->key, addr_port_str(&dst, dport, s, sizeof(s)));
		close_rst(fd);
		return;
	}
	const char *src_name = src_workload_name(a, &src);
	if (in.status == 401) {
		struct deny_record dr = {
			.phase = "inbound",
			.src_workload = src_name,
			.src = &src,
			.sport = sport,
			.dst = &dst,
			.dport = dport,
			.dst_workload = p->key,
			.policy = in.policy,
			.reason = in.why,
			.reason_code = in.code,
		};
		access_log_deny(a->metrics, &dr);
		close_rst(fd);
		return;
	}
	struct conn *c = conn_new(a, CONN_INBOUND, PATH_INBOUND_PLAIN, p);
	conn_set_src(c, &src, sport, src_name, NULL);
	conn_set_dst(c, &dst, dport, p->key, p->spiffe_id);
	conn_set_policy(c, in.policy);
	c->app_fd = fd;
	upstream_connect(a, c, conn_upstream_relay);
}

void inbound_plain_accept(struct agent *a, struct listener *l, int fd)
{
	sock_nodelay(fd);
	plain_handle(a, l->pod, fd);
}

/* ---- live re-check ---- */

static bool still_allowed(struct agent *a, struct conn *c, struct authz_decision *dec)
{
	struct dest d;
	if (!agent_lookup_dest(a, &c->dst, &d) || d.local != c->pod)
		return false;
	const char *principal = c->src_identity ? spiffe_principal(c->src_identity) : NULL;
	agent_authorize(a, &d, &c->dst, c->dport, principal, &c->src, dec);
	return dec->action == MOAT_ACTION_ALLOW;
}

void inbound_recheck(struct agent *a)
{
	/* Resets may free connections: find one to close, close it, start over. */
	for (int guard = 0; guard < 1000000; guard++) {
		struct conn *victim = NULL;
		struct authz_decision dec;
		for (struct conn *c = a->proxy->conns; c; c = c->next) {
			if (c->dir != CONN_INBOUND || !c->opened || c->closed || c->rechecked_deny)
				continue;
			if (!still_allowed(a, c, &dec)) {
				victim = c;
				break;
			}
		}
		if (!victim)
			return;
		victim->rechecked_deny = true;
		char reason[700];
		snprintf(reason, sizeof(reason), "late rejection after a policy change: %s", dec.why);
		conn_log_deny(victim, "inbound", dec.policy ? dec.policy->id_name : NULL, reason,
			      moat_reason_code(MOAT_REASON_LATE_REJECTION));
		if (victim->join)
			join_reset(victim->join, "closed: policy now denies this connection");
		else if (victim->stream)
			h2stream_reset(victim->stream, "closed: policy now denies this connection");
		else if (victim->relay)
			relay_reset(victim->relay, "closed: policy now denies this connection");
	}
}
