/* What the agent knows about addresses and how it tells the kernel: stable ids, destination
 * lookup, authorization with the shared engine, and the sync of the BPF maps (the verdict
 * cache itself is kept by difference in state/verdicts.c). */
#include <stdlib.h>
#include <string.h>

#include "bpf/dataplane.h"
#include "core/log.h"
#include "state/agent.h"
#include "state/verdicts.h"
#include "state/wl_map.h"

/* ---- interning ---- */

/* A freed id is not handed out again for this long after its last holder let go: events
 * already in the ring buffer and connects decided just before still name the old one. */
#define INTERN_QUARANTINE_MS 5000

struct intern_slot {
	uint64_t hash;
	uint32_t id;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h ? h : 1;
}

/* Rebuild the hash table (at twice the size when grow), skipping freed names. */
static void intern_rehash(struct intern *in, bool grow)
{
	size_t n = !in->n_slots ? 64 : grow ? in->n_slots * 2 : in->n_slots;
	struct intern_slot *slots = xcalloc(n, sizeof(*slots));
	for (size_t i = 0; i < in->n_slots; i++) {
		uint32_t id = in->slots[i].id;
		if (!id || !in->names[id - 1])
			continue;
		size_t j = in->slots[i].hash & (n - 1);
		while (slots[j].id)
			j = (j + 1) & (n - 1);
		slots[j] = in->slots[i];
	}
	free(in->slots);
	in->slots = slots;
	in->n_slots = n;
}

/* A new id for name: one past its quarantine if any, else the next index. */
static uint32_t intern_new(struct intern *in, const char *name)
{
	uint32_t id;
	if (in->n_free) {
		id = in->free_ids[--in->n_free];
	} else {
		size_t cap = in->cap;
		VEC_PUSH(in->names, in->n, in->cap);
		if (in->cap != cap)
			in->uses = xrealloc(in->uses, in->cap * sizeof(*in->uses));
		id = (uint32_t)in->n;
	}
	in->names[id - 1] = xstrdup(name);
	memset(&in->uses[id - 1], 0, sizeof(in->uses[id - 1]));
	in->n_live++;
	return id;
}

static uint32_t intern_lookup(struct intern *in, const char *name)
{
	if ((in->n_live + 1) * 2 > in->n_slots)
		intern_rehash(in, true);
	uint64_t h = hash_str(name);
	size_t j = h & (in->n_slots - 1);
	while (in->slots[j].id) {
		uint32_t id = in->slots[j].id;
		if (in->slots[j].hash == h && strcmp(in->names[id - 1], name) == 0) {
			in->uses[id - 1].released = false; /* back from quarantine: same name, same id */
			return id;
		}
		j = (j + 1) & (in->n_slots - 1);
	}
	in->slots[j].hash = h;
	in->slots[j].id = intern_new(in, name);
	return in->slots[j].id;
}

uint32_t intern_id(struct intern *in, const char *name)
{
	uint32_t id = intern_lookup(in, name);
	in->uses[id - 1].pinned = true;
	return id;
}

const char *intern_str(struct intern *in, const char *name)
{
	return name ? intern_name(in, intern_id(in, name)) : NULL;
}

uint32_t intern_hold(struct intern *in, const char *name)
{
	uint32_t id = intern_lookup(in, name);
	in->uses[id - 1].refs++;
	return id;
}

const char *intern_hold_str(struct intern *in, const char *name)
{
	return name ? intern_name(in, intern_hold(in, name)) : NULL;
}

const char *intern_name(const struct intern *in, uint32_t id)
{
	return id && id <= in->n ? in->names[id - 1] : NULL;
}

void intern_release(struct intern *in, uint32_t id, uint64_t now)
{
	if (!intern_name(in, id) || !in->uses[id - 1].refs)
		return;
	struct intern_use *u = &in->uses[id - 1];
	if (--u->refs || u->pinned)
		return;
	u->released = true;
	u->released_gen = in->gen;
	u->released_ms = now;
}

void intern_release_str(struct intern *in, const char *str, uint64_t now)
{
	if (!str)
		return;
	uint64_t h = hash_str(str);
	for (size_t j = h & (in->n_slots - 1); in->n_slots && in->slots[j].id;
	     j = (j + 1) & (in->n_slots - 1)) {
		uint32_t id = in->slots[j].id;
		if (in->names[id - 1] == str) {
			intern_release(in, id, now);
			return;
		}
	}
}

