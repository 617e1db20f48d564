/* The L4 authorization engine: every row of notes/l4-authz.md with plaintext and mTLS peers,
 * moat's deliberate differences, the evaluation order and the decision texts. */
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "policy/authz.h"
#include "test.h"

struct mesh_config *th_load(const char *yaml);
enum moat_action th_decide(const struct mesh_config *c, const char *principal, const char *src_ip,
			   const char *dst, uint16_t port, struct authz_decision *d);

#define ALLOW MOAT_ACTION_ALLOW
#define DENY MOAT_ACTION_DENY

/* ns1: web 10.0.0.1 (sa web), api 10.0.0.2 (sa api), v6 fd00::2; ns2: db 10.0.1.1 (sa db). */
#define WE(name, ns, addr, sa)                                                             \
	"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"                         \
	"metadata: {name: " name ", namespace: " ns "}\n"                                   \
	"spec: {address: '" addr "', serviceAccount: " sa ", labels: {app: " name "}}\n---\n"
#define BASE                                                                                \
	WE("web", "ns1", "10.0.0.1", "web") WE("api", "ns1", "10.0.0.2", "api")             \
	WE("v6", "ns1", "fd00::2", "v6") WE("db", "ns2", "10.0.1.1", "db")
#define AP(name, ns)                                                                        \
	"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"                \
	"metadata: {name: " name ", namespace: " ns "}\n"

/* with the dry-run annotation */
#define APA(name, ns)                                                                       \
	"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"                \
	"metadata: {name: " name ", namespace: " ns ", annotations: {istio.io/dry-run: 'true'}}\n"

#define WEB "cluster.local/ns/ns1/sa/web"
#define API "cluster.local/ns/ns1/sa/api"
#define DB "cluster.local/ns/ns2/sa/db"

static struct mesh_config *load(const char *policies)
{
	char *yaml = xasprintf("%s%s", BASE, policies);
	struct mesh_config *c = th_load(yaml);
	free(yaml);
	return c;
}

TEST(authz_no_policy_allows_and_says_so)
{
	struct mesh_config *c = load("");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 8080, &d), ALLOW);
	CHECK_INT(d.reason, MOAT_REASON_ALLOWED);
	CHECK(d.policy == NULL);
	CHECK_STR(d.why, "no ALLOW policy applies to ns1/api: allowed for principal " WEB
			 " from 10.0.0.1");
	CHECK_INT(th_decide(c, NULL, NULL, "10.0.0.2", 8080, &d), ALLOW);
	CHECK_CONTAINS(d.why, "plaintext peer");
	mesh_config_unref(c);
}

