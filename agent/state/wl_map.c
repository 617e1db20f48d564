/* The workloads map by difference: see wl_map.h. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "state/wl_map.h"

struct wl_map {
	struct wl_entry *e; /* what the map holds, by address */
	size_t n, cap;
	bool lost;          /* never synced, or a write/delete failed: reconcile whole */
	struct wl_map_stats st;
};

struct wl_map *wl_map_new(void)
{
	struct wl_map *m = xcalloc(1, sizeof(*m));
	m->lost = true;
	return m;
}

void wl_map_free(struct wl_map *m)
{
	if (!m)
		return;
	free(m->e);
	free(m);
}

const struct wl_map_stats *wl_map_stats(const struct wl_map *m)
{
	return &m->st;
}

static int addr_cmp(const struct moat_addr *a, const struct moat_addr *b)
{
	return memcmp(a->bytes, b->bytes, sizeof(a->bytes));
}

static bool put(struct wl_map *m, struct dataplane *dp, const struct wl_entry *e)
{
	struct err err;
	if (dataplane_workload_put(dp, &e->addr, &e->v, &err) == 0) {
		m->st.last_written++;
		return true;
	}
	log_error("BPF workloads map: %s", err.msg);
	m->lost = true;
	return false;
}

static void del(struct wl_map *m, struct dataplane *dp, const struct moat_addr *a)
{
	/* (A key already gone counts as deleted.) A failure leaves a stale address in the map
	 * that the mirror no longer lists: the next sync reconciles whole. */
	if (dataplane_workload_del(dp, a) == 0)
		m->st.last_deleted++;
	else
		m->lost = true;
}

static bool wanted(const struct wl_entry *want, size_t n, const struct moat_addr *a)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int d = addr_cmp(&want[mid].addr, a);
		if (d == 0)
			return true;
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* Every key the map holds that is not wanted goes, every wanted entry is written. */
static void reconcile(struct wl_map *m, struct dataplane *dp, const struct wl_entry *want,
		      size_t n)
{
	struct moat_addr *keys = NULL;
	size_t nk = 0;
	m->lost = false;
	if (dataplane_workload_keys(dp, &keys, &nk) == 0)
		for (size_t i = 0; i < nk; i++)
			if (!wanted(want, n, &keys[i]))
				del(m, dp, &keys[i]);
	free(keys);
	for (size_t i = 0; i < n; i++)
		put(m, dp, &want[i]);
}

/* Merge the two sorted sets: gone -> delete, new or changed -> write, equal -> nothing. */
static void difference(struct wl_map *m, struct dataplane *dp, const struct wl_entry *want,
		       size_t n)
{
	size_t i = 0, j = 0;
	while (i < m->n || j < n) {
		int d = i == m->n ? 1 : j == n ? -1 : addr_cmp(&m->e[i].addr, &want[j].addr);
		if (d < 0) {
			del(m, dp, &m->e[i++].addr);
		} else if (d > 0) {
			put(m, dp, &want[j++]);
		} else {
			if (memcmp(&m->e[i].v, &want[j].v, sizeof(want[j].v)) != 0)
				put(m, dp, &want[j]);
			i++, j++;
		}
	}
}

void wl_map_sync(struct wl_map *m, struct dataplane *dp, const struct wl_entry *want, size_t n)
{
	m->st.last_written = m->st.last_deleted = 0;
	m->st.last_full = m->lost;
	if (m->lost)
		reconcile(m, dp, want, n);
	else
		difference(m, dp, want, n);
	if (n > m->cap) {
		m->cap = n;
		m->e = xrealloc(m->e, n * sizeof(*m->e));
	}
	if (n)
		memcpy(m->e, want, n * sizeof(*want));
	m->n = n;
	m->st.entries = n;
}

void wl_map_put(struct wl_map *m, struct dataplane *dp, const struct wl_entry *e)
{
	if (!put(m, dp, e) || m->lost)
		return;
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (addr_cmp(&m->e[mid].addr, &e->addr) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < m->n && addr_cmp(&m->e[lo].addr, &e->addr) == 0) {
		m->e[lo] = *e;
		return;
	}
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 64;
		m->e = xrealloc(m->e, m->cap * sizeof(*m->e));
	}
	memmove(&m->e[lo + 1], &m->e[lo], (m->n - lo) * sizeof(*m->e));
	m->e[lo] = *e;
	m->n++;
	m->st.entries = m->n;
}
