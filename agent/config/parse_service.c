/* Kubernetes Service (v1) specs, and the whole-set checks of every balanced service
 * (Services and MESH_INTERNAL ServiceEntries with a workloadSelector): bounds, a VIP:port
 * claimed twice, a VIP that is also a workload's address. docs/config.md "Services". */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

/* Fields kubectl writes for a ClusterIP Service are accepted; those moat cannot honour say
 * so in a warning. Anything else is an unknown field (an error), as for every kind. */
static const char *const svc_keys[] = {"type",		"clusterIP",	 "clusterIPs",
				       "ports",		"selector",	 "sessionAffinity",
				       "ipFamilies",	"ipFamilyPolicy", "internalTrafficPolicy",
				       "publishNotReadyAddresses", NULL};
static const char *const svc_port_keys[] = {"name", "port",     "targetPort",
					    "protocol", "nodePort", "appProtocol", NULL};
static const char *const svc_types[] = {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName",
					NULL};
static const char *const protocols[] = {"TCP", "UDP", "SCTP", NULL};
static const char *const affinities[] = {"None", "ClientIP", NULL};
static const char *const families[] = {"IPv4", "IPv6", NULL};
static const char *const family_policies[] = {"SingleStack", "PreferDualStack",
					      "RequireDualStack", NULL};
static const char *const traffic_policies[] = {"Cluster", "Local", NULL};

static bool str_in(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

/* Kubernetes' IANA_SVC_NAME: a named targetPort (1-15 of [a-z0-9-], a letter among them,
 * no leading, trailing or doubled '-'). */
static bool iana_svc_name(const char *s)
{
	size_t n = strlen(s);
	bool letter = false;
	if (n == 0 || n > 15 || s[0] == '-' || s[n - 1] == '-' || strstr(s, "--"))
		return false;
	for (; *s; s++) {
		if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '-')
			return false;
		letter |= islower((unsigned char)*s) != 0;
	}
	return letter;
}

static void parse_target_port(struct pctx *x, yaml_node_t *v, const char *path,
			      struct mc_svc_port *p)
{
	if (!y_expect(x, v, YAML_SCALAR_NODE, path))
		return;
	const char *t = y_text(v);
	if (all_digits(t)) {
		y_port(x, v, path, &p->target_port);
		return;
	}
	if (!iana_svc_name(t)) {
		perr(x, v, path, "\"%s\" is neither a port number nor a port name (1-15 lowercase "
		     "letters, digits and '-', with a letter)", SHOW(t));
		return;
	}
	p->target_name = xstrdup(t);
	p->target_port = 0;
}

static void parse_svc_port(struct pctx *x, yaml_node_t *n, const char *path,
			   struct mc_kservice *k)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	y_check_keys(x, n, path, svc_port_keys);
	struct mc_svc_port p = {.tcp = true, .line = yline(n)};
	yaml_node_t *v = y_get(x, n, "port");
	if (!v) {
		perr(x, n, path_key(sub, path, "port"), "a Service port needs a port number");
		return;
	}
	if (!y_port(x, v, path_key(sub, path, "port"), &p.port))
		return;
	p.target_port = p.port; /* Kubernetes: targetPort defaults to port */
	if ((v = y_get(x, n, "targetPort")))
		parse_target_port(x, v, path_key(sub, path, "targetPort"), &p);
	if ((v = y_get(x, n, "nodePort")))
		y_port(x, v, path_key(sub, path, "nodePort"), &(uint16_t){0});
	y_str(x, n, "appProtocol", path);
	const char *name = y_str(x, n, "name", path);
	if (name && !dns1123_label(name))
		perr(x, y_get(x, n, "name"), path_key(sub, path, "name"),
		     "\"%s\" is not a valid port name (DNS-1123 label)", SHOW(name));
	int proto = (v = y_get(x, n, "protocol")) ? y_enum(x, v, path_key(sub, path, "protocol"),
							   protocols) : 0;
	p.tcp = proto <= 0;
	p.protocol = xstrdup(proto > 0 ? protocols[proto] : "TCP");
	if (proto > 0)
		pwarn(x, v, sub, "protocol %s: moat carries TCP only; port %u is ignored",
		      protocols[proto], p.port);
	for (size_t i = 0; i < k->n_ports; i++) {
		const struct mc_svc_port *o = &k->ports[i];
		if (o->port == p.port && !strcmp(o->protocol, p.protocol))
			perr(x, n, path, "port %u/%s appears twice (line %d): keep one", p.port,
			     p.protocol, o->line);
		if (name && o->name && !strcmp(o->name, name))
			perr(x, n, path_key(sub, path, "name"), "port name \"%s\" appears twice "
			     "(line %d): each port needs its own name", SHOW(name), o->line);
	}
	p.name = name ? xstrdup(name) : NULL;
	*VEC_PUSH(k->ports, k->n_ports, k->cap_ports) = p;
}

