/* moat-bench: the measuring end of `make bench`. Every figure that is a time or a count of
 * connections is taken here, in C around the syscalls, so that no shell or process start-up
 * is inside a measurement.
 *
 *   moat-bench echo --port P [--bind ADDR]
 *   moat-bench rr HOST:PORT [--count N] [--warmup N] [--seconds S]
 *   moat-bench connrate HOST:PORT [--clients K] [--seconds S]
 *   moat-bench denied HOST:PORT [--count N]
 *   moat-bench hold HOST:PORT [--count N] [--seconds S]
 *
 * echo     serves every connection by writing back what it reads; closes on EOF.
 * rr       one connection, TCP_NODELAY; N round trips of 1 byte (after --warmup untimed ones);
 *          prints the latency percentiles of the round trips.
 * connrate K threads, each repeating: connect, write 1 byte, read 1 byte, close; prints the
 *          completed connections per second over the run.
 * denied   N times: socket(), connect() timed around the syscall, which must fail with EPERM
 *          or EACCES (a policy refusal); prints the percentiles.
 * hold     opens N connections (16 at a time in flight), one 1-byte round trip each (so the
 *          whole path exists), prints {"event":"holding",...}, then keeps them idle until
 *          SIGTERM or --seconds.
 *
 * Every result is one JSON line on stdout; every failure a JSON line with "error" naming the
 * target and the errno, and exit status 1. Every wait is bounded (IO_TIMEOUT_MS per step,
 * --seconds per run, --count per loop). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_MS 5000
#define MAX_CLIENTS 64
#define MAX_COUNT 1000000
#define ECHO_BUF 16384
#define HOLD_BATCH 16

struct opts {
	const char *target; /* HOST:PORT (IPv4) */
	struct sockaddr_in addr;
	const char *bind;
	unsigned port;
	unsigned long count;
	unsigned long warmup;
	unsigned clients;
	double seconds;
};

/* ---- small helpers ---- */
static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static const char *errname(int err)
{
	const char *n = strerrorname_np(err);
	return n ? n : "EUNKNOWN";
}

/* The one failure format: {"error":"<what>","target":"...","errno":"..."}; exit 1. */
static void fail(const char *what, const char *target, int err)
{
	printf("{\"error\":\"%s\",\"target\":\"%s\",\"errno\":\"%s\"}\n", what, target ? target : "",
	       err ? errname(err) : "");
	fflush(stdout);
	exit(1);
}

/* Idle connections and 1,000-connection runs need more than the usual 1024 descriptors. */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static bool parse_target(const char *text, struct sockaddr_in *out)
{
	char host[64];
	const char *colon = strrchr(text, ':');
	if (!colon || (size_t)(colon - text) >= sizeof(host))
		return false;
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = 0;
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (*end || port == 0 || port > 65535)
		return false;
	memset(out, 0, sizeof(*out));
	out->sin_family = AF_INET;
	out->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &out->sin_addr) == 1;
}

/* Wait for EVENTS on fd for at most IO_TIMEOUT_MS; false on timeout or error. */
static bool wait_fd(int fd, short events)
{
	struct pollfd p = {.fd = fd, .events = events};
	int r;
	do
		r = poll(&p, 1, IO_TIMEOUT_MS);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		errno = ETIMEDOUT;
	return r > 0;
}

