/* The loader: probe, pin layout, stale pins, detach, close, map helpers, bpftool dumps. */
#include <bpf/bpf.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "test.h"
#include "world.h"

static bool exists(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool exists(const char *fmt, ...)
{
	char path[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	struct stat st;
	return stat(path, &st) == 0;
}

/* Output of a command (stdout+stderr), or NULL. */
static char *run_capture(const char *cmd)
{
	char *full = xasprintf("%s 2>&1", cmd);
	FILE *p = popen(full, "r");
	free(full);
	if (!p)
		return NULL;
	struct sbuf b;
	sbuf_init(&b);
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0)
		sbuf_append(&b, chunk, n);
	int st = pclose(p);
	char *out = sbuf_take(&b);
	if (st != 0) {
		test_fail(__FILE__, __LINE__, "`%s` exited with %d: %s", cmd, st,
			  out ? out : "");
		free(out);
		return NULL;
	}
	return out ? out : xstrdup("");
}

TEST(loader_probe_ok)
{
	struct err e;
	int rc = dataplane_probe("/sys/fs/bpf/moatbpft-probe", &e);
	CHECK_MSG(rc == 0, "probe: %s", e.msg);
}

TEST(loader_probe_rejects_non_bpffs_pin_dir)
{
	struct err e = {{0}};
	CHECK(dataplane_probe("/tmp/moatbpft-not-bpffs/x", &e) < 0);
	CHECK_CONTAINS(e.msg, "not on a bpf filesystem");
	CHECK(dataplane_open("/tmp/moatbpft-not-bpffs/x", &e) == NULL);
	CHECK(dataplane_open("relative/dir", &e) == NULL);
	CHECK_CONTAINS(e.msg, "absolute");
}

static void layout_body(struct world *w)
{
	static const char *maps[] = {"workloads", "pods", "verdicts", "pending_dst",
				     "orig_dst", "port_mtls", "plain_listeners", "settings",
				     "events", "stats"};
	for (size_t i = 0; i < ARRAY_SIZE(maps); i++)
		CHECK_MSG(exists("%s/%s", w->pin_dir, maps[i]), "map %s not pinned", maps[i]);
	static const char *progs[] = {"capture4", "capture6", "sock_ops", "ingress",
				      "lo_ingress", "plain_lookup"};
	for (size_t i = 0; i < ARRAY_SIZE(progs); i++)
		CHECK_MSG(exists("%s/progs/%s", w->pin_dir, progs[i]), "prog %s not pinned",
			  progs[i]);
	char dir[256];
	snprintf(dir, sizeof(dir), "%s/links/%s", w->pin_dir, w->pod_key);
	static const char *links[] = {"capture4", "capture6", "sock_ops", "plain_lookup"};
	for (size_t i = 0; i < ARRAY_SIZE(links); i++)
		CHECK_MSG(exists("%s/%s", dir, links[i]), "link %s of %s not pinned", links[i],
			  w->pod_key);
	/* settings initialised: epoch 1, ALLOW_ANY */
	char path[256];
	snprintf(path, sizeof(path), "%s/settings", w->pin_dir);
	int fd = bpf_obj_get(path);
	REQUIRE(fd >= 0);
	__u32 zero = 0;
	struct moat_settings s;
	CHECK(bpf_map_lookup_elem(fd, &zero, &s) == 0);
	CHECK_INT(s.epoch, 1);
	CHECK_INT(s.outbound_policy, MOAT_OUTBOUND_ALLOW_ANY);
	close(fd);
	/* TC filter is on eth0 of the pod */
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "ip netns exec %s tc filter show dev eth0 ingress", w->name);
	char *out = run_capture(cmd);
	CHECK_CONTAINS(out, "ingress");
	CHECK_CONTAINS(out, "direct-action");
	free(out);
	snprintf(cmd, sizeof(cmd), "ip netns exec %s tc filter show dev lo ingress", w->name);
	out = run_capture(cmd);
	CHECK_CONTAINS(out, "lo_ingress");
	free(out);
}

