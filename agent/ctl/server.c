/* moatd's side of the control socket: one request per connection, answered synchronously
 * (the requests are small and local; a bounded read timeout keeps a stuck client from
 * holding the loop). */
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
#include "ctl/ctl.h"
#include "identity/identity.h"
#include "proxy/conn.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "state/agent.h"

#define CTL_MAX_REQUEST 65536
#define CTL_MAX_ARGS 64

struct ctl_server {
	struct agent *agent;
	int fd;
	struct loop_io io;
	char *path;
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

static int h_status(struct agent *a, struct request *r, struct sbuf *out)
{
	int pool_conns, pool_streams, n_pods = 0, n_conns = 0;
	hbone_pool_counts(a->pool, &pool_conns, &pool_streams);
	for (struct pod *p = a->pods; p; p = p->next)
		n_pods++;
	for (struct conn *c = a->conns; c; c = c->next)
		n_conns++;
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
				 "\"plaintext_redirected\":%llu},\"bpf_dir\":",
			    (unsigned long long)a->epoch, n_pods, n_conns, pool_conns, pool_streams,
			    (unsigned long long)st.connects_captured,
			    (unsigned long long)st.connects_denied,
			    (unsigned long long)st.connects_unregistered,
			    (unsigned long long)st.verdict_misses,
			    (unsigned long long)st.plaintext_dropped,
			    (unsigned long long)st.plaintext_redirected);
		sbuf_json_str(out, dataplane_pin_dir(a->dp));
		sbuf_printf(out, ",\"relay_engine\":\"userspace-openssl\",\"ktls_available\":%s}\n",
			    a->ktls ? "true" : "false");
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
	sbuf_printf(out, "relay engine    userspace-openssl; kernel TLS: %s\n", a->ktls_why);
	sbuf_printf(out, "connect hook    %llu captured, %llu denied, %llu unregistered, %llu "
			 "decided by moatd\n",
		    (unsigned long long)st.connects_captured, (unsigned long long)st.connects_denied,
		    (unsigned long long)st.connects_unregistered,
		    (unsigned long long)st.verdict_misses);
	sbuf_printf(out, "ingress         %llu plaintext SYNs dropped (STRICT), %llu steered to "
			 "15006 (PERMISSIVE)\n",
		    (unsigned long long)st.plaintext_dropped,
		    (unsigned long long)st.plaintext_redirected);
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
	static const char *reasons[] = {"-", "deny-policy", "no-allow", "unregistered",
					"strict-plain", "allowed"};
	struct verdict_dump *d = arg;
	struct agent *a = d->agent;
	if (v->epoch != a->epoch)
		return; /* stale: the connect hook ignores it too */
	const char *src = intern_name(&a->workload_ids, k->src_workload);
	const char *dst = intern_name(&a->workload_ids, k->dst_workload);
	const char *pol = intern_name(&a->policy_ids, v->policy);
	const char *action = actions[v->action < 3 ? v->action : 0];
	const char *reason = reasons[v->reason < 6 ? v->reason : 0];
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
		xasprintf("%-34s %-44s %-6s %-6s %-13s %s\n", src ? src : "?", dst ? dst : "?",
			  k->dst_port ? port : "*", action, reason, pol ? pol : "-");
}

static int h_verdicts(struct agent *a, struct request *r, struct sbuf *out)
{
	struct verdict_dump d = {.agent = a, .out = out, .json = want_json(r), .first = true};
	if (d.json)
		sbuf_puts(out, "[");
	else
		sbuf_printf(out, "%-34s %-44s %-6s %-6s %-13s %s\n", "SOURCE", "DESTINATION", "PORT",
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

static int h_explain(struct agent *a, struct request *r, struct sbuf *out)
{
	const char *from = arg(r, "from"), *to = arg(r, "to");
	if (!from || !to) {
		sbuf_puts(out, "explain needs from and to\n");
		return 2;
	}
	return authz_explain(a->cfg, from, arg(r, "src_ip"), to, want_json(r), out);
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

/* Read one request line and the descriptor that may come with it. */
static ssize_t read_request(int fd, char *buf, size_t cap, int *passed)
{
	size_t len = 0;
	*passed = -1;
	while (len + 1 < cap) {
		union {
			char b[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} u;
		struct iovec iov = {.iov_base = buf + len, .iov_len = cap - 1 - len};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
				     .msg_controllen = sizeof(u.b)};
		ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && *passed < 0)
				memcpy(passed, CMSG_DATA(c), sizeof(int));
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (memchr(buf, '\n', len))
			break;
	}
	buf[len] = 0;
	char *nl = strchr(buf, '\n');
	if (nl)
		*nl = 0;
	return (ssize_t)len;
}

static void serve_one(struct ctl_server *s, int fd)
{
	struct timeval tv = {.tv_sec = 2};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	char *buf = xmalloc(CTL_MAX_REQUEST);
	struct request r = {.fd = -1};
	struct sbuf body;
	sbuf_init(&body);
	int status = 2;
	if (read_request(fd, buf, CTL_MAX_REQUEST, &r.fd) <= 0) {
		sbuf_puts(&body, "no request\n");
	} else if (parse_request(buf, &r, &body) == 0) {
		size_t i;
		for (i = 0; i < ARRAY_SIZE(handlers); i++)
			if (strcmp(handlers[i].verb, r.verb) == 0)
				break;
		if (i < ARRAY_SIZE(handlers))
			status = handlers[i].fn(s->agent, &r, &body);
		else
			sbuf_printf(&body, "unknown request \"%s\"\n", r.verb);
	}
	if (r.fd >= 0)
		close(r.fd);
	char head[32];
	int hl = snprintf(head, sizeof(head), "status %d\n", status);
	if (write(fd, head, (size_t)hl) == hl && body.len) {
		size_t off = 0;
		while (off < body.len) {
			ssize_t n = write(fd, body.s + off, body.len - off);
			if (n <= 0)
				break;
			off += (size_t)n;
		}
	}
	sbuf_free(&body);
	free(buf);
	close(fd);
}

static void on_accept(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct ctl_server *s = container_of(io, struct ctl_server, io);
	for (int i = 0; i < 16; i++) {
		int fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			return;
		serve_one(s, fd);
	}
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
	if (rc < 0 || listen(fd, 64) < 0) {
		err_set(e, "control socket %s: %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	struct ctl_server *s = xcalloc(1, sizeof(*s));
	s->agent = a;
	s->fd = fd;
	s->path = xstrdup(path);
	loop_io_init(&s->io);
	if (loop_io_add(a->loop, &s->io, fd, EPOLLIN, on_accept) < 0) {
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
	loop_io_del(s->agent->loop, &s->io);
	close(s->fd);
	unlink(s->path);
	free(s->path);
	free(s);
}
