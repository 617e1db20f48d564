/* plain_lookup (sk_lookup) and ingress (TC, really attached) with real sockets: netns A
 * (the client) and the pod netns B joined by a veth pair; the pod is attached to B. */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/netns.h"
#include "core/util.h"
#include "test.h"
#include "world.h"

#define POD_IP "10.78.0.2"
#define CLIENT_IP "10.78.0.1"
#define POD_IP6 "fd00:78::2"
#define CLIENT_IP6 "fd00:78::1"

static int link_up(struct world *w)
{
	if (sh("ip -n %s addr add %s/24 dev va", w->peer_name, CLIENT_IP) < 0 ||
	    sh("ip -n %s addr add %s/24 dev eth0", w->name, POD_IP) < 0 ||
	    sh("ip -n %s addr add %s/64 dev va nodad", w->peer_name, CLIENT_IP6) < 0 ||
	    sh("ip -n %s addr add %s/64 dev eth0 nodad", w->name, POD_IP6) < 0)
		return -1;
	return 0;
}

static struct conn_req from_client(struct world *w, const char *ip, uint16_t port, int ms)
{
	struct conn_req r = {.netns_fd = w->peer_netns_fd, .in_cgroup = false,
			     .family = strchr(ip, ':') ? AF_INET6 : AF_INET, .type = SOCK_STREAM,
			     .ip = ip, .port = port, .timeout_ms = ms};
	return r;
}

static int register_listener(struct world *w, const char *pod_ip, const char *lsn_ip)
{
	int lsn = world_listen(w, w->netns_fd, lsn_ip, MOAT_PORT_INBOUND_PLAIN);
	if (lsn < 0)
		return -1;
	struct moat_addr a = addr_of(pod_ip);
	struct err e;
	if (dataplane_plain_listener_put(w->dp, &a, lsn, &e) < 0) {
		test_fail(__FILE__, __LINE__, "%s", e.msg);
		return -1;
	}
	return lsn;
}

/* Steered: the 15006 listener accepts, and the accepted socket's local address is the
 * address the client dialed. */
static void expect_steered(struct world *w, int lsn, const char *ip, uint16_t port)
{
	struct conn_result r;
	struct conn_req req = from_client(w, ip, port, 2000);
	if (child_connect(w, &req, &r) < 0)
		return;
	CHECK_MSG(r.err == 0, "connect %s:%u from the client netns: %s", ip, port,
		  strerror(r.err));
	int fd = world_accept(w, lsn, 1000);
	CHECK_MSG(fd >= 0, "%s:%u was not steered to the 15006 listener", ip, port);
	if (fd < 0)
		return;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	REQUIRE(getsockname(fd, (struct sockaddr *)&ss, &len) == 0);
	struct moat_addr local;
	uint16_t lport;
	addr_from_sockaddr((struct sockaddr *)&ss, &local, &lport);
	char b[ADDR_STRLEN];
	CHECK_STR(addr_str(&local, b, sizeof(b)), ip);
	CHECK_INT(lport, port);
}

static void permissive_body(struct world *w)
{
	REQUIRE(link_up(w) == 0);
	REQUIRE(put_workload(w, POD_IP, POD_WL, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_PERMISSIVE) == 0);
	REQUIRE(put_workload(w, POD_IP6, POD_WL, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_PERMISSIVE) == 0);
	int lsn = register_listener(w, POD_IP, "127.0.0.1");
	REQUIRE(lsn >= 0);
	int lsn6 = register_listener(w, POD_IP6, "::1");
	REQUIRE(lsn6 >= 0);
	expect_steered(w, lsn, POD_IP, 8080);
	expect_steered(w, lsn6, POD_IP6, 8080);
	CHECK_INT(world_stats(w).plaintext_redirected, 2);
	CHECK_INT(world_stats(w).plaintext_dropped, 0);

	/* HBONE is never steered: with nothing on 15008 the connect is refused */
	struct conn_result r;
	struct conn_req req = from_client(w, POD_IP, MOAT_PORT_HBONE, 2000);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == ECONNREFUSED, "HBONE port: expected ECONNREFUSED, got %s",
		  strerror(r.err));
	CHECK(world_accept(w, lsn, 50) < 0);

	/* after the listener is removed, nothing is steered, and nothing gets through */
	struct moat_addr a = addr_of(POD_IP);
	REQUIRE(dataplane_plain_listener_del(w->dp, &a) == 0);
	req = from_client(w, POD_IP, 8080, 2000);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == ECONNREFUSED, "after del: expected ECONNREFUSED, got %s",
		  strerror(r.err));
	CHECK_INT(world_stats(w).plaintext_redirected, 2);
	CHECK_INT(world_stats(w).plaintext_no_listener, 1);
}

