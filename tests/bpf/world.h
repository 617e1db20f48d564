/* A private world for one BPF test: a pin dir with the data plane loaded, and on request a
 * pod network namespace (lo + veth eth0), a peer namespace joined to it by the veth, a pod
 * cgroup, and the pod attached. Everything is named moatbpft-<pid>-<n> and torn down by
 * world_down even when the test failed half-way (tests/bpf/run also sweeps leftovers of
 * dead runs).
 *
 * Usage: a TEST calls world_up, then a body function that may REQUIRE/return early, then
 * world_down. */
#ifndef MOAT_TESTS_BPF_WORLD_H
#define MOAT_TESTS_BPF_WORLD_H

#include <stdbool.h>
#include <stdint.h>

#include "bpf/dataplane.h"

enum world_flags {
	W_NETNS = 1 << 0,  /* pod netns with lo up and veth eth0 (peer "peer0" in the same ns) */
	W_PEER = 1 << 1,   /* put the veth peer ("va") in a second netns instead */
	W_CGROUP = 1 << 2, /* pod cgroup under the cgroup2 mount */
	W_ATTACH = 1 << 3, /* attach the pod (needs W_NETNS | W_CGROUP) + pods map entry */
	W_HOST = 1 << 4,   /* with W_PEER: attach from inside the peer netns, which then plays
			    * moatd's (the node's): TC enforcement goes on the host end "va" */
};

/* Ids the tests use in the maps. */
#define POD_WL 1      /* the pod's own workload id */
#define POD_IDENT 11

#define WORLD_MAX_FDS 32

struct world {
	int n;
	unsigned flags;
	char name[64];      /* moatbpft-<pid>-<n>; the netns name too */
	char peer_name[72]; /* <name>-a */
	char pin_dir[128];
	char cgroup_dir[1200];
	char pod_key[32];
	struct dataplane *dp;
	int netns_fd, peer_netns_fd, cgroup_fd;
	uint64_t netns_cookie;
	int fds[WORLD_MAX_FDS];
	int n_fds;
};

/* Returns 0, or -1 after reporting a test failure (the caller still calls world_down). */
int world_up(struct world *w, unsigned flags);
void world_down(struct world *w);

/* Run a shell command (formatted); on failure report it with its output. */
int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Run a command inside the pod netns / peer netns ("ip addr add ..."). */
int sh_pod(struct world *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A TCP listener on ip:port inside the netns of netns_fd; closed by world_down. */
int world_listen(struct world *w, int netns_fd, const char *ip, uint16_t port);
/* Accept within timeout_ms (-1 when nothing came); the fd is closed by world_down. */
int world_accept(struct world *w, int listen_fd, int timeout_ms);

/* What a connect() in a child process saw. */
struct conn_result {
	int err;           /* 0 or errno (ETIMEDOUT when timeout_ms passed) */
	long elapsed_us;   /* connect() until the outcome */
	struct moat_addr local, peer;
	uint16_t local_port, peer_port;
};

struct conn_req {
	int netns_fd;      /* netns to connect from */
	bool in_cgroup;    /* join the world's pod cgroup first */
	int family;        /* AF_INET or AF_INET6 socket */
	int type;          /* SOCK_STREAM or SOCK_DGRAM */
	const char *ip;    /* textual destination (IPv4, IPv6 or ::ffff:a.b.c.d) */
	uint16_t port;
	int timeout_ms;
	const char *bind_ip; /* bind the client to this source first (NULL: kernel picks) */
};

/* Fork a child that (optionally) joins the pod cgroup, enters the netns and connects. */
int child_connect(struct world *w, const struct conn_req *req, struct conn_result *out);

/* Events: drain the ring buffer into out (at most max); returns the count. */
int world_events(struct world *w, struct moat_event *out, int max);

/* The per-CPU stats summed (a failed read is reported as a test failure). */
struct moat_stats world_stats(struct world *w);

/* Map helpers with test-friendly arguments. */
struct moat_addr addr_of(const char *text);
int put_workload(struct world *w, const char *ip, uint32_t id, uint32_t flags, uint32_t mtls);
int put_verdict(struct world *w, uint32_t src, uint32_t dst, uint16_t port, uint32_t action,
		uint32_t reason, uint32_t policy, uint64_t epoch);
int set_settings(struct world *w, uint64_t epoch, uint32_t outbound);

#endif
