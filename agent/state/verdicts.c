/* The verdict cache kept by difference: see verdicts.h for the model. */
#include <stdlib.h>
#include <string.h>

#include "state/verdicts.h"

/* ---- a computed verdict of one (source, class, port) ---- */
struct vd {
	uint16_t port;
	uint16_t action, reason;
	uint32_t policy;
};

static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

/* ---- the (source, destination) pairs in the map: what was written for each ----
 * A pair's entries are its class's ports + port 0 with the verdicts its (source, class)
 * memo holds, so the pair only records which source and class of its generation it used. */
struct pair {
	uint32_t src_id, dst_id; /* 0/0: free slot (ids are never 0) */
	uint32_t si, ci;         /* source and class index in the pair's generation */
};

struct pairs {
	struct pair *slots;
	size_t n, cap; /* cap: power of two */
	size_t entries; /* map entries the pairs stand for */
};

static size_t pair_slot(const struct pairs *t, uint32_t src, uint32_t dst)
{
	size_t j = mix((uint64_t)src << 32 | dst) & (t->cap - 1);
	while (t->slots[j].src_id && (t->slots[j].src_id != src || t->slots[j].dst_id != dst))
		j = (j + 1) & (t->cap - 1);
	return j;
}

static const struct pair *pairs_find(const struct pairs *t, uint32_t src, uint32_t dst)
{
	if (!t->cap)
		return NULL;
	const struct pair *p = &t->slots[pair_slot(t, src, dst)];
	return p->src_id ? p : NULL;
}

static void pairs_put(struct pairs *t, const struct pair *p);

static void pairs_grow(struct pairs *t)
{
	struct pairs old = *t;
	t->cap = old.cap ? old.cap * 2 : 1024;
	t->slots = xcalloc(t->cap, sizeof(*t->slots));
	t->n = 0;
	for (size_t i = 0; i < old.cap; i++)
		if (old.slots[i].src_id)
			pairs_put(t, &old.slots[i]);
	free(old.slots);
}

static void pairs_put(struct pairs *t, const struct pair *p)
{
	if ((t->n + 1) * 2 > t->cap)
		pairs_grow(t);
	size_t j = pair_slot(t, p->src_id, p->dst_id);
	if (!t->slots[j].src_id)
		t->n++;
	t->slots[j] = *p;
}

