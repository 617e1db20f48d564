/* AuthorizationPolicy (security.istio.io/v1, v1beta1): parsed and validated as Istio's own
 * validation does, plus moat's fail-closed rules. L7 fields are recorded per rule (for lint)
 * and left out of the stored rule: an ALLOW rule carrying any is marked dropped (matches
 * nothing, as Istio does); a DENY rule is kept without them (fail closed). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

static const char *const spec_keys[] = {"selector", "targetRef", "targetRefs", "action",
					"provider", "rules", NULL};
static const char *const actions[] = {"ALLOW", "DENY", "AUDIT", "CUSTOM", NULL};
static const char *const rule_keys[] = {"from", "to", "when", NULL};
static const char *const from_keys[] = {"source", NULL};
static const char *const to_keys[] = {"operation", NULL};
static const char *const source_keys[] = {
	"principals",	   "notPrincipals",	  "requestPrincipals", "notRequestPrincipals",
	"namespaces",	   "notNamespaces",	  "ipBlocks",	       "notIpBlocks",
	"remoteIpBlocks",  "notRemoteIpBlocks",	  "serviceAccounts",   "notServiceAccounts",
	NULL};
static const char *const l7_source_keys[] = {"requestPrincipals", "notRequestPrincipals",
					     "remoteIpBlocks", "notRemoteIpBlocks", NULL};
static const char *const op_keys[] = {"hosts",	 "notHosts", "ports", "notPorts", "methods",
				      "notMethods", "paths",	"notPaths", NULL};
static const char *const l7_op_keys[] = {"hosts",      "notHosts", "methods",
					 "notMethods", "paths",	   "notPaths", NULL};
static const char *const cond_keys[] = {"key", "values", "notValues", NULL};
static const char *const ref_keys[] = {"group", "kind", "name", "namespace", NULL};
static const char *const provider_keys[] = {"name", NULL};

/* `when` keys: the five L4 ones (enum mc_when_key order), then Istio's L7 ones. */
static const char *const l4_when_keys[] = {"source.ip", "source.namespace", "source.principal",
					   "destination.ip", "destination.port", NULL};
static const char *const all_when_keys[] = {
	"source.ip",	  "source.namespace",	   "source.principal",	     "destination.ip",
	"destination.port", "remote.ip",	   "source.serviceAccount",  "request.auth.principal",
	"request.auth.audiences", "request.auth.presenter", "connection.sni",
	"request.headers[]", "request.auth.claims[]", NULL};

struct rule_ctx {
	struct mc_authz *p;
	struct mc_rule *r;
};

static bool str_in(const char *s, const char *const *set)
{
	for (size_t i = 0; set[i]; i++)
		if (strcmp(set[i], s) == 0)
			return true;
	return false;
}

static void add_l7(struct mc_rule *r, const char *field, const char *name, int line)
{
	struct mc_l7 *l = VEC_PUSH(r->l7, r->n_l7, r->cap_l7);
	l->field = xstrdup(field);
	l->name = xstrdup(name);
	l->line = line;
}

/* ---- items of source lists ---- */
struct principal_arg {
	struct mc_strs *out, *spiffe;
};

static void principal_item(struct pctx *x, yaml_node_t *item, const char *path, const char *v,
			   void *arg)
{
	struct principal_arg *a = arg;
	const char *bare = v;
	if (strncmp(v, "spiffe://", 9) == 0) {
		bare = v + 9;
		mc_strs_push(a->spiffe, v);
	}
	if (!*bare) {
		perr(x, item, path, "empty principal: write <trust-domain>/ns/<namespace>/sa/<name>");
		return;
	}
	mc_strs_push(a->out, bare);
}

static void cidr_item(struct pctx *x, yaml_node_t *item, const char *path, const char *v,
		      void *arg)
{
	struct cidr c;
	if (!cidr_parse(v, &c)) {
		perr(x, item, path, "\"%s\" is not an IP address or CIDR block (e.g. 10.0.0.0/16)", SHOW(v));
		return;
	}
	if (arg) {
		struct mc_cidrs *out = arg;
		*VEC_PUSH(out->items, out->n, out->cap) = c;
	}
}

static void check_item(struct pctx *x, yaml_node_t *item, const char *path, const char *v,
		       void *arg)
{
	(void)x, (void)item, (void)path, (void)v, (void)arg;
}

struct sa_arg {
	struct mc_strs *out;
	const char *policy_ns;
};

