/* PeerAuthentication, WorkloadEntry and ServiceEntry specs. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

/* ---- PeerAuthentication ---- */
static const char *const pa_keys[] = {"selector", "mtls", "portLevelMtls", NULL};
static const char *const mtls_keys[] = {"mode", NULL};
/* enum mc_mtls order */
static const char *const mtls_modes[] = {"UNSET", "PERMISSIVE", "STRICT", "DISABLE", NULL};

static enum mc_mtls parse_mtls(struct pctx *x, yaml_node_t *n, const char *path)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return MC_MTLS_UNSET;
	y_check_keys(x, n, path, mtls_keys);
	yaml_node_t *mode = y_get(x, n, "mode");
	if (!mode)
		return MC_MTLS_UNSET;
	int m = y_enum(x, mode, path_key(sub, path, "mode"), mtls_modes);
	return m < 0 ? MC_MTLS_UNSET : (enum mc_mtls)m;
}

static void parse_port_level(struct pctx *x, yaml_node_t *n, const char *path,
			     struct mc_peer_auth *pa)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	if (n->data.mapping.pairs.start == n->data.mapping.pairs.top)
		perr(x, n, path, "empty portLevelMtls: list at least one port or remove it");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = ynode(x, p->key), *v = ynode(x, p->value);
		const char *key = y_text(k);
		path_key(sub, path, key ? key : "?");
		uint16_t port;
		if (!y_port(x, k, sub, &port))
			continue;
		for (size_t i = 0; i < pa->n_port_level; i++)
			if (pa->port_level[i].port == port)
				perr(x, k, sub, "port %u appears twice: keep one", port);
		struct mc_port_mtls *pm = VEC_PUSH(pa->port_level, pa->n_port_level,
						   pa->cap_port_level);
		pm->port = port;
		pm->mode = y_null(v) ? MC_MTLS_UNSET : parse_mtls(x, v, sub);
	}
}

void parse_peer_auth(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta)
{
	struct mc_peer_auth pa = {0};
	pa.meta = *meta;
	memset(meta, 0, sizeof(*meta));
	pa.id_name = xasprintf("%s/%s", pa.meta.ns, pa.meta.name);
	if (spec && y_expect(x, spec, YAML_MAPPING_NODE, "spec")) {
		y_check_keys(x, spec, "spec", pa_keys);
		yaml_node_t *v;
		if ((v = y_get(x, spec, "selector")))
			y_selector(x, v, "spec.selector", &pa.selector);
		/* An empty selector is a namespace-wide policy (Istio). */
		pa.has_selector = pa.selector.n > 0;
		if ((v = y_get(x, spec, "mtls")))
			pa.mode = parse_mtls(x, v, "spec.mtls");
		if ((v = y_get(x, spec, "portLevelMtls"))) {
			if (!pa.has_selector)
				perr(x, v, "spec.portLevelMtls",
				     "portLevelMtls needs a selector: a mesh or namespace "
				     "PeerAuthentication cannot have port-level mTLS (Istio rejects it)");
			parse_port_level(x, v, "spec.portLevelMtls", &pa);
		}
	}
	struct mesh_config *c = x->c;
	*VEC_PUSH(c->peer_auths, c->n_peer_auths, c->cap_peer_auths) = pa;
}

/* ---- WorkloadEntry (and ServiceEntry endpoints, which have the same fields) ---- */
static const char *const we_keys[] = {"address", "ports",    "labels",	       "network",
				      "locality", "weight", "serviceAccount", NULL};

static void parse_port_map(struct pctx *x, yaml_node_t *n, const char *path, struct mc_port **ports,
			   size_t *np, size_t *cap)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = ynode(x, p->key), *v = ynode(x, p->value);
		const char *name = y_text(k);
		if (!name || y_null(k)) {
			perr(x, k, path, "a port name must be a string, got %s", y_what(k));
			continue;
		}
		path_key(sub, path, name);
		uint16_t number;
		if (!y_port(x, v, sub, &number))
			continue;
		struct mc_port *pt = VEC_PUSH(*ports, *np, *cap);
		pt->name = xstrdup(name);
		pt->number = number;
	}
}

static bool host_chars(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.' && *s != '*' && *s != '_')
			return false;
	return true;
}

static void parse_service_account(struct pctx *x, yaml_node_t *n, const char *path, char **out)
{
	const char *sa = y_str(x, n, "serviceAccount", path);
	char sub[CFG_PATH_LEN];
	if (sa && !dns1123_subdomain(sa))
		perr(x, y_get(x, n, "serviceAccount"), path_key(sub, path, "serviceAccount"),
		     "\"%s\" is not a valid service account name (lowercase letters, digits, "
		     "'-', '.'): it becomes part of the SPIFFE ID", SHOW(sa));
	*out = xstrdup(sa ? sa : "default");
}