static void pairs_free(struct pairs *t)
{
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* ---- destination classes: what a destination's verdicts depend on ---- */
struct vclass {
	uint64_t hash;
	uint32_t kind;
	bool has_ip;
	struct moat_addr ip;  /* only when has_ip (a policy tests destination.ip) */
	uint64_t *fps;        /* fingerprints of the applicable policies, in order */
	uint32_t *idx;        /* their indices in this sync's configuration */
	size_t n_pol;
	uint16_t *ports;      /* ports of interest; verdicts are ports + port 0 */
	size_t n_ports;
	uint32_t *memo;       /* per source of the sync: 1 + offset into the pool, 0 = none */
	int32_t prev;         /* the equal class of the previous sync, -1 none */
};

/* One sync's worth of memo: classes, sources, the pool of computed verdicts. */
struct gen {
	struct vclass *cls;
	size_t n_cls, cap_cls;
	size_t *by_hash; /* open addressing: 1 + class index */
	size_t n_by_hash;
	struct verdict_src *src; /* copies; each principal points into principals */
	char **principals;       /* owned copies, compared across syncs */
	size_t n_src;
	struct vd *pool;
	size_t n_pool, cap_pool;
};

struct verdict_cache {
	size_t budget;
	struct pairs map; /* what the kernel map holds, by pair (entries of vc->prev) */
	uint64_t epoch;   /* the epoch every entry in the map carries */
	struct gen prev;
	bool lost;        /* a sink write failed: clear and rewrite at the next sync */
	struct verdict_stats st;
};

static void gen_free(struct gen *g)
{
	for (size_t i = 0; i < g->n_cls; i++) {
		free(g->cls[i].fps);
		free(g->cls[i].idx);
		free(g->cls[i].ports);
		free(g->cls[i].memo);
	}
	free(g->cls);
	free(g->by_hash);
	for (size_t i = 0; i < g->n_src; i++)
		free(g->principals[i]);
	free(g->principals);
	free(g->src);
	free(g->pool);
	memset(g, 0, sizeof(*g));
}

struct verdict_cache *verdicts_new(size_t budget)
{
	struct verdict_cache *vc = xcalloc(1, sizeof(*vc));
	vc->budget = budget ? budget : VERDICTS_BUDGET;
	return vc;
}

void verdicts_free(struct verdict_cache *vc)
{
	if (!vc)
		return;
	pairs_free(&vc->map);
	gen_free(&vc->prev);
	free(vc);
}

const struct verdict_stats *verdicts_stats(const struct verdict_cache *vc)
{
	return &vc->st;
}

bool verdicts_need_rebuild(const struct verdict_cache *vc)
{
	return vc->lost;
}

static bool class_eq(const struct vclass *a, const struct vclass *b)
{
	return a->hash == b->hash && a->kind == b->kind && a->has_ip == b->has_ip &&
	       (!a->has_ip || memcmp(&a->ip, &b->ip, sizeof(a->ip)) == 0) &&
	       a->n_pol == b->n_pol && a->n_ports == b->n_ports &&
	       memcmp(a->fps, b->fps, a->n_pol * sizeof(*a->fps)) == 0 &&
	       (!a->n_ports || memcmp(a->ports, b->ports, a->n_ports * sizeof(*a->ports)) == 0);
}

static uint64_t class_hash(const struct vclass *c)
{
	uint64_t h = mix(c->kind + 1);
	for (size_t i = 0; i < c->n_pol; i++)
		h = mix(h ^ c->fps[i]) + i;
	for (size_t i = 0; i < c->n_ports; i++)
		h = mix(h ^ (c->ports[i] + 0x10000ull));
	if (c->has_ip)
		for (int i = 0; i < 16; i += 8) {
			uint64_t w;
			memcpy(&w, c->ip.bytes + i, 8);
			h = mix(h ^ w);
		}
	return h;
}

/* Index of an equal class in g, or -1. */
static int32_t gen_find_class(const struct gen *g, const struct vclass *c)
{
	if (!g->n_by_hash)
		return -1;
	for (size_t j = c->hash & (g->n_by_hash - 1);; j = (j + 1) & (g->n_by_hash - 1)) {
		if (!g->by_hash[j])
			return -1;
		const struct vclass *o = &g->cls[g->by_hash[j] - 1];
		if (class_eq(o, c))
			return (int32_t)(g->by_hash[j] - 1);
	}
}

static void gen_index_class(struct gen *g, size_t ci)
{
	if ((g->n_cls + 1) * 2 > g->n_by_hash) {
		size_t n = g->n_by_hash ? g->n_by_hash * 2 : 256;
		free(g->by_hash);
		g->by_hash = xcalloc(n, sizeof(*g->by_hash));
		g->n_by_hash = n;
		for (size_t i = 0; i < g->n_cls; i++)
			if (i != ci)
				gen_index_class(g, i);
	}
	size_t j = g->cls[ci].hash & (g->n_by_hash - 1);
	while (g->by_hash[j])
		j = (j + 1) & (g->n_by_hash - 1);
	g->by_hash[j] = ci + 1;
}

/* ---- which policies can apply to a destination: by namespace, plus root and targetRefs ---- */
struct pindex {
	const struct mesh_config *cfg;
	uint32_t *by_ns; /* policy indices sorted by (namespace, index) */
	size_t n;
	uint32_t *refs;  /* policies with targetRefs (ServiceEntry egress), ascending */
	size_t n_refs;
	uint64_t *fps;   /* fingerprint of every policy */
};

static int cmp_by_ns(const void *x, const void *y, void *arg)
{
	const struct mesh_config *c = arg;
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
	int d = strcmp(c->policies[a].meta.ns, c->policies[b].meta.ns);
	return d ? d : (a > b) - (a < b);
}

static void pindex_build(struct pindex *pi, const struct mesh_config *cfg)
{
	memset(pi, 0, sizeof(*pi));
	pi->cfg = cfg;
	pi->n = cfg->n_policies;
	pi->by_ns = xcalloc(pi->n + 1, sizeof(*pi->by_ns));
	pi->refs = xcalloc(pi->n + 1, sizeof(*pi->refs));
	pi->fps = xcalloc(pi->n + 1, sizeof(*pi->fps));
	for (size_t i = 0; i < pi->n; i++) {
		pi->by_ns[i] = (uint32_t)i;
		pi->fps[i] = authz_policy_fingerprint(&cfg->policies[i]);
		if (cfg->policies[i].n_target_refs)
			pi->refs[pi->n_refs++] = (uint32_t)i;
	}
	qsort_r(pi->by_ns, pi->n, sizeof(*pi->by_ns), cmp_by_ns, (void *)cfg);
}

static void pindex_free(struct pindex *pi)
{
	free(pi->by_ns);
	free(pi->refs);
	free(pi->fps);
}

/* Append the indices of the policies in namespace ns (sorted by index). */
static void pindex_ns(const struct pindex *pi, const char *ns, uint32_t **out, size_t *n,
		      size_t *cap)
{
	size_t lo = 0, hi = pi->n;
	while (lo < hi) { /* first policy whose namespace is >= ns */
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(pi->cfg->policies[pi->by_ns[mid]].meta.ns, ns) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < pi->n && strcmp(pi->cfg->policies[pi->by_ns[lo]].meta.ns, ns) == 0; lo++)
		*VEC_PUSH(*out, *n, *cap) = pi->by_ns[lo];
}

static int cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
	return (a > b) - (a < b);
}

