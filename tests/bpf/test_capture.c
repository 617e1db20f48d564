/* capture4 / capture6 / sock_ops with real sockets: a child process in the pod cgroup and
 * netns connects; the test's listeners sit inside the pod netns. */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/util.h"
#include "test.h"
#include "world.h"

#define DST_WL 2
#define DST_IP "10.77.0.2"
#define DST_IP6 "fd00:77::2"
#define APP_PORT 8080
#define CONNECT_TIMEOUT_MS 2000

static struct conn_req pod_connect(struct world *w, int family, const char *ip, uint16_t port)
{
	struct conn_req r = {.netns_fd = w->netns_fd, .in_cgroup = true, .family = family,
			     .type = SOCK_STREAM, .ip = ip, .port = port,
			     .timeout_ms = CONNECT_TIMEOUT_MS};
	return r;
}

static const char *astr(const struct moat_addr *a, char *buf)
{
	return addr_str(a, buf, ADDR_STRLEN);
}

/* The accepted connection's peer, as moatd would key orig_dst with it. */
static int accepted_peer(int fd, struct moat_addr *a, uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	addr_from_sockaddr((struct sockaddr *)&ss, a, port);
	return 0;
}

/* Connect from the pod to ip:APP_PORT, expect it on the 15001 listener, and return the
 * original destination moatd would read. */
static int captured_connect(struct world *w, int family, const char *ip, int lsn,
			    struct moat_orig_dst *od)
{
	struct conn_result r;
	struct conn_req req = pod_connect(w, family, ip, APP_PORT);
	if (child_connect(w, &req, &r) < 0)
		return -1;
	CHECK_MSG(r.err == 0, "connect %s:%d from the pod: %s", ip, APP_PORT, strerror(r.err));
	int fd = world_accept(w, lsn, 1000);
	CHECK_MSG(fd >= 0, "connect to %s:%d did not reach the 15001 listener", ip, APP_PORT);
	if (fd < 0)
		return -1;
	struct moat_addr client;
	uint16_t cport;
	if (accepted_peer(fd, &client, &cport) < 0)
		return -1;
	CHECK_INT(cport, r.local_port);
	if (dataplane_orig_dst_take(w->dp, w->netns_cookie, &client, cport, od) < 0) {
		char b[ADDR_STRLEN];
		test_fail(__FILE__, __LINE__, "no orig_dst for client %s:%u",
			  astr(&client, b), cport);
		return -1;
	}
	/* take deletes */
	struct moat_orig_dst again;
	CHECK(dataplane_orig_dst_take(w->dp, w->netns_cookie, &client, cport, &again) < 0);
	return 0;
}

static void allow_body(struct world *w)
{
	REQUIRE(put_workload(w, DST_IP, DST_WL, MOAT_WL_AMBIENT, MOAT_MTLS_STRICT) == 0);
	REQUIRE(put_verdict(w, POD_WL, DST_WL, APP_PORT, MOAT_ACTION_ALLOW, MOAT_REASON_ALLOWED,
			    9, 1) == 0);
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(lsn >= 0);
	struct moat_orig_dst od;
	REQUIRE(captured_connect(w, AF_INET, DST_IP, lsn, &od) == 0);
	char b[ADDR_STRLEN];
	CHECK_STR(astr(&od.addr, b), DST_IP);
	CHECK_INT(od.port, APP_PORT);
	CHECK_INT(od.family, AF_INET);
	CHECK_INT(od.src_workload, POD_WL);
	CHECK_INT(od.dst_workload, DST_WL);
	CHECK_INT(od.action, MOAT_ACTION_ALLOW);
	CHECK_INT(od.policy, 9);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_captured, 1);
	CHECK_INT(s.verdict_misses, 0);
	CHECK_INT(s.orig_dst_recorded, 1);
	CHECK_INT(s.connects_denied, 0);
}

TEST(capture_allow_lands_on_outbound_listener)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		allow_body(&w);
	world_down(&w);
}

