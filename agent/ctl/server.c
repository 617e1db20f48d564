/* moatd's side of the control socket: one request per connection. Clients are served on the
 * agent loop without ever blocking it: every read and write is non-blocking, each client has
 * a total deadline, and the number of open clients is capped (a client that sends nothing,
 * or a byte now and then, must not freeze the proxied connections the loop also serves). */
#include "ctl/server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "bpf/dataplane.h"
#include "core/log.h"
#include "core/reasons.h"
#include "ctl/ctl.h"
#include "identity/identity.h"
#include "proxy/engine.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "state/agent.h"
#include "state/services.h"
#include "state/verdicts.h"

#define CTL_MAX_REQUEST 65536
#define CTL_MAX_ARGS 64

#define CTL_MAX_CLIENTS 16    /* open control connections at once */
#define CTL_BACKLOG 64        /* clients queued before accept: moatctl runs one at a time */
#define CTL_ACCEPT_BATCH 8    /* accepts per loop turn: an accept flood cannot evict a
			       * client before its request had a turn to be read */
#define CTL_REQUEST_MS 3000   /* from accept to the whole request */
#define CTL_REPLY_MS 10000    /* for the client to take the answer */
#define CTL_MAX_FDS 1         /* descriptors a request may carry (enroll: the netns) */
#define CTL_CMSG_FDS 16       /* room to receive (and close) a few more than allowed */
#define STR_(x) #x
#define STR(x) STR_(x)

struct ctl_server;

struct ctl_client {
	struct ctl_server *server;
	int fd;
	pid_t pid; /* of the peer, for the log */
	struct loop_io io;
	struct loop_timer timer; /* the request's, then the answer's deadline */
	char *buf;               /* the request, CTL_MAX_REQUEST bytes */
	size_t len;
	int fds[CTL_MAX_FDS]; /* descriptors received so far */
	int nfds;
	const char *fd_error; /* the request carried descriptors it may not */
	bool writing;
	struct sbuf out; /* "status N\n" + body */
	size_t off;
	struct ctl_client *next, **pprev; /* in accept order: the head is the oldest */
};

struct ctl_server {
	struct agent *agent;
	int fd;
	struct acceptor acc; /* the accept loop and its back-off (core/accept.c) */
	char *path;
	struct ctl_client *head, **tail;
	int n_clients;
};

struct request {
	char *verb;
	struct ctl_arg args[CTL_MAX_ARGS];
	int nargs;
	int fd; /* passed descriptor or -1 */
};

static const char *arg(const struct request *r, const char *key)
{
	for (int i = 0; i < r->nargs; i++)
		if (strcmp(r->args[i].key, key) == 0)
			return r->args[i].value;
	return NULL;
}

static bool want_json(const struct request *r)
{
	const char *o = arg(r, "output");
	return o && strcmp(o, "json") == 0;
}

/* ---- handlers: return the status (exit code for moatctl) and fill out ---- */

static int h_enroll(struct agent *a, struct request *r, struct sbuf *out)
{
	struct enroll_req er = {
		.ns = arg(r, "namespace"),
		.name = arg(r, "name"),
		.sa = arg(r, "service_account"),
		.cgroup_path = arg(r, "cgroup"),
		.ifname = arg(r, "interface"),
		.netns_fd = r->fd,
		.netns_path = arg(r, "netns_path"),
	};
	if (!er.ns || !er.name || !er.cgroup_path || r->fd < 0) {
		sbuf_puts(out, "enroll needs namespace, name, cgroup and the netns descriptor\n");
		return 2;
	}
	for (int i = 0; i < r->nargs; i++) {
		if (strcmp(r->args[i].key, "label") != 0)
			continue;
		const char *eq = strchr(r->args[i].value, '=');
		if (!eq || eq == r->args[i].value) {
			sbuf_printf(out, "label \"%s\": expected key=value\n", r->args[i].value);
			free(er.labels.items);
			return 2;
		}
		struct mc_label *l = VEC_PUSH(er.labels.items, er.labels.n, er.labels.cap);
		l->key = xstrndup(r->args[i].value, (size_t)(eq - r->args[i].value));
		l->value = xstrdup(eq + 1);
	}
	struct err e = {{0}};
	int rc = agent_enroll(a, &er, &e);
	r->fd = er.netns_fd; /* -1 when the pod took it */
	for (size_t i = 0; i < er.labels.n; i++) {
		free(er.labels.items[i].key);
		free(er.labels.items[i].value);
	}
	free(er.labels.items);
	if (rc < 0) {
		log_warn("%s", e.msg);
		sbuf_printf(out, "%s\n", e.msg);
		return 2;
	}
	struct pod *p = agent_pod_by_name(a, er.ns, er.name);
	char s[ADDR_STRLEN];
	sbuf_printf(out, "enrolled %s address %s identity %s\n", p->key,
		    addr_str(&p->addr, s, sizeof(s)), p->spiffe_id);
	return 0;
}

