/* capture4 / capture6 on a service VIP (the `services` map): a child process in the pod
 * cgroup and netns connects to VIP:port; the test's listeners sit inside the pod netns. */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/util.h"
#include "test.h"
#include "world.h"

#define SVC_ID 7
#define SVC_VIP "10.96.0.10"
#define SVC_VIP6 "fd00:96::10"
#define SVC_PORT 9080
#define TIMEOUT_MS 2000

static int put_service(struct world *w, const char *vip, uint16_t port, uint32_t id)
{
	struct moat_service_key k = {.addr = addr_of(vip), .port = port};
	struct moat_service v = {.id = id, .flags = MOAT_SVC_KUBERNETES};
	snprintf(v.name, sizeof(v.name), "default/reviews");
	struct err e;
	if (dataplane_service_put(w->dp, &k, &v, &e) < 0) {
		test_fail(__FILE__, __LINE__, "%s", e.msg);
		return -1;
	}
	return 0;
}

static struct conn_result vip_connect(struct world *w, int family, const char *ip, uint16_t port,
				      bool in_cgroup)
{
	struct conn_req req = {.netns_fd = w->netns_fd, .in_cgroup = in_cgroup, .family = family,
			       .type = SOCK_STREAM, .ip = ip, .port = port, .timeout_ms = TIMEOUT_MS};
	struct conn_result r = {.err = -1};
	if (child_connect(w, &req, &r) < 0)
		test_fail(__FILE__, __LINE__, "child connect to %s:%u failed", ip, port);
	return r;
}

/* The captured connection's original destination, as moatd reads it after accept(). */
static int take_orig_dst(struct world *w, int lsn, struct moat_orig_dst *od)
{
	int fd = world_accept(w, lsn, 1000);
	CHECK_MSG(fd >= 0, "the VIP connect did not reach the 15001 listener");
	if (fd < 0)
		return -1;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	struct moat_addr client;
	uint16_t cport;
	addr_from_sockaddr((struct sockaddr *)&ss, &client, &cport);
	int rc = dataplane_orig_dst_take(w->dp, w->netns_cookie, &client, cport, od);
	CHECK_MSG(rc == 0, "no orig_dst recorded for the VIP connect");
	return rc;
}

/* ALLOW_ANY and no verdict at all (a miss): still captured, recorded as the service. */
static void captured_body(struct world *w)
{
	REQUIRE(put_service(w, SVC_VIP, SVC_PORT, SVC_ID) == 0);
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(lsn >= 0);
	struct conn_result r = vip_connect(w, AF_INET, SVC_VIP, SVC_PORT, true);
	CHECK_MSG(r.err == 0, "VIP connect: %s", strerror(r.err));
	struct moat_orig_dst od;
	REQUIRE(take_orig_dst(w, lsn, &od) == 0);
	char b[ADDR_STRLEN];
	CHECK_STR(addr_str(&od.addr, b, sizeof(b)), SVC_VIP);
	CHECK_INT(od.port, SVC_PORT);
	CHECK_INT(od.service, SVC_ID);
	CHECK_INT(od.dst_workload, 0);
	CHECK_INT(od.src_workload, POD_WL);
	CHECK_INT(od.action, MOAT_ACTION_NONE); /* a miss: moatd decides */
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_captured, 1);
	CHECK_INT(s.service_captured, 1);
	CHECK_INT(s.verdict_misses, 1);
	CHECK_INT(s.connects_passed, 0);
}

TEST(service_vip_captured_even_under_allow_any)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		captured_body(&w);
	world_down(&w);
}

