#include "proxy/conn.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "obs/access.h"
#include "obs/access_log.h"
#include "obs/metrics.h"
#include "proxy/proxy.h"
#include "proxy/connector.h"
#include "proxy/engine.h"
#include "proxy/pool.h"
#include "proxy/join.h"
#include "proxy/proxy_state.h"
#include "proxy/relay.h"
#include "hbone/h2.h"
#include <sys/socket.h>
#include <unistd.h>

static const char *path_name(enum conn_path p)
{
	static const char *names[] = {"hbone", "plaintext", "egress", "inbound_plaintext",
				      "same_node"};
	return names[p];
}

struct conn *conn_new(struct agent *a, enum conn_dir dir, enum conn_path path, struct pod *pod)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	c->agent = a;
	c->dir = dir;
	c->path = path;
	c->pod = pod;
	c->app_fd = -1;
	c->engine = "userspace";
	struct proxy_state *ps = a->proxy;
	c->id = ++ps->n_conns;
	c->start_wall_ms = wall_ms();
	c->start_ms = now_ms();
	c->next = ps->conns;
	if (ps->conns)
		ps->conns->prev = c;
	ps->conns = c;
	return c;
}

/* Connection records hold their names in agent->strings; a name goes when no record and
 * nothing else holds it (intern_collect). */
static const char *conn_string(struct conn *c, const char *old, const char *name)
{
	const char *s = intern_hold_str(&c->agent->strings, name);
	intern_release_str(&c->agent->strings, old, now_ms());
	return s;
}

void conn_set_src(struct conn *c, const struct moat_addr *a, uint16_t port, const char *workload,
		  const char *identity)
{
	c->src = *a;
	c->sport = port;
	c->src_workload = conn_string(c, c->src_workload, workload);
	c->src_identity = conn_string(c, c->src_identity, identity);
}

void conn_set_dst(struct conn *c, const struct moat_addr *a, uint16_t port, const char *workload,
		  const char *identity)
{
	c->dst = *a;
	c->dport = port;
	c->dst_workload = conn_string(c, c->dst_workload, workload);
	c->dst_identity = conn_string(c, c->dst_identity, identity);
}

void conn_set_policy(struct conn *c, const char *policy)
{
	c->policy = conn_string(c, c->policy, policy);
}

void conn_set_service(struct conn *c, const char *host, const char *name, const char *ns,
		      const struct moat_addr *vip, uint16_t port)
{
	c->svc_host = conn_string(c, c->svc_host, host);
	c->svc_name = conn_string(c, c->svc_name, name);
	c->svc_ns = conn_string(c, c->svc_ns, ns);
	c->svc_vip = *vip;
	c->svc_port = port;
}

void conn_set_endpoint(struct conn *c, const char *endpoint)
{
	c->svc_endpoint = conn_string(c, c->svc_endpoint, endpoint);
}

void conn_copy_service(struct conn *c, const struct conn *from)
{
	if (!from || !from->svc_host)
		return;
	conn_set_service(c, from->svc_host, from->svc_name, from->svc_ns, &from->svc_vip,
			 from->svc_port);
	conn_set_endpoint(c, from->svc_endpoint);
}

void conn_set_engine(struct conn *c, const char *engine)
{
	c->engine = engine;
}

/* ztunnel's connection_security_policy: mutual_tls for HBONE; a same-node connection the
 * kernel carries between two local pods has no tunnel to secure: "same_node". */
static const char *security_policy(const struct conn *c)
{
	if (c->path == PATH_HBONE)
		return "mutual_tls";
	return c->path == PATH_SAME_NODE ? "same_node" : "unknown";
}

