/* The TC programs through BPF_PROG_TEST_RUN with crafted packets: `ingress` (in the pod
 * netns, the fallback), `to_pod` and `from_pod` (the host end of the pod's veth; a test run
 * happens on lo, ifindex 1, so pod_ifs[1] names the pod). */
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "test.h"
#include "world.h"

#define TC_OK 0
#define TC_SHOT 2

#define WL_IP "10.88.0.2"
#define WL_IP6 "fd00:88::2"
#define PEER_IP "10.88.0.7"
#define PEER_IP6 "fd00:88::7"
#define WL_ID 20
#define PEER_ID 21

#define F_SYN 0x02
#define F_ACK 0x10

struct pkt {
	unsigned char b[256];
	size_t len;
};

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static size_t eth(unsigned char *p, uint16_t proto)
{
	memset(p, 0, 14);
	memcpy(p, "\x02\x00\x00\x00\x00\x01", 6);
	memcpy(p + 6, "\x02\x00\x00\x00\x00\x02", 6);
	put16(p + 12, proto);
	return 14;
}

static size_t tcp(unsigned char *p, uint16_t sport, uint16_t dport, unsigned char flags)
{
	memset(p, 0, 20);
	put16(p, sport);
	put16(p + 2, dport);
	p[12] = 5 << 4;
	p[13] = flags;
	put16(p + 14, 65535);
	return 20;
}

/* IPv4 + TCP; opt_words 32-bit words of IP options (NOPs). */
static struct pkt pkt4(const char *src, const char *dst, uint16_t sport, uint16_t dport,
		       unsigned char flags, int opt_words)
{
	struct pkt k = {.len = 0};
	unsigned char *p = k.b;
	size_t off = eth(p, 0x0800);
	size_t ihl = 5 + (size_t)opt_words;
	unsigned char *ip = p + off;
	memset(ip, 0, ihl * 4);
	ip[0] = (unsigned char)(0x40 | ihl);
	put16(ip + 2, (uint16_t)(ihl * 4 + 20));
	ip[8] = 64;
	ip[9] = 6;
	inet_pton(AF_INET, src, ip + 12);
	inet_pton(AF_INET, dst, ip + 16);
	for (size_t i = 20; i < ihl * 4; i++)
		ip[i] = 1; /* NOP */
	off += ihl * 4;
	off += tcp(p + off, sport, dport, flags);
	k.len = off;
	return k;
}

/* IPv6 + (optional hop-by-hop header) + TCP. */
static struct pkt pkt6(const char *src, const char *dst, uint16_t sport, uint16_t dport,
		       unsigned char flags, bool hop_by_hop)
{
	struct pkt k = {.len = 0};
	unsigned char *p = k.b;
	size_t off = eth(p, 0x86DD);
	unsigned char *ip = p + off;
	memset(ip, 0, 40);
	ip[0] = 0x60;
	put16(ip + 4, (uint16_t)(20 + (hop_by_hop ? 8 : 0)));
	ip[6] = hop_by_hop ? 0 : 6;
	ip[7] = 64;
	inet_pton(AF_INET6, src, ip + 8);
	inet_pton(AF_INET6, dst, ip + 24);
	off += 40;
	if (hop_by_hop) {
		unsigned char *h = p + off;
		memset(h, 0, 8);
		h[0] = 6; /* next: TCP */
		h[1] = 0; /* 8 bytes */
		h[2] = 1; /* PadN */
		h[3] = 4;
		off += 8;
	}
	off += tcp(p + off, sport, dport, flags);
	k.len = off;
	return k;
}

static int prog_fd(struct world *w, const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/progs/%s", w->pin_dir, name);
	int fd = bpf_obj_get(path);
	if (fd < 0)
		test_fail(__FILE__, __LINE__, "bpf_obj_get %s: %s", path, strerror(errno));
	return fd;
}

static int ingress_fd(struct world *w)
{
	return prog_fd(w, "ingress");
}

/* Run the program once on the packet; returns its TC verdict (or -1). */
static int run(int prog_fd, const struct pkt *k)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = k->b, .data_size_in = (__u32)k->len,
		    .repeat = 1);
	int rc = bpf_prog_test_run_opts(prog_fd, &opts);
	if (rc < 0) {
		test_fail(__FILE__, __LINE__, "BPF_PROG_TEST_RUN: %s", strerror(errno));
		return -1;
	}
	return (int)opts.retval;
}