/* IPv6 VIP, and an ALLOW service verdict carried to moatd. */
static void captured6_body(struct world *w)
{
	REQUIRE(put_service(w, SVC_VIP6, SVC_PORT, SVC_ID) == 0);
	REQUIRE(put_verdict(w, POD_WL, SVC_ID | MOAT_SERVICE_ID_BIT, SVC_PORT, MOAT_ACTION_ALLOW,
			    MOAT_REASON_ALLOWED, 0, 1) == 0);
	int lsn = world_listen(w, w->netns_fd, "::1", MOAT_PORT_OUTBOUND);
	REQUIRE(lsn >= 0);
	struct conn_result r = vip_connect(w, AF_INET6, SVC_VIP6, SVC_PORT, true);
	CHECK_MSG(r.err == 0, "IPv6 VIP connect: %s", strerror(r.err));
	struct moat_orig_dst od;
	REQUIRE(take_orig_dst(w, lsn, &od) == 0);
	CHECK_INT(od.service, SVC_ID);
	CHECK_INT(od.family, AF_INET6);
	CHECK_INT(od.action, MOAT_ACTION_ALLOW);
	CHECK_INT(world_stats(w).verdict_misses, 0);
}

TEST(service_vip6_captured_with_cached_allow)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		captured6_body(&w);
	world_down(&w);
}

/* moatd computed "no endpoint allows this source": EPERM at once, an event naming the
 * service; a stale one (older epoch) is a miss, never a deny or an allow. */
static void denied_body(struct world *w)
{
	REQUIRE(put_service(w, SVC_VIP, SVC_PORT, SVC_ID) == 0);
	REQUIRE(put_verdict(w, POD_WL, SVC_ID | MOAT_SERVICE_ID_BIT, SVC_PORT, MOAT_ACTION_DENY,
			    MOAT_REASON_NO_ENDPOINT, 33, 1) == 0);
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(lsn >= 0);
	struct conn_result r = vip_connect(w, AF_INET, SVC_VIP, SVC_PORT, true);
	CHECK_MSG(r.err == EPERM, "VIP with no allowing endpoint: expected EPERM, got %s",
		  strerror(r.err));
	CHECK(world_accept(w, lsn, 100) < 0);
	struct moat_event ev[2];
	int n = world_events(w, ev, 2);
	CHECK_INT(n, 1);
	if (n >= 1) {
		char b[ADDR_STRLEN];
		CHECK_INT(ev[0].kind, MOAT_EV_CONNECT_DENIED);
		CHECK_INT(ev[0].reason, MOAT_REASON_NO_ENDPOINT);
		CHECK_INT(ev[0].dst_workload, SVC_ID | MOAT_SERVICE_ID_BIT);
		CHECK_INT(ev[0].src_workload, POD_WL);
		CHECK_INT(ev[0].policy, 33);
		CHECK_STR(addr_str(&ev[0].dst, b, sizeof(b)), SVC_VIP);
		CHECK_INT(ev[0].dst_port, SVC_PORT);
	}
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_denied, 1);
	CHECK_INT(s.service_denied, 1);
	CHECK_INT(s.connects_captured, 0);

	REQUIRE(set_settings(w, 2, MOAT_OUTBOUND_ALLOW_ANY) == 0); /* the DENY is stale now */
	r = vip_connect(w, AF_INET, SVC_VIP, SVC_PORT, true);
	CHECK_MSG(r.err == 0, "stale service DENY must be a miss: %s", strerror(r.err));
	struct moat_orig_dst od;
	REQUIRE(take_orig_dst(w, lsn, &od) == 0);
	CHECK_INT(od.action, MOAT_ACTION_NONE);
	CHECK_INT(od.service, SVC_ID);
}

TEST(service_vip_no_allowed_endpoint_is_eperm_at_once)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		denied_body(&w);
	world_down(&w);
}

/* A workload verdict for the same number is not a service verdict (the id spaces differ). */
static void id_space_body(struct world *w)
{
	REQUIRE(put_service(w, SVC_VIP, SVC_PORT, SVC_ID) == 0);
	REQUIRE(put_verdict(w, POD_WL, SVC_ID, SVC_PORT, MOAT_ACTION_DENY, MOAT_REASON_POLICY_DENY,
			    1, 1) == 0);
	REQUIRE(put_verdict(w, POD_WL, SVC_ID, 0, MOAT_ACTION_DENY, MOAT_REASON_POLICY_DENY, 1,
			    1) == 0);
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(lsn >= 0);
	struct conn_result r = vip_connect(w, AF_INET, SVC_VIP, SVC_PORT, true);
	CHECK_MSG(r.err == 0, "a workload verdict must not decide a service: %s", strerror(r.err));
	struct moat_orig_dst od;
	REQUIRE(take_orig_dst(w, lsn, &od) == 0);
	CHECK_INT(od.action, MOAT_ACTION_NONE);
}

