/* Lint: what cannot be enforced at L4 is reported with file:line, the policy, the field and
 * what the policy now means. Warnings and notes never fail a load. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "policy/authz.h"
#include "test.h"

const struct mc_finding *th_find(const struct mc_findings *f, enum mc_severity sev,
				 const char *field, const char *msg);
void th_dump(const struct mc_findings *f);

#define WE(name, ns, addr)                                                                 \
	"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"                         \
	"metadata: {name: " name ", namespace: " ns "}\n"                                   \
	"spec: {address: '" addr "', labels: {app: " name "}}\n---\n"
#define AP(name, ns)                                                                        \
	"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"                \
	"metadata: {name: " name ", namespace: " ns "}\n"

/* Load (must succeed) and return the snapshot's findings in f (copied). */
static bool lint(const char *yaml, struct mc_findings *f)
{
	const char *names[] = {"lint.yaml"};
	const char *texts[] = {yaml};
	struct mesh_config *c = NULL;
	int rc = mesh_config_load_texts(names, texts, 1, &c, f);
	if (rc != 0) {
		th_dump(f);
		return false;
	}
	authz_lint_loaded(c, f); /* as moatd and moatctl lint do */
	/* authz_lint on the snapshot gives the same findings again */
	struct mc_findings again = {0};
	authz_lint(c, &again);
	bool same = again.n == c->findings.n;
	mc_findings_free(&again);
	mesh_config_unref(c);
	return same;
}

static const char *str(const struct mc_finding *f, char *buf, size_t len)
{
	return f ? mc_finding_str(f, buf, len) : "(no such finding)";
}

TEST(lint_allow_rules_dropped_say_what_the_policy_now_means)
{
	struct mc_findings f = {0};
	char buf[1024];
	REQUIRE(lint(WE("x", "ns", "10.0.0.1")
		     AP("p", "ns")
		     "spec:\n"
		     "  selector: {matchLabels: {app: x}}\n"
		     "  rules:\n"
		     "  - to:\n"
		     "    - operation:\n"
		     "        methods: [POST]\n"
		     "        paths: [/reserve]\n", &f));
	CHECK_INT(mc_findings_count(&f, MC_ERROR), 0);
	CHECK_STR(str(th_find(&f, MC_WARNING, "methods", NULL), buf, sizeof(buf)),
		  "warning: lint.yaml:15: policy ns/p rule 1: spec.rules[0].to[0].operation.methods: "
		  "allow rule dropped: methods, paths cannot be enforced at L4 (it needs a waypoint), "
		  "so this rule matches nothing");
	CHECK_STR(str(th_find(&f, MC_WARNING, "spec.rules", "now denies"), buf, sizeof(buf)),
		  "warning: lint.yaml:7: policy ns/p: spec.rules: allow rule dropped: this policy "
		  "now denies all traffic to app=x unless another ALLOW policy allows it");
	mc_findings_free(&f);
}

TEST(lint_selection_is_named_namespace_and_mesh_wide)
{
	struct mc_findings f = {0};
	REQUIRE(lint(AP("ns-wide", "ns")
		     "spec: {rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}\n"
		     AP("mesh-wide", "istio-system")
		     "spec: {rules: [{when: [{key: 'request.headers[x]', values: [y]}]}]}\n", &f));
	CHECK(th_find(&f, MC_WARNING, "spec.rules",
		      "now denies all traffic to every workload in namespace ns unless"));
	CHECK(th_find(&f, MC_WARNING, "spec.rules",
		      "now denies all traffic to every workload in the mesh unless"));
	CHECK(th_find(&f, MC_WARNING, "spec.rules[0].when[0]",
		      "allow rule dropped: when request.headers[x] cannot be enforced"));
	mc_findings_free(&f);
}

TEST(lint_deny_rule_enforced_without_l7_fields)
{
	struct mc_findings f = {0};
	char buf[1024];
	REQUIRE(lint(WE("x", "ns", "10.0.0.1")
		     AP("all", "ns")
		     "spec:\n  selector: {matchLabels: {app: x}}\n  action: DENY\n"
		     "  rules:\n  - to: [{operation: {methods: [DELETE]}}]\n"
		     AP("some", "ns")
		     "spec: {action: DENY, rules: [{from: [{source: {namespaces: [a]}}], "
		     "to: [{operation: {hosts: [h.example]}}]}]}\n", &f));
	CHECK_STR(str(th_find(&f, MC_WARNING, "methods", NULL), buf, sizeof(buf)),
		  "warning: lint.yaml:14: policy ns/all rule 1: spec.rules[0].to[0].operation.methods: "
		  "DENY rule enforced without methods (L7, not visible at L4; fail closed, where "
		  "ztunnel would ignore the rule): it now denies all traffic to app=x");
	CHECK(th_find(&f, MC_WARNING, "operation.hosts",
		      "DENY rule enforced without hosts (L7, not visible at L4; fail closed, where "
		      "ztunnel would ignore the rule): it now denies every connection to every "
		      "workload in namespace ns that its L4 fields match"));
	mc_findings_free(&f);
}