/* Like run, but a refused packet is returned as -errno instead of failing the test. */
static int run_quiet(int prog_fd, const struct pkt *k)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = k->b, .data_size_in = (__u32)k->len,
		    .repeat = 1);
	if (bpf_prog_test_run_opts(prog_fd, &opts) < 0)
		return -errno;
	return (int)opts.retval;
}

static void strict_v4_body(struct world *w, int fd)
{
	REQUIRE(put_workload(w, WL_IP, WL_ID, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_STRICT) == 0);
	REQUIRE(put_workload(w, PEER_IP, PEER_ID, MOAT_WL_AMBIENT, MOAT_MTLS_STRICT) == 0);
	struct pkt syn = pkt4(PEER_IP, WL_IP, 40000, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &syn), TC_SHOT);
	/* IP options move the TCP header: ihl must be honoured */
	struct pkt syn_opts = pkt4(PEER_IP, WL_IP, 40001, 8080, F_SYN, 3);
	CHECK_INT(run(fd, &syn_opts), TC_SHOT);
	struct pkt hbone = pkt4(PEER_IP, WL_IP, 40002, MOAT_PORT_HBONE, F_SYN, 0);
	CHECK_INT(run(fd, &hbone), TC_OK);
	struct pkt synack = pkt4(PEER_IP, WL_IP, 8080, 40003, F_SYN | F_ACK, 0);
	CHECK_INT(run(fd, &synack), TC_OK);
	struct pkt ack = pkt4(PEER_IP, WL_IP, 40004, 8080, F_ACK, 0);
	CHECK_INT(run(fd, &ack), TC_OK);
	/* an address moat did not register: whatever the mode, a new connection is dropped */
	struct pkt other = pkt4(PEER_IP, "10.88.0.99", 40005, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &other), TC_SHOT);

	struct moat_stats s = world_stats(w);
	CHECK_INT(s.plaintext_dropped, 2);
	CHECK_INT(s.unknown_dst_dropped, 1);
	struct moat_event ev[4];
	int n = world_events(w, ev, 4);
	CHECK_INT(n, 3);
	if (n >= 3)
		CHECK_INT(ev[2].kind, MOAT_EV_UNKNOWN_DST_DROPPED);
	if (n >= 1) {
		char b[ADDR_STRLEN];
		CHECK_INT(ev[0].kind, MOAT_EV_PLAINTEXT_DROPPED);
		CHECK_INT(ev[0].reason, MOAT_REASON_STRICT_PLAIN);
		CHECK_STR(addr_str(&ev[0].src, b, sizeof(b)), PEER_IP);
		CHECK_STR(addr_str(&ev[0].dst, b, sizeof(b)), WL_IP);
		CHECK_INT(ev[0].src_port, 40000);
		CHECK_INT(ev[0].dst_port, 8080);
		CHECK_INT(ev[0].dst_workload, WL_ID);
		CHECK_INT(ev[0].src_workload, PEER_ID);
		CHECK_INT(ev[0].epoch, 1);
	}
}

TEST(ingress_strict_syn_dropped_v4)
{
	struct world w;
	if (world_up(&w, 0) == 0) {
		int fd = ingress_fd(&w);
		if (fd >= 0) {
			strict_v4_body(&w, fd);
			close(fd);
		}
	}
	world_down(&w);
}

static void strict_v6_body(struct world *w, int fd)
{
	REQUIRE(put_workload(w, WL_IP6, WL_ID, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_STRICT) == 0);
	struct pkt syn = pkt6(PEER_IP6, WL_IP6, 40000, 8080, F_SYN, false);
	CHECK_INT(run(fd, &syn), TC_SHOT);
	struct pkt syn_hbh = pkt6(PEER_IP6, WL_IP6, 40001, 8080, F_SYN, true);
	CHECK_INT(run(fd, &syn_hbh), TC_SHOT);
	struct pkt hbone = pkt6(PEER_IP6, WL_IP6, 40002, MOAT_PORT_HBONE, F_SYN, true);
	CHECK_INT(run(fd, &hbone), TC_OK);
	struct pkt synack = pkt6(PEER_IP6, WL_IP6, 8080, 40003, F_SYN | F_ACK, false);
	CHECK_INT(run(fd, &synack), TC_OK);
	CHECK_INT(world_stats(w).plaintext_dropped, 2);
	struct moat_event ev[4];
	int n = world_events(w, ev, 4);
	CHECK_INT(n, 2);
	if (n >= 2) {
		char b[ADDR_STRLEN];
		CHECK_STR(addr_str(&ev[1].dst, b, sizeof(b)), WL_IP6);
		CHECK_INT(ev[1].src_port, 40001);
		CHECK_INT(ev[1].src_workload, 0); /* peer not registered */
	}
}

