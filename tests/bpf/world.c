#include "world.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/netns.h"
#include "core/util.h"
#include "test.h"

/* ---------------- shell ---------------- */

static int vsh(const char *fmt, va_list ap)
{
	char cmd[1024];
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	char *full = xasprintf("%s 2>&1", cmd);
	FILE *p = popen(full, "r");
	free(full);
	if (!p) {
		test_fail(__FILE__, __LINE__, "popen %s: %s", cmd, strerror(errno));
		return -1;
	}
	char out[2048];
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = 0;
	int st = pclose(p);
	if (st != 0) {
		test_fail(__FILE__, __LINE__, "`%s` failed (status %d): %s", cmd, st, out);
		return -1;
	}
	return 0;
}

int sh(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = vsh(fmt, ap);
	va_end(ap);
	return rc;
}

int sh_pod(struct world *w, const char *fmt, ...)
{
	char cmd[900];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return sh("ip netns exec %s %s", w->name, cmd);
}

/* ---------------- world ---------------- */

static int open_netns(const char *name, struct err *e)
{
	char path[128];
	snprintf(path, sizeof(path), "/run/netns/%s", name);
	return netns_open(path, e);
}

static int netns_up(struct world *w)
{
	if (sh("ip netns add %s", w->name) < 0)
		return -1;
	w->flags |= W_NETNS; /* for world_down from here on */
	if (sh("ip -n %s link set lo up", w->name) < 0)
		return -1;
	if (w->flags & W_PEER) {
		if (sh("ip netns add %s", w->peer_name) < 0)
			return -1;
		if (sh("ip -n %s link set lo up", w->peer_name) < 0 ||
		    sh("ip -n %s link add name eth0 type veth peer name va netns %s", w->name,
		       w->peer_name) < 0 ||
		    sh("ip -n %s link set va up", w->peer_name) < 0)
			return -1;
	} else if (sh("ip -n %s link add name eth0 type veth peer name peer0", w->name) < 0 ||
		   sh("ip -n %s link set peer0 up", w->name) < 0) {
		return -1;
	}
	if (sh("ip -n %s link set eth0 up", w->name) < 0)
		return -1;
	struct err e;
	w->netns_fd = open_netns(w->name, &e);
	if (w->netns_fd < 0 || netns_cookie_of(w->netns_fd, &w->netns_cookie, &e) < 0) {
		test_fail(__FILE__, __LINE__, "world %s: %s", w->name, e.msg);
		return -1;
	}
	if ((w->flags & W_PEER) && (w->peer_netns_fd = open_netns(w->peer_name, &e)) < 0) {
		test_fail(__FILE__, __LINE__, "world %s: %s", w->name, e.msg);
		return -1;
	}
	return 0;
}

static int cgroup_up(struct world *w)
{
	char root[1024];
	if (!dataplane_cgroup2_mount(root, sizeof(root))) {
		test_fail(__FILE__, __LINE__, "no cgroup2 mount in /proc/mounts");
		return -1;
	}
	snprintf(w->cgroup_dir, sizeof(w->cgroup_dir), "%s/%s", root, w->name);
	if (mkdir(w->cgroup_dir, 0755) < 0) {
		test_fail(__FILE__, __LINE__, "mkdir %s: %s", w->cgroup_dir, strerror(errno));
		w->cgroup_dir[0] = 0;
		return -1;
	}
	w->cgroup_fd = open(w->cgroup_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->cgroup_fd < 0) {
		test_fail(__FILE__, __LINE__, "open %s: %s", w->cgroup_dir, strerror(errno));
		return -1;
	}
	return 0;
}

static int attach_up(struct world *w)
{
	struct err e;
	snprintf(w->pod_key, sizeof(w->pod_key), "test_pod%d", w->n);
	int saved = -1;
	if ((w->flags & W_HOST) && netns_enter(w->peer_netns_fd, &saved, &e) < 0) {
		test_fail(__FILE__, __LINE__, "enter the node netns: %s", e.msg);
		return -1;
	}
	int rc = dataplane_attach_pod(w->dp, w->pod_key, w->cgroup_fd, w->netns_fd, "eth0",
				      POD_WL, &e);
	netns_leave(saved);
	if (rc < 0) {
		test_fail(__FILE__, __LINE__, "attach: %s", e.msg);
		return -1;
	}
	struct moat_pod pod = {.workload = POD_WL, .identity = POD_IDENT};
	snprintf(pod.name, sizeof(pod.name), "test/pod%d", w->n);
	if (dataplane_pod_put(w->dp, w->netns_cookie, &pod, &e) < 0) {
		test_fail(__FILE__, __LINE__, "pod put: %s", e.msg);
		return -1;
	}
	return 0;
}

