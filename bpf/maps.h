/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of moat's BPF object, exactly as include/moat/abi.h names and lays them out, plus
 * the small helpers every program shares (settings, stats, address forms). Every map carries
 * BTF key/value types so `bpftool map dump` prints field names. */
#ifndef MOAT_BPF_MAPS_H
#define MOAT_BPF_MAPS_H

#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "moat/abi.h"

/* Not in vmlinux.h (they are macros in the kernel). */
#define AF_INET     2
#define AF_INET6    10
#define SOCK_STREAM 1
#define ETH_P_IP    0x0800
#define ETH_P_IPV6  0x86DD
#define TC_ACT_OK   0
#define TC_ACT_SHOT 2

/* Every network namespace numbers its loopback device 1 (LOOPBACK_IFINDEX in the kernel:
 * net/core/dev.c gives lo that index in each new netns), so a constant is exact here. */
#define MOAT_LOOPBACK_IFINDEX 1

/* sk_lookup steers by pod address: every address of every pod (declared and learned). */
#define MOAT_PLAIN_LSN_MAX (MOAT_PODS_MAX * MOAT_POD_ADDRS_MAX)

/* Hash maps written only by moatd are not preallocated: several moatd share one host in the
 * lab and most of these maps stay nearly empty. LRU maps must be preallocated. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MOAT_WORKLOADS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct moat_workload_key);
	__type(value, struct moat_workload);
} workloads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MOAT_PODS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct moat_pod_key);
	__type(value, struct moat_pod);
} pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MOAT_SERVICES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct moat_service_key);
	__type(value, struct moat_service);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MOAT_VERDICTS_MAX);
	__type(key, struct moat_verdict_key);
	__type(value, struct moat_verdict);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MOAT_CONNTRACK_MAX);
	__type(key, struct moat_pending_key);
	__type(value, struct moat_orig_dst);
} pending_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MOAT_CONNTRACK_MAX);
	__type(key, struct moat_conn_key);
	__type(value, struct moat_orig_dst);
} orig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MOAT_WORKLOADS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct moat_port_mtls_key);
	__type(value, struct moat_port_mtls);
} port_mtls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MOAT_PLAIN_LSN_MAX);
	__type(key, struct moat_workload_key);
	__type(value, __u64); /* socket fd when written, socket cookie when read */
} plain_listeners SEC(".maps");

/* Same-node joins: each socket stored under its peer's cookie (see abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 2 * MOAT_JOINED_MAX);
	__type(key, struct moat_join_key);
	__type(value, __u64); /* socket fd when written, socket cookie when read */
} joined SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MOAT_JOINED_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct moat_join_bytes_key);
	__type(value, struct moat_join_bytes);
} join_bytes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MOAT_PODS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct moat_pod_if_key);
	__type(value, struct moat_pod_if);
} pod_ifs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct moat_settings);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MOAT_EVENTS_BYTES);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct moat_stats);
} stats SEC(".maps");

/* The 4-tuple of the last TCP packet TC saw arriving on the pod netns' loopback device, per
 * CPU. Private scratch between lo_ingress and plain_lookup (user space never reads it, so
 * it is not part of include/moat/abi.h): a packet is received, TC ingress included, and
 * looked up in the socket tables in one go on one CPU, so when sk_lookup sees exactly this
 * tuple the connection was made inside the pod (the app to its own address, or moatd's
 * transparent upstream connect) and must not be steered. See docs/bpf.md. */
struct moat_flow_tuple {
	struct moat_addr src;
	struct moat_addr dst;
	__u16 sport; /* host order */
	__u16 dport; /* host order */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct moat_flow_tuple);
} lo_last SEC(".maps");

/* ---- shared helpers ---- */

static __always_inline struct moat_stats *stats_slot(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&stats, &zero);
}

/* Per-CPU slot: programs run with migration disabled, a plain increment is enough. */
#define STAT_INC(field)                                  \
	do {                                             \
		struct moat_stats *s_ = stats_slot();    \
		if (s_)                                  \
			s_->field++;                     \
	} while (0)

static __always_inline struct moat_settings *settings_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&settings, &zero);
}

/* Reserve, fill with zeroes and return an event of the given kind; NULL (and events_lost
 * counted) when the ring is full. The caller submits. */
static __always_inline struct moat_event *event_reserve(__u32 kind, __u32 reason)
{
	struct moat_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		STAT_INC(events_lost);
		return NULL;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	struct moat_settings *s = settings_get();
	ev->ts_ns = bpf_ktime_get_ns();
	ev->epoch = s ? s->epoch : 0;
	ev->kind = kind;
	ev->reason = reason;
	return ev;
}

/* IPv4 (network order) as ::ffff:a.b.c.d, the form every map key uses. */
static __always_inline void addr_set_v4(struct moat_addr *a, __u32 be_addr)
{
	__u32 *w = (__u32 *)a->bytes;
	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0xffff);
	w[3] = be_addr;
}

static __always_inline void addr_set_v6(struct moat_addr *a, __u32 w0, __u32 w1, __u32 w2,
					__u32 w3)
{
	__u32 *w = (__u32 *)a->bytes;
	w[0] = w0;
	w[1] = w1;
	w[2] = w2;
	w[3] = w3;
}

static __always_inline bool addr_is_mapped_v4(const struct moat_addr *a)
{
	const __u32 *w = (const __u32 *)a->bytes;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

/* The address stays inside the pod (loopback or unspecified, which the kernel connects to
 * the local host): never mesh traffic. */
static __always_inline bool addr_is_pod_local(const struct moat_addr *a)
{
	const __u32 *w = (const __u32 *)a->bytes;
	if (addr_is_mapped_v4(a))
		return (bpf_ntohl(w[3]) >> 24) == 127 || w[3] == 0;
	return w[0] == 0 && w[1] == 0 && w[2] == 0 && (w[3] == 0 || w[3] == bpf_htonl(1));
}

/* The mTLS mode in force for (workload, port): port-level PeerAuthentication first. */
static __always_inline __u32 effective_mtls_mode(const struct moat_workload *wl, __u16 port)
{
	if (wl->flags & MOAT_WL_PORT_MTLS) {
		struct moat_port_mtls_key k = {.workload = wl->id, .port = port};
		struct moat_port_mtls *pm = bpf_map_lookup_elem(&port_mtls, &k);
		if (pm)
			return pm->mtls_mode;
	}
	return wl->mtls_mode;
}

#endif