TEST(ingress_strict_syn_dropped_v6)
{
	struct world w;
	if (world_up(&w, 0) == 0) {
		int fd = ingress_fd(&w);
		if (fd >= 0) {
			strict_v6_body(&w, fd);
			close(fd);
		}
	}
	world_down(&w);
}

static void permissive_body(struct world *w, int fd)
{
	REQUIRE(put_workload(w, WL_IP, WL_ID, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_PERMISSIVE) == 0);
	/* not LOCAL: another node's pod has no business arriving on this pod's interface */
	REQUIRE(put_workload(w, "10.88.0.3", 22, MOAT_WL_AMBIENT, MOAT_MTLS_STRICT) == 0);
	struct pkt syn = pkt4(PEER_IP, WL_IP, 40000, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &syn), TC_OK);
	struct pkt remote = pkt4(PEER_IP, "10.88.0.3", 40000, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &remote), TC_SHOT);
	CHECK_INT(world_stats(w).unknown_dst_dropped, 1);
	(void)world_events(w, NULL, 0);
	/* not TCP: UDP to the STRICT-by-port address passes */
	struct pkt udp = pkt4(PEER_IP, WL_IP, 40000, 8080, F_SYN, 0);
	udp.b[14 + 9] = 17;
	CHECK_INT(run(fd, &udp), TC_OK);
	CHECK_INT(world_stats(w).plaintext_dropped, 0);
	struct moat_event ev[2];
	CHECK_INT(world_events(w, ev, 2), 0);
}

TEST(ingress_permissive_and_remote_pass)
{
	struct world w;
	if (world_up(&w, 0) == 0) {
		int fd = ingress_fd(&w);
		if (fd >= 0) {
			permissive_body(&w, fd);
			close(fd);
		}
	}
	world_down(&w);
}

static void port_level_body(struct world *w, int fd)
{
	/* STRICT workload with port 8080 PERMISSIVE; PERMISSIVE workload with 9090 STRICT. */
	REQUIRE(put_workload(w, WL_IP, WL_ID,
			     MOAT_WL_AMBIENT | MOAT_WL_LOCAL | MOAT_WL_PORT_MTLS,
			     MOAT_MTLS_STRICT) == 0);
	REQUIRE(put_workload(w, "10.88.0.3", 23,
			     MOAT_WL_AMBIENT | MOAT_WL_LOCAL | MOAT_WL_PORT_MTLS,
			     MOAT_MTLS_PERMISSIVE) == 0);
	struct err e;
	struct moat_port_mtls_key k1 = {.workload = WL_ID, .port = 8080};
	struct moat_port_mtls v1 = {.mtls_mode = MOAT_MTLS_PERMISSIVE};
	REQUIRE(dataplane_port_mtls_put(w->dp, &k1, &v1, &e) == 0);
	struct moat_port_mtls_key k2 = {.workload = 23, .port = 9090};
	struct moat_port_mtls v2 = {.mtls_mode = MOAT_MTLS_STRICT};
	REQUIRE(dataplane_port_mtls_put(w->dp, &k2, &v2, &e) == 0);

	struct pkt a = pkt4(PEER_IP, WL_IP, 40000, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &a), TC_OK);
	struct pkt b = pkt4(PEER_IP, WL_IP, 40000, 8081, F_SYN, 0);
	CHECK_INT(run(fd, &b), TC_SHOT);
	struct pkt c = pkt4(PEER_IP, "10.88.0.3", 40000, 9090, F_SYN, 0);
	CHECK_INT(run(fd, &c), TC_SHOT);
	struct pkt d = pkt4(PEER_IP, "10.88.0.3", 40000, 9091, F_SYN, 0);
	CHECK_INT(run(fd, &d), TC_OK);
	CHECK_INT(world_stats(w).plaintext_dropped, 2);

	/* cleared: back to the workload modes */
	REQUIRE(dataplane_port_mtls_clear(w->dp) == 0);
	CHECK_INT(run(fd, &a), TC_SHOT);
	CHECK_INT(run(fd, &c), TC_OK);
}

