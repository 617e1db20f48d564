/* Decisions in words and JSON, and `explain`: (config, from, source IP, to) -> the verdict,
 * the deciding policy and why. moatctl (offline) and moatd (live) both call authz_explain,
 * so the answer comes from the same engine that enforces. */
#include <stdio.h>
#include <string.h>

#include "core/reasons.h"
#include "policy/authz_internal.h"

static const char *action_str(enum moat_action a)
{
	return a == MOAT_ACTION_ALLOW ? "ALLOW" : "DENY";
}

void authz_decision_json(const struct authz_decision *d, struct sbuf *out)
{
	const char *policy = d->policy ? d->policy->id_name
				       : d->peer_auth ? d->peer_auth->id_name : NULL;
	sbuf_printf(out, "{\"verdict\":\"%s\",\"policy\":", action_str(d->action));
	sbuf_json_str(out, policy);
	if (d->policy && d->rule > 0)
		sbuf_printf(out, ",\"rule\":%d", d->rule);
	else
		sbuf_puts(out, ",\"rule\":null");
	sbuf_puts(out, ",\"reason\":");
	sbuf_json_str(out, d->why);
	sbuf_puts(out, "}");
}

void authz_decision_text(const struct authz_decision *d, const struct authz_target *t,
			 const struct authz_peer *p, struct sbuf *out)
{
	char peer[384], target[300], dst[ADDR_STRLEN + 8];
	describe_peer(p, peer, sizeof(peer));
	describe_target(t, target, sizeof(target));
	addr_port_str(&t->ip, t->port, dst, sizeof(dst));
	sbuf_printf(out, "%s  %s -> %s (%s)\n", action_str(d->action), peer, dst, target);
	if (d->policy)
		sbuf_printf(out, "  policy: %s rule %d (%s:%d)\n", d->policy->id_name, d->rule,
			    d->policy->meta.file ? d->policy->meta.file : "?",
			    d->rule > 0 ? d->policy->rules[d->rule - 1].line : d->policy->meta.line);
	else if (d->peer_auth)
		sbuf_printf(out, "  policy: PeerAuthentication %s (%s:%d)\n", d->peer_auth->id_name,
			    d->peer_auth->meta.file ? d->peer_auth->meta.file : "?",
			    d->peer_auth->meta.line);
	else
		sbuf_puts(out, "  policy: none\n");
	sbuf_printf(out, "  reason: %s\n", moat_reason_text(d->reason));
	sbuf_printf(out, "  why: %s\n", d->why);
	for (int i = 0; i < d->n_dry_run; i++) {
		const struct authz_dry_run *dr = &d->dry_run[i];
		if (dr->matched)
			sbuf_printf(out, "  dry-run: %s %s rule %d matched: would %s\n",
				    dr->policy->action == MC_ACTION_DENY ? "DENY" : "ALLOW",
				    dr->policy->id_name, dr->rule, action_str(dr->would));
		else
			sbuf_printf(out, "  dry-run: %s %s did not match: alone it would %s\n",
				    dr->policy->action == MC_ACTION_DENY ? "DENY" : "ALLOW",
				    dr->policy->id_name, action_str(dr->would));
	}
}

/* ---- rules in words ---- */
static void strs(struct sbuf *b, const char *label, bool has, const struct mc_strs *l,
		 bool *first)
{
	if (!has)
		return;
	sbuf_printf(b, "%s%s [", *first ? "" : ", ", label);
	for (size_t i = 0; i < l->n; i++)
		sbuf_printf(b, "%s%s", i ? ", " : "", l->items[i]);
	sbuf_puts(b, "]");
	*first = false;
}

static void cidrs(struct sbuf *b, const char *label, bool has, const struct mc_cidrs *l,
		  bool *first)
{
	char buf[ADDR_STRLEN + 8];
	if (!has)
		return;
	sbuf_printf(b, "%s%s [", *first ? "" : ", ", label);
	for (size_t i = 0; i < l->n; i++)
		sbuf_printf(b, "%s%s", i ? ", " : "", cidr_str(&l->items[i], buf, sizeof(buf)));
	sbuf_puts(b, "]");
	*first = false;
}

static void ports(struct sbuf *b, const char *label, bool has, const uint16_t *p, size_t n,
		  const struct mc_strs *named, bool *first)
{
	if (!has)
		return;
	sbuf_printf(b, "%s%s [", *first ? "" : ", ", label);
	for (size_t i = 0; i < n; i++)
		sbuf_printf(b, "%s%u", i ? ", " : "", p[i]);
	for (size_t i = 0; i < named->n; i++)
		sbuf_printf(b, "%s%s (named)", i || n ? ", " : "", named->items[i]);
	sbuf_puts(b, "]");
	*first = false;
}

static const char *when_key_str(enum mc_when_key k)
{
	static const char *const names[] = {"source.ip", "source.namespace", "source.principal",
					    "destination.ip", "destination.port"};
	return (unsigned)k < ARRAY_SIZE(names) ? names[k] : "?";
}

