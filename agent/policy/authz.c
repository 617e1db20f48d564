/* The L4 authorization engine: which policies apply to a destination, how a rule matches a
 * peer, and the decision (PeerAuthentication STRICT, then DENY, then ALLOW). Pure: no I/O,
 * and no allocation on the evaluation path (the agent runs it on every uncached connection).
 *
 * Facts the engine cannot know fail closed: when the source address is unknown, a condition
 * on it makes a DENY rule match and an ALLOW rule not match. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/authz_internal.h"

/* ---- strings and principals ---- */
bool authz_string_match(const char *pattern, const char *value)
{
	if (!pattern || !value)
		return false;
	size_t pl = strlen(pattern), vl = strlen(value);
	if (strcmp(pattern, "*") == 0)
		return vl > 0;
	if (pattern[0] == '*') /* suffix */
		return vl >= pl - 1 && strcmp(value + vl - (pl - 1), pattern + 1) == 0;
	if (pattern[pl - 1] == '*') /* prefix */
		return strncmp(value, pattern, pl - 1) == 0;
	return strcmp(pattern, value) == 0;
}

const char *strip_spiffe(const char *s)
{
	return s && strncmp(s, "spiffe://", 9) == 0 ? s + 9 : s;
}

static bool copy_part(char *dst, size_t len, const char *src, size_t n)
{
	if (n == 0 || n >= len)
		return false;
	memcpy(dst, src, n);
	dst[n] = 0;
	return true;
}

bool principal_split(const char *principal, struct principal_parts *out)
{
	out->ok = false;
	if (!principal)
		return false;
	const char *p = strip_spiffe(principal);
	const char *ns = strstr(p, "/ns/");
	if (!ns)
		return false;
	const char *sa = strstr(ns + 4, "/sa/");
	if (!sa || strchr(sa + 4, '/'))
		return false;
	if (!copy_part(out->td, sizeof(out->td), p, (size_t)(ns - p)) ||
	    !copy_part(out->ns, sizeof(out->ns), ns + 4, (size_t)(sa - ns - 4)) ||
	    !copy_part(out->sa, sizeof(out->sa), sa + 4, strlen(sa + 4)) || strchr(out->ns, '/'))
		return false;
	snprintf(out->ns_sa, sizeof(out->ns_sa), "%s/%s", out->ns, out->sa);
	out->ok = true;
	return true;
}

/* ---- applicability ---- */
bool target_ref_is_service_entry(const struct mc_target_ref *r)
{
	return strcmp(r->kind, "ServiceEntry") == 0 &&
	       (!r->group[0] || strcmp(r->group, "networking.istio.io") == 0);
}

bool target_ref_names(const struct mc_target_ref *r, const struct mc_service_entry *se)
{
	return target_ref_is_service_entry(r) && strcmp(r->name, se->meta.name) == 0 &&
	       strcmp(r->ns, se->meta.ns) == 0;
}

bool authz_policy_applies(const struct mesh_config *c, const struct mc_authz *p,
			  const struct authz_target *t)
{
	const char *ns = p->meta.ns;
	bool root = strcmp(ns, c->mesh.root_namespace) == 0;
	if (t->kind == AUTHZ_TARGET_WORKLOAD) {
		const struct mc_workload *w = t->workload;
		/* targetRef(s) are for waypoints in Istio; moat uses them only for egress. */
		if (!w || p->n_target_refs)
			return false;
		/* In the root namespace a selector matches workloads of every namespace (Istio's
		 * AuthorizationPolicy reference: "the selector will additionally match with
		 * workloads in all namespaces"). */
		if (p->has_selector)
			return (root || strcmp(ns, w->meta.ns) == 0) &&
			       mc_workload_selected(w, &p->selector);
		return root || strcmp(ns, w->meta.ns) == 0;
	}
	const struct mc_service_entry *se = t->service;
	if (!se)
		return false;
	if (p->n_target_refs) {
		for (size_t i = 0; i < p->n_target_refs; i++)
			if (target_ref_names(&p->target_refs[i], se))
				return true;
		return false;
	}
	if (p->has_selector)
		return false;
	/* A namespace-wide or mesh-wide policy (allow-nothing) covers egress too. */
	return root || strcmp(ns, se->meta.ns) == 0;
}