TEST(loader_pin_layout)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		layout_body(&w);
	world_down(&w);
}

static void bpftool_body(struct world *w)
{
	REQUIRE(put_workload(w, "10.9.0.5", 77, MOAT_WL_AMBIENT | MOAT_WL_LOCAL,
			     MOAT_MTLS_STRICT) == 0);
	REQUIRE(put_verdict(w, 1, 77, 8080, MOAT_ACTION_ALLOW, MOAT_REASON_ALLOWED, 3, 1) == 0);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "bpftool map dump pinned %s/workloads", w->pin_dir);
	char *out = run_capture(cmd);
	CHECK_CONTAINS(out, "\"mtls_mode\": 1");
	CHECK_CONTAINS(out, "\"id\": 77");
	CHECK_CONTAINS(out, "\"name\": \"test/wl77\"");
	CHECK_CONTAINS(out, "\"addr\"");
	free(out);
	snprintf(cmd, sizeof(cmd), "bpftool map dump pinned %s/verdicts", w->pin_dir);
	out = run_capture(cmd);
	CHECK_CONTAINS(out, "\"dst_port\": 8080");
	CHECK_CONTAINS(out, "\"epoch\": 1");
	free(out);
	snprintf(cmd, sizeof(cmd), "bpftool map dump pinned %s/stats", w->pin_dir);
	out = run_capture(cmd);
	CHECK_CONTAINS(out, "connects_captured");
	free(out);
}

TEST(loader_bpftool_dump_has_field_names)
{
	struct world w;
	if (world_up(&w, 0) == 0)
		bpftool_body(&w);
	world_down(&w);
}

static void stale_body(struct world *w)
{
	/* Simulate a crashed run: drop our dataplane, leave pins behind in its directory (a
	 * map where ours go and a pod's link dir), then open a new dataplane on it. */
	dataplane_close(w->dp);
	w->dp = NULL;
	char path[256];
	snprintf(path, sizeof(path), "%s/links/old_pod", w->pin_dir);
	REQUIRE(mkdir_p(path, 0700) == 0);
	int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "stale", 4, 4, 1, NULL);
	REQUIRE(fd >= 0);
	snprintf(path, sizeof(path), "%s/links/old_pod/capture4", w->pin_dir);
	CHECK(bpf_obj_pin(fd, path) == 0);
	snprintf(path, sizeof(path), "%s/workloads", w->pin_dir);
	CHECK(bpf_obj_pin(fd, path) == 0);
	close(fd);

	struct err e;
	w->dp = dataplane_open(w->pin_dir, &e);
	CHECK_MSG(w->dp != NULL, "open over stale pins: %s", e.msg);
	if (!w->dp)
		return;
	/* The previous run's pod links stay (its pods stay captured: fail closed) ... */
	CHECK(exists("%s/links/%s", w->pin_dir, "old_pod"));
	/* ... its maps are replaced: workloads is ours again (the stale one had a 4-byte key) */
	CHECK(put_workload(w, "10.9.0.6", 5, 0, 0) == 0);
	/* ... and detaching the pod it left removes its links. */
	dataplane_detach_pod(w->dp, "old_pod", -1, NULL);
	CHECK(!exists("%s/links/%s", w->pin_dir, "old_pod"));
}

TEST(loader_open_replaces_stale_maps_keeps_pod_links)
{
	struct world w;
	if (world_up(&w, 0) == 0)
		stale_body(&w);
	world_down(&w);
}

