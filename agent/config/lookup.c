/* Lookups over a snapshot. Address lookups of workloads (the per-connection path) use an
 * index built once per snapshot; the others are linear scans over small lists. */
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "config/config_internal.h"

static const struct moat_addr *index_addr(const struct mesh_config *c, uint32_t e)
{
	return &c->workloads[e / MC_WL_MAX_ADDRS].addrs[e % MC_WL_MAX_ADDRS];
}

/* qsort_r comparator: (workload, address) entries by address, then load order (so the first
 * of two workloads claiming one address comes first: load.c reports the second). */
static int cmp_wl_addr(const void *x, const void *y, void *arg)
{
	const struct mesh_config *c = arg;
	uint32_t ex = *(const uint32_t *)x, ey = *(const uint32_t *)y;
	int d = memcmp(index_addr(c, ex)->bytes, index_addr(c, ey)->bytes, 16);
	return d ? d : (ex > ey) - (ex < ey);
}

void mc_build_indexes(struct mesh_config *c)
{
	size_t n = 0;
	for (size_t i = 0; i < c->n_workloads; i++)
		n += c->workloads[i].n_addrs;
	c->wl_by_addr = xcalloc(n ? n : 1, sizeof(*c->wl_by_addr));
	c->n_wl_by_addr = 0;
	for (size_t i = 0; i < c->n_workloads; i++)
		for (size_t j = 0; j < c->workloads[i].n_addrs; j++)
			c->wl_by_addr[c->n_wl_by_addr++] = (uint32_t)(i * MC_WL_MAX_ADDRS + j);
	qsort_r(c->wl_by_addr, c->n_wl_by_addr, sizeof(*c->wl_by_addr), cmp_wl_addr, c);
}

const struct mc_workload *mc_workload_by_addr(const struct mesh_config *c, const struct moat_addr *a)
{
	size_t lo = 0, hi = c->n_wl_by_addr;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int d = memcmp(index_addr(c, c->wl_by_addr[mid])->bytes, a->bytes, 16);
		if (d == 0)
			return &c->workloads[c->wl_by_addr[mid] / MC_WL_MAX_ADDRS];
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

bool mc_workload_has_addr(const struct mc_workload *w, const struct moat_addr *a)
{
	return addr_list_has(w->addrs, w->n_addrs, a);
}

const struct moat_addr *mc_workload_addr_like(const struct mc_workload *w, const struct moat_addr *a)
{
	return w->n_addrs ? addr_list_like(w->addrs, w->n_addrs, a) : &w->address;
}

const struct mc_workload *mc_workload_by_name(const struct mesh_config *c, const char *ns,
					      const char *name)
{
	for (size_t i = 0; i < c->n_workloads; i++)
		if (!strcmp(c->workloads[i].meta.ns, ns) && !strcmp(c->workloads[i].meta.name, name))
			return &c->workloads[i];
	return NULL;
}

const struct mc_namespace *mc_namespace_by_name(const struct mesh_config *c, const char *ns)
{
	for (size_t i = 0; i < c->n_namespaces; i++)
		if (!strcmp(c->namespaces[i].meta.name, ns))
			return &c->namespaces[i];
	return NULL;
}

const struct mc_service_entry *mc_service_by_addr(const struct mesh_config *c,
						  const struct moat_addr *a)
{
	for (size_t i = 0; i < c->n_services; i++) {
		const struct mc_service_entry *se = &c->services[i];
		for (size_t j = 0; j < se->n_addresses; j++)
			if (cidr_contains(&se->addresses[j], a))
				return se;
		for (size_t j = 0; j < se->n_endpoints; j++)
			if (se->endpoints[j].is_ip && addr_eq(&se->endpoints[j].ip, a))
				return se;
	}
	return NULL;
}

const struct mc_service_entry *mc_service_by_name(const struct mesh_config *c, const char *ns,
						  const char *name)
{
	for (size_t i = 0; i < c->n_services; i++)
		if (!strcmp(c->services[i].meta.ns, ns) && !strcmp(c->services[i].meta.name, name))
			return &c->services[i];
	return NULL;
}

const struct mc_kservice *mc_kservice_by_name(const struct mesh_config *c, const char *ns,
					      const char *name)
{
	for (size_t i = 0; i < c->n_kservices; i++)
		if (!strcmp(c->kservices[i].meta.ns, ns) && !strcmp(c->kservices[i].meta.name, name))
			return &c->kservices[i];
	return NULL;
}

bool mc_service_has_port(const struct mc_service_entry *se, uint16_t port)
{
	for (size_t i = 0; i < se->n_ports; i++)
		if (se->ports[i].number == port)
			return true;
	return false;
}

const char *mc_label_get(const struct mc_labels *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->items[i].key, key))
			return l->items[i].value;
	return NULL;
}

bool mc_labels_match(const struct mc_labels *selector, const struct mc_labels *labels)
{
	for (size_t i = 0; i < selector->n; i++) {
		const char *v = mc_label_get(labels, selector->items[i].key);
		if (!v || strcmp(v, selector->items[i].value) != 0)
			return false;
	}
	return true;
}

bool mc_labels_selected(const struct mc_labels *selector, const struct mc_labels *labels,
			const struct mc_labels *fallback)
{
	for (size_t i = 0; i < selector->n; i++) {
		const char *key = selector->items[i].key;
		const char *v = mc_label_get(labels, key);
		if (!v && fallback)
			v = mc_label_get(fallback, key);
		if (!v || strcmp(v, selector->items[i].value) != 0)
			return false;
	}
	return true;
}

bool mc_workload_selected(const struct mc_workload *w, const struct mc_labels *selector)
{
	return mc_labels_selected(selector, &w->labels, &w->meta.labels);
}

/* Every load builds one per WorkloadEntry (10,000 at scale): concatenated, not printed. */
char *mc_spiffe_id(const struct mesh_config *c, const char *ns, const char *sa)
{
	const char *parts[] = {"spiffe://", c->mesh.trust_domain, "/ns/", ns, "/sa/", sa};
	size_t len[ARRAY_SIZE(parts)], total = 1;
	for (size_t i = 0; i < ARRAY_SIZE(parts); i++)
		total += len[i] = strlen(parts[i]);
	char *out = xmalloc(total), *p = out;
	for (size_t i = 0; i < ARRAY_SIZE(parts); i++) {
		memcpy(p, parts[i], len[i]);
		p += len[i];
	}
	*p = 0;
	return out;
}