size_t intern_collect(struct intern *in, uint64_t now, uint64_t quarantine_ms)
{
	in->gen++;
	size_t freed = 0;
	for (size_t i = 0; i < in->n; i++) {
		struct intern_use *u = &in->uses[i];
		if (!in->names[i] || !u->released || in->gen - u->released_gen < INTERN_QUARANTINE_SYNCS ||
		    now - u->released_ms < quarantine_ms)
			continue;
		free(in->names[i]);
		in->names[i] = NULL;
		in->n_live--;
		*VEC_PUSH(in->free_ids, in->n_free, in->cap_free) = (uint32_t)(i + 1);
		freed++;
	}
	if (freed)
		intern_rehash(in, false);
	return freed;
}

void intern_free(struct intern *in)
{
	for (size_t i = 0; i < in->n; i++)
		free(in->names[i]);
	free(in->names);
	free(in->uses);
	free(in->slots);
	free(in->free_ids);
	memset(in, 0, sizeof(*in));
}

/* ---- lookups ---- */

const struct mc_workload *pod_workload(const struct pod *p)
{
	return p->entry ? p->entry : &p->synth;
}

struct pod *agent_pod_by_name(struct agent *a, const char *ns, const char *name)
{
	for (struct pod *p = a->pods; p; p = p->next)
		if (strcmp(p->ns, ns) == 0 && strcmp(p->name, name) == 0)
			return p;
	return NULL;
}

bool pod_has_addr(const struct pod *p, const struct moat_addr *addr)
{
	return addr_list_has(p->addrs, p->n_addrs, addr);
}

const struct moat_addr *pod_addr_like(const struct pod *p, const struct moat_addr *like)
{
	return p->n_addrs ? addr_list_like(p->addrs, p->n_addrs, like) : &p->addr;
}

struct pod *agent_pod_by_addr(struct agent *a, const struct moat_addr *addr)
{
	for (struct pod *p = a->pods; p; p = p->next)
		if (pod_has_addr(p, addr))
			return p;
	return NULL;
}

static uint32_t service_id(struct agent *a, const struct mc_service_entry *se)
{
	char key[300];
	snprintf(key, sizeof(key), "serviceentry:%s/%s", se->meta.ns, se->meta.name);
	return intern_id(&a->workload_ids, key);
}

static uint32_t workload_id(struct agent *a, const struct mc_workload *w)
{
	char key[300];
	snprintf(key, sizeof(key), "%s/%s", w->meta.ns, w->meta.name);
	return intern_id(&a->workload_ids, key);
}

static void dest_of_pod(struct pod *p, struct dest *d)
{
	d->kind = DEST_WORKLOAD;
	d->wl = pod_workload(p);
	d->local = p;
	d->id = p->workload_id;
	d->ambient = true;
	d->name = p->key;
	d->spiffe_id = p->spiffe_id;
}

/* A learned address (state/addrs.c) is the pod's only when nothing declared claims it,
 * so it is looked up last, as the BPF maps rank it (want_sort_unique). */
static bool lookup_learned(struct agent *a, const struct moat_addr *addr, struct dest *d)
{
	for (struct pod *p = a->pods; p; p = p->next)
		if (pod_has_learned(p, addr)) {
			dest_of_pod(p, d);
			return true;
		}
	return false;
}

bool agent_lookup_dest(struct agent *a, const struct moat_addr *addr, struct dest *d)
{
	memset(d, 0, sizeof(*d));
	struct pod *p = agent_pod_by_addr(a, addr);
	if (p) {
		dest_of_pod(p, d);
		return true;
	}
	const struct mc_workload *w = mc_workload_by_addr(a->cfg, addr);
	if (w) {
		d->kind = DEST_WORKLOAD;
		d->wl = w;
		d->id = workload_id(a, w);
		d->ambient = w->ambient;
		d->name = intern_name(&a->workload_ids, d->id);
		d->spiffe_id = w->spiffe_id;
		return true;
	}
	const struct mc_service_entry *se = mc_service_by_addr(a->cfg, addr);
	if (!se)
		se = agent_service_by_resolved(a, addr);
	if (se) {
		d->kind = DEST_SERVICE;
		d->se = se;
		d->id = service_id(a, se);
		d->name = intern_name(&a->workload_ids, d->id) + strlen("serviceentry:");
		return true;
	}
	return lookup_learned(a, addr, d);
}