void describe_rule(const struct mc_rule *r, struct sbuf *out)
{
	if (r->dropped) {
		sbuf_puts(out, "dropped (L7 fields): matches nothing");
		return;
	}
	if (!r->has_from && !r->has_to && !r->n_when) {
		sbuf_puts(out, "matches everything");
		return;
	}
	for (size_t i = 0; i < r->n_from; i++) {
		const struct mc_source *s = &r->from[i];
		bool first = true;
		sbuf_printf(out, "%sfrom ", i ? " or " : "");
		strs(out, "principals", s->has_principals, &s->principals, &first);
		strs(out, "notPrincipals", s->has_not_principals, &s->not_principals, &first);
		strs(out, "namespaces", s->has_namespaces, &s->namespaces, &first);
		strs(out, "notNamespaces", s->has_not_namespaces, &s->not_namespaces, &first);
		strs(out, "serviceAccounts", s->has_service_accounts, &s->service_accounts, &first);
		strs(out, "notServiceAccounts", s->has_not_service_accounts,
		     &s->not_service_accounts, &first);
		cidrs(out, "ipBlocks", s->has_ip_blocks, &s->ip_blocks, &first);
		cidrs(out, "notIpBlocks", s->has_not_ip_blocks, &s->not_ip_blocks, &first);
		if (first)
			sbuf_puts(out, "any source");
	}
	for (size_t i = 0; i < r->n_to; i++) {
		const struct mc_operation *o = &r->to[i];
		bool first = true;
		sbuf_printf(out, "%s%sto ", r->n_from && !i ? "; " : "", i ? " or " : "");
		ports(out, "ports", o->has_ports, o->ports, o->n_ports, &o->named_ports, &first);
		ports(out, "notPorts", o->has_not_ports, o->not_ports, o->n_not_ports,
		      &o->named_not_ports, &first);
		if (first)
			sbuf_puts(out, "any port");
	}
	for (size_t i = 0; i < r->n_when; i++) {
		const struct mc_condition *c = &r->when[i];
		bool first = true;
		sbuf_printf(out, "%swhen %s ", r->n_from || r->n_to || i ? "; " : "",
			    when_key_str(c->key));
		strs(out, "in", c->has_values, &c->values, &first);
		strs(out, "not in", c->has_not_values, &c->not_values, &first);
	}
}

/* ---- explain ---- */
struct explain_in {
	const char *principal; /* without spiffe://, NULL for plaintext */
	struct authz_peer peer;
	struct authz_target target;
	const struct mc_workload *src_workload; /* when the source IP was inferred */
};

