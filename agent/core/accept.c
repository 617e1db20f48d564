#include "core/accept.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"

static void on_accept(struct loop_io *io, uint32_t events);

/* Watched exactly when neither paused nor held. */
static void acceptor_update(struct acceptor *ac)
{
	bool want = !ac->paused && !ac->held;
	if (want && ac->io.fd < 0) {
		if (loop_io_add(ac->loop, &ac->io, ac->fd, EPOLLIN, on_accept) < 0)
			log_error("accept on %s: cannot watch the socket again: %s", ac->what,
				  strerror(errno));
	} else if (!want && ac->io.fd >= 0) {
		loop_io_del(ac->loop, &ac->io);
	}
}

static void backoff_done(struct loop_timer *t)
{
	struct acceptor *ac = container_of(t, struct acceptor, backoff);
	ac->paused = false;
	acceptor_update(ac);
}

/* false: stop this wake-up's batch. */
static bool accept_failed(struct acceptor *ac, int err)
{
	if (err == EINTR || err == ECONNABORTED || err == EPROTO)
		return true;
	if (err == EAGAIN || err == EWOULDBLOCK)
		return false;
	if (!accept_err_is_pressure(err)) {
		log_warn("accept on %s: %s", ac->what, strerror(err));
		return false;
	}
	bool fds = err == EMFILE || err == ENFILE;
	log_warn("accept on %s: %s (out of %s: accepting again in %d ms)", ac->what, strerror(err),
		 fds ? "file descriptors" : "kernel memory", ACCEPT_PAUSE_MS);
	if (!ac->paused) {
		ac->paused = true;
		if (ac->pauses)
			(*ac->pauses)++;
		acceptor_update(ac);
		loop_timer_arm(ac->loop, &ac->backoff, ACCEPT_PAUSE_MS);
	}
	return false;
}

static void on_accept(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct acceptor *ac = container_of(io, struct acceptor, io);
	/* The callback may hold or stop the acceptor: stop the batch then. */
	for (int i = 0; i < ac->batch && ac->io.fd >= 0; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(ac->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (accept_failed(ac, errno))
				continue;
			return;
		}
		ac->cb(ac, fd, (struct sockaddr *)&ss, sl);
	}
}

int acceptor_start(struct acceptor *ac, struct loop *l, int fd, int batch, acceptor_cb cb,
		   const char *what)
{
	uint64_t *pauses = ac->pauses; /* may be set before start */
	memset(ac, 0, sizeof(*ac));
	ac->pauses = pauses;
	ac->loop = l;
	ac->fd = fd;
	ac->batch = batch > 0 ? batch : 1;
	ac->cb = cb;
	snprintf(ac->what, sizeof(ac->what), "%s", what);
	loop_io_init(&ac->io);
	loop_timer_init(&ac->backoff, backoff_done);
	return loop_io_add(l, &ac->io, fd, EPOLLIN, on_accept);
}

void acceptor_stop(struct acceptor *ac)
{
	if (!ac->loop)
		return;
	loop_timer_cancel(ac->loop, &ac->backoff);
	if (ac->io.fd >= 0)
		loop_io_del(ac->loop, &ac->io);
	ac->paused = false;
}

void acceptor_hold(struct acceptor *ac, bool hold)
{
	ac->held = hold;
	acceptor_update(ac);
}