int world_up(struct world *w, unsigned flags)
{
	static int counter; /* test process only: names must be unique per run */
	memset(w, 0, sizeof(*w));
	w->n = ++counter;
	w->netns_fd = w->peer_netns_fd = w->cgroup_fd = -1;
	snprintf(w->name, sizeof(w->name), "moatbpft-%d-%d", (int)getpid(), w->n);
	snprintf(w->peer_name, sizeof(w->peer_name), "%s-a", w->name);
	snprintf(w->pin_dir, sizeof(w->pin_dir), "/sys/fs/bpf/%s", w->name);
	if (flags & W_HOST)
		flags |= W_PEER;
	w->flags = flags & (W_PEER | W_HOST); /* the rest is set as it comes up */

	struct err e;
	w->dp = dataplane_open(w->pin_dir, &e);
	if (!w->dp) {
		test_fail(__FILE__, __LINE__, "dataplane_open %s: %s", w->pin_dir, e.msg);
		return -1;
	}
	if ((flags & W_NETNS) && netns_up(w) < 0)
		return -1;
	if ((flags & W_CGROUP) && cgroup_up(w) < 0)
		return -1;
	if ((flags & W_ATTACH) && attach_up(w) < 0)
		return -1;
	return 0;
}

static void rmdir_retry(const char *dir)
{
	/* A child that just exited may still be counted in the cgroup for a moment. */
	for (int i = 0; i < 100; i++) {
		if (rmdir(dir) == 0 || errno == ENOENT)
			return;
		if (errno != EBUSY)
			break;
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	test_fail(__FILE__, __LINE__, "teardown: rmdir %s: %s", dir, strerror(errno));
}

void world_down(struct world *w)
{
	for (int i = 0; i < w->n_fds; i++)
		close(w->fds[i]);
	w->n_fds = 0;
	dataplane_close(w->dp);
	w->dp = NULL;
	if (w->cgroup_fd >= 0)
		close(w->cgroup_fd);
	if (w->cgroup_dir[0])
		rmdir_retry(w->cgroup_dir);
	if (w->netns_fd >= 0)
		close(w->netns_fd);
	if (w->peer_netns_fd >= 0)
		close(w->peer_netns_fd);
	if (w->flags & W_NETNS)
		sh("ip netns del %s", w->name);
	if ((w->flags & W_PEER) && (w->flags & W_NETNS))
		sh("ip netns del %s 2>/dev/null || true", w->peer_name);
	struct stat st;
	if (stat(w->pin_dir, &st) == 0)
		test_fail(__FILE__, __LINE__, "teardown: %s still exists after dataplane_close",
			  w->pin_dir);
}

static void keep_fd(struct world *w, int fd)
{
	if (w->n_fds < WORLD_MAX_FDS)
		w->fds[w->n_fds++] = fd;
	else
		close(fd); /* cannot happen in these tests; never leak */
}

/* ---------------- sockets ---------------- */

static socklen_t sockaddr_of(const char *ip, uint16_t port, int family,
			     struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		if (inet_pton(AF_INET, ip, &s4->sin_addr) != 1)
			return 0;
		return sizeof(*s4);
	}
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons(port);
	if (inet_pton(AF_INET6, ip, &s6->sin6_addr) != 1)
		return 0;
	return sizeof(*s6);
}

int world_listen(struct world *w, int netns_fd, const char *ip, uint16_t port)
{
	int family = strchr(ip, ':') ? AF_INET6 : AF_INET;
	struct err e;
	int fd = netns_socket(netns_fd, family, SOCK_STREAM | SOCK_NONBLOCK, 0, &e);
	if (fd < 0) {
		test_fail(__FILE__, __LINE__, "listener %s:%u: %s", ip, port, e.msg);
		return -1;
	}
	keep_fd(w, fd);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(ip, port, family, &ss);
	if (len == 0 || bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0) {
		test_fail(__FILE__, __LINE__, "listener %s:%u: bind/listen: %s", ip, port,
			  strerror(errno));
		return -1;
	}
	return fd;
}

int world_accept(struct world *w, int listen_fd, int timeout_ms)
{
	struct pollfd p = {.fd = listen_fd, .events = POLLIN};
	if (poll(&p, 1, timeout_ms) != 1)
		return -1;
	int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd >= 0)
		keep_fd(w, fd);
	return fd;
}

static long elapsed_us_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000000L + (t1.tv_nsec - t0->tv_nsec) / 1000;
}

