// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* moat's kernel side: one object, six programs (see agent/bpf/dataplane.h and docs/bpf.md).
 *
 *   capture4/capture6  cgroup connect hooks on each pod's cgroup: fast deny, REGISTRY_ONLY,
 *                      service VIPs, rewrite mesh connects to the in-pod outbound listener
 *                      (15001).
 *   sock_ops           moves the original destination to a key moatd can build at accept().
 *   ingress            TC ingress on the pod interface: drop plaintext SYNs to STRICT pods.
 *   lo_ingress         TC ingress on the pod netns' lo: remembers in-pod connections so
 *                      plain_lookup does not steer them.
 *   plain_lookup       sk_lookup on the pod netns: PERMISSIVE plaintext -> 15006 listener.
 *
 * Only helpers and context fields present in Linux 6.1 are used. */
#include "maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* A context field read that clang may neither sink into a branch nor merge with another:
 * when a branch picks between two fields, clang folds the choice into the context pointer
 * (ctx + off, then one load), which the verifier rejects ("dereference of modified ctx
 * ptr"). Reading every candidate field unconditionally through volatile keeps each load a
 * plain ctx + constant access. */
#define CTX_READ(field) (*(volatile __typeof__(field) *)&(field))

/* ================= capture: cgroup/connect4 and cgroup/connect6 ================= */

enum capture_result {
	CAPTURE_PASS,    /* leave the connect alone */
	CAPTURE_DENY,    /* return 0: connect() fails with EPERM */
	CAPTURE_REWRITE, /* rewrite to the outbound listener */
};

/* One connect() as both hooks see it: destination in the 16-byte form. */
struct connect_info {
	struct moat_addr dst;
	__u16 port;   /* host order */
	__u16 family; /* of the application's socket */
	__u64 netns_cookie;
};

static __always_inline void emit_connect_denied(const struct connect_info *ci, __u32 src_wl,
						__u32 dst_wl, __u32 reason, __u32 policy)
{
	struct moat_event *ev = event_reserve(MOAT_EV_CONNECT_DENIED, reason);
	if (!ev)
		return;
	ev->netns_cookie = ci->netns_cookie;
	ev->src_workload = src_wl;
	ev->dst_workload = dst_wl;
	ev->policy = policy;
	ev->dst = ci->dst;
	ev->dst_port = ci->port;
	bpf_ringbuf_submit(ev, 0);
}

/* The verdict cached for (src, dst, port). An exact-port entry, when present, decides alone
 * (a stale one is a miss): falling back to port 0 past a stale exact entry could apply the
 * "every other port" verdict to a port the current configuration lists separately. */
static __always_inline struct moat_verdict *verdict_lookup(__u32 src_wl, __u32 dst_wl,
							   __u16 port, __u64 epoch)
{
	struct moat_verdict_key k = {.src_workload = src_wl, .dst_workload = dst_wl,
				     .dst_port = port};
	struct moat_verdict *v = bpf_map_lookup_elem(&verdicts, &k);
	if (!v) {
		k.dst_port = 0;
		v = bpf_map_lookup_elem(&verdicts, &k);
	}
	if (v && v->epoch == epoch)
		return v;
	return NULL;
}

/* Remember where a captured connect was going (pending_dst, by socket cookie) and rewrite
 * it. Without the record moatd cannot tell where the connection was going: refuse the
 * connect rather than send it to the listener anonymously. */
static __always_inline enum capture_result capture_record(void *ctx,
							  const struct moat_orig_dst *od,
							  bool cached)
{
	struct moat_pending_key ck = {.socket_cookie = bpf_get_socket_cookie(ctx)};
	if (bpf_map_update_elem(&pending_dst, &ck, od, BPF_ANY) != 0)
		return CAPTURE_DENY;
	if (!cached)
		STAT_INC(verdict_misses);
	STAT_INC(connects_captured);
	return CAPTURE_REWRITE;
}

/* A connect to a service VIP:port. Always captured (ALLOW_ANY included: the VIP is not a
 * place plaintext may go, kube-proxy would send it to a pod uncaptured), unless moatd has
 * computed that no endpoint allows this source: then EPERM at once. The service verdict has
 * only its exact port (no port-0 entry) and is valid only in the current epoch; a miss goes
 * to moatd, which decides with the full engine. */
static __always_inline enum capture_result capture_service(void *ctx, struct connect_info *ci,
							   const struct moat_pod *pod,
							   const struct moat_service *svc,
							   __u64 epoch)
{
	__u32 sid = svc->id | MOAT_SERVICE_ID_BIT;
	struct moat_verdict_key k = {.src_workload = pod->workload, .dst_workload = sid,
				     .dst_port = ci->port};
	struct moat_verdict *v = bpf_map_lookup_elem(&verdicts, &k);
	if (v && v->epoch != epoch)
		v = NULL;
	if (v && v->action == MOAT_ACTION_DENY) {
		STAT_INC(connects_denied);
		STAT_INC(service_denied);
		emit_connect_denied(ci, pod->workload, sid, v->reason, v->policy);
		return CAPTURE_DENY;
	}
	struct moat_orig_dst od = {
		.addr = ci->dst,
		.port = ci->port,
		.family = ci->family,
		.src_workload = pod->workload,
		.action = v ? v->action : MOAT_ACTION_NONE,
		.policy = v ? v->policy : 0,
		.service = svc->id,
	};
	enum capture_result r = capture_record(ctx, &od, v != NULL);
	if (r == CAPTURE_REWRITE)
		STAT_INC(service_captured);
	return r;
}

static __always_inline enum capture_result capture_decide(void *ctx, struct connect_info *ci)
{
	ci->netns_cookie = bpf_get_netns_cookie(ctx);
	struct moat_pod_key pk = {.netns_cookie = ci->netns_cookie};
	struct moat_pod *pod = bpf_map_lookup_elem(&pods, &pk);
	if (!pod)
		return CAPTURE_PASS; /* not an enrolled pod's netns */
	struct moat_settings *set = settings_get();
	if (!set)
		return CAPTURE_PASS; /* cannot happen: ARRAY slot 0 always exists */
	if (addr_is_pod_local(&ci->dst)) {
		STAT_INC(connects_passed);
		return CAPTURE_PASS;
	}

	struct moat_service_key sk = {.addr = ci->dst, .port = ci->port};
	struct moat_service *svc = bpf_map_lookup_elem(&services, &sk);
	if (svc)
		return capture_service(ctx, ci, pod, svc, set->epoch);

	struct moat_workload_key wk = {.addr = ci->dst};
	struct moat_workload *wl = bpf_map_lookup_elem(&workloads, &wk);
	if (!wl) {
		if (set->outbound_policy == MOAT_OUTBOUND_REGISTRY_ONLY) {
			STAT_INC(connects_unregistered);
			emit_connect_denied(ci, pod->workload, 0, MOAT_REASON_UNREGISTERED, 0);
			return CAPTURE_DENY;
		}
		STAT_INC(connects_passed);
		return CAPTURE_PASS;
	}
	if (wl->id == pod->workload) {
		STAT_INC(connects_passed); /* the pod talking to itself */
		return CAPTURE_PASS;
	}

	struct moat_verdict *v = verdict_lookup(pod->workload, wl->id, ci->port, set->epoch);
	if (v && v->action == MOAT_ACTION_DENY) {
		STAT_INC(connects_denied);
		emit_connect_denied(ci, pod->workload, wl->id, v->reason, v->policy);
		return CAPTURE_DENY;
	}

	struct moat_orig_dst od = {
		.addr = ci->dst,
		.port = ci->port,
		.family = ci->family,
		.src_workload = pod->workload,
		.dst_workload = wl->id,
		.action = v ? v->action : MOAT_ACTION_NONE,
		.policy = v ? v->policy : 0,
	};
	return capture_record(ctx, &od, v != NULL);
}

SEC("cgroup/connect4")
int capture4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	struct connect_info ci = {.family = AF_INET};
	addr_set_v4(&ci.dst, ctx->user_ip4);
	ci.port = bpf_ntohs((__u16)ctx->user_port);

	enum capture_result r = capture_decide(ctx, &ci);
	if (r == CAPTURE_DENY)
		return 0;
	if (r == CAPTURE_REWRITE) {
		ctx->user_ip4 = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(MOAT_PORT_OUTBOUND);
	}
	return 1;
}