TEST(sklookup_permissive_steered_to_15006)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_PEER | W_CGROUP | W_ATTACH) == 0)
		permissive_body(&w);
	world_down(&w);
}

static void strict_body(struct world *w)
{
	REQUIRE(link_up(w) == 0);
	REQUIRE(put_workload(w, POD_IP, POD_WL, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_STRICT) == 0);
	int lsn = register_listener(w, POD_IP, "127.0.0.1");
	REQUIRE(lsn >= 0);
	/* the app itself listens too: STRICT must keep plaintext from it as well */
	int app = world_listen(w, w->netns_fd, "0.0.0.0", 8080);
	REQUIRE(app >= 0);
	struct conn_result r;
	struct conn_req req = from_client(w, POD_IP, 8080, 400);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == ETIMEDOUT, "STRICT: SYNs are dropped, expected a timeout, got %s",
		  r.err ? strerror(r.err) : "a connection");
	CHECK(world_accept(w, lsn, 50) < 0);
	CHECK(world_accept(w, app, 50) < 0);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.plaintext_redirected, 0);
	CHECK_MSG(s.plaintext_dropped >= 1, "plaintext_dropped = %llu",
		  (unsigned long long)s.plaintext_dropped);
	struct moat_event ev[8];
	int n = world_events(w, ev, 8);
	CHECK(n >= 1);
	if (n >= 1) {
		char b[ADDR_STRLEN];
		CHECK_INT(ev[0].kind, MOAT_EV_PLAINTEXT_DROPPED);
		CHECK_STR(addr_str(&ev[0].src, b, sizeof(b)), CLIENT_IP);
		CHECK_INT(ev[0].src_port, r.local_port);
		CHECK_INT(ev[0].dst_port, 8080);
	}
	/* HBONE to a STRICT pod passes TC and reaches a 15008 listener on the pod address */
	int hbone = world_listen(w, w->netns_fd, POD_IP, MOAT_PORT_HBONE);
	REQUIRE(hbone >= 0);
	req = from_client(w, POD_IP, MOAT_PORT_HBONE, 2000);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "HBONE to a STRICT pod: %s", strerror(r.err));
	CHECK(world_accept(w, hbone, 1000) >= 0);
}

TEST(sklookup_strict_not_steered_and_dropped_at_tc)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_PEER | W_CGROUP | W_ATTACH) == 0)
		strict_body(&w);
	world_down(&w);
}

static void no_listener_body(struct world *w)
{
	REQUIRE(link_up(w) == 0);
	REQUIRE(put_workload(w, POD_IP, POD_WL, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_PERMISSIVE) == 0);
	/* No registered 15006 listener (moatd down: its sockets closed and left the map): the
	 * app listens, but plaintext must not reach it past the pod's policy. */
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_INBOUND_PLAIN);
	REQUIRE(lsn >= 0);
	int app = world_listen(w, w->netns_fd, POD_IP, 8080);
	REQUIRE(app >= 0);
	struct conn_result r;
	struct conn_req req = from_client(w, POD_IP, 8080, 2000);
	REQUIRE(child_connect(w, &req, &r) == 0);
	/* the lookup fails: the kernel answers the SYN with a reset */
	CHECK_MSG(r.err == ECONNREFUSED, "without a registered listener: expected ECONNREFUSED, "
		  "got %s", r.err ? strerror(r.err) : "a connection");
	CHECK(world_accept(w, app, 200) < 0);
	CHECK(world_accept(w, lsn, 50) < 0);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.plaintext_redirected, 0);
	CHECK_INT(s.plaintext_no_listener, 1);
	struct moat_event ev[4];
	int n = world_events(w, ev, 4);
	CHECK_INT(n, 1);
	if (n >= 1) {
		char b[ADDR_STRLEN];
		CHECK_INT(ev[0].kind, MOAT_EV_PLAINTEXT_NO_LISTENER);
		CHECK_INT(ev[0].reason, MOAT_REASON_NO_LISTENER);
		CHECK_INT(ev[0].dst_workload, POD_WL);
		CHECK_STR(addr_str(&ev[0].src, b, sizeof(b)), CLIENT_IP);
		CHECK_STR(addr_str(&ev[0].dst, b, sizeof(b)), POD_IP);
		CHECK_INT(ev[0].src_port, r.local_port);
		CHECK_INT(ev[0].dst_port, 8080);
	}
	/* from inside the pod the app is still reachable (never steered, never dropped) */
	struct conn_req in_pod = {.netns_fd = w->netns_fd, .family = AF_INET, .type = SOCK_STREAM,
				  .ip = POD_IP, .port = 8080, .timeout_ms = 2000};
	REQUIRE(child_connect(w, &in_pod, &r) == 0);
	CHECK_MSG(r.err == 0, "pod to its own address: %s", strerror(r.err));
	CHECK(world_accept(w, app, 1000) >= 0);
}