/* ztunnel's label set (istio_tcp_*). */
static void conn_labels(const struct conn *c, struct metric_labels *l, char bufs[4][128],
			const char *flags)
{
	access_split_name(c->src_workload, bufs[0], 128, bufs[1], 128);
	access_split_name(c->dst_workload, bufs[2], 128, bufs[3], 128);
	metric_label(l, "reporter", c->dir == CONN_OUTBOUND ? "source" : "destination");
	metric_label(l, "source_workload", access_or_unknown(bufs[1]));
	metric_label(l, "source_workload_namespace", access_or_unknown(bufs[0]));
	metric_label(l, "source_principal", access_or_unknown(c->src_identity));
	metric_label(l, "source_app", access_or_unknown(bufs[1]));
	metric_label(l, "source_version", "unknown");
	metric_label(l, "source_cluster", "Kubernetes");
	/* Dialed as a service: Istio's destination_service is its host; a pod dialed directly
	 * keeps the workload's names (what moat always reported). */
	metric_label(l, "destination_service",
		     access_or_unknown(c->svc_host ? c->svc_host : c->dst_workload));
	metric_label(l, "destination_service_namespace",
		     access_or_unknown(c->svc_host ? c->svc_ns : bufs[2]));
	metric_label(l, "destination_service_name",
		     access_or_unknown(c->svc_host ? c->svc_name : bufs[3]));
	metric_label(l, "destination_workload", access_or_unknown(bufs[3]));
	metric_label(l, "destination_workload_namespace", access_or_unknown(bufs[2]));
	metric_label(l, "destination_principal", access_or_unknown(c->dst_identity));
	metric_label(l, "destination_app", access_or_unknown(bufs[3]));
	metric_label(l, "destination_version", "unknown");
	metric_label(l, "destination_cluster", "Kubernetes");
	metric_label(l, "request_protocol", "tcp");
	metric_label(l, "response_flags", flags);
	metric_label(l, "connection_security_policy", security_policy(c));
}

void conn_opened(struct conn *c)
{
	c->opened = true;
	svc_attempt_free(c); /* carried: no retry any more */
	struct metric_labels l = {0};
	char bufs[4][128];
	conn_labels(c, &l, bufs, "-");
	metrics_counter_add(c->agent->metrics, "istio_tcp_connections_opened_total", &l, 1);
	struct metric_labels el = {0};
	metric_label(&el, "engine", c->engine);
	metric_label(&el, "direction", c->dir == CONN_OUTBOUND ? "outbound" : "inbound");
	metrics_counter_add(c->agent->metrics, "moat_engine_connections_total", &el, 1);
}

void conn_count_copied(struct conn *c, uint64_t to_tunnel, uint64_t from_tunnel)
{
	const char *dir[2] = {"to_tunnel", "from_tunnel"};
	uint64_t n[2] = {to_tunnel, from_tunnel};
	for (int i = 0; i < 2; i++) {
		struct metric_labels l = {0};
		metric_label(&l, "direction", dir[i]);
		metrics_counter_add(c->agent->metrics, "moat_relay_payload_copied_bytes_total", &l, n[i]);
	}
}

/* "service", "service_addr" (VIP:port) and "endpoint" of a connection dialed as a service;
 * null for a direct one. */
static void json_service(struct sbuf *b, const struct conn *c)
{
	static const struct moat_addr zero;
	sbuf_puts(b, ",\"service\":");
	sbuf_json_str(b, c->svc_host);
	access_json_addr(b, "service_addr", c->svc_host ? &c->svc_vip : &zero, c->svc_port);
	sbuf_puts(b, ",\"endpoint\":");
	sbuf_json_str(b, c->svc_endpoint);
}