static void detach_body(struct world *w)
{
	char dir[256];
	snprintf(dir, sizeof(dir), "%s/links/%s", w->pin_dir, w->pod_key);
	struct stat st;
	REQUIRE(stat(dir, &st) == 0);
	dataplane_detach_pod(w->dp, w->pod_key, w->netns_fd, "eth0");
	CHECK(stat(dir, &st) != 0);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "ip netns exec %s tc filter show dev eth0 ingress", w->name);
	char *out = run_capture(cmd);
	CHECK_MSG(out && !strstr(out, "ingress"), "TC filter left after detach: %s",
		  out ? out : "");
	free(out);
	snprintf(cmd, sizeof(cmd), "ip netns exec %s tc qdisc show", w->name);
	out = run_capture(cmd);
	CHECK_MSG(out && !strstr(out, "clsact"), "clsact left after detach: %s", out ? out : "");
	free(out);
	snprintf(cmd, sizeof(cmd), "ip netns exec %s tc filter show dev lo ingress", w->name);
	out = run_capture(cmd);
	CHECK_MSG(out && !strstr(out, "lo_ingress"), "lo filter left after detach: %s",
		  out ? out : "");
	free(out);

	/* capture no longer runs: a REGISTRY_ONLY deny would otherwise fire */
	REQUIRE(set_settings(w, 1, MOAT_OUTBOUND_REGISTRY_ONLY) == 0);
	REQUIRE(sh_pod(w, "ip addr add 10.77.0.9/32 dev lo") == 0);
	int lsn = world_listen(w, w->netns_fd, "10.77.0.9", 8080);
	REQUIRE(lsn >= 0);
	struct conn_result r;
	struct conn_req req = {.netns_fd = w->netns_fd, .in_cgroup = true, .family = AF_INET,
			       .type = SOCK_STREAM, .ip = "10.77.0.9", .port = 8080,
			       .timeout_ms = 2000};
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == 0, "connect after detach: %s", strerror(r.err));

	/* attach again works (re-enrollment) and capture is back */
	struct err e;
	REQUIRE(dataplane_attach_pod(w->dp, w->pod_key, w->cgroup_fd, w->netns_fd, "eth0", POD_WL, &e) ==
		0);
	REQUIRE(dataplane_attach_pod(w->dp, w->pod_key, w->cgroup_fd, w->netns_fd, "eth0", POD_WL, &e) ==
		0); /* twice: replaces */
	REQUIRE(child_connect(w, &req, &r) == 0);
	CHECK_MSG(r.err == EPERM, "after re-attach: expected EPERM, got %s", strerror(r.err));
}

TEST(loader_detach_pod_removes_links_and_tc)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		detach_body(&w);
	world_down(&w);
}

static void attach_errors_body(struct world *w)
{
	struct err e = {{0}};
	CHECK(dataplane_attach_pod(w->dp, "bad/key", w->cgroup_fd, w->netns_fd, "eth0", POD_WL, &e) < 0);
	CHECK_CONTAINS(e.msg, "bad/key");
	CHECK(dataplane_attach_pod(w->dp, "p1", w->cgroup_fd, w->netns_fd, "nosuchif0", POD_WL, &e) < 0);
	CHECK_CONTAINS(e.msg, "pod p1");
	CHECK_CONTAINS(e.msg, "nosuchif0");
	/* the failed attach left nothing behind */
	CHECK(!exists("%s/links/%s", w->pin_dir, "p1"));
	CHECK(dataplane_attach_pod(w->dp, "p3", w->cgroup_fd, w->netns_fd, "lo", POD_WL, &e) < 0);
	CHECK_CONTAINS(e.msg, "not lo");
	CHECK(dataplane_attach_pod(w->dp, "p2", -1, w->netns_fd, "eth0", POD_WL, &e) < 0);
	CHECK_CONTAINS(e.msg, "capture4");
	CHECK_CONTAINS(e.msg, "cgroup");
}

TEST(loader_attach_errors_say_what)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP) == 0)
		attach_errors_body(&w);
	world_down(&w);
}

