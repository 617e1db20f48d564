/* The registry's sync of the verdict map (state/registry.c + state/verdicts.c) through the
 * dataplane seam, against the in-memory dataplane: a full sync holds what the engine decides
 * for every (local pod, destination, port); one policy changed writes exactly the verdicts
 * whose decision changed; the epoch moves only when the map is rebuilt whole; a bad file
 * writes nothing; and a verdict missing from the map is never an allow. */
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "policy/authz.h"
#include "proxy/decide.h"
#include "state/verdicts.h"
#include "test.h"

/* ---- a mesh of 50 workloads (5 namespaces x 10) and 20 policies (4 per namespace) ---- */
#define NS_N 5
#define WL_PER_NS 10

/* The policy of namespace `ns` that admits callers of its app=w0 on 8080. */
static void yaml_w0_policy(struct sbuf *b, int ns, const char *from)
{
	sbuf_printf(b, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		       "metadata: {name: w0-allow, namespace: ns%d}\n"
		       "spec: {selector: {matchLabels: {app: w0}}, rules: [{from: [{source: "
		       "{namespaces: [%s]}}], to: [{operation: {ports: ['8080']}}]}]}\n",
		    ns, from);
}

/* changed_ns >= 0: that namespace's w0-allow also admits ns0 (the one-policy change). */
static char *mesh_yaml(int changed_ns)
{
	struct sbuf b = {0};
	for (int n = 0; n < NS_N; n++)
		for (int w = 0; w < WL_PER_NS; w++) {
			char ns[16], name[16], addr[48], sa[16], labels[64];
			snprintf(ns, sizeof(ns), "ns%d", n);
			snprintf(name, sizeof(name), "w%d", w);
			snprintf(addr, sizeof(addr), "10.%d.0.%d", n, w + 1);
			snprintf(sa, sizeof(sa), "sa%d", w % 3);
			snprintf(labels, sizeof(labels), "app: w%d, tier: t%d", w, w % 3);
			fx_yaml_workload(&b, ns, name, addr, sa, labels);
		}
	for (int n = 0; n < NS_N; n++) {
		char from[64];
		snprintf(from, sizeof(from), "ns%d, ns%d%s", n, (n + 1) % NS_N,
			 n == changed_ns ? ", ns0" : "");
		yaml_w0_policy(&b, n, from);
		sbuf_printf(&b, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
				"metadata: {name: deny-sa1, namespace: ns%d}\n"
				"spec: {action: DENY, rules: [{from: [{source: {principals: "
				"['cluster.local/ns/ns%d/sa/sa1']}}], to: [{operation: {ports: "
				"['9090']}}]}]}\n",
			    n, (n + 2) % NS_N);
		sbuf_printf(&b, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
				"metadata: {name: t1-own-ns, namespace: ns%d}\n"
				"spec: {selector: {matchLabels: {tier: t1}}, rules: [{from: [{source: "
				"{namespaces: [ns%d]}}]}]}\n",
			    n, n);
		sbuf_printf(&b, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
				"metadata: {name: ipblock, namespace: ns%d}\n"
				"spec: {action: DENY, rules: [{from: [{source: {ipBlocks: "
				"[10.%d.0.1/32]}}], when: [{key: destination.port, values: ['7070']}]}]}\n",
			    n, (n + 3) % NS_N);
	}
	return b.s;
}

/* The local pods: some callers of every kind above. */
static const char *const local_pods[][2] = {
	{"ns0", "w0"}, {"ns0", "w1"}, {"ns1", "w2"}, {"ns2", "w3"}, {"ns3", "w4"},
};
#define N_LOCAL (sizeof(local_pods) / sizeof(local_pods[0]))

static struct fx *mesh_fx(int changed_ns, bool enroll)
{
	char *y = mesh_yaml(changed_ns);
	struct fx *f = fx_new(y);
	free(y);
	for (size_t i = 0; f && enroll && i < N_LOCAL; i++)
		if (!fx_pod(f, local_pods[i][0], local_pods[i][1])) {
			fx_free(f);
			return NULL;
		}
	return f;
}

/* ---- the reference: every verdict the map should hold, computed with the engine alone ---- */
struct ref {
	struct moat_verdict_key *k;
	struct moat_verdict *v;
	size_t n, cap;
};

static void ref_free(struct ref *r)
{
	free(r->k);
	free(r->v);
	memset(r, 0, sizeof(*r));
}