/* The node of metadata.annotations[key] (for its line), else the document root. */
static yaml_node_t *annotation_node(struct pctx *x, const char *key)
{
	yaml_node_t *n = y_get(x, y_get(x, y_get(x, x->root, "metadata"), "annotations"), key);
	return n ? n : x->root;
}

/* One entry of moat.dev/addresses: an IP, not listed before. The primary (spec.address)
 * must be among them; the others are appended after it. */
static void extra_address(struct pctx *x, yaml_node_t *n, const char *field, const char *text,
			  struct mc_workload *w, bool *has_primary)
{
	struct moat_addr a;
	if (!*text) {
		perr(x, n, field, "an empty entry: write addresses separated by single commas");
		return;
	}
	if (!addr_parse(text, &a) || addr_is_zero(&a) || addr_is_loopback(&a)) {
		perr(x, n, field, "\"%s\" is not a workload IP address", text);
		return;
	}
	bool primary = addr_eq(&a, &w->address);
	bool dup = primary ? *has_primary : mc_workload_has_addr(w, &a);
	if (dup) {
		perr(x, n, field, "address %s is listed twice", text);
		return;
	}
	if (primary) {
		*has_primary = true;
		return;
	}
	if (w->n_addrs >= MC_WL_MAX_ADDRS) {
		perr(x, n, field, "more than %d addresses: a workload has at most %d (one IPv4 "
		     "and one IPv6 is dual stack)", MC_WL_MAX_ADDRS, MC_WL_MAX_ADDRS);
		return;
	}
	w->addrs[w->n_addrs++] = a;
}

/* Dual stack. Istio's WorkloadEntry has a single spec.address and its schema takes no other
 * field, so the workload's full address list rides in an annotation, comma-separated, with
 * spec.address among them (as a Pod's status.podIPs includes status.podIP). */
static void parse_addresses_annotation(struct pctx *x, struct mc_workload *w)
{
	const char *v = mc_label_get(&w->meta.annotations, MC_ADDRESSES_ANNOTATION);
	if (!v)
		return;
	yaml_node_t *n = annotation_node(x, MC_ADDRESSES_ANNOTATION);
	const char *field = "metadata.annotations." MC_ADDRESSES_ANNOTATION;
	char *copy = xstrdup(v), *rest = copy, *tok;
	bool has_primary = false;
	while ((tok = strsep(&rest, ","))) {
		while (*tok == ' ')
			tok++;
		size_t len = strlen(tok);
		while (len && tok[len - 1] == ' ')
			tok[--len] = 0;
		extra_address(x, n, field, tok, w, &has_primary);
	}
	free(copy);
	if (!has_primary) {
		char s[ADDR_STRLEN];
		perr(x, n, field, "does not list spec.address %s: list every address of the "
		     "workload, spec.address among them", addr_str(&w->address, s, sizeof(s)));
	}
}

void parse_workload_entry(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta)
{
	struct mc_workload w = {0};
	w.meta = *meta;
	memset(meta, 0, sizeof(*meta));
	w.weight = 1;
	if (!spec) {
		perr(x, x->root, "spec", "WorkloadEntry needs a spec with an address");
	} else if (y_expect(x, spec, YAML_MAPPING_NODE, "spec")) {
		y_check_keys(x, spec, "spec", we_keys);
		const char *addr = y_str(x, spec, "address", "spec");
		if (!addr)
			perr(x, spec, "spec.address", "WorkloadEntry needs an address (the pod IP)");
		else if (!addr_parse(addr, &w.address))
			perr(x, y_get(x, spec, "address"), "spec.address",
			     "\"%s\" is not an IP address: moat WorkloadEntries are addressed by IP",
			     SHOW(addr));
		else {
			w.addrs[0] = w.address;
			w.n_addrs = 1;
			parse_addresses_annotation(x, &w);
		}
		yaml_node_t *v;
		if ((v = y_get(x, spec, "ports")))
			parse_port_map(x, v, "spec.ports", &w.ports, &w.n_ports, &w.cap_ports);
		if ((v = y_get(x, spec, "labels")))
			y_labels(x, v, "spec.labels", &w.labels);
		const char *network = y_str(x, spec, "network", "spec");
		w.network = network ? xstrdup(network) : NULL;
		y_str(x, spec, "locality", "spec");
		if ((v = y_get(x, spec, "weight")))
			y_uint32(x, v, "spec.weight", &w.weight);
		parse_service_account(x, spec, "spec", &w.service_account);
	}
	if (!w.service_account)
		w.service_account = xstrdup("default");
	struct mesh_config *c = x->c;
	*VEC_PUSH(c->workloads, c->n_workloads, c->cap_workloads) = w;
}

