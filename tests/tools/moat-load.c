/* moat-load: many connections from one process, with epoll, for the load e2e test.
 *
 *   moat-load serve --port P
 *       echo server: every connection gets back what it sends; runs until killed
 *   moat-load hold HOST:PORT --conns N [--max-s S]
 *       open N connections (at most 256 connecting at once), prove each with an 8-byte echo,
 *       print {"event":"held",...}, keep them until SIGTERM/SIGINT (or S s), close them all,
 *       print {"event":"released",...}
 *   moat-load cycle HOST:PORT --count M [--parallel K] [--max-s S]
 *       M open / echo / close cycles, K at a time; print {"event":"cycled",...}
 *
 * Every connection is proven with a round trip, so a "held" or "cycled" connection carried
 * bytes both ways. Everything is bounded by --max-s (default 180). Exit 0 when every
 * connection worked, 1 otherwise. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

#define TOKEN "moatload"
#define TOKEN_LEN 8
#define MAX_INFLIGHT 256
#define EVENTS 512

enum state { FREE = 0, CONNECTING, WAITING, HELD };

struct lconn {
	int fd;
	enum state state;
	int got;
};

struct load {
	int ep;
	struct sockaddr_in dst;
	struct lconn *c;
	int n;               /* slots */
	uint64_t started, ok, failed;
	uint64_t target;     /* connections to make in all */
	int inflight;
	bool cycle;          /* close and reuse the slot after the echo */
	char first_error[64];
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* As many descriptors as this process may have: the hard limit (raised by root or not). */
static void raise_nofile(void)
{
	struct rlimit r;
	if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_NOFILE, &r);
	}
}

static int parse_target(const char *text, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(text, ':');
	if (!colon || (size_t)(colon - text) >= sizeof(host))
		return -1;
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = 0;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static const char *opt(int argc, char **argv, const char *name, const char *def)
{
	for (int i = 2; i + 1 < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return argv[i + 1];
	return def;
}

/* ---- serve ---- */

static int cmd_serve(int argc, char **argv)
{
	int port = atoi(opt(argc, argv, "--port", "0"));
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0) {
		fprintf(stderr, "moat-load serve: port %d: %s\n", port, strerror(errno));
		return 2;
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	printf("{\"event\":\"listening\",\"port\":%d}\n", port);
	fflush(stdout);
	static struct epoll_event evs[EVENTS];
	static char buf[4096];
	while (!stop) {
		int n = epoll_wait(ep, evs, EVENTS, 1000);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				for (int k = 0; k < 64; k++) {
					int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
					if (c < 0)
						break;
					struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
					if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce) < 0)
						close(c);
				}
				continue;
			}
			ssize_t r = read(fd, buf, sizeof(buf));
			if (r > 0) {
				(void)!send(fd, buf, (size_t)r, MSG_NOSIGNAL | MSG_DONTWAIT);
			} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				close(fd); /* also leaves the epoll set */
			}
		}
	}
	return 0;
}

/* ---- clients ---- */

static void record_error(struct load *l, const char *what, int err)
{
	if (!l->first_error[0])
		snprintf(l->first_error, sizeof(l->first_error), "%s: %s", what, strerror(err));
}

static void slot_close(struct load *l, struct lconn *c)
{
	if (c->state == CONNECTING || c->state == WAITING)
		l->inflight--;
	close(c->fd);
	c->fd = -1;
	c->state = FREE;
}

static void slot_start(struct load *l, int i)
{
	struct lconn *c = &l->c[i];
	l->started++;
	c->got = 0;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		record_error(l, "socket", errno);
		l->failed++;
		return;
	}
	int rc = connect(c->fd, (struct sockaddr *)&l->dst, sizeof(l->dst));
	if (rc < 0 && errno != EINPROGRESS) {
		record_error(l, "connect", errno);
		l->failed++;
		close(c->fd);
		c->fd = -1;
		return;
	}
	c->state = CONNECTING;
	l->inflight++;
	struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
	epoll_ctl(l->ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void slot_fail(struct load *l, int i, const char *what, int err)
{
	record_error(l, what, err);
	l->failed++;
	slot_close(l, &l->c[i]);
}

static void slot_event(struct load *l, int i, uint32_t events)
{
	struct lconn *c = &l->c[i];
	if (c->state == CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err || (events & EPOLLERR)) {
			slot_fail(l, i, "connect", err ? err : ECONNREFUSED);
			return;
		}
		if (send(c->fd, TOKEN, TOKEN_LEN, MSG_NOSIGNAL) != TOKEN_LEN) {
			slot_fail(l, i, "send", errno);
			return;
		}
		c->state = WAITING;
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev);
		return;
	}
	char buf[64];
	ssize_t n = read(c->fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		slot_fail(l, i, c->state == HELD ? "held connection" : "echo", n == 0 ? EPIPE : errno);
		return;
	}
	if (c->state == HELD)
		return;
	c->got += (int)n;
	if (c->got < TOKEN_LEN)
		return;
	l->ok++;
	l->inflight--;
	c->state = HELD;
	if (l->cycle) {
		c->state = FREE;
		close(c->fd);
		c->fd = -1;
	}
}

