/* The verdict cache kept by difference (state/verdicts.c) against a fake map: every entry
 * equals the engine's decision, a change writes exactly the entries whose verdict changed,
 * an unchanged configuration writes nothing, the bound is kept, a failed write rebuilds. */
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "policy/authz.h"
#include "state/verdicts.h"
#include "test.h"

struct mesh_config *th_load(const char *yaml);

/* ---- a fake verdicts map: flat array, linear search (small) ---- */
struct fake_map {
	struct moat_verdict_key k[4096];
	struct moat_verdict v[4096];
	size_t n;
	size_t updates, deletes, clears;
	int fail_next; /* fail the next update call */
};

static long fake_find(struct fake_map *m, const struct moat_verdict_key *k)
{
	for (size_t i = 0; i < m->n; i++)
		if (!memcmp(&m->k[i], k, sizeof(*k)))
			return (long)i;
	return -1;
}

static int fake_update(void *arg, const struct moat_verdict_key *k, const struct moat_verdict *v,
		       size_t n, struct err *e)
{
	struct fake_map *m = arg;
	if (m->fail_next) {
		m->fail_next = 0;
		return err_set(e, "fake map: update refused");
	}
	for (size_t i = 0; i < n; i++) {
		long at = fake_find(m, &k[i]);
		if (at < 0) {
			if (m->n == 4096)
				return err_set(e, "fake map full");
			at = (long)m->n++;
			m->k[at] = k[i];
		}
		m->v[at] = v[i];
		m->updates++;
	}
	return 0;
}

static int fake_del(void *arg, const struct moat_verdict_key *k, size_t n, struct err *e)
{
	(void)e;
	struct fake_map *m = arg;
	for (size_t i = 0; i < n; i++) {
		long at = fake_find(m, &k[i]);
		if (at >= 0) {
			m->k[at] = m->k[m->n - 1];
			m->v[at] = m->v[m->n - 1];
			m->n--;
		}
		m->deletes++;
	}
	return 0;
}

static int fake_clear(void *arg)
{
	struct fake_map *m = arg;
	m->n = 0;
	m->clears++;
	return 0;
}

/* ---- a small mesh: 3 namespaces x 4 workloads, policies by namespace and selector ---- */
#define NS_N 3
#define WL_PER_NS 4

static char *mesh_text(const char *extra_policies)
{
	struct sbuf b = {0};
	for (int n = 0; n < NS_N; n++)
		for (int w = 0; w < WL_PER_NS; w++)
			sbuf_printf(&b, "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
					"metadata: {name: w%d, namespace: ns%d}\n"
					"spec: {address: '10.%d.0.%d', serviceAccount: sa%d, labels: "
					"{app: w%d, tier: t%d, istio.io/dataplane-mode: ambient}}\n",
				    w, n, n, w + 1, w, w, w % 2);
	/* ns0: only ns0 and ns1 may call app=w0 on 8080; ns1: a DENY for sa1 on 9090;
	 * ns2: tier t1 takes only ns2; everything reaching 7070 by source.ip is denied. */
	sbuf_puts(&b, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		      "metadata: {name: w0-allow, namespace: ns0}\n"
		      "spec: {selector: {matchLabels: {app: w0}}, rules: [{from: [{source: "
		      "{namespaces: [ns0, ns1]}}], to: [{operation: {ports: ['8080']}}]}]}\n");
	sbuf_puts(&b, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		      "metadata: {name: deny-sa1, namespace: ns1}\n"
		      "spec: {action: DENY, rules: [{from: [{source: {principals: "
		      "['cluster.local/ns/ns0/sa/sa1']}}], to: [{operation: {ports: ['9090']}}]}]}\n");
	sbuf_puts(&b, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		      "metadata: {name: t1-own-ns, namespace: ns2}\n"
		      "spec: {selector: {matchLabels: {tier: t1}}, rules: [{from: [{source: "
		      "{namespaces: [ns2]}}]}]}\n");
	sbuf_puts(&b, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		      "metadata: {name: ipblock, namespace: ns2}\n"
		      "spec: {action: DENY, rules: [{from: [{source: {ipBlocks: [10.0.0.2/32]}}], "
		      "when: [{key: destination.port, values: ['7070']}]}]}\n");
	/* mesh-wide (root namespace): merged with each namespace's own policies, in order */
	sbuf_puts(&b, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		      "metadata: {name: mesh-deny-telnet, namespace: istio-system}\n"
		      "spec: {action: DENY, rules: [{from: [{source: {notNamespaces: [ns2]}}], "
		      "to: [{operation: {ports: ['23']}}]}]}\n");
	sbuf_puts(&b, extra_policies);
	return b.s;
}