/* The policies that apply to t, ascending (the engine's first-match order). */
static size_t applicable(const struct pindex *pi, const struct authz_target *t, uint32_t **out)
{
	const struct mesh_config *c = pi->cfg;
	uint32_t *cand = NULL;
	size_t n = 0, cap = 0;
	const char *ns = t->kind == AUTHZ_TARGET_WORKLOAD ? t->workload->meta.ns
							  : t->service->meta.ns;
	pindex_ns(pi, c->mesh.root_namespace, &cand, &n, &cap);
	size_t n_root = n;
	if (strcmp(ns, c->mesh.root_namespace) != 0)
		pindex_ns(pi, ns, &cand, &n, &cap);
	if (t->kind == AUTHZ_TARGET_SERVICE) {
		for (size_t i = 0; i < pi->n_refs; i++)
			*VEC_PUSH(cand, n, cap) = pi->refs[i];
		qsort(cand, n, sizeof(*cand), cmp_u32);
	} else if (n_root && n > n_root) { /* two ascending runs: merge them */
		uint32_t *m = xcalloc(n, sizeof(*m));
		size_t i = 0, j = n_root, k = 0;
		while (i < n_root || j < n)
			m[k++] = j == n || (i < n_root && cand[i] < cand[j]) ? cand[i++] : cand[j++];
		free(cand);
		cand = m;
	}
	size_t out_n = 0;
	for (size_t i = 0; i < n; i++) {
		if (i && cand[i] == cand[i - 1])
			continue; /* a targetRef policy of the destination's own namespace */
		if (authz_policy_applies(c, &c->policies[cand[i]], t))
			cand[out_n++] = cand[i];
	}
	*out = cand;
	return out_n;
}

/* ---- one sync ---- */
struct sync {
	struct verdict_cache *vc;
	const struct mesh_config *cfg;
	struct pindex pi;
	struct gen g;
	int32_t *src_prev; /* per source: index of the same source in the previous sync, -1 */
	struct pairs want; /* this sync's pairs */
	size_t n_want;     /* map entries they stand for */
	struct diff *diff;
	uint64_t epoch;
	uint32_t (*policy_id)(void *arg, const struct mc_authz *p);
	void *pid_arg;
	verdict_resolve_fn resolve;
	void *resolve_arg;
	size_t evaluated, reused, skipped;
	bool full; /* a pair did not fit: every later destination is skipped */
};

static void target_of(const struct verdict_dst *d, struct authz_target *t)
{
	memset(t, 0, sizeof(*t));
	t->kind = d->kind;
	t->workload = d->wl;
	t->service = d->se;
	t->ip = d->ip;
}