/* Start a non-blocking connect: the socket, or -1 with errno set. */
static int dial_start(const struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0 && errno != EINPROGRESS) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* Wait (bounded by IO_TIMEOUT_MS) until a started connect completes; false with errno set. */
static bool dial_finish(int fd)
{
	int err = 0, one = 1;
	socklen_t el = sizeof(err);
	if (!wait_fd(fd, POLLOUT))
		return false;
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
	if (err) {
		errno = err;
		return false;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return true;
}

/* A connected TCP socket (bounded by IO_TIMEOUT_MS), or -1 with errno set. */
static int dial(const struct sockaddr_in *addr)
{
	int fd = dial_start(addr);
	if (fd >= 0 && !dial_finish(fd)) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

static bool send1(int fd)
{
	char b = 'x';
	return wait_fd(fd, POLLOUT) && write(fd, &b, 1) == 1;
}

/* Wait for one byte; false with errno set (ECONNRESET when the peer closed). */
static bool recv1(int fd)
{
	char b;
	for (;;) {
		if (!wait_fd(fd, POLLIN))
			return false;
		ssize_t n = read(fd, &b, 1);
		if (n == 1)
			return true;
		if (n == 0) {
			errno = ECONNRESET;
			return false;
		}
		if (errno != EAGAIN && errno != EINTR)
			return false;
	}
}

/* One byte out, one byte back. */
static bool ping1(int fd)
{
	return send1(fd) && recv1(fd);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Percentile (nearest rank) of sorted samples, in microseconds. */
static double pct_us(const uint64_t *sorted, size_t n, double p)
{
	size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)sorted[rank - 1] / 1000.0;
}

static void print_latency(const char *kind, const char *target, uint64_t *ns, size_t n)
{
	qsort(ns, n, sizeof(*ns), cmp_u64);
	printf("{\"kind\":\"%s\",\"target\":\"%s\",\"count\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f,"
	       "\"min_us\":%.1f,\"max_us\":%.1f}\n",
	       kind, target, n, pct_us(ns, n, 50), pct_us(ns, n, 99), pct_us(ns, n, 0),
	       pct_us(ns, n, 100));
}

/* ---- echo ---- */
static int echo_listen(const struct opts *o)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
	if (o->bind && inet_pton(AF_INET, o->bind, &a.sin_addr) != 1)
		fail("bad --bind address", o->bind, 0);
	if (fd < 0)
		fail("socket", NULL, errno);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4096) < 0)
		fail("bind/listen", o->bind ? o->bind : "0.0.0.0", errno);
	return fd;
}

static void echo_accept(int ep, int lfd)
{
	for (;;) {
		int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0)
			return; /* EAGAIN: drained; EMFILE etc.: the client sees its connect fail */
		int one = 1;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0)
			close(c);
	}
}

/* Echo what is readable. Messages here are small, so a write that does not complete at once
 * means a peer that does not read: drop it rather than buffer without bound. */
static void echo_serve(int c)
{
	char buf[ECHO_BUF];
	ssize_t n = read(c, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0 || write(c, buf, (size_t)n) != n)
		close(c); /* closing removes it from the epoll set */
}

static int cmd_echo(const struct opts *o)
{
	int lfd = echo_listen(o);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, evs[256];
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		fail("epoll", NULL, errno);
	printf("{\"event\":\"listening\",\"port\":%u}\n", o->port);
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		if (n < 0 && errno != EINTR)
			fail("epoll_wait", NULL, errno);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == lfd)
				echo_accept(ep, lfd);
			else
				echo_serve(evs[i].data.fd);
		}
	}
	return 0; /* not reached: the server runs until it is killed */
}

/* ---- rr ---- */
static int cmd_rr(const struct opts *o)
{
	int fd = dial(&o->addr);
	if (fd < 0)
		fail("connect", o->target, errno);
	uint64_t *ns = calloc(o->count, sizeof(*ns));
	uint64_t deadline = now_ns() + (uint64_t)(o->seconds * 1e9);
	size_t done = 0;
	if (!ns)
		fail("out of memory", o->target, ENOMEM);
	for (unsigned long i = 0; i < o->warmup; i++)
		if (!ping1(fd))
			fail("warm-up round trip", o->target, errno);
	while (done < o->count && now_ns() < deadline) {
		uint64_t t0 = now_ns();
		if (!ping1(fd))
			fail("round trip", o->target, errno);
		ns[done++] = now_ns() - t0;
	}
	print_latency("rr", o->target, ns, done);
	free(ns);
	close(fd);
	return 0;
}

/* ---- connrate ---- */
struct conn_worker {
	const struct opts *o;
	uint64_t deadline;
	unsigned long ok, errors;
	int first_err;
	pthread_t tid;
};