/* serviceAccounts: "sa" (the policy's namespace) or "ns/sa", no wildcards. */
static void sa_item(struct pctx *x, yaml_node_t *item, const char *path, const char *v, void *arg)
{
	struct sa_arg *a = arg;
	const char *slash = strchr(v, '/');
	char ns[256];
	const char *sa = v;
	if (strchr(v, '*')) {
		perr(x, item, path, "\"%s\": wildcards are not allowed in serviceAccounts", SHOW(v));
		return;
	}
	if (slash) {
		size_t l = (size_t)(slash - v);
		if (strchr(slash + 1, '/') || l == 0 || l >= sizeof(ns)) {
			perr(x, item, path,
			     "\"%s\": expected \"<service-account>\" or \"<namespace>/<service-account>\"",
			     SHOW(v));
			return;
		}
		memcpy(ns, v, l);
		ns[l] = 0;
		sa = slash + 1;
	} else {
		snprintf(ns, sizeof(ns), "%s", a->policy_ns);
	}
	if (!dns1123_label(ns)) {
		perr(x, item, path, "\"%s\": namespace \"%s\" is not a valid namespace name "
		     "(DNS-1123 label: lowercase letters, digits, '-')", SHOW(v), SHOW(ns));
		return;
	}
	if (!dns1123_subdomain(sa)) {
		perr(x, item, path, "\"%s\": \"%s\" is not a valid service account name "
		     "(lowercase letters, digits, '-', '.')", SHOW(v), SHOW(sa));
		return;
	}
	char *full = xasprintf("%s/%s", ns, sa);
	mc_strs_push(a->out, full);
	free(full);
}

struct port_arg {
	uint16_t **ports;
	size_t *n, *cap;
	struct mc_strs *named;
	bool *has_named;
};

/* A port entry: a number 1..65535, or a name (cannot be enforced at L4; kept for lint and
 * the fail-closed rule). Anything starting like a number must be a valid number. */
static void port_item(struct pctx *x, yaml_node_t *item, const char *path, const char *v,
		      void *arg)
{
	struct port_arg *a = arg;
	if (isalpha((unsigned char)v[0])) {
		mc_strs_push(a->named, v);
		*a->has_named = true;
		return;
	}
	uint16_t port;
	if (!y_port(x, item, path, &port))
		return;
	*VEC_PUSH(*a->ports, *a->n, *a->cap) = port;
}

/* ---- source ---- */
static void parse_source(struct pctx *x, yaml_node_t *n, const char *path, struct rule_ctx *rc,
			 struct mc_source *s)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	y_check_keys(x, n, path, source_keys);
	s->line = yline(n);
	size_t present = 0;
	for (size_t i = 0; source_keys[i]; i++)
		present += y_get(x, n, source_keys[i]) != NULL;
	if (present == 0) {
		perr(x, n, path, "empty source: name principals, namespaces, serviceAccounts or "
		     "ipBlocks, or remove this `from` entry (Istio rejects an empty source)");
		return;
	}
	yaml_node_t *v;
	struct principal_arg pa = {&s->principals, &s->spiffe_written};
	if ((v = y_get(x, n, "principals"))) {
		s->has_principals = true;
		y_each_str(x, v, path_key(sub, path, "principals"), principal_item, &pa);
	}
	pa.out = &s->not_principals;
	if ((v = y_get(x, n, "notPrincipals"))) {
		s->has_not_principals = true;
		y_each_str(x, v, path_key(sub, path, "notPrincipals"), principal_item, &pa);
	}
	if ((v = y_get(x, n, "namespaces"))) {
		s->has_namespaces = true;
		y_strlist(x, v, path_key(sub, path, "namespaces"), &s->namespaces);
	}
	if ((v = y_get(x, n, "notNamespaces"))) {
		s->has_not_namespaces = true;
		y_strlist(x, v, path_key(sub, path, "notNamespaces"), &s->not_namespaces);
	}
	struct sa_arg sa = {&s->service_accounts, rc->p->meta.ns};
	if ((v = y_get(x, n, "serviceAccounts"))) {
		s->has_service_accounts = true;
		y_each_str(x, v, path_key(sub, path, "serviceAccounts"), sa_item, &sa);
	}
	sa.out = &s->not_service_accounts;
	if ((v = y_get(x, n, "notServiceAccounts"))) {
		s->has_not_service_accounts = true;
		y_each_str(x, v, path_key(sub, path, "notServiceAccounts"), sa_item, &sa);
	}
	if ((v = y_get(x, n, "ipBlocks"))) {
		s->has_ip_blocks = true;
		y_each_str(x, v, path_key(sub, path, "ipBlocks"), cidr_item, &s->ip_blocks);
	}
	if ((v = y_get(x, n, "notIpBlocks"))) {
		s->has_not_ip_blocks = true;
		y_each_str(x, v, path_key(sub, path, "notIpBlocks"), cidr_item, &s->not_ip_blocks);
	}
	for (size_t i = 0; l7_source_keys[i]; i++) {
		const char *key = l7_source_keys[i];
		if (!(v = y_get(x, n, key)))
			continue;
		path_key(sub, path, key);
		bool ip = strstr(key, "IpBlocks") != NULL;
		y_each_str(x, v, sub, ip ? cidr_item : check_item, NULL);
		add_l7(rc->r, sub, key, yline(v));
	}
	if ((s->has_service_accounts || s->has_not_service_accounts) &&
	    (s->has_principals || s->has_not_principals || s->has_namespaces ||
	     s->has_not_namespaces))
		perr(x, n, path, "serviceAccounts cannot be combined with principals or namespaces "
		     "in one source (Istio rejects it): split them into two `from` entries");
}

