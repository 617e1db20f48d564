/* PeerAuthentication: scope (mesh -> namespace -> workload), UNSET inheritance, the oldest
 * policy at one level, port-level modes, and STRICT refusing plaintext before any policy. */
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "policy/authz.h"
#include "test.h"

struct mesh_config *th_load(const char *yaml);
enum moat_action th_decide(const struct mesh_config *c, const char *principal, const char *src_ip,
			   const char *dst, uint16_t port, struct authz_decision *d);

#define WE(name, ns, addr)                                                                 \
	"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"                         \
	"metadata: {name: " name ", namespace: " ns "}\n"                                   \
	"spec: {address: '" addr "', labels: {app: " name "}}\n---\n"
#define BASE WE("web", "ns1", "10.0.0.1") WE("api", "ns1", "10.0.0.2") WE("db", "ns2", "10.0.1.1")
#define PA(name, ns, extra)                                                                 \
	"---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"                 \
	"metadata: {name: " name ", namespace: " ns extra "}\n"

static struct mesh_config *load(const char *pas)
{
	char *yaml = xasprintf("%s%s", BASE, pas);
	struct mesh_config *c = th_load(yaml);
	free(yaml);
	return c;
}

static enum mc_mtls mode_of(const struct mesh_config *c, const char *addr, uint16_t port,
			    const char **decider)
{
	struct moat_addr a;
	const struct mc_peer_auth *pa = NULL;
	addr_parse(addr, &a);
	const struct mc_workload *w = mc_workload_by_addr(c, &a);
	if (!w)
		return MC_MTLS_UNSET;
	enum mc_mtls m = authz_mtls_mode(c, w, port, &pa);
	*decider = pa ? pa->id_name : "none";
	return m;
}

TEST(mtls_default_is_permissive)
{
	struct mesh_config *c = load("");
	const char *who;
	REQUIRE(c);
	CHECK_INT(mode_of(c, "10.0.0.1", 80, &who), MC_MTLS_PERMISSIVE);
	CHECK_STR(who, "none");
	mesh_config_unref(c);
}

TEST(mtls_mesh_namespace_workload_levels_and_unset_inherits)
{
	struct mesh_config *c = load(
		PA("mesh", "istio-system", "") "spec: {mtls: {mode: STRICT}}\n"
		PA("ns1-unset", "ns1", "") "spec: {mtls: {mode: UNSET}}\n"
		PA("ns2-permissive", "ns2", "") "spec: {mtls: {mode: PERMISSIVE}}\n"
		PA("api", "ns1", "") "spec: {selector: {matchLabels: {app: api}}, mtls: {mode: PERMISSIVE}}\n");
	const char *who;
	REQUIRE(c);
	CHECK_INT(mode_of(c, "10.0.0.1", 80, &who), MC_MTLS_STRICT); /* ns1 UNSET -> mesh */
	CHECK_STR(who, "istio-system/mesh");
	CHECK_INT(mode_of(c, "10.0.0.2", 80, &who), MC_MTLS_PERMISSIVE); /* workload level */
	CHECK_STR(who, "ns1/api");
	CHECK_INT(mode_of(c, "10.0.1.1", 80, &who), MC_MTLS_PERMISSIVE); /* namespace level */
	CHECK_STR(who, "ns2/ns2-permissive");
	mesh_config_unref(c);
}

TEST(mtls_port_level_first_then_workload_mode)
{
	struct mesh_config *c = load(
		PA("ns1", "ns1", "") "spec: {mtls: {mode: STRICT}}\n"
		PA("api", "ns1", "")
		"spec: {selector: {matchLabels: {app: api}}, portLevelMtls: {'8080': {mode: PERMISSIVE}, '9000': {mode: UNSET}}}\n");
	const char *who;
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(mode_of(c, "10.0.0.2", 8080, &who), MC_MTLS_PERMISSIVE);
	CHECK_STR(who, "ns1/api");
	CHECK_INT(mode_of(c, "10.0.0.2", 9000, &who), MC_MTLS_STRICT);
	CHECK_STR(who, "ns1/ns1");
	CHECK_INT(mode_of(c, "10.0.0.2", 80, &who), MC_MTLS_STRICT);
	CHECK_INT(th_decide(c, NULL, "10.0.0.9", "10.0.0.2", 8080, &d), MOAT_ACTION_ALLOW);
	CHECK_INT(th_decide(c, NULL, "10.0.0.9", "10.0.0.2", 80, &d), MOAT_ACTION_DENY);
	struct moat_addr a;
	addr_parse("10.0.0.2", &a);
	CHECK(authz_has_port_mtls(c, mc_workload_by_addr(c, &a)));
	addr_parse("10.0.0.1", &a);
	CHECK(!authz_has_port_mtls(c, mc_workload_by_addr(c, &a)));
	/* the port-level ports are ports of interest: the plaintext verdict depends on them */
	struct authz_target t = {.kind = AUTHZ_TARGET_WORKLOAD};
	addr_parse("10.0.0.2", &t.ip);
	t.workload = mc_workload_by_addr(c, &t.ip);
	uint16_t *ports = NULL;
	CHECK_INT(authz_ports_of_interest(c, &t, &ports), 2);
	free(ports);
	mesh_config_unref(c);
}

