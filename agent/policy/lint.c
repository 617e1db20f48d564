/* Lint: everything in a valid configuration that does not mean what it seems to mean at
 * L4, with file:line, the policy, the field and what the policy now does. Warnings and
 * notes never fail a load. */
#include <stdio.h>
#include <string.h>

#include "policy/authz_internal.h"

#define POLICY_KIND "AuthorizationPolicy"

void describe_selection(const struct mesh_config *c, const struct mc_authz *p, char *buf,
			size_t len)
{
	size_t used = 0;
	buf[0] = 0;
	if (p->n_target_refs) {
		for (size_t i = 0; i < p->n_target_refs && used < len; i++) {
			const struct mc_target_ref *r = &p->target_refs[i];
			int n = snprintf(buf + used, len - used, "%s%s %s/%s", i ? ", " : "", r->kind,
					 r->ns, r->name);
			if (n < 0)
				break;
			used += (size_t)n;
		}
		return;
	}
	if (p->has_selector && p->selector.n) {
		for (size_t i = 0; i < p->selector.n && used < len; i++) {
			int n = snprintf(buf + used, len - used, "%s%s=%s", i ? "," : "",
					 p->selector.items[i].key, p->selector.items[i].value);
			if (n < 0)
				break;
			used += (size_t)n;
		}
		return;
	}
	if (strcmp(p->meta.ns, c->mesh.root_namespace) == 0 && !p->has_selector)
		snprintf(buf, len, "every workload in the mesh");
	else
		snprintf(buf, len, "every workload in namespace %s", p->meta.ns);
}

static void add(struct mc_findings *f, enum mc_severity sev, const struct mc_authz *p, int line,
		int rule, const char *field, const char *msg)
{
	mc_finding_add(f, sev, p->meta.file, line ? line : p->meta.line, POLICY_KIND, p->id_name,
		       rule, field, "%s", msg);
}

/* ---- rules ---- */
static void l7_names(const struct mc_rule *r, struct sbuf *b)
{
	for (size_t i = 0; i < r->n_l7; i++)
		sbuf_printf(b, "%s%s", i ? ", " : "", r->l7[i].name);
}

static bool source_empty(const struct mc_source *s)
{
	return !s->has_principals && !s->has_not_principals && !s->has_namespaces &&
	       !s->has_not_namespaces && !s->has_service_accounts &&
	       !s->has_not_service_accounts && !s->has_ip_blocks && !s->has_not_ip_blocks;
}

/* After its L7 fields are removed, does the rule match every connection? */
static bool rule_matches_all(const struct mc_rule *r)
{
	bool from_all = !r->has_from, to_all = !r->has_to;
	for (size_t i = 0; i < r->n_from; i++)
		from_all = from_all || source_empty(&r->from[i]);
	for (size_t i = 0; i < r->n_to; i++)
		to_all = to_all || (!r->to[i].has_ports && !r->to[i].has_not_ports);
	return from_all && to_all && r->n_when == 0;
}

static void lint_l7(const struct mesh_config *c, const struct mc_authz *p, int ri,
		    struct mc_findings *f)
{
	const struct mc_rule *r = &p->rules[ri];
	struct sbuf names, msg;
	char sel[256];
	if (!r->had_l7)
		return;
	sbuf_init(&names);
	sbuf_init(&msg);
	l7_names(r, &names);
	describe_selection(c, p, sel, sizeof(sel));
	if (p->action == MC_ACTION_ALLOW)
		sbuf_printf(&msg, "allow rule dropped: %s cannot be enforced at L4 (it needs a "
			    "waypoint), so this rule matches nothing", names.s);
	else if (rule_matches_all(r))
		sbuf_printf(&msg, "DENY rule enforced without %s (L7, not visible at L4; fail "
			    "closed, where ztunnel would ignore the rule): it now denies all "
			    "traffic to %s", names.s, sel);
	else
		sbuf_printf(&msg, "DENY rule enforced without %s (L7, not visible at L4; fail "
			    "closed, where ztunnel would ignore the rule): it now denies every "
			    "connection to %s that its L4 fields match", names.s, sel);
	if (p->action == MC_ACTION_ALLOW || p->action == MC_ACTION_DENY)
		add(f, MC_WARNING, p, r->l7[0].line, ri + 1, r->l7[0].field, msg.s);
	sbuf_free(&names);
	sbuf_free(&msg);
}