static struct mesh_config *mesh(const char *extra)
{
	char *t = mesh_text(extra);
	struct mesh_config *c = th_load(t);
	free(t);
	return c;
}

/* Sources: ns0/w0..w2 as local pods (ids 1..3); destinations: every workload, id = index+1. */
struct world {
	struct verdict_src src[3];
	char principals[3][64];
	struct verdict_dst dst[NS_N * WL_PER_NS];
	size_t n_dst;
};

static void world_init(struct world *w, const struct mesh_config *c)
{
	memset(w, 0, sizeof(*w));
	for (int i = 0; i < 3; i++) {
		snprintf(w->principals[i], sizeof(w->principals[i]), "cluster.local/ns/ns0/sa/sa%d", i);
		w->src[i].id = (uint32_t)i + 1;
		w->src[i].principal = w->principals[i];
		w->src[i].addr = c->workloads[i].address;
	}
	for (size_t i = 0; i < c->n_workloads; i++) {
		/* ids by name so two configurations agree (load order is by address) */
		const struct mc_workload *wl = &c->workloads[i];
		int n = wl->meta.ns[2] - '0', k = wl->meta.name[1] - '0';
		w->dst[w->n_dst++] = (struct verdict_dst){.id = (uint32_t)(n * WL_PER_NS + k + 1),
							   .kind = AUTHZ_TARGET_WORKLOAD, .wl = wl,
							   .ip = wl->address};
	}
	for (int i = 0; i < 3; i++) /* sources are ns0/w0..w2: the same ids as destinations */
		for (size_t d = 0; d < w->n_dst; d++)
			if (!strcmp(w->dst[d].wl->meta.ns, "ns0") &&
			    w->dst[d].wl->meta.name[1] - '0' == i)
				w->src[i].addr = w->dst[d].ip;
}

static uint32_t pid_of(void *arg, const struct mc_authz *p)
{
	(void)arg;
	return p ? (uint32_t)(strlen(p->id_name) * 131 + (uint8_t)p->id_name[4]) : 0;
}

static int sync_world(struct verdict_cache *vc, const struct mesh_config *c, struct world *w,
		      struct fake_map *m)
{
	struct verdict_sink sink = {fake_update, fake_del, fake_clear, m};
	struct err e;
	return verdicts_sync(vc, c, w->src, 3, w->dst, w->n_dst, NULL, NULL, 7, pid_of, NULL, &sink,
			     &e);
}

/* Every entry of the map equals the engine's decision, and every (source, destination,
 * port of interest + 0) has one. Returns the number of mismatches. */
static int mismatches(const struct mesh_config *c, const struct world *w, struct fake_map *m,
		      size_t *expected)
{
	int bad = 0;
	*expected = 0;
	for (int s = 0; s < 3; s++) {
		for (size_t d = 0; d < w->n_dst; d++) {
			if (w->dst[d].id == w->src[s].id)
				continue;
			struct authz_target t = {.kind = AUTHZ_TARGET_WORKLOAD, .workload = w->dst[d].wl,
						 .ip = w->dst[d].ip};
			uint16_t *ports;
			size_t n = authz_ports_of_interest(c, &t, &ports);
			for (size_t i = 0; i <= n; i++) {
				t.port = i < n ? ports[i] : 0;
				struct authz_peer p = {.principal = w->src[s].principal,
						       .ip = w->src[s].addr, .has_ip = true};
				struct authz_decision dec;
				authz_evaluate(c, &t, &p, &dec);
				struct moat_verdict_key k = {.src_workload = w->src[s].id,
							     .dst_workload = w->dst[d].id,
							     .dst_port = t.port};
				long at = fake_find(m, &k);
				if (at < 0 || m->v[at].action != dec.action ||
				    m->v[at].reason != dec.reason ||
				    m->v[at].policy != pid_of(NULL, dec.policy) || m->v[at].epoch != 7)
					bad++;
				(*expected)++;
			}
			free(ports);
		}
	}
	return bad;
}

