/* The example configurations of deploy/examples load cleanly and give the seeds' verdicts:
 * seed 000 (agensys: hub and spoke, egress per agent) and seed 002 (bookstore, and its
 * service-account mismatch). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config.h"
#include "policy/authz.h"
#include "test.h"

enum moat_action th_decide(const struct mesh_config *c, const char *principal, const char *src_ip,
			   const char *dst, uint16_t port, struct authz_decision *d);
void th_dump(const struct mc_findings *f);

#define ALLOW MOAT_ACTION_ALLOW
#define DENY MOAT_ACTION_DENY

/* deploy/examples/<name>, found from the working directory (tests run from the repo root). */
static struct mesh_config *load_example(const char *name, struct mc_findings *f)
{
	static const char *const roots[] = {".", "..", "../..", NULL};
	for (size_t i = 0; roots[i]; i++) {
		char *dir = xasprintf("%s/deploy/examples/%s", roots[i], name);
		struct stat st;
		struct mesh_config *c = NULL;
		if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
			if (mesh_config_load_dir(dir, &c, f) != 0)
				th_dump(f);
			else
				authz_lint_loaded(c, f); /* as moatd and moatctl lint do */
			free(dir);
			return c;
		}
		free(dir);
	}
	fprintf(stderr, "    deploy/examples/%s not found from the working directory\n", name);
	return NULL;
}

#define AG(sa) "cluster.local/ns/agensys-demo-1/sa/" sa
#define ORCH AG("orchestrator-agent")
#define PR AG("pr-agent")
#define SUM AG("summary-agent")
#define SCAN AG("mcp-code-scanning")
#define GH AG("github-mcp-server")
#define PR_IP "10.244.1.11"
#define SUM_IP "10.244.2.10"
#define SCAN_IP "10.244.2.11"
#define GH_IP "10.244.3.10"
#define OPENAI "203.0.113.10"
#define ANTHROPIC "203.0.113.11"
#define SEMGREP "203.0.113.12"
#define GHAPI "203.0.113.13"

TEST(examples_agensys_loads_with_only_the_default_deny_note)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load_example("agensys", &f);
	REQUIRE(c);
	CHECK_INT(mc_findings_count(&f, MC_ERROR), 0);
	CHECK_INT(mc_findings_count(&f, MC_WARNING), 0);
	CHECK_INT(mc_findings_count(&f, MC_NOTE), 1);
	CHECK_INT(c->n_workloads, 5);
	CHECK_INT(c->n_services, 4);
	CHECK_INT(c->n_policies, 9);
	CHECK_INT(c->mesh.outbound, MC_OUTBOUND_REGISTRY_ONLY);
	for (size_t i = 0; i < c->n_workloads; i++)
		CHECK(c->workloads[i].ambient);
	CHECK_STR(c->workloads[1].spiffe_id, "spiffe://" PR);
	mc_findings_free(&f);
	mesh_config_unref(c);
}

TEST(examples_agensys_hub_and_spoke)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load_example("agensys", &f);
	struct authz_decision d;
	REQUIRE(c);
	/* Diagram 6: the orchestrator reaches every agent and MCP server on its port */
	CHECK_INT(th_decide(c, ORCH, "10.244.1.10", PR_IP, 8080, &d), ALLOW);
	CHECK_STR(d.policy ? d.policy->id_name : "", "agensys-demo-1/allow-orchestrator-to-pr-agent");
	CHECK_INT(th_decide(c, ORCH, "10.244.1.10", SUM_IP, 8080, &d), ALLOW);
	CHECK_INT(th_decide(c, ORCH, "10.244.1.10", SCAN_IP, 3000, &d), ALLOW);
	CHECK_INT(th_decide(c, ORCH, "10.244.1.10", GH_IP, 3000, &d), ALLOW);
	CHECK_INT(th_decide(c, ORCH, "10.244.1.10", PR_IP, 3000, &d), DENY);
	/* Diagram 8: no lateral movement between agents */
	CHECK_INT(th_decide(c, PR, PR_IP, SUM_IP, 8080, &d), DENY);
	CHECK_INT(d.reason, MOAT_REASON_NO_ALLOW);
	CHECK_CONTAINS(d.why, "principal " PR);
	CHECK_INT(th_decide(c, PR, PR_IP, SCAN_IP, 3000, &d), DENY);
	CHECK_INT(th_decide(c, SUM, SUM_IP, PR_IP, 8080, &d), DENY);
	CHECK_INT(th_decide(c, SUM, SUM_IP, GH_IP, 3000, &d), DENY);
	CHECK_INT(th_decide(c, SCAN, SCAN_IP, "10.244.1.10", 8080, &d), DENY);
	/* STRICT: plaintext never reaches an agent */
	CHECK_INT(th_decide(c, NULL, "10.244.9.9", PR_IP, 8080, &d), DENY);
	CHECK_INT(d.reason, MOAT_REASON_STRICT_PLAIN);
	mc_findings_free(&f);
	mesh_config_unref(c);
}

