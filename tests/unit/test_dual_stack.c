/* Dual-stack workloads: a WorkloadEntry's other addresses (annotation moat.dev/addresses),
 * strict parsing with file:line, the address index, and the registry: every address leads to
 * the same workload, the source address follows the family dialed, and a cached verdict is
 * only made when it holds for every address pair. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "policy/authz.h"
#include "state/agent.h"
#include "state/verdicts.h"
#include "test.h"

struct mesh_config *th_load(const char *yaml);
bool th_load_fails(const char *yaml, struct mc_findings *f);
const struct mc_finding *th_find(const struct mc_findings *f, enum mc_severity sev,
				 const char *field, const char *msg);
void th_dump(const struct mc_findings *f);

#define WE_HDR "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
/* A WorkloadEntry named NAME with spec.address ADDR and the annotation value ANN (line 7). */
#define WE(name, addr, ann)                                                                \
	WE_HDR "metadata:\n  name: " name "\n  namespace: ns\n  annotations:\n"            \
	       "    moat.dev/addresses: \"" ann "\"\nspec: {address: " addr                 \
	       ", serviceAccount: " name ", labels: {app: " name "}}\n"

static struct moat_addr A(const char *s)
{
	struct moat_addr a;
	if (!addr_parse(s, &a))
		memset(&a, 0xee, sizeof(a));
	return a;
}

static bool expect_error(const char *yaml, int line, const char *msg)
{
	struct mc_findings f = {0};
	bool failed = th_load_fails(yaml, &f);
	const struct mc_finding *e = th_find(&f, MC_ERROR, NULL, msg);
	bool ok = failed && e && e->line == line && e->file && strcmp(e->file, "test.yaml") == 0 &&
		  e->field && strstr(e->field, "moat.dev/addresses");
	if (!ok) {
		fprintf(stderr, "    wanted error at line %d with \"%s\"; got:\n", line, msg);
		th_dump(&f);
	}
	mc_findings_free(&f);
	return ok;
}

TEST(workload_entry_annotation_gives_every_address)
{
	struct mesh_config *c = th_load(WE("web", "10.0.0.1", "10.0.0.1, fd00::1"));
	CHECK(c != NULL);
	if (!c)
		return;
	const struct mc_workload *w = &c->workloads[0];
	CHECK_INT(w->n_addrs, 2);
	CHECK(addr_eq(&w->addrs[0], &w->address));
	struct moat_addr v6 = A("fd00::1"), v4 = A("10.0.0.1"), other = A("fd00::2");
	CHECK(addr_eq(&w->addrs[1], &v6));
	CHECK(mc_workload_by_addr(c, &v6) == w);
	CHECK(mc_workload_by_addr(c, &v4) == w);
	CHECK(mc_workload_by_addr(c, &other) == NULL);
	CHECK(addr_eq(mc_workload_addr_like(w, &other), &v6));
	CHECK(addr_eq(mc_workload_addr_like(w, &v4), &v4));
	mesh_config_unref(c);
}

TEST(workload_entry_without_annotation_has_one_address)
{
	struct mesh_config *c = th_load(WE_HDR "metadata: {name: a}\nspec: {address: fd00::5}\n");
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_INT(c->workloads[0].n_addrs, 1);
	struct moat_addr v6 = A("fd00::5");
	CHECK(mc_workload_by_addr(c, &v6) == &c->workloads[0]);
	mesh_config_unref(c);
}

TEST(workload_addresses_annotation_errors_carry_file_and_line)
{
	CHECK(expect_error(WE("w", "10.0.0.1", "10.0.0.1,fd00::zz"), 7,
			   "\"fd00::zz\" is not a workload IP address"));
	CHECK(expect_error(WE("w", "10.0.0.1", "10.0.0.1,::1"), 7,
			   "\"::1\" is not a workload IP address"));
	CHECK(expect_error(WE("w", "10.0.0.1", "fd00::1"), 7,
			   "does not list spec.address 10.0.0.1"));
	CHECK(expect_error(WE("w", "10.0.0.1", "10.0.0.1,fd00::1,fd00::1"), 7,
			   "address fd00::1 is listed twice"));
	CHECK(expect_error(WE("w", "10.0.0.1", "10.0.0.1,10.0.0.1"), 7,
			   "address 10.0.0.1 is listed twice"));
	CHECK(expect_error(WE("w", "10.0.0.1", "10.0.0.1,,fd00::1"), 7, "an empty entry"));
	CHECK(expect_error(WE("w", "10.0.0.1", "10.0.0.1,fd00::1,fd00::2,fd00::3,fd00::4"), 7,
			   "more than 4 addresses"));
}

TEST(workload_addresses_must_be_unique_across_families)
{
	/* b's IPv6 address is a's: reported at b's document, naming a. */
	CHECK(expect_error(WE("a", "10.0.0.1", "10.0.0.1,fd00::1") "---\n"
			   WE("b", "10.0.0.2", "10.0.0.2,fd00::1"), 10,
			   "address fd00::1 is already used by WorkloadEntry ns/a (test.yaml:1)"));
}

/* ---- registry ---- */

#define DUAL_CFG                                                                            \
	WE("client", "10.0.0.1", "10.0.0.1,fd00::1") "---\n"                                 \
	WE("server", "10.0.0.2", "10.0.0.2,fd00::2")