/* In the child: returns the result to send back. Never returns to the test. */
static struct conn_result child_do_connect(struct world *w, const struct conn_req *req)
{
	struct conn_result r = {0};
	if (req->in_cgroup) {
		char *procs = xasprintf("%s/cgroup.procs", w->cgroup_dir);
		int fd = open(procs, O_WRONLY | O_CLOEXEC);
		free(procs);
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
		if (fd < 0 || write(fd, pid, (size_t)n) != n) {
			r.err = errno ? errno : EIO;
			r.elapsed_us = -1; /* marks a setup failure */
			return r;
		}
		close(fd);
	}
	if (setns(req->netns_fd, CLONE_NEWNET) < 0) {
		r.err = errno;
		r.elapsed_us = -1;
		return r;
	}
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(req->ip, req->port, req->family, &ss);
	int fd = socket(req->family, req->type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (len == 0 || fd < 0) {
		r.err = len == 0 ? EINVAL : errno;
		r.elapsed_us = -1;
		return r;
	}
	if (req->bind_ip) {
		struct sockaddr_storage bs;
		socklen_t blen = sockaddr_of(req->bind_ip, 0, req->family, &bs);
		if (blen == 0 || bind(fd, (struct sockaddr *)&bs, blen) < 0) {
			r.err = blen == 0 ? EINVAL : errno;
			r.elapsed_us = -1;
			return r;
		}
	}
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = connect(fd, (struct sockaddr *)&ss, len);
	if (rc < 0 && errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		if (poll(&p, 1, req->timeout_ms) == 1) {
			socklen_t el = sizeof(r.err);
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &r.err, &el);
		} else {
			r.err = ETIMEDOUT;
		}
	} else if (rc < 0) {
		r.err = errno;
	}
	r.elapsed_us = elapsed_us_since(&t0);
	struct sockaddr_storage a;
	socklen_t al = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &al) == 0)
		addr_from_sockaddr((struct sockaddr *)&a, &r.local, &r.local_port);
	al = sizeof(a);
	if (r.err == 0 && getpeername(fd, (struct sockaddr *)&a, &al) == 0)
		addr_from_sockaddr((struct sockaddr *)&a, &r.peer, &r.peer_port);
	close(fd);
	return r;
}

int child_connect(struct world *w, const struct conn_req *req, struct conn_result *out)
{
	memset(out, 0, sizeof(*out));
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		test_fail(__FILE__, __LINE__, "pipe: %s", strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		test_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		close(pfd[0]);
		struct conn_result r = child_do_connect(w, req);
		ssize_t n = write(pfd[1], &r, sizeof(r));
		_exit(n == (ssize_t)sizeof(r) ? 0 : 1);
	}
	close(pfd[1]);
	struct pollfd p = {.fd = pfd[0], .events = POLLIN};
	ssize_t n = -1;
	if (poll(&p, 1, req->timeout_ms + 5000) == 1)
		n = read(pfd[0], out, sizeof(*out));
	close(pfd[0]);
	if (n != (ssize_t)sizeof(*out))
		kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	if (n != (ssize_t)sizeof(*out)) {
		test_fail(__FILE__, __LINE__, "connect child to %s:%u: no result", req->ip,
			  req->port);
		return -1;
	}
	if (out->elapsed_us < 0) {
		test_fail(__FILE__, __LINE__, "connect child to %s:%u: setup failed: %s", req->ip,
			  req->port, strerror(out->err));
		return -1;
	}
	return 0;
}

/* ---------------- events and maps ---------------- */

struct ev_sink {
	struct moat_event *out;
	int max, n;
};

static void ev_collect(void *arg, const struct moat_event *ev)
{
	struct ev_sink *s = arg;
	if (s->n < s->max)
		s->out[s->n] = *ev;
	s->n++;
}

int world_events(struct world *w, struct moat_event *out, int max)
{
	struct ev_sink s = {out, max, 0};
	dataplane_events_consume(w->dp, ev_collect, &s);
	return s.n;
}

struct moat_addr addr_of(const char *text)
{
	struct moat_addr a;
	memset(&a, 0, sizeof(a));
	if (!addr_parse(text, &a))
		test_fail(__FILE__, __LINE__, "bad address %s in a test", text);
	return a;
}

int put_workload(struct world *w, const char *ip, uint32_t id, uint32_t flags, uint32_t mtls)
{
	struct moat_addr a = addr_of(ip);
	struct moat_workload wl = {.id = id, .identity = id + 10, .flags = flags,
				   .mtls_mode = mtls};
	snprintf(wl.name, sizeof(wl.name), "test/wl%u", id);
	struct err e;
	if (dataplane_workload_put(w->dp, &a, &wl, &e) < 0) {
		test_fail(__FILE__, __LINE__, "%s", e.msg);
		return -1;
	}
	return 0;
}

int put_verdict(struct world *w, uint32_t src, uint32_t dst, uint16_t port, uint32_t action,
		uint32_t reason, uint32_t policy, uint64_t epoch)
{
	struct moat_verdict_key k = {.src_workload = src, .dst_workload = dst, .dst_port = port};
	struct moat_verdict v = {.action = action, .reason = reason, .policy = policy,
				 .epoch = epoch};
	struct err e;
	if (dataplane_verdict_put(w->dp, &k, &v, &e) < 0) {
		test_fail(__FILE__, __LINE__, "%s", e.msg);
		return -1;
	}
	return 0;
}

struct moat_stats world_stats(struct world *w)
{
	struct moat_stats s;
	if (dataplane_stats(w->dp, &s) < 0)
		test_fail(__FILE__, __LINE__, "dataplane_stats failed");
	return s;
}

int set_settings(struct world *w, uint64_t epoch, uint32_t outbound)
{
	struct moat_settings s = {.epoch = epoch, .outbound_policy = outbound};
	struct err e;
	if (dataplane_settings_set(w->dp, &s, &e) < 0) {
		test_fail(__FILE__, __LINE__, "%s", e.msg);
		return -1;
	}
	return 0;
}