/* The class of a destination (created in this sync's generation when new). */
static size_t class_of(struct sync *s, const struct verdict_dst *d)
{
	struct authz_target t;
	target_of(d, &t);
	struct vclass c = {.kind = d->kind, .prev = -1};
	c.n_pol = applicable(&s->pi, &t, &c.idx);
	c.fps = xcalloc(c.n_pol + 1, sizeof(*c.fps));
	for (size_t i = 0; i < c.n_pol; i++) {
		c.fps[i] = s->pi.fps[c.idx[i]];
		if (authz_policy_uses_destination_ip(&s->cfg->policies[c.idx[i]]))
			c.has_ip = true;
	}
	if (c.has_ip)
		c.ip = d->ip;
	c.n_ports = authz_ports_among(s->cfg, c.idx, c.n_pol, &t, &c.ports);
	c.hash = class_hash(&c);
	int32_t found = gen_find_class(&s->g, &c);
	if (found >= 0) {
		free(c.fps);
		free(c.idx);
		free(c.ports);
		return (size_t)found;
	}
	c.prev = gen_find_class(&s->vc->prev, &c);
	c.memo = xcalloc(s->g.n_src + 1, sizeof(*c.memo));
	*VEC_PUSH(s->g.cls, s->g.n_cls, s->g.cap_cls) = c;
	gen_index_class(&s->g, s->g.n_cls - 1);
	return s->g.n_cls - 1;
}

static size_t pool_reserve(struct gen *g, size_t n)
{
	while (g->n_pool + n > g->cap_pool) {
		g->cap_pool = g->cap_pool ? g->cap_pool * 2 : 1024;
		g->pool = xrealloc(g->pool, g->cap_pool * sizeof(*g->pool));
	}
	size_t off = g->n_pool;
	g->n_pool += n;
	return off;
}

static bool same_decision(const struct authz_decision *x, const struct authz_decision *y)
{
	return x->action == y->action && x->reason == y->reason && x->policy == y->policy;
}

static void decide_one(const struct mesh_config *cfg, const uint32_t *idx, size_t n_pol,
		       const struct authz_target *t, const struct authz_peer *peer,
		       struct authz_decision *out)
{
	if (idx)
		authz_evaluate_among(cfg, idx, n_pol, t, peer, out);
	else
		authz_evaluate(cfg, t, peer, out);
}

bool verdicts_decide_all_addrs(const struct mesh_config *cfg, const uint32_t *idx, size_t n_pol,
			       const char *principal, const struct moat_addr *src, size_t n_src,
			       struct authz_target *t, const struct moat_addr *dst, size_t n_dst,
			       struct authz_decision *out)
{
	bool any = false;
	for (size_t i = 0; i < n_src; i++)
		for (size_t j = 0; j < n_dst; j++) {
			if (addr_is_v4(&src[i]) != addr_is_v4(&dst[j]))
				continue;
			struct authz_peer peer = {.principal = principal, .ip = src[i], .has_ip = true};
			struct authz_decision dec;
			t->ip = dst[j];
			decide_one(cfg, idx, n_pol, t, &peer, any ? &dec : out);
			if (any && !same_decision(&dec, out))
				return false;
			any = true;
		}
	if (!any) { /* no pair of one family: no such connect can happen; decide the primaries */
		struct authz_peer peer = {.principal = principal, .ip = src[0], .has_ip = true};
		t->ip = dst[0];
		decide_one(cfg, idx, n_pol, t, &peer, out);
	}
	return true;
}

/* Every source address against the destination's first address: they must agree. */
static bool decide_each_source(struct sync *s, const struct vclass *c, const char *principal,
			       const struct moat_addr *sa, size_t n_sa, const struct authz_target *t,
			       struct authz_decision *out)
{
	for (size_t i = 0; i < n_sa; i++) {
		struct authz_peer peer = {.principal = principal, .ip = sa[i], .has_ip = true};
		struct authz_decision dec;
		authz_evaluate_among(s->cfg, c->idx, c->n_pol, t, &peer, i ? &dec : out);
		if (i && !same_decision(&dec, out))
			return false;
	}
	return true;
}

/* Marks a (source, class) whose decision depends on the address (first entry's action):
 * the pair gets no entry at all, since the hook falls back from a missing port to port 0. */
#define VD_ADDRESS_DEPENDENT 0xffff