static int h_unenroll(struct agent *a, struct request *r, struct sbuf *out)
{
	const char *ns = arg(r, "namespace"), *name = arg(r, "name");
	if (!ns || !name) {
		sbuf_puts(out, "unenroll needs namespace and name\n");
		return 2;
	}
	struct err e = {{0}};
	if (agent_unenroll(a, ns, name, &e) < 0) {
		sbuf_printf(out, "%s\n", e.msg);
		return 1;
	}
	sbuf_printf(out, "unenrolled %s/%s\n", ns, name);
	return 0;
}

/* ,"verdict_cache":{...}: how the verdict map is kept (writes are counted so a test can
 * prove a change rewrites only the verdicts it affects). */
static void status_verdicts_json(struct agent *a, struct sbuf *out)
{
	if (!a->verdicts)
		return;
	const struct verdict_stats *vs = verdicts_stats(a->verdicts);
	sbuf_printf(out, ",\"verdict_cache\":{\"entries\":%zu,\"syncs\":%llu,\"written\":%llu,"
			 "\"deleted\":%llu,\"last_written\":%zu,\"last_deleted\":%zu,"
			 "\"evaluated\":%llu,\"reused\":%llu,\"pairs_skipped\":%zu,\"last_us\":%llu}",
		    vs->entries, (unsigned long long)vs->syncs, (unsigned long long)vs->written,
		    (unsigned long long)vs->deleted, vs->last_written, vs->last_deleted,
		    (unsigned long long)vs->evaluated, (unsigned long long)vs->reused,
		    vs->pairs_skipped, (unsigned long long)vs->last_us);
}

