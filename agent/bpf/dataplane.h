/* The kernel side of moat as user space sees it: load the BPF object (libbpf skeleton),
 * pin maps, programs and per-pod links under one directory (default /sys/fs/bpf/moat),
 * attach per pod, and read and write the maps of include/moat/abi.h.
 *
 * Programs (bpf/moat.bpf.c):
 *   capture4 / capture6  cgroup/connect4, connect6 on each pod's cgroup: fast deny (EPERM),
 *                        REGISTRY_ONLY, service VIPs (always captured; EPERM when no endpoint
 *                        allows the source), rewrite captured connects to 127.0.0.1|::1:15001 and
 *                        record the original destination under the socket cookie.
 *   sock_ops             (section sockops) on each pod's cgroup: at TCP_CONNECT move the
 *                        original destination to (netns cookie, client addr, client port).
 *   to_pod               TC egress on the host end of the pod's veth: drop new TCP connections
 *                        to addresses not registered for that pod, plaintext SYNs to STRICT.
 *   from_pod             TC ingress on the host end: drop packets whose source is not one of
 *                        the pod's registered addresses (anti-spoofing).
 *   ingress              TC ingress on the pod's interface (inside its netns), only when no
 *                        host end is found: to_pod's checks without knowing the pod.
 *   lo_ingress           TC ingress on the pod netns' lo: marks connections made inside the
 *                        pod so plain_lookup leaves them alone.
 *   plain_lookup         sk_lookup on the pod's netns: steer plaintext to PERMISSIVE workloads
 *                        into the pod's 15006 listener (not connections made inside the pod);
 *                        drop it when that listener is missing (moatd down): fail closed.
 * Pins: <dir>/<map name> for every map, <dir>/progs/<prog>, <dir>/links/<pod key>/<prog>.
 * docs/bpf.md has the details.
 * Links are pinned so a crashed moatd fails closed (captured connects are refused, STRICT
 * drops stay) instead of open. */
#ifndef MOAT_BPF_DATAPLANE_H
#define MOAT_BPF_DATAPLANE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/util.h"
#include "moat/abi.h"

struct dataplane;

/* Check that we can do BPF at all (root / CAP_BPF+CAP_NET_ADMIN, bpffs, cgroup v2, BTF);
 * on failure, e explains what is missing and what to do. */
int dataplane_probe(const char *pin_dir, struct err *e);

/* Load and pin. Maps and programs pinned by a previous run under pin_dir are replaced; its
 * pinned links (pin_dir/links/<pod>) stay until dataplane_attach_pod takes each pod over (or
 * dataplane_detach_pod removes it), so pods stay captured across an agent restart. Mounts
 * bpffs on /sys/fs/bpf if needed. */
struct dataplane *dataplane_open(const char *pin_dir, struct err *e);
/* Detach every pod, unpin everything under pin_dir and free. */
void dataplane_close(struct dataplane *dp);
/* Free without detaching: pinned links keep the pods captured (their connects are refused
 * while no agent listens: fail closed) until the next agent re-attaches them. */
void dataplane_release(struct dataplane *dp);

/* Attach capture (connect4/6 + sockops) to the pod's cgroup, sk_lookup to the pod netns (links
 * pinned under links/<pod_key>), TC lo_ingress on the pod's lo, and the TC enforcement of
 * ifname: on the host end of its veth when that lies in the calling thread's netns (to_pod
 * egress + from_pod ingress, the pod named by `workload` in pod_ifs), else `ingress` inside
 * the pod netns (logged as a warning: a pod with NET_ADMIN could remove it).
 * pod_key is a filesystem-safe name ("ns_name"). Attaching a key again replaces the previous
 * attachment. The calling thread's netns is restored before return. */
int dataplane_attach_pod(struct dataplane *dp, const char *pod_key, int cgroup_fd, int netns_fd,
			 const char *ifname, uint32_t workload, struct err *e);
void dataplane_detach_pod(struct dataplane *dp, const char *pod_key, int netns_fd,
			  const char *ifname);

/* Map access (all return 0 or -1 with e set). */
int dataplane_settings_set(struct dataplane *dp, const struct moat_settings *s, struct err *e);
int dataplane_workload_put(struct dataplane *dp, const struct moat_addr *a,
			   const struct moat_workload *w, struct err *e);