void conn_close(struct conn *c, uint64_t to_dest, uint64_t to_source, const char *error)
{
	/* Istio's (Envoy's) convention: "sent" is the response (destination -> source),
	 * "received" the request (source -> destination). */
	uint64_t bytes_sent = to_source, bytes_received = to_dest;
	struct agent *a = c->agent;
	if (c->closed)
		return;
	c->closed = true;
	char ts[40];
	if (c->opened) {
		struct metric_labels l = {0};
		char bufs[4][128];
		conn_labels(c, &l, bufs, "-");
		metrics_counter_add(a->metrics, "istio_tcp_connections_closed_total", &l, 1);
		metrics_counter_add(a->metrics, "istio_tcp_sent_bytes_total", &l, bytes_sent);
		metrics_counter_add(a->metrics, "istio_tcp_received_bytes_total", &l, bytes_received);
		/* Payload each engine carried, per direction of the record; "userspace" is what
		 * went through moatd's own buffers. */
		struct metric_labels el = {0};
		metric_label(&el, "engine", c->engine);
		metric_label(&el, "direction", c->dir == CONN_OUTBOUND ? "outbound" : "inbound");
		metrics_counter_add(a->metrics, "moat_engine_bytes_total", &el,
				    bytes_sent + bytes_received);
	} else {
		/* Authorized but never carried (upstream or tunnel connect failed): ztunnel's
		 * CONNECT flag. */
		struct metric_labels l = {0};
		char bufs[4][128];
		conn_labels(c, &l, bufs, "CONNECT");
		metrics_counter_add(a->metrics, "istio_tcp_connections_closed_total", &l, 1);
	}

	struct sbuf b;
	sbuf_init(&b);
	sbuf_printf(&b, "{\"time\":\"%s\",\"type\":\"connection\",\"direction\":\"%s\"",
		    iso8601_ms(wall_ms(), ts, sizeof(ts)),
		    c->dir == CONN_OUTBOUND ? "outbound" : "inbound");
	access_json_addr(&b, "src_addr", &c->src, c->sport);
	sbuf_puts(&b, ",\"src_workload\":");
	sbuf_json_str(&b, c->src_workload);
	sbuf_puts(&b, ",\"src_identity\":");
	sbuf_json_str(&b, c->src_identity);
	access_json_addr(&b, "dst_addr", &c->dst, c->dport);
	sbuf_puts(&b, ",\"dst_workload\":");
	sbuf_json_str(&b, c->dst_workload);
	sbuf_puts(&b, ",\"dst_identity\":");
	sbuf_json_str(&b, c->dst_identity);
	json_service(&b, c);
	sbuf_puts(&b, ",\"verdict\":\"ALLOW\",\"policy\":");
	sbuf_json_str(&b, c->policy);
	/* mutual_tls only for a tunnel that was actually established. */
	sbuf_printf(&b, ",\"security\":\"%s\",\"path\":\"%s\",\"engine\":\"%s\",\"opened\":%s",
		    c->path == PATH_HBONE && c->opened ? "mutual_tls"
		    : c->path == PATH_SAME_NODE && c->opened ? "same_node" : "none",
		    path_name(c->path), c->engine, c->opened ? "true" : "false");
	sbuf_printf(&b, ",\"bytes_sent\":%llu,\"bytes_received\":%llu,\"duration_ms\":%llu",
		    (unsigned long long)bytes_sent, (unsigned long long)bytes_received,
		    (unsigned long long)(now_ms() - c->start_ms));
	sbuf_puts(&b, ",\"error\":");
	sbuf_json_str(&b, error);
	sbuf_puts(&b, "}");
	log_json_line(b.s);
	sbuf_free(&b);
	conn_discard(c);
}

void conn_discard(struct conn *c)
{
	struct agent *a = c->agent;
	if (c->prev)
		c->prev->next = c->next;
	else
		a->proxy->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	svc_attempt_free(c);
	const char *names[] = {c->src_workload, c->src_identity, c->dst_workload, c->dst_identity,
			       c->policy, c->svc_host, c->svc_name, c->svc_ns, c->svc_endpoint};
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		intern_release_str(&a->strings, names[i], now_ms());
	free(c->note);
	free(c);
	/* Once per quiet second at most: malloc_trim walks the heap. */
	if (!a->proxy->conns && !loop_timer_armed(&a->proxy->trim_timer))
		loop_timer_arm(a->loop, &a->proxy->trim_timer, 1000);
}