TEST(examples_agensys_egress_per_agent)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load_example("agensys", &f);
	struct authz_decision d;
	REQUIRE(c);
	/* Diagram 7 */
	CHECK_INT(th_decide(c, PR, PR_IP, OPENAI, 443, &d), ALLOW);
	CHECK_STR(d.policy ? d.policy->id_name : "", "agensys-demo-1/allow-pr-agent-to-openai");
	CHECK_INT(th_decide(c, PR, PR_IP, ANTHROPIC, 443, &d), DENY);
	CHECK_CONTAINS(d.why, "ServiceEntry agensys-demo-1/anthropic-api");
	CHECK_CONTAINS(d.why, "allow-summary-agent-to-anthropic");
	CHECK_INT(th_decide(c, SUM, SUM_IP, ANTHROPIC, 443, &d), ALLOW);
	CHECK_INT(th_decide(c, SUM, SUM_IP, OPENAI, 443, &d), DENY);
	CHECK_INT(th_decide(c, SCAN, SCAN_IP, SEMGREP, 443, &d), ALLOW);
	CHECK_INT(th_decide(c, SCAN, SCAN_IP, GHAPI, 443, &d), DENY);
	CHECK_INT(th_decide(c, GH, GH_IP, GHAPI, 443, &d), ALLOW);
	CHECK_INT(th_decide(c, GH, GH_IP, SEMGREP, 443, &d), DENY);
	CHECK_INT(th_decide(c, ORCH, "10.244.1.10", OPENAI, 443, &d), DENY);
	mc_findings_free(&f);
	mesh_config_unref(c);
}

#define BS(ns, sa) "cluster.local/ns/" ns "/sa/" sa
#define GW BS("infra", "bookstore-gateway-istio")
#define UI BS("ecom", "ui-service")
#define ECOM BS("ecom", "ecom-service")
#define INV BS("inventory", "inventory-service")
#define KC BS("identity", "keycloak")
#define TESTPOD BS("default", "default")
#define UI_IP "10.244.1.21"
#define ECOM_IP "10.244.1.22"
#define INV_IP "10.244.2.20"
#define INVDB_IP "10.244.2.21"
#define ECOMDB_IP "10.244.2.22"
#define KC_IP "10.244.2.23"
#define KCDB_IP "10.244.2.24"

