/* The service table (services.h): built whole from a snapshot and the local pods, then
 * read-only; lookups by (VIP, port) are a binary search over a sorted index. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/services.h"

static int vip_cmp(const struct moat_addr *a, uint16_t pa, const struct moat_addr *b,
		   uint16_t pb)
{
	int d = memcmp(a->bytes, b->bytes, sizeof(a->bytes));
	return d ? d : (pa > pb) - (pa < pb);
}

/* What a service selects with, whichever kind it is. */
struct selector {
	const char *ns;
	const struct mc_labels *labels;
};

static bool pod_selected(const struct svc_local_pod *p, const struct selector *sel)
{
	return !p->entry && !strcmp(p->ns, sel->ns) && p->labels &&
	       mc_labels_selected(sel->labels, p->labels, p->meta_labels);
}

static bool wl_selected(const struct mc_workload *w, const struct selector *sel)
{
	return !strcmp(w->meta.ns, sel->ns) && mc_workload_selected(w, sel->labels);
}

static const struct mc_port *wl_port(const struct mc_workload *w, const char *name)
{
	for (size_t i = 0; name && i < w->n_ports; i++)
		if (!strcmp(w->ports[i].name, name))
			return &w->ports[i];
	return NULL;
}

/* The port a workload receives a service port on; 0: it is not an endpoint of that port.
 * Service: a named targetPort through the workload's ports map, else the number.
 * ServiceEntry (Istio): the workload's ports[<service port name>], else targetPort, else
 * the port itself. */
static uint16_t target_of(const struct svc *s, const struct svc_port *sp,
			  const struct mc_workload *w)
{
	if (s->kind == SVC_SERVICE_ENTRY) {
		const struct mc_port *mp = w ? wl_port(w, sp->name) : NULL;
		return mp ? mp->number : sp->target_port ? sp->target_port : sp->port;
	}
	if (!sp->target_name)
		return sp->target_port;
	const struct mc_port *mp = w ? wl_port(w, sp->target_name) : NULL;
	return mp ? mp->number : 0;
}

static struct svc_endpoint *ep_push(struct svc_port *sp, size_t *cap, const char *ns,
				    const char *name, const struct moat_addr *addrs, size_t n)
{
	struct svc_endpoint *e = VEC_PUSH(sp->eps, sp->n_eps, *cap);
	memset(e, 0, sizeof(*e));
	e->name = xasprintf("%s/%s", ns, name);
	e->n_addrs = n < MC_WL_MAX_ADDRS ? n : MC_WL_MAX_ADDRS;
	memcpy(e->addrs, addrs, e->n_addrs * sizeof(*addrs));
	return e;
}

static int cmp_ep(const void *a, const void *b)
{
	return strcmp(((const struct svc_endpoint *)a)->name, ((const struct svc_endpoint *)b)->name);
}

/* The workloads and pods one service selects (indexes), found once per service. */
struct selection {
	size_t *wl, n_wl;
	size_t *pod, n_pod;
};

/* Per build: every (namespace, label key, label value) of every WorkloadEntry as selectors
 * see it (spec.labels, then metadata.labels for keys spec.labels lacks), sorted, so a
 * selector's first label narrows its candidates to one binary-searched range (1,000
 * Services over 10,000 WorkloadEntries: each looks at its own ~100, not all). */
struct svc_label_ref {
	const char *ns, *key, *value;
	size_t wl;
};

struct build_ctx {
	const struct mesh_config *c;
	const struct svc_local_pod *pods;
	size_t n_pods;
	const struct svc_label_ref *labels; /* the table's label_index */
	size_t n_labels;
};

static int cmp_label_ref(const void *a, const void *b)
{
	const struct svc_label_ref *x = a, *y = b;
	int d = strcmp(x->ns, y->ns);
	if (!d)
		d = strcmp(x->key, y->key);
	if (!d)
		d = strcmp(x->value, y->value);
	return d ? d : (x->wl > y->wl) - (x->wl < y->wl);
}

/* The label index of t's snapshot: prev's copied when it is of the same snapshot (an
 * enroll or unenroll), else built; none at all without services to select for. */