TEST(lint_named_ports)
{
	struct mc_findings f = {0};
	char buf[1024];
	REQUIRE(lint(AP("a", "ns")
		     "spec:\n  rules:\n  - to:\n    - operation:\n        ports: [http, '8080']\n"
		     AP("b", "ns")
		     "spec: {rules: [{to: [{operation: {ports: [grpc]}}]}]}\n"
		     AP("c", "ns")
		     "spec: {action: DENY, rules: [{to: [{operation: {ports: [admin], notPorts: [metrics]}}]}]}\n",
		     &f));
	CHECK_STR(str(th_find(&f, MC_WARNING, NULL, "\"http\""), buf, sizeof(buf)),
		  "warning: lint.yaml:9: policy ns/a rule 1: spec.rules[0].to[0].operation.ports: "
		  "named port \"http\" cannot be enforced at L4 (ports must be numbers): fail closed, "
		  "it matches nothing (the numeric ports listed still count)");
	CHECK(th_find(&f, MC_WARNING, "operation.ports", "\"grpc\" cannot be enforced at L4 "
		      "(ports must be numbers): fail closed, it matches nothing; this operation now "
		      "matches nothing"));
	CHECK(th_find(&f, MC_WARNING, "operation.ports", "\"admin\" cannot be enforced at L4 "
		      "(ports must be numbers): fail closed, this operation now matches every port"));
	CHECK(th_find(&f, MC_WARNING, "operation.notPorts", "\"metrics\" cannot be enforced at "
		      "L4 (ports must be numbers): fail closed, it excludes no port"));
	mc_findings_free(&f);
}

TEST(lint_principals_spiffe_prefix_shape_and_trust_domain)
{
	struct mc_findings f = {0};
	char buf[1024];
	REQUIRE(lint(AP("p", "ns")
		     "spec:\n  rules:\n  - from:\n    - source:\n"
		     "        principals: ['spiffe://cluster.local/ns/a/sa/b', 'web', 'other.td/ns/a/sa/b', 'x*']\n"
		     "    when: [{key: source.principal, values: ['spiffe://cluster.local/ns/c/sa/d']}]\n",
		     &f));
	CHECK_STR(str(th_find(&f, MC_WARNING, NULL, "spiffe://cluster.local/ns/a/sa/b"), buf,
		      sizeof(buf)),
		  "warning: lint.yaml:9: policy ns/p rule 1: spec.rules[0].from[0].source.principals: "
		  "principal \"spiffe://cluster.local/ns/a/sa/b\" is written with \"spiffe://\": moat "
		  "treats it as \"cluster.local/ns/a/sa/b\", but Istio/ztunnel would never match it; "
		  "remove the prefix");
	CHECK(th_find(&f, MC_WARNING, "source.principals", "principal \"web\" is not "
		      "<trust-domain>/ns/<namespace>/sa/<service-account>: it never matches"));
	CHECK(th_find(&f, MC_WARNING, "source.principals", "has trust domain \"other.td\" but the "
		      "mesh's is \"cluster.local\""));
	CHECK(th_find(&f, MC_WARNING, "when[0]", "\"spiffe://cluster.local/ns/c/sa/d\" is written"));
	CHECK(!th_find(&f, MC_WARNING, NULL, "\"x*\""));
	mc_findings_free(&f);
}

