#include "proxy/relay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/util.h"

#define RELAY_CHUNK (64u << 10)

/* One direction: bytes read from `from` and written to `to`. */
struct flow {
	uint8_t *buf; /* only while `to` is not keeping up */
	size_t len, off;
	bool eof;     /* `from` said EOF */
	bool shut;    /* shutdown(to, SHUT_WR) done */
	uint64_t bytes;
};

struct relay {
	struct loop *loop;
	int fd[2];
	struct loop_io io[2];
	struct flow flow[2]; /* flow[0]: a -> b, flow[1]: b -> a */
	relay_done_cb done;
	void *user;
	char *error;
	bool finished;
};

static void on_io_a(struct loop_io *io, uint32_t events);
static void on_io_b(struct loop_io *io, uint32_t events);

static void relay_finish(struct relay *r)
{
	if (r->finished)
		return;
	r->finished = true;
	for (int i = 0; i < 2; i++) {
		loop_io_del(r->loop, &r->io[i]);
		if (r->error)
			close_rst(r->fd[i]);
		else
			close(r->fd[i]);
		free(r->flow[i].buf);
	}
	r->done(r->user, r->flow[0].bytes, r->flow[1].bytes, r->error);
	free(r->error);
	free(r);
}

static void relay_fail(struct relay *r, const char *side, int err)
{
	if (!r->error)
		r->error = xasprintf("%s: %s", side, errno_name(err));
}

static void update_interest(struct relay *r)
{
	for (int i = 0; i < 2; i++) {
		uint32_t ev = 0;
		/* read i when its flow has no backlog and is not at EOF */
		if (!r->flow[i].eof && r->flow[i].len == r->flow[i].off)
			ev |= EPOLLIN;
		/* write i when the opposite flow has a backlog for it */
		if (r->flow[!i].len > r->flow[!i].off)
			ev |= EPOLLOUT;
		/* Nothing to wait for: leave epoll, or a hung-up socket would wake us forever. */
		if (!ev)
			loop_io_del(r->loop, &r->io[i]);
		else if (r->io[i].fd < 0)
			loop_io_add(r->loop, &r->io[i], r->fd[i], ev, i ? on_io_b : on_io_a);
		else
			loop_io_mod(r->loop, &r->io[i], ev);
	}
}

/* Move what is buffered for flow f to its destination. */
static bool flow_drain(struct relay *r, int f)
{
	struct flow *fl = &r->flow[f];
	int to = r->fd[!f];
	while (fl->off < fl->len) {
		ssize_t n = send(to, fl->buf + fl->off, fl->len - fl->off, MSG_NOSIGNAL);
		if (n > 0) {
			fl->off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		relay_fail(r, f ? "write to first socket" : "write to second socket", errno);
		return false;
	}
	free(fl->buf);
	fl->buf = NULL;
	fl->len = fl->off = 0;
	if (fl->eof && !fl->shut) {
		shutdown(to, SHUT_WR);
		fl->shut = true;
	}
	return true;
}

/* Read from flow f's source and write straight on; keep only what does not fit. */
static bool flow_pump(struct relay *r, int f)
{
	struct flow *fl = &r->flow[f];
	uint8_t chunk[RELAY_CHUNK];
	for (int round = 0; round < 16 && !fl->eof && fl->len == fl->off; round++) {
		ssize_t n = recv(r->fd[f], chunk, sizeof(chunk), 0);
		if (n == 0) {
			fl->eof = true;
			break;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			relay_fail(r, f ? "read from second socket" : "read from first socket", errno);
			return false;
		}
		fl->bytes += (uint64_t)n;
		ssize_t w = send(r->fd[!f], chunk, (size_t)n, MSG_NOSIGNAL);
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			relay_fail(r, f ? "write to first socket" : "write to second socket", errno);
			return false;
		}
		if (w < 0)
			w = 0;
		if (w < n) {
			fl->buf = xmalloc((size_t)(n - w));
			memcpy(fl->buf, chunk + w, (size_t)(n - w));
			fl->len = (size_t)(n - w);
			fl->off = 0;
		}
	}
	if (fl->eof && fl->len == fl->off && !fl->shut) {
		shutdown(r->fd[!f], SHUT_WR);
		fl->shut = true;
	}
	return true;
}

static void relay_on_io(struct relay *r, int side, uint32_t events)
{
	bool ok = true;
	if (events & EPOLLOUT)
		ok = flow_drain(r, !side);
	if (ok && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		ok = flow_pump(r, side);
	if (ok && (events & EPOLLERR) && !(events & EPOLLIN)) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		getsockopt(r->fd[side], SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			relay_fail(r, side ? "second socket" : "first socket", soerr);
			ok = false;
		}
	}
	if (!ok || (r->flow[0].shut && r->flow[1].shut)) {
		relay_finish(r);
		return;
	}
	update_interest(r);
}

static void on_io_a(struct loop_io *io, uint32_t events)
{
	relay_on_io(container_of(io, struct relay, io[0]), 0, events);
}

static void on_io_b(struct loop_io *io, uint32_t events)
{
	relay_on_io(container_of(io, struct relay, io[1]), 1, events);
}

struct relay *relay_new(struct loop *l, int fd_a, int fd_b, relay_done_cb done, void *user)
{
	struct relay *r = xcalloc(1, sizeof(*r));
	r->loop = l;
	r->fd[0] = fd_a;
	r->fd[1] = fd_b;
	r->done = done;
	r->user = user;
	set_nonblock(fd_a);
	set_nonblock(fd_b);
	loop_io_init(&r->io[0]);
	loop_io_init(&r->io[1]);
	if (loop_io_add(l, &r->io[0], fd_a, EPOLLIN, on_io_a) < 0 ||
	    loop_io_add(l, &r->io[1], fd_b, EPOLLIN, on_io_b) < 0) {
		/* The caller keeps both sockets. */
		loop_io_del(l, &r->io[0]);
		free(r);
		return NULL;
	}
	return r;
}

void relay_reset(struct relay *r, const char *why)
{
	if (!r->error)
		r->error = xstrdup(why);
	relay_finish(r);
}

void relay_counts(const struct relay *r, uint64_t *a_to_b, uint64_t *b_to_a)
{
	*a_to_b = r->flow[0].bytes;
	*b_to_a = r->flow[1].bytes;
}
