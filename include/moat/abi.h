/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The BPF <-> user-space ABI of moat: every map key and value, every constant both sides
 * must agree on. This header is the only place these layouts live (Cilium's discipline):
 * fixed-width types, explicit padding, no bitfields, sizes checked at compile time on the
 * user-space side. Changing a layout is an ABI change: bump MOAT_ABI_VERSION.
 *
 * Conventions
 *  - Addresses are 16 bytes in network order: IPv6 as is, IPv4 as ::ffff:a.b.c.d.
 *  - Ports in keys and values are in HOST byte order, so `bpftool map dump` reads them.
 *  - Ids (workload, identity, policy) are moatd's stable interned ids; 0 means "none".
 *    `moatctl workloads|verdicts` translates them; `name` fields make dumps readable.
 */
#ifndef MOAT_ABI_H
#define MOAT_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define MOAT_ABI_VERSION 4

/* Agent ports inside every enrolled pod's network namespace (same numbers as ztunnel). */
#define MOAT_PORT_OUTBOUND      15001 /* captured outbound connections (127.0.0.1 / ::1) */
#define MOAT_PORT_INBOUND_PLAIN 15006 /* plaintext inbound, PERMISSIVE mode (127.0.0.1 / ::1) */
#define MOAT_PORT_HBONE         15008 /* HBONE: HTTP/2 CONNECT over mTLS, on the pod address */

#define MOAT_NAME_LEN 64

/* Map names, as pinned under the agent's BPF directory (default /sys/fs/bpf/moat). */
#define MOAT_MAP_WORKLOADS   "workloads"
#define MOAT_MAP_PODS        "pods"
#define MOAT_MAP_VERDICTS    "verdicts"
#define MOAT_MAP_PENDING_DST "pending_dst"
#define MOAT_MAP_ORIG_DST    "orig_dst"
#define MOAT_MAP_PORT_MTLS   "port_mtls"
#define MOAT_MAP_PLAIN_LSN   "plain_listeners"
#define MOAT_MAP_SETTINGS    "settings"
#define MOAT_MAP_EVENTS      "events"
#define MOAT_MAP_STATS       "stats"
#define MOAT_MAP_POD_IFS     "pod_ifs"
#define MOAT_MAP_JOINED      "joined"
#define MOAT_MAP_JOIN_BYTES  "join_bytes"
#define MOAT_MAP_SERVICES    "services"

#define MOAT_WORKLOADS_MAX   65536
#define MOAT_PODS_MAX        1024
#define MOAT_VERDICTS_MAX    262144
#define MOAT_CONNTRACK_MAX   65536
#define MOAT_EVENTS_BYTES    (256 * 1024)
/* (VIP, port) pairs of Services and MESH_INTERNAL ServiceEntries with endpoints. */
#define MOAT_SERVICES_MAX    65536
/* Same-node connections joined in the kernel at once (two sockets each). */
#define MOAT_JOINED_MAX      16384
/* Addresses one pod may have on its interface (declared + learned); beyond this they are
 * not registered, so TC drops what is sent to or from them. */
#define MOAT_POD_ADDRS_MAX   16

struct moat_addr {
	__u8 bytes[16];
};

/* ---- workloads: destination address -> what the mesh knows about it ---- */
enum moat_workload_flags {
	MOAT_WL_AMBIENT   = 1 << 0, /* has a node agent in front: reached over HBONE */
	MOAT_WL_LOCAL     = 1 << 1, /* a pod enrolled on this node */
	MOAT_WL_SERVICE   = 1 << 2, /* a ServiceEntry address (egress), not a pod */
	MOAT_WL_PORT_MTLS = 1 << 3, /* has portLevelMtls: look up port_mtls first */
};

enum moat_mtls_mode {
	MOAT_MTLS_PERMISSIVE = 0,
	MOAT_MTLS_STRICT     = 1,
};

struct moat_workload_key {
	struct moat_addr addr;
};

struct moat_workload {
	__u32 id;        /* stable workload (or ServiceEntry) id */
	__u32 identity;  /* stable identity id; 0 for ServiceEntry addresses */
	__u32 flags;     /* enum moat_workload_flags */
	__u32 mtls_mode; /* enum moat_mtls_mode, from PeerAuthentication */
	char name[MOAT_NAME_LEN]; /* "namespace/name" */
};

/* ---- port_mtls: (workload, port) -> mode, only for workloads with portLevelMtls ---- */
struct moat_port_mtls_key {
	__u32 workload;
	__u16 port;
	__u16 pad;
};

struct moat_port_mtls {
	__u32 mtls_mode; /* enum moat_mtls_mode */
	__u32 pad;
};

/* ---- pods: network namespace cookie -> the local enrolled pod that owns it ----
 * A pod is keyed by its netns cookie, not its cgroup id: the netns decides which address a
 * connection leaves from, and the cookie is the same for every socket and nested cgroup. */
struct moat_pod_key {
	__u64 netns_cookie;
};

struct moat_pod {
	__u32 workload; /* stable workload id of the pod */
	__u32 identity; /* stable identity id of its service account */
	char name[MOAT_NAME_LEN];
};

/* ---- pod_ifs: host-side interface -> the pod behind it ----
 * Keyed by the ifindex, in moatd's network namespace, of the host end of the pod's veth
 * (Kubernetes: the host netns; the lab: the node's mp<hex>). The TC programs there judge
 * what the pod receives and sends by *the pod* (this entry), not by the address a packet
 * carries: TC cannot call bpf_get_netns_cookie on Linux 6.1. */
struct moat_pod_if_key {
	__u32 ifindex;
};

struct moat_pod_if {
	__u32 workload; /* stable workload id of the pod behind the interface */
	__u32 pad;
	char name[MOAT_NAME_LEN];
};

/* ---- verdicts (LRU): (source pod, destination workload, port) -> action ----
 * dst_port 0 holds the verdict for every port no policy of the destination names, so the
 * connect hook looks up the exact port first, then port 0. Keyed by source workload rather
 * than identity because ipBlocks / source.ip make a verdict depend on the source address. */
enum moat_action {
	MOAT_ACTION_NONE  = 0,
	MOAT_ACTION_ALLOW = 1,
	MOAT_ACTION_DENY  = 2,
};

enum moat_reason {
	MOAT_REASON_NONE          = 0,
	MOAT_REASON_POLICY_DENY   = 1, /* a DENY policy matched */
	MOAT_REASON_NO_ALLOW      = 2, /* ALLOW policies exist, none matched */
	MOAT_REASON_UNREGISTERED  = 3, /* REGISTRY_ONLY and the destination is not registered */
	MOAT_REASON_STRICT_PLAIN  = 4, /* plaintext to a STRICT workload */
	MOAT_REASON_ALLOWED       = 5,
	MOAT_REASON_UNKNOWN_ADDR  = 6, /* new TCP connection to a pod address moat did not register */
	MOAT_REASON_SPOOFED       = 7, /* a pod sent from an address that is not its own */
	MOAT_REASON_NO_LISTENER   = 8, /* PERMISSIVE plaintext while no 15006 listener (moatd down) */
	MOAT_REASON_NO_ENDPOINT   = 9, /* a service VIP: no endpoint allows this source */
};

struct moat_verdict_key {
	__u32 src_workload;
	__u32 dst_workload;
	__u16 dst_port; /* host order; 0 = every port not listed separately */
	__u16 pad;
};

struct moat_verdict {
	__u32 action; /* enum moat_action */
	__u32 reason; /* enum moat_reason */
	__u32 policy; /* stable policy id ("namespace/name"), 0 = none */
	__u32 pad;
	__u64 epoch;  /* valid only while equal to settings.epoch */
};

/* ---- services: (VIP, port) -> the service behind it ----
 * A Kubernetes Service's clusterIP(s) x spec.ports, or a MESH_INTERNAL ServiceEntry with a
 * workloadSelector: its addresses x ports. The connect hook captures a connect to such a pair
 * from an enrolled pod (even under ALLOW_ANY) and moatd picks the endpoint. Its verdict lives
 * in `verdicts` under dst_workload = id | MOAT_SERVICE_ID_BIT and the exact service port (no
 * port-0 entry): DENY = moatd computed that no endpoint allows this source (EPERM at once);
 * ALLOW = at least one does; a miss is decided by moatd, never allowed by default. */
#define MOAT_SERVICE_ID_BIT 0x80000000u

enum moat_service_flags {
	MOAT_SVC_KUBERNETES    = 1 << 0, /* a Kubernetes Service (else a ServiceEntry) */
	MOAT_SVC_NO_ENDPOINTS  = 1 << 1, /* selects nothing right now */
};

struct moat_service_key {
	struct moat_addr addr; /* VIP */
	__u16 port;            /* service port, host order */
	__u16 pad;
	__u32 pad2;
};

struct moat_service {
	__u32 id;    /* stable service id (without MOAT_SERVICE_ID_BIT) */
	__u32 flags; /* enum moat_service_flags */
	char name[MOAT_NAME_LEN]; /* "namespace/name" */
};

/* ---- settings: one entry (key 0) ---- */
enum moat_outbound_policy {
	MOAT_OUTBOUND_ALLOW_ANY     = 0,
	MOAT_OUTBOUND_REGISTRY_ONLY = 1,
};

struct moat_settings {
	__u64 epoch;           /* bumped by moatd on every configuration or workload change */
	__u32 outbound_policy; /* enum moat_outbound_policy */
	__u32 pad;
};

/* ---- original destinations of captured connections ----
 * connect4/6 records the original destination under the socket cookie (pending_dst);
 * sockops moves it at TCP_CONNECT, once the local port exists, to the key moatd can build
 * from accept(): the pod's netns cookie and the client's address and port (orig_dst). */
struct moat_pending_key {
	__u64 socket_cookie;
};

struct moat_conn_key {
	__u64 netns_cookie;
	struct moat_addr addr; /* client (app) address as moatd's accept() sees it */
	__u16 port;            /* client port, host order */
	__u16 pad[3];
};

struct moat_orig_dst {
	struct moat_addr addr; /* original destination address */
	__u16 port;            /* original destination port, host order */
	__u16 family;          /* AF_INET or AF_INET6 of the app's socket */
	__u32 src_workload;
	__u32 dst_workload;    /* 0 when the destination is not registered */
	__u32 action;          /* cached action seen at connect (NONE = moatd decides) */
	__u32 policy;
	__u32 service;         /* the destination was this service's VIP (id, 0 = none); then
				* dst_workload is 0 and action is the service verdict */
};

/* ---- plain_listeners (sockhash): pod address -> its 15006 listener (sk_lookup) ---- */
/* key: struct moat_workload_key; value: socket fd (user space) / socket (BPF) */

/* ---- joined (sockhash): same-node connections joined in the kernel ----
 * moatd puts the two sockets of an allowed same-node connection here crosswise: socket A
 * under the cookie of socket B and B under the cookie of A. The sk_skb verdict program
 * `join_verdict` runs on every socket in the map and redirects what it receives to the
 * socket stored under its own cookie, i.e. its peer. */
struct moat_join_key {
	__u64 peer_cookie; /* SO_COOKIE of the *other* socket of the pair */
};
/* value: socket fd (user space) / socket (BPF) */

/* ---- join_bytes: socket cookie -> payload bytes the kernel redirected from it ----
 * Written (zeroed) by moatd at join, counted by join_verdict, read and deleted at close:
 * the byte counts of a joined connection, which never passes through user space. */
struct moat_join_bytes_key {
	__u64 cookie;
};

struct moat_join_bytes {
	__u64 bytes;
};

/* ---- events (ringbuf) -> moatd ---- */
enum moat_event_kind {
	MOAT_EV_CONNECT_DENIED   = 1, /* connect() failed with EPERM in the capture hook */
	MOAT_EV_PLAINTEXT_DROPPED = 2, /* TC dropped a plaintext SYN to a STRICT workload */
	MOAT_EV_UNKNOWN_DST_DROPPED = 3, /* TC (host side) dropped a SYN to an unregistered pod address */
	MOAT_EV_SPOOFED_DROPPED   = 4, /* TC (host side) dropped a packet with a forged source */
	MOAT_EV_PLAINTEXT_NO_LISTENER = 5, /* sk_lookup dropped PERMISSIVE plaintext: no 15006 */
};

struct moat_event {
	__u64 ts_ns;
	__u64 epoch;
	__u64 netns_cookie;
	__u32 kind;   /* enum moat_event_kind */
	__u32 reason; /* enum moat_reason */
	__u32 src_workload;
	__u32 dst_workload; /* | MOAT_SERVICE_ID_BIT: a service id (connect to its VIP) */
	__u32 policy;
	__u16 src_port;
	__u16 dst_port;
	struct moat_addr src;
	struct moat_addr dst;
};

/* ---- stats: per-CPU, one entry (key 0); user space sums the CPUs ---- */
struct moat_stats {
	__u64 connects_captured;     /* rewritten to the in-pod outbound listener */
	__u64 connects_denied;       /* failed at connect() by a cached DENY verdict */
	__u64 connects_unregistered; /* failed at connect(): REGISTRY_ONLY, unknown destination */
	__u64 connects_passed;       /* not mesh traffic: left alone */
	__u64 verdict_misses;        /* captured without a valid cached verdict */
	__u64 orig_dst_recorded;     /* sockops moved an original destination to orig_dst */
	__u64 plaintext_dropped;     /* TC dropped plaintext SYNs to STRICT workloads */
	__u64 plaintext_redirected;  /* sk_lookup steered plaintext to the 15006 listener */
	__u64 events_lost;           /* ring buffer was full */
	__u64 unknown_dst_dropped;   /* TC dropped new TCP connections to unregistered pod addresses */
	__u64 spoofed_dropped;       /* TC dropped packets from a pod with a source not its own */
	__u64 plaintext_no_listener; /* sk_lookup dropped PERMISSIVE plaintext: no 15006 listener */
	__u64 join_redirected;       /* join_verdict moved an skb to the peer socket */
	__u64 join_unpaired;         /* join_verdict found no peer: passed to user space */
	__u64 service_captured;      /* connects to a service VIP:port captured (in captured too) */
	__u64 service_denied;        /* failed at connect(): no endpoint allows (in denied too) */
};

#ifndef __VMLINUX_H__
_Static_assert(sizeof(struct moat_addr) == 16, "moat_addr");
_Static_assert(sizeof(struct moat_workload) == 16 + MOAT_NAME_LEN, "moat_workload");
_Static_assert(sizeof(struct moat_port_mtls_key) == 8, "moat_port_mtls_key");
_Static_assert(sizeof(struct moat_pod) == 8 + MOAT_NAME_LEN, "moat_pod");
_Static_assert(sizeof(struct moat_verdict_key) == 12, "moat_verdict_key");
_Static_assert(sizeof(struct moat_verdict) == 24, "moat_verdict");
_Static_assert(sizeof(struct moat_settings) == 16, "moat_settings");
_Static_assert(sizeof(struct moat_conn_key) == 32, "moat_conn_key");
_Static_assert(sizeof(struct moat_orig_dst) == 40, "moat_orig_dst");
_Static_assert(sizeof(struct moat_event) == 80, "moat_event");
_Static_assert(sizeof(struct moat_stats) == 16 * 8, "moat_stats");
_Static_assert(sizeof(struct moat_service_key) == 24, "moat_service_key");
_Static_assert(sizeof(struct moat_service) == 8 + MOAT_NAME_LEN, "moat_service");
_Static_assert(sizeof(struct moat_pod_if) == 8 + MOAT_NAME_LEN, "moat_pod_if");
_Static_assert(sizeof(struct moat_join_key) == 8, "moat_join_key");
_Static_assert(sizeof(struct moat_join_bytes) == 8, "moat_join_bytes");
#endif

#endif /* MOAT_ABI_H */
