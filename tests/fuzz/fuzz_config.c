/* Fuzz target: the configuration loader, YAML -> validated snapshot -> policy decisions
 * (agent/config: mesh_config_load_texts, the buffer form of mesh_config_load_dir; then
 * agent/policy: authz_evaluate and friends over what was loaded, as the agent's verdict sync
 * and `moatctl explain` use it, and authz_explain itself).
 * Input: one YAML file (several documents allowed).
 * Properties: a load either yields a snapshot and no error findings, or no snapshot and at
 * least one error with its place; every decision over a snapshot is ALLOW or DENY with a
 * reason. */
#include "fuzz.h"

#include "config/config.h"
#include "identity/identity.h"
#include "policy/authz.h"

#define MAX_TARGETS 6 /* bounds the work per input: decisions grow as targets x peers */
#define MAX_PEERS 4

static void decide(const struct mesh_config *c, const struct authz_target *t,
		   const struct authz_peer *p)
{
	struct authz_decision d;
	authz_evaluate(c, t, p, &d);
	FUZZ_ASSERT(d.action == MOAT_ACTION_ALLOW || d.action == MOAT_ACTION_DENY, "action %d",
		    d.action);
	FUZZ_ASSERT(d.why[0], "decision without a reason");
	struct sbuf out;
	sbuf_init(&out);
	authz_decision_json(&d, &out);
	authz_decision_text(&d, t, p, &out);
	sbuf_free(&out);
}

static void peers_of(const struct mesh_config *c, struct authz_peer *peers, size_t *n)
{
	*n = 0;
	peers[(*n)++] = (struct authz_peer){0}; /* plaintext, address unknown */
	for (size_t i = 0; i < c->n_workloads && *n < MAX_PEERS; i++) {
		const struct mc_workload *w = &c->workloads[i];
		peers[(*n)++] = (struct authz_peer){
			.principal = spiffe_principal(w->spiffe_id),
			.ip = w->address,
			.has_ip = true,
		};
	}
}

static void evaluate_target(const struct mesh_config *c, struct authz_target *t,
			    const struct authz_peer *peers, size_t n_peers)
{
	uint16_t *ports = NULL;
	size_t n_ports = authz_ports_of_interest(c, t, &ports);
	(void)authz_depends_on_source_ip(c, t);
	for (size_t k = 0; k <= n_ports && k < 4; k++) {
		t->port = k < n_ports ? ports[k] : 0;
		for (size_t i = 0; i < n_peers; i++)
			decide(c, t, &peers[i]);
	}
	free(ports);
}

static void exercise(const struct mesh_config *c)
{
	struct authz_peer peers[MAX_PEERS];
	size_t n_peers;
	peers_of(c, peers, &n_peers);
	for (size_t i = 0; i < c->n_workloads && i < MAX_TARGETS; i++) {
		const struct mc_workload *w = &c->workloads[i];
		struct authz_target t = {.kind = AUTHZ_TARGET_WORKLOAD, .workload = w,
					 .ip = w->address};
		(void)authz_mtls_mode(c, w, 0, NULL);
		(void)authz_has_port_mtls(c, w);
		evaluate_target(c, &t, peers, n_peers);
	}
	for (size_t i = 0; i < c->n_services && i < MAX_TARGETS; i++) {
		const struct mc_service_entry *se = &c->services[i];
		struct authz_target t = {.kind = AUTHZ_TARGET_SERVICE, .service = se};
		if (se->n_addresses)
			t.ip = se->addresses[0].addr;
		evaluate_target(c, &t, peers, n_peers);
	}
}

/* `moatctl explain` over the snapshot: each of the first workloads asks for the next one. */
static void explain(const struct mesh_config *c)
{
	for (size_t i = 0; i + 1 < c->n_workloads && i < MAX_TARGETS; i++) {
		const struct mc_workload *src = &c->workloads[i], *dst = &c->workloads[i + 1];
		char to[ADDR_STRLEN + 8], src_ip[ADDR_STRLEN];
		uint16_t port = dst->n_ports ? dst->ports[0].number : 80;
		addr_port_str(&dst->address, port ? port : 80, to, sizeof(to));
		addr_str(&src->address, src_ip, sizeof(src_ip));
		for (int json = 0; json < 2; json++) {
			struct sbuf out;
			sbuf_init(&out);
			int rc = authz_explain(c, src->spiffe_id, json ? "" : src_ip, to, json, &out);
			FUZZ_ASSERT(rc >= 0 && rc <= 2 && out.len, "explain %s -> %s: %d", src_ip, to,
				    rc);
			sbuf_free(&out);
		}
	}
}

static void check_findings(const struct mc_findings *f, bool loaded)
{
	char line[2048];
	for (size_t i = 0; i < f->n; i++) {
		mc_finding_str(&f->items[i], line, sizeof(line));
		FUZZ_ASSERT(f->items[i].message && f->items[i].message[0], "finding %zu empty", i);
		FUZZ_ASSERT(f->items[i].file, "finding without a file: %s", line);
	}
	size_t errors = mc_findings_count(f, MC_ERROR);
	FUZZ_ASSERT(loaded ? errors == 0 : errors > 0, "loaded=%d with %zu errors", loaded,
		    errors);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstr(data, size);
	const char *names[] = {"fuzz.yaml"};
	const char *texts[] = {text};
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	int rc = mesh_config_load_texts(names, texts, 1, &c, &f);
	if (c)
		authz_lint_loaded(c, &f); /* as moatd and moatctl lint do */
	FUZZ_ASSERT((rc == 0) == (c != NULL), "rc %d with snapshot %p", rc, (void *)c);
	check_findings(&f, rc == 0);
	if (c) {
		exercise(c);
		explain(c);
		mesh_config_unref(c);
	}
	mc_findings_free(&f);
	free(text);
	return 0;
}