static void parse_svc_ports(struct pctx *x, yaml_node_t *v, struct mc_kservice *k)
{
	char item[CFG_PATH_LEN];
	if (!y_expect(x, v, YAML_SEQUENCE_NODE, "spec.ports"))
		return;
	size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	if (n > MC_MAX_SERVICE_PORTS) {
		perr(x, v, "spec.ports", "%zu ports: a Service has at most %d "
		     "(MC_MAX_SERVICE_PORTS)", n, MC_MAX_SERVICE_PORTS);
		return;
	}
	for (size_t i = 0; i < n; i++)
		parse_svc_port(x, ynode(x, v->data.sequence.items.start[i]),
			       path_idx(item, "spec.ports", i), k);
	/* Kubernetes: with more than one port, every port is named. */
	for (size_t i = 0; n > 1 && i < k->n_ports; i++)
		if (!k->ports[i].name)
			perr(x, ynode(x, v->data.sequence.items.start[i]),
			     path_idx(item, "spec.ports", i),
			     "a Service with several ports needs a name on each");
}

/* One cluster IP: an IP address (not a CIDR, not 0.0.0.0 / ::, not loopback), one per
 * family. */
static void add_vip(struct pctx *x, yaml_node_t *n, const char *path, const char *text,
		    struct mc_kservice *k)
{
	struct moat_addr a;
	if (!addr_parse(text, &a) || addr_is_zero(&a) || addr_is_loopback(&a)) {
		perr(x, n, path, "\"%s\" is not a cluster IP (an IPv4 or IPv6 address, or \"None\" "
		     "for a headless Service)", SHOW(text));
		return;
	}
	for (size_t i = 0; i < k->n_vips; i++) {
		if (addr_eq(&k->vips[i], &a))
			return; /* clusterIP repeated as clusterIPs[0] */
		if (addr_is_v4(&k->vips[i]) == addr_is_v4(&a)) {
			perr(x, n, path, "two cluster IPs of the same family: a Service has at most "
			     "one IPv4 and one IPv6 cluster IP");
			return;
		}
	}
	if (k->n_vips < MC_SVC_MAX_VIPS)
		k->vips[k->n_vips++] = a;
}

static void cluster_ip_item(struct pctx *x, yaml_node_t *item, const char *path,
			    const char *v, void *arg)
{
	struct mc_kservice *k = arg;
	if (!strcmp(v, "None"))
		k->headless = true;
	else
		add_vip(x, item, path, v, k);
}

static void parse_cluster_ips(struct pctx *x, yaml_node_t *spec, struct mc_kservice *k)
{
	yaml_node_t *one = y_get(x, spec, "clusterIP"), *many = y_get(x, spec, "clusterIPs");
	const char *ip = y_str(x, spec, "clusterIP", "spec");
	if (ip && *ip)
		cluster_ip_item(x, one, "spec.clusterIP", ip, k);
	if (many) {
		y_each_str(x, many, "spec.clusterIPs", cluster_ip_item, k);
		/* Kubernetes: clusterIPs[0] is clusterIP. */
		yaml_node_t *first = many->type == YAML_SEQUENCE_NODE &&
					     many->data.sequence.items.start <
						     many->data.sequence.items.top
				     ? ynode(x, many->data.sequence.items.start[0])
				     : NULL;
		const char *t = first ? y_text(first) : NULL;
		if (ip && *ip && t && strcmp(t, ip) != 0)
			perr(x, first, "spec.clusterIPs[0]", "\"%s\" must equal clusterIP \"%s\"",
			     SHOW(t), SHOW(ip));
	}
	if (k->headless && k->n_vips)
		perr(x, one ? one : many, one ? "spec.clusterIP" : "spec.clusterIPs",
		     "\"None\" (headless) together with a cluster IP: write one or the other");
	k->vips_line = yline(one ? one : many ? many : spec);
}

/* type, sessionAffinity, ipFamilies...: read so a bad value is an error; what moat does
 * not honour is a warning. */