static void deny_body(struct world *w)
{
	REQUIRE(put_workload(w, DST_IP, DST_WL, MOAT_WL_AMBIENT, MOAT_MTLS_STRICT) == 0);
	REQUIRE(put_verdict(w, POD_WL, DST_WL, APP_PORT, MOAT_ACTION_DENY,
			    MOAT_REASON_POLICY_DENY, 42, 1) == 0);
	/* A listener that must stay untouched: a DENY never reaches moatd. */
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(lsn >= 0);
	struct conn_result r;
	struct conn_req req = pod_connect(w, AF_INET, DST_IP, APP_PORT);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == EPERM, "expected EPERM, got %s", strerror(r.err));
	CHECK_MSG(r.elapsed_us < 200000, "deny took %ld us: not immediate", r.elapsed_us);
	CHECK(world_accept(w, lsn, 100) < 0);

	struct moat_event ev[4];
	int n = world_events(w, ev, 4);
	CHECK_INT(n, 1);
	if (n >= 1) {
		char b[ADDR_STRLEN];
		CHECK_INT(ev[0].kind, MOAT_EV_CONNECT_DENIED);
		CHECK_INT(ev[0].reason, MOAT_REASON_POLICY_DENY);
		CHECK_INT(ev[0].policy, 42);
		CHECK_INT(ev[0].src_workload, POD_WL);
		CHECK_INT(ev[0].dst_workload, DST_WL);
		CHECK_INT(ev[0].epoch, 1);
		CHECK(ev[0].netns_cookie == w->netns_cookie);
		CHECK(ev[0].ts_ns > 0);
		CHECK_STR(astr(&ev[0].dst, b), DST_IP);
		CHECK_INT(ev[0].dst_port, APP_PORT);
	}
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_denied, 1);
	CHECK_INT(s.connects_captured, 0);
	CHECK_INT(s.events_lost, 0);
}

TEST(capture_cached_deny_is_eperm_at_once)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		deny_body(&w);
	world_down(&w);
}

static void port0_body(struct world *w)
{
	/* Port 0 denies every port not listed; 8080 is listed and allowed. */
	REQUIRE(put_workload(w, DST_IP, DST_WL, MOAT_WL_AMBIENT, MOAT_MTLS_STRICT) == 0);
	REQUIRE(put_verdict(w, POD_WL, DST_WL, 0, MOAT_ACTION_DENY, MOAT_REASON_NO_ALLOW, 5,
			    1) == 0);
	REQUIRE(put_verdict(w, POD_WL, DST_WL, APP_PORT, MOAT_ACTION_ALLOW, MOAT_REASON_ALLOWED,
			    6, 1) == 0);
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(lsn >= 0);
	struct conn_result r;
	struct conn_req req = pod_connect(w, AF_INET, DST_IP, 9090);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == EPERM, "port 9090 (port-0 DENY): expected EPERM, got %s",
		  strerror(r.err));
	struct moat_orig_dst od;
	REQUIRE(captured_connect(w, AF_INET, DST_IP, lsn, &od) == 0);
	CHECK_INT(od.action, MOAT_ACTION_ALLOW);
	CHECK_INT(od.policy, 6);
	struct moat_event ev[2];
	CHECK_INT(world_events(w, ev, 2), 1);
	CHECK_INT(ev[0].reason, MOAT_REASON_NO_ALLOW);
	CHECK_INT(ev[0].dst_port, 9090);
}

TEST(capture_port0_verdict_and_exact_port_override)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		port0_body(&w);
	world_down(&w);
}

static void stale_body(struct world *w)
{
	REQUIRE(put_workload(w, DST_IP, DST_WL, MOAT_WL_AMBIENT, MOAT_MTLS_STRICT) == 0);
	REQUIRE(put_verdict(w, POD_WL, DST_WL, APP_PORT, MOAT_ACTION_DENY,
			    MOAT_REASON_POLICY_DENY, 42, 1) == 0);
	REQUIRE(set_settings(w, 2, MOAT_OUTBOUND_ALLOW_ANY) == 0); /* epoch bump: now stale */
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(lsn >= 0);
	struct moat_orig_dst od;
	REQUIRE(captured_connect(w, AF_INET, DST_IP, lsn, &od) == 0);
	CHECK_INT(od.action, MOAT_ACTION_NONE);
	CHECK_INT(od.policy, 0);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_denied, 0);
	CHECK_INT(s.verdict_misses, 1);
	CHECK_INT(s.connects_captured, 1);
	struct moat_event ev[2];
	CHECK_INT(world_events(w, ev, 2), 0);
}

TEST(capture_stale_epoch_is_a_miss)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		stale_body(&w);
	world_down(&w);
}

static void registry_only_body(struct world *w)
{
	REQUIRE(set_settings(w, 1, MOAT_OUTBOUND_REGISTRY_ONLY) == 0);
	struct conn_result r;
	struct conn_req req = pod_connect(w, AF_INET, "10.77.0.99", APP_PORT);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == EPERM, "unregistered destination: expected EPERM, got %s",
		  strerror(r.err));
	CHECK_MSG(r.elapsed_us < 200000, "deny took %ld us", r.elapsed_us);
	struct moat_event ev[2];
	int n = world_events(w, ev, 2);
	CHECK_INT(n, 1);
	if (n >= 1) {
		char b[ADDR_STRLEN];
		CHECK_INT(ev[0].kind, MOAT_EV_CONNECT_DENIED);
		CHECK_INT(ev[0].reason, MOAT_REASON_UNREGISTERED);
		CHECK_INT(ev[0].dst_workload, 0);
		CHECK_INT(ev[0].src_workload, POD_WL);
		CHECK_STR(astr(&ev[0].dst, b), "10.77.0.99");
	}
	/* loopback still works, directly */
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", 7000);
	REQUIRE(lsn >= 0);
	req = pod_connect(w, AF_INET, "127.0.0.1", 7000);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "loopback under REGISTRY_ONLY: %s", strerror(r.err));
	CHECK_INT(r.peer_port, 7000);
	CHECK(world_accept(w, lsn, 1000) >= 0);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_unregistered, 1);
	CHECK_INT(s.connects_passed, 1);
}