/* Timer callback (proxy_state.trim_timer, armed 1 s after the last connection went): glibc
 * keeps the heap of a burst of connections mapped; give it back while nothing is proxied. */
static void conns_trim_heap(struct loop_timer *t)
{
	struct proxy_state *ps = container_of(t, struct proxy_state, trim_timer);
	struct agent *a = ps->agent;
	if (ps->conns)
		return; /* busy again: the next last connection re-arms */
	malloc_trim(0);
	access_log_trim(a->access_log);
	/* Idle HBONE connections (pooled, or accepted from peers) outlive the streams by up to
	 * --pool-idle / --inbound-idle: trim again after they went. Bounded: it stops once they
	 * are gone or a connection arrives. */
	int pooled = 0, streams = 0;
	if (a->pool)
		hbone_pool_counts(a->pool, &pooled, &streams);
	if (pooled || ps->srv_conns)
		loop_timer_arm(a->loop, &ps->trim_timer, 5000);
}

struct proxy_state *proxy_new(struct agent *a)
{
	struct proxy_state *ps = xcalloc(1, sizeof(*ps));
	ps->agent = a;
	loop_timer_init(&ps->trim_timer, conns_trim_heap);
	return ps;
}

void proxy_free(struct agent *a)
{
	struct proxy_state *ps = a->proxy;
	if (!ps)
		return;
	inbound_free_all(a); /* may end connection records, which re-arm the trim timer */
	loop_timer_cancel(a->loop, &ps->trim_timer);
	free(ps);
	a->proxy = NULL;
}

void conns_count(struct agent *a, int *all, int *sockmap, int *ktls, int *ktls_splice)
{
	*all = *sockmap = *ktls = *ktls_splice = 0;
	for (struct conn *c = a->proxy->conns; c; c = c->next) {
		(*all)++;
		*sockmap += strcmp(c->engine, "sockmap") == 0;
		*ktls += strcmp(c->engine, "ktls") == 0;
		*ktls_splice += strcmp(c->engine, "ktls-splice") == 0;
	}
}

/* The choice, for people: "host (VIP:port) -> endpoint", or "-" for a direct connection. */
static void service_text(struct sbuf *out, const struct conn *c)
{
	char vip[ADDR_STRLEN + 8];
	if (!c->svc_host) {
		sbuf_puts(out, "-\n");
		return;
	}
	sbuf_printf(out, "%s (%s) -> %s\n", c->svc_host,
		    addr_port_str(&c->svc_vip, c->svc_port, vip, sizeof(vip)),
		    c->svc_endpoint ? c->svc_endpoint : "-");
}

void conns_dump(struct agent *a, bool json, struct sbuf *out)
{
	char s[ADDR_STRLEN + 8], d[ADDR_STRLEN + 8];
	if (json)
		sbuf_puts(out, "[");
	else
		sbuf_printf(out, "%-8s %-22s %-22s %-28s %-28s %-10s %-9s %-8s %s\n", "DIR",
			    "SOURCE", "DESTINATION", "SRC-WORKLOAD", "DST-WORKLOAD", "PATH",
			    "ENGINE", "AGE-MS", "SERVICE");
	bool first = true;
	for (struct conn *c = a->proxy->conns; c; c = c->next) {
		addr_port_str(&c->src, c->sport, s, sizeof(s));
		addr_port_str(&c->dst, c->dport, d, sizeof(d));
		const char *dir = c->dir == CONN_OUTBOUND ? "outbound" : "inbound";
		unsigned long long age = (unsigned long long)(now_ms() - c->start_ms);
		if (!json) {
			sbuf_printf(out, "%-8s %-22s %-22s %-28s %-28s %-10s %-9s %-8llu ", dir, s,
				    d, c->src_workload ? c->src_workload : "-",
				    c->dst_workload ? c->dst_workload : "-", path_name(c->path),
				    c->engine, age);
			service_text(out, c);
			continue;
		}
		sbuf_printf(out, "%s{\"direction\":\"%s\",\"src_addr\":\"%s\",\"dst_addr\":\"%s\"",
			    first ? "" : ",", dir, s, d);
		sbuf_puts(out, ",\"src_workload\":");
		sbuf_json_str(out, c->src_workload);
		sbuf_puts(out, ",\"src_identity\":");
		sbuf_json_str(out, c->src_identity);
		sbuf_puts(out, ",\"dst_workload\":");
		sbuf_json_str(out, c->dst_workload);
		sbuf_puts(out, ",\"policy\":");
		sbuf_json_str(out, c->policy);
		json_service(out, c);
		sbuf_printf(out, ",\"path\":\"%s\",\"engine\":\"%s\",\"opened\":%s,\"age_ms\":%llu}",
			    path_name(c->path), c->engine, c->opened ? "true" : "false", age);
		first = false;
	}
	if (json)
		sbuf_puts(out, "]\n");
}

