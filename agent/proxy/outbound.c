/* 15001: connections the capture hook rewrote. The listener a connection reaches proves
 * which pod it came from (one listener per pod netns); the original destination comes from
 * the BPF orig_dst map. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bpf/dataplane.h"
#include "core/log.h"
#include "core/reasons.h"
#include "proxy/conn.h"
#include "proxy/connector.h"
#include "proxy/engine.h"
#include "proxy/decide.h"
#include "proxy/join.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "proxy/relay.h"
#include "proxy/sockdiag.h"

static void deny(struct agent *a, struct pod *p, int fd, const struct moat_addr *dst,
		 uint16_t dport, uint16_t sport, const char *dst_name, const char *policy,
		 const char *reason, const char *code)
{
	struct deny_record r = {
		.phase = "outbound",
		.src_workload = p->key,
		.src_identity = p->spiffe_id,
		.src = pod_addr_like(p, dst),
		.sport = sport,
		.dst = dst,
		.dport = dport,
		.dst_workload = dst_name,
		.policy = policy,
		.reason = reason,
		.reason_code = code,
	};
	access_log_deny(a->metrics, &r);
	close_rst(fd);
}

/* ---- direct paths: plaintext workloads and egress ---- */

void outbound_direct(struct agent *a, struct conn *c, connector_cb cb)
{
	char who[300];
	snprintf(who, sizeof(who), "pod %s", c->pod->key);
	struct connect_req r = {
		.netns_fd = c->pod->netns_fd,
		.dst = c->dst,
		.dst_port = c->dport,
		.timeout_ms = CONNECT_TIMEOUT_MS,
		.who = who,
	};
	c->connecting = connector_start(a->loop, &r, cb, c);
}

static void go_direct(struct agent *a, struct conn *c)
{
	outbound_direct(a, c, conn_upstream_relay);
}

/* ---- HBONE ---- */

static void hbone_response(struct h2stream *s, void *user, int status)
{
	struct conn *c = user;
	if (status == 200) {
		conn_set_engine(c, h2conn_engine(h2stream_conn(s)));
		conn_opened(c);
		return;
	}
	if (status == 401) {
		conn_log_deny(c, "outbound", NULL, moat_reason_text(MOAT_REASON_DESTINATION_DENIED),
			      moat_reason_code(MOAT_REASON_DESTINATION_DENIED));
		c->closed_as_deny = true;
	}
}

static void hbone_close(struct h2stream *s, void *user, const struct h2stream_stats *st,
			const char *error)
{
	(void)s;
	struct conn *c = user;
	c->stream = NULL;
	conn_count_copied(c, st->copied_to_peer, st->copied_from_peer);
	if (c->closed_as_deny)
		conn_discard(c);
	else if (!c->opened && svc_retry(c, error ? error : "HBONE stream failed"))
		return;
	else
		conn_close(c, st->bytes_to_peer, st->bytes_from_peer, error);
}

/* The app's FIN arrived while its CONNECT waits: reset at once only if it closed for good. */
static bool hbone_app_gone(struct h2stream *s, void *user, int fd)
{
	(void)s;
	struct conn *c = user;
	return sockdiag_peer_gone(c->pod->netns_fd, fd) == 1;
}

static const struct h2stream_ops hbone_ops = {
	.on_response = hbone_response,
	.on_close = hbone_close,
	.local_gone = hbone_app_gone,
};

static void trace_parent(char *buf, size_t len)
{
	uint8_t r[24];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		memset(r, 0x5a, sizeof(r));
	char hex[49];
	for (int i = 0; i < 24; i++)
		snprintf(hex + 2 * i, 3, "%02x", r[i]);
	snprintf(buf, len, "00-%.32s-%.16s-01", hex, hex + 32);
}

void outbound_hbone(struct agent *a, struct conn *c, const struct dest *d)
{
	char authority[ADDR_STRLEN + 8], fwd[ADDR_STRLEN + 16], src[ADDR_STRLEN + 8];
	char baggage[512], tp[64];
	addr_port_str(&c->dst, c->dport, authority, sizeof(authority));
	snprintf(fwd, sizeof(fwd), "for=\"%s\"", addr_port_str(&c->src, c->sport, src, sizeof(src)));
	const struct mc_workload *w = pod_workload(c->pod);
	const char *app = mc_label_get(&w->labels, "app");
	const char *ver = mc_label_get(&w->labels, "version");
	snprintf(baggage, sizeof(baggage),
		 "k8s.cluster.name=Kubernetes,k8s.namespace.name=%s,k8s.pod.name=%s,"
		 "service.name=%s,service.version=%s",
		 c->pod->ns, c->pod->name, app ? app : c->pod->name, ver ? ver : "latest");
	trace_parent(tp, sizeof(tp));
	const char *headers[] = {"forwarded", fwd, "baggage", baggage, "traceparent", tp};
	struct pool_req r = {
		.src = c->pod,
		.dst_id = d->spiffe_id,
		.dst_ip = c->dst,
		.authority = authority,
		.headers = headers,
		.n_headers = 3,
		.app_fd = c->app_fd,
		.ops = &hbone_ops,
		.user = c,
	};
	c->app_fd = -1;
	hbone_pool_submit(a->pool, &r);
}

/* ---- decision ---- */

static void outbound_handle(struct agent *a, struct pod *p, int fd,
			    const struct moat_addr *client, uint16_t cport)
{
	struct moat_orig_dst od;
	if (dataplane_orig_dst_take(a->dp, p->netns_cookie, client, cport, &od) < 0) {
		char s[ADDR_STRLEN + 8];
		log_warn("outbound from pod %s %s: no original destination recorded (connection "
			 "not captured by moat's connect hook); refused",
			 p->key, addr_port_str(client, cport, s, sizeof(s)));
		close_rst(fd);
		return;
	}
	if (od.service && svc_outbound(a, p, fd, &od, cport))
		return;
	struct moat_addr dst = od.addr;
	uint16_t dport = od.port;
	struct outbound_decision o;
	outbound_decide(a, p, &dst, dport, &o);
	if (o.path == OUT_DENY) {
		deny(a, p, fd, &dst, dport, cport, o.d.name, o.policy, o.reason, o.code);
		return;
	}
	if (o.path == OUT_SAME_NODE) {
		join_start(a, p, o.d.local, fd, &o.d, &dst, dport, cport, o.policy, NULL);
		return;
	}
	static const enum conn_path paths[] = {[OUT_HBONE] = PATH_HBONE, [OUT_EGRESS] = PATH_EGRESS,
					       [OUT_PASSTHROUGH] = PATH_EGRESS,
					       [OUT_PLAINTEXT] = PATH_PLAINTEXT};
	struct conn *c = conn_new(a, CONN_OUTBOUND, paths[o.path], p);
	/* The pod speaks from its address of the family it dialed (dual stack). */
	conn_set_src(c, pod_addr_like(p, &dst), cport, p->key, p->spiffe_id);
	conn_set_dst(c, &dst, dport, o.d.name, o.path == OUT_PLAINTEXT ? NULL : o.d.spiffe_id);
	c->app_fd = fd;
	if (o.authorized)
		conn_set_policy(c, o.policy);
	if (o.path == OUT_HBONE)
		outbound_hbone(a, c, &o.d);
	else
		go_direct(a, c);
}

void outbound_accept(struct agent *a, struct listener *l, int fd, const struct sockaddr *sa)
{
	struct moat_addr client;
	uint16_t cport;
	addr_from_sockaddr(sa, &client, &cport);
	sock_nodelay(fd);
	outbound_handle(a, l->pod, fd, &client, cport);
}