SEC("cgroup/connect6")
int capture6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	struct connect_info ci = {.family = AF_INET6};
	addr_set_v6(&ci.dst, ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2],
		    ctx->user_ip6[3]);
	ci.port = bpf_ntohs((__u16)ctx->user_port);

	enum capture_result r = capture_decide(ctx, &ci);
	if (r == CAPTURE_DENY)
		return 0;
	if (r == CAPTURE_REWRITE) {
		/* A v4-mapped destination leaves over IPv4: rewrite to the IPv4 listener. */
		bool mapped = addr_is_mapped_v4(&ci.dst);
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = mapped ? bpf_htonl(0xffff) : 0;
		ctx->user_ip6[3] = mapped ? bpf_htonl(0x7f000001) : bpf_htonl(1);
		ctx->user_port = bpf_htons(MOAT_PORT_OUTBOUND);
	}
	return 1;
}

/* ================= sockops ================= */

/* At TCP_CONNECT the client port exists: re-key the pending original destination by
 * (netns cookie, client address, client port), which moatd rebuilds from accept(). */
static __always_inline void orig_dst_record(struct bpf_sock_ops *skops)
{
	struct moat_pending_key pk = {.socket_cookie = bpf_get_socket_cookie(skops)};
	struct moat_orig_dst *pending = bpf_map_lookup_elem(&pending_dst, &pk);
	if (!pending)
		return;
	struct moat_orig_dst od = *pending;

	struct moat_conn_key ck = {.netns_cookie = bpf_get_netns_cookie(skops)};
	__u32 family = skops->family, ip4 = CTX_READ(skops->local_ip4);
	__u32 w0 = CTX_READ(skops->local_ip6[0]), w1 = CTX_READ(skops->local_ip6[1]);
	__u32 w2 = CTX_READ(skops->local_ip6[2]), w3 = CTX_READ(skops->local_ip6[3]);
	if (family == AF_INET)
		addr_set_v4(&ck.addr, ip4);
	else
		addr_set_v6(&ck.addr, w0, w1, w2, w3);
	ck.port = (__u16)skops->local_port; /* host order in bpf_sock_ops */

	if (bpf_map_update_elem(&orig_dst, &ck, &od, BPF_ANY) == 0)
		STAT_INC(orig_dst_recorded);
	bpf_map_delete_elem(&pending_dst, &pk);
}