static void *conn_loop(void *arg)
{
	struct conn_worker *w = arg;
	while (now_ns() < w->deadline && w->ok + w->errors < MAX_COUNT) {
		int fd = dial(&w->o->addr);
		bool good = fd >= 0 && ping1(fd);
		if (good) {
			w->ok++;
		} else {
			if (!w->errors)
				w->first_err = errno;
			w->errors++;
		}
		if (fd >= 0)
			close(fd);
	}
	return NULL;
}

static int cmd_connrate(const struct opts *o)
{
	struct conn_worker w[MAX_CLIENTS];
	uint64_t t0 = now_ns();
	unsigned long ok = 0, errors = 0;
	int first_err = 0;
	for (unsigned i = 0; i < o->clients; i++) {
		w[i] = (struct conn_worker){.o = o, .deadline = t0 + (uint64_t)(o->seconds * 1e9)};
		if (pthread_create(&w[i].tid, NULL, conn_loop, &w[i]) != 0)
			fail("pthread_create", o->target, errno);
	}
	for (unsigned i = 0; i < o->clients; i++) {
		pthread_join(w[i].tid, NULL);
		ok += w[i].ok;
		errors += w[i].errors;
		if (!first_err)
			first_err = w[i].first_err;
	}
	double secs = (double)(now_ns() - t0) / 1e9;
	printf("{\"kind\":\"connrate\",\"target\":\"%s\",\"clients\":%u,\"connections\":%lu,"
	       "\"errors\":%lu,\"first_error\":\"%s\",\"seconds\":%.3f,\"per_second\":%.1f}\n",
	       o->target, o->clients, ok, errors, first_err ? errname(first_err) : "", secs,
	       (double)ok / secs);
	return errors ? 1 : 0;
}

/* ---- denied ---- */
static int cmd_denied(const struct opts *o)
{
	uint64_t *ns = calloc(o->count, sizeof(*ns));
	if (!ns)
		fail("out of memory", o->target, ENOMEM);
	for (unsigned long i = 0; i < o->count; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			fail("socket", o->target, errno);
		uint64_t t0 = now_ns();
		int r = connect(fd, (const struct sockaddr *)&o->addr, sizeof(o->addr));
		uint64_t t1 = now_ns();
		int err = errno;
		close(fd);
		if (r == 0)
			fail("connect succeeded: the target is not denied", o->target, 0);
		if (err != EPERM && err != EACCES)
			fail("connect failed, but not as a policy denial", o->target, err);
		ns[i] = t1 - t0;
	}
	print_latency("denied", o->target, ns, o->count);
	free(ns);
	return 0;
}

/* ---- hold ---- */
static volatile sig_atomic_t stop_holding;
static void on_term(int sig)
{
	(void)sig;
	stop_holding = 1;
}

/* Open count connections, HOLD_BATCH at a time in flight (handshakes through a proxy overlap, so
 * 1,000 connections do not take 1,000 sequential handshakes), each with one round trip. */
static void hold_open(const struct opts *o, int *fds)
{
	for (unsigned long i = 0; i < o->count; i += HOLD_BATCH) {
		unsigned long n = o->count - i < HOLD_BATCH ? o->count - i : HOLD_BATCH, j;
		for (j = 0; j < n; j++)
			if ((fds[i + j] = dial_start(&o->addr)) < 0)
				fail("open idle connection: connect", o->target, errno);
		for (j = 0; j < n; j++)
			if (!dial_finish(fds[i + j]) || !send1(fds[i + j]))
				fail("open idle connection: connect/send", o->target, errno);
		for (j = 0; j < n; j++)
			if (!recv1(fds[i + j]))
				fail("open idle connection: round trip", o->target, errno);
	}
}

static int cmd_hold(const struct opts *o)
{
	int *fds = calloc(o->count, sizeof(*fds));
	if (!fds)
		fail("out of memory", o->target, ENOMEM);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	hold_open(o, fds);
	printf("{\"event\":\"holding\",\"target\":\"%s\",\"count\":%lu}\n", o->target, o->count);
	fflush(stdout);
	uint64_t deadline = now_ns() + (uint64_t)(o->seconds * 1e9);
	while (!stop_holding && now_ns() < deadline)
		usleep(50000);
	for (unsigned long i = 0; i < o->count; i++)
		close(fds[i]);
	free(fds);
	return 0;
}