TEST(capture_registry_only_denies_unknown)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		registry_only_body(&w);
	world_down(&w);
}

static void allow_any_body(struct world *w)
{
	/* a real server on an unregistered address inside the pod netns */
	REQUIRE(sh_pod(w, "ip addr add 10.77.0.9/32 dev lo") == 0);
	int lsn = world_listen(w, w->netns_fd, "10.77.0.9", APP_PORT);
	REQUIRE(lsn >= 0);
	int outbound = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(outbound >= 0);
	struct conn_result r;
	struct conn_req req = pod_connect(w, AF_INET, "10.77.0.9", APP_PORT);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "unknown destination under ALLOW_ANY: %s", strerror(r.err));
	char b[ADDR_STRLEN];
	CHECK_STR(astr(&r.peer, b), "10.77.0.9");
	CHECK_INT(r.peer_port, APP_PORT);
	CHECK(world_accept(w, lsn, 1000) >= 0);
	CHECK(world_accept(w, outbound, 50) < 0);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_passed, 1);
	CHECK_INT(s.connects_captured, 0);
}

TEST(capture_allow_any_unknown_untouched)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		allow_any_body(&w);
	world_down(&w);
}

static void udp_body(struct world *w)
{
	/* A registered, denied destination: UDP must still be left alone. */
	REQUIRE(put_workload(w, DST_IP, DST_WL, MOAT_WL_AMBIENT, MOAT_MTLS_STRICT) == 0);
	REQUIRE(put_verdict(w, POD_WL, DST_WL, APP_PORT, MOAT_ACTION_DENY,
			    MOAT_REASON_POLICY_DENY, 1, 1) == 0);
	REQUIRE(set_settings(w, 1, MOAT_OUTBOUND_REGISTRY_ONLY) == 0);
	REQUIRE(sh_pod(w, "ip route add 10.77.0.0/24 dev eth0") == 0);
	struct conn_result r;
	struct conn_req req = pod_connect(w, AF_INET, DST_IP, APP_PORT);
	req.type = SOCK_DGRAM;
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "UDP connect: %s", strerror(r.err));
	char b[ADDR_STRLEN];
	CHECK_STR(astr(&r.peer, b), DST_IP);
	CHECK_INT(r.peer_port, APP_PORT);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_denied + s.connects_captured + s.connects_unregistered, 0);
}

TEST(capture_udp_untouched)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		udp_body(&w);
	world_down(&w);
}

static void ipv6_body(struct world *w)
{
	REQUIRE(put_workload(w, DST_IP6, DST_WL, MOAT_WL_AMBIENT, MOAT_MTLS_STRICT) == 0);
	REQUIRE(put_verdict(w, POD_WL, DST_WL, APP_PORT, MOAT_ACTION_ALLOW, MOAT_REASON_ALLOWED,
			    3, 1) == 0);
	int lsn = world_listen(w, w->netns_fd, "::1", MOAT_PORT_OUTBOUND);
	REQUIRE(lsn >= 0);
	struct moat_orig_dst od;
	REQUIRE(captured_connect(w, AF_INET6, DST_IP6, lsn, &od) == 0);
	char b[ADDR_STRLEN];
	CHECK_STR(astr(&od.addr, b), DST_IP6);
	CHECK_INT(od.port, APP_PORT);
	CHECK_INT(od.family, AF_INET6);
	CHECK_INT(od.dst_workload, DST_WL);
	CHECK_INT(od.action, MOAT_ACTION_ALLOW);

	/* and a DENY over IPv6 */
	REQUIRE(put_verdict(w, POD_WL, DST_WL, 443, MOAT_ACTION_DENY, MOAT_REASON_POLICY_DENY,
			    4, 1) == 0);
	struct conn_result r;
	struct conn_req req = pod_connect(w, AF_INET6, DST_IP6, 443);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == EPERM, "IPv6 DENY: expected EPERM, got %s", strerror(r.err));
	struct moat_event ev[2];
	CHECK_INT(world_events(w, ev, 2), 1);
	CHECK_STR(astr(&ev[0].dst, b), DST_IP6);
}