/* ---- matching ---- */
struct mctx {
	const struct authz_target *t;
	const struct authz_peer *p;
	const char *principal;             /* NULL: plaintext */
	const struct principal_parts *parts; /* parts->ok false: no namespace known */
	bool deny;                         /* the rule's action: unknown facts match a DENY rule */
};

static bool any_pattern(const struct mc_strs *pats, const char *value)
{
	if (!value)
		return false;
	for (size_t i = 0; i < pats->n; i++)
		if (authz_string_match(pats->items[i], value))
			return true;
	return false;
}

static bool any_exact(const struct mc_strs *list, const char *value)
{
	if (!value)
		return false;
	for (size_t i = 0; i < list->n; i++)
		if (strcmp(list->items[i], value) == 0)
			return true;
	return false;
}

static bool any_cidr(const struct mc_cidrs *l, const struct moat_addr *a)
{
	for (size_t i = 0; i < l->n; i++)
		if (cidr_contains(&l->items[i], a))
			return true;
	return false;
}

static bool any_port(const uint16_t *ports, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (ports[i] == port)
			return true;
	return false;
}

/* Positive list: present -> some entry matches. Negative: present -> no entry matches. */
#define POS(has, hit) (!(has) || (hit))
#define NEG(has, hit) (!(has) || !(hit))

static bool match_source(const struct mctx *m, const struct mc_source *s)
{
	const char *ns = m->parts->ok ? m->parts->ns : NULL;
	const char *ns_sa = m->parts->ok ? m->parts->ns_sa : NULL;
	if (!POS(s->has_principals, any_pattern(&s->principals, m->principal)) ||
	    !NEG(s->has_not_principals, any_pattern(&s->not_principals, m->principal)) ||
	    !POS(s->has_namespaces, any_pattern(&s->namespaces, ns)) ||
	    !NEG(s->has_not_namespaces, any_pattern(&s->not_namespaces, ns)) ||
	    !POS(s->has_service_accounts, any_exact(&s->service_accounts, ns_sa)) ||
	    !NEG(s->has_not_service_accounts, any_exact(&s->not_service_accounts, ns_sa)))
		return false;
	if (s->has_ip_blocks || s->has_not_ip_blocks) {
		if (!m->p->has_ip)
			return m->deny;
		if (!POS(s->has_ip_blocks, any_cidr(&s->ip_blocks, &m->p->ip)) ||
		    !NEG(s->has_not_ip_blocks, any_cidr(&s->not_ip_blocks, &m->p->ip)))
			return false;
	}
	return true;
}

/* Named ports fail closed: in an ALLOW rule a named entry matches nothing; in a DENY rule
 * a named entry in `ports` matches every port and one in `notPorts` excludes none. */
static bool match_operation(const struct mctx *m, const struct mc_operation *o)
{
	uint16_t port = m->t->port;
	if (o->has_ports) {
		bool hit = any_port(o->ports, o->n_ports, port) || (m->deny && o->named_in_ports);
		if (!hit)
			return false;
	}
	if (o->has_not_ports) {
		if (!m->deny && o->named_in_not_ports)
			return false;
		if (any_port(o->not_ports, o->n_not_ports, port))
			return false;
	}
	return true;
}

static bool condition_hit(const struct mctx *m, const struct mc_condition *c,
			  const struct mc_strs *values, const struct mc_when_typed *typed)
{
	switch (c->key) {
	case MC_WHEN_SOURCE_IP: return any_cidr(&typed->cidrs, &m->p->ip);
	case MC_WHEN_DESTINATION_IP: return any_cidr(&typed->cidrs, &m->t->ip);
	case MC_WHEN_SOURCE_NAMESPACE:
		return any_pattern(values, m->parts->ok ? m->parts->ns : NULL);
	case MC_WHEN_SOURCE_PRINCIPAL: return any_pattern(values, m->principal);
	case MC_WHEN_DESTINATION_PORT: return any_port(typed->ports, typed->n_ports, m->t->port);
	}
	return false;
}

static bool match_condition(const struct mctx *m, const struct mc_condition *c)
{
	if (c->key == MC_WHEN_SOURCE_IP && !m->p->has_ip)
		return m->deny;
	return POS(c->has_values, condition_hit(m, c, &c->values, &c->typed)) &&
	       NEG(c->has_not_values, condition_hit(m, c, &c->not_values, &c->not_typed));
}