/* ---- arguments ---- */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: moat-bench echo --port P [--bind ADDR]\n"
		"       moat-bench rr HOST:PORT [--count N] [--warmup N] [--seconds S]\n"
		"       moat-bench connrate HOST:PORT [--clients K] [--seconds S]\n"
		"       moat-bench denied HOST:PORT [--count N]\n"
		"       moat-bench hold HOST:PORT [--count N] [--seconds S]\n"
		"echo: write back what arrives. rr: 1-byte round-trip latency over one connection\n"
		"(default 5000 after 200 warm-up, at most 30 s). connrate: K threads (default 1, at\n"
		"most %d) of connect / 1 byte each way / close for S seconds (default 3). denied:\n"
		"connect() latency where connect must fail with EPERM or EACCES (default 1000).\n"
		"hold: open N idle connections (default 1000), print {\"event\":\"holding\"}, keep\n"
		"them until SIGTERM or S seconds (default 60). HOST is an IPv4 address. Output: one\n"
		"JSON line; on failure {\"error\",\"target\",\"errno\"} and exit 1.\n",
		MAX_CLIENTS);
}

static double num_arg(const char *name, const char *v, double lo, double hi)
{
	char *end;
	double d = strtod(v, &end);
	if (*end || end == v || d < lo || d > hi) {
		fprintf(stderr, "moat-bench: %s %s: want a number in [%g, %g]\n", name, v, lo, hi);
		exit(2);
	}
	return d;
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{"port", required_argument, NULL, 'p'},    {"bind", required_argument, NULL, 'b'},
		{"count", required_argument, NULL, 'n'},   {"warmup", required_argument, NULL, 'w'},
		{"clients", required_argument, NULL, 'k'}, {"seconds", required_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'p': o->port = (unsigned)num_arg("--port", optarg, 1, 65535); break;
		case 'b': o->bind = optarg; break;
		case 'n': o->count = (unsigned long)num_arg("--count", optarg, 1, MAX_COUNT); break;
		case 'w': o->warmup = (unsigned long)num_arg("--warmup", optarg, 0, MAX_COUNT); break;
		case 'k': o->clients = (unsigned)num_arg("--clients", optarg, 1, MAX_CLIENTS); break;
		case 's': o->seconds = num_arg("--seconds", optarg, 0.1, 3600); break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind < argc)
		o->target = argv[optind++];
	if (optind < argc) {
		usage(stderr);
		exit(2);
	}
}

/* Defaults per command, before the options override them. */
static void set_defaults(const char *cmd, struct opts *o)
{
	*o = (struct opts){.warmup = 200, .clients = 1, .seconds = 3};
	if (!strcmp(cmd, "rr")) {
		o->count = 5000;
		o->seconds = 30;
	} else if (!strcmp(cmd, "denied")) {
		o->count = 1000;
	} else if (!strcmp(cmd, "hold")) {
		o->count = 1000;
		o->seconds = 60;
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	const char *cmd = argv[1];
	struct opts o;
	set_defaults(cmd, &o);
	parse_opts(argc - 1, argv + 1, &o);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	if (!strcmp(cmd, "echo")) {
		if (!o.port) {
			usage(stderr);
			return 2;
		}
		return cmd_echo(&o);
	}
	if (!o.target || !parse_target(o.target, &o.addr)) {
		fprintf(stderr, "moat-bench %s: want HOST:PORT (IPv4), got '%s'\n", cmd,
			o.target ? o.target : "");
		return 2;
	}
	if (!strcmp(cmd, "rr"))
		return cmd_rr(&o);
	if (!strcmp(cmd, "connrate"))
		return cmd_connrate(&o);
	if (!strcmp(cmd, "denied"))
		return cmd_denied(&o);
	if (!strcmp(cmd, "hold"))
		return cmd_hold(&o);
	fprintf(stderr, "moat-bench: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}