static int h_status(struct agent *a, struct request *r, struct sbuf *out)
{
	int pool_conns, pool_streams, n_pods = 0, n_conns = 0;
	hbone_pool_counts(a->pool, &pool_conns, &pool_streams);
	for (struct pod *p = a->pods; p; p = p->next)
		n_pods++;
	int n_sockmap = 0, n_ktls = 0, n_ktls_splice = 0;
	conns_count(a, &n_conns, &n_sockmap, &n_ktls, &n_ktls_splice);
	int n_user = n_conns - n_sockmap - n_ktls - n_ktls_splice;
	const char *same_node = engine_allows_sockmap(a) ? "sockmap" : "userspace";
	const char *hbone = engine_uses_ktls(a) ? "ktls" : "userspace";
	const char *ktls_off = engine_ktls_off(a);
	struct moat_stats st = {0};
	dataplane_stats(a->dp, &st);
	if (want_json(r)) {
		sbuf_printf(out, "{\"node\":");
		sbuf_json_str(out, a->opts.node_name);
		sbuf_puts(out, ",\"config_dir\":");
		sbuf_json_str(out, a->opts.config_dir);
		sbuf_printf(out, ",\"config_digest\":\"%s\",\"reloads_ok\":%llu,\"reloads_failed\":%llu",
			    a->cfg->digest, (unsigned long long)a->reloads_ok,
			    (unsigned long long)a->reloads_failed);
		sbuf_puts(out, ",\"last_reload_error\":");
		sbuf_json_str(out, a->last_reload_error[0] ? a->last_reload_error : NULL);
		sbuf_printf(out, ",\"epoch\":%llu,\"pods\":%d,\"connections\":%d,\"hbone_pool\":"
				 "{\"connections\":%d,\"streams\":%d},\"bpf\":{\"connects_captured\":%llu,"
				 "\"connects_denied\":%llu,\"connects_unregistered\":%llu,"
				 "\"verdict_misses\":%llu,\"plaintext_dropped\":%llu,"
				 "\"plaintext_redirected\":%llu,\"plaintext_no_listener\":%llu,"
				 "\"unknown_dst_dropped\":%llu,\"spoofed_dropped\":%llu},\"bpf_dir\":",
			    (unsigned long long)a->epoch, n_pods, n_conns, pool_conns, pool_streams,
			    (unsigned long long)st.connects_captured,
			    (unsigned long long)st.connects_denied,
			    (unsigned long long)st.connects_unregistered,
			    (unsigned long long)st.verdict_misses,
			    (unsigned long long)st.plaintext_dropped,
			    (unsigned long long)st.plaintext_redirected,
			    (unsigned long long)st.plaintext_no_listener,
			    (unsigned long long)st.unknown_dst_dropped,
			    (unsigned long long)st.spoofed_dropped);
		sbuf_json_str(out, dataplane_pin_dir(a->dp));
		status_verdicts_json(a, out);
		sbuf_printf(out, ",\"engine_flag\":\"%s\",\"relay_engine\":\"%s\","
				 "\"same_node_engine\":\"%s\",\"engines\":{\"sockmap\":%d,"
				 "\"ktls-splice\":%d,\"ktls\":%d,\"userspace\":%d},"
				 "\"bpf_join\":{\"redirected\":%llu,\"unpaired\":%llu},"
				 "\"ktls_available\":%s,\"ktls_off\":",
			    engine_name(a->opts.engine), hbone, same_node, n_sockmap, n_ktls_splice,
			    n_ktls, n_user, (unsigned long long)st.join_redirected,
			    (unsigned long long)st.join_unpaired, a->ktls ? "true" : "false");
		sbuf_json_str(out, ktls_off);
		sbuf_puts(out, "}\n");
		return 0;
	}
	sbuf_printf(out, "node            %s\n", a->opts.node_name ? a->opts.node_name : "-");
	sbuf_printf(out, "config          %s (digest %.12s, %llu reloads, %llu refused)\n",
		    a->opts.config_dir, a->cfg->digest, (unsigned long long)a->reloads_ok,
		    (unsigned long long)a->reloads_failed);
	if (a->last_reload_error[0])
		sbuf_printf(out, "last refusal    %s\n", a->last_reload_error);
	sbuf_printf(out, "bpf             %s (epoch %llu)\n", dataplane_pin_dir(a->dp),
		    (unsigned long long)a->epoch);
	sbuf_printf(out, "pods            %d enrolled\n", n_pods);
	sbuf_printf(out, "connections     %d live; HBONE pool %d connections, %d streams\n", n_conns,
		    pool_conns, pool_streams);
	sbuf_printf(out, "relay engine    HBONE: %s%s%s%s; same node: %s (--engine %s)\n", hbone,
		    ktls_off ? " (kTLS off: " : "", ktls_off ? ktls_off : "", ktls_off ? ")" : "",
		    same_node, engine_name(a->opts.engine));
	sbuf_printf(out, "kernel TLS      %s\n", a->ktls_why);
	sbuf_printf(out, "engines         live: %d sockmap, %d ktls-splice, %d ktls, %d userspace\n",
		    n_sockmap, n_ktls_splice, n_ktls, n_user);
	sbuf_printf(out, "connect hook    %llu captured, %llu denied, %llu unregistered, %llu "
			 "decided by moatd\n",
		    (unsigned long long)st.connects_captured, (unsigned long long)st.connects_denied,
		    (unsigned long long)st.connects_unregistered,
		    (unsigned long long)st.verdict_misses);
	sbuf_printf(out, "ingress         %llu plaintext SYNs dropped (STRICT), %llu steered to "
			 "15006 (PERMISSIVE), %llu dropped without a 15006 listener\n",
		    (unsigned long long)st.plaintext_dropped,
		    (unsigned long long)st.plaintext_redirected,
		    (unsigned long long)st.plaintext_no_listener);
	sbuf_printf(out, "pod interfaces  %llu SYNs to unregistered addresses dropped, %llu packets "
			 "with forged sources dropped\n",
		    (unsigned long long)st.unknown_dst_dropped,
		    (unsigned long long)st.spoofed_dropped);
	if (a->verdicts) {
		const struct verdict_stats *vs = verdicts_stats(a->verdicts);
		sbuf_printf(out, "verdict cache   %zu entries; last sync wrote %zu, deleted %zu, "
				 "evaluated %zu in %llu us; %zu pairs left to moatd (bound)\n",
			    vs->entries, vs->last_written, vs->last_deleted, vs->last_evaluated,
			    (unsigned long long)vs->last_us, vs->pairs_skipped);
	}
	return 0;
}