/* One configuration, its world, a fake map and a cache (heap: the fake map is large). */
struct fixture {
	struct mesh_config *c;
	struct world w;
	struct fake_map m;
	struct verdict_cache *vc;
};

static struct fixture *fixture_new(const char *extra, size_t budget)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	f->c = mesh(extra);
	if (f->c)
		world_init(&f->w, f->c);
	f->vc = verdicts_new(budget);
	return f;
}

static int fixture_sync(struct fixture *f)
{
	return sync_world(f->vc, f->c, &f->w, &f->m);
}

static void fixture_free(struct fixture *f)
{
	verdicts_free(f->vc);
	if (f->c)
		mesh_config_unref(f->c);
	free(f);
}

TEST(verdict_sync_writes_the_engine_decision_for_every_pair_and_port)
{
	struct fixture *f = fixture_new("", 0);
	REQUIRE(f->c);
	CHECK_INT(fixture_sync(f), 0);
	size_t expected;
	CHECK_INT(mismatches(f->c, &f->w, &f->m, &expected), 0);
	CHECK_INT(f->m.n, expected);
	CHECK_INT(verdicts_stats(f->vc)->entries, expected);
	CHECK_INT(f->m.updates, expected);
	/* classes are shared: fewer evaluations than (source, destination) pairs */
	CHECK(verdicts_stats(f->vc)->last_evaluated < 3 * f->w.n_dst - 3);
	fixture_free(f);
}

TEST(verdict_sync_of_an_unchanged_configuration_writes_and_evaluates_nothing)
{
	struct fixture *f = fixture_new("", 0), *g = fixture_new("", 0);
	REQUIRE(f->c && g->c);
	CHECK_INT(fixture_sync(f), 0);
	size_t before = f->m.updates;
	/* a reload of the same files: the second configuration into the first cache and map */
	CHECK_INT(sync_world(f->vc, g->c, &g->w, &f->m), 0);
	CHECK_INT(f->m.updates, before);
	CHECK_INT(f->m.deletes, 0);
	CHECK_INT(verdicts_stats(f->vc)->last_evaluated, 0);
	CHECK(verdicts_stats(f->vc)->reused > 0);
	fixture_free(f);
	fixture_free(g);
}

/* Count the entries whose value differs between two full maps (added, changed, removed). */
static size_t diff_count(const struct fake_map *a, struct fake_map *b)
{
	size_t n = 0;
	for (size_t i = 0; i < a->n; i++) {
		long at = fake_find(b, &a->k[i]);
		if (at < 0 || memcmp(&b->v[at], &a->v[i], sizeof(a->v[i])))
			n++;
	}
	for (size_t i = 0; i < b->n; i++)
		if (fake_find((struct fake_map *)a, &b->k[i]) < 0)
			n++;
	return n;
}