/* Named sock_ops, not sockops: a function called like its ELF section makes the assembler
 * reject the object ("symbol 'sockops' is already defined"). */
SEC("sockops")
int sock_ops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		orig_dst_record(skops);
		break;
	default:
		break;
	}
	return 1;
}

/* ================= ingress: TC on the pod interface ================= */

struct tcp_meta {
	struct moat_addr src, dst;
	__u16 sport, dport; /* host order */
	bool flags_known;   /* false for a first fragment cut before the flags byte */
	bool syn, ack;
};

#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10
#define TCP_FLAGS_OFF 13
#define IPV6_EXT_MAX 4

/* Read ports and flags of the TCP header at l4. Returns false when not even the ports are
 * there. */
static __always_inline bool parse_tcp(void *l4, void *end, struct tcp_meta *m)
{
	__u8 *t = l4;
	if ((void *)(t + 4) > end)
		return false;
	m->sport = ((__u16)t[0] << 8) | t[1];
	m->dport = ((__u16)t[2] << 8) | t[3];
	if ((void *)(t + TCP_FLAGS_OFF + 1) > end)
		return true;
	m->flags_known = true;
	m->syn = t[TCP_FLAGS_OFF] & TCP_FLAG_SYN;
	m->ack = t[TCP_FLAGS_OFF] & TCP_FLAG_ACK;
	return true;
}

/* Returns false when the packet is not TCP, is a non-first fragment, or is malformed
 * (the stack drops those itself). */
static __always_inline bool parse_ipv4(void *l3, void *end, struct tcp_meta *m)
{
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > end)
		return false;
	if (ip->protocol != IPPROTO_TCP)
		return false;
	if (ip->frag_off & bpf_htons(0x1fff))
		return false; /* without the first fragment there is no connection */
	__u32 ihl = ip->ihl;
	if (ihl < 5)
		return false;
	addr_set_v4(&m->src, ip->saddr);
	addr_set_v4(&m->dst, ip->daddr);
	return parse_tcp(l3 + ihl * 4, end, m);
}