static void parse_svc_extras(struct pctx *x, yaml_node_t *spec, struct mc_kservice *k)
{
	yaml_node_t *v;
	struct mc_strs fam = {0};
	if ((v = y_get(x, spec, "type"))) {
		int t = y_enum(x, v, "spec.type", svc_types);
		if (t == 3) {
			pwarn(x, v, "spec.type", "ExternalName Services have no cluster IP: moat "
			      "ignores this Service");
			k->n_vips = 0;
		} else if (t > 0) {
			pwarn(x, v, "spec.type", "%s: moat serves the cluster IP only (node ports and "
			      "load balancer addresses are not captured)", svc_types[t]);
		}
	}
	if ((v = y_get(x, spec, "sessionAffinity")) &&
	    y_enum(x, v, "spec.sessionAffinity", affinities) == 1)
		pwarn(x, v, "spec.sessionAffinity", "ClientIP affinity is not honoured: every "
		      "connection is balanced by weight");
	if ((v = y_get(x, spec, "ipFamilies")) && y_strlist(x, v, "spec.ipFamilies", &fam))
		for (size_t i = 0; i < fam.n; i++)
			if (!str_in(fam.items[i], families))
				perr(x, v, "spec.ipFamilies", "\"%s\" is not IPv4 or IPv6",
				     SHOW(fam.items[i]));
	mc_strs_free(&fam);
	if ((v = y_get(x, spec, "ipFamilyPolicy")))
		y_enum(x, v, "spec.ipFamilyPolicy", family_policies);
	if ((v = y_get(x, spec, "internalTrafficPolicy")))
		y_enum(x, v, "spec.internalTrafficPolicy", traffic_policies);
	if ((v = y_get(x, spec, "publishNotReadyAddresses")))
		y_str(x, spec, "publishNotReadyAddresses", "spec");
}

void parse_kservice(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta)
{
	struct mc_kservice k = {0};
	k.meta = *meta;
	memset(meta, 0, sizeof(*meta));
	if (!dns1123_label(k.meta.name))
		perr(x, x->root, "metadata.name", "\"%s\" is not a valid Service name (DNS-1123 "
		     "label): it becomes part of the host name", SHOW(k.meta.name));
	if (!spec) {
		perr(x, x->root, "spec", "Service needs a spec with ports");
	} else if (y_expect(x, spec, YAML_MAPPING_NODE, "spec")) {
		y_check_keys(x, spec, "spec", svc_keys);
		parse_cluster_ips(x, spec, &k);
		yaml_node_t *v;
		if ((v = y_get(x, spec, "ports")))
			parse_svc_ports(x, v, &k);
		else if (!k.headless)
			perr(x, spec, "spec.ports", "a Service needs at least one port");
		if ((v = y_get(x, spec, "selector"))) {
			y_labels(x, v, "spec.selector", &k.selector);
			k.selector_line = yline(v);
		}
		k.has_selector = k.selector.n > 0;
		parse_svc_extras(x, spec, &k);
		if (k.headless)
			pwarn(x, y_get(x, spec, "clusterIP") ? y_get(x, spec, "clusterIP") : spec,
			      "spec.clusterIP", "headless Service (clusterIP None): it has no VIP, "
			      "so moat captures nothing for it; its pods are reached by their own "
			      "addresses");
		else if (!y_get(x, spec, "clusterIP") && !y_get(x, spec, "clusterIPs") &&
			 !y_get(x, spec, "type"))
			pwarn(x, spec, "spec.clusterIP", "no cluster IP: moat has no VIP to capture "
			      "for this Service (write spec.clusterIP as the cluster assigned it)");
		if (!k.has_selector)
			pwarn(x, spec, "spec.selector", "no selector: moat has no endpoints for this "
			      "Service (it reads no EndpointSlices); connections to it fail");
	}
	struct mesh_config *c = x->c;
	*VEC_PUSH(c->kservices, c->n_kservices, c->cap_kservices) = k;
}

/* ---- whole-set checks ---- */
/* One (VIP, port) a balanced service claims. */
struct vip_claim {
	struct moat_addr vip;
	uint16_t port;
	const char *kind;
	const struct mc_meta *meta;
	int line;
};

static int cmp_claim(const void *pa, const void *pb)
{
	const struct vip_claim *a = pa, *b = pb;
	int d = memcmp(a->vip.bytes, b->vip.bytes, sizeof(a->vip.bytes));
	if (!d)
		d = (a->port > b->port) - (a->port < b->port);
	return d ? d : (a->meta->seq > b->meta->seq) - (a->meta->seq < b->meta->seq);
}