TEST(mtls_oldest_policy_wins_at_one_level)
{
	struct mesh_config *c = load(
		PA("newer", "ns1", ", creationTimestamp: '2024-05-02T00:00:00Z'")
		"spec: {mtls: {mode: PERMISSIVE}}\n"
		PA("older", "ns1", ", creationTimestamp: '2024-05-01T23:59:59+01:00'")
		"spec: {mtls: {mode: STRICT}}\n"
		PA("same-a", "ns2", ", creationTimestamp: '2024-01-01T00:00:00Z'")
		"spec: {mtls: {mode: PERMISSIVE}}\n"
		PA("same-b", "ns2", ", creationTimestamp: '2024-01-01T00:00:00Z'")
		"spec: {mtls: {mode: STRICT}}\n");
	const char *who;
	REQUIRE(c);
	CHECK_INT(mode_of(c, "10.0.0.1", 80, &who), MC_MTLS_STRICT);
	CHECK_STR(who, "ns1/older");
	/* equal timestamps: load order decides */
	CHECK_INT(mode_of(c, "10.0.1.1", 80, &who), MC_MTLS_PERMISSIVE);
	CHECK_STR(who, "ns2/same-a");
	mesh_config_unref(c);
}

TEST(mtls_selector_policy_in_root_namespace_is_ignored)
{
	struct mesh_config *c = load(
		PA("root-sel", "istio-system", "")
		"spec: {selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}\n");
	const char *who;
	REQUIRE(c);
	CHECK_INT(mode_of(c, "10.0.0.1", 80, &who), MC_MTLS_PERMISSIVE);
	mesh_config_unref(c);
}

TEST(mtls_strict_refuses_plaintext_before_any_policy)
{
	struct mesh_config *c = load(
		PA("ns1-strict", "ns1", "") "spec: {mtls: {mode: STRICT}}\n"
		"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		"metadata: {name: allow-all, namespace: ns1}\nspec: {rules: [{}]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, NULL, "10.0.1.1", "10.0.0.1", 80, &d), MOAT_ACTION_DENY);
	CHECK_INT(d.reason, MOAT_REASON_STRICT_PLAIN);
	CHECK(d.peer_auth && strcmp(d.peer_auth->id_name, "ns1/ns1-strict") == 0);
	CHECK_STR(d.why, "PeerAuthentication ns1/ns1-strict is STRICT: plaintext refused from "
			 "10.0.1.1");
	struct sbuf b;
	sbuf_init(&b);
	authz_decision_json(&d, &b);
	CHECK_STR(b.s, "{\"verdict\":\"DENY\",\"policy\":\"ns1/ns1-strict\",\"rule\":null,"
		       "\"reason\":\"PeerAuthentication ns1/ns1-strict is STRICT: plaintext "
		       "refused from 10.0.1.1\"}");
	sbuf_free(&b);
	/* mutual TLS peers go on to the policies */
	CHECK_INT(th_decide(c, "cluster.local/ns/ns2/sa/default", "10.0.1.1", "10.0.0.1", 80, &d),
		  MOAT_ACTION_ALLOW);
	/* PERMISSIVE elsewhere: plaintext is authorized as no identity */
	CHECK_INT(th_decide(c, NULL, "10.0.0.1", "10.0.1.1", 80, &d), MOAT_ACTION_ALLOW);
	mesh_config_unref(c);
}

TEST(mtls_disable_is_not_strict)
{
	struct mesh_config *c = load(PA("mesh", "istio-system", "") "spec: {mtls: {mode: STRICT}}\n"
				     PA("off", "ns1", "") "spec: {mtls: {mode: DISABLE}}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, NULL, NULL, "10.0.0.1", 80, &d), MOAT_ACTION_ALLOW);
	CHECK_INT(th_decide(c, NULL, NULL, "10.0.1.1", 80, &d), MOAT_ACTION_DENY);
	mesh_config_unref(c);
}

TEST(mtls_strict_does_not_apply_to_service_entries)
{
	struct mesh_config *c = load(
		PA("mesh", "istio-system", "") "spec: {mtls: {mode: STRICT}}\n"
		"---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
		"metadata: {name: ext, namespace: ns1}\nspec: {hosts: [x.example.com], addresses: [203.0.113.1]}\n");
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(th_decide(c, NULL, NULL, "203.0.113.1", 443, &d), MOAT_ACTION_ALLOW);
	mesh_config_unref(c);
}