static void index_labels(struct svc_table *t, const struct svc_table *prev, size_t n_svcs)
{
	const struct mesh_config *c = t->cfg;
	size_t cap = 0;
	if (!n_svcs)
		return;
	if (prev && prev->cfg == c && prev->label_index) {
		t->n_label_index = prev->n_label_index;
		t->label_index = xcalloc(t->n_label_index, sizeof(*t->label_index));
		memcpy(t->label_index, prev->label_index, t->n_label_index * sizeof(*t->label_index));
		return;
	}
	for (size_t i = 0; i < c->n_workloads; i++) {
		const struct mc_workload *w = &c->workloads[i];
		for (size_t j = 0; j < w->labels.n; j++)
			*VEC_PUSH(t->label_index, t->n_label_index, cap) = (struct svc_label_ref){
				w->meta.ns, w->labels.items[j].key, w->labels.items[j].value, i};
		for (size_t j = 0; j < w->meta.labels.n; j++)
			if (!mc_label_get(&w->labels, w->meta.labels.items[j].key))
				*VEC_PUSH(t->label_index, t->n_label_index, cap) =
					(struct svc_label_ref){w->meta.ns, w->meta.labels.items[j].key,
							       w->meta.labels.items[j].value, i};
	}
	if (t->n_label_index)
		qsort(t->label_index, t->n_label_index, sizeof(*t->label_index), cmp_label_ref);
}