static const char *mtls_name(enum mc_mtls m)
{
	return m == MC_MTLS_STRICT ? "STRICT" : "PERMISSIVE";
}

static void workload_row(struct sbuf *out, bool json, bool *first, const struct moat_addr *ip,
			 const char *name, const char *identity, const char *kind, const char *mtls)
{
	char s[ADDR_STRLEN];
	addr_str(ip, s, sizeof(s));
	if (!json) {
		sbuf_printf(out, "%-18s %-40s %-12s %-11s %s\n", s, name, kind, mtls ? mtls : "-",
			    identity ? identity : "-");
		return;
	}
	sbuf_printf(out, "%s{\"address\":\"%s\",\"workload\":", *first ? "" : ",", s);
	sbuf_json_str(out, name);
	sbuf_printf(out, ",\"kind\":\"%s\",\"mtls\":", kind);
	sbuf_json_str(out, mtls);
	sbuf_puts(out, ",\"identity\":");
	sbuf_json_str(out, identity);
	sbuf_puts(out, "}");
	*first = false;
}

struct ws_ctx {
	struct sbuf *out;
	bool json, *first;
};

static void service_row(void *arg, const struct moat_addr *ip, const struct mc_service_entry *se)
{
	struct ws_ctx *w = arg;
	char name[300];
	snprintf(name, sizeof(name), "%s/%s", se->meta.ns, se->meta.name);
	workload_row(w->out, w->json, w->first, ip, name, NULL, "service-dns", NULL);
}

static int h_workloads(struct agent *a, struct request *r, struct sbuf *out)
{
	bool json = want_json(r), first = true;
	if (json)
		sbuf_puts(out, "[");
	else
		sbuf_printf(out, "%-18s %-40s %-12s %-11s %s\n", "ADDRESS", "WORKLOAD", "KIND", "MTLS",
			    "IDENTITY");
	for (struct pod *p = a->pods; p; p = p->next)
		workload_row(out, json, &first, &p->addr, p->key, p->spiffe_id, "local",
			     mtls_name(authz_mtls_mode(a->cfg, pod_workload(p), 0, NULL)));
	for (size_t i = 0; i < a->cfg->n_workloads; i++) {
		const struct mc_workload *w = &a->cfg->workloads[i];
		if (agent_pod_by_addr(a, &w->address))
			continue;
		char name[300];
		snprintf(name, sizeof(name), "%s/%s", w->meta.ns, w->meta.name);
		workload_row(out, json, &first, &w->address, name, w->spiffe_id,
			     w->ambient ? "ambient" : "no-agent", NULL);
	}
	for (size_t i = 0; i < a->cfg->n_services; i++) {
		const struct mc_service_entry *se = &a->cfg->services[i];
		char name[300], c[64];
		snprintf(name, sizeof(name), "%s/%s", se->meta.ns, se->meta.name);
		for (size_t j = 0; j < se->n_addresses; j++) {
			if (json) {
				sbuf_printf(out, "%s{\"address\":\"%s\",\"workload\":", first ? "" : ",",
					    cidr_str(&se->addresses[j], c, sizeof(c)));
				sbuf_json_str(out, name);
				sbuf_puts(out, ",\"kind\":\"service\",\"mtls\":null,\"identity\":null}");
				first = false;
			} else {
				sbuf_printf(out, "%-18s %-40s %-12s %-11s %s\n",
					    cidr_str(&se->addresses[j], c, sizeof(c)), name, "service",
					    "-", "-");
			}
		}
	}
	struct ws_ctx w = {.out = out, .json = json, .first = &first};
	agent_egress_each(a, service_row, &w);
	if (json)
		sbuf_puts(out, "]\n");
	return 0;
}