static __always_inline bool parse_ipv6(void *l3, void *end, struct tcp_meta *m)
{
	struct ipv6hdr *ip6 = l3;
	if ((void *)(ip6 + 1) > end)
		return false;
	__u32 *s = (__u32 *)&ip6->saddr, *d = (__u32 *)&ip6->daddr;
	addr_set_v6(&m->src, s[0], s[1], s[2], s[3]);
	addr_set_v6(&m->dst, d[0], d[1], d[2], d[3]);

	__u8 next = ip6->nexthdr;
	__u8 *p = (__u8 *)(ip6 + 1);
#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		if (next == IPPROTO_TCP)
			return parse_tcp(p, end, m);
		if ((void *)(p + 8) > end)
			return false;
		if (next == 44 /* fragment */) {
			if (((p[2] << 8) | p[3]) & 0xfff8)
				return false; /* non-first fragment */
			next = p[0];
			p += 8;
		} else if (next == 0 || next == 43 || next == 60 /* hop, routing, dest opts */) {
			next = p[0];
			p += ((__u32)p[1] + 1) * 8;
		} else {
			return false;
		}
	}
	if (next == IPPROTO_TCP)
		return parse_tcp(p, end, m);
	return false;
}

/* Linear bytes the parser may want: Ethernet + IPv4 with options (or IPv6 with a few
 * extension headers) + the TCP flags. Pulled only when the head is shorter than that. */
#define INGRESS_PULL_LEN 128

/* One drop (TC, sk_lookup) as an event: src/dst as the packet carries them; the caller
 * sets the workloads. netns_cookie stays 0: bpf_get_netns_cookie is not available to TC
 * programs on 6.1. */
static __always_inline void emit_drop(__u32 kind, __u32 reason, const struct tcp_meta *m,
					 __u32 src_wl, __u32 dst_wl)
{
	struct moat_event *ev = event_reserve(kind, reason);
	if (!ev)
		return;
	ev->src_workload = src_wl;
	ev->dst_workload = dst_wl;
	ev->src = m->src;
	ev->dst = m->dst;
	ev->src_port = m->sport;
	ev->dst_port = m->dport;
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline __u32 workload_id_of(const struct moat_addr *a)
{
	struct moat_workload_key k = {.addr = *a};
	struct moat_workload *wl = bpf_map_lookup_elem(&workloads, &k);
	return wl ? wl->id : 0;
}

/* Ethernet (veth and lo both carry one) + IPv4/IPv6 + TCP. */
static __always_inline bool parse_packet(void *data, void *end, struct tcp_meta *m)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return false;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(eth + 1, end, m);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(eth + 1, end, m);
	return false;
}

/* Headers must be in the linear area for direct access; pull only when they are not (a
 * pull may copy the packet). */
static __always_inline void pull_headers(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	__u32 head = skb->data_end - skb->data;
	if (head < INGRESS_PULL_LEN && head < len)
		bpf_skb_pull_data(skb, len < INGRESS_PULL_LEN ? len : INGRESS_PULL_LEN);
}

/* pod_wl when the pod behind the interface is known (host side); POD_ANY for the in-pod
 * fallback, where one program serves every pod and only "some local pod" can be checked. */
#define POD_ANY 0

/* What may reach a pod: a new TCP connection only to one of the pod's own registered
 * addresses (an address moat does not know would bypass capture, verdicts and STRICT), and
 * plaintext only when the port is not STRICT. HBONE (15008) passes to registered addresses
 * only: nothing legitimate dials HBONE on an address moat never announced. Established
 * flows and everything that is not TCP pass (the mesh is TCP-only, as ztunnel's is). */