static void lint_named_ports(const struct mc_authz *p, int ri, struct mc_findings *f)
{
	const struct mc_rule *r = &p->rules[ri];
	bool deny = p->action == MC_ACTION_DENY;
	char field[256], msg[640];
	for (size_t j = 0; j < r->n_to; j++) {
		const struct mc_operation *o = &r->to[j];
		for (size_t k = 0; k < o->named_ports.n; k++) {
			snprintf(field, sizeof(field), "spec.rules[%d].to[%zu].operation.ports", ri, j);
			if (deny)
				snprintf(msg, sizeof(msg), "named port \"%s\" cannot be enforced at L4 "
					 "(ports must be numbers): fail closed, this operation now "
					 "matches every port", SHOW(o->named_ports.items[k]));
			else
				snprintf(msg, sizeof(msg), "named port \"%s\" cannot be enforced at L4 "
					 "(ports must be numbers): fail closed, it matches nothing%s",
					 SHOW(o->named_ports.items[k]),
					 o->n_ports ? " (the numeric ports listed still count)"
						    : "; this operation now matches nothing");
			add(f, MC_WARNING, p, o->line, ri + 1, field, msg);
		}
		for (size_t k = 0; k < o->named_not_ports.n; k++) {
			snprintf(field, sizeof(field), "spec.rules[%d].to[%zu].operation.notPorts", ri,
				 j);
			snprintf(msg, sizeof(msg), "named port \"%s\" cannot be enforced at L4 (ports "
				 "must be numbers): fail closed, %s", SHOW(o->named_not_ports.items[k]),
				 deny ? "it excludes no port" : "this operation now matches nothing");
			add(f, MC_WARNING, p, o->line, ri + 1, field, msg);
		}
	}
}

/* A principal pattern that can never match a workload of this mesh. */
static void lint_principal(const struct mesh_config *c, const struct mc_authz *p, int ri,
			   int line, const char *field, const char *principal,
			   struct mc_findings *f)
{
	struct principal_parts parts;
	char msg[768];
	if (strchr(principal, '*'))
		return;
	if (!principal_split(principal, &parts)) {
		snprintf(msg, sizeof(msg), "principal \"%s\" is not <trust-domain>/ns/<namespace>/"
			 "sa/<service-account>: it never matches a workload identity", SHOW(principal));
		add(f, MC_WARNING, p, line, ri + 1, field, msg);
	} else if (strcmp(parts.td, c->mesh.trust_domain) != 0) {
		snprintf(msg, sizeof(msg), "principal \"%s\" has trust domain \"%s\" but the mesh's "
			 "is \"%s\": no workload of this mesh presents it (moat compares the whole "
			 "principal, trust domain included, as Istio does)", SHOW(principal), SHOW(parts.td),
			 c->mesh.trust_domain);
		add(f, MC_WARNING, p, line, ri + 1, field, msg);
	}
}

static void lint_spiffe_written(const struct mc_authz *p, int ri, int line, const char *field,
				const struct mc_strs *written, struct mc_findings *f)
{
	char msg[768];
	for (size_t k = 0; k < written->n; k++) {
		snprintf(msg, sizeof(msg), "principal \"%s\" is written with \"spiffe://\": moat "
			 "treats it as \"%s\", but Istio/ztunnel would never match it; remove the "
			 "prefix", SHOW(written->items[k]), SHOW(written->items[k] + 9));
		add(f, MC_WARNING, p, line, ri + 1, field, msg);
	}
}