int dataplane_workload_del(struct dataplane *dp, const struct moat_addr *a);
/* Iterate keys currently in the workloads map (to remove stale ones); the caller frees *keys. */
int dataplane_workload_keys(struct dataplane *dp, struct moat_addr **keys, size_t *n);
/* services: (VIP, port) -> service (the connect hook captures these). */
int dataplane_service_put(struct dataplane *dp, const struct moat_service_key *k,
			  const struct moat_service *v, struct err *e);
int dataplane_service_del(struct dataplane *dp, const struct moat_service_key *k);
/* Keys currently in the services map (to remove stale ones); the caller frees *keys. */
int dataplane_service_keys(struct dataplane *dp, struct moat_service_key **keys, size_t *n);
int dataplane_port_mtls_put(struct dataplane *dp, const struct moat_port_mtls_key *k,
			    const struct moat_port_mtls *v, struct err *e);
int dataplane_port_mtls_clear(struct dataplane *dp);
int dataplane_pod_put(struct dataplane *dp, uint64_t netns_cookie, const struct moat_pod *p,
		      struct err *e);
int dataplane_pod_del(struct dataplane *dp, uint64_t netns_cookie);
int dataplane_verdict_put(struct dataplane *dp, const struct moat_verdict_key *k,
			  const struct moat_verdict *v, struct err *e);
int dataplane_verdict_get(struct dataplane *dp, const struct moat_verdict_key *k,
			  struct moat_verdict *v);
/* Write / delete n verdicts with batch syscalls (one per call where the kernel has them);
 * deleting a missing key is not an error. */
int dataplane_verdicts_update(struct dataplane *dp, const struct moat_verdict_key *k,
			      const struct moat_verdict *v, size_t n, struct err *e);
int dataplane_verdicts_delete(struct dataplane *dp, const struct moat_verdict_key *k, size_t n,
			      struct err *e);
/* Call cb for every entry of the verdicts map (moatctl verdicts). */
int dataplane_verdicts_each(struct dataplane *dp,
			    void (*cb)(void *arg, const struct moat_verdict_key *k,
				       const struct moat_verdict *v),
			    void *arg);
/* Remove every verdict (an epoch bump already invalidates them; this frees the space). */
int dataplane_verdicts_clear(struct dataplane *dp);
int dataplane_plain_listener_put(struct dataplane *dp, const struct moat_addr *pod_addr,
				 int listen_fd, struct err *e);
int dataplane_plain_listener_del(struct dataplane *dp, const struct moat_addr *pod_addr);
/* Look up and delete the original destination of a connection accepted on 15001. */
int dataplane_orig_dst_take(struct dataplane *dp, uint64_t netns_cookie,
			    const struct moat_addr *client, uint16_t client_port,
			    struct moat_orig_dst *out);
/* Sum of the per-CPU stats. */
int dataplane_stats(struct dataplane *dp, struct moat_stats *out);

/* Events: poll this fd (readable = events pending), then consume (returns the number of
 * events handed to cb, or -1). */
typedef void (*dataplane_event_cb)(void *arg, const struct moat_event *ev);
int dataplane_events_fd(struct dataplane *dp);
int dataplane_events_consume(struct dataplane *dp, dataplane_event_cb cb, void *arg);

/* Same-node joins (agent/bpf/join.c): put two established TCP sockets in the `joined`
 * sockhash so the kernel moves what each receives out of the other (sk_skb verdict);
 * cookie[] gets their SO_COOKIEs. On failure nothing stays joined and the sockets are as
 * before. */
int dataplane_join(struct dataplane *dp, const int fd[2], uint64_t cookie[2], struct err *e);
/* Payload bytes the kernel has redirected from the socket with this cookie so far. */
uint64_t dataplane_join_bytes(struct dataplane *dp, uint64_t cookie);
/* Take both out of the map; bytes[i]: payload the kernel redirected from socket i. */
void dataplane_unjoin(struct dataplane *dp, const uint64_t cookie[2], uint64_t bytes[2]);

const char *dataplane_pin_dir(const struct dataplane *dp);

/* Where cgroup v2 is mounted (first cgroup2 line of /proc/mounts); false when nowhere. */
bool dataplane_cgroup2_mount(char *where, size_t len);

/* SO_NETNS_COOKIE of the netns behind netns_fd (creates a socket in it). */
int netns_cookie_of(int netns_fd, uint64_t *cookie, struct err *e);

#endif