/* ---- ServiceEntry ---- */
static const char *const se_keys[] = {"hosts",	   "addresses", "ports",	   "location",
				      "resolution", "endpoints", "workloadSelector", "exportTo",
				      "subjectAltNames", NULL};
static const char *const se_port_keys[] = {"number", "protocol", "name", "targetPort", NULL};
static const char *const locations[] = {"MESH_EXTERNAL", "MESH_INTERNAL", NULL};
static const char *const resolutions[] = {"NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", NULL};

static void host_item(struct pctx *x, yaml_node_t *item, const char *path, const char *v,
		      void *arg)
{
	if (!host_chars(v)) {
		perr(x, item, path, "\"%s\" is not a host name (e.g. api.example.com or "
		     "*.example.com)", SHOW(v));
		return;
	}
	mc_strs_push(arg, v);
}

static void address_item(struct pctx *x, yaml_node_t *item, const char *path, const char *v,
			 void *arg)
{
	struct mc_service_entry *se = arg;
	struct cidr c;
	if (!cidr_parse(v, &c)) {
		perr(x, item, path, "\"%s\" is not an IP address or CIDR block", SHOW(v));
		return;
	}
	*VEC_PUSH(se->addresses, se->n_addresses, se->cap_addresses) = c;
}

static void parse_se_port(struct pctx *x, yaml_node_t *n, const char *path,
			  struct mc_service_entry *se)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	y_check_keys(x, n, path, se_port_keys);
	struct mc_se_port p = {0};
	yaml_node_t *v = y_get(x, n, "number");
	if (!v) {
		perr(x, n, path, "port needs a number");
		return;
	}
	if (!y_port(x, v, path_key(sub, path, "number"), &p.number))
		return;
	if ((v = y_get(x, n, "targetPort")) &&
	    !y_port(x, v, path_key(sub, path, "targetPort"), &p.target_port))
		return;
	const char *name = y_str(x, n, "name", path);
	const char *protocol = y_str(x, n, "protocol", path);
	for (size_t i = 0; i < se->n_ports; i++)
		if (se->ports[i].number == p.number)
			perr(x, n, path, "port %u appears twice: keep one", p.number);
	p.name = name ? xstrdup(name) : NULL;
	p.protocol = protocol ? xstrdup(protocol) : NULL;
	*VEC_PUSH(se->ports, se->n_ports, se->cap_ports) = p;
}

static void parse_endpoint(struct pctx *x, yaml_node_t *n, const char *path,
			   struct mc_service_entry *se)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	y_check_keys(x, n, path, we_keys);
	struct mc_se_endpoint *ep = VEC_PUSH(se->endpoints, se->n_endpoints, se->cap_endpoints);
	const char *addr = y_str(x, n, "address", path);
	path_key(sub, path, "address");
	if (!addr) {
		perr(x, n, sub, "endpoint needs an address");
	} else {
		ep->address = xstrdup(addr);
		ep->is_ip = addr_parse(addr, &ep->ip);
		if (!ep->is_ip && !host_chars(addr))
			perr(x, y_get(x, n, "address"), sub,
			     "\"%s\" is neither an IP address nor a host name", SHOW(addr));
		else if (!ep->is_ip && se->resolution == MC_RES_STATIC)
			perr(x, y_get(x, n, "address"), sub,
			     "\"%s\" is not an IP address, which resolution STATIC requires "
			     "(use resolution: DNS for host names)", SHOW(addr));
	}
	yaml_node_t *v;
	if ((v = y_get(x, n, "ports")))
		parse_port_map(x, v, path_key(sub, path, "ports"), &ep->ports, &ep->n_ports,
			       &ep->cap_ports);
	if ((v = y_get(x, n, "labels")))
		y_labels(x, v, path_key(sub, path, "labels"), &ep->labels);
	y_str(x, n, "network", path);
	y_str(x, n, "locality", path);
	uint32_t weight;
	if ((v = y_get(x, n, "weight")))
		y_uint32(x, v, path_key(sub, path, "weight"), &weight);
	char *sa = NULL;
	parse_service_account(x, n, path, &sa);
	free(sa);
}

static void parse_se_lists(struct pctx *x, yaml_node_t *spec, struct mc_service_entry *se)
{
	char item[CFG_PATH_LEN];
	yaml_node_t *v;
	if ((v = y_get(x, spec, "ports")) && y_expect(x, v, YAML_SEQUENCE_NODE, "spec.ports"))
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top; it++)
			parse_se_port(x, ynode(x, *it),
				      path_idx(item, "spec.ports",
					       (size_t)(it - v->data.sequence.items.start)),
				      se);
	if ((v = y_get(x, spec, "endpoints")) &&
	    y_expect(x, v, YAML_SEQUENCE_NODE, "spec.endpoints"))
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top; it++)
			parse_endpoint(x, ynode(x, *it),
				       path_idx(item, "spec.endpoints",
						(size_t)(it - v->data.sequence.items.start)),
				       se);
}

