#include "proxy/connector.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/netns.h"

struct connector {
	struct loop *loop;
	int fd;
	struct loop_io io;
	struct loop_timer timer;
	connector_cb cb;
	void *arg;
	int early_errno;     /* failed before connect() was under way: reported by the timer */
	char early_why[256];
	char what[160];      /* "connect 10.1.0.2:8080 from pod ns1/web" */
};

static void finish(struct connector *c, int fd, int err_no, const char *why)
{
	loop_io_del(c->loop, &c->io);
	loop_timer_cancel(c->loop, &c->timer);
	char msg[320];
	if (fd < 0) {
		snprintf(msg, sizeof(msg), "%s: %s", c->what, why ? why : errno_name(err_no));
		if (c->fd >= 0)
			close(c->fd);
	}
	c->fd = -1;
	connector_cb cb = c->cb;
	void *arg = c->arg;
	free(c);
	cb(arg, fd, err_no, fd < 0 ? msg : NULL);
}

static void on_io(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct connector *c = container_of(io, struct connector, io);
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	if (soerr) {
		finish(c, -1, soerr, NULL);
		return;
	}
	int fd = c->fd;
	c->fd = -1;
	finish(c, fd, 0, NULL);
}

static void on_timeout(struct loop_timer *t)
{
	struct connector *c = container_of(t, struct connector, timer);
	if (c->early_errno)
		finish(c, -1, c->early_errno, c->early_why[0] ? c->early_why : NULL);
	else
		finish(c, -1, ETIMEDOUT, "timed out");
}

/* Report a failure asynchronously (callers expect the callback after start returns), on an
 * embedded timer so that connector_cancel() can still withdraw it. */
static struct connector *fail_soon(struct connector *c, int err_no, const char *why)
{
	c->early_errno = err_no ? err_no : EINVAL;
	if (why)
		snprintf(c->early_why, sizeof(c->early_why), "%s", why);
	loop_timer_arm(c->loop, &c->timer, 0);
	return c;
}

static int open_socket(const struct connect_req *r, char *why, size_t wlen)
{
	int family = addr_is_v4(&r->dst) ? AF_INET : AF_INET6;
	struct err e;
	int fd = r->netns_fd >= 0
			 ? netns_socket(r->netns_fd, family, SOCK_STREAM | SOCK_NONBLOCK, 0, &e)
			 : socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, wlen, "%.200s", r->netns_fd >= 0 ? e.msg : strerror(errno));
		return -1;
	}
	sock_nodelay(fd);
	/* Without its mark a transparent connection's replies would not be routed back to the
	 * agent: no connect rather than one that leaks. */
	if (r->mark && sock_set_int(fd, SOL_SOCKET, SO_MARK, (int)r->mark, "SO_MARK", &e) < 0) {
		snprintf(why, wlen, "%.200s", e.msg);
		close(fd);
		return -1;
	}
	if (r->src) {
		if (r->transparent) {
			bool v4 = family == AF_INET;
			if (sock_set_int(fd, v4 ? IPPROTO_IP : IPPROTO_IPV6,
					 v4 ? IP_TRANSPARENT : IPV6_TRANSPARENT, 1,
					 v4 ? "IP_TRANSPARENT" : "IPV6_TRANSPARENT", &e) < 0) {
				snprintf(why, wlen, "%.200s", e.msg);
				close(fd);
				return -1;
			}
		}
		struct sockaddr_storage ss;
		socklen_t sl = addr_to_sockaddr(r->src, r->src_port, &ss);
		if (family == AF_INET6 && addr_is_v4(r->src)) {
			snprintf(why, wlen, "source and destination families differ");
			close(fd);
			return -1;
		}
		if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
			char a[ADDR_STRLEN];
			snprintf(why, wlen, "bind source %s: %s", addr_str(r->src, a, sizeof(a)),
				 strerror(errno));
			close(fd);
			return -1;
		}
	}
	return fd;
}

struct connector *connector_start(struct loop *l, const struct connect_req *r, connector_cb cb,
				  void *arg)
{
	struct connector *c = xcalloc(1, sizeof(*c));
	c->loop = l;
	c->cb = cb;
	c->arg = arg;
	loop_io_init(&c->io);
	loop_timer_init(&c->timer, on_timeout);
	char dst[ADDR_STRLEN + 8];
	snprintf(c->what, sizeof(c->what), "connect %s from %s",
		 addr_port_str(&r->dst, r->dst_port, dst, sizeof(dst)), r->who ? r->who : "agent");
	char why[256] = "";
	c->fd = open_socket(r, why, sizeof(why));
	if (c->fd < 0)
		return fail_soon(c, EINVAL, why);
	struct sockaddr_storage ss;
	socklen_t sl = addr_to_sockaddr(&r->dst, r->dst_port, &ss);
	if (connect(c->fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS)
		return fail_soon(c, errno, NULL);
	if (loop_io_add(l, &c->io, c->fd, EPOLLOUT, on_io) < 0)
		return fail_soon(c, errno, NULL);
	loop_timer_arm(l, &c->timer, (uint64_t)(r->timeout_ms > 0 ? r->timeout_ms : CONNECT_TIMEOUT_MS));
	return c;
}

void connector_cancel(struct connector *c)
{
	if (!c)
		return;
	loop_io_del(c->loop, &c->io);
	loop_timer_cancel(c->loop, &c->timer);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}