TEST(sklookup_permissive_without_listener_fails_closed)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_PEER | W_CGROUP | W_ATTACH) == 0)
		no_listener_body(&w);
	world_down(&w);
}

static void loopback_body(struct world *w)
{
	REQUIRE(link_up(w) == 0);
	REQUIRE(put_workload(w, POD_IP, POD_WL, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_PERMISSIVE) == 0);
	int lsn = register_listener(w, POD_IP, "127.0.0.1");
	REQUIRE(lsn >= 0);
	int app = world_listen(w, w->netns_fd, POD_IP, 8080);
	REQUIRE(app >= 0);
	/* from inside the pod (over lo, outside the pod cgroup): not steered */
	struct conn_result r;
	struct conn_req req = {.netns_fd = w->netns_fd, .family = AF_INET, .type = SOCK_STREAM,
			       .ip = POD_IP, .port = 8080, .timeout_ms = 2000};
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "pod to its own address: %s", strerror(r.err));
	CHECK(world_accept(w, app, 1000) >= 0);
	CHECK(world_accept(w, lsn, 50) < 0);
	/* from another source address of the pod (as moatd's upstream connect from the
	 * client's address is): the kernel reports eth0, not lo, as ingress_ifindex here */
	REQUIRE(sh_pod(w, "ip addr add 10.78.0.50/32 dev lo") == 0);
	req.bind_ip = "10.78.0.50";
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "pod to its own address from a second source: %s",
		  strerror(r.err));
	CHECK(world_accept(w, app, 1000) >= 0);
	CHECK(world_accept(w, lsn, 50) < 0);
	CHECK_INT(world_stats(w).plaintext_redirected, 0);
	/* and IPv6 */
	REQUIRE(put_workload(w, POD_IP6, POD_WL, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_PERMISSIVE) == 0);
	int lsn6 = register_listener(w, POD_IP6, "::1");
	REQUIRE(lsn6 >= 0);
	int app6 = world_listen(w, w->netns_fd, POD_IP6, 8080);
	REQUIRE(app6 >= 0);
	struct conn_req req6 = {.netns_fd = w->netns_fd, .family = AF_INET6,
				.type = SOCK_STREAM, .ip = POD_IP6, .port = 8080,
				.timeout_ms = 2000};
	REQUIRE(child_connect(w, &req6, &r) == 0);
	CHECK_MSG(r.err == 0, "pod to its own IPv6 address: %s", strerror(r.err));
	CHECK(world_accept(w, app6, 1000) >= 0);
	CHECK(world_accept(w, lsn6, 50) < 0);
	CHECK_INT(world_stats(w).plaintext_redirected, 0);
	/* while from the network it is still steered */
	expect_steered(w, lsn, POD_IP, 8080);
	expect_steered(w, lsn6, POD_IP6, 8080);
}

TEST(sklookup_loopback_not_steered)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_PEER | W_CGROUP | W_ATTACH) == 0)
		loopback_body(&w);
	world_down(&w);
}

/* ---------------- the host end of the pod's veth, on a real link ---------------- */

#define POD_IP_2 "10.78.0.3"  /* on the pod's interface, not registered */
#define FORGED_IP "10.78.0.9" /* on the pod's lo, sent from: a forged source */

static int node_if_has(struct world *w, const char *dir, const char *prog)
{
	return sh("tc -n %s filter show dev va %s | grep -q %s", w->peer_name, dir, prog);
}