/* The dual-stack client and server plus one AuthorizationPolicy on the server (RULES:
 * its spec after the selector). */
static struct mesh_config *load_with_policy(const char *rules)
{
	char *yaml = xasprintf("%s---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
			       "metadata: {name: p, namespace: ns}\nspec:\n  selector: {matchLabels: "
			       "{app: server}}\n%s", DUAL_CFG, rules);
	struct mesh_config *c = th_load(yaml);
	free(yaml);
	CHECK(c != NULL);
	return c;
}

/* The workload-pair verdict client -> server:8080 over all address pairs. */
static struct authz_decision decide(const struct mesh_config *c, bool *cacheable)
{
	const struct mc_workload *src = &c->workloads[0], *dst = &c->workloads[1];
	struct authz_target t = {.kind = AUTHZ_TARGET_WORKLOAD, .workload = dst, .port = 8080};
	struct authz_decision d;
	*cacheable = verdicts_decide_all_addrs(c, NULL, 0, "cluster.local/ns/ns/sa/client", src->addrs,
					    src->n_addrs, &t, dst->addrs, dst->n_addrs, &d);
	return d;
}

TEST(registry_caches_a_verdict_that_holds_for_every_address)
{
	struct mesh_config *c = load_with_policy(
		"  rules:\n  - from: [{source: {principals: [cluster.local/ns/ns/sa/client]}}]\n");
	if (!c)
		return;
	bool cacheable = false;
	struct authz_decision d = decide(c, &cacheable);
	CHECK(cacheable);
	CHECK_INT(d.action, MOAT_ACTION_ALLOW);
	mesh_config_unref(c);
}

TEST(registry_leaves_address_dependent_verdicts_to_moatd)
{
	/* ipBlocks names only the client's IPv4 address: ALLOW over IPv4, DENY over IPv6. One
	 * cached verdict per workload pair would be wrong for one family: none is cached. */
	struct mesh_config *c =
		load_with_policy("  rules:\n  - from: [{source: {ipBlocks: [10.0.0.1/32]}}]\n");
	if (!c)
		return;
	bool cacheable = true;
	decide(c, &cacheable);
	CHECK(!cacheable);
	/* The engine itself still decides each family right (what moatd does on a miss). */
	struct authz_target t = {.kind = AUTHZ_TARGET_WORKLOAD, .workload = &c->workloads[1],
				 .ip = A("fd00::2"), .port = 8080};
	struct authz_peer p6 = {.principal = "cluster.local/ns/ns/sa/client", .ip = A("fd00::1"),
				.has_ip = true};
	struct authz_decision d;
	authz_evaluate(c, &t, &p6, &d);
	CHECK_INT(d.action, MOAT_ACTION_DENY);
	struct authz_peer p4 = p6;
	p4.ip = A("10.0.0.1");
	t.ip = A("10.0.0.2");
	authz_evaluate(c, &t, &p4, &d);
	CHECK_INT(d.action, MOAT_ACTION_ALLOW);
	mesh_config_unref(c);
}

TEST(registry_leaves_destination_ip_dependent_verdicts_to_moatd)
{
	struct mesh_config *c = load_with_policy(
		"  action: DENY\n  rules:\n  - when: [{key: destination.ip, values: [fd00::2]}]\n");
	if (!c)
		return;
	bool cacheable = true;
	decide(c, &cacheable);
	CHECK(!cacheable);
	mesh_config_unref(c);
}

TEST(registry_finds_one_workload_by_each_of_its_addresses)
{
	struct mesh_config *c = th_load(DUAL_CFG);
	CHECK(c != NULL);
	if (!c)
		return;
	struct agent a;
	memset(&a, 0, sizeof(a));
	a.cfg = c;
	struct pod p;
	memset(&p, 0, sizeof(p));
	p.key = "ns/client";
	p.addrs[0] = A("10.0.0.1");
	p.addrs[1] = A("fd00::1");
	p.n_addrs = 2;
	p.addr = p.addrs[0];
	p.workload_id = intern_id(&a.workload_ids, p.key);
	a.pods = &p;
	struct moat_addr v4 = A("10.0.0.1"), v6 = A("fd00::1"), s4 = A("10.0.0.2"),
			 s6 = A("fd00::2");
	CHECK(agent_pod_by_addr(&a, &v6) == &p);
	CHECK(agent_pod_by_addr(&a, &v4) == &p);
	CHECK(agent_pod_by_addr(&a, &s6) == NULL);
	CHECK(addr_eq(pod_addr_like(&p, &s6), &v6));
	CHECK(addr_eq(pod_addr_like(&p, &s4), &v4));
	struct dest d4, d6;
	CHECK(agent_lookup_dest(&a, &s4, &d4) && d4.kind == DEST_WORKLOAD);
	CHECK(agent_lookup_dest(&a, &s6, &d6) && d6.kind == DEST_WORKLOAD);
	CHECK(d4.id == d6.id && d4.id != 0);
	CHECK_STR(d6.name, "ns/server");
	CHECK(agent_lookup_dest(&a, &v6, &d6) && d6.local == &p && d6.id == p.workload_id);
	intern_free(&a.workload_ids);
	mesh_config_unref(c);
}
