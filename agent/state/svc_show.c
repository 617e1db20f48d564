/* The service table in words and JSON (`moatctl services`) and explain for a service VIP:
 * every endpoint's verdict from the same engine that enforces, and which endpoints the
 * weighted choice may take. Offline (moatctl --config) and live (moatd) call these. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/authz.h"
#include "state/services.h"

/* ,"key":"value" (value JSON-escaped, null when NULL). */
static void json_kv(struct sbuf *out, const char *key, const char *value)
{
	sbuf_printf(out, ",\"%s\":", key);
	sbuf_json_str(out, value);
}

static const char *kind_name(const struct svc *s)
{
	return s->kind == SVC_KUBERNETES ? "Service" : "ServiceEntry";
}

static const char *ep_health(const struct svc_view *v, const struct svc *s,
			     const struct svc_port *p, const struct svc_endpoint *e)
{
	if (v && v->health)
		return v->health(v->arg, s, p, e);
	return e->weight ? "ok" : "weight 0 (never chosen)";
}

static const struct mc_workload *ep_workload(const struct svc_view *v,
					     const struct svc_endpoint *e)
{
	return v && v->workload ? v->workload(v->arg, e) : e->wl;
}

static void vips_str(const struct svc *s, char *buf, size_t len)
{
	size_t off = 0;
	buf[0] = 0;
	for (size_t i = 0; i < s->n_vips && off < len; i++) {
		char a[ADDR_STRLEN];
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "",
					addr_str(&s->vips[i], a, sizeof(a)));
	}
	if (!s->n_vips)
		snprintf(buf, len, "-");
}

/* The endpoint's address for the service's first VIP family, with its target port. */
static const char *ep_addr(const struct svc *s, const struct svc_endpoint *e, char *buf,
			   size_t len)
{
	const struct moat_addr *a = s->n_vips ? svc_endpoint_addr_like(e, &s->vips[0]) : &e->addrs[0];
	return addr_port_str(a, e->target_port, buf, len);
}

static void show_text(const struct svc *s, const struct svc_view *v, struct sbuf *out)
{
	char vips[160], a[ADDR_STRLEN + 8];
	vips_str(s, vips, sizeof(vips));
	sbuf_printf(out, "%s %s/%s  id %u  host %s  VIPs %s  (%s:%d)\n", kind_name(s), s->ns,
		    s->name, s->id, s->host, vips, s->file ? s->file : "?", s->line);
	for (size_t i = 0; i < s->n_ports; i++) {
		const struct svc_port *p = &s->ports[i];
		sbuf_printf(out, "  port %u%s%s -> %s%s%s: %zu endpoint%s\n", p->port,
			    p->name ? " " : "", p->name ? p->name : "",
			    p->target_name ? "targetPort " : "",
			    p->target_name ? p->target_name : "",
			    p->target_name ? "" : "targetPort", p->n_eps, p->n_eps == 1 ? "" : "s");
		for (size_t j = 0; j < p->n_eps; j++) {
			const struct svc_endpoint *e = &p->eps[j];
			sbuf_printf(out, "    %-40s %-24s weight %-5u %s%s\n", e->name,
				    ep_addr(s, e, a, sizeof(a)), e->weight, ep_health(v, s, p, e),
				    e->pod ? " (local pod)" : "");
		}
	}
}

static void show_json(const struct svc *s, const struct svc_view *v, struct sbuf *out)
{
	char a[ADDR_STRLEN + 8];
	sbuf_printf(out, "{\"id\":%u,\"kind\":\"%s\"", s->id, kind_name(s));
	json_kv(out, "namespace", s->ns);
	json_kv(out, "name", s->name);
	json_kv(out, "host", s->host);
	sbuf_puts(out, ",\"vips\":[");
	for (size_t i = 0; i < s->n_vips; i++)
		sbuf_printf(out, "%s\"%s\"", i ? "," : "", addr_str(&s->vips[i], a, sizeof(a)));
	sbuf_puts(out, "],\"ports\":[");
	for (size_t i = 0; i < s->n_ports; i++) {
		const struct svc_port *p = &s->ports[i];
		sbuf_printf(out, "%s{\"port\":%u,\"name\":", i ? "," : "", p->port);
		sbuf_json_str(out, p->name);
		sbuf_puts(out, ",\"targetPort\":");
		if (p->target_name)
			sbuf_json_str(out, p->target_name);
		else
			sbuf_printf(out, "%u", p->target_port);
		sbuf_puts(out, ",\"endpoints\":[");
		for (size_t j = 0; j < p->n_eps; j++) {
			const struct svc_endpoint *e = &p->eps[j];
			sbuf_printf(out, "%s{\"endpoint\":", j ? "," : "");
			sbuf_json_str(out, e->name);
			sbuf_printf(out, ",\"kind\":\"%s\",\"address\":\"%s\",\"targetPort\":%u,"
				    "\"weight\":%u,\"health\":",
				    e->pod ? "pod" : "WorkloadEntry", ep_addr(s, e, a, sizeof(a)),
				    e->target_port, e->weight);
			sbuf_json_str(out, ep_health(v, s, p, e));
			sbuf_puts(out, "}");
		}
		sbuf_puts(out, "]}");
	}
	sbuf_puts(out, "]}");
}

