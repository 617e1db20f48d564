/* app socket -> pipe -> kTLS socket for HBONE DATA payloads (see splice.h). */
#include "hbone/splice.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/util.h"

#define H2_FRAME_HD 9

struct h2splice {
	int pipe[2];
	/* the frame in flight */
	bool active;
	int src;
	bool src_owned, src_rst; /* handed over by its stream: close after the frame */
	uint8_t hd_sent;         /* header bytes on the wire */
	size_t left;             /* payload still in src */
	size_t piped;            /* payload in the pipe, not yet in the tunnel */
	char why[200];
};

struct h2splice *h2splice_new(void)
{
	struct h2splice *sp = xcalloc(1, sizeof(*sp));
	if (pipe2(sp->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		free(sp);
		return NULL;
	}
	sp->src = -1;
	return sp;
}

static void frame_done(struct h2splice *sp)
{
	if (sp->src_owned) {
		if (sp->src_rst)
			close_rst(sp->src);
		else
			close(sp->src);
	}
	sp->active = sp->src_owned = sp->src_rst = false;
	sp->src = -1;
	sp->hd_sent = 0;
	sp->left = sp->piped = 0;
}

void h2splice_free(struct h2splice *sp)
{
	if (!sp)
		return;
	if (sp->active)
		frame_done(sp); /* the connection is going: so is the handed-over socket */
	close(sp->pipe[0]);
	close(sp->pipe[1]);
	free(sp);
}

bool h2splice_busy(const struct h2splice *sp)
{
	return sp && sp->active;
}

const char *h2splice_why(const struct h2splice *sp)
{
	return sp->why;
}

ssize_t h2splice_available(int fd, size_t max)
{
	for (;;) {
		int n = 0;
		if (ioctl(fd, FIONREAD, &n) < 0)
			return -errno;
		if (n > 0)
			return (size_t)n < max ? n : (ssize_t)max;
		/* Nothing queued: end of stream, or not yet? */
		char b;
		ssize_t r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
		if (r == 0)
			return 0;
		if (r > 0)
			continue; /* arrived in between */
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

static int fail(struct h2splice *sp, const char *what, int err)
{
	snprintf(sp->why, sizeof(sp->why), "splice payload path: %s: %s", what, errno_name(err));
	return -1;
}

/* The pipe's bytes into the tunnel: 0 when empty, 1 when the tunnel is full, -1 on error. */
static int drain_pipe(struct h2splice *sp, int tunnel, uint64_t *count)
{
	while (sp->piped) {
		/* MORE while the frame goes on: its bytes may share records. */
		unsigned flags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE | (sp->left ? SPLICE_F_MORE : 0);
		ssize_t n = splice(sp->pipe[0], NULL, tunnel, NULL, sp->piped, flags);
		if (n > 0) {
			sp->piped -= (size_t)n;
			if (count)
				*count += (uint64_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 1;
		return fail(sp, "pipe -> tunnel socket", n < 0 ? errno : EPIPE);
	}
	return 0;
}

int h2splice_send(struct h2splice *sp, int tunnel, const uint8_t hd[9], size_t length, int src,
		  uint64_t *count)
{
	if (!sp->active) {
		sp->active = true;
		sp->src = src;
		sp->left = length;
	}
	if (sp->src_owned)
		count = NULL; /* its stream is gone: nobody to count for */
	while (sp->hd_sent < H2_FRAME_HD) {
		ssize_t n = send(tunnel, hd + sp->hd_sent, H2_FRAME_HD - sp->hd_sent,
				 MSG_DONTWAIT | MSG_NOSIGNAL | (length ? MSG_MORE : 0));
		if (n > 0) {
			sp->hd_sent += (uint8_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 1;
		return fail(sp, "DATA frame header -> tunnel socket", n < 0 ? errno : EPIPE);
	}
	for (;;) {
		int r = drain_pipe(sp, tunnel, count);
		if (r != 0)
			return r;
		if (!sp->left)
			break;
		ssize_t n = splice(sp->src, NULL, sp->pipe[1], NULL, sp->left,
				   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
		if (n > 0) {
			sp->left -= (size_t)n;
			sp->piped += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		/* The frame promised bytes the app socket held when it was made; only a reset
		 * (which discards them) takes them away. The frame cannot be finished. */
		return fail(sp, "app socket -> pipe (fewer bytes than the DATA frame announced)",
			    n < 0 ? errno : ECONNRESET);
	}
	frame_done(sp);
	return 0;
}

bool h2splice_release(struct h2splice *sp, int src, bool rst)
{
	if (!sp || !sp->active || sp->src != src || sp->src_owned)
		return false;
	sp->src_owned = true;
	sp->src_rst = rst;
	return true;
}