/* workloadSelector: {labels: {...}} selects WorkloadEntries of the ServiceEntry's
 * namespace as its endpoints (Istio); moat balances them behind spec.addresses. */
static void parse_workload_selector(struct pctx *x, yaml_node_t *v, struct mc_service_entry *se)
{
	static const char *const keys[] = {"labels", NULL};
	if (!y_expect(x, v, YAML_MAPPING_NODE, "spec.workloadSelector"))
		return;
	y_check_keys(x, v, "spec.workloadSelector", keys);
	yaml_node_t *l = y_get(x, v, "labels");
	se->workload_selector_line = yline(v);
	if (l)
		y_labels(x, l, "spec.workloadSelector.labels", &se->workload_selector);
	if (!se->workload_selector.n)
		perr(x, l ? l : v, "spec.workloadSelector.labels",
		     "a workloadSelector needs at least one label");
	se->has_workload_selector = true;
}

/* Istio's rules for a ServiceEntry that selects workloads, plus moat's: its VIPs are single
 * addresses. */
static void check_selecting_entry(struct pctx *x, yaml_node_t *spec, struct mc_service_entry *se)
{
	yaml_node_t *ws = y_get(x, spec, "workloadSelector");
	if (se->location != MC_MESH_INTERNAL)
		perr(x, ws, "spec.workloadSelector", "workloadSelector needs location: "
		     "MESH_INTERNAL (selected workloads are in the mesh)");
	if (y_get(x, spec, "endpoints"))
		perr(x, y_get(x, spec, "endpoints"), "spec.endpoints", "endpoints and "
		     "workloadSelector together: keep one (Istio allows only one)");
	if (se->resolution == MC_RES_DNS)
		perr(x, y_get(x, spec, "resolution"), "spec.resolution", "resolution DNS with a "
		     "workloadSelector: the selected workloads have addresses, use STATIC");
	for (size_t i = 0; i < se->n_addresses; i++)
		if (se->addresses[i].prefix != 128)
			perr(x, y_get(x, spec, "addresses"), "spec.addresses",
			     "a CIDR block cannot be the VIP of a ServiceEntry that selects "
			     "workloads: list single addresses");
	if (!se->n_addresses)
		pwarn(x, ws, "spec.addresses", "no addresses: moat has no VIP to capture for this "
		      "ServiceEntry; its workloads are reached by their own addresses");
	if (!se->n_ports)
		perr(x, ws, "spec.ports", "a ServiceEntry that selects workloads needs ports");
}

void parse_service_entry(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta)
{
	struct mc_service_entry se = {0};
	se.meta = *meta;
	memset(meta, 0, sizeof(*meta));
	if (!spec) {
		perr(x, x->root, "spec", "ServiceEntry needs a spec with hosts");
	} else if (y_expect(x, spec, YAML_MAPPING_NODE, "spec")) {
		y_check_keys(x, spec, "spec", se_keys);
		yaml_node_t *v;
		if ((v = y_get(x, spec, "hosts")))
			y_each_str(x, v, "spec.hosts", host_item, &se.hosts);
		else
			perr(x, spec, "spec.hosts", "ServiceEntry needs at least one host");
		if ((v = y_get(x, spec, "addresses")))
			y_each_str(x, v, "spec.addresses", address_item, &se);
		if ((v = y_get(x, spec, "location"))) {
			int l = y_enum(x, v, "spec.location", locations);
			se.location = l < 0 ? MC_MESH_EXTERNAL : (enum mc_location)l;
		}
		if ((v = y_get(x, spec, "resolution"))) {
			int r = y_enum(x, v, "spec.resolution", resolutions);
			se.resolution = r < 0 ? MC_RES_NONE : r == 3 ? MC_RES_DNS : (enum mc_resolution)r;
		}
		if ((v = y_get(x, spec, "workloadSelector")))
			parse_workload_selector(x, v, &se);
		struct mc_strs ignored = {0};
		if ((v = y_get(x, spec, "exportTo")))
			y_strlist(x, v, "spec.exportTo", &ignored);
		if ((v = y_get(x, spec, "subjectAltNames")))
			y_strlist(x, v, "spec.subjectAltNames", &ignored);
		mc_strs_free(&ignored);
		parse_se_lists(x, spec, &se);
		if (se.has_workload_selector)
			check_selecting_entry(x, spec, &se);
	}
	struct mesh_config *c = x->c;
	*VEC_PUSH(c->services, c->n_services, c->cap_services) = se;
}