/* The first index entry not below (ns, key, value). */
static size_t label_start(const struct build_ctx *b, const struct svc_label_ref *want)
{
	size_t lo = 0, hi = b->n_labels;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (cmp_label_ref(&b->labels[mid], want) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void select_all(const struct build_ctx *b, const struct selector *sel,
		       struct selection *out)
{
	size_t cap = 0, pcap = 0;
	memset(out, 0, sizeof(*out));
	if (!sel->labels->n) /* no selector: no endpoints (Kubernetes: managed by hand) */
		return;
	const struct mc_label *first = &sel->labels->items[0];
	struct svc_label_ref want = {sel->ns, first->key, first->value, 0};
	for (size_t k = label_start(b, &want); k < b->n_labels; k++) {
		const struct svc_label_ref *r = &b->labels[k];
		if (strcmp(r->ns, want.ns) || strcmp(r->key, want.key) || strcmp(r->value, want.value))
			break;
		if (wl_selected(&b->c->workloads[r->wl], sel))
			*VEC_PUSH(out->wl, out->n_wl, cap) = r->wl;
	}
	for (size_t i = 0; i < b->n_pods; i++)
		if (pod_selected(&b->pods[i], sel))
			*VEC_PUSH(out->pod, out->n_pod, pcap) = i;
}

/* One port's endpoints among the selection. */
static void fill_port(const struct build_ctx *b, const struct selection *sel,
		      const struct svc *s, struct svc_port *sp)
{
	size_t cap = 0;
	for (size_t i = 0; i < sel->n_wl; i++) {
		const struct mc_workload *w = &b->c->workloads[sel->wl[i]];
		uint16_t tp = target_of(s, sp, w);
		if (!tp)
			continue;
		struct svc_endpoint *e = ep_push(sp, &cap, w->meta.ns, w->meta.name, w->addrs,
						 w->n_addrs);
		e->wl = w;
		e->target_port = tp;
		e->weight = w->weight;
	}
	for (size_t i = 0; i < sel->n_pod; i++) {
		const struct svc_local_pod *p = &b->pods[sel->pod[i]];
		uint16_t tp = target_of(s, sp, NULL);
		if (!tp)
			continue;
		struct svc_endpoint *e = ep_push(sp, &cap, p->ns, p->name, p->addrs, p->n_addrs);
		e->pod = true;
		e->target_port = tp;
		e->weight = 1;
	}
	if (sp->n_eps)
		qsort(sp->eps, sp->n_eps, sizeof(*sp->eps), cmp_ep);
}

static void svc_warn(struct mc_findings *f, const struct svc *s, const char *field,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void svc_warn(struct mc_findings *f, const struct svc *s, const char *field,
		     const char *fmt, ...)
{
	char object[512];
	snprintf(object, sizeof(object), "%s/%s", s->ns, s->name);
	va_list ap;
	va_start(ap, fmt);
	mc_finding_vadd(f, MC_WARNING, s->file, s->line,
			s->kind == SVC_KUBERNETES ? "Service" : "ServiceEntry", object, 0, field, fmt,
			ap);
	va_end(ap);
}

/* Lint: what a person probably did not mean (docs/config.md "Services"). */
static void lint_svc(const struct svc *s, size_t selected, const size_t *port_index,
		     struct mc_findings *f)
{
	char field[96];
	if (!selected) {
		svc_warn(f, s, s->kind == SVC_KUBERNETES ? "spec.selector"
							 : "spec.workloadSelector.labels",
			 "selects no WorkloadEntry and no pod enrolled here in namespace %s: "
			 "connections to it have no endpoint", s->ns);
		return;
	}
	for (size_t i = 0; i < s->n_ports; i++) {
		const struct svc_port *sp = &s->ports[i];
		uint64_t total = 0;
		for (size_t j = 0; j < sp->n_eps; j++)
			total += sp->eps[j].weight;
		snprintf(field, sizeof(field), "spec.ports[%zu]%s", port_index[i],
			 sp->target_name ? ".targetPort" : "");
		if (!sp->n_eps && sp->target_name)
			svc_warn(f, s, field, "port %u: no selected endpoint declares the port name "
				 "\"%s\" (WorkloadEntry spec.ports): the port has no endpoint",
				 sp->port, sp->target_name);
		else if (sp->n_eps && !total)
			svc_warn(f, s, field, "port %u: every endpoint has weight 0: none is ever "
				 "chosen", sp->port);
	}
}

static void add_port(struct svc *s, size_t *cap, uint16_t port, const char *name,
		     const char *target_name, uint16_t target_port)
{
	struct svc_port *sp = VEC_PUSH(s->ports, s->n_ports, *cap);
	*sp = (struct svc_port){.port = port, .name = name, .target_name = target_name,
				.target_port = target_port};
}

static void set_origin(struct svc *s, enum svc_kind kind, const struct mc_meta *m)
{
	s->kind = kind;
	s->name = m->name;
	s->ns = m->ns;
	s->file = m->file;
	s->line = m->line;
}

static void from_kservice(const struct mesh_config *c, const struct mc_kservice *k,
			  struct svc *s, size_t *port_index)
{
	size_t cap = 0;
	set_origin(s, SVC_KUBERNETES, &k->meta);
	s->k = k;
	s->host = xasprintf("%s.%s.svc.%s", k->meta.name, k->meta.ns, c->mesh.trust_domain);
	s->vips = xcalloc(k->n_vips + 1, sizeof(*s->vips));
	memcpy(s->vips, k->vips, k->n_vips * sizeof(*s->vips));
	s->n_vips = k->n_vips;
	for (size_t i = 0; i < k->n_ports; i++) {
		const struct mc_svc_port *p = &k->ports[i];
		if (!p->tcp)
			continue;
		port_index[s->n_ports] = i;
		add_port(s, &cap, p->port, p->name, p->target_name, p->target_port);
	}
}

static void from_service_entry(const struct mc_service_entry *se, struct svc *s,
			       size_t *port_index)
{
	size_t cap = 0;
	set_origin(s, SVC_SERVICE_ENTRY, &se->meta);
	s->se = se;
	s->host = xstrdup(se->hosts.n ? se->hosts.items[0] : se->meta.name);
	s->vips = xcalloc(se->n_addresses + 1, sizeof(*s->vips));
	for (size_t i = 0; i < se->n_addresses; i++)
		if (se->addresses[i].prefix == 128) /* single addresses only (load.c) */
			s->vips[s->n_vips++] = se->addresses[i].addr;
	for (size_t i = 0; i < se->n_ports; i++) {
		port_index[s->n_ports] = i;
		add_port(s, &cap, se->ports[i].number, se->ports[i].name, NULL,
			 se->ports[i].target_port);
	}
}

static void fill_svc(const struct build_ctx *b, struct svc *s, const size_t *port_index,
		     struct mc_findings *f)
{
	struct selector sel = {
		.ns = s->ns,
		.labels = s->k ? &s->k->selector : &s->se->workload_selector,
	};
	struct selection chosen;
	select_all(b, &sel, &chosen);
	for (size_t i = 0; i < s->n_ports; i++)
		fill_port(b, &chosen, s, &s->ports[i]);
	/* A Service without a selector was reported at load ("no selector"). */
	if (sel.labels->n)
		lint_svc(s, chosen.n_wl + chosen.n_pod, port_index, f);
	free(chosen.wl);
	free(chosen.pod);
}

static int cmp_svc_name(const void *a, const void *b)
{
	const struct svc *x = *(struct svc *const *)a, *y = *(struct svc *const *)b;
	int d = strcmp(x->ns, y->ns);
	if (!d)
		d = strcmp(x->name, y->name);
	return d ? d : (int)x->kind - (int)y->kind;
}

/* prev's service with s's kind, namespace and name (sorted: one binary search each). */
static const struct svc *prev_of(struct svc *const *sorted, size_t n, const struct svc *s)
{
	struct svc *const *hit = bsearch(&s, sorted, n, sizeof(*sorted), cmp_svc_name);
	return hit ? *hit : NULL;
}

/* Ids: a service keeps the one it had in prev; new ones take the smallest free. */
static void assign_ids(struct svc_table *t, const struct svc_table *prev)
{
	size_t max = t->n_svcs, n_prev = prev ? prev->n_svcs : 0;
	struct svc **sorted = xcalloc(n_prev + 1, sizeof(*sorted));
	for (size_t i = 0; i < n_prev; i++)
		sorted[i] = &prev->svcs[i];
	qsort(sorted, n_prev, sizeof(*sorted), cmp_svc_name);
	for (size_t i = 0; i < t->n_svcs; i++) {
		const struct svc *old = prev_of(sorted, n_prev, &t->svcs[i]);
		if (old) {
			t->svcs[i].id = old->id;
			max = old->id > max ? old->id : max;
		}
	}
	free(sorted);
	t->n_by_id = max;
	t->by_id = xcalloc(max + 1, sizeof(*t->by_id));
	for (size_t i = 0; i < t->n_svcs; i++)
		if (t->svcs[i].id)
			t->by_id[t->svcs[i].id - 1] = &t->svcs[i];
	uint32_t next = 1;
	for (size_t i = 0; i < t->n_svcs; i++) {
		if (t->svcs[i].id)
			continue;
		while (t->by_id[next - 1])
			next++;
		t->svcs[i].id = next;
		t->by_id[next - 1] = &t->svcs[i];
	}
}

static int cmp_vip(const void *a, const void *b)
{
	const struct svc_vip *x = a, *y = b;
	return vip_cmp(&x->vip, x->port, &y->vip, y->port);
}

static void build_index(struct svc_table *t)
{
	size_t n = 0, cap = 0;
	for (size_t i = 0; i < t->n_svcs; i++)
		n += t->svcs[i].n_vips * t->svcs[i].n_ports;
	t->vips = xcalloc(n + 1, sizeof(*t->vips));
	cap = n + 1;
	for (size_t i = 0; i < t->n_svcs; i++) {
		const struct svc *s = &t->svcs[i];
		for (size_t v = 0; v < s->n_vips; v++)
			for (size_t p = 0; p < s->n_ports; p++)
				*VEC_PUSH(t->vips, t->n_vips, cap) = (struct svc_vip){
					.vip = s->vips[v],
					.port = s->ports[p].port,
					.id = s->id,
					.svc_index = (uint32_t)i,
					.port_index = (uint32_t)p,
				};
	}
	qsort(t->vips, t->n_vips, sizeof(*t->vips), cmp_vip);
}

struct svc_table *svc_table_build(const struct mesh_config *c, const struct svc_local_pod *pods,
				  size_t n_pods, const struct svc_table *prev,
				  struct mc_findings *f)
{
	struct svc_table *t = xcalloc(1, sizeof(*t));
	t->refs = 1;
	t->cfg = mesh_config_ref((struct mesh_config *)c);
	size_t n = c->n_kservices;
	for (size_t i = 0; i < c->n_services; i++)
		n += c->services[i].has_workload_selector;
	t->svcs = xcalloc(n + 1, sizeof(*t->svcs));
	index_labels(t, prev, n);
	struct build_ctx b = {.c = c, .pods = pods, .n_pods = n_pods, .labels = t->label_index,
			      .n_labels = t->n_label_index};
	size_t port_index[MC_MAX_SERVICE_PORTS + 1];
	for (size_t i = 0; i < c->n_kservices; i++) {
		struct svc *s = &t->svcs[t->n_svcs++];
		from_kservice(c, &c->kservices[i], s, port_index);
		fill_svc(&b, s, port_index, &t->findings);
	}
	for (size_t i = 0; i < c->n_services; i++) {
		if (!c->services[i].has_workload_selector)
			continue;
		struct svc *s = &t->svcs[t->n_svcs++];
		from_service_entry(&c->services[i], s, port_index);
		fill_svc(&b, s, port_index, &t->findings);
	}
	assign_ids(t, prev);
	build_index(t);
	if (f)
		mc_findings_append(f, &t->findings);
	return t;
}

struct svc_table *svc_table_ref(struct svc_table *t)
{
	if (t)
		t->refs++;
	return t;
}

static void svc_free(struct svc *s)
{
	for (size_t i = 0; i < s->n_ports; i++) {
		for (size_t j = 0; j < s->ports[i].n_eps; j++)
			free(s->ports[i].eps[j].name);
		free(s->ports[i].eps);
	}
	free(s->ports);
	free(s->vips);
	free(s->host);
}

void svc_table_unref(struct svc_table *t)
{
	if (!t || --t->refs > 0)
		return;
	for (size_t i = 0; i < t->n_svcs; i++)
		svc_free(&t->svcs[i]);
	free(t->svcs);
	free(t->vips);
	free(t->by_id);
	mc_findings_free(&t->findings);
	free(t->label_index);
	mesh_config_unref(t->cfg);
	free(t);
}

const struct svc *svc_lookup(const struct svc_table *t, const struct moat_addr *vip,
			     uint16_t port, const struct svc_port **port_out)
{
	size_t lo = 0, hi = t ? t->n_vips : 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct svc_vip *v = &t->vips[mid];
		int d = vip_cmp(&v->vip, v->port, vip, port);
		if (d == 0) {
			const struct svc *s = &t->svcs[v->svc_index];
			if (port_out)
				*port_out = &s->ports[v->port_index];
			return s;
		}
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const struct svc *svc_by_id(const struct svc_table *t, uint32_t id)
{
	return t && id >= 1 && id <= t->n_by_id ? t->by_id[id - 1] : NULL;
}

const struct svc *svc_by_name(const struct svc_table *t, const char *ns, const char *name)
{
	for (size_t i = 0; t && i < t->n_svcs; i++)
		if (!strcmp(t->svcs[i].ns, ns) && !strcmp(t->svcs[i].name, name))
			return &t->svcs[i];
	return NULL;
}

size_t svc_count(const struct svc_table *t)
{
	return t ? t->n_svcs : 0;
}

size_t svc_vip_count(const struct svc_table *t)
{
	return t ? t->n_vips : 0;
}

const struct svc_vip *svc_vip_at(const struct svc_table *t, size_t i)
{
	return &t->vips[i];
}

int svc_pick(const struct svc_port *p, const bool *allowed, uint64_t rnd)
{
	uint64_t total = 0;
	for (size_t i = 0; i < p->n_eps; i++)
		if (!allowed || allowed[i])
			total += p->eps[i].weight;
	if (total == 0)
		return -1;
	uint64_t r = rnd % total;
	for (size_t i = 0; i < p->n_eps; i++) {
		if (allowed && !allowed[i])
			continue;
		if (r < p->eps[i].weight)
			return (int)i;
		r -= p->eps[i].weight;
	}
	return -1;
}

const struct moat_addr *svc_endpoint_addr_like(const struct svc_endpoint *e,
					       const struct moat_addr *vip)
{
	return addr_list_like(e->addrs, e->n_addrs, vip);
}