uint32_t agent_policy_id(struct agent *a, const struct mc_authz *p)
{
	return p ? intern_id(&a->policy_ids, p->id_name) : 0;
}

static void log_dry_run(const struct authz_decision *d, const char *principal,
			const struct moat_addr *dst_ip, uint16_t port)
{
	for (int i = 0; i < d->n_dry_run; i++) {
		const struct authz_dry_run *r = &d->dry_run[i];
		if (!r->matched)
			continue;
		char dst[ADDR_STRLEN + 8];
		log_info("dry-run: policy %s rule %d would %s %s -> %s (enforced verdict: %s)",
			 r->policy->id_name, r->rule,
			 r->would == MOAT_ACTION_DENY ? "DENY" : "ALLOW",
			 principal ? principal : "plaintext", addr_port_str(dst_ip, port, dst, sizeof(dst)),
			 d->action == MOAT_ACTION_ALLOW ? "ALLOW" : "DENY");
	}
}

void agent_authorize(struct agent *a, const struct dest *d, const struct moat_addr *dst_ip,
		     uint16_t dst_port, const char *principal, const struct moat_addr *src_ip,
		     struct authz_decision *out)
{
	struct authz_target t = {
		.kind = d->kind == DEST_SERVICE ? AUTHZ_TARGET_SERVICE : AUTHZ_TARGET_WORKLOAD,
		.workload = d->wl,
		.service = d->se,
		.ip = *dst_ip,
		.port = dst_port,
	};
	struct authz_peer peer = {.principal = principal};
	if (src_ip) {
		peer.ip = *src_ip;
		peer.has_ip = true;
	}
	authz_evaluate(a->cfg, &t, &peer, out);
	if (out->n_dry_run)
		log_dry_run(out, principal, dst_ip, dst_port);
}

/* ---- sync to BPF ---- */

/* Who wins an address claimed twice: a pod's declared address, then the configuration,
 * then a learned address (which never takes an address from anyone). */
enum want_rank { RANK_LEARNED, RANK_CONFIG, RANK_POD };

struct want_wl {
	struct moat_addr addr;
	struct moat_workload v;
	enum want_rank rank;
};

struct sync_ctx {
	struct agent *a;
	struct want_wl *wl;
	size_t n_wl, cap_wl;
	size_t n_verdicts;
};

static void want_add(struct sync_ctx *s, const struct moat_addr *addr, uint32_t id,
		     uint32_t identity, uint32_t flags, uint32_t mode, const char *name)
{
	struct want_wl *w = VEC_PUSH(s->wl, s->n_wl, s->cap_wl);
	w->rank = flags & MOAT_WL_LOCAL ? RANK_POD : RANK_CONFIG;
	w->addr = *addr;
	w->v.id = id;
	w->v.identity = identity;
	w->v.flags = flags;
	w->v.mtls_mode = mode;
	snprintf(w->v.name, sizeof(w->v.name), "%s", name);
}

/* By address; for one address the best rank first (want_sort_unique keeps it), then the
 * lower workload id (two pods learning one address: a stable winner). */
static int cmp_want(const void *x, const void *y)
{
	const struct want_wl *a = x, *b = y;
	int d = memcmp(a->addr.bytes, b->addr.bytes, 16);
	if (d)
		return d;
	if (a->rank != b->rank)
		return (int)b->rank - (int)a->rank;
	return a->v.id < b->v.id ? -1 : a->v.id > b->v.id;
}

static void want_sort_unique(struct sync_ctx *s)
{
	qsort(s->wl, s->n_wl, sizeof(*s->wl), cmp_want);
	size_t out = 0;
	for (size_t i = 0; i < s->n_wl; i++)
		if (out == 0 || !addr_eq(&s->wl[out - 1].addr, &s->wl[i].addr))
			s->wl[out++] = s->wl[i];
	s->n_wl = out;
}

static uint32_t mtls_flag(enum mc_mtls m)
{
	return m == MC_MTLS_STRICT ? MOAT_MTLS_STRICT : MOAT_MTLS_PERMISSIVE;
}

