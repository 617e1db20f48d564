/* Private to the BPF room: the dataplane object and the bpffs helpers its files share. */
#ifndef MOAT_BPF_INTERNAL_H
#define MOAT_BPF_INTERNAL_H

#include <net/if.h>
#include <stdbool.h>

#include "bpf/dataplane.h"

struct moat_bpf;
struct bpf_link;
struct ring_buffer;

/* The per-pod links, in the order they are attached (and pinned under links/<pod_key>/). */
enum dp_link_slot {
	DP_LINK_CAPTURE4,
	DP_LINK_CAPTURE6,
	DP_LINK_SOCK_OPS,
	DP_LINK_PLAIN_LOOKUP,
	DP_LINK_COUNT,
};

/* TC filter identity on the pod interface: fixed so a restarted moatd replaces its own
 * filter (BPF_TC_F_REPLACE) instead of stacking a second one. "moat" in ASCII. */
#define DP_TC_HANDLE   0x6d6f6174u
#define DP_TC_PRIORITY 1

/* The TC filters of a pod. In the pod netns: `lo_ingress` on lo always, and `ingress` on
 * the pod interface only as the fallback when no host side is found. In moatd's netns, on
 * the host end of the pod's veth: `to_pod` (egress: towards the pod) and `from_pod`
 * (ingress: what the pod sends), out of the pod's reach. */
enum dp_tc_slot {
	DP_TC_POD_IF,
	DP_TC_LO,
	DP_TC_HOST_TO,
	DP_TC_HOST_FROM,
	DP_TC_COUNT,
};

struct dp_tc {
	char ifname[IF_NAMESIZE];
	int ifindex;        /* inside the pod netns, or moatd's for the host slots */
	int attach_point;   /* BPF_TC_INGRESS / BPF_TC_EGRESS */
	bool wanted;        /* this slot is used for the pod */
	bool attached;
	bool qdisc_created; /* we added clsact, so we remove it */
	bool qdisc_shared;  /* an earlier slot on the same interface sees to clsact */
};

struct dp_pod {
	char *key;
	struct bpf_link *links[DP_LINK_COUNT];
	int netns_fd;      /* our dup, keeps the netns reachable for detach */
	int host_netns_fd; /* moatd's netns at attach (host slots live there), -1 = none */
	bool host_side;    /* enforcement sits on the host end of the veth */
	struct dp_tc tc[DP_TC_COUNT];
};

/* The host end of a pod's veth, in the calling thread's netns. */
struct dp_host_peer {
	int ifindex;
	char ifname[IF_NAMESIZE];
};

/* Find it (agent/bpf/peer.c): 0, or -1 with e saying why this pod has no host side here. */
int dp_find_host_peer(int netns_fd, const char *ifname, struct dp_host_peer *out, struct err *e);

struct dataplane {
	struct moat_bpf *skel;
	char *pin_dir;
	struct ring_buffer *rb;
	/* Set only for the duration of dataplane_events_consume (ring_buffer's callback). */
	dataplane_event_cb ev_cb;
	void *ev_arg;
	struct dp_pod *pods;
	size_t n_pods, cap_pods;
	int ncpus;
};

/* join.c: attach join_verdict to the joined sockhash (at open); SO_COOKIE of a socket. */
int dataplane_join_attach(struct dataplane *dp, struct err *e);
int dp_socket_cookie(int fd, uint64_t *cookie);

#define BPF_FS_MAGIC_VALUE 0xcafe4a11
#define DP_DEFAULT_BPFFS "/sys/fs/bpf"

/* True when path is on a bpf filesystem. */
bool dp_on_bpffs(const char *path);
/* Make sure /sys/fs/bpf is bpffs (mount it when it is not) and pin_dir lies on a bpffs. */
int dp_ensure_bpffs(const char *pin_dir, struct err *e);
/* Remove everything under dir (pins and directories, bounded depth), keeping dir itself.
 * Refuses to touch anything not on bpffs. Missing dir is fine. */
int dp_clear_pins(const char *dir, struct err *e);
/* The same, leaving the top-level entry named keep (NULL: none) in place. */
int dp_clear_pins_keep(const char *dir, const char *keep, struct err *e);

#endif