static long ref_find(const struct ref *r, const struct moat_verdict_key *k)
{
	for (size_t i = 0; i < r->n; i++)
		if (!memcmp(&r->k[i], k, sizeof(*k)))
			return (long)i;
	return -1;
}

static void ref_add(struct ref *r, const struct moat_verdict_key *k, const struct moat_verdict *v)
{
	size_t cap = r->cap;
	*VEC_PUSH(r->k, r->n, r->cap) = *k;
	if (r->cap != cap)
		r->v = xrealloc(r->v, r->cap * sizeof(*r->v));
	r->v[r->n - 1] = *v;
}

/* Local pod p calling every workload of the configuration but itself, on each port a policy
 * of the destination names and on 0 (every other port). */
static void ref_of_pod(struct fx *f, const struct pod *p, struct ref *r)
{
	struct agent *a = f->a;
	for (size_t d = 0; d < a->cfg->n_workloads; d++) {
		const struct mc_workload *w = &a->cfg->workloads[d];
		uint32_t dst_id = fx_wl_id(f, w->meta.ns, w->meta.name);
		if (dst_id == p->workload_id)
			continue;
		struct authz_target t = {.kind = AUTHZ_TARGET_WORKLOAD, .workload = w,
					 .ip = w->address};
		uint16_t *ports;
		size_t n = authz_ports_of_interest(a->cfg, &t, &ports);
		for (size_t i = 0; i <= n; i++) {
			t.port = i < n ? ports[i] : 0;
			struct authz_peer peer = {.principal = p->principal, .ip = p->addr,
						  .has_ip = true};
			struct authz_decision dec;
			authz_evaluate(a->cfg, &t, &peer, &dec);
			struct moat_verdict_key k = {.src_workload = p->workload_id,
						     .dst_workload = dst_id, .dst_port = t.port};
			struct moat_verdict v = {.action = dec.action, .reason = dec.reason,
						 .policy = agent_policy_id(a, dec.policy),
						 .epoch = a->epoch};
			ref_add(r, &k, &v);
		}
		free(ports);
	}
}

static void ref_compute(struct fx *f, struct ref *r)
{
	memset(r, 0, sizeof(*r));
	for (const struct pod *p = f->a->pods; p; p = p->next)
		ref_of_pod(f, p, r);
}

/* Entries of the reference missing from the map or different there, plus map entries the
 * reference does not have. */
static size_t map_vs_ref(struct fx *f, const struct ref *r)
{
	size_t bad = 0;
	for (size_t i = 0; i < r->n; i++) {
		struct moat_verdict v;
		if (!fake_dp_verdict(f->a->dp, &r->k[i], &v) || memcmp(&v, &r->v[i], sizeof(v)))
			bad++;
	}
	if (fake_dp_entries(f->a->dp, FDP_VERDICTS) != r->n)
		bad++;
	return bad;
}

/* Keys whose verdict differs between two references (added, changed or removed). */
static size_t ref_diff(const struct ref *x, const struct ref *y, struct ref *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < x->n; i++) {
		long at = ref_find(y, &x->k[i]);
		if (at < 0 || memcmp(&y->v[at], &x->v[i], sizeof(x->v[i])))
			ref_add(out, &x->k[i], &x->v[i]);
	}
	for (size_t i = 0; i < y->n; i++)
		if (ref_find(x, &y->k[i]) < 0)
			ref_add(out, &y->k[i], &y->v[i]);
	return out->n;
}

TEST(registry_full_sync_writes_the_engine_verdict_for_every_local_pod_destination_and_port)
{
	struct fx *f = mesh_fx(-1, true);
	REQUIRE(f);
	struct ref r;
	ref_compute(f, &r);
	CHECK(r.n > N_LOCAL * (NS_N * WL_PER_NS - 1)); /* port 0 and the named ports */
	CHECK_INT(map_vs_ref(f, &r), 0);
	/* what the connect hook reads back is the engine's decision for each of them */
	size_t hook_wrong = 0, denies = 0;
	for (size_t i = 0; i < r.n; i++) {
		enum moat_action h = fake_dp_hook_verdict(f->a->dp, r.k[i].src_workload,
							  r.k[i].dst_workload, r.k[i].dst_port);
		hook_wrong += h != r.v[i].action;
		denies += r.v[i].action == MOAT_ACTION_DENY;
	}
	CHECK_INT(hook_wrong, 0);
	CHECK(denies > 0 && denies < r.n); /* the mesh has both answers */
	/* every pod and address reached its map */
	CHECK_INT(fake_dp_entries(f->a->dp, FDP_PODS), N_LOCAL);
	CHECK_INT(fake_dp_entries(f->a->dp, FDP_WORKLOADS), NS_N * WL_PER_NS);
	ref_free(&r);
	fx_free(f);
}