static void close_body(struct world *w)
{
	/* populate everything, including a sockhash entry, then close */
	REQUIRE(put_workload(w, "10.9.0.5", 77, MOAT_WL_LOCAL, MOAT_MTLS_PERMISSIVE) == 0);
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", MOAT_PORT_INBOUND_PLAIN);
	REQUIRE(lsn >= 0);
	struct moat_addr a = addr_of("10.9.0.5");
	struct err e;
	REQUIRE(dataplane_plain_listener_put(w->dp, &a, lsn, &e) == 0);
	dataplane_close(w->dp);
	w->dp = NULL;
	struct stat st;
	CHECK_MSG(stat(w->pin_dir, &st) != 0, "%s still exists", w->pin_dir);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "ip netns exec %s tc filter show dev eth0 ingress", w->name);
	char *out = run_capture(cmd);
	CHECK_MSG(out && !strstr(out, "ingress"), "TC filter left after close: %s",
		  out ? out : "");
	free(out);
}

TEST(loader_close_leaves_nothing)
{
	struct world w;
	if (world_up(&w, W_NETNS | W_CGROUP | W_ATTACH) == 0)
		close_body(&w);
	world_down(&w);
}

static void maps_body(struct world *w)
{
	REQUIRE(put_workload(w, "10.9.0.1", 1, 0, 0) == 0);
	REQUIRE(put_workload(w, "10.9.0.2", 2, 0, 0) == 0);
	REQUIRE(put_workload(w, "fd00::3", 3, 0, 0) == 0);
	struct moat_addr *keys = NULL;
	size_t n = 0;
	REQUIRE(dataplane_workload_keys(w->dp, &keys, &n) == 0);
	CHECK_INT(n, 3);
	int seen = 0;
	for (size_t i = 0; i < n; i++) {
		char b[ADDR_STRLEN];
		const char *s = addr_str(&keys[i], b, sizeof(b));
		seen |= strcmp(s, "10.9.0.1") == 0 ? 1 : strcmp(s, "10.9.0.2") == 0 ? 2
						       : strcmp(s, "fd00::3") == 0  ? 4
										    : 0;
	}
	free(keys);
	CHECK_INT(seen, 7);
	struct moat_addr a = addr_of("10.9.0.2");
	CHECK(dataplane_workload_del(w->dp, &a) == 0);
	CHECK(dataplane_workload_del(w->dp, &a) == 0); /* absent is fine */
	REQUIRE(dataplane_workload_keys(w->dp, &keys, &n) == 0);
	CHECK_INT(n, 2);
	free(keys);

	for (uint16_t p = 1; p <= 300; p++)
		REQUIRE(put_verdict(w, 1, 2, p, MOAT_ACTION_ALLOW, 0, 0, 1) == 0);
	struct moat_verdict_key k = {.src_workload = 1, .dst_workload = 2, .dst_port = 42};
	struct moat_verdict v;
	CHECK(dataplane_verdict_get(w->dp, &k, &v) == 0);
	CHECK_INT(v.action, MOAT_ACTION_ALLOW);
	CHECK(dataplane_verdicts_clear(w->dp) == 0);
	CHECK(dataplane_verdict_get(w->dp, &k, &v) < 0);

	struct moat_stats s;
	CHECK(dataplane_stats(w->dp, &s) == 0);
	CHECK_INT(s.connects_captured, 0);
	CHECK(dataplane_events_fd(w->dp) >= 0);
	CHECK_STR(dataplane_pin_dir(w->dp), w->pin_dir);
}

TEST(loader_map_helpers)
{
	struct world w;
	if (world_up(&w, 0) == 0)
		maps_body(&w);
	world_down(&w);
}

TEST(loader_netns_cookie_of)
{
	struct err e;
	int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	REQUIRE(self >= 0);
	uint64_t c1 = 0, c2 = 0;
	CHECK_MSG(netns_cookie_of(self, &c1, &e) == 0, "%s", e.msg);
	CHECK_MSG(netns_cookie_of(self, &c2, &e) == 0, "%s", e.msg);
	CHECK(c1 != 0);
	CHECK(c1 == c2);
	close(self);
	struct world w;
	if (world_up(&w, W_NETNS) == 0)
		CHECK(w.netns_cookie != 0 && w.netns_cookie != c1);
	world_down(&w);
}