static __always_inline int judge_to_pod(const struct tcp_meta *m, bool host_side, __u32 ifindex)
{
	/* A first fragment cut before the flags could carry a SYN: judged as one (fail closed). */
	if (m->flags_known && !(m->syn && !m->ack))
		return TC_ACT_OK;
	__u32 pod_wl = POD_ANY;
	if (host_side) {
		struct moat_pod_if_key k = {.ifindex = ifindex};
		struct moat_pod_if *pif = bpf_map_lookup_elem(&pod_ifs, &k);
		/* attached but not named (cannot happen in order): no address is the pod's */
		pod_wl = pif ? pif->workload : 0xffffffff;
	}
	struct moat_workload_key wk = {.addr = m->dst};
	struct moat_workload *wl = bpf_map_lookup_elem(&workloads, &wk);
	if (!wl || !(wl->flags & MOAT_WL_LOCAL) || (pod_wl != POD_ANY && wl->id != pod_wl)) {
		STAT_INC(unknown_dst_dropped);
		emit_drop(MOAT_EV_UNKNOWN_DST_DROPPED, MOAT_REASON_UNKNOWN_ADDR, m,
			  workload_id_of(&m->src), pod_wl);
		return TC_ACT_SHOT;
	}
	if (m->dport == MOAT_PORT_HBONE || effective_mtls_mode(wl, m->dport) != MOAT_MTLS_STRICT)
		return TC_ACT_OK;
	STAT_INC(plaintext_dropped);
	emit_drop(MOAT_EV_PLAINTEXT_DROPPED, MOAT_REASON_STRICT_PLAIN, m, workload_id_of(&m->src),
		  wl->id);
	return TC_ACT_SHOT;
}

/* The per-packet decision, on packet pointers read here. A separate (not inlined) function:
 * inlined after bpf_skb_pull_data, clang 14 keeps the context offsets of data/data_end in
 * registers and adds them to the context pointer, which the verifier rejects. */
static __noinline int to_pod_verdict(struct __sk_buff *skb, bool host_side)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct tcp_meta m = {};
	__u32 ifindex = CTX_READ(skb->ifindex); /* read up front: see CTX_READ */
	if (!parse_packet(data, end, &m))
		return TC_ACT_OK;
	return judge_to_pod(&m, host_side, ifindex);
}

/* ================= ingress: TC ingress on the pod interface, inside the pod netns =========
 * The fallback when the pod's interface has no host-side peer in moatd's netns (see
 * to_pod): a pod with NET_ADMIN can remove it, and it cannot tell pods apart. */
SEC("tc")
int ingress(struct __sk_buff *skb)
{
	pull_headers(skb);
	return to_pod_verdict(skb, false);
}

/* ================= to_pod: TC egress on the host side of the pod's veth ================= */
SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	pull_headers(skb);
	return to_pod_verdict(skb, true);
}

/* ================= from_pod: TC ingress on the host side of the pod's veth =============== */

#define IPPROTO_ICMPV6_ 58
#define IPPROTO_HOPOPTS_ 0

struct src_meta {
	struct tcp_meta m; /* src/dst, and ports when TCP or UDP follows the IP header */
	__u8 proto;        /* IPv4 protocol / IPv6 next header */
	bool v6;
};

static __always_inline void ports_at(void *l4, void *end, __u8 proto, struct tcp_meta *m)
{
	__u8 *t = l4;
	if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || (void *)(t + 4) > end)
		return;
	m->sport = ((__u16)t[0] << 8) | t[1];
	m->dport = ((__u16)t[2] << 8) | t[3];
}

/* Returns false for what is not IP (ARP and the like) or too short to carry addresses. */
static __always_inline bool parse_src(void *data, void *end, struct src_meta *sm)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return false;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return false;
		addr_set_v4(&sm->m.src, ip->saddr);
		addr_set_v4(&sm->m.dst, ip->daddr);
		sm->proto = ip->protocol;
		if (ip->ihl >= 5 && !(ip->frag_off & bpf_htons(0x1fff)))
			ports_at((void *)ip + ip->ihl * 4, end, sm->proto, &sm->m);
		return true;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return false;
		__u32 *s = (__u32 *)&ip6->saddr, *d = (__u32 *)&ip6->daddr;
		addr_set_v6(&sm->m.src, s[0], s[1], s[2], s[3]);
		addr_set_v6(&sm->m.dst, d[0], d[1], d[2], d[3]);
		sm->proto = ip6->nexthdr;
		sm->v6 = true;
		ports_at(ip6 + 1, end, sm->proto, &sm->m);
		return true;
	}
	return false;
}