/* Verdicts of source si for class ci: ports of interest, then port 0. */
static const struct vd *verdicts_of(struct sync *s, size_t si, size_t ci,
				    const struct verdict_dst *d)
{
	struct vclass *c = &s->g.cls[ci];
	size_t n = c->n_ports + 1;
	if (c->memo[si])
		return &s->g.pool[c->memo[si] - 1];
	size_t off = pool_reserve(&s->g, n);
	c->memo[si] = (uint32_t)off + 1;
	struct vd *out = &s->g.pool[off];
	const struct gen *p = &s->vc->prev;
	int32_t ps = s->src_prev[si];
	if (c->prev >= 0 && ps >= 0 && p->cls[c->prev].memo[ps]) {
		memcpy(out, &p->pool[p->cls[c->prev].memo[ps] - 1], n * sizeof(*out));
		s->reused++;
		return out;
	}
	struct authz_target t;
	target_of(d, &t);
	const struct verdict_src *src = &s->g.src[si];
	const struct moat_addr *sa = src->n_addrs ? src->addrs : &src->addr;
	size_t n_sa = src->n_addrs ? src->n_addrs : 1;
	/* The class is shared by destinations with the same policies; only when one of them
	 * tests destination.ip is the class this destination's own (c->has_ip): then every
	 * address of it is paired with the source's; otherwise every source address is checked
	 * against the first destination address (the family pairing cannot change a decision
	 * that ignores destination.ip, so the memo stays valid for the whole class). */
	const struct moat_addr *da = &d->ip;
	size_t n_da = 1;
	if (c->has_ip && d->kind == AUTHZ_TARGET_WORKLOAD && d->wl && d->wl->n_addrs) {
		da = d->wl->addrs;
		n_da = d->wl->n_addrs;
	}
	bool dependent = false;
	for (size_t i = 0; i < n; i++) {
		t.port = i < c->n_ports ? c->ports[i] : 0;
		struct authz_decision dec;
		bool one = c->has_ip ? verdicts_decide_all_addrs(s->cfg, c->idx, c->n_pol,
								 src->principal, sa, n_sa, &t, da,
								 n_da, &dec)
				     : decide_each_source(s, c, src->principal, sa, n_sa, &t, &dec);
		dependent = dependent || !one;
		out[i] = (struct vd){.port = t.port, .action = (uint16_t)dec.action,
				     .reason = (uint16_t)dec.reason,
				     .policy = s->policy_id(s->pid_arg, dec.policy)};
	}
	if (dependent)
		out[0].action = VD_ADDRESS_DEPENDENT;
	s->evaluated++;
	return out;
}

/* ---- the difference, in the order it is written ---- */
struct batch {
	struct moat_verdict_key *k;
	struct moat_verdict *v;
	size_t n, cap;
};

/* Order keeps every intermediate state a verdict of the old or the new configuration: the
 * hook reads an exact-port entry before port 0, so exact entries go in before a port-0
 * entry changes, and go out only after it changed. */
struct diff {
	struct batch put_exact, put_zero, del_zero, del_exact;
};

static void batch_add(struct batch *b, const struct moat_verdict_key *k,
		      const struct moat_verdict *v)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 256;
		b->k = xrealloc(b->k, b->cap * sizeof(*b->k));
		b->v = xrealloc(b->v, b->cap * sizeof(*b->v));
	}
	b->k[b->n] = *k;
	if (v)
		b->v[b->n] = *v;
	b->n++;
}

static void diff_free(struct diff *d)
{
	struct batch *all[] = {&d->put_exact, &d->put_zero, &d->del_zero, &d->del_exact};
	for (size_t i = 0; i < 4; i++) {
		free(all[i]->k);
		free(all[i]->v);
	}
}

static void diff_put(struct diff *d, uint32_t src, uint32_t dst, const struct vd *v,
		     uint64_t epoch)
{
	struct moat_verdict_key k = {.src_workload = src, .dst_workload = dst, .dst_port = v->port};
	struct moat_verdict val = {.action = v->action, .reason = v->reason, .policy = v->policy,
				   .epoch = epoch};
	batch_add(v->port ? &d->put_exact : &d->put_zero, &k, &val);
}

static void diff_del(struct diff *d, uint32_t src, uint32_t dst, uint16_t port)
{
	struct moat_verdict_key k = {.src_workload = src, .dst_workload = dst, .dst_port = port};
	batch_add(port ? &d->del_exact : &d->del_zero, &k, NULL);
}

static const struct vd *vd_find(const struct vd *v, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].port == port)
			return &v[i];
	return NULL;
}

