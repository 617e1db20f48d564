/* moat-ctl-abuse: hostile clients of moatd's control socket, for the e2e tests.
 *
 *   moat-ctl-abuse idle SOCKET --conns N --hold S
 *       keep N connections that never send a byte for S seconds (reopening dropped ones)
 *   moat-ctl-abuse trickle SOCKET --every-ms MS --for S
 *       send one byte every MS ms, reconnecting whenever moatd drops the connection
 *   moat-ctl-abuse fds SOCKET --requests R --fds K
 *       R "status" requests, each carrying K descriptors (of /dev/null) in one message
 *
 * Each prints one JSON line with what happened. Every wait is bounded. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define MAX_FDS 253 /* SCM_MAX_FD */

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* Connect, retrying for up to 5 s while the listen backlog is full. */
static int ctl_connect(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	uint64_t deadline = mono_ms() + 5000;
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
			return fd;
		int err = errno;
		close(fd);
		if (err != EAGAIN || mono_ms() > deadline) {
			errno = err;
			return -1;
		}
		sleep_ms(10);
	}
}

/* The whole answer (until moatd closes, at most 5 s), newlines as " | ", quotes dropped: safe
 * to print inside a JSON string. */
static void read_answer(int fd, char *out, size_t cap)
{
	size_t len = 0;
	out[0] = 0;
	uint64_t deadline = mono_ms() + 5000;
	char buf[512];
	while (mono_ms() < deadline) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 100) <= 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n && len + 4 < cap; i++) {
			if (buf[i] == '\n') {
				memcpy(out + len, " | ", 3);
				len += 3;
			} else if (buf[i] >= 0x20 && buf[i] != '"' && buf[i] != '\\') {
				out[len++] = buf[i];
			}
		}
		out[len] = 0;
	}
}

/* Hold conns connections that never send; one moatd drops is opened again 500 ms later, so
 * the pressure lasts the whole hold time. */
static int cmd_idle(const char *path, int conns, int hold_s)
{
	static struct pollfd p[MAX_CONNS];
	static uint64_t reopen_at[MAX_CONNS];
	if (conns > MAX_CONNS)
		conns = MAX_CONNS;
	int opened = 0, failed = 0, dropped = 0;
	for (int i = 0; i < conns; i++) {
		p[i].fd = ctl_connect(path);
		p[i].events = POLLIN;
		if (p[i].fd < 0)
			failed++;
		else
			opened++;
	}
	printf("{\"mode\":\"idle\",\"opened\":%d,\"failed\":%d}\n", opened, failed);
	fflush(stdout);
	uint64_t end = mono_ms() + (uint64_t)hold_s * 1000;
	while (mono_ms() < end) {
		poll(p, (nfds_t)conns, 100);
		uint64_t now = mono_ms();
		for (int i = 0; i < conns; i++) {
			if (p[i].fd >= 0 && (p[i].revents & (POLLIN | POLLHUP | POLLERR))) {
				close(p[i].fd); /* moatd answered (dropped us) or hung up */
				p[i].fd = -1;
				reopen_at[i] = now + 500;
				dropped++;
			} else if (p[i].fd < 0 && now >= reopen_at[i]) {
				p[i].fd = ctl_connect(path);
				reopen_at[i] = now + 500;
			}
			p[i].revents = 0;
		}
	}
	for (int i = 0; i < conns; i++)
		if (p[i].fd >= 0)
			close(p[i].fd);
	printf("{\"mode\":\"idle\",\"dropped_by_moatd\":%d}\n", dropped);
	return 0;
}

static int cmd_trickle(const char *path, int every_ms, int for_s)
{
	uint64_t end = mono_ms() + (uint64_t)for_s * 1000;
	int connections = 0, dropped = 0, sent = 0;
	int fd = -1;
	while (mono_ms() < end) {
		if (fd < 0) {
			fd = ctl_connect(path);
			if (fd < 0) {
				sleep_ms(100);
				continue;
			}
			connections++;
		}
		/* A dropped connection reads EOF (or an error) before our next byte goes. */
		char b[256];
		ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN) ||
		    send(fd, "s", 1, MSG_NOSIGNAL) != 1) {
			dropped++;
			close(fd);
			fd = -1;
			continue;
		}
		sent++;
		sleep_ms((unsigned)every_ms);
	}
	if (fd >= 0)
		close(fd);
	printf("{\"mode\":\"trickle\",\"connections\":%d,\"dropped\":%d,\"bytes\":%d}\n",
	       connections, dropped, sent);
	return 0;
}

static int send_with_fds(int fd, const char *line, int nfds)
{
	int fds[MAX_FDS];
	union {
		char b[CMSG_SPACE(MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof(u));
	for (int i = 0; i < nfds; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	struct iovec iov = {.iov_base = (void *)line, .iov_len = strlen(line)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			     .msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int))};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
	memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return n < 0 ? -1 : 0;
}

static int cmd_fds(const char *path, int requests, int nfds)
{
	int answered = 0, ok = 0, refused = 0, unanswered = 0;
	char last[256] = "";
	for (int i = 0; i < requests; i++) {
		int fd = ctl_connect(path);
		if (fd < 0 || send_with_fds(fd, "status\n", nfds) < 0) {
			unanswered++;
			if (fd >= 0)
				close(fd);
			continue;
		}
		shutdown(fd, SHUT_WR);
		char st[256];
		read_answer(fd, st, sizeof(st));
		close(fd);
		if (strncmp(st, "status ", 7) != 0) {
			unanswered++;
			continue;
		}
		answered++;
		if (strncmp(st, "status 0 ", 9) == 0)
			ok++;
		else
			refused++;
		snprintf(last, sizeof(last), "%s", st);
	}
	printf("{\"mode\":\"fds\",\"requests\":%d,\"fds_each\":%d,\"answered\":%d,\"status0\":%d,"
	       "\"refused\":%d,\"unanswered\":%d,\"last\":\"%s\"}\n",
	       requests, nfds, answered, ok, refused, unanswered, last);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: moat-ctl-abuse idle SOCKET --conns N --hold S\n"
			"       moat-ctl-abuse trickle SOCKET --every-ms MS --for S\n"
			"       moat-ctl-abuse fds SOCKET --requests R --fds K (K <= %d)\n",
		MAX_FDS);
	return 2;
}

static int opt_int(int argc, char **argv, const char *name, int def)
{
	for (int i = 3; i + 1 < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return atoi(argv[i + 1]);
	return def;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return usage();
	const char *mode = argv[1], *path = argv[2];
	if (strcmp(mode, "idle") == 0)
		return cmd_idle(path, opt_int(argc, argv, "--conns", 1), opt_int(argc, argv, "--hold", 10));
	if (strcmp(mode, "trickle") == 0)
		return cmd_trickle(path, opt_int(argc, argv, "--every-ms", 1500),
				   opt_int(argc, argv, "--for", 10));
	if (strcmp(mode, "fds") == 0) {
		int k = opt_int(argc, argv, "--fds", 1);
		if (k < 1 || k > MAX_FDS)
			return usage();
		return cmd_fds(path, opt_int(argc, argv, "--requests", 1), k);
	}
	return usage();
}
