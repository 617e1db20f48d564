/* The kernel's view of the service table (docs/bpf.md "services"): the `services` map
 * (VIP, port) -> service, and one service verdict per (local pod, service, port) in the
 * `verdicts` map under dst_workload = id | MOAT_SERVICE_ID_BIT: ALLOW when some endpoint
 * allows the pod, DENY (reason NO_ENDPOINT) when none does. Written by difference after every
 * dataplane sync, so a reload or an enroll changes only what changed. A (pod, service, port)
 * whose VIPs (IPv4 / IPv6) would decide differently gets no entry: moatd decides it. */
#include <stdlib.h>
#include <string.h>

#include "bpf/dataplane.h"
#include "core/log.h"
#include "state/agent.h"
#include "state/services.h"
#include "state/svc_choice.h"

struct svc_vstate {
	struct moat_verdict_key *k; /* sorted; what the map holds from us */
	struct moat_verdict *v;
	size_t n;
	uint64_t epoch;             /* the epoch those entries carry */
	bool lost;                  /* a write failed: rewrite everything next time */
};

void agent_svc_decide(struct agent *a, const struct pod *p, const struct moat_addr *vip,
		      const struct svc_endpoint *ep, struct svc_ep_verdict *out)
{
	const struct moat_addr *addr = svc_endpoint_addr_like(ep, vip);
	struct dest d;
	*out = (struct svc_ep_verdict){.action = MOAT_ACTION_ALLOW, .reason = MOAT_REASON_ALLOWED};
	if (!agent_lookup_dest(a, addr, &d)) {
		/* As a direct connect to an unregistered address would be decided. */
		if (a->cfg->mesh.outbound == MC_OUTBOUND_REGISTRY_ONLY)
			*out = (struct svc_ep_verdict){.action = MOAT_ACTION_DENY,
						       .reason = MOAT_REASON_UNREGISTERED};
		return;
	}
	if (d.kind != DEST_SERVICE && !d.ambient)
		return; /* a workload without an agent: relayed in plaintext, nothing enforces */
	struct authz_decision dec;
	agent_authorize(a, &d, addr, ep->target_port, p->principal, pod_addr_like(p, addr), &dec);
	out->action = dec.action == MOAT_ACTION_ALLOW ? MOAT_ACTION_ALLOW : MOAT_ACTION_DENY;
	out->reason = dec.reason;
	out->policy = dec.policy ? dec.policy->id_name : NULL;
}

struct decide_ctx {
	struct agent *a;
	const struct pod *p;
	const struct moat_addr *vip;
};

static void decide_cb(void *arg, const struct svc_endpoint *ep, struct svc_ep_verdict *out)
{
	const struct decide_ctx *x = arg;
	agent_svc_decide(x->a, x->p, x->vip, ep, out);
}

size_t agent_svc_decide_port(struct agent *a, const struct pod *p, const struct moat_addr *vip,
			     const struct svc_port *port, struct svc_ep_verdict *v, bool *allowed)
{
	struct decide_ctx x = {a, p, vip};
	return svc_decide_endpoints(port, decide_cb, &x, v, allowed);
}

/* ---- services map ---- */

static bool vip_wanted(const struct svc_table *t, const struct moat_service_key *k)
{
	return svc_lookup(t, &k->addr, k->port, NULL) != NULL;
}

static void write_service_map(struct agent *a)
{
	const struct svc_table *t = a->svcs;
	struct moat_service_key *keys = NULL;
	size_t n = 0;
	if (dataplane_service_keys(a->dp, &keys, &n) == 0)
		for (size_t i = 0; i < n; i++)
			if (!vip_wanted(t, &keys[i]))
				dataplane_service_del(a->dp, &keys[i]);
	free(keys);
	for (size_t i = 0; i < svc_vip_count(t); i++) {
		const struct svc_vip *sv = svc_vip_at(t, i);
		const struct svc *s = &t->svcs[sv->svc_index];
		struct moat_service_key k = {.addr = sv->vip, .port = sv->port};
		struct moat_service v = {.id = sv->id};
		v.flags = (s->kind == SVC_KUBERNETES ? MOAT_SVC_KUBERNETES : 0) |
			  (s->ports[sv->port_index].n_eps ? 0 : MOAT_SVC_NO_ENDPOINTS);
		snprintf(v.name, sizeof(v.name), "%s/%s", s->ns, s->name);
		struct err e;
		if (dataplane_service_put(a->dp, &k, &v, &e) < 0)
			log_error("BPF services map: %s", e.msg);
	}
}

/* ---- service verdicts ---- */

struct want_v {
	struct moat_verdict_key k;
	struct moat_verdict v;
	bool conflict; /* two VIPs of the pair decided differently: no entry */
};

static int cmp_key(const void *x, const void *y)
{
	return memcmp(x, y, sizeof(struct moat_verdict_key));
}

static int cmp_want(const void *x, const void *y)
{
	return cmp_key(&((const struct want_v *)x)->k, &((const struct want_v *)y)->k);
}

static void collect_pod(struct agent *a, const struct pod *p, struct want_v **w, size_t *n,
			size_t *cap)
{
	const struct svc_table *t = a->svcs;
	for (size_t i = 0; i < svc_vip_count(t); i++) {
		const struct svc_vip *sv = svc_vip_at(t, i);
		const struct svc_port *port = &t->svcs[sv->svc_index].ports[sv->port_index];
		size_t ne = port->n_eps ? port->n_eps : 1;
		struct svc_ep_verdict *v = xcalloc(ne, sizeof(*v));
		bool *allowed = xcalloc(ne, sizeof(*allowed));
		size_t n_ok = agent_svc_decide_port(a, p, &sv->vip, port, v, allowed);
		struct svc_ep_verdict pv = svc_port_verdict(port, v, n_ok);
		free(v);
		free(allowed);
		struct want_v *e = VEC_PUSH(*w, *n, *cap);
		memset(e, 0, sizeof(*e));
		e->k = (struct moat_verdict_key){.src_workload = p->workload_id,
						 .dst_workload = sv->id | MOAT_SERVICE_ID_BIT,
						 .dst_port = sv->port};
		e->v = (struct moat_verdict){.action = pv.action, .reason = pv.reason,
					     .policy = pv.policy ? intern_id(&a->policy_ids, pv.policy)
								 : 0,
					     .epoch = a->epoch};
	}
}