/* ---- operation ---- */
static void parse_operation(struct pctx *x, yaml_node_t *n, const char *path, struct rule_ctx *rc,
			    struct mc_operation *o)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	y_check_keys(x, n, path, op_keys);
	o->line = yline(n);
	size_t present = 0;
	for (size_t i = 0; op_keys[i]; i++)
		present += y_get(x, n, op_keys[i]) != NULL;
	if (present == 0) {
		perr(x, n, path, "empty operation: name ports or notPorts, or remove this `to` "
		     "entry (Istio rejects an empty operation)");
		return;
	}
	yaml_node_t *v;
	if ((v = y_get(x, n, "ports"))) {
		struct port_arg a = {&o->ports, &o->n_ports, &o->cap_ports, &o->named_ports,
				     &o->named_in_ports};
		o->has_ports = true;
		y_each_str(x, v, path_key(sub, path, "ports"), port_item, &a);
	}
	if ((v = y_get(x, n, "notPorts"))) {
		struct port_arg a = {&o->not_ports, &o->n_not_ports, &o->cap_not_ports,
				     &o->named_not_ports, &o->named_in_not_ports};
		o->has_not_ports = true;
		y_each_str(x, v, path_key(sub, path, "notPorts"), port_item, &a);
	}
	for (size_t i = 0; l7_op_keys[i]; i++) {
		const char *key = l7_op_keys[i];
		if (!(v = y_get(x, n, key)))
			continue;
		path_key(sub, path, key);
		y_each_str(x, v, sub, check_item, NULL);
		add_l7(rc->r, sub, key, yline(v));
	}
}

/* ---- when ---- */
static bool bracket_key(const char *key, const char *prefix)
{
	size_t pl = strlen(prefix), kl = strlen(key);
	return strncmp(key, prefix, pl) == 0 && key[pl] == '[' && kl > pl + 2 && key[kl - 1] == ']';
}

/* -1 invalid (reported), 0..4 L4 key, 5 L7 key. */
static int classify_when_key(struct pctx *x, yaml_node_t *kn, const char *path, const char *key)
{
	for (int i = 0; l4_when_keys[i]; i++)
		if (strcmp(key, l4_when_keys[i]) == 0)
			return i;
	if (str_in(key, all_when_keys) || bracket_key(key, "request.headers") ||
	    bracket_key(key, "request.experimental.inline.headers") ||
	    bracket_key(key, "request.auth.claims") ||
	    strncmp(key, "experimental.envoy.filters.", 27) == 0)
		return 5;
	if (strcmp(key, "destination.namespace") == 0)
		perr(x, kn, path, "key destination.namespace is replaced by the policy's "
		     "metadata.namespace: remove this condition");
	else if (strncmp(key, "destination.labels", 18) == 0)
		perr(x, kn, path, "key %s is replaced by the workload selector: use "
		     "spec.selector.matchLabels", key);
	else if (strcmp(key, "destination.name") == 0 || strcmp(key, "destination.user") == 0)
		perr(x, kn, path, "key %s is deprecated (v1alpha1 only): remove this condition", key);
	else {
		const char *near = nearest_word(key, all_when_keys);
		if (near)
			perr(x, kn, path, "unknown condition key \"%s\" (did you mean \"%s\"?)", SHOW(key),
			     near);
		else
			perr(x, kn, path, "unknown condition key \"%s\": L4 keys are source.ip, "
			     "source.namespace, source.principal, destination.ip, "
			     "destination.port", SHOW(key));
	}
	return -1;
}