static void collect_service(void *arg, const struct moat_addr *ip, const struct mc_service_entry *se)
{
	struct sync_ctx *s = arg;
	uint32_t id = service_id(s->a, se);
	want_add(s, ip, id, 0, MOAT_WL_SERVICE, 0, intern_name(&s->a->workload_ids, id) +
							   strlen("serviceentry:"));
}

/* Expand a ServiceEntry CIDR into host entries the connect hook can find (bounded). */
static void collect_cidr(struct sync_ctx *s, const struct cidr *c, const struct mc_service_entry *se)
{
	unsigned host_bits = 128u - c->prefix;
	if (host_bits > 8) {
		char b[64];
		log_warn("ServiceEntry %s/%s: address %s is wider than /24 (/120): only its first "
			 "256 addresses are known to the connect hook; others are decided by moatd",
			 se->meta.ns, se->meta.name, cidr_str(c, b, sizeof(b)));
		host_bits = 8;
	}
	for (unsigned i = 0; i < (1u << host_bits); i++) {
		struct moat_addr a = c->addr;
		a.bytes[15] = (uint8_t)(a.bytes[15] | i);
		collect_service(s, &a, se);
	}
}

/* A pod's declared addresses and those learned on its interface: one workload. */
static void collect_pod(struct sync_ctx *s, struct pod *p)
{
	const struct mesh_config *cfg = s->a->cfg;
	const struct mc_workload *w = pod_workload(p);
	uint32_t flags = MOAT_WL_AMBIENT | MOAT_WL_LOCAL;
	if (authz_has_port_mtls(cfg, w))
		flags |= MOAT_WL_PORT_MTLS;
	uint32_t mode = mtls_flag(authz_mtls_mode(cfg, w, 0, NULL));
	for (size_t i = 0; i < p->n_addrs; i++) /* declared: its WorkloadEntry's, or the enroll's */
		want_add(s, &p->addrs[i], p->workload_id, p->identity_id, flags, mode, p->key);
	const struct moat_addr *learned;
	size_t n = pod_learned_addrs(p, &learned);
	for (size_t i = 0; i < n; i++) {
		want_add(s, &learned[i], p->workload_id, p->identity_id, flags, mode, p->key);
		s->wl[s->n_wl - 1].rank = RANK_LEARNED;
	}
}

static void collect_workloads(struct sync_ctx *s)
{
	struct agent *a = s->a;
	const struct mesh_config *cfg = a->cfg;
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		const struct mc_workload *w = &cfg->workloads[i];
		if (!w->n_addrs)
			continue;
		/* once per workload, not per address: 10,000 of them at every sync */
		uint32_t id = workload_id(a, w), identity = intern_id(&a->identity_ids, w->spiffe_id);
		uint32_t mode = mtls_flag(authz_mtls_mode(cfg, w, 0, NULL));
		const char *name = intern_name(&a->workload_ids, id);
		for (size_t j = 0; j < w->n_addrs; j++)
			want_add(s, &w->addrs[j], id, identity, w->ambient ? MOAT_WL_AMBIENT : 0,
				 mode, name);
	}
	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct mc_service_entry *se = &cfg->services[i];
		for (size_t j = 0; j < se->n_addresses; j++)
			collect_cidr(s, &se->addresses[j], se);
		for (size_t j = 0; j < se->n_endpoints; j++)
			if (se->endpoints[j].is_ip)
				collect_service(s, &se->endpoints[j].ip, se);
	}
	agent_egress_each(a, collect_service, s);
	for (struct pod *p = a->pods; p; p = p->next)
		collect_pod(s, p);
}

static struct wl_map *agent_wl_map(struct agent *a)
{
	if (!a->wl_map)
		a->wl_map = wl_map_new();
	return a->wl_map;
}

/* Only what changed since the last sync reaches the map (state/wl_map.c): a policy change
 * rewrote every address of the cluster, ~65 ms for 10,000 workloads. */
static void write_workloads(struct sync_ctx *s)
{
	struct wl_entry *want = xcalloc(s->n_wl + 1, sizeof(*want));
	for (size_t i = 0; i < s->n_wl; i++) {
		want[i].addr = s->wl[i].addr;
		want[i].v = s->wl[i].v;
	}
	wl_map_sync(agent_wl_map(s->a), s->a->dp, want, s->n_wl);
	free(want);
}