static void lint_principals(const struct mesh_config *c, const struct mc_authz *p, int ri,
			    struct mc_findings *f)
{
	const struct mc_rule *r = &p->rules[ri];
	char field[256];
	for (size_t j = 0; j < r->n_from; j++) {
		const struct mc_source *s = &r->from[j];
		snprintf(field, sizeof(field), "spec.rules[%d].from[%zu].source.principals", ri, j);
		lint_spiffe_written(p, ri, s->line, field, &s->spiffe_written, f);
		for (size_t k = 0; k < s->principals.n; k++)
			lint_principal(c, p, ri, s->line, field, s->principals.items[k], f);
		snprintf(field, sizeof(field), "spec.rules[%d].from[%zu].source.notPrincipals", ri, j);
		for (size_t k = 0; k < s->not_principals.n; k++)
			lint_principal(c, p, ri, s->line, field, s->not_principals.items[k], f);
	}
	for (size_t j = 0; j < r->n_when; j++) {
		const struct mc_condition *cd = &r->when[j];
		if (cd->key != MC_WHEN_SOURCE_PRINCIPAL)
			continue;
		snprintf(field, sizeof(field), "spec.rules[%d].when[%zu]", ri, j);
		lint_spiffe_written(p, ri, cd->line, field, &cd->spiffe_written, f);
		for (size_t k = 0; k < cd->values.n; k++)
			lint_principal(c, p, ri, cd->line, field, cd->values.items[k], f);
	}
}

/* ---- policies ---- */
static bool selects_any_workload(const struct mesh_config *c, const struct mc_authz *p)
{
	for (size_t i = 0; i < c->n_workloads; i++)
		if (strcmp(c->workloads[i].meta.ns, p->meta.ns) == 0 &&
		    mc_workload_selected(&c->workloads[i], &p->selector))
			return true;
	return false;
}

static void lint_target_refs(const struct mesh_config *c, const struct mc_authz *p,
			     struct mc_findings *f)
{
	size_t usable = 0;
	char msg[640];
	for (size_t i = 0; i < p->n_target_refs; i++) {
		const struct mc_target_ref *r = &p->target_refs[i];
		if (!target_ref_is_service_entry(r)) {
			snprintf(msg, sizeof(msg), "targetRef to %s %s/%s is a waypoint feature that "
				 "moat does not enforce: this reference is ignored", r->kind, r->ns,
				 r->name);
			add(f, MC_WARNING, p, r->line, 0, "spec.targetRefs", msg);
		} else if (!mc_service_by_name(c, r->ns, r->name)) {
			snprintf(msg, sizeof(msg), "no ServiceEntry %s/%s: this reference matches "
				 "nothing", r->ns, r->name);
			add(f, MC_WARNING, p, r->line, 0, "spec.targetRefs", msg);
		} else {
			usable++;
		}
	}
	if (p->n_target_refs && !usable)
		add(f, MC_WARNING, p, 0, 0, "spec.targetRefs",
		    "no reference names an existing ServiceEntry: this policy applies to nothing");
}

static void lint_scope(const struct mesh_config *c, const struct mc_authz *p,
		       struct mc_findings *f)
{
	char sel[256], msg[640];
	describe_selection(c, p, sel, sizeof(sel));
	if (p->has_selector && p->selector.n && !selects_any_workload(c, p)) {
		snprintf(msg, sizeof(msg), "selector %s matches no WorkloadEntry in namespace %s",
			 sel, p->meta.ns);
		add(f, MC_NOTE, p, 0, 0, "spec.selector", msg);
	}
	if (p->action != MC_ACTION_ALLOW)
		return;
	size_t dropped = 0;
	for (size_t i = 0; i < p->n_rules; i++)
		dropped += p->rules[i].dropped;
	if (p->n_rules == 0) {
		snprintf(msg, sizeof(msg), "ALLOW policy without rules matches nothing: it denies "
			 "all traffic to %s unless another ALLOW policy allows it", sel);
		add(f, MC_NOTE, p, 0, 0, "spec", msg);
	} else if (dropped == p->n_rules) {
		snprintf(msg, sizeof(msg), "allow rule dropped: this policy now denies all traffic "
			 "to %s unless another ALLOW policy allows it", sel);
		add(f, MC_WARNING, p, 0, 0, "spec.rules", msg);
	}
}