struct when_arg {
	int key;
	struct mc_strs *out, *spiffe;
	struct mc_when_typed *typed; /* NULL: check only (L7 keys) */
};

static void when_item(struct pctx *x, yaml_node_t *item, const char *path, const char *v,
		      void *arg)
{
	struct when_arg *a = arg;
	struct principal_arg pa = {a->out, a->spiffe};
	uint16_t port;
	switch (a->key) {
	case MC_WHEN_SOURCE_IP:
	case MC_WHEN_DESTINATION_IP:
		cidr_item(x, item, path, v, a->typed ? &a->typed->cidrs : NULL);
		break;
	case MC_WHEN_DESTINATION_PORT:
		if (!y_port(x, item, path, &port))
			return;
		if (a->typed)
			*VEC_PUSH(a->typed->ports, a->typed->n_ports, a->typed->cap_ports) = port;
		break;
	case MC_WHEN_SOURCE_PRINCIPAL:
		principal_item(x, item, path, v, &pa);
		return;
	default:
		break;
	}
	if (a->out)
		mc_strs_push(a->out, v);
}

static void parse_condition(struct pctx *x, yaml_node_t *n, const char *path, struct rule_ctx *rc)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	y_check_keys(x, n, path, cond_keys);
	const char *key = y_str(x, n, "key", path);
	if (!key) {
		perr(x, n, path, "condition without `key`: name the attribute, e.g. key: source.ip");
		return;
	}
	int k = classify_when_key(x, y_get(x, n, "key"), path_key(sub, path, "key"), key);
	yaml_node_t *values = y_get(x, n, "values"), *not_values = y_get(x, n, "notValues");
	if (!values && !not_values) {
		perr(x, n, path, "condition on %s needs `values` or `notValues`", key);
		return;
	}
	if (k < 0)
		return;
	if (k == 5) {
		struct when_arg a = {k, NULL, NULL, NULL};
		if (values)
			y_each_str(x, values, path_key(sub, path, "values"), when_item, &a);
		if (not_values)
			y_each_str(x, not_values, path_key(sub, path, "notValues"), when_item, &a);
		char *name = xasprintf("when %s", key);
		add_l7(rc->r, path, name, yline(n));
		free(name);
		return;
	}
	struct mc_rule *r = rc->r;
	struct mc_condition *c = VEC_PUSH(r->when, r->n_when, r->cap_when);
	c->key = (enum mc_when_key)k;
	c->line = yline(n);
	struct when_arg a = {k, &c->values, &c->spiffe_written, &c->typed};
	if (values) {
		c->has_values = true;
		y_each_str(x, values, path_key(sub, path, "values"), when_item, &a);
	}
	a.out = &c->not_values;
	a.typed = &c->not_typed;
	if (not_values) {
		c->has_not_values = true;
		y_each_str(x, not_values, path_key(sub, path, "notValues"), when_item, &a);
	}
}

/* ---- rule ---- */
static yaml_node_t *rule_list(struct pctx *x, yaml_node_t *rule, const char *key,
			      const char *path, char *sub)
{
	yaml_node_t *v = y_get(x, rule, key);
	if (!v)
		return NULL;
	path_key(sub, path, key);
	if (!y_expect(x, v, YAML_SEQUENCE_NODE, sub))
		return NULL;
	if (v->data.sequence.items.start == v->data.sequence.items.top) {
		perr(x, v, sub, "`%s` must not be empty: remove it to match any %s", key,
		     strcmp(key, "from") == 0 ? "source" : "operation");
		return NULL;
	}
	return v;
}