TEST(capture_ipv6_destination)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		ipv6_body(&w);
	world_down(&w);
}

static void mapped_body(struct world *w)
{
	REQUIRE(put_workload(w, DST_IP, DST_WL, MOAT_WL_AMBIENT, MOAT_MTLS_STRICT) == 0);
	REQUIRE(put_verdict(w, POD_WL, DST_WL, APP_PORT, MOAT_ACTION_ALLOW, MOAT_REASON_ALLOWED,
			    3, 1) == 0);
	/* The v4-mapped connect must leave over IPv4 to the IPv4 listener. */
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(lsn >= 0);
	struct moat_orig_dst od;
	REQUIRE(captured_connect(w, AF_INET6, "::ffff:" DST_IP, lsn, &od) == 0);
	char b[ADDR_STRLEN];
	CHECK_STR(astr(&od.addr, b), DST_IP);
	CHECK(addr_is_v4(&od.addr));
	CHECK_INT(od.family, AF_INET6);
	CHECK_INT(od.dst_workload, DST_WL);

	/* a v4-mapped loopback destination stays untouched */
	int direct = world_listen(w, w->netns_fd, "127.0.0.1", 7001);
	REQUIRE(direct >= 0);
	struct conn_result r;
	struct conn_req req = pod_connect(w, AF_INET6, "::ffff:127.0.0.1", 7001);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "v4-mapped loopback: %s", strerror(r.err));
	CHECK(world_accept(w, direct, 1000) >= 0);
}

TEST(capture_v4_mapped_from_inet6_socket)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		mapped_body(&w);
	world_down(&w);
}

static void outside_body(struct world *w)
{
	REQUIRE(put_workload(w, "10.77.0.9", DST_WL, MOAT_WL_AMBIENT, MOAT_MTLS_PERMISSIVE) ==
		0);
	REQUIRE(put_verdict(w, POD_WL, DST_WL, APP_PORT, MOAT_ACTION_DENY,
			    MOAT_REASON_POLICY_DENY, 1, 1) == 0);
	REQUIRE(sh_pod(w, "ip addr add 10.77.0.9/32 dev lo") == 0);
	int lsn = world_listen(w, w->netns_fd, "10.77.0.9", APP_PORT);
	REQUIRE(lsn >= 0);
	int outbound = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(outbound >= 0);
	/* same netns, not in the pod cgroup: the hooks never run */
	struct conn_result r;
	struct conn_req req = pod_connect(w, AF_INET, "10.77.0.9", APP_PORT);
	req.in_cgroup = false;
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "connect from outside the pod cgroup: %s", strerror(r.err));
	CHECK(world_accept(w, lsn, 1000) >= 0);
	CHECK(world_accept(w, outbound, 50) < 0);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_denied + s.connects_captured + s.connects_passed, 0);
}

TEST(capture_outside_pod_cgroup_never_captured)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		outside_body(&w);
	world_down(&w);
}

static void not_a_pod_body(struct world *w)
{
	/* In the cgroup, but the netns is not in the pods map (e.g. being unenrolled). */
	REQUIRE(dataplane_pod_del(w->dp, w->netns_cookie) == 0);
	REQUIRE(set_settings(w, 1, MOAT_OUTBOUND_REGISTRY_ONLY) == 0);
	REQUIRE(sh_pod(w, "ip addr add 10.77.0.9/32 dev lo") == 0);
	int lsn = world_listen(w, w->netns_fd, "10.77.0.9", APP_PORT);
	REQUIRE(lsn >= 0);
	struct conn_result r;
	struct conn_req req = pod_connect(w, AF_INET, "10.77.0.9", APP_PORT);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "connect from an unknown netns: %s", strerror(r.err));
	CHECK(world_accept(w, lsn, 1000) >= 0);
}

TEST(capture_unknown_netns_untouched)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		not_a_pod_body(&w);
	world_down(&w);
}

static void self_body(struct world *w)
{
	/* The pod's own address: same workload id, never captured. */
	REQUIRE(put_workload(w, "10.77.0.9", POD_WL, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_PERMISSIVE) == 0);
	REQUIRE(sh_pod(w, "ip addr add 10.77.0.9/32 dev lo") == 0);
	int lsn = world_listen(w, w->netns_fd, "10.77.0.9", APP_PORT);
	REQUIRE(lsn >= 0);
	struct conn_result r;
	struct conn_req req = pod_connect(w, AF_INET, "10.77.0.9", APP_PORT);
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "connect to self: %s", strerror(r.err));
	CHECK(world_accept(w, lsn, 1000) >= 0);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_passed, 1);
	CHECK_INT(s.connects_captured, 0);
}

TEST(capture_own_address_untouched)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		self_body(&w);
	world_down(&w);
}