TEST(ingress_port_level_override)
{
	struct world w;
	if (world_up(&w, 0) == 0) {
		int fd = ingress_fd(&w);
		if (fd >= 0) {
			port_level_body(&w, fd);
			close(fd);
		}
	}
	world_down(&w);
}

static void malformed_body(struct world *w, int fd)
{
	REQUIRE(put_workload(w, WL_IP, WL_ID, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_STRICT) == 0);
	/* Truncated packets never crash or read out of bounds. Once the ports are there
	 * (14+20+4 bytes) the packet is dropped: either its flags say SYN, or they are cut
	 * off, and a first fragment cut before the flags could be a SYN. Shorter ones pass
	 * (the kernel refuses to test-run some of them: EINVAL, skipped). */
	struct pkt syn = pkt4(PEER_IP, WL_IP, 40000, 8080, F_SYN, 0);
	int ran = 0;
	for (size_t cut = 14; cut < syn.len; cut++) {
		struct pkt k = syn;
		k.len = cut;
		int v = run_quiet(fd, &k);
		if (v == -EINVAL)
			continue;
		ran++;
		CHECK_MSG(v == (cut >= 14 + 20 + 4 ? TC_SHOT : TC_OK), "cut at %zu: verdict %d",
			  cut, v);
	}
	CHECK_MSG(ran >= 10, "only %d truncated packets ran", ran);
	/* a non-first fragment has no TCP header: passes */
	struct pkt frag = syn;
	put16(frag.b + 14 + 6, 0x0010);
	CHECK_INT(run(fd, &frag), TC_OK);
	/* not IP */
	struct pkt arp = syn;
	put16(arp.b + 12, 0x0806);
	CHECK_INT(run(fd, &arp), TC_OK);
}

TEST(ingress_malformed_and_fragments)
{
	struct world w;
	if (world_up(&w, 0) == 0) {
		int fd = ingress_fd(&w);
		if (fd >= 0) {
			malformed_body(&w, fd);
			close(fd);
		}
	}
	world_down(&w);
}

static void ring_full_body(struct world *w, int fd)
{
	REQUIRE(put_workload(w, WL_IP, WL_ID, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_STRICT) == 0);
	/* 4000 drops in one test run: more events than the 256 KiB ring holds (88 bytes each
	 * with the record header), nobody consuming */
	struct pkt syn = pkt4(PEER_IP, WL_IP, 40000, 8080, F_SYN, 0);
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = syn.b, .data_size_in = (__u32)syn.len,
		    .repeat = 4000);
	REQUIRE(bpf_prog_test_run_opts(fd, &opts) == 0);
	CHECK_INT(opts.retval, TC_SHOT);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.plaintext_dropped, 4000);
	int kept = world_events(w, NULL, 0);
	CHECK_MSG(s.events_lost > 0, "events_lost = %llu", (unsigned long long)s.events_lost);
	CHECK_INT((long long)kept + (long long)s.events_lost, 4000);
}

TEST(ingress_full_ring_counts_lost_events)
{
	struct world w;
	if (world_up(&w, 0) == 0) {
		int fd = ingress_fd(&w);
		if (fd >= 0) {
			ring_full_body(&w, fd);
			close(fd);
		}
	}
	world_down(&w);
}

/* ---------------- to_pod / from_pod: the host end of the pod's veth ---------------- */

#define OTHER_LOCAL_IP "10.88.0.5" /* another pod on this node */
#define OTHER_LOCAL_ID 22

/* Name the pod behind ifindex (1: lo, where a test run happens) in the pinned pod_ifs. */
static int put_pod_if(struct world *w, uint32_t ifindex, uint32_t workload)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/pod_ifs", w->pin_dir);
	int fd = bpf_obj_get(path);
	if (fd < 0) {
		test_fail(__FILE__, __LINE__, "bpf_obj_get %s: %s", path, strerror(errno));
		return -1;
	}
	struct moat_pod_if_key k = {.ifindex = ifindex};
	struct moat_pod_if v = {.workload = workload};
	int rc = workload ? bpf_map_update_elem(fd, &k, &v, BPF_ANY)
			  : bpf_map_delete_elem(fd, &k);
	if (rc < 0)
		test_fail(__FILE__, __LINE__, "pod_ifs[%u]: %s", ifindex, strerror(errno));
	close(fd);
	return rc;
}