static void parse_rule(struct pctx *x, yaml_node_t *n, const char *path, struct mc_authz *p,
		       struct mc_rule *r)
{
	char lpath[CFG_PATH_LEN], item[CFG_PATH_LEN], sub[CFG_PATH_LEN];
	struct rule_ctx rc = {p, r};
	r->line = yline(n);
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	y_check_keys(x, n, path, rule_keys);
	yaml_node_t *list;
	if ((list = rule_list(x, n, "from", path, lpath))) {
		r->has_from = true;
		for (yaml_node_item_t *it = list->data.sequence.items.start;
		     it < list->data.sequence.items.top; it++) {
			yaml_node_t *e = ynode(x, *it);
			path_idx(item, lpath, (size_t)(it - list->data.sequence.items.start));
			struct mc_source *s = VEC_PUSH(r->from, r->n_from, r->cap_from);
			s->line = yline(e);
			if (!y_expect(x, e, YAML_MAPPING_NODE, item))
				continue;
			y_check_keys(x, e, item, from_keys);
			yaml_node_t *src = y_get(x, e, "source");
			if (!src) {
				perr(x, e, item, "`from` entry without `source`: write "
				     "`- source: {principals: [...]}`");
				continue;
			}
			parse_source(x, src, path_key(sub, item, "source"), &rc, s);
		}
	}
	if ((list = rule_list(x, n, "to", path, lpath))) {
		r->has_to = true;
		for (yaml_node_item_t *it = list->data.sequence.items.start;
		     it < list->data.sequence.items.top; it++) {
			yaml_node_t *e = ynode(x, *it);
			path_idx(item, lpath, (size_t)(it - list->data.sequence.items.start));
			struct mc_operation *o = VEC_PUSH(r->to, r->n_to, r->cap_to);
			o->line = yline(e);
			if (!y_expect(x, e, YAML_MAPPING_NODE, item))
				continue;
			y_check_keys(x, e, item, to_keys);
			yaml_node_t *op = y_get(x, e, "operation");
			if (!op) {
				perr(x, e, item, "`to` entry without `operation`: write "
				     "`- operation: {ports: [\"8080\"]}`");
				continue;
			}
			parse_operation(x, op, path_key(sub, item, "operation"), &rc, o);
		}
	}
	yaml_node_t *when = y_get(x, n, "when");
	if (when && y_expect(x, when, YAML_SEQUENCE_NODE, path_key(lpath, path, "when"))) {
		r->has_when = true;
		for (yaml_node_item_t *it = when->data.sequence.items.start;
		     it < when->data.sequence.items.top; it++) {
			path_idx(item, lpath, (size_t)(it - when->data.sequence.items.start));
			parse_condition(x, ynode(x, *it), item, &rc);
		}
	}
	r->had_l7 = r->n_l7 > 0;
	r->dropped = r->had_l7 && p->action == MC_ACTION_ALLOW;
}

/* ---- selector, targetRefs, provider ---- */
void y_selector(struct pctx *x, yaml_node_t *n, const char *path, struct mc_labels *out)
{
	static const char *const selector_keys[] = {"matchLabels", NULL};
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	y_check_keys(x, n, path, selector_keys);
	yaml_node_t *ml = y_get(x, n, "matchLabels");
	if (!ml)
		return;
	path_key(sub, path, "matchLabels");
	if (!y_labels(x, ml, sub, out))
		return;
	for (size_t i = 0; i < out->n; i++)
		if (strchr(out->items[i].key, '*') || strchr(out->items[i].value, '*'))
			perr(x, ml, sub, "wildcard in selector label %s=%s is not supported: "
			     "selectors match exact values", out->items[i].key, out->items[i].value);
}

static void parse_target_ref(struct pctx *x, yaml_node_t *n, const char *path, struct mc_authz *p)
{
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return;
	y_check_keys(x, n, path, ref_keys);
	const char *group = y_str(x, n, "group", path);
	const char *kind = y_str(x, n, "kind", path);
	const char *name = y_str(x, n, "name", path);
	const char *ns = y_str(x, n, "namespace", path);
	if (!kind || !name) {
		perr(x, n, path, "targetRef needs `kind` and `name` (e.g. kind: ServiceEntry, "
		     "name: api-openai)");
		return;
	}
	struct mc_target_ref *t = VEC_PUSH(p->target_refs, p->n_target_refs, p->cap_target_refs);
	t->group = xstrdup(group ? group : "");
	t->kind = xstrdup(kind);
	t->name = xstrdup(name);
	t->ns = xstrdup(ns ? ns : p->meta.ns);
	t->line = yline(n);
}

static void parse_target_refs(struct pctx *x, yaml_node_t *spec, const char *path,
			      struct mc_authz *p)
{
	char sub[CFG_PATH_LEN], item[CFG_PATH_LEN];
	yaml_node_t *ref = y_get(x, spec, "targetRef"), *refs = y_get(x, spec, "targetRefs");
	if (ref && refs)
		perr(x, refs, path_key(sub, path, "targetRefs"),
		     "set either targetRef or targetRefs, not both");
	if (ref)
		parse_target_ref(x, ref, path_key(sub, path, "targetRef"), p);
	if (refs && y_expect(x, refs, YAML_SEQUENCE_NODE, path_key(sub, path, "targetRefs"))) {
		if (refs->data.sequence.items.start == refs->data.sequence.items.top)
			perr(x, refs, sub, "empty list: name at least one target or remove the field");
		for (yaml_node_item_t *it = refs->data.sequence.items.start;
		     it < refs->data.sequence.items.top; it++)
			parse_target_ref(x, ynode(x, *it),
					 path_idx(item, sub, (size_t)(it - refs->data.sequence.items.start)),
					 p);
	}
}