static void host_side_body(struct world *w)
{
	REQUIRE(link_up(w) == 0);
	REQUIRE(put_workload(w, POD_IP, POD_WL, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_PERMISSIVE) == 0);
	/* enforcement sits on the node's end, none on the pod's interface */
	CHECK(node_if_has(w, "egress", "to_pod") == 0);
	CHECK(node_if_has(w, "ingress", "from_pod") == 0);
	CHECK(sh("! tc -n %s filter show dev eth0 ingress | grep -q bpf", w->name) == 0);

	int lsn = register_listener(w, POD_IP, "127.0.0.1");
	REQUIRE(lsn >= 0);
	int app = world_listen(w, w->netns_fd, "0.0.0.0", 8080);
	REQUIRE(app >= 0);
	expect_steered(w, lsn, POD_IP, 8080);

	/* a second address on the pod's interface that moat does not know */
	REQUIRE(sh_pod(w, "ip addr add %s/32 dev eth0", POD_IP_2) == 0);
	struct conn_result r;
	struct conn_req req = from_client(w, POD_IP_2, 8080, 400);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == ETIMEDOUT, "to an unregistered pod address: expected a timeout, got %s",
		  r.err ? strerror(r.err) : "a connection");
	CHECK(world_accept(w, app, 50) < 0);
	CHECK(world_accept(w, lsn, 50) < 0);
	CHECK(world_stats(w).unknown_dst_dropped >= 1);

	/* the pod sends from an address that is not its own */
	int node = world_listen(w, w->peer_netns_fd, CLIENT_IP, 9999);
	REQUIRE(node >= 0);
	struct conn_req own = {.netns_fd = w->netns_fd, .family = AF_INET, .type = SOCK_STREAM,
			       .ip = CLIENT_IP, .port = 9999, .timeout_ms = 2000};
	REQUIRE(child_connect(w, &own, &r) == 0);
	CHECK_MSG(r.err == 0, "from the pod's own address: %s", strerror(r.err));
	CHECK(world_accept(w, node, 1000) >= 0);
	REQUIRE(sh_pod(w, "ip addr add %s/32 dev lo", FORGED_IP) == 0);
	struct conn_req forged = own;
	forged.bind_ip = FORGED_IP;
	forged.timeout_ms = 400;
	REQUIRE(child_connect(w, &forged, &r) == 0);
	CHECK_MSG(r.err == ETIMEDOUT, "from a forged source: expected a timeout, got %s",
		  r.err ? strerror(r.err) : "a connection");
	CHECK(world_accept(w, node, 50) < 0);
	CHECK(world_stats(w).spoofed_dropped >= 1);
	struct moat_event ev[16];
	int n = world_events(w, ev, 16);
	bool saw_unknown = false, saw_forged = false;
	char b[ADDR_STRLEN];
	for (int i = 0; i < n; i++) {
		if (ev[i].kind == MOAT_EV_UNKNOWN_DST_DROPPED)
			saw_unknown |= strcmp(addr_str(&ev[i].dst, b, sizeof(b)), POD_IP_2) == 0 &&
				       ev[i].dst_workload == POD_WL;
		if (ev[i].kind == MOAT_EV_SPOOFED_DROPPED)
			saw_forged |= strcmp(addr_str(&ev[i].src, b, sizeof(b)), FORGED_IP) == 0 &&
				      ev[i].src_workload == POD_WL;
	}
	CHECK_MSG(saw_unknown, "no UNKNOWN_DST_DROPPED event for %s", POD_IP_2);
	CHECK_MSG(saw_forged, "no SPOOFED_DROPPED event for %s", FORGED_IP);

	/* what the pod does to its own TC does not lift it */
	REQUIRE(sh_pod(w, "tc qdisc del dev eth0 clsact 2>/dev/null; true") == 0);
	req = from_client(w, POD_IP_2, 8080, 400);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == ETIMEDOUT, "after tc changes inside the pod: expected a timeout, got %s",
		  r.err ? strerror(r.err) : "a connection");
	CHECK(world_accept(w, app, 50) < 0);

	/* an in-pod filter an earlier moatd left (before the host end was used) is removed when
	 * the pod is attached again: it would enforce with maps nobody updates any more */
	/* nsenter --net: `ip netns exec` and `tc -n` remount /sys, hiding bpffs */
	REQUIRE(sh("tc -n %s qdisc add dev eth0 clsact && nsenter --net=/run/netns/%s tc filter add "
		   "dev eth0 ingress prio 1 handle 0x6d6f6174 bpf da pinned %s/progs/ingress",
		   w->name, w->name, w->pin_dir) == 0);
	CHECK(sh("tc -n %s filter show dev eth0 ingress | grep -q bpf", w->name) == 0);
	struct err e;
	int saved;
	REQUIRE(netns_enter(w->peer_netns_fd, &saved, &e) == 0);
	int rc = dataplane_attach_pod(w->dp, w->pod_key, w->cgroup_fd, w->netns_fd, "eth0", POD_WL,
				      &e);
	netns_leave(saved);
	CHECK_MSG(rc == 0, "attach again: %s", rc ? e.msg : "");
	CHECK(sh("! tc -n %s filter show dev eth0 ingress | grep -q bpf", w->name) == 0);
	CHECK(node_if_has(w, "egress", "to_pod") == 0);

	/* detaching the pod removes the node-side filters and the clsact qdisc moat added */
	dataplane_detach_pod(w->dp, w->pod_key, w->netns_fd, "eth0");
	CHECK(sh("! tc -n %s qdisc show dev va | grep -q clsact", w->peer_name) == 0);
}

TEST(host_side_drops_unregistered_pod_addresses_and_forged_sources)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_HOST | W_CGROUP | W_ATTACH) == 0)
		host_side_body(&w);
	world_down(&w);
}