TEST(authz_spec_empty_denies_everything_it_selects)
{
	struct mesh_config *c = load(AP("allow-nothing", "ns1") "spec: {}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 8080, &d), DENY);
	CHECK_INT(d.reason, MOAT_REASON_NO_ALLOW);
	CHECK_STR(d.why, "no ALLOW policy matched for principal " WEB " from 10.0.0.1 (allow "
			 "policies for ns1/api: ns1/allow-nothing)");
	CHECK_INT(th_decide(c, NULL, "10.0.1.1", "10.0.0.1", 80, &d), DENY);
	/* ns2 is another namespace: not selected. */
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.1.1", 5432, &d), ALLOW);
	mesh_config_unref(c);
}

TEST(authz_rules_with_one_empty_rule_allow_everything)
{
	struct mesh_config *c = load(AP("allow-all", "ns1") "spec: {rules: [{}]}\n"
				     AP("allow-nothing", "ns1") "spec: {}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 8080, &d), ALLOW);
	CHECK_STR(d.why, "ALLOW policy ns1/allow-all rule 1 matched for principal " WEB
			 " from 10.0.0.1");
	CHECK_INT(d.rule, 1);
	CHECK_INT(th_decide(c, NULL, "192.0.2.1", "10.0.0.2", 1, &d), ALLOW);
	mesh_config_unref(c);
}

TEST(authz_selector_scopes_to_matching_workloads_of_its_namespace)
{
	struct mesh_config *c = load(
		AP("api-from-db", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{from: [{source: {principals: [" DB "]}}]}]}\n"
		AP("other-ns", "ns2")
		"spec: {selector: {matchLabels: {app: web}}, rules: [{from: [{source: {principals: [nobody]}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 8080, &d), DENY);
	CHECK_INT(th_decide(c, DB, "10.0.1.1", "10.0.0.2", 8080, &d), ALLOW);
	CHECK(d.policy && strcmp(d.policy->id_name, "ns1/api-from-db") == 0);
	/* web is not selected by api-from-db, and ns2/other-ns selects app=web only in ns2. */
	CHECK_INT(th_decide(c, API, "10.0.0.2", "10.0.0.1", 8080, &d), ALLOW);
	CHECK_INT(d.reason, MOAT_REASON_ALLOWED);
	mesh_config_unref(c);
}

TEST(authz_root_namespace_policy_without_selector_applies_mesh_wide)
{
	struct mesh_config *c = load(AP("deny-all", "istio-system") "spec: {}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 8080, &d), DENY);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.1.1", 5432, &d), DENY);
	CHECK_CONTAINS(d.why, "istio-system/deny-all");
	mesh_config_unref(c);
	/* With a selector, a root-namespace policy covers matching workloads of every namespace
	 * (Istio: "the selector will additionally match with workloads in all namespaces"). */
	c = load(AP("sel", "istio-system") "spec: {selector: {matchLabels: {app: api}}}\n");
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 8080, &d), DENY);
	CHECK_CONTAINS(d.why, "istio-system/sel");
	/* ... and only those. */
	CHECK_INT(th_decide(c, API, "10.0.0.2", "10.0.0.1", 8080, &d), ALLOW);
	mesh_config_unref(c);
}

TEST(authz_custom_root_namespace_from_mesh_config)
{
	struct mesh_config *c = load("---\napiVersion: moat.dev/v1\nkind: MeshConfig\n"
				     "metadata: {name: mesh}\nspec: {rootNamespace: mesh-root}\n"
				     AP("deny-all", "mesh-root") "spec: {}\n"
				     AP("not-root", "istio-system") "spec: {}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.1.1", 5432, &d), DENY);
	CHECK_CONTAINS(d.why, "mesh-root/deny-all");
	CHECK(!strstr(d.why, "not-root"));
	mesh_config_unref(c);
}

TEST(authz_deny_is_evaluated_before_allow)
{
	struct mesh_config *c = load(
		AP("allow-all", "ns1") "spec: {rules: [{}]}\n"
		AP("deny-web", "ns1")
		"spec: {action: DENY, rules: [{from: [{source: {principals: [nobody]}}]}, "
		"{from: [{source: {principals: [" WEB "]}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 8080, &d), DENY);
	CHECK_INT(d.reason, MOAT_REASON_POLICY_DENY);
	CHECK_INT(d.rule, 2);
	CHECK_STR(d.why, "DENY policy ns1/deny-web rule 2 matched for principal " WEB
			 " from 10.0.0.1");
	CHECK_INT(th_decide(c, DB, "10.0.1.1", "10.0.0.2", 8080, &d), ALLOW);
	CHECK_STR(d.policy ? d.policy->id_name : "", "ns1/allow-all");
	mesh_config_unref(c);
}

TEST(authz_rule_parts_and_entries_combine_as_istio)
{
	/* from AND to; entries of from OR; when conditions AND. */
	struct mesh_config *c = load(
		AP("p", "ns1")
		"spec:\n  selector: {matchLabels: {app: api}}\n  rules:\n"
		"  - from: [{source: {principals: [" WEB "]}}, {source: {namespaces: [ns2]}}]\n"
		"    to: [{operation: {ports: ['8080']}}, {operation: {ports: ['8443']}}]\n"
		"    when:\n"
		"    - {key: source.ip, values: [10.0.0.0/8]}\n"
		"    - {key: destination.ip, notValues: [10.9.9.9]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 8080, &d), ALLOW);
	CHECK_INT(th_decide(c, DB, "10.0.1.1", "10.0.0.2", 8443, &d), ALLOW);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 9090, &d), DENY);
	CHECK_INT(th_decide(c, API, "10.0.0.2", "10.0.0.2", 8080, &d), DENY);
	CHECK_INT(th_decide(c, WEB, "192.168.0.1", "10.0.0.2", 8080, &d), DENY);
	CHECK_INT(th_decide(c, NULL, "10.0.0.1", "10.0.0.2", 8080, &d), DENY);
	mesh_config_unref(c);
}

