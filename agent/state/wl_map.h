/* The BPF workloads map kept by difference: the agent remembers what it wrote (address ->
 * value, sorted by address), so a sync writes only the entries whose value changed and
 * deletes only those gone, instead of rewriting every address of the cluster. The first
 * sync, and the one after a failed write or delete, reconcile with the map itself: they
 * delete every key the map holds that is not wanted (a previous moatd's, pinned) and write
 * every wanted entry. */
#ifndef MOAT_STATE_WL_MAP_H
#define MOAT_STATE_WL_MAP_H

#include <stdbool.h>
#include <stddef.h>

#include "bpf/dataplane.h"

struct wl_entry {
	struct moat_addr addr;
	struct moat_workload v; /* compared bytewise: build it from a zeroed value */
};

struct wl_map_stats {
	size_t entries;               /* in the map now */
	size_t last_written, last_deleted;
	bool last_full;               /* the last sync reconciled with the map whole */
};

struct wl_map;
struct wl_map *wl_map_new(void);
void wl_map_free(struct wl_map *m);
/* Make the map hold exactly want[0..n): sorted by address, one entry per address. */
void wl_map_sync(struct wl_map *m, struct dataplane *dp, const struct wl_entry *want, size_t n);
/* Write one entry now (a pod's addresses at enrollment, before its sync). */
void wl_map_put(struct wl_map *m, struct dataplane *dp, const struct wl_entry *e);
const struct wl_map_stats *wl_map_stats(const struct wl_map *m);

#endif