TEST(service_verdicts_apart_from_workload_verdicts)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		id_space_body(&w);
	world_down(&w);
}

/* Another port on the VIP is not the service: the outbound policy decides as for any
 * unregistered address (ALLOW_ANY: untouched; REGISTRY_ONLY: EPERM). */
static void other_port_body(struct world *w)
{
	REQUIRE(put_service(w, SVC_VIP, SVC_PORT, SVC_ID) == 0);
	REQUIRE(sh_pod(w, "ip addr add " SVC_VIP "/32 dev lo") == 0);
	int app = world_listen(w, w->netns_fd, SVC_VIP, 7070);
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(app >= 0 && lsn >= 0);
	struct conn_result r = vip_connect(w, AF_INET, SVC_VIP, 7070, true);
	CHECK_MSG(r.err == 0, "other port on the VIP under ALLOW_ANY: %s", strerror(r.err));
	CHECK_INT(r.peer_port, 7070);
	CHECK(world_accept(w, app, 1000) >= 0);
	CHECK(world_accept(w, lsn, 50) < 0);

	REQUIRE(set_settings(w, 1, MOAT_OUTBOUND_REGISTRY_ONLY) == 0);
	r = vip_connect(w, AF_INET, SVC_VIP, 7070, true);
	CHECK_MSG(r.err == EPERM, "other port on the VIP under REGISTRY_ONLY: expected EPERM, got %s",
		  strerror(r.err));
	struct moat_event ev[4];
	int n = world_events(w, ev, 4);
	CHECK_INT(n, 1);
	if (n >= 1) {
		CHECK_INT(ev[0].reason, MOAT_REASON_UNREGISTERED);
		CHECK_INT(ev[0].dst_workload, 0);
	}
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.service_captured, 0);
	CHECK_INT(s.connects_passed, 1);
	CHECK_INT(s.connects_unregistered, 1);
}

TEST(service_vip_other_port_follows_outbound_policy)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		other_port_body(&w);
	world_down(&w);
}

/* A netns that is not an enrolled pod (not in `pods`) reaches the VIP untouched, even with
 * a DENY cached for the pod. */
static void not_enrolled_body(struct world *w)
{
	REQUIRE(put_service(w, SVC_VIP, SVC_PORT, SVC_ID) == 0);
	REQUIRE(put_verdict(w, POD_WL, SVC_ID | MOAT_SERVICE_ID_BIT, SVC_PORT, MOAT_ACTION_DENY,
			    MOAT_REASON_NO_ENDPOINT, 0, 1) == 0);
	REQUIRE(dataplane_pod_del(w->dp, w->netns_cookie) == 0);
	REQUIRE(sh_pod(w, "ip addr add " SVC_VIP "/32 dev lo") == 0);
	int app = world_listen(w, w->netns_fd, SVC_VIP, SVC_PORT);
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_OUTBOUND);
	REQUIRE(app >= 0 && lsn >= 0);
	struct conn_result r = vip_connect(w, AF_INET, SVC_VIP, SVC_PORT, true);
	CHECK_MSG(r.err == 0, "VIP from a netns that is not enrolled: %s", strerror(r.err));
	CHECK(world_accept(w, app, 1000) >= 0);
	CHECK(world_accept(w, lsn, 50) < 0);
	struct moat_stats s = world_stats(w);
	CHECK_INT(s.connects_captured + s.connects_denied + s.service_captured, 0);
	struct moat_event ev[2];
	CHECK_INT(world_events(w, ev, 2), 0);
}

TEST(service_vip_from_not_enrolled_netns_untouched)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		not_enrolled_body(&w);
	world_down(&w);
}