/* IPv6 neighbour discovery, DAD and MLD come from link-local or unspecified sources
 * (ICMPv6, MLD behind a hop-by-hop header); they never reach a pod's peers beyond the link. */
static __always_inline bool v6_link_control(const struct src_meta *sm)
{
	const __u32 *w = (const __u32 *)sm->m.src.bytes;
	bool link_local = sm->m.src.bytes[0] == 0xfe && (sm->m.src.bytes[1] & 0xc0) == 0x80;
	bool unspecified = (w[0] | w[1] | w[2] | w[3]) == 0;
	return (link_local || unspecified) &&
	       (sm->proto == IPPROTO_ICMPV6_ || sm->proto == IPPROTO_HOPOPTS_);
}

/* Anti-spoofing: what a pod sends must carry one of its own registered addresses as source,
 * so ipBlocks / source.ip cannot be fooled by a pod with NET_ADMIN or a raw socket. */
static __noinline int from_pod_verdict(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct src_meta sm = {};
	if (!parse_src(data, end, &sm))
		return TC_ACT_OK; /* not IP: ARP */
	if (sm.v6 && v6_link_control(&sm))
		return TC_ACT_OK;
	struct moat_pod_if_key k = {.ifindex = skb->ifindex};
	struct moat_pod_if *pif = bpf_map_lookup_elem(&pod_ifs, &k);
	__u32 pod_wl = pif ? pif->workload : 0;
	struct moat_workload_key wk = {.addr = sm.m.src};
	struct moat_workload *wl = bpf_map_lookup_elem(&workloads, &wk);
	if (pif && wl && (wl->flags & MOAT_WL_LOCAL) && wl->id == pod_wl)
		return TC_ACT_OK;
	STAT_INC(spoofed_dropped);
	emit_drop(MOAT_EV_SPOOFED_DROPPED, MOAT_REASON_SPOOFED, &sm.m, pod_wl,
		  workload_id_of(&sm.m.dst));
	return TC_ACT_SHOT;
}

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	pull_headers(skb);
	return from_pod_verdict(skb);
}

/* ================= lo_ingress: TC on the pod netns' loopback ================= */

/* Remember the tuple of this packet for plain_lookup (see lo_last in maps.h). Loopback
 * destinations are skipped: they are never workloads, and they carry the bulk of the
 * app <-> moatd traffic. */
static __noinline int lo_record(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct tcp_meta m = {};
	if (!parse_packet(data, end, &m) || addr_is_pod_local(&m.dst))
		return TC_ACT_OK;
	__u32 zero = 0;
	struct moat_flow_tuple *seen = bpf_map_lookup_elem(&lo_last, &zero);
	if (seen) {
		seen->src = m.src;
		seen->dst = m.dst;
		seen->sport = m.sport;
		seen->dport = m.dport;
	}
	return TC_ACT_OK;
}

SEC("tc")
int lo_ingress(struct __sk_buff *skb)
{
	pull_headers(skb);
	return lo_record(skb);
}

/* ================= plain_lookup: sk_lookup on the pod netns ================= */

/* Did lo_ingress just see this very tuple on this CPU? Consumed when it matches. */
static __always_inline bool seen_on_lo(const struct moat_flow_tuple *t)
{
	__u32 zero = 0;
	struct moat_flow_tuple *seen = bpf_map_lookup_elem(&lo_last, &zero);
	if (!seen)
		return false;
	const __u64 *a = (const __u64 *)t, *b = (const __u64 *)seen;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*t) / sizeof(__u64)); i++)
		if (a[i] != b[i])
			return false;
	__builtin_memset(seen, 0, sizeof(*seen));
	return true;
}