void svc_table_show(const struct svc_table *t, const struct svc_view *v, bool json,
		    struct sbuf *out)
{
	if (json)
		sbuf_puts(out, "[");
	else if (!svc_count(t))
		sbuf_puts(out, "no services (kind Service, or ServiceEntry with a workloadSelector)\n");
	for (size_t i = 0; i < svc_count(t); i++) {
		if (json) {
			if (i)
				sbuf_puts(out, ",");
			show_json(&t->svcs[i], v, out);
		} else {
			show_text(&t->svcs[i], v, out);
		}
	}
	if (json)
		sbuf_puts(out, "]\n");
}

/* ---- explain ---- */
struct ep_verdict {
	struct authz_target target;
	struct authz_decision d;
	bool known, eligible;
};

static void decide_all(const struct mesh_config *c, const struct svc_port *p, const struct svc_view *v,
		       const struct moat_addr *vip, const struct authz_peer *peer,
		       struct ep_verdict *ev, uint64_t *total)
{
	*total = 0;
	for (size_t i = 0; i < p->n_eps; i++) {
		const struct svc_endpoint *e = &p->eps[i];
		struct ep_verdict *x = &ev[i];
		memset(x, 0, sizeof(*x));
		x->target.kind = AUTHZ_TARGET_WORKLOAD;
		x->target.workload = ep_workload(v, e);
		x->target.ip = *svc_endpoint_addr_like(e, vip);
		x->target.port = e->target_port;
		x->known = x->target.workload != NULL;
		if (x->known)
			authz_evaluate(c, &x->target, peer, &x->d);
		x->eligible = x->known && x->d.action == MOAT_ACTION_ALLOW && e->weight > 0;
		*total += x->eligible ? e->weight : 0;
	}
}

static const char *not_eligible_why(const struct ep_verdict *x, const struct svc_endpoint *e)
{
	if (!x->known)
		return "not eligible: the agent no longer knows this endpoint";
	if (x->d.action != MOAT_ACTION_ALLOW)
		return "not eligible: denied";
	if (!e->weight)
		return "not eligible: weight 0";
	return "eligible";
}

static void explain_text(const struct mesh_config *c, const struct svc *s,
			 const struct svc_port *p, const char *to, const struct authz_peer *peer,
			 const struct mc_workload *inferred, const struct ep_verdict *ev,
			 uint64_t total, struct sbuf *out)
{
	char a[ADDR_STRLEN + 8];
	size_t n_ok = 0;
	for (size_t i = 0; i < p->n_eps; i++)
		n_ok += ev[i].eligible;
	sbuf_printf(out, "%s  %s: %s %s/%s (%s) port %u (%s:%d)\n", n_ok ? "ALLOW" : "DENY", to,
		    kind_name(s), s->ns, s->name, s->host, p->port, s->file ? s->file : "?",
		    s->line);
	sbuf_printf(out, "  %zu endpoint%s, %zu eligible for the weighted choice%s\n", p->n_eps,
		    p->n_eps == 1 ? "" : "s", n_ok,
		    n_ok ? "" : ": connect() fails with EPERM");
	for (size_t i = 0; i < p->n_eps; i++) {
		const struct svc_endpoint *e = &p->eps[i];
		const struct ep_verdict *x = &ev[i];
		addr_port_str(&x->target.ip, e->target_port, a, sizeof(a));
		if (x->eligible)
			sbuf_printf(out, "endpoint %s %s weight %u: eligible, share %.1f%%\n", e->name,
				    a, e->weight, 100.0 * e->weight / (double)total);
		else
			sbuf_printf(out, "endpoint %s %s weight %u: %s\n", e->name, a, e->weight,
				    not_eligible_why(x, e));
		if (!x->known)
			continue;
		authz_decision_text(&x->d, &x->target, peer, out);
		if (x->d.reason == MOAT_REASON_NO_ALLOW)
			explain_allow_policies(c, &x->target, peer->principal, out);
	}
	if (p->n_eps)
		authz_explain_source_note(c, peer, inferred, &ev[0].target, out);
}

