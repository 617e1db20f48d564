/* The verdict cache the connect hook reads, kept by difference (docs/architecture.md,
 * "Verdict cache").
 *
 * Each sync computes what the cache should hold for (local source pod, destination, port),
 * compares it with what this module last wrote, and hands the kernel only the difference in
 * batches. Evaluations are memoised per (source, destination class): a class is the exact
 * list of policies that apply to a destination (by their fingerprints), the ports they name
 * and, when a policy tests destination.ip, the address. Results are carried over from the
 * previous sync for every class whose policies did not change, so a change re-evaluates only
 * the destinations its policy selects (by namespace, selector or targetRef).
 *
 * The cache is bounded (`budget` entries, well under the LRU map's size, so the kernel never
 * evicts one of our entries behind our back): destinations are taken in the order given
 * (local pods, ServiceEntries, then remote workloads) until the budget is reached; the rest
 * are misses, which the connect hook hands to moatd, which decides with the full engine.
 * A miss is never an allow. Pure apart from the sink: unit-testable with a fake map. */
#ifndef MOAT_STATE_VERDICTS_H
#define MOAT_STATE_VERDICTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/util.h"
#include "moat/abi.h"
#include "policy/authz.h"

/* Default bound: a quarter of the map, so LRU eviction never touches our entries. */
#define VERDICTS_BUDGET (MOAT_VERDICTS_MAX / 4)

struct verdict_src {
	uint32_t id;           /* workload id of the local pod */
	const char *principal; /* td/ns/NS/sa/SA */
	struct moat_addr addr;
	/* Every declared address (dual stack; addr is the first); n_addrs 0 = addr alone. */
	struct moat_addr addrs[MC_WL_MAX_ADDRS];
	size_t n_addrs;
};

struct verdict_dst {
	uint32_t id;                            /* workload / ServiceEntry id (dedup key) */
	enum authz_target_kind kind;
	const struct mc_workload *wl;           /* AUTHZ_TARGET_WORKLOAD */
	const struct mc_service_entry *se;      /* AUTHZ_TARGET_SERVICE */
	struct moat_addr ip;                    /* first address of the destination */
	const void *ref;                        /* the caller's, for resolve */
};

/* Optional: fill kind/wl/se of a destination only when the sync needs it (destinations past
 * the bound are never looked up). Return false to leave the destination out. */
typedef bool (*verdict_resolve_fn)(void *arg, struct verdict_dst *d);

/* Where the difference goes: the BPF map (bpf/maps.c batches) or a test double. Each
 * returns 0 or -1 with e set. clear empties the map (after a failed write). */
struct verdict_sink {
	int (*update)(void *arg, const struct moat_verdict_key *k, const struct moat_verdict *v,
		      size_t n, struct err *e);
	int (*del)(void *arg, const struct moat_verdict_key *k, size_t n, struct err *e);
	int (*clear)(void *arg);
	void *arg;
};

struct verdict_stats {
	uint64_t syncs;
	uint64_t written, deleted;     /* map entries written / deleted, all syncs */
	uint64_t evaluated, reused;    /* (source, class) evaluations run / carried over */
	size_t entries;                /* entries in the map now */
	size_t pairs_skipped;          /* (source, destination) pairs left to moatd (budget) */
	size_t last_written, last_deleted, last_evaluated;
	uint64_t last_us;              /* duration of the last sync */
};

struct verdict_cache;

struct verdict_cache *verdicts_new(size_t budget);
void verdicts_free(struct verdict_cache *vc);

/* Recompute for this configuration, these sources and destinations (destinations in
 * priority order; duplicates of an id are ignored; resolve may be NULL), write the difference through sink with
 * `epoch` in every value (a changed epoch rewrites everything). policy_id maps a deciding
 * policy to its stable id. Returns 0, or -1 with e set when the sink failed (the next sync
 * then clears the map and writes everything). */
int verdicts_sync(struct verdict_cache *vc, const struct mesh_config *cfg,
		  const struct verdict_src *src, size_t n_src, const struct verdict_dst *dst,
		  size_t n_dst, verdict_resolve_fn resolve, void *resolve_arg, uint64_t epoch,
		  uint32_t (*policy_id)(void *arg, const struct mc_authz *p), void *pid_arg,
		  const struct verdict_sink *sink, struct err *e);

/* Decide for every (source address, destination address) pair of one family (dual stack:
 * ipBlocks / source.ip / destination.ip may decide differently per family). Returns false
 * when the pairs disagree: no single cached verdict may stand for them (moatd decides each
 * connect). idx/n_pol: the policies to consider (authz_evaluate_among), idx NULL = all. */
bool verdicts_decide_all_addrs(const struct mesh_config *cfg, const uint32_t *idx, size_t n_pol,
			       const char *principal, const struct moat_addr *src, size_t n_src,
			       struct authz_target *t, const struct moat_addr *dst, size_t n_dst,
			       struct authz_decision *out);

const struct verdict_stats *verdicts_stats(const struct verdict_cache *vc);
/* True after a failed write: the next sync should use a new epoch (it clears the map and
 * writes everything). */
bool verdicts_need_rebuild(const struct verdict_cache *vc);

#endif