static void write_port_mtls(struct agent *a)
{
	const struct mesh_config *cfg = a->cfg;
	dataplane_port_mtls_clear(a->dp);
	for (struct pod *p = a->pods; p; p = p->next) {
		const struct mc_workload *w = pod_workload(p);
		for (size_t i = 0; i < cfg->n_peer_auths; i++) {
			const struct mc_peer_auth *pa = &cfg->peer_auths[i];
			if (!pa->has_selector || strcmp(pa->meta.ns, w->meta.ns) != 0 ||
			    !mc_workload_selected(w, &pa->selector))
				continue;
			for (size_t j = 0; j < pa->n_port_level; j++) {
				uint16_t port = pa->port_level[j].port;
				struct moat_port_mtls_key k = {.workload = p->workload_id, .port = port};
				struct moat_port_mtls v = {
					.mtls_mode = mtls_flag(authz_mtls_mode(cfg, w, port, NULL))};
				struct err e;
				if (dataplane_port_mtls_put(a->dp, &k, &v, &e) < 0)
					log_error("BPF port_mtls map: %s", e.msg);
			}
		}
	}
}

/* The verdict part of a sync: local pods as sources, every destination with an agent in
 * front or a ServiceEntry, local pods first so the budget keeps them (state/verdicts.c). */
static uint32_t policy_id_cb(void *arg, const struct mc_authz *p)
{
	return agent_policy_id(arg, p);
}

static int sink_update(void *arg, const struct moat_verdict_key *k, const struct moat_verdict *v,
		       size_t n, struct err *e)
{
	return dataplane_verdicts_update(arg, k, v, n, e);
}

static int sink_del(void *arg, const struct moat_verdict_key *k, size_t n, struct err *e)
{
	return dataplane_verdicts_delete(arg, k, n, e);
}

static int sink_clear(void *arg)
{
	return dataplane_verdicts_clear(arg);
}

static int dst_rank(const struct want_wl *w)
{
	if (w->v.flags & MOAT_WL_LOCAL)
		return 0;
	return (w->v.flags & MOAT_WL_SERVICE) ? 1 : 2;
}

/* Destinations are looked up only when the verdict sync gets to them (verdicts_sync). */
static bool resolve_dst(void *arg, struct verdict_dst *vd)
{
	const struct want_wl *w = vd->ref;
	struct dest d;
	if (!agent_lookup_dest(arg, &w->addr, &d))
		return false;
	vd->kind = d.kind == DEST_SERVICE ? AUTHZ_TARGET_SERVICE : AUTHZ_TARGET_WORKLOAD;
	vd->wl = d.wl;
	vd->se = d.se;
	return d.id == vd->id;
}

static void write_verdicts(struct sync_ctx *s)
{
	struct agent *a = s->a;
	size_t n_src = 0, n_dst = 0;
	for (struct pod *p = a->pods; p; p = p->next)
		n_src++;
	struct verdict_src *src = xcalloc(n_src + 1, sizeof(*src));
	struct verdict_dst *dst = xcalloc(s->n_wl + 1, sizeof(*dst));
	n_src = 0;
	for (struct pod *p = a->pods; p; p = p->next) {
		struct verdict_src *vs = &src[n_src++];
		*vs = (struct verdict_src){.id = p->workload_id, .principal = p->principal,
					   .addr = p->addr};
		for (size_t i = 0; i < p->n_addrs && i < MC_WL_MAX_ADDRS; i++)
			vs->addrs[vs->n_addrs++] = p->addrs[i];
	}
	for (int rank = 0; rank < 3; rank++) {
		for (size_t i = 0; i < s->n_wl; i++) {
			const struct want_wl *w = &s->wl[i];
			if (dst_rank(w) != rank || !(w->v.flags & (MOAT_WL_AMBIENT | MOAT_WL_SERVICE)))
				continue; /* no agent in front: nothing to enforce, moatd relays */
			dst[n_dst++] = (struct verdict_dst){.id = w->v.id, .ip = w->addr, .ref = w};
		}
	}
	struct verdict_sink sink = {sink_update, sink_del, sink_clear, a->dp};
	struct err e;
	if (verdicts_sync(a->verdicts, a->cfg, src, n_src, dst, n_dst, resolve_dst, a, a->epoch,
			  policy_id_cb, a, &sink, &e) < 0)
		log_error("BPF verdicts map: %s (rewritten whole at the next sync)", e.msg);
	const struct verdict_stats *st = verdicts_stats(a->verdicts);
	s->n_verdicts = st->entries;
	if (st->pairs_skipped)
		log_warn("verdict cache at its bound (%zu entries): %zu (pod, destination) pairs are "
			 "decided by moatd on connect", st->entries, st->pairs_skipped);
	free(src);
	free(dst);
}