struct verdict_dump {
	struct agent *agent;
	struct sbuf *out;
	bool json, first;
	char **rows; /* text rows, sorted before printing */
	size_t n_rows, cap_rows;
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void verdict_row(void *arg, const struct moat_verdict_key *k, const struct moat_verdict *v)
{
	static const char *actions[] = {"NONE", "ALLOW", "DENY"};
	struct verdict_dump *d = arg;
	struct agent *a = d->agent;
	if (v->epoch != a->epoch)
		return; /* stale: the connect hook ignores it too */
	const char *src = intern_name(&a->workload_ids, k->src_workload);
	const char *dst = intern_name(&a->workload_ids, k->dst_workload);
	char svc_dst[300];
	if (k->dst_workload & MOAT_SERVICE_ID_BIT) { /* a service verdict (state/svc_maps.c) */
		const struct svc *s = svc_by_id(a->svcs, k->dst_workload & ~MOAT_SERVICE_ID_BIT);
		snprintf(svc_dst, sizeof(svc_dst), "service:%s/%s", s ? s->ns : "?", s ? s->name : "?");
		dst = svc_dst;
	}
	const char *pol = intern_name(&a->policy_ids, v->policy);
	const char *action = actions[v->action < 3 ? v->action : 0];
	const char *reason = v->reason ? moat_reason_code(v->reason) : "-";
	if (d->json) {
		sbuf_printf(d->out, "%s{\"source\":", d->first ? "" : ",");
		sbuf_json_str(d->out, src);
		sbuf_puts(d->out, ",\"destination\":");
		sbuf_json_str(d->out, dst);
		sbuf_printf(d->out, ",\"port\":%u,\"action\":\"%s\",\"reason\":\"%s\",\"policy\":",
			    k->dst_port, action, reason);
		sbuf_json_str(d->out, pol);
		sbuf_puts(d->out, "}");
		d->first = false;
		return;
	}
	char port[8];
	snprintf(port, sizeof(port), "%u", k->dst_port);
	*VEC_PUSH(d->rows, d->n_rows, d->cap_rows) =
		xasprintf("%-34s %-44s %-6s %-6s %-16s %s\n", src ? src : "?", dst ? dst : "?",
			  k->dst_port ? port : "*", action, reason, pol ? pol : "-");
}

static int h_verdicts(struct agent *a, struct request *r, struct sbuf *out)
{
	struct verdict_dump d = {.agent = a, .out = out, .json = want_json(r), .first = true};
	if (d.json)
		sbuf_puts(out, "[");
	else
		sbuf_printf(out, "%-34s %-44s %-6s %-6s %-16s %s\n", "SOURCE", "DESTINATION", "PORT",
			    "ACTION", "REASON", "POLICY");
	dataplane_verdicts_each(a->dp, verdict_row, &d);
	qsort(d.rows, d.n_rows, sizeof(*d.rows), cmp_str);
	for (size_t i = 0; i < d.n_rows; i++) {
		sbuf_puts(out, d.rows[i]);
		free(d.rows[i]);
	}
	free(d.rows);
	if (d.json)
		sbuf_puts(out, "]\n");
	return 0;
}

static int h_connections(struct agent *a, struct request *r, struct sbuf *out)
{
	conns_dump(a, want_json(r), out);
	if (!want_json(r)) {
		sbuf_puts(out, "\nHBONE pool:\n");
		hbone_pool_dump(a->pool, out);
	}
	return 0;
}

static int h_certs(struct agent *a, struct request *r, struct sbuf *out)
{
	identity_store_dump(a->ids, want_json(r), out);
	return 0;
}

/* A service endpoint's workload: its WorkloadEntry, or the local pod's (no WorkloadEntry). */
static const struct mc_workload *live_workload(void *arg, const struct svc_endpoint *e)
{
	if (e->wl)
		return e->wl;
	struct pod *p = agent_pod_by_addr(arg, &e->addrs[0]);
	return p ? pod_workload(p) : NULL;
}

static int h_explain(struct agent *a, struct request *r, struct sbuf *out)
{
	const char *from = arg(r, "from"), *to = arg(r, "to");
	if (!from || !to) {
		sbuf_puts(out, "explain needs from and to\n");
		return 2;
	}
	struct svc_view v = {.workload = live_workload, .arg = a};
	int rc = a->svcs ? svc_explain(a->svcs->cfg, a->svcs, &v, from, arg(r, "src_ip"), to,
				       want_json(r), out)
			 : -1;
	return rc >= 0 ? rc : authz_explain(a->cfg, from, arg(r, "src_ip"), to, want_json(r), out);
}

static int h_services(struct agent *a, struct request *r, struct sbuf *out)
{
	struct svc_view v = {.workload = live_workload, .arg = a};
	svc_table_show(a->svcs, &v, want_json(r), out);
	return 0;
}

static int h_reload(struct agent *a, struct request *r, struct sbuf *out)
{
	(void)r;
	if (agent_config_reload(a) < 0) {
		sbuf_printf(out, "configuration refused: %s\n", a->last_reload_error);
		return 1;
	}
	sbuf_printf(out, "configuration in force: digest %.12s\n", a->cfg->digest);
	return 0;
}

struct handler {
	const char *verb;
	int (*fn)(struct agent *a, struct request *r, struct sbuf *out);
};

static const struct handler handlers[] = {
	{"enroll", h_enroll},       {"unenroll", h_unenroll}, {"status", h_status},
	{"workloads", h_workloads}, {"verdicts", h_verdicts}, {"connections", h_connections},
	{"certs", h_certs},         {"explain", h_explain},   {"reload", h_reload},
	{"services", h_services},
};

/* ---- the socket ---- */

static int parse_request(char *line, struct request *r, struct sbuf *out)
{
	const char *why = NULL;
	if (ctl_request_parse(line, &r->verb, r->args, CTL_MAX_ARGS, &r->nargs, &why) < 0) {
		sbuf_printf(out, "%s\n", why);
		return -1;
	}
	return 0;
}

/* ---- clients: served on the loop, never blocking it ----
 * A client gets CTL_REQUEST_MS from accept to deliver its whole request and CTL_REPLY_MS to
 * take the answer; at most CTL_MAX_CLIENTS are open at once. A newcomer beyond the cap takes
 * the place of the oldest client (a stuck or hostile client is the one that has been there
 * longest; moatctl sends its request with its connect and is answered within one loop turn). */

static bool is_again(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

static pid_t peer_pid(int fd)
{
	struct ucred cred = {0};
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return 0;
	return cred.pid;
}

static void client_close_fds(struct ctl_client *c)
{
	for (int i = 0; i < c->nfds; i++)
		close(c->fds[i]);
	c->nfds = 0;
}

static void client_free(struct ctl_client *c)
{
	struct ctl_server *s = c->server;
	loop_io_del(s->agent->loop, &c->io);
	loop_timer_cancel(s->agent->loop, &c->timer);
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	else
		s->tail = c->pprev;
	s->n_clients--;
	client_close_fds(c);
	close(c->fd);
	sbuf_free(&c->out);
	free(c->buf);
	free(c);
}

/* Drop a client that did not play by the rules, with a best-effort reason on the socket. */
static void client_drop(struct ctl_client *c, const char *why)
{
	log_debug("control client (pid %d) dropped: %s", (int)c->pid, why);
	char msg[200];
	int n = snprintf(msg, sizeof(msg), "status 2\n%s\n", why);
	if (n > 0 && !c->writing)
		(void)!send(c->fd, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
	client_free(c);
}

/* Keep every descriptor of one message; too many or a truncated control message spoils the
 * request (and every descriptor is closed with it: none may stay open in moatd). */
static void client_take_fds(struct ctl_client *c, struct msghdr *msg)
{
	for (struct cmsghdr *m = CMSG_FIRSTHDR(msg); m; m = CMSG_NXTHDR(msg, m)) {
		if (m->cmsg_level != SOL_SOCKET || m->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (m->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(m) + i * sizeof(int), sizeof(int));
			if (c->nfds < CTL_MAX_FDS) {
				c->fds[c->nfds++] = fd;
				continue;
			}
			close(fd);
			c->fd_error = "more than " STR(CTL_MAX_FDS) " descriptor in one request";
		}
	}
	if (msg->msg_flags & MSG_CTRUNC)
		c->fd_error = "control message truncated: too many descriptors in one request";
}

/* Read what is there. Returns 1 when the request is complete (newline or end of stream),
 * 0 when more is to come, -1 when the client is gone or broke the protocol (why set). */
static int client_read(struct ctl_client *c, const char **why)
{
	for (int round = 0; round < 64; round++) {
		if (c->len + 1 >= CTL_MAX_REQUEST) {
			*why = "request longer than " STR(CTL_MAX_REQUEST) " bytes";
			return -1;
		}
		union {
			char b[CMSG_SPACE(CTL_CMSG_FDS * sizeof(int))];
			struct cmsghdr align;
		} u;
		struct iovec iov = {.iov_base = c->buf + c->len, .iov_len = CTL_MAX_REQUEST - 1 - c->len};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
				     .msg_controllen = sizeof(u.b)};
		ssize_t n = recvmsg(c->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0 && is_again(errno))
			return 0;
		if (n < 0) {
			*why = strerror(errno);
			return -1;
		}
		client_take_fds(c, &msg);
		if (n == 0)
			return 1;
		c->len += (size_t)n;
		if (memchr(c->buf + c->len - (size_t)n, '\n', (size_t)n))
			return 1;
	}
	return 0; /* fair to the others: the rest comes on the next turn */
}

/* Write what the socket takes. Returns 1 when all is written, 0 for later, -1 on error. */
static int client_write(struct ctl_client *c)
{
	while (c->off < c->out.len) {
		ssize_t n = send(c->fd, c->out.s + c->off, c->out.len - c->off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && is_again(errno))
			return 0;
		if (n < 0)
			return -1;
		c->off += (size_t)n;
	}
	return 1;
}

static int dispatch(struct ctl_server *s, struct ctl_client *c, struct sbuf *body)
{
	if (c->fd_error) {
		sbuf_printf(body, "%s\n", c->fd_error);
		return 2;
	}
	c->buf[c->len] = 0;
	char *nl = strchr(c->buf, '\n');
	if (nl)
		*nl = 0;
	if (!c->buf[0]) {
		sbuf_puts(body, "no request\n");
		return 2;
	}
	struct request r = {.fd = c->nfds == 1 ? c->fds[0] : -1};
	c->nfds = 0; /* r.fd is closed below unless a handler kept it */
	int status = 2;
	if (parse_request(c->buf, &r, body) == 0) {
		size_t i;
		for (i = 0; i < ARRAY_SIZE(handlers); i++)
			if (strcmp(handlers[i].verb, r.verb) == 0)
				break;
		if (i < ARRAY_SIZE(handlers))
			status = handlers[i].fn(s->agent, &r, body);
		else
			sbuf_printf(body, "unknown request \"%s\"\n", r.verb);
	}
	if (r.fd >= 0)
		close(r.fd);
	return status;
}

/* The request is in: answer it and switch the client to writing. */
static void client_answer(struct ctl_client *c)
{
	struct ctl_server *s = c->server;
	struct sbuf body;
	sbuf_init(&body);
	int status = dispatch(s, c, &body);
	client_close_fds(c);
	sbuf_printf(&c->out, "status %d\n", status);
	if (body.len)
		sbuf_append(&c->out, body.s, body.len);
	sbuf_free(&body);
	c->writing = true;
	int w = client_write(c);
	if (w != 0) {
		client_free(c);
		return;
	}
	loop_io_mod(s->agent->loop, &c->io, EPOLLOUT);
	loop_timer_arm(s->agent->loop, &c->timer, CTL_REPLY_MS);
}

static void client_on_io(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct ctl_client *c = container_of(io, struct ctl_client, io);
	if (c->writing) {
		if (client_write(c) != 0)
			client_free(c);
		return;
	}
	const char *why = NULL;
	int r = client_read(c, &why);
	if (r < 0)
		client_drop(c, why);
	else if (r > 0 || c->fd_error)
		client_answer(c);
}

static void client_on_timer(struct loop_timer *t)
{
	struct ctl_client *c = container_of(t, struct ctl_client, timer);
	client_drop(c, c->writing ? "answer not taken within " STR(CTL_REPLY_MS) " ms"
				  : "no complete request within " STR(CTL_REQUEST_MS) " ms");
}

static void client_new(struct ctl_server *s, int fd)
{
	if (s->n_clients >= CTL_MAX_CLIENTS)
		client_drop(s->head, CTL_BUSY ": " STR(CTL_MAX_CLIENTS) " clients open; the "
					     "oldest made room for a newer one");
	struct ctl_client *c = xcalloc(1, sizeof(*c));
	c->server = s;
	c->fd = fd;
	c->pid = peer_pid(fd);
	c->buf = xmalloc(CTL_MAX_REQUEST);
	sbuf_init(&c->out);
	loop_io_init(&c->io);
	loop_timer_init(&c->timer, client_on_timer);
	c->pprev = s->tail;
	*s->tail = c;
	s->tail = &c->next;
	s->n_clients++;
	if (loop_io_add(s->agent->loop, &c->io, fd, EPOLLIN, client_on_io) < 0) {
		log_warn("control socket: epoll: %s", strerror(errno));
		client_free(c);
		return;
	}
	loop_timer_arm(s->agent->loop, &c->timer, CTL_REQUEST_MS);
	client_on_io(&c->io, EPOLLIN); /* moatctl's request is usually there already */
}

static void on_accepted(struct acceptor *ac, int fd, const struct sockaddr *sa, socklen_t len)
{
	(void)sa;
	(void)len;
	client_new(container_of(ac, struct ctl_server, acc), fd);
}

struct ctl_server *ctl_server_new(struct agent *a, const char *path, struct err *e)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sun.sun_path)) {
		err_set(e, "control socket path too long: %s", path);
		return NULL;
	}
	strcpy(sun.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err_set(e, "control socket: %s", strerror(errno));
		return NULL;
	}
	unlink(path);
	mode_t old = umask(0077);
	int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (rc < 0 || listen(fd, CTL_BACKLOG) < 0) {
		err_set(e, "control socket %s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	struct ctl_server *s = xcalloc(1, sizeof(*s));
	s->agent = a;
	s->fd = fd;
	s->path = xstrdup(path);
	s->tail = &s->head;
	char what[sizeof(sun.sun_path) + 32];
	snprintf(what, sizeof(what), "control socket %s", path);
	s->acc.pauses = &a->accept_pauses;
	if (acceptor_start(&s->acc, a->loop, fd, CTL_ACCEPT_BATCH, on_accepted, what) < 0) {
		err_set(e, "control socket: epoll: %s", strerror(errno));
		close(fd);
		free(s->path);
		free(s);
		return NULL;
	}
	return s;
}

void ctl_server_free(struct ctl_server *s)
{
	if (!s)
		return;
	while (s->head)
		client_free(s->head);
	acceptor_stop(&s->acc);
	close(s->fd);
	unlink(s->path);
	free(s->path);
	free(s);
}