TEST(authz_fields_of_one_source_all_must_match)
{
	struct mesh_config *c = load(
		AP("p", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{from: [{source: "
		"{namespaces: [ns1], notPrincipals: [" WEB "]}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, "cluster.local/ns/ns1/sa/other", "10.0.0.9", "10.0.0.2", 80, &d),
		  ALLOW);
	CHECK_INT(th_decide(c, DB, "10.0.1.1", "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, NULL, "10.0.0.1", "10.0.0.2", 80, &d), DENY);
	mesh_config_unref(c);
}

TEST(authz_not_lists_succeed_for_plaintext_positive_lists_fail)
{
	struct mesh_config *c = load(
		AP("not", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{from: [{source: "
		"{notNamespaces: [ns1], notPrincipals: ['*/sa/db-admin']}}]}]}\n"
		AP("pos", "ns1")
		"spec: {selector: {matchLabels: {app: web}}, rules: [{from: [{source: "
		"{principals: ['*']}}]}, {from: [{source: {namespaces: ['*']}}]}, "
		"{from: [{source: {serviceAccounts: [api]}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, NULL, "10.0.0.1", "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, DB, "10.0.1.1", "10.0.0.2", 80, &d), ALLOW);
	/* principals ['*'], namespaces ['*'], serviceAccounts: any identity, never plaintext */
	CHECK_INT(th_decide(c, NULL, "10.0.0.2", "10.0.0.1", 80, &d), DENY);
	CHECK_INT(th_decide(c, DB, "10.0.1.1", "10.0.0.1", 80, &d), ALLOW);
	CHECK_INT(d.rule, 1);
	mesh_config_unref(c);
}

TEST(authz_string_matching_rules)
{
	CHECK(authz_string_match("*", "x"));
	CHECK(!authz_string_match("*", ""));
	CHECK(!authz_string_match("*", NULL));
	CHECK(authz_string_match("*/sa/web", WEB));
	CHECK(authz_string_match("*web", "web")); /* a suffix may be the whole value */
	CHECK(!authz_string_match("*/sa/web", API));
	CHECK(authz_string_match("cluster.local/ns/ns1/*", API));
	CHECK(authz_string_match("ns*", "ns"));
	CHECK(!authz_string_match("cluster.local/ns/ns1/*", DB));
	CHECK(authz_string_match("a*b", "a*b")); /* a * in the middle is literal */
	CHECK(!authz_string_match("a*b", "axb"));
	CHECK(authz_string_match(WEB, WEB));
	CHECK(!authz_string_match(WEB, WEB "x"));
}

TEST(authz_wildcards_in_policies)
{
	struct mesh_config *c = load(
		AP("p", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{from: [{source: "
		"{principals: ['cluster.local/ns/ns1/*', '*/sa/db']}}]}, {from: [{source: "
		"{namespaces: ['prod-*']}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, DB, "10.0.1.1", "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, "cluster.local/ns/prod-eu/sa/x", NULL, "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(d.rule, 2);
	CHECK_INT(th_decide(c, "cluster.local/ns/ns3/sa/x", NULL, "10.0.0.2", 80, &d), DENY);
	mesh_config_unref(c);
}

TEST(authz_service_accounts_bare_means_policy_namespace)
{
	struct mesh_config *c = load(
		AP("p", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{from: [{source: "
		"{serviceAccounts: [web, ns2/db]}}]}]}\n"
		AP("q", "ns1")
		"spec: {selector: {matchLabels: {app: web}}, rules: [{from: [{source: "
		"{serviceAccounts: [db]}}]}, {from: [{source: {notServiceAccounts: [ns1/api]}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, DB, NULL, "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, "cluster.local/ns/ns3/sa/web", NULL, "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, NULL, NULL, "10.0.0.2", 80, &d), DENY);
	/* bare "db" in ns1 means ns1/db, so ns2/db only passes through rule 2 */
	CHECK_INT(th_decide(c, DB, NULL, "10.0.0.1", 80, &d), ALLOW);
	CHECK_INT(d.rule, 2);
	CHECK_INT(th_decide(c, API, NULL, "10.0.0.1", 80, &d), DENY);
	mesh_config_unref(c);
}

TEST(authz_ip_blocks_v4_and_v6_bare_address_is_host)
{
	struct mesh_config *c = load(
		AP("p", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{from: [{source: "
		"{ipBlocks: ['10.0.0.0/24', '10.0.1.1', 'fd00::/64', 'fd01::9'], notIpBlocks: ['10.0.0.7']}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, NULL, "10.0.0.1", "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, WEB, "10.0.0.200", "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, NULL, "10.0.0.7", "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, NULL, "10.0.1.1", "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, NULL, "10.0.1.2", "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, NULL, "fd00::1234", "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, NULL, "fd00:0:0:1::1", "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, NULL, "fd01::9", "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, NULL, "fd01::a", "10.0.0.2", 80, &d), DENY);
	CHECK_CONTAINS(d.why, "plaintext peer from fd01::a");
	mesh_config_unref(c);
}

TEST(authz_unknown_source_ip_fails_closed)
{
	struct mesh_config *c = load(
		AP("allow-net", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{from: [{source: {notIpBlocks: [192.0.2.0/24]}}]}]}\n"
		AP("deny-net", "ns1")
		"spec: {selector: {matchLabels: {app: web}}, action: DENY, rules: [{when: [{key: source.ip, values: [192.0.2.0/24]}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, API, NULL, "10.0.0.1", 80, &d), DENY);
	CHECK_INT(d.reason, MOAT_REASON_POLICY_DENY);
	CHECK_INT(th_decide(c, API, "10.0.0.2", "10.0.0.1", 80, &d), ALLOW);
	mesh_config_unref(c);
}

TEST(authz_when_keys_l4)
{
	struct mesh_config *c = load(
		AP("p", "ns1")
		"spec:\n  selector: {matchLabels: {app: api}}\n  rules:\n"
		"  - when: [{key: source.namespace, values: [ns2]}]\n"
		"  - when: [{key: source.principal, values: ['spiffe://" WEB "']}]\n"
		"  - when: [{key: destination.port, values: ['9000']}]\n"
		"  - when: [{key: destination.ip, values: ['fd00::2']}]\n"
		"  - when: [{key: source.ip, values: [172.16.0.0/12], notValues: [172.16.0.1]}]\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, DB, NULL, "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(d.rule, 1);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(d.rule, 2);
	CHECK_INT(th_decide(c, API, "10.0.0.9", "10.0.0.2", 9000, &d), ALLOW);
	CHECK_INT(d.rule, 3);
	CHECK_INT(th_decide(c, NULL, "172.16.5.5", "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(d.rule, 5);
	CHECK_INT(th_decide(c, NULL, "172.16.0.1", "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, API, "10.0.0.9", "10.0.0.2", 80, &d), DENY);
	mesh_config_unref(c);
	c = load(AP("p6", "ns1")
		 "spec: {selector: {matchLabels: {app: v6}}, rules: [{when: [{key: destination.ip, values: ['fd00::/120']}]}]}\n");
	REQUIRE(c);
	CHECK_INT(th_decide(c, NULL, NULL, "fd00::2", 80, &d), ALLOW);
	mesh_config_unref(c);
}

TEST(authz_allow_rule_with_l7_fields_is_dropped)
{
	struct mesh_config *c = load(
		AP("p", "ns1")
		"spec:\n  selector: {matchLabels: {app: api}}\n  rules:\n"
		"  - from: [{source: {principals: [" WEB "]}}]\n"
		"    to: [{operation: {methods: [GET], ports: ['8080']}}]\n"
		"  - from: [{source: {principals: [" DB "]}}]\n");
	struct authz_decision d;
	REQUIRE(c);
	REQUIRE(c->n_policies == 1 && c->policies[0].n_rules == 2);
	CHECK(c->policies[0].rules[0].dropped);
	CHECK(c->policies[0].rules[0].had_l7);
	CHECK(!c->policies[0].rules[1].dropped);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 8080, &d), DENY);
	CHECK_INT(d.reason, MOAT_REASON_NO_ALLOW);
	CHECK_INT(th_decide(c, DB, NULL, "10.0.0.2", 8080, &d), ALLOW);
	CHECK_INT(d.rule, 2);
	mesh_config_unref(c);
}

TEST(authz_deny_rule_with_l7_fields_is_enforced_without_them)
{
	/* Deliberate difference 1: fail closed where ztunnel would drop the DENY rule. */
	struct mesh_config *c = load(
		AP("deny-post", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, action: DENY, rules: [{to: "
		"[{operation: {methods: [POST], paths: [/admin], ports: ['8080']}}]}]}\n"
		AP("deny-hdr", "ns1")
		"spec: {selector: {matchLabels: {app: web}}, action: DENY, rules: [{from: "
		"[{source: {principals: [" DB "], requestPrincipals: ['*']}}], "
		"when: [{key: 'request.headers[x-token]', values: [secret]}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 8080, &d), DENY);
	CHECK_STR(d.policy ? d.policy->id_name : "", "ns1/deny-post");
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 9090, &d), ALLOW);
	CHECK_INT(th_decide(c, DB, NULL, "10.0.0.1", 80, &d), DENY);
	CHECK_INT(th_decide(c, API, NULL, "10.0.0.1", 80, &d), ALLOW);
	mesh_config_unref(c);
	c = load(AP("deny-l7-only", "ns1")
		 "spec: {action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}\n");
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 1234, &d), DENY);
	CHECK_INT(th_decide(c, NULL, NULL, "10.0.0.1", 80, &d), DENY);
	mesh_config_unref(c);
}

TEST(authz_named_ports_fail_closed)
{
	struct mesh_config *c = load(
		AP("allow-named", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{to: [{operation: {ports: [http, '8080']}}]}]}\n"
		AP("allow-only-named", "ns1")
		"spec: {selector: {matchLabels: {app: web}}, rules: [{to: [{operation: {ports: [http]}}]}, "
		"{to: [{operation: {notPorts: [grpc]}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 8080, &d), ALLOW);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, API, NULL, "10.0.0.1", 80, &d), DENY);
	CHECK_INT(th_decide(c, API, NULL, "10.0.0.1", 1, &d), DENY);
	mesh_config_unref(c);
	c = load(AP("deny-named", "ns1")
		 "spec: {selector: {matchLabels: {app: api}}, action: DENY, rules: [{to: [{operation: {ports: [http]}}]}]}\n"
		 AP("deny-not-named", "ns1")
		 "spec: {selector: {matchLabels: {app: web}}, action: DENY, rules: [{to: [{operation: {notPorts: [http, '22']}}]}]}\n");
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 1, &d), DENY);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 65535, &d), DENY);
	CHECK_INT(th_decide(c, API, NULL, "10.0.0.1", 22, &d), ALLOW);
	CHECK_INT(th_decide(c, API, NULL, "10.0.0.1", 80, &d), DENY);
	mesh_config_unref(c);
}

TEST(authz_spiffe_prefixed_principal_is_the_same_principal)
{
	/* Deliberate difference 3. */
	struct mesh_config *c = load(
		AP("p", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{from: [{source: "
		"{principals: ['spiffe://" WEB "']}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_STR(c->policies[0].rules[0].from[0].principals.items[0], WEB);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(th_decide(c, "spiffe://" WEB, NULL, "10.0.0.2", 80, &d), ALLOW);
	CHECK_CONTAINS(d.why, "principal " WEB);
	CHECK(!strstr(d.why, "spiffe://"));
	CHECK_INT(th_decide(c, API, NULL, "10.0.0.2", 80, &d), DENY);
	mesh_config_unref(c);
}

TEST(authz_trust_domain_is_part_of_the_principal)
{
	struct mesh_config *c = load(
		AP("p", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{from: [{source: "
		"{principals: ['other.example/ns/ns1/sa/web']}}]}, {from: [{source: {namespaces: [ns2]}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 80, &d), DENY);
	CHECK_INT(th_decide(c, "other.example/ns/ns1/sa/web", NULL, "10.0.0.2", 80, &d), ALLOW);
	/* namespaces come from the principal whatever its trust domain */
	CHECK_INT(th_decide(c, "other.example/ns/ns2/sa/x", NULL, "10.0.0.2", 80, &d), ALLOW);
	mesh_config_unref(c);
}

TEST(authz_dry_run_policies_are_evaluated_but_never_decide)
{
	struct mesh_config *c = load(
		APA("dry-deny", "ns1")
		"spec: {action: DENY, rules: [{from: [{source: {principals: [" WEB "]}}]}]}\n"
		APA("dry-allow", "ns1")
		"spec: {rules: [{from: [{source: {principals: [" DB "]}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK(c->policies[0].dry_run);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(d.reason, MOAT_REASON_ALLOWED); /* a dry-run ALLOW does not count as applying */
	REQUIRE(d.n_dry_run == 2);
	CHECK_STR(d.dry_run[0].policy->id_name, "ns1/dry-deny");
	CHECK(d.dry_run[0].matched);
	CHECK_INT(d.dry_run[0].rule, 1);
	CHECK_INT(d.dry_run[0].would, DENY);
	CHECK(!d.dry_run[1].matched);
	CHECK_INT(d.dry_run[1].would, DENY);
	mesh_config_unref(c);
}

TEST(authz_audit_and_custom_never_affect_the_decision)
{
	struct mesh_config *c = load(
		AP("audit", "ns1") "spec: {action: AUDIT, rules: [{}]}\n"
		AP("ext", "ns1") "spec: {action: CUSTOM, provider: {name: opa}, rules: [{}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK(c->policies[0].unsupported && c->policies[1].unsupported);
	CHECK_INT(th_decide(c, WEB, NULL, "10.0.0.2", 80, &d), ALLOW);
	CHECK_INT(d.reason, MOAT_REASON_ALLOWED);
	mesh_config_unref(c);
}

#define SE(name, ns, addr)                                                                  \
	"---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"                     \
	"metadata: {name: " name ", namespace: " ns "}\n"                                   \
	"spec: {hosts: [" name ".example.com], addresses: ['" addr "'], "                   \
	"ports: [{number: 443, name: https, protocol: TLS}], resolution: DNS}\n"

TEST(authz_egress_policies_target_service_entries)
{
	struct mesh_config *c = load(
		SE("ext", "ns1", "203.0.113.5") SE("other", "ns1", "203.0.113.6")
		SE("far", "ns2", "203.0.113.7")
		AP("web-to-ext", "ns1")
		"spec: {targetRefs: [{group: networking.istio.io, kind: ServiceEntry, name: ext}], "
		"rules: [{from: [{source: {principals: [" WEB "]}}], to: [{operation: {ports: ['443']}}]}]}\n"
		AP("svc-ref", "ns1")
		"spec: {targetRef: {kind: Service, name: other}, rules: [{from: [{source: {principals: [nobody]}}]}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "203.0.113.5", 443, &d), ALLOW);
	CHECK_STR(d.policy ? d.policy->id_name : "", "ns1/web-to-ext");
	CHECK_INT(th_decide(c, API, "10.0.0.2", "203.0.113.5", 443, &d), DENY);
	CHECK_CONTAINS(d.why, "allow policies for ServiceEntry ns1/ext: ns1/web-to-ext");
	CHECK_INT(th_decide(c, WEB, "10.0.0.1", "203.0.113.5", 80, &d), DENY);
	/* a targetRef to a Service is a waypoint feature: ignored, nothing applies */
	CHECK_INT(th_decide(c, API, NULL, "203.0.113.6", 443, &d), ALLOW);
	/* targetRef policies never apply to workloads */
	CHECK_INT(th_decide(c, API, NULL, "10.0.0.1", 443, &d), ALLOW);
	/* the reference's namespace defaults to the policy's: ns2/far is not named */
	CHECK_INT(th_decide(c, API, NULL, "203.0.113.7", 443, &d), ALLOW);
	mesh_config_unref(c);
}

TEST(authz_namespace_allow_nothing_also_blocks_egress)
{
	/* Seed 000, Diagram 11: a ServiceEntry alone is blocked by the default deny. */
	struct mesh_config *c = load(SE("ext", "ns1", "203.0.113.5") SE("far", "ns2", "203.0.113.7")
				     AP("allow-nothing", "ns1") "spec: {}\n"
				     AP("sel", "ns1") "spec: {selector: {matchLabels: {app: x}}}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, WEB, NULL, "203.0.113.5", 443, &d), DENY);
	CHECK_CONTAINS(d.why, "allow policies for ServiceEntry ns1/ext: ns1/allow-nothing)");
	CHECK_INT(th_decide(c, WEB, NULL, "203.0.113.7", 443, &d), ALLOW);
	mesh_config_unref(c);
}

TEST(authz_decision_json_contract)
{
	struct mesh_config *c = load(AP("allow-web", "ns1")
				     "spec: {selector: {matchLabels: {app: api}}, rules: [{from: "
				     "[{source: {principals: [" WEB "]}}]}]}\n");
	struct authz_decision d;
	struct sbuf b;
	REQUIRE(c);
	sbuf_init(&b);
	th_decide(c, WEB, "10.0.0.1", "10.0.0.2", 80, &d);
	authz_decision_json(&d, &b);
	CHECK_STR(b.s, "{\"verdict\":\"ALLOW\",\"policy\":\"ns1/allow-web\",\"rule\":1,"
		       "\"reason\":\"ALLOW policy ns1/allow-web rule 1 matched for principal " WEB
		       " from 10.0.0.1\"}");
	sbuf_free(&b);
	th_decide(c, DB, NULL, "10.0.0.2", 80, &d);
	authz_decision_json(&d, &b);
	CHECK_STR(b.s, "{\"verdict\":\"DENY\",\"policy\":null,\"rule\":null,\"reason\":\"no ALLOW "
		       "policy matched for principal " DB " (allow policies for ns1/api: "
		       "ns1/allow-web)\"}");
	sbuf_free(&b);
	mesh_config_unref(c);
}

TEST(authz_decision_text_names_verdict_policy_and_why)
{
	struct mesh_config *c = load(AP("deny-db", "ns1")
				     "spec: {action: DENY, rules: [{from: [{source: {namespaces: [ns2]}}]}]}\n");
	struct authz_decision d;
	struct authz_target t = {.kind = AUTHZ_TARGET_WORKLOAD};
	struct authz_peer p = {.principal = DB};
	struct sbuf b;
	REQUIRE(c);
	addr_parse("10.0.0.2", &t.ip);
	t.port = 8080;
	t.workload = mc_workload_by_addr(c, &t.ip);
	authz_evaluate(c, &t, &p, &d);
	sbuf_init(&b);
	authz_decision_text(&d, &t, &p, &b);
	CHECK_CONTAINS(b.s, "DENY  principal " DB " -> 10.0.0.2:8080 (ns1/api)");
	CHECK_CONTAINS(b.s, "policy: ns1/deny-db rule 1 (test.yaml:");
	CHECK_CONTAINS(b.s, "why: DENY policy ns1/deny-db rule 1 matched for principal " DB);
	sbuf_free(&b);
	mesh_config_unref(c);
}

static bool has_port(const uint16_t *p, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] == port)
			return true;
	return false;
}

TEST(authz_ports_of_interest_and_source_ip_dependence)
{
	struct mesh_config *c = load(
		AP("p", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{to: [{operation: "
		"{ports: ['8080', '8443'], notPorts: ['9090']}}], when: [{key: destination.port, values: ['7070']}]}]}\n"
		AP("q", "ns1")
		"spec: {selector: {matchLabels: {app: web}}, rules: [{to: [{operation: {ports: ['1111']}}]}, "
		"{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]}\n"
		AP("dropped", "ns1")
		"spec: {selector: {matchLabels: {app: api}}, rules: [{to: [{operation: {ports: ['2222'], methods: [GET]}}]}]}\n");
	REQUIRE(c);
	struct authz_target t = {.kind = AUTHZ_TARGET_WORKLOAD};
	addr_parse("10.0.0.2", &t.ip);
	t.workload = mc_workload_by_addr(c, &t.ip);
	uint16_t *ports = NULL;
	size_t n = authz_ports_of_interest(c, &t, &ports);
	CHECK_INT(n, 4);
	CHECK(has_port(ports, n, 7070) && has_port(ports, n, 8080) && has_port(ports, n, 8443) &&
	      has_port(ports, n, 9090));
	CHECK(!has_port(ports, n, 1111) && !has_port(ports, n, 2222));
	for (size_t i = 1; i < n; i++)
		CHECK(ports[i - 1] < ports[i]);
	free(ports);
	CHECK(!authz_depends_on_source_ip(c, &t));
	addr_parse("10.0.0.1", &t.ip);
	t.workload = mc_workload_by_addr(c, &t.ip);
	CHECK(authz_depends_on_source_ip(c, &t));
	n = authz_ports_of_interest(c, &t, &ports);
	CHECK_INT(n, 1);
	free(ports);
	mesh_config_unref(c);
}

/* The verdict cache asks per source: ports named only by rules that never match this
 * source leave every port's verdict equal to port 0's, so they are left out. */
TEST(authz_evaluate_on_empty_config_allows)
{
	struct mesh_config *c = mesh_config_empty();
	REQUIRE(c);
	struct authz_target t = {.kind = AUTHZ_TARGET_SERVICE};
	struct authz_peer p = {0};
	struct authz_decision d;
	authz_evaluate(c, &t, &p, &d);
	CHECK_INT(d.action, ALLOW);
	CHECK_STR(c->mesh.trust_domain, "cluster.local");
	CHECK_STR(c->mesh.root_namespace, "istio-system");
	CHECK_INT(c->n_policies, 0);
	mesh_config_unref(c);
}

TEST(authz_explain_input_errors_and_outputs)
{
	struct mesh_config *c = load(AP("allow-web", "ns1")
				     "spec: {selector: {matchLabels: {app: api}}, rules: [{from: "
				     "[{source: {principals: [" WEB "]}}]}]}\n");
	struct sbuf b;
	REQUIRE(c);
	sbuf_init(&b);
	CHECK_INT(authz_explain(c, "web", NULL, "10.0.0.2:80", false, &b), 2);
	CHECK_CONTAINS(b.s, "--from \"web\": expected spiffe://");
	sbuf_free(&b);
	CHECK_INT(authz_explain(c, "plaintext", NULL, "10.0.0.2", false, &b), 2);
	CHECK_CONTAINS(b.s, "--to \"10.0.0.2\": expected IP:PORT");
	sbuf_free(&b);
	CHECK_INT(authz_explain(c, "plaintext", "nope", "10.0.0.2:80", false, &b), 2);
	CHECK_CONTAINS(b.s, "--src-ip \"nope\"");
	sbuf_free(&b);
	CHECK_INT(authz_explain(c, "plaintext", NULL, "10.9.9.9:80", false, &b), 2);
	CHECK_CONTAINS(b.s, "no workload or ServiceEntry has address 10.9.9.9");
	sbuf_free(&b);
	CHECK_INT(authz_explain(c, "spiffe://" WEB, NULL, "10.0.0.2:80", true, &b), 0);
	/* the source address is the one WorkloadEntry with that identity */
	CHECK_STR(b.s, "{\"verdict\":\"ALLOW\",\"policy\":\"ns1/allow-web\",\"rule\":1,"
		       "\"reason\":\"ALLOW policy ns1/allow-web rule 1 matched for principal " WEB
		       " from 10.0.0.1\"}\n");
	sbuf_free(&b);
	CHECK_INT(authz_explain(c, "spiffe://" DB, "10.0.1.1", "10.0.0.2:80", false, &b), 1);
	CHECK_CONTAINS(b.s, "DENY  principal " DB " from 10.0.1.1 -> 10.0.0.2:80 (ns1/api)");
	CHECK_CONTAINS(b.s, "ns1/allow-web (test.yaml:");
	CHECK_CONTAINS(b.s, "rule 1: from principals [" WEB "]");
	sbuf_free(&b);
	mesh_config_unref(c);
}