/* strconv.ParseBool, as Istio reads the dry-run annotation. */
static int parse_bool(const char *v)
{
	static const char *const yes[] = {"1", "t", "T", "true", "TRUE", "True", NULL};
	static const char *const no[] = {"0", "f", "F", "false", "FALSE", "False", NULL};
	if (str_in(v, yes))
		return 1;
	if (str_in(v, no))
		return 0;
	return -1;
}

static void parse_dry_run(struct pctx *x, yaml_node_t *root, struct mc_authz *p)
{
	const char *v = mc_label_get(&p->meta.annotations, "istio.io/dry-run");
	if (!v)
		return;
	int b = parse_bool(v);
	if (b < 0)
		perr(x, root, "metadata.annotations.istio.io/dry-run",
		     "\"%s\" is not a boolean: write \"true\" or \"false\"", SHOW(v));
	p->dry_run = b == 1;
}

void parse_authz(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta)
{
	char sub[CFG_PATH_LEN], item[CFG_PATH_LEN];
	struct mc_authz p = {0};
	p.meta = *meta;
	memset(meta, 0, sizeof(*meta));
	p.id_name = xasprintf("%s/%s", p.meta.ns, p.meta.name);
	parse_dry_run(x, x->root, &p);
	yaml_node_t *rules = NULL, *provider = NULL;
	if (spec && y_expect(x, spec, YAML_MAPPING_NODE, "spec")) {
		y_check_keys(x, spec, "spec", spec_keys);
		yaml_node_t *v;
		if ((v = y_get(x, spec, "action"))) {
			int a = y_enum(x, v, "spec.action", actions);
			p.action = a < 0 ? MC_ACTION_ALLOW : (enum mc_action)a;
		}
		if ((v = y_get(x, spec, "selector"))) {
			p.has_selector = true;
			y_selector(x, v, "spec.selector", &p.selector);
		}
		parse_target_refs(x, spec, "spec", &p);
		if (p.has_selector && p.n_target_refs)
			perr(x, y_get(x, spec, "selector"), "spec.selector",
			     "set either selector or targetRef(s), not both");
		if ((provider = y_get(x, spec, "provider")) &&
		    y_expect(x, provider, YAML_MAPPING_NODE, "spec.provider")) {
			y_check_keys(x, provider, "spec.provider", provider_keys);
			y_str(x, provider, "name", "spec.provider");
		}
		if ((rules = y_get(x, spec, "rules")) &&
		    y_expect(x, rules, YAML_SEQUENCE_NODE, "spec.rules")) {
			path_key(sub, "spec", "rules");
			for (yaml_node_item_t *it = rules->data.sequence.items.start;
			     it < rules->data.sequence.items.top; it++) {
				size_t i = (size_t)(it - rules->data.sequence.items.start);
				struct mc_rule *r = VEC_PUSH(p.rules, p.n_rules, p.cap_rules);
				x->rule = (int)i + 1;
				parse_rule(x, ynode(x, *it), path_idx(item, sub, i), &p, r);
				x->rule = 0;
			}
		}
	}
	p.unsupported = p.action == MC_ACTION_AUDIT || p.action == MC_ACTION_CUSTOM;
	if (p.action == MC_ACTION_DENY && p.n_rules == 0)
		perr(x, spec ? spec : x->root, "spec.rules",
		     "DENY policy without rules never matches (Istio rejects it): add `rules: [{}]` "
		     "to deny everything it selects");
	if (p.action == MC_ACTION_CUSTOM) {
		if (p.n_rules == 0)
			perr(x, spec ? spec : x->root, "spec.rules",
			     "CUSTOM policy without rules never triggers (Istio rejects it)");
		else if (!provider || !y_str(x, provider, "name", "spec.provider"))
			perr(x, spec, "spec.provider.name", "CUSTOM policy needs provider.name");
	} else if (provider) {
		perr(x, provider, "spec.provider", "provider is only valid with action CUSTOM");
	}
	struct mesh_config *c = x->c;
	*VEC_PUSH(c->policies, c->n_policies, c->cap_policies) = p;
}