/* Start connections into free slots while the target and the in-flight cap allow. */
static void fill(struct load *l)
{
	for (int i = 0; i < l->n && l->started < l->target && l->inflight < MAX_INFLIGHT; i++)
		if (l->c[i].state == FREE && l->c[i].fd < 0)
			slot_start(l, i);
}

static void run(struct load *l, uint64_t deadline, bool (*done)(const struct load *))
{
	static struct epoll_event evs[EVENTS];
	while (!stop && mono_ms() < deadline && !done(l)) {
		fill(l);
		int n = epoll_wait(l->ep, evs, EVENTS, 100);
		for (int k = 0; k < n; k++)
			slot_event(l, (int)evs[k].data.u32, evs[k].events);
	}
}

static bool all_settled(const struct load *l)
{
	return l->ok + l->failed >= l->target;
}

static bool never(const struct load *l)
{
	(void)l;
	return false;
}

static int load_init(struct load *l, int argc, char **argv, int slots, uint64_t target)
{
	if (argc < 3 || parse_target(argv[2], &l->dst) < 0) {
		fprintf(stderr, "moat-load: expected HOST:PORT (IPv4), got \"%s\"\n",
			argc < 3 ? "" : argv[2]);
		return -1;
	}
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	l->n = slots;
	l->target = target;
	l->c = calloc((size_t)slots, sizeof(*l->c));
	for (int i = 0; i < slots; i++)
		l->c[i].fd = -1;
	return 0;
}

static int cmd_hold(int argc, char **argv)
{
	struct load l = {0};
	int n = atoi(opt(argc, argv, "--conns", "1"));
	uint64_t deadline = mono_ms() + (uint64_t)atoi(opt(argc, argv, "--max-s", "180")) * 1000;
	if (n < 1 || load_init(&l, argc, argv, n, (uint64_t)n) < 0)
		return 2;
	uint64_t t0 = mono_ms();
	run(&l, deadline, all_settled);
	printf("{\"event\":\"held\",\"conns\":%d,\"ok\":%llu,\"failed\":%llu,\"ms\":%llu,"
	       "\"first_error\":\"%s\"}\n",
	       n, (unsigned long long)l.ok, (unsigned long long)l.failed,
	       (unsigned long long)(mono_ms() - t0), l.first_error);
	fflush(stdout);
	uint64_t held_ok = l.ok;
	run(&l, deadline, never); /* until SIGTERM: a held connection that drops counts */
	int open = 0;
	for (int i = 0; i < n; i++)
		if (l.c[i].fd >= 0) {
			open++;
			slot_close(&l, &l.c[i]);
		}
	printf("{\"event\":\"released\",\"closed\":%d,\"dropped_while_held\":%llu}\n", open,
	       (unsigned long long)(held_ok - (uint64_t)open));
	return l.failed == 0 && (uint64_t)open == held_ok ? 0 : 1;
}

static int cmd_cycle(int argc, char **argv)
{
	struct load l = {.cycle = true};
	uint64_t count = strtoull(opt(argc, argv, "--count", "1"), NULL, 10);
	int k = atoi(opt(argc, argv, "--parallel", "64"));
	uint64_t deadline = mono_ms() + (uint64_t)atoi(opt(argc, argv, "--max-s", "180")) * 1000;
	if (k < 1 || count < 1 || load_init(&l, argc, argv, k, count) < 0)
		return 2;
	uint64_t t0 = mono_ms();
	run(&l, deadline, all_settled);
	for (int i = 0; i < k; i++)
		if (l.c[i].fd >= 0)
			slot_close(&l, &l.c[i]);
	uint64_t ms = mono_ms() - t0;
	printf("{\"event\":\"cycled\",\"count\":%llu,\"ok\":%llu,\"failed\":%llu,\"ms\":%llu,"
	       "\"per_s\":%llu,\"first_error\":\"%s\"}\n",
	       (unsigned long long)count, (unsigned long long)l.ok, (unsigned long long)l.failed,
	       (unsigned long long)ms, (unsigned long long)(ms ? l.ok * 1000 / ms : 0),
	       l.first_error);
	return l.ok == count ? 0 : 1;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	raise_nofile();
	if (argc >= 2 && strcmp(argv[1], "serve") == 0)
		return cmd_serve(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "hold") == 0)
		return cmd_hold(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "cycle") == 0)
		return cmd_cycle(argc, argv);
	fprintf(stderr, "usage: moat-load serve --port P\n"
			"       moat-load hold HOST:PORT --conns N [--max-s S]\n"
			"       moat-load cycle HOST:PORT --count M [--parallel K] [--max-s S]\n");
	return 2;
}