void conns_drop_pod(struct agent *a, struct pod *p)
{
	/* Each step may free connections: take one, end it, start over. */
	for (;;) {
		struct conn *c = a->proxy->conns;
		while (c && c->pod != p)
			c = c->next;
		if (!c)
			return;
		if (c->join) {
			join_reset(c->join, "pod unenrolled");
		} else if (c->relay) {
			relay_reset(c->relay, "pod unenrolled");
		} else if (c->stream) {
			h2stream_reset(c->stream, "pod unenrolled");
		} else {
			if (c->connecting) {
				connector_cancel(c->connecting);
				c->connecting = NULL;
			}
			if (c->app_fd >= 0) {
				close_rst(c->app_fd);
				c->app_fd = -1;
			}
			conn_close(c, 0, 0, "pod unenrolled");
		}
	}
}

static void relay_done(void *user, uint64_t a_to_b, uint64_t b_to_a, const char *error)
{
	struct conn *c = user;
	c->relay = NULL;
	conn_close(c, a_to_b, b_to_a, error);
}

void conn_upstream_relay(void *arg, int fd, int err_no, const char *error)
{
	(void)err_no;
	struct conn *c = arg;
	c->connecting = NULL;
	int client = c->app_fd;
	c->app_fd = -1;
	if (fd < 0) {
		log_info("%s %s: %s", c->dir == CONN_OUTBOUND ? "outbound from pod" : "plaintext into pod",
			 c->pod->key, error);
		close_rst(client);
		conn_close(c, 0, 0, error);
		return;
	}
	c->relay = relay_new(c->agent->loop, client, fd, relay_done, c);
	if (!c->relay) {
		close_rst(client);
		close_rst(fd);
		conn_close(c, 0, 0, "cannot watch sockets");
		return;
	}
	conn_opened(c);
}

void conn_log_deny(const struct conn *c, const char *phase, const char *policy,
		   const char *reason, const char *reason_code)
{
	struct deny_record r = {
		.phase = phase,
		.src_workload = c->src_workload,
		.src_identity = c->src_identity,
		.src = &c->src,
		.sport = c->sport,
		.dst = &c->dst,
		.dport = c->dport,
		.dst_workload = c->dst_workload,
		.policy = policy,
		.reason = reason,
		.reason_code = reason_code,
	};
	access_log_deny(c->agent->metrics, &r);
}

void proxy_export_gauges(struct agent *a)
{
	int conns, streams;
	hbone_pool_counts(a->pool, &conns, &streams);
	struct metric_labels none = {0}, eng = {0};
	metrics_gauge_set(a->metrics, "moat_hbone_pool_connections", &none, conns);
	metrics_gauge_set(a->metrics, "moat_hbone_pool_streams", &none, streams);
	metrics_gauge_set(a->metrics, "moat_hbone_pool_waiting", &none, hbone_pool_waiting(a->pool));
	metric_label(&eng, "engine", engine_uses_ktls(a) ? "ktls" : "userspace-openssl");
	metrics_gauge_set(a->metrics, "moat_relay_engine", &eng, 1);
}