static int host_world_maps(struct world *w, uint32_t mode)
{
	if (put_pod_if(w, 1, WL_ID) < 0 ||
	    put_workload(w, WL_IP, WL_ID, MOAT_WL_AMBIENT | MOAT_WL_LOCAL, mode) < 0 ||
	    put_workload(w, WL_IP6, WL_ID, MOAT_WL_AMBIENT | MOAT_WL_LOCAL, mode) < 0 ||
	    put_workload(w, OTHER_LOCAL_IP, OTHER_LOCAL_ID, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			 MOAT_MTLS_PERMISSIVE) < 0 ||
	    put_workload(w, PEER_IP, PEER_ID, MOAT_WL_AMBIENT, MOAT_MTLS_STRICT) < 0)
		return -1;
	return 0;
}

static void to_pod_body(struct world *w, int fd)
{
	REQUIRE(host_world_maps(w, MOAT_MTLS_PERMISSIVE) == 0);
	struct pkt ok = pkt4(PEER_IP, WL_IP, 40000, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &ok), TC_OK);
	struct pkt ok6 = pkt6(PEER_IP6, WL_IP6, 40000, 8080, F_SYN, true);
	CHECK_INT(run(fd, &ok6), TC_OK);
	/* addresses the pod may have but moat did not register, HBONE port included */
	struct pkt unknown = pkt4(PEER_IP, "10.88.0.99", 40001, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &unknown), TC_SHOT);
	struct pkt unknown_hbone = pkt4(PEER_IP, "10.88.0.99", 40002, MOAT_PORT_HBONE, F_SYN, 0);
	CHECK_INT(run(fd, &unknown_hbone), TC_SHOT);
	struct pkt unknown6 = pkt6(PEER_IP6, "fd00:88::99", 40003, 8080, F_SYN, false);
	CHECK_INT(run(fd, &unknown6), TC_SHOT);
	/* an address registered, but to another pod: not this pod's */
	struct pkt other = pkt4(PEER_IP, OTHER_LOCAL_IP, 40004, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &other), TC_SHOT);
	/* established flows and what is not TCP pass */
	struct pkt ack = pkt4(PEER_IP, "10.88.0.99", 40005, 8080, F_ACK, 0);
	CHECK_INT(run(fd, &ack), TC_OK);
	struct pkt udp = unknown;
	udp.b[14 + 9] = 17;
	CHECK_INT(run(fd, &udp), TC_OK);

	struct moat_stats s = world_stats(w);
	CHECK_INT(s.unknown_dst_dropped, 4);
	CHECK_INT(s.plaintext_dropped, 0);
	struct moat_event ev[8];
	int n = world_events(w, ev, 8);
	CHECK_INT(n, 4);
	if (n >= 1) {
		char b[ADDR_STRLEN];
		CHECK_INT(ev[0].kind, MOAT_EV_UNKNOWN_DST_DROPPED);
		CHECK_INT(ev[0].reason, MOAT_REASON_UNKNOWN_ADDR);
		CHECK_STR(addr_str(&ev[0].dst, b, sizeof(b)), "10.88.0.99");
		CHECK_INT(ev[0].dst_workload, WL_ID); /* the pod behind the interface */
		CHECK_INT(ev[0].src_workload, PEER_ID);
		CHECK_INT(ev[0].src_port, 40001);
	}
	/* STRICT as before, judged on the registered address */
	REQUIRE(put_workload(w, WL_IP, WL_ID, MOAT_WL_AMBIENT | MOAT_WL_LOCAL, MOAT_MTLS_STRICT) ==
		0);
	CHECK_INT(run(fd, &ok), TC_SHOT);
	struct pkt hbone = pkt4(PEER_IP, WL_IP, 40006, MOAT_PORT_HBONE, F_SYN, 0);
	CHECK_INT(run(fd, &hbone), TC_OK);
	CHECK_INT(world_stats(w).plaintext_dropped, 1);
	/* an interface moat attached to but cannot name: nothing is the pod's */
	REQUIRE(put_pod_if(w, 1, 0) == 0);
	CHECK_INT(run(fd, &hbone), TC_SHOT);
}