/* Sort, and fold the VIPs of one (pod, service, port): equal actions stand, different ones
 * leave the pair to moatd. */
static size_t fold_wanted(struct want_v *w, size_t n)
{
	if (n == 0)
		return 0; /* w may be NULL: qsort's pointer must not be */
	qsort(w, n, sizeof(*w), cmp_want);
	size_t out = 0;
	for (size_t i = 0; i < n; i++) {
		if (out && cmp_key(&w[out - 1].k, &w[i].k) == 0) {
			if (w[out - 1].v.action != w[i].v.action)
				w[out - 1].conflict = true;
			continue;
		}
		w[out++] = w[i];
	}
	size_t kept = 0;
	for (size_t i = 0; i < out; i++)
		if (!w[i].conflict)
			w[kept++] = w[i];
	return kept;
}

static bool same_verdict(const struct moat_verdict *x, const struct moat_verdict *y)
{
	return x->action == y->action && x->reason == y->reason && x->policy == y->policy &&
	       x->epoch == y->epoch;
}

/* Merge old (st) and new (w): deletions and writes, as batches. */
static int write_diff(struct agent *a, struct svc_vstate *st, const struct want_v *w, size_t n,
		      struct err *e)
{
	struct moat_verdict_key *del = xcalloc(st->n + 1, sizeof(*del));
	struct moat_verdict_key *uk = xcalloc(n + 1, sizeof(*uk));
	struct moat_verdict *uv = xcalloc(n + 1, sizeof(*uv));
	size_t nd = 0, nu = 0, i = 0, j = 0;
	while (i < st->n || j < n) {
		int d = i == st->n ? 1 : j == n ? -1 : cmp_key(&st->k[i], &w[j].k);
		if (d < 0) {
			del[nd++] = st->k[i++];
		} else if (d > 0 || !same_verdict(&st->v[i], &w[j].v)) {
			uk[nu] = w[j].k;
			uv[nu++] = w[j].v;
			i += d == 0;
			j++;
		} else {
			i++;
			j++;
		}
	}
	int rc = 0;
	if (nd)
		rc = dataplane_verdicts_delete(a->dp, del, nd, e);
	if (rc == 0 && nu)
		rc = dataplane_verdicts_update(a->dp, uk, uv, nu, e);
	free(del);
	free(uk);
	free(uv);
	return rc;
}

static void write_service_verdicts(struct agent *a)
{
	if (!a->svc_vstate)
		a->svc_vstate = xcalloc(1, sizeof(*a->svc_vstate));
	struct svc_vstate *st = a->svc_vstate;
	struct want_v *w = NULL;
	size_t n = 0, cap = 0;
	for (struct pod *p = a->pods; p; p = p->next)
		collect_pod(a, p, &w, &n, &cap);
	n = fold_wanted(w, n);
	/* A new epoch (the verdict cache was rebuilt: the map may have been cleared) or a
	 * failed write: rewrite everything. */
	if (st->lost || st->epoch != a->epoch)
		st->n = 0;
	struct err e;
	if (write_diff(a, st, w, n, &e) < 0) {
		log_error("BPF verdicts map (service verdicts): %s (rewritten at the next sync)",
			  e.msg);
		st->lost = true;
	} else {
		st->lost = false;
	}
	st->k = xrealloc(st->k, (n + 1) * sizeof(*st->k));
	st->v = xrealloc(st->v, (n + 1) * sizeof(*st->v));
	for (size_t i = 0; i < n; i++) {
		st->k[i] = w[i].k;
		st->v[i] = w[i].v;
	}
	st->n = n;
	st->epoch = a->epoch;
	free(w);
}

void agent_sync_services(struct agent *a)
{
	write_service_map(a);
	write_service_verdicts(a);
}

void agent_svc_state_free(struct agent *a)
{
	if (!a->svc_vstate)
		return;
	free(a->svc_vstate->k);
	free(a->svc_vstate->v);
	free(a->svc_vstate);
	a->svc_vstate = NULL;
}

bool agent_svc_deny_why(struct agent *a, const struct pod *p, const struct moat_addr *vip,
			uint16_t port, struct sbuf *why, const char **policy, const char **name)
{
	const struct svc_port *sp;
	const struct svc *s = svc_lookup(a->svcs, vip, port, &sp);
	if (!s)
		return false;
	size_t ne = sp->n_eps ? sp->n_eps : 1;
	struct svc_ep_verdict *v = xcalloc(ne, sizeof(*v));
	bool *allowed = xcalloc(ne, sizeof(*allowed));
	size_t n_ok = agent_svc_decide_port(a, p, vip, sp, v, allowed);
	struct svc_ep_verdict pv = svc_port_verdict(sp, v, n_ok);
	sbuf_printf(why, "service %s (%s/%s) port %u: ", s->host, s->ns, s->name, port);
	if (n_ok)
		sbuf_puts(why, "an endpoint allows this source now; ");
	else
		sbuf_puts(why, "no endpoint allows this source: ");
	svc_deny_summary(sp, v, why);
	*policy = pv.policy;
	*name = s->host;
	free(v);
	free(allowed);
	return true;
}