/* The entries of a pair as the previous sync wrote them (n = 0 when it had none). */
static const struct vd *old_entries(const struct verdict_cache *vc, const struct pair *p,
				   size_t *n)
{
	*n = 0;
	if (!p)
		return NULL;
	const struct vclass *c = &vc->prev.cls[p->ci];
	*n = c->n_ports + 1;
	return &vc->prev.pool[c->memo[p->si] - 1];
}

/* One pair of this sync: unchanged when its source, its class and the epoch are the same
 * as when it was written; otherwise its entries are compared one by one. */
static void want_pair(struct sync *s, size_t si, size_t ci, const struct verdict_dst *d)
{
	const struct vd *v = verdicts_of(s, si, ci, d);
	if (v[0].action == VD_ADDRESS_DEPENDENT) {
		s->skipped++; /* not wanted: drop_gone_pairs removes what an earlier sync wrote */
		return;
	}
	size_t n = s->g.cls[ci].n_ports + 1;
	uint32_t src = s->g.src[si].id;
	struct pair p = {.src_id = src, .dst_id = d->id, .si = (uint32_t)si, .ci = (uint32_t)ci};
	pairs_put(&s->want, &p);
	s->n_want += n;
	const struct pair *old = pairs_find(&s->vc->map, src, d->id);
	if (old && s->vc->epoch == s->epoch && s->src_prev[si] == (int32_t)old->si &&
	    s->g.cls[ci].prev == (int32_t)old->ci)
		return;
	size_t n_old;
	const struct vd *ov = old_entries(s->vc, old, &n_old);
	for (size_t i = 0; i < n; i++) {
		const struct vd *o = vd_find(ov, n_old, v[i].port);
		if (!o || s->vc->epoch != s->epoch || o->action != v[i].action ||
		    o->reason != v[i].reason || o->policy != v[i].policy)
			diff_put(s->diff, src, d->id, &v[i], s->epoch);
	}
	for (size_t i = 0; i < n_old; i++)
		if (!vd_find(v, n, ov[i].port))
			diff_del(s->diff, src, d->id, ov[i].port);
}

/* Pairs written before and not wanted now: every entry goes. */
static void drop_gone_pairs(struct sync *s)
{
	const struct pairs *m = &s->vc->map;
	for (size_t i = 0; i < m->cap; i++) {
		const struct pair *p = &m->slots[i];
		if (!p->src_id || pairs_find(&s->want, p->src_id, p->dst_id))
			continue;
		size_t n;
		const struct vd *ov = old_entries(s->vc, p, &n);
		for (size_t j = 0; j < n; j++)
			diff_del(s->diff, p->src_id, p->dst_id, ov[j].port);
	}
}

/* The same source in the previous sync: same workload, principal and addresses. */
static int32_t prev_source(const struct gen *p, const struct verdict_src *src)
{
	for (size_t i = 0; i < p->n_src; i++)
		if (p->src[i].id == src->id && !memcmp(&p->src[i].addr, &src->addr, 16) &&
		    p->src[i].n_addrs == src->n_addrs &&
		    !memcmp(p->src[i].addrs, src->addrs, src->n_addrs * sizeof(src->addrs[0])) &&
		    strcmp(p->principals[i], src->principal ? src->principal : "") == 0)
			return (int32_t)i;
	return -1;
}

static void sources_init(struct sync *s, const struct verdict_src *src, size_t n)
{
	s->g.n_src = n;
	s->g.src = xcalloc(n + 1, sizeof(*s->g.src));
	s->g.principals = xcalloc(n + 1, sizeof(*s->g.principals));
	s->src_prev = xcalloc(n + 1, sizeof(*s->src_prev));
	for (size_t i = 0; i < n; i++) {
		s->g.principals[i] = xstrdup(src[i].principal ? src[i].principal : "");
		s->g.src[i] = src[i];
		s->g.src[i].principal = s->g.principals[i];
		s->src_prev[i] = prev_source(&s->vc->prev, &src[i]);
	}
}

/* A destination id seen before in this sync (several addresses, one destination). The
 * set has room for every destination twice over. */
static bool dst_seen(uint32_t *set, size_t cap, uint32_t id)
{
	size_t j = mix(id) & (cap - 1);
	for (; set[j]; j = (j + 1) & (cap - 1))
		if (set[j] == id)
			return true;
	set[j] = id;
	return false;
}