TEST(registry_one_policy_change_rewrites_only_the_verdicts_whose_decision_changed)
{
	struct fx *f = mesh_fx(-1, true);
	REQUIRE(f);
	struct ref before, after, diff;
	ref_compute(f, &before);
	REQUIRE(map_vs_ref(f, &before) == 0);

	/* ns2's w0-allow now also admits ns0: one selector-scoped policy changed */
	fake_dp_reset_counts(f->a->dp);
	uint64_t epoch = f->a->epoch;
	char *y = mesh_yaml(2);
	CHECK_INT(fx_reload(f, y), 0);
	free(y);
	CHECK_INT(f->a->epoch, epoch);

	/* what the engine alone says changed (policy ids are the agent's, so both references
	 * are computed with it): ns0's two pods to ns2/w0 on 8080 are allowed now */
	ref_compute(f, &after);
	size_t changed = ref_diff(&after, &before, &diff);
	CHECK_INT(changed, 2);
	CHECK(changed < before.n / 100);

	const struct fdp_counts *c = fake_dp_counts(f->a->dp, FDP_VERDICTS);
	CHECK_INT(c->writes + c->deletes, changed);
	CHECK_INT(c->clears, 0);
	/* no write touched a pair whose decision did not change */
	const struct moat_verdict_key *touched;
	size_t n = fake_dp_verdicts_touched(f->a->dp, &touched);
	size_t untouched_written = 0;
	for (size_t i = 0; i < n; i++)
		untouched_written += ref_find(&diff, &touched[i]) < 0;
	CHECK_INT(n, changed);
	CHECK_INT(untouched_written, 0);
	/* and the map now equals the full recomputation of the new configuration */
	CHECK_INT(map_vs_ref(f, &after), 0);
	ref_free(&before);
	ref_free(&after);
	ref_free(&diff);
	fx_free(f);
}

TEST(registry_reload_of_the_same_files_writes_no_verdict_and_keeps_the_epoch)
{
	struct fx *f = mesh_fx(-1, true);
	REQUIRE(f);
	uint64_t epoch = f->a->epoch;
	CHECK_INT(epoch, 1);
	/* a new file that says the same (another digest: a comment) goes through the sync */
	char *y = mesh_yaml(-1);
	char *y2 = xasprintf("# touched\n%s", y);
	fake_dp_reset_counts(f->a->dp);
	CHECK_INT(fx_reload(f, y2), 0);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_VERDICTS)->writes, 0);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_VERDICTS)->deletes, 0);
	CHECK_INT(f->a->epoch, epoch);
	CHECK_INT(fake_dp_settings(f->a->dp)->epoch, epoch);
	free(y);
	free(y2);
	fx_free(f);
}

TEST(registry_bad_file_keeps_the_configuration_and_writes_nothing)
{
	struct fx *f = mesh_fx(-1, true);
	REQUIRE(f);
	const struct mesh_config *cfg_before = f->a->cfg;
	fake_dp_reset_counts(f->a->dp);
	CHECK(fx_reload(f, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
			   "metadata: {name: broken, namespace: ns0}\nspec: {action: MAYBE}\n") < 0);
	CHECK(f->a->cfg == cfg_before);
	for (int m = 0; m < FDP_MAPS; m++)
		CHECK_MSG(fake_dp_counts(f->a->dp, m)->writes + fake_dp_counts(f->a->dp, m)->deletes +
				  fake_dp_counts(f->a->dp, m)->clears == 0,
			  "map %d written after a refused configuration", m);
	struct ref r;
	ref_compute(f, &r);
	CHECK_INT(map_vs_ref(f, &r), 0);
	ref_free(&r);
	fx_free(f);
}