SEC("sk_lookup")
int plain_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	/* Traffic to 127.0.0.0/8 and ::1 arrives on lo itself. (Every netns numbers its lo 1.) */
	if (ctx->ingress_ifindex == MOAT_LOOPBACK_IFINDEX)
		return SK_PASS;
	__u16 port = (__u16)ctx->local_port; /* host order */
	if (port == MOAT_PORT_HBONE)
		return SK_PASS;

	struct moat_flow_tuple t = {.sport = bpf_ntohs(ctx->remote_port), .dport = port};
	/* both families' fields read up front: see CTX_READ */
	__u32 family = ctx->family;
	__u32 l4 = CTX_READ(ctx->local_ip4), r4 = CTX_READ(ctx->remote_ip4);
	__u32 l0 = CTX_READ(ctx->local_ip6[0]), l1 = CTX_READ(ctx->local_ip6[1]);
	__u32 l2 = CTX_READ(ctx->local_ip6[2]), l3 = CTX_READ(ctx->local_ip6[3]);
	__u32 r0 = CTX_READ(ctx->remote_ip6[0]), r1 = CTX_READ(ctx->remote_ip6[1]);
	__u32 r2 = CTX_READ(ctx->remote_ip6[2]), r3 = CTX_READ(ctx->remote_ip6[3]);
	if (family == AF_INET) {
		addr_set_v4(&t.dst, l4);
		addr_set_v4(&t.src, r4);
	} else {
		addr_set_v6(&t.dst, l0, l1, l2, l3);
		addr_set_v6(&t.src, r0, r1, r2, r3);
	}
	struct moat_workload_key wk = {.addr = t.dst};
	struct moat_workload *wl = bpf_map_lookup_elem(&workloads, &wk);
	if (!wl || !(wl->flags & MOAT_WL_LOCAL))
		return SK_PASS;
	if (effective_mtls_mode(wl, port) != MOAT_MTLS_PERMISSIVE)
		return SK_PASS;
	/* A connection made inside the pod to its own address (the app, or moatd's upstream
	 * connect from the client's address) reports the pod interface as ingress_ifindex
	 * (the route's device, not lo), so lo_ingress's record is what tells it apart. */
	if (seen_on_lo(&t))
		return SK_PASS;

	/* Fail closed: without its 15006 listener (moatd down, or the listener gone) plaintext
	 * must not reach the app past the pod's AuthorizationPolicy. */
	struct bpf_sock *sk = bpf_map_lookup_elem(&plain_listeners, &wk);
	long err = -1;
	if (sk) {
		err = bpf_sk_assign(ctx, sk, 0);
		bpf_sk_release(sk);
	}
	if (err == 0) {
		STAT_INC(plaintext_redirected);
		return SK_PASS;
	}
	STAT_INC(plaintext_no_listener);
	struct tcp_meta m = {.src = t.src, .dst = t.dst, .sport = t.sport, .dport = t.dport};
	emit_drop(MOAT_EV_PLAINTEXT_NO_LISTENER, MOAT_REASON_NO_LISTENER, &m,
		  workload_id_of(&t.src), wl->id);
	return SK_DROP;
}

/* ---- join_verdict (sk_skb stream verdict on the `joined` sockhash) ----
 * Every socket in `joined` is one end of an allowed same-node connection, stored under its
 * peer's cookie, so its own cookie finds the peer. What it receives is sent out of the peer
 * (flags 0 = egress) without ever reaching user space. No stream parser: verdict-only mode
 * (5.10+), one skb at a time. A socket whose peer is not (yet) in the map passes the data to
 * its own receive queue, where moatd sees it and resets the pair (see agent/proxy/join.c). */
SEC("sk_skb/stream_verdict")
int join_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct moat_join_key k = {.peer_cookie = cookie};
	__u32 len = skb->len;
	/* The FIN arrives as an empty skb: nothing to move, and redirecting it would make the
	 * kernel write to the peer after moatd has passed the FIN on (EPIPE there). TCP itself
	 * records the FIN on this socket; moatd sees it as EPOLLRDHUP. */
	if (len == 0)
		return SK_DROP;
	long rc = bpf_sk_redirect_hash(skb, &joined, &k, 0);
	if (rc != SK_PASS) {
		STAT_INC(join_unpaired);
		return SK_PASS;
	}
	struct moat_join_bytes_key bk = {.cookie = cookie};
	struct moat_join_bytes *b = bpf_map_lookup_elem(&join_bytes, &bk);
	if (b)
		__sync_fetch_and_add(&b->bytes, len);
	STAT_INC(join_redirected);
	return SK_PASS;
}