TEST(verdict_sync_after_one_policy_change_writes_only_the_verdicts_it_changed)
{
	/* ns2/w1 (tier t1) now also admits ns0 sources on 8443: one selector's destinations */
	const char *change = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
			     "metadata: {name: w1-from-ns0, namespace: ns2}\n"
			     "spec: {selector: {matchLabels: {app: w1}}, rules: [{from: [{source: "
			     "{namespaces: [ns0]}}], to: [{operation: {ports: ['8443']}}]}]}\n";
	struct fixture *f = fixture_new("", 0), *g = fixture_new(change, 0);
	REQUIRE(f->c && g->c);
	/* what a full recomputation gives for each configuration */
	CHECK_INT(fixture_sync(f), 0);
	CHECK_INT(fixture_sync(g), 0);
	size_t changed = diff_count(&f->m, &g->m);
	CHECK(changed > 0);
	/* the change applied to f's cache and map */
	size_t total = f->m.n, up0 = f->m.updates;
	CHECK_INT(sync_world(f->vc, g->c, &g->w, &f->m), 0);
	size_t writes = f->m.updates - up0 + f->m.deletes;
	CHECK_INT(writes, changed);
	CHECK(writes < total / 4);
	size_t expected;
	CHECK_INT(mismatches(g->c, &g->w, &f->m, &expected), 0);
	CHECK_INT(f->m.n, expected);
	/* only ns2/w1's class is evaluated again: one evaluation per source */
	CHECK_INT(verdicts_stats(f->vc)->last_evaluated, 3);
	fixture_free(f);
	fixture_free(g);
}

TEST(verdict_sync_keeps_its_bound_and_leaves_the_rest_to_moatd)
{
	struct fixture *f = fixture_new("", 20), *full = fixture_new("", 0);
	REQUIRE(f->c && full->c);
	CHECK_INT(fixture_sync(f), 0);
	CHECK(f->m.n <= 20);
	CHECK(verdicts_stats(f->vc)->pairs_skipped > 0);
	/* what is there is right: compare with an unbounded sync */
	CHECK_INT(fixture_sync(full), 0);
	for (size_t i = 0; i < f->m.n; i++) {
		long at = fake_find(&full->m, &f->m.k[i]);
		CHECK(at >= 0 && !memcmp(&full->m.v[at], &f->m.v[i], sizeof(f->m.v[i])));
	}
	/* no (source, destination) is cut between its ports: port 0 is always there */
	for (size_t i = 0; i < f->m.n; i++) {
		struct moat_verdict_key k0 = f->m.k[i];
		k0.dst_port = 0;
		CHECK(fake_find(&f->m, &k0) >= 0);
	}
	fixture_free(f);
	fixture_free(full);
}

TEST(verdict_sync_after_a_failed_write_clears_and_rewrites_everything)
{
	struct fixture *f = fixture_new("", 0);
	REQUIRE(f->c);
	f->m.fail_next = 1;
	CHECK(fixture_sync(f) < 0);
	CHECK(verdicts_need_rebuild(f->vc));
	CHECK_INT(fixture_sync(f), 0);
	CHECK_INT(f->m.clears, 1);
	CHECK(!verdicts_need_rebuild(f->vc));
	size_t expected;
	CHECK_INT(mismatches(f->c, &f->w, &f->m, &expected), 0);
	CHECK_INT(f->m.n, expected);
	fixture_free(f);
}

TEST(when_values_are_typed_once_at_load)
{
	struct mesh_config *c = th_load(
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		"metadata: {name: p, namespace: ns}\n"
		"spec: {rules: [{when: [{key: source.ip, values: [10.0.0.0/8, 'fd00::1']},\n"
		"  {key: destination.port, values: ['80', '8080'], notValues: ['8081']},\n"
		"  {key: destination.ip, notValues: [192.0.2.1]}]}]}\n");
	REQUIRE(c);
	const struct mc_rule *r = &c->policies[0].rules[0];
	REQUIRE(r->n_when == 3);
	CHECK_INT(r->when[0].typed.cidrs.n, 2);
	CHECK_INT(r->when[0].typed.cidrs.items[0].prefix, 96 + 8);
	CHECK_INT(r->when[1].typed.n_ports, 2);
	CHECK_INT(r->when[1].typed.ports[1], 8080);
	CHECK_INT(r->when[1].not_typed.n_ports, 1);
	CHECK_INT(r->when[1].not_typed.ports[0], 8081);
	CHECK_INT(r->when[2].not_typed.cidrs.n, 1);
	CHECK_INT(r->when[2].typed.cidrs.n, 0);
	mesh_config_unref(c);
}