static int bad_input(struct sbuf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_input(struct sbuf *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(out, fmt, ap);
	va_end(ap);
	sbuf_puts(out, "\n");
	return 2;
}

static int parse_from(const char *from, struct explain_in *in, struct sbuf *out)
{
	struct principal_parts parts;
	if (!from || !*from)
		return bad_input(out, "--from is required: spiffe://<trust-domain>/ns/<namespace>/"
				 "sa/<service-account> or plaintext");
	if (strcmp(from, "plaintext") == 0) {
		in->principal = NULL;
		return 0;
	}
	if (!principal_split(from, &parts))
		return bad_input(out, "--from \"%s\": expected spiffe://<trust-domain>/ns/"
				 "<namespace>/sa/<service-account> or plaintext", from);
	in->principal = strip_spiffe(from);
	return 0;
}

/* Without --src-ip, a principal that exactly one WorkloadEntry presents gives its address. */
static void infer_source_ip(const struct mesh_config *c, struct explain_in *in)
{
	const struct mc_workload *found = NULL;
	if (!in->principal)
		return;
	for (size_t i = 0; i < c->n_workloads; i++) {
		const char *id = strip_spiffe(c->workloads[i].spiffe_id);
		if (!id || strcmp(id, in->principal) != 0)
			continue;
		if (found)
			return; /* ambiguous */
		found = &c->workloads[i];
	}
	if (found) {
		in->peer.ip = found->address;
		in->peer.has_ip = true;
		in->src_workload = found;
	}
}

static int parse_target(const struct mesh_config *c, const char *to, struct explain_in *in,
			struct sbuf *out)
{
	char ip[ADDR_STRLEN];
	struct authz_target *t = &in->target;
	if (!to || !addr_port_parse(to, &t->ip, &t->port))
		return bad_input(out, "--to \"%s\": expected IP:PORT (e.g. 10.244.1.11:8080 or "
				 "[fd00::1]:8080)", to ? to : "");
	if ((t->workload = mc_workload_by_addr(c, &t->ip))) {
		t->kind = AUTHZ_TARGET_WORKLOAD;
		return 0;
	}
	if ((t->service = mc_service_by_addr(c, &t->ip))) {
		t->kind = AUTHZ_TARGET_SERVICE;
		return 0;
	}
	return bad_input(out, "no workload or ServiceEntry has address %s",
			 addr_str(&t->ip, ip, sizeof(ip)));
}

/* A rule naming a principal of the peer's trust domain and namespace with another service
 * account: the classic "workload runs as `default`" mistake. One hint line per such entry. */
static void hint_service_account(const struct mc_authz *p, size_t ri, const char *principal,
				 struct sbuf *out)
{
	struct principal_parts peer, want;
	if (!principal_split(principal, &peer))
		return;
	const struct mc_rule *r = &p->rules[ri];
	for (size_t j = 0; j < r->n_from; j++) {
		const struct mc_strs *l = &r->from[j].principals;
		for (size_t k = 0; k < l->n; k++) {
			if (strchr(l->items[k], '*') || !principal_split(l->items[k], &want) ||
			    strcmp(want.td, peer.td) || strcmp(want.ns, peer.ns) ||
			    !strcmp(want.sa, peer.sa))
				continue;
			sbuf_printf(out, "  hint: %s rule %zu expects service account \"%s\" in "
				    "namespace %s; the peer presents \"%s\" (if it should be "
				    "allowed, check which serviceAccount the workload runs as)\n",
				    p->id_name, ri + 1, want.sa, want.ns, peer.sa);
		}
	}
}

/* For a NO_ALLOW denial: each ALLOW policy that applies and what its rules expect. */
void explain_allow_policies(const struct mesh_config *c, const struct authz_target *t,
				   const char *principal, struct sbuf *out)
{
	struct sbuf hints;
	sbuf_init(&hints);
	sbuf_puts(out, "  ALLOW policies that apply, and what they expect:\n");
	for (size_t i = 0; i < c->n_policies; i++) {
		const struct mc_authz *p = &c->policies[i];
		if (p->action != MC_ACTION_ALLOW || p->dry_run || !authz_policy_applies(c, p, t))
			continue;
		sbuf_printf(out, "    %s (%s:%d)\n", p->id_name, p->meta.file ? p->meta.file : "?",
			    p->meta.line);
		if (p->n_rules == 0)
			sbuf_puts(out, "      no rules: matches nothing\n");
		for (size_t r = 0; r < p->n_rules; r++) {
			sbuf_printf(out, "      rule %zu: ", r + 1);
			describe_rule(&p->rules[r], out);
			sbuf_puts(out, "\n");
			if (!p->rules[r].dropped)
				hint_service_account(p, r, principal, &hints);
		}
	}
	if (hints.s)
		sbuf_puts(out, hints.s);
	sbuf_free(&hints);
}

int authz_explain_source(const struct mesh_config *c, const char *from, const char *src_ip,
			struct authz_peer *peer, const struct mc_workload **inferred,
			struct sbuf *out)
{
	struct explain_in in;
	memset(&in, 0, sizeof(in));
	int rc = parse_from(from, &in, out);
	if (rc)
		return rc;
	if (src_ip && *src_ip) {
		if (!addr_parse(src_ip, &in.peer.ip))
			return bad_input(out, "--src-ip \"%s\": not an IP address", src_ip);
		in.peer.has_ip = true;
	} else {
		infer_source_ip(c, &in);
	}
	in.peer.principal = in.principal;
	*peer = in.peer;
	*inferred = in.src_workload;
	return 0;
}

void authz_explain_source_note(const struct mesh_config *c, const struct authz_peer *peer,
			       const struct mc_workload *inferred, const struct authz_target *t,
			       struct sbuf *out)
{
	char ip[ADDR_STRLEN];
	if (inferred)
		sbuf_printf(out, "  source IP %s: the address of WorkloadEntry %s/%s (the only "
			    "one with this identity); pass --src-ip to choose another\n",
			    addr_str(&peer->ip, ip, sizeof(ip)), inferred->meta.ns,
			    inferred->meta.name);
	else if (!peer->has_ip && authz_depends_on_source_ip(c, t))
		sbuf_puts(out, "  source IP unknown: conditions on it fail closed; pass "
			  "--src-ip\n");
}

int authz_explain(const struct mesh_config *c, const char *from, const char *src_ip,
		  const char *to, bool json, struct sbuf *out)
{
	struct explain_in in;
	struct authz_decision d;
	memset(&in, 0, sizeof(in));
	int rc = authz_explain_source(c, from, src_ip, &in.peer, &in.src_workload, out);
	if (rc)
		return rc;
	in.principal = in.peer.principal;
	if ((rc = parse_target(c, to, &in, out)))
		return rc;
	memset(&d, 0, sizeof(d));
	authz_evaluate(c, &in.target, &in.peer, &d);
	if (json) {
		authz_decision_json(&d, out);
		sbuf_puts(out, "\n");
	} else {
		authz_decision_text(&d, &in.target, &in.peer, out);
		authz_explain_source_note(c, &in.peer, in.src_workload, &in.target, out);
		if (in.target.kind == AUTHZ_TARGET_SERVICE && in.target.service->n_ports &&
		    !mc_service_has_port(in.target.service, in.target.port))
			sbuf_printf(out, "  note: ServiceEntry %s/%s does not list port %u\n",
				    in.target.service->meta.ns, in.target.service->meta.name,
				    in.target.port);
		if (d.reason == MOAT_REASON_NO_ALLOW)
			explain_allow_policies(c, &in.target, in.principal, out);
	}
	return d.action == MOAT_ACTION_ALLOW ? 0 : 1;
}