static void lint_policy(const struct mesh_config *c, const struct mc_authz *p,
			struct mc_findings *f)
{
	if (p->action == MC_ACTION_AUDIT) {
		add(f, MC_WARNING, p, 0, 0, "spec.action", "AUDIT is not supported at L4: this "
		    "policy is ignored (nothing is audited, nothing is denied)");
		return;
	}
	if (p->action == MC_ACTION_CUSTOM) {
		add(f, MC_WARNING, p, 0, 0, "spec.action", "CUSTOM (external authorization) is not "
		    "supported at L4: this policy is ignored and denies nothing");
		return;
	}
	if (p->dry_run)
		add(f, MC_NOTE, p, 0, 0, "metadata.annotations.istio.io/dry-run",
		    "dry-run: evaluated and logged only, never enforced");
	lint_target_refs(c, p, f);
	lint_scope(c, p, f);
	for (size_t i = 0; i < p->n_rules; i++) {
		lint_l7(c, p, (int)i, f);
		lint_named_ports(p, (int)i, f);
		lint_principals(c, p, (int)i, f);
	}
}

/* ---- PeerAuthentication ---- */
static void pa_add(struct mc_findings *f, enum mc_severity sev, const struct mc_peer_auth *pa,
		   const char *field, const char *msg)
{
	mc_finding_add(f, sev, pa->meta.file, pa->meta.line, "PeerAuthentication", pa->id_name, 0,
		       field, "%s", msg);
}

static void lint_peer_auth(const struct mesh_config *c, const struct mc_peer_auth *pa,
			   struct mc_findings *f)
{
	bool disable = pa->mode == MC_MTLS_DISABLE;
	for (size_t i = 0; i < pa->n_port_level; i++)
		disable = disable || pa->port_level[i].mode == MC_MTLS_DISABLE;
	if (disable)
		pa_add(f, MC_WARNING, pa, "spec.mtls.mode", "DISABLE is not supported in ambient "
		       "mode: treated as PERMISSIVE (plaintext accepted, authorized as no identity)");
	if (pa->has_selector && strcmp(pa->meta.ns, c->mesh.root_namespace) == 0)
		pa_add(f, MC_WARNING, pa, "spec.selector", "a PeerAuthentication with a selector in "
		       "the root namespace is ignored (as in Istio): move it to the workload's "
		       "namespace");
	for (size_t i = 0; i < c->n_peer_auths; i++) {
		const struct mc_peer_auth *o = &c->peer_auths[i];
		if (o == pa)
			break;
		if (!o->has_selector && !pa->has_selector && strcmp(o->meta.ns, pa->meta.ns) == 0) {
			char msg[512];
			snprintf(msg, sizeof(msg), "%s and %s both cover namespace %s: only the "
				 "oldest (creationTimestamp, then file order) takes effect", o->id_name,
				 pa->id_name, pa->meta.ns);
			pa_add(f, MC_WARNING, pa, NULL, msg);
		}
	}
}

void authz_lint(const struct mesh_config *c, struct mc_findings *f)
{
	for (size_t i = 0; i < c->n_policies; i++)
		lint_policy(c, &c->policies[i], f);
	for (size_t i = 0; i < c->n_peer_auths; i++)
		lint_peer_auth(c, &c->peer_auths[i], f);
}

void authz_lint_loaded(struct mesh_config *c, struct mc_findings *f)
{
	struct mc_findings lf = {0};
	authz_lint(c, &lf);
	mc_findings_append(&c->findings, &lf);
	if (f)
		mc_findings_append(f, &lf);
	mc_findings_free(&lf);
}