static bool match_rule(const struct mctx *m, const struct mc_rule *r)
{
	if (r->dropped)
		return false;
	if (r->has_from) {
		bool any = false;
		for (size_t i = 0; i < r->n_from && !any; i++)
			any = match_source(m, &r->from[i]);
		if (!any)
			return false;
	}
	if (r->has_to) {
		bool any = false;
		for (size_t i = 0; i < r->n_to && !any; i++)
			any = match_operation(m, &r->to[i]);
		if (!any)
			return false;
	}
	for (size_t i = 0; i < r->n_when; i++)
		if (!match_condition(m, &r->when[i]))
			return false;
	return true;
}

/* 1-based index of the first matching rule, 0 when none. */
static int match_policy(struct mctx *m, const struct mc_authz *p)
{
	m->deny = p->action == MC_ACTION_DENY;
	for (size_t i = 0; i < p->n_rules; i++)
		if (match_rule(m, &p->rules[i]))
			return (int)i + 1;
	return 0;
}

/* ---- words ---- */
/* snprintf for messages that may be cut at the buffer's end (intended: they are bounded). */
static int bounded(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bounded(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	return n;
}

void describe_peer(const struct authz_peer *p, char *buf, size_t len)
{
	char ip[ADDR_STRLEN];
	const char *who = p->principal ? strip_spiffe(p->principal) : NULL;
	if (p->has_ip)
		addr_str(&p->ip, ip, sizeof(ip));
	if (who && p->has_ip)
		bounded(buf, len, "principal %s from %s", who, ip);
	else if (who)
		bounded(buf, len, "principal %s", who);
	else if (p->has_ip)
		bounded(buf, len, "plaintext peer from %s", ip);
	else
		bounded(buf, len, "plaintext peer");
}

void describe_target(const struct authz_target *t, char *buf, size_t len)
{
	if (t->kind == AUTHZ_TARGET_WORKLOAD && t->workload)
		bounded(buf, len, "%s/%s", t->workload->meta.ns, t->workload->meta.name);
	else if (t->kind == AUTHZ_TARGET_SERVICE && t->service)
		bounded(buf, len, "ServiceEntry %s/%s", t->service->meta.ns,
			 t->service->meta.name);
	else
		bounded(buf, len, "an unknown destination");
}

/* The policies an evaluation looks at: every policy of c (idx NULL, applicability checked
 * here), or a caller's list of indices already known to apply, in configuration order. */
struct scope {
	const uint32_t *idx;
	size_t n;
};

static size_t scope_len(const struct mesh_config *c, const struct scope *s)
{
	return s->idx ? s->n : c->n_policies;
}

/* The i-th policy of the scope when it applies to t, else NULL. */
static const struct mc_authz *scope_get(const struct mesh_config *c, const struct scope *s,
					size_t i, const struct authz_target *t)
{
	if (s->idx)
		return &c->policies[s->idx[i]];
	const struct mc_authz *p = &c->policies[i];
	return authz_policy_applies(c, p, t) ? p : NULL;
}

/* Append ", name" entries of the applicable enforced ALLOW policies, bounded by the buffer. */
static void list_allow_policies(const struct mesh_config *c, const struct scope *sc,
				const struct authz_target *t, char *buf, size_t len)
{
	size_t used = strlen(buf);
	bool first = true;
	for (size_t i = 0; i < scope_len(c, sc); i++) {
		const struct mc_authz *p = scope_get(c, sc, i, t);
		if (!p || p->action != MC_ACTION_ALLOW || p->dry_run)
			continue;
		int n = bounded(buf + used, len - used, "%s%s", first ? "" : ", ", p->id_name);
		if (n < 0 || (size_t)n >= len - used) {
			if (len > used + 5)
				snprintf(buf + len - 5, 5, "...");
			return;
		}
		used += (size_t)n;
		first = false;
	}
}

/* ---- the decision ---- */
static void record_dry_run(struct authz_decision *d, struct mctx *m, const struct mc_authz *p)
{
	if (d->n_dry_run >= AUTHZ_MAX_DRY_RUN)
		return;
	struct authz_dry_run *dr = &d->dry_run[d->n_dry_run++];
	dr->policy = p;
	dr->rule = match_policy(m, p);
	dr->matched = dr->rule > 0;
	if (p->action == MC_ACTION_DENY)
		dr->would = dr->matched ? MOAT_ACTION_DENY : MOAT_ACTION_ALLOW;
	else
		dr->would = dr->matched ? MOAT_ACTION_ALLOW : MOAT_ACTION_DENY;
}

static bool strict_plaintext(const struct mesh_config *c, const struct authz_target *t,
			     const struct authz_peer *p, struct authz_decision *d)
{
	if (t->kind != AUTHZ_TARGET_WORKLOAD || !t->workload || p->principal)
		return false;
	const struct mc_peer_auth *pa = NULL;
	if (authz_mtls_mode(c, t->workload, t->port, &pa) != MC_MTLS_STRICT)
		return false;
	char ip[ADDR_STRLEN];
	d->action = MOAT_ACTION_DENY;
	d->reason = MOAT_REASON_STRICT_PLAIN;
	d->peer_auth = pa;
	d->policy = NULL;
	d->rule = 0;
	if (p->has_ip)
		bounded(d->why, sizeof(d->why), "PeerAuthentication %s is STRICT: plaintext refused "
			 "from %s", pa ? pa->id_name : "?", addr_str(&p->ip, ip, sizeof(ip)));
	else
		bounded(d->why, sizeof(d->why), "PeerAuthentication %s is STRICT: plaintext refused",
			 pa ? pa->id_name : "?");
	return true;
}

static void evaluate(const struct mesh_config *c, const struct scope *sc,
		     const struct authz_target *t, const struct authz_peer *p,
		     struct authz_decision *d)
{
	struct principal_parts parts;
	const char *principal = strip_spiffe(p->principal);
	principal_split(principal, &parts);
	struct mctx m = {.t = t, .p = p, .principal = principal, .parts = &parts};
	const struct mc_authz *deny = NULL, *allow = NULL;
	int deny_rule = 0, allow_rule = 0;
	bool allow_applies = false;

	d->n_dry_run = 0;
	for (size_t i = 0; i < scope_len(c, sc); i++) {
		const struct mc_authz *pol = scope_get(c, sc, i, t);
		if (!pol || pol->unsupported)
			continue;
		if (pol->dry_run) {
			record_dry_run(d, &m, pol);
		} else if (pol->action == MC_ACTION_DENY) {
			if (!deny && (deny_rule = match_policy(&m, pol)))
				deny = pol;
		} else {
			allow_applies = true;
			if (!deny && !allow && (allow_rule = match_policy(&m, pol)))
				allow = pol;
		}
	}
	if (strict_plaintext(c, t, p, d))
		return;
	char peer[384], target[300];
	describe_peer(p, peer, sizeof(peer));
	d->peer_auth = NULL;
	if (deny) {
		d->action = MOAT_ACTION_DENY;
		d->reason = MOAT_REASON_POLICY_DENY;
		d->policy = deny;
		d->rule = deny_rule;
		bounded(d->why, sizeof(d->why), "DENY policy %s rule %d matched for %s",
			 deny->id_name, deny_rule, peer);
	} else if (!allow_applies) {
		describe_target(t, target, sizeof(target));
		d->action = MOAT_ACTION_ALLOW;
		d->reason = MOAT_REASON_ALLOWED;
		d->policy = NULL;
		d->rule = 0;
		bounded(d->why, sizeof(d->why), "no ALLOW policy applies to %s: allowed for %s",
			 target, peer);
	} else if (allow) {
		d->action = MOAT_ACTION_ALLOW;
		d->reason = MOAT_REASON_ALLOWED;
		d->policy = allow;
		d->rule = allow_rule;
		bounded(d->why, sizeof(d->why), "ALLOW policy %s rule %d matched for %s",
			 allow->id_name, allow_rule, peer);
	} else {
		describe_target(t, target, sizeof(target));
		d->action = MOAT_ACTION_DENY;
		d->reason = MOAT_REASON_NO_ALLOW;
		d->policy = NULL;
		d->rule = 0;
		int n = bounded(d->why, sizeof(d->why),
				 "no ALLOW policy matched for %s (allow policies for %s: ", peer,
				 target);
		if (n > 0 && (size_t)n < sizeof(d->why) - 2) {
			list_allow_policies(c, sc, t, d->why, sizeof(d->why) - 1);
			size_t l = strlen(d->why);
			d->why[l] = ')';
			d->why[l + 1] = 0;
		}
	}
}

void authz_evaluate(const struct mesh_config *c, const struct authz_target *t,
		    const struct authz_peer *p, struct authz_decision *d)
{
	struct scope all = {0};
	evaluate(c, &all, t, p, d);
}

void authz_evaluate_among(const struct mesh_config *c, const uint32_t *idx, size_t n,
			  const struct authz_target *t, const struct authz_peer *p,
			  struct authz_decision *d)
{
	struct scope sc = {.idx = idx ? idx : (const uint32_t *)"", .n = n};
	evaluate(c, &sc, t, p, d);
}

/* ---- what a cached verdict may depend on ---- */
static void push_port(uint16_t **ports, size_t *n, size_t *cap, uint16_t port)
{
	if (port && !any_port(*ports, *n, port))
		*VEC_PUSH(*ports, *n, *cap) = port;
}

static int cmp_u16(const void *a, const void *b)
{
	return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

static void rule_ports(const struct mc_rule *r, uint16_t **ports, size_t *n, size_t *cap)
{
	for (size_t j = 0; j < r->n_to; j++) {
		const struct mc_operation *o = &r->to[j];
		for (size_t k = 0; k < o->n_ports; k++)
			push_port(ports, n, cap, o->ports[k]);
		for (size_t k = 0; k < o->n_not_ports; k++)
			push_port(ports, n, cap, o->not_ports[k]);
	}
	for (size_t j = 0; j < r->n_when; j++) {
		const struct mc_condition *cd = &r->when[j];
		if (cd->key != MC_WHEN_DESTINATION_PORT)
			continue;
		for (size_t k = 0; k < cd->typed.n_ports; k++)
			push_port(ports, n, cap, cd->typed.ports[k]);
		for (size_t k = 0; k < cd->not_typed.n_ports; k++)
			push_port(ports, n, cap, cd->not_typed.ports[k]);
	}
}

static size_t ports_of_interest(const struct mesh_config *c, const struct scope *sc,
				const struct authz_target *t, uint16_t **ports)
{
	size_t n = 0, cap = 0;
	*ports = NULL;
	for (size_t i = 0; i < scope_len(c, sc); i++) {
		const struct mc_authz *p = scope_get(c, sc, i, t);
		if (!p || p->unsupported)
			continue;
		for (size_t r = 0; r < p->n_rules; r++)
			if (!p->rules[r].dropped)
				rule_ports(&p->rules[r], ports, &n, &cap);
	}
	/* Port-level mTLS makes the plaintext verdict depend on the port too. */
	if (t->kind == AUTHZ_TARGET_WORKLOAD && t->workload) {
		const struct mc_workload *w = t->workload;
		for (size_t i = 0; i < c->n_peer_auths; i++) {
			const struct mc_peer_auth *pa = &c->peer_auths[i];
			if (!pa->has_selector || strcmp(pa->meta.ns, w->meta.ns) != 0 ||
			    !mc_workload_selected(w, &pa->selector))
				continue;
			for (size_t k = 0; k < pa->n_port_level; k++)
				push_port(ports, &n, &cap, pa->port_level[k].port);
		}
	}
	if (n > 1)
		qsort(*ports, n, sizeof(**ports), cmp_u16);
	return n;
}

size_t authz_ports_of_interest(const struct mesh_config *c, const struct authz_target *t,
			       uint16_t **ports)
{
	struct scope all = {0};
	return ports_of_interest(c, &all, t, ports);
}

size_t authz_ports_among(const struct mesh_config *c, const uint32_t *idx, size_t n,
			 const struct authz_target *t, uint16_t **ports)
{
	struct scope sc = {.idx = idx ? idx : (const uint32_t *)"", .n = n};
	return ports_of_interest(c, &sc, t, ports);
}

static bool rule_uses_source_ip(const struct mc_rule *r)
{
	if (r->dropped)
		return false;
	for (size_t j = 0; j < r->n_from; j++)
		if (r->from[j].has_ip_blocks || r->from[j].has_not_ip_blocks)
			return true;
	for (size_t j = 0; j < r->n_when; j++)
		if (r->when[j].key == MC_WHEN_SOURCE_IP)
			return true;
	return false;
}

bool authz_depends_on_source_ip(const struct mesh_config *c, const struct authz_target *t)
{
	for (size_t i = 0; i < c->n_policies; i++) {
		const struct mc_authz *p = &c->policies[i];
		if (p->unsupported || p->dry_run || !authz_policy_applies(c, p, t))
			continue;
		for (size_t r = 0; r < p->n_rules; r++)
			if (rule_uses_source_ip(&p->rules[r]))
				return true;
	}
	return false;
}