TEST(lint_unsupported_actions_dry_run_and_scope)
{
	struct mc_findings f = {0};
	char buf[1024];
	REQUIRE(lint(AP("audit", "ns") "spec: {action: AUDIT, rules: [{}]}\n"
		     AP("ext", "ns") "spec: {action: CUSTOM, provider: {name: opa}, rules: [{}]}\n"
		     "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		     "metadata: {name: dry, namespace: ns, annotations: {istio.io/dry-run: 'true'}}\n"
		     "spec: {action: DENY, rules: [{}]}\n"
		     AP("nobody", "ns") "spec: {selector: {matchLabels: {app: ghost}}, rules: [{}]}\n"
		     AP("deny-none", "ns") "spec: {}\n", &f));
	CHECK_STR(str(th_find(&f, MC_WARNING, "spec.action", "AUDIT"), buf, sizeof(buf)),
		  "warning: lint.yaml:2: policy ns/audit: spec.action: AUDIT is not supported at L4: "
		  "this policy is ignored (nothing is audited, nothing is denied)");
	CHECK(th_find(&f, MC_WARNING, "spec.action", "CUSTOM (external authorization) is not "
		      "supported at L4: this policy is ignored and denies nothing"));
	CHECK(th_find(&f, MC_NOTE, "dry-run", "dry-run: evaluated and logged only, never enforced"));
	CHECK(th_find(&f, MC_NOTE, "spec.selector", "selector app=ghost matches no WorkloadEntry "
		      "in namespace ns"));
	CHECK(th_find(&f, MC_NOTE, "spec", "ALLOW policy without rules matches nothing: it "
		      "denies all traffic to every workload in namespace ns unless another ALLOW "
		      "policy allows it"));
	mc_findings_free(&f);
}

TEST(lint_target_refs)
{
	struct mc_findings f = {0};
	REQUIRE(lint("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
		     "metadata: {name: se, namespace: ns}\nspec: {hosts: [a.example]}\n"
		     AP("svc", "ns") "spec: {targetRef: {kind: Service, name: web}, rules: [{}]}\n"
		     AP("gone", "ns") "spec: {targetRefs: [{kind: ServiceEntry, name: missing}], rules: [{}]}\n"
		     AP("fine", "ns") "spec: {targetRefs: [{kind: ServiceEntry, name: se}], rules: [{}]}\n",
		     &f));
	CHECK(th_find(&f, MC_WARNING, "spec.targetRefs", "targetRef to Service ns/web is a waypoint "
		      "feature that moat does not enforce: this reference is ignored"));
	CHECK(th_find(&f, MC_WARNING, "spec.targetRefs", "no ServiceEntry ns/missing: this "
		      "reference matches nothing"));
	CHECK(th_find(&f, MC_WARNING, "spec.targetRefs", "no reference names an existing "
		      "ServiceEntry: this policy applies to nothing"));
	for (size_t i = 0; i < f.n; i++)
		CHECK(!f.items[i].policy || strcmp(f.items[i].policy, "ns/fine") != 0);
	mc_findings_free(&f);
}

TEST(lint_peer_authentication)
{
	struct mc_findings f = {0};
	char buf[1024];
	REQUIRE(lint("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
		     "metadata: {name: off, namespace: ns}\nspec: {mtls: {mode: DISABLE}}\n---\n"
		     "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
		     "metadata: {name: second, namespace: ns}\nspec: {mtls: {mode: STRICT}}\n---\n"
		     "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
		     "metadata: {name: root-sel, namespace: istio-system}\n"
		     "spec: {selector: {matchLabels: {app: a}}, mtls: {mode: STRICT}}\n", &f));
	CHECK_STR(str(th_find(&f, MC_WARNING, "spec.mtls.mode", NULL), buf, sizeof(buf)),
		  "warning: lint.yaml:1: PeerAuthentication ns/off: spec.mtls.mode: DISABLE is not "
		  "supported in ambient mode: treated as PERMISSIVE (plaintext accepted, authorized "
		  "as no identity)");
	CHECK(th_find(&f, MC_WARNING, "spec.selector", "a PeerAuthentication with a selector in "
		      "the root namespace is ignored"));
	CHECK(th_find(&f, MC_WARNING, NULL, "ns/off and ns/second both cover namespace ns: only "
		      "the oldest"));
	mc_findings_free(&f);
}

TEST(lint_clean_configuration_has_no_warnings)
{
	struct mc_findings f = {0};
	REQUIRE(lint(WE("x", "ns", "10.0.0.1")
		     AP("p", "ns")
		     "spec: {selector: {matchLabels: {app: x}}, rules: [{from: [{source: "
		     "{principals: [cluster.local/ns/ns/sa/y]}}], to: [{operation: {ports: ['80']}}]}]}\n",
		     &f));
	CHECK_INT(f.n, 0);
	th_dump(&f);
	mc_findings_free(&f);
}