static void write_pods(struct agent *a)
{
	for (struct pod *p = a->pods; p; p = p->next) {
		struct moat_pod v = {.workload = p->workload_id, .identity = p->identity_id};
		snprintf(v.name, sizeof(v.name), "%s", p->key);
		struct err e;
		if (dataplane_pod_put(a->dp, p->netns_cookie, &v, &e) < 0)
			log_error("BPF pods map: %s", e.msg);
	}
}

void agent_put_pod_addrs(struct agent *a, struct pod *p)
{
	struct sync_ctx s = {.a = a};
	collect_pod(&s, p);
	for (size_t i = 0; i < s.n_wl; i++) {
		struct wl_entry e = {.addr = s.wl[i].addr, .v = s.wl[i].v};
		wl_map_put(agent_wl_map(a), a->dp, &e);
	}
	free(s.wl);
}

void agent_sync_dataplane(struct agent *a)
{
	uint64_t t0 = now_ms();
	/* A new epoch invalidates every cached verdict at once: only when the cache is built
	 * from nothing (first sync, or after a failed write). Other syncs change only the
	 * entries whose verdict changed (state/verdicts.c, docs/architecture.md). */
	if (!a->verdicts || verdicts_need_rebuild(a->verdicts)) {
		if (!a->verdicts)
			a->verdicts = verdicts_new(0);
		a->epoch++;
	}
	struct moat_settings st = {
		.epoch = a->epoch,
		.outbound_policy = a->cfg->mesh.outbound == MC_OUTBOUND_REGISTRY_ONLY
					   ? MOAT_OUTBOUND_REGISTRY_ONLY
					   : MOAT_OUTBOUND_ALLOW_ANY,
	};
	/* Where a sync's time goes, in its log line: services, workloads, verdicts (ns). */
	uint64_t t[4];
	t[0] = now_ns();
	agent_services_rebuild(a);
	struct err e;
	if (dataplane_settings_set(a->dp, &st, &e) < 0)
		log_error("BPF settings: %s", e.msg);
	struct sync_ctx s = {.a = a};
	t[1] = now_ns();
	collect_workloads(&s);
	want_sort_unique(&s);
	write_workloads(&s);
	write_port_mtls(a);
	write_pods(a);
	t[2] = now_ns();
	write_verdicts(&s);
	t[3] = now_ns();
	agent_sync_services(a);
	uint64_t svc_ns = (t[1] - t[0]) + (now_ns() - t[3]);
	const struct verdict_stats *vs = verdicts_stats(a->verdicts);
	const struct wl_map_stats *ws = wl_map_stats(a->wl_map);
	log_info("dataplane synced: epoch %llu, %zu addresses (%zu written, %zu deleted), %zu "
		 "verdicts (%zu written, %zu deleted, %zu evaluated; %zu pairs left to moatd: past "
		 "the bound or the verdict depends on the address), %llu ms (services %.1f, "
		 "workloads %.1f, verdicts %.1f)",
		 (unsigned long long)a->epoch, s.n_wl, ws->last_written, ws->last_deleted,
		 s.n_verdicts, vs->last_written,
		 vs->last_deleted, vs->last_evaluated, vs->pairs_skipped,
		 (unsigned long long)(now_ms() - t0), (double)svc_ns / 1e6,
		 (double)(t[2] - t[1]) / 1e6, (double)(t[3] - t[2]) / 1e6);
	free(s.wl);
	/* This sync removed departed pods' ids from the maps it writes: count it toward their
	 * quarantine. */
	uint64_t now = now_ms();
	intern_collect(&a->workload_ids, now, INTERN_QUARANTINE_MS);
	intern_collect(&a->identity_ids, now, INTERN_QUARANTINE_MS);
	intern_collect(&a->strings, now, INTERN_QUARANTINE_MS);
}