static void compute(struct sync *s, const struct verdict_dst *dst, size_t n_dst)
{
	size_t seen_cap = 64;
	while (seen_cap < n_dst * 2)
		seen_cap *= 2;
	uint32_t *seen = xcalloc(seen_cap, sizeof(*seen));
	for (size_t i = 0; i < n_dst; i++) {
		struct verdict_dst dd = dst[i];
		const struct verdict_dst *d = &dd;
		if (!d->id || dst_seen(seen, seen_cap, d->id))
			continue;
		if (s->full) {
			s->skipped += s->g.n_src; /* the bound was reached: no need to look it up */
			continue;
		}
		if (s->resolve && !s->resolve(s->resolve_arg, &dd))
			continue;
		if (d->kind == AUTHZ_TARGET_WORKLOAD ? !d->wl : !d->se)
			continue;
		size_t ci = class_of(s, d);
		size_t per_pair = s->g.cls[ci].n_ports + 1;
		for (size_t si = 0; si < s->g.n_src; si++) {
			if (s->g.src[si].id == d->id)
				continue; /* a pod talking to itself is never captured */
			if (s->n_want + per_pair > s->vc->budget) {
				s->skipped++;
				s->full = true; /* later destinations are left to moatd whole */
				continue;
			}
			want_pair(s, si, ci, d);
		}
	}
	free(seen);
}

static int write_diff(struct verdict_cache *vc, const struct diff *d,
		      const struct verdict_sink *sink, struct err *e)
{
	int rc = 0;
	if ((d->put_exact.n && sink->update(sink->arg, d->put_exact.k, d->put_exact.v,
					    d->put_exact.n, e) < 0) ||
	    (d->put_zero.n && sink->update(sink->arg, d->put_zero.k, d->put_zero.v, d->put_zero.n,
					   e) < 0) ||
	    (d->del_zero.n && sink->del(sink->arg, d->del_zero.k, d->del_zero.n, e) < 0) ||
	    (d->del_exact.n && sink->del(sink->arg, d->del_exact.k, d->del_exact.n, e) < 0))
		rc = -1;
	vc->st.last_written = d->put_exact.n + d->put_zero.n;
	vc->st.last_deleted = d->del_zero.n + d->del_exact.n;
	return rc;
}

static uint32_t no_policy_id(void *arg, const struct mc_authz *p)
{
	(void)arg;
	(void)p;
	return 0;
}

int verdicts_sync(struct verdict_cache *vc, const struct mesh_config *cfg,
		  const struct verdict_src *src, size_t n_src, const struct verdict_dst *dst,
		  size_t n_dst, verdict_resolve_fn resolve, void *resolve_arg, uint64_t epoch,
		  uint32_t (*policy_id)(void *arg, const struct mc_authz *p), void *pid_arg,
		  const struct verdict_sink *sink, struct err *e)
{
	uint64_t t0 = now_ns();
	struct diff diff = {0};
	struct sync s = {.vc = vc, .cfg = cfg, .epoch = epoch, .resolve = resolve,
			 .resolve_arg = resolve_arg, .diff = &diff,
			 .policy_id = policy_id ? policy_id : no_policy_id, .pid_arg = pid_arg};
	if (vc->lost) { /* the map may hold anything: start from empty */
		if (sink->clear)
			sink->clear(sink->arg);
		pairs_free(&vc->map);
		vc->lost = false;
	}
	pindex_build(&s.pi, cfg);
	sources_init(&s, src, n_src);
	compute(&s, dst, n_dst);
	drop_gone_pairs(&s);
	int rc = write_diff(vc, &diff, sink, e);
	diff_free(&diff);
	pairs_free(&vc->map);
	vc->map = s.want;
	vc->map.entries = s.n_want;
	vc->epoch = epoch;
	vc->lost = rc < 0;
	gen_free(&vc->prev);
	vc->prev = s.g;
	pindex_free(&s.pi);
	free(s.src_prev);

	vc->st.syncs++;
	vc->st.written += vc->st.last_written;
	vc->st.deleted += vc->st.last_deleted;
	vc->st.evaluated += s.evaluated;
	vc->st.reused += s.reused;
	vc->st.last_evaluated = s.evaluated;
	vc->st.entries = vc->map.entries;
	vc->st.pairs_skipped = s.skipped;
	vc->st.last_us = (now_ns() - t0) / 1000;
	return rc;
}