/* Same (VIP, port), whoever claims it. */
static int cmp_claim_key(const struct vip_claim *a, const struct vip_claim *b)
{
	return !addr_eq(&a->vip, &b->vip) || a->port != b->port;
}

static void claim(struct vip_claim **v, size_t *n, size_t *cap, const struct moat_addr *vip,
		  uint16_t port, const char *kind, const struct mc_meta *meta, int line)
{
	*VEC_PUSH(*v, *n, *cap) = (struct vip_claim){*vip, port, kind, meta, line};
}

/* A ServiceEntry balanced over selected workloads: its single-IP addresses are VIPs. */
static bool se_vip(const struct cidr *a)
{
	return a->prefix == 128; /* on the mapped form: an IPv4 /32 too */
}

static size_t collect_claims(const struct mesh_config *c, struct vip_claim **v)
{
	size_t n = 0, cap = 0;
	*v = NULL;
	for (size_t i = 0; i < c->n_kservices; i++) {
		const struct mc_kservice *k = &c->kservices[i];
		for (size_t j = 0; j < k->n_vips; j++)
			for (size_t p = 0; p < k->n_ports; p++)
				if (k->ports[p].tcp)
					claim(v, &n, &cap, &k->vips[j], k->ports[p].port,
					      "Service", &k->meta, k->ports[p].line);
	}
	for (size_t i = 0; i < c->n_services; i++) {
		const struct mc_service_entry *se = &c->services[i];
		if (!se->has_workload_selector)
			continue;
		for (size_t j = 0; j < se->n_addresses; j++)
			for (size_t p = 0; se_vip(&se->addresses[j]) && p < se->n_ports; p++)
				claim(v, &n, &cap, &se->addresses[j].addr, se->ports[p].number,
				      "ServiceEntry", &se->meta, se->meta.line);
	}
	if (n)
		qsort(*v, n, sizeof(**v), cmp_claim);
	return n;
}

static void service_error(struct mc_findings *f, int *errors, const struct vip_claim *b,
			  const char *field, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static void service_error(struct mc_findings *f, int *errors, const struct vip_claim *b,
			  const char *field, const char *fmt, ...)
{
	char object[512];
	snprintf(object, sizeof(object), "%s/%s", b->meta->ns, b->meta->name);
	va_list ap;
	va_start(ap, fmt);
	mc_finding_vadd(f, MC_ERROR, b->meta->file, b->line, b->kind, object, 0, field, fmt, ap);
	va_end(ap);
	(*errors)++;
}

void mc_check_services(struct mesh_config *c, struct mc_findings *f, int *errors)
{
	size_t n_balanced = c->n_kservices;
	for (size_t i = 0; i < c->n_services; i++)
		n_balanced += c->services[i].has_workload_selector;
	if (n_balanced > MC_MAX_SERVICES) {
		mc_finding_add(f, MC_ERROR, c->kservices ? c->kservices[0].meta.file : NULL, 0,
			       NULL, NULL, 0, NULL, "%zu Services and selecting ServiceEntries: at "
			       "most %d (MC_MAX_SERVICES)", n_balanced, MC_MAX_SERVICES);
		(*errors)++;
		return;
	}
	struct vip_claim *v;
	size_t n = collect_claims(c, &v);
	char s[ADDR_STRLEN + 8];
	for (size_t i = 0; i < n; i++) {
		const struct vip_claim *b = &v[i];
		const char *field = !strcmp(b->kind, "Service") ? "spec.clusterIP" : "spec.addresses";
		if (i > 0 && !cmp_claim_key(&v[i - 1], b)) {
			const struct vip_claim *a = &v[i - 1];
			service_error(f, errors, b, field, "VIP %s is already a service port of %s "
				      "%s/%s (%s:%d): a VIP:port belongs to one service",
				      addr_port_str(&b->vip, b->port, s, sizeof(s)), a->kind,
				      a->meta->ns, a->meta->name, a->meta->file, a->line);
		}
		const struct mc_workload *w = mc_workload_by_addr(c, &b->vip);
		if (w && (i == 0 || !addr_eq(&v[i - 1].vip, &b->vip) ||
			  v[i - 1].meta != b->meta))
			service_error(f, errors, b, field, "VIP %s is the address of WorkloadEntry "
				      "%s/%s (%s:%d): a service VIP must not be a workload's address",
				      addr_str(&b->vip, s, sizeof(s)), w->meta.ns, w->meta.name,
				      w->meta.file, w->meta.line);
	}
	free(v);
}