TEST(to_pod_drops_new_connections_to_addresses_not_registered_for_the_pod)
{
	struct world w;
	if (world_up(&w, 0) == 0) {
		int fd = prog_fd(&w, "to_pod");
		if (fd >= 0) {
			to_pod_body(&w, fd);
			close(fd);
		}
	}
	world_down(&w);
}

static struct pkt icmp6_from(const char *src)
{
	struct pkt k = pkt6(src, "ff02::1", 0, 0, 0, false);
	k.b[14 + 6] = 58; /* ICMPv6 */
	return k;
}

static void from_pod_body(struct world *w, int fd)
{
	REQUIRE(host_world_maps(w, MOAT_MTLS_STRICT) == 0);
	struct pkt own = pkt4(WL_IP, PEER_IP, 40000, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &own), TC_OK);
	struct pkt own6 = pkt6(WL_IP6, PEER_IP6, 40000, 8080, F_SYN, false);
	CHECK_INT(run(fd, &own6), TC_OK);
	struct pkt own_udp = own;
	own_udp.b[14 + 9] = 17;
	CHECK_INT(run(fd, &own_udp), TC_OK);
	/* IPv6 neighbour discovery / DAD from link-local and unspecified sources */
	struct pkt nd = icmp6_from("fe80::1");
	CHECK_INT(run(fd, &nd), TC_OK);
	struct pkt dad = icmp6_from("::");
	CHECK_INT(run(fd, &dad), TC_OK);
	struct pkt arp = own;
	put16(arp.b + 12, 0x0806);
	CHECK_INT(run(fd, &arp), TC_OK);

	/* forged: an address nobody has, another local pod's, a peer's; any protocol */
	struct pkt forged = pkt4("10.88.0.99", PEER_IP, 40001, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &forged), TC_SHOT);
	struct pkt other = pkt4(OTHER_LOCAL_IP, PEER_IP, 40002, 8080, F_SYN, 0);
	CHECK_INT(run(fd, &other), TC_SHOT);
	struct pkt peer = pkt4(PEER_IP, WL_IP, 40003, 8080, F_ACK, 0);
	CHECK_INT(run(fd, &peer), TC_SHOT);
	struct pkt forged_udp = forged;
	forged_udp.b[14 + 9] = 17;
	CHECK_INT(run(fd, &forged_udp), TC_SHOT);
	struct pkt forged6 = pkt6("fd00:88::99", PEER_IP6, 40004, 8080, F_SYN, false);
	CHECK_INT(run(fd, &forged6), TC_SHOT);
	/* link-local is only for neighbour discovery: TCP from it is not the pod's address */
	struct pkt ll_tcp = pkt6("fe80::1", PEER_IP6, 40005, 8080, F_SYN, false);
	CHECK_INT(run(fd, &ll_tcp), TC_SHOT);

	struct moat_stats s = world_stats(w);
	CHECK_INT(s.spoofed_dropped, 6);
	struct moat_event ev[8];
	int n = world_events(w, ev, 8);
	CHECK_INT(n, 6);
	if (n >= 1) {
		char b[ADDR_STRLEN];
		CHECK_INT(ev[0].kind, MOAT_EV_SPOOFED_DROPPED);
		CHECK_INT(ev[0].reason, MOAT_REASON_SPOOFED);
		CHECK_STR(addr_str(&ev[0].src, b, sizeof(b)), "10.88.0.99");
		CHECK_INT(ev[0].src_workload, WL_ID); /* the pod that sent it */
		CHECK_INT(ev[0].dst_workload, PEER_ID);
		CHECK_INT(ev[0].src_port, 40001);
		CHECK_INT(ev[0].dst_port, 8080);
	}
	/* an interface moat attached to but cannot name: nothing is the pod's */
	REQUIRE(put_pod_if(w, 1, 0) == 0);
	CHECK_INT(run(fd, &own), TC_SHOT);
}

TEST(from_pod_drops_packets_whose_source_is_not_the_pods_own)
{
	struct world w;
	if (world_up(&w, 0) == 0) {
		int fd = prog_fd(&w, "from_pod");
		if (fd >= 0) {
			from_pod_body(&w, fd);
			close(fd);
		}
	}
	world_down(&w);
}
