/* A fake dataplane for the root-free unit tests (tests/unit/fakedp/): every function of
 * agent/bpf/dataplane.h kept in memory, with each map write, delete, batch call and clear
 * counted per map. The tests link the real state/ and proxy/ code against it instead of
 * agent/bpf (which needs root and a kernel with BPF).
 *
 * fake_dp_hook_verdict() models what the connect hook does with the verdicts map (exact
 * port, then port 0, valid only under the current epoch of settings), so a test can tell a
 * cached ALLOW from a miss without loading BPF. Attach, join and events are inert. */
#ifndef MOAT_TEST_FAKE_DATAPLANE_H
#define MOAT_TEST_FAKE_DATAPLANE_H

#include <stdbool.h>
#include <stddef.h>

#include "bpf/dataplane.h"

enum fdp_map {
	FDP_SETTINGS,
	FDP_WORKLOADS,
	FDP_PORT_MTLS,
	FDP_PODS,
	FDP_VERDICTS,
	FDP_PLAIN_LSN,
	FDP_ORIG_DST,
	FDP_SERVICES,
	FDP_MAPS,
};

struct fdp_counts {
	size_t writes;  /* entries written (one per entry, also inside a batch) */
	size_t deletes; /* entries asked to be deleted (missing ones too) */
	size_t batches; /* batch calls (dataplane_verdicts_update / _delete) */
	size_t clears;
};

struct dataplane *fake_dp_new(void);
void fake_dp_free(struct dataplane *dp);

const struct fdp_counts *fake_dp_counts(const struct dataplane *dp, enum fdp_map m);
void fake_dp_reset_counts(struct dataplane *dp);
/* Verdict keys written or deleted since fake_dp_new / fake_dp_reset_counts (borrowed). */
size_t fake_dp_verdicts_touched(const struct dataplane *dp, const struct moat_verdict_key **keys);
size_t fake_dp_entries(const struct dataplane *dp, enum fdp_map m);
/* The next write to map m fails (once). */
void fake_dp_fail_next(struct dataplane *dp, enum fdp_map m);

bool fake_dp_verdict(const struct dataplane *dp, const struct moat_verdict_key *k,
		     struct moat_verdict *out);
bool fake_dp_workload(const struct dataplane *dp, const struct moat_addr *a,
		      struct moat_workload *out);
const struct moat_settings *fake_dp_settings(const struct dataplane *dp);
/* What the connect hook would decide from the verdict cache: ALLOW / DENY, or NONE for a
 * miss (no entry, or an entry of another epoch), which the hook hands to moatd. */
enum moat_action fake_dp_hook_verdict(const struct dataplane *dp, uint32_t src, uint32_t dst,
				      uint16_t port);
/* Record an original destination, as sockops would (for dataplane_orig_dst_take). */
void fake_dp_orig_dst_add(struct dataplane *dp, uint64_t netns_cookie,
			  const struct moat_addr *client, uint16_t client_port,
			  const struct moat_orig_dst *od);

#endif