static void explain_json(const struct svc *s, const struct svc_port *p, const char *to,
			 const struct ep_verdict *ev, uint64_t total, struct sbuf *out)
{
	char a[ADDR_STRLEN + 8];
	size_t n_ok = 0;
	for (size_t i = 0; i < p->n_eps; i++)
		n_ok += ev[i].eligible;
	sbuf_printf(out, "{\"verdict\":\"%s\",\"to\":", n_ok ? "ALLOW" : "DENY");
	sbuf_json_str(out, to);
	sbuf_printf(out, ",\"service\":{\"kind\":\"%s\"", kind_name(s));
	json_kv(out, "namespace", s->ns);
	json_kv(out, "name", s->name);
	json_kv(out, "host", s->host);
	sbuf_printf(out, ",\"port\":%u},\"eligible\":%zu,\"endpoints\":[", p->port, n_ok);
	for (size_t i = 0; i < p->n_eps; i++) {
		const struct svc_endpoint *e = &p->eps[i];
		const struct ep_verdict *x = &ev[i];
		sbuf_printf(out, "%s{\"endpoint\":", i ? "," : "");
		sbuf_json_str(out, e->name);
		sbuf_printf(out, ",\"address\":\"%s\",\"weight\":%u,\"eligible\":%s,\"share\":%.4f,"
			    "\"decision\":",
			    addr_port_str(&x->target.ip, e->target_port, a, sizeof(a)), e->weight,
			    x->eligible ? "true" : "false",
			    x->eligible ? (double)e->weight / (double)total : 0.0);
		if (x->known)
			authz_decision_json(&x->d, out);
		else
			sbuf_puts(out, "null");
		sbuf_puts(out, "}");
	}
	sbuf_puts(out, "]}\n");
}

/* A Service's VIP dialed on a port it does not have: say which ports it has (2, bad input).
 * Anything else (-1) is explained as an address (a selecting ServiceEntry's VIP on another
 * port is that ServiceEntry's egress address). */
static int wrong_port(const struct svc_table *t, const struct moat_addr *vip, uint16_t port,
		      struct sbuf *out)
{
	char a[ADDR_STRLEN];
	for (size_t i = 0; i < svc_vip_count(t); i++) {
		const struct svc *s = &t->svcs[svc_vip_at(t, i)->svc_index];
		if (!addr_eq(&svc_vip_at(t, i)->vip, vip) || s->kind != SVC_KUBERNETES)
			continue;
		sbuf_printf(out, "--to %s:%u: %s is the VIP of Service %s/%s, which has no port %u "
			    "(its ports:", addr_str(vip, a, sizeof(a)), port, a, s->ns, s->name, port);
		for (size_t j = 0; j < s->n_ports; j++)
			sbuf_printf(out, " %u", s->ports[j].port);
		sbuf_puts(out, ")\n");
		return 2;
	}
	return -1;
}

int svc_explain(const struct mesh_config *c, const struct svc_table *t,
		const struct svc_view *v, const char *from, const char *src_ip, const char *to,
		bool json, struct sbuf *out)
{
	struct moat_addr vip;
	uint16_t port;
	const struct svc_port *p = NULL;
	if (!to || !addr_port_parse(to, &vip, &port))
		return -1;
	const struct svc *s = svc_lookup(t, &vip, port, &p);
	if (!s)
		return wrong_port(t, &vip, port, out);
	struct authz_peer peer;
	const struct mc_workload *inferred = NULL;
	int rc = authz_explain_source(c, from, src_ip, &peer, &inferred, out);
	if (rc)
		return rc;
	struct ep_verdict *ev = xcalloc(p->n_eps + 1, sizeof(*ev));
	uint64_t total;
	decide_all(c, p, v, &vip, &peer, ev, &total);
	if (json)
		explain_json(s, p, to, ev, total, out);
	else
		explain_text(c, s, p, to, &peer, inferred, ev, total, out);
	free(ev);
	return total ? 0 : 1;
}