TEST(registry_failed_map_write_rebuilds_under_a_new_epoch_and_stale_entries_are_misses)
{
	struct fx *f = mesh_fx(-1, true);
	REQUIRE(f);
	uint64_t epoch = f->a->epoch;
	/* the next verdict write fails mid-sync (the kernel map refused it) */
	fake_dp_fail_next(f->a->dp, FDP_VERDICTS);
	char *y = mesh_yaml(2);
	CHECK_INT(fx_reload(f, y), 0);
	free(y);
	CHECK(verdicts_need_rebuild(f->a->verdicts));
	/* a verdict of the old epoch left in the map: the hook takes it for a miss, not a verdict */
	uint32_t src = fx_wl_id(f, "ns0", "w0"), dst = fx_wl_id(f, "ns2", "w0");
	struct moat_verdict_key k = {.src_workload = src, .dst_workload = dst, .dst_port = 8080};
	struct moat_verdict old = {.action = MOAT_ACTION_ALLOW, .reason = MOAT_REASON_ALLOWED,
				   .epoch = epoch};
	struct err e;
	CHECK_INT(dataplane_verdict_put(f->a->dp, &k, &old, &e), 0);
	/* the next sync (a pod enrolls) rebuilds: new epoch, map cleared, everything rewritten */
	fake_dp_reset_counts(f->a->dp);
	CHECK(fx_pod(f, "ns4", "w5") != NULL);
	CHECK_INT(f->a->epoch, epoch + 1);
	CHECK_INT(fake_dp_settings(f->a->dp)->epoch, epoch + 1);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_VERDICTS)->clears, 1);
	CHECK(!verdicts_need_rebuild(f->a->verdicts));
	struct ref r;
	ref_compute(f, &r);
	CHECK_INT(map_vs_ref(f, &r), 0);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_VERDICTS)->writes, r.n);
	/* an entry of the previous epoch decides nothing */
	old.epoch = epoch;
	CHECK_INT(dataplane_verdict_put(f->a->dp, &k, &old, &e), 0);
	CHECK_INT(fake_dp_hook_verdict(f->a->dp, src, dst, 8080), MOAT_ACTION_NONE);
	ref_free(&r);
	fx_free(f);
}

TEST(registry_verdict_cache_at_its_bound_leaves_misses_that_moatd_decides_never_allows)
{
	char *y = mesh_yaml(-1);
	struct fx *f = fx_new(y);
	free(y);
	REQUIRE(f);
	/* a small cache: most pairs are left to moatd */
	verdicts_free(f->a->verdicts);
	f->a->verdicts = verdicts_new(40);
	for (size_t i = 0; i < N_LOCAL; i++)
		REQUIRE(fx_pod(f, local_pods[i][0], local_pods[i][1]));
	CHECK(fake_dp_entries(f->a->dp, FDP_VERDICTS) <= 40);
	CHECK(verdicts_stats(f->a->verdicts)->pairs_skipped > 0);
	struct ref r;
	ref_compute(f, &r);
	size_t misses = 0, wrong = 0, miss_denied_by_moatd = 0, miss_denies = 0;
	for (size_t i = 0; i < r.n; i++) {
		enum moat_action h = fake_dp_hook_verdict(f->a->dp, r.k[i].src_workload,
							  r.k[i].dst_workload, r.k[i].dst_port);
		if (h != MOAT_ACTION_NONE) {
			wrong += h != r.v[i].action;
			continue;
		}
		misses++;
		if (r.v[i].action != MOAT_ACTION_DENY || !r.k[i].dst_port)
			continue;
		/* the miss goes to moatd: its outbound decision for that connect denies it */
		miss_denies++;
		struct pod *p = f->a->pods;
		while (p && p->workload_id != r.k[i].src_workload)
			p = p->next;
		const struct mc_workload *w = NULL;
		for (size_t d = 0; d < f->a->cfg->n_workloads && !w; d++) {
			const struct mc_workload *c = &f->a->cfg->workloads[d];
			if (fx_wl_id(f, c->meta.ns, c->meta.name) == r.k[i].dst_workload)
				w = c;
		}
		REQUIRE(p && w);
		struct outbound_decision o;
		outbound_decide(f->a, p, &w->address, r.k[i].dst_port, &o);
		miss_denied_by_moatd += o.path == OUT_DENY;
	}
	CHECK_INT(wrong, 0);
	CHECK(misses > r.n / 2);
	CHECK(miss_denies > 0);
	CHECK_INT(miss_denied_by_moatd, miss_denies);
	ref_free(&r);
	fx_free(f);
}