TEST(examples_bookstore_matrix)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load_example("bookstore", &f);
	struct authz_decision d;
	REQUIRE(c);
	CHECK_INT(mc_findings_count(&f, MC_WARNING), 0);
	CHECK_INT(c->n_workloads, 9);
	CHECK_INT(c->n_policies, 5);
	/* the gateway path */
	CHECK_INT(th_decide(c, GW, "10.244.1.20", UI_IP, 80, &d), ALLOW);
	CHECK_INT(th_decide(c, GW, "10.244.1.20", ECOM_IP, 8080, &d), ALLOW);
	CHECK_INT(th_decide(c, GW, "10.244.1.20", INV_IP, 8000, &d), ALLOW);
	CHECK_INT(th_decide(c, UI, UI_IP, ECOM_IP, 8080, &d), ALLOW);
	CHECK_INT(th_decide(c, UI, UI_IP, INV_IP, 8000, &d), ALLOW);
	/* checkout: ecom-service -> inventory-service over mTLS */
	CHECK_INT(th_decide(c, ECOM, ECOM_IP, INV_IP, 8000, &d), ALLOW);
	CHECK_STR(d.policy ? d.policy->id_name : "", "inventory/inventory-service-policy");
	/* databases locked to their owners */
	CHECK_INT(th_decide(c, ECOM, ECOM_IP, ECOMDB_IP, 5432, &d), ALLOW);
	CHECK_INT(th_decide(c, INV, INV_IP, INVDB_IP, 5432, &d), ALLOW);
	CHECK_INT(th_decide(c, KC, KC_IP, KCDB_IP, 5432, &d), ALLOW);
	CHECK_INT(th_decide(c, ECOM, ECOM_IP, INVDB_IP, 5432, &d), DENY);
	CHECK_INT(th_decide(c, ECOM, ECOM_IP, KCDB_IP, 5432, &d), DENY);
	CHECK_INT(th_decide(c, INV, INV_IP, ECOMDB_IP, 5432, &d), DENY);
	CHECK_INT(th_decide(c, GW, "10.244.1.20", KCDB_IP, 5432, &d), DENY);
	/* the unauthorized test pod (manual check 5) */
	CHECK_INT(th_decide(c, TESTPOD, "10.244.1.23", INV_IP, 8000, &d), DENY);
	CHECK_CONTAINS(d.why, "principal " TESTPOD " from 10.244.1.23");
	CHECK_INT(th_decide(c, TESTPOD, "10.244.1.23", ECOM_IP, 8080, &d), DENY);
	/* STRICT in ecom and inventory, not in identity */
	CHECK_INT(th_decide(c, NULL, "10.244.1.23", ECOM_IP, 8080, &d), DENY);
	CHECK_INT(d.reason, MOAT_REASON_STRICT_PLAIN);
	CHECK_CONTAINS(d.why, "PeerAuthentication ecom/ecom-mtls is STRICT");
	CHECK_INT(th_decide(c, NULL, "10.244.1.23", INV_IP, 8000, &d), DENY);
	CHECK_INT(th_decide(c, NULL, "10.244.1.23", KC_IP, 8080, &d), ALLOW);
	mc_findings_free(&f);
	mesh_config_unref(c);
}

TEST(examples_bookstore_service_account_mismatch_is_diagnosable)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load_example("bookstore-sa-mismatch", &f);
	struct authz_decision d;
	struct sbuf out;
	REQUIRE(c);
	CHECK_INT(mc_findings_count(&f, MC_WARNING), 0);
	/* ecom-service runs as `default`: the policy's principal never matches (Issue 8) */
	CHECK_INT(th_decide(c, BS("ecom", "default"), ECOM_IP, INV_IP, 8000, &d), DENY);
	CHECK_INT(d.reason, MOAT_REASON_NO_ALLOW);
	CHECK_STR(d.why, "no ALLOW policy matched for principal cluster.local/ns/ecom/sa/default "
			 "from 10.244.1.22 (allow policies for inventory/inventory-service: "
			 "inventory/inventory-service-policy)");
	/* the principal the policy expected would pass */
	CHECK_INT(th_decide(c, ECOM, ECOM_IP, INV_IP, 8000, &d), ALLOW);
	CHECK_INT(th_decide(c, GW, "10.244.1.20", INV_IP, 8000, &d), ALLOW);
	/* explain shows the presented principal, the policy and what it expected */
	sbuf_init(&out);
	CHECK_INT(authz_explain(c, "spiffe://cluster.local/ns/ecom/sa/default", NULL,
				INV_IP ":8000", false, &out),
		  1);
	CHECK_CONTAINS(out.s, "DENY  principal cluster.local/ns/ecom/sa/default from 10.244.1.22");
	CHECK_CONTAINS(out.s, "rule 2: from principals [cluster.local/ns/ecom/sa/ecom-service]");
	CHECK_CONTAINS(out.s, "hint: inventory/inventory-service-policy rule 2 expects service "
			      "account \"ecom-service\" in namespace ecom; the peer presents "
			      "\"default\" (if it should be allowed, check which serviceAccount "
			      "the workload runs as)");
	sbuf_free(&out);
	CHECK_INT(authz_explain(c, "spiffe://cluster.local/ns/ecom/sa/default", NULL,
				INV_IP ":8000", true, &out),
		  1);
	CHECK_CONTAINS(out.s, "{\"verdict\":\"DENY\",\"policy\":null,\"rule\":null,\"reason\":"
			      "\"no ALLOW policy matched for principal cluster.local/ns/ecom/sa/default");
	sbuf_free(&out);
	mc_findings_free(&f);
	mesh_config_unref(c);
}
