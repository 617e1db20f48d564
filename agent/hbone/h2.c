#include "hbone/h2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "core/log.h"
#include "hbone/splice.h"
#include "hbone/transport.h"
#include "identity/identity.h"

/* Largest DATA payload we ask nghttp2 to build at once: big frames mean fewer SSL_write
 * calls and full 16 KiB TLS records; bounded so one stream cannot hog the connection. */
#define H2_DATA_CHUNK (256u << 10)
/* SSL_read rounds per readiness event before yielding to other connections. */
#define H2_READ_ROUNDS 64

enum conn_state { C_HANDSHAKE, C_OPEN, C_CLOSED };

struct h2stream {
	struct h2conn *conn;
	int32_t id;
	bool ng_open;   /* nghttp2 still knows the stream */
	bool relaying;  /* data provider may read the local socket */
	bool deferred;  /* data provider waits for the socket to become readable */
	bool local_eof; /* the socket said EOF: END_STREAM sent */
	bool remote_eof; /* END_STREAM received: shut the socket's write side once drained */
	bool shut_wr;
	bool failed;
	bool responded; /* client: the final response arrived */
	bool watch_hup; /* client: watch the app's socket for FIN/HUP while waiting */
	bool rst_by_us; /* we (or nghttp2 for us) sent RST_STREAM */
	int fd;
	uint64_t opened_ms, last_io_ms;
	struct loop_timer wait_timer; /* client: response deadline and suspicion */
	struct loop_timer idle_timer; /* established: no bytes either way */
	struct loop_io io;
	uint8_t *pend; /* peer data the socket has not taken yet */
	size_t pend_len, pend_off;
	int status;
	uint64_t to_peer, from_peer;
	uint64_t copied_to_peer, copied_from_peer; /* of those, through our own buffers */
	char *error;
	const struct h2stream_ops *ops;
	void *user;
	/* server: request headers until on_request */
	char *method, *authority, *forwarded, *baggage, *traceparent;
	struct h2stream *prev, *next;
};

struct h2conn {
	struct loop *loop;
	enum h2_role role;
	enum conn_state state;
	int fd;
	struct loop_io io;
	SSL *ssl;             /* the handshake's; handed to tp once it is done */
	struct transport *tp; /* after the handshake: OpenSSL or kernel TLS */
	struct h2splice *splice; /* kTLS: app -> tunnel payload by splice() (NULL: copied) */
	const char *engine;   /* tp's engine name, kept after tp is freed */
	struct transport_stats tp_stats; /* ... and its counts (on_closed reads them) */
	bool want_ktls;       /* try the kernel engine after the handshake */
	char ktls_reason[32]; /* why the kernel engine was not taken (metric label) */
	char ktls_why[256];   /* ... in words, for the log */
	nghttp2_session *ng;
	const uint8_t *out; /* unsent tail of nghttp2's last output chunk */
	size_t out_len;
	bool tp_wants_write;
	bool goaway;
	int busy;      /* nesting depth of our handlers: teardown waits for 0 */
	bool dead;     /* torn down once busy drops to 0 */
	char *dead_why;
	bool ping_outstanding;
	uint64_t ping_sent_ms;
	struct loop_timer ping_timer, handshake_timer, resume_timer;
	struct h2stream *streams;
	int n_streams;
	int n_waiting;  /* client streams without their final response */
	bool suspect;   /* a stream waited past limits.suspect_ms; cleared by a PING answer */
	struct h2_limits limits;
	char ng_error[200];    /* nghttp2's last word on a peer's protocol error */
	char *goaway_why;      /* why a GOAWAY with an error code was sent or received */
	const struct h2conn_ops *ops;
	void *owner;
	char peer_id[SPIFFE_ID_MAX];
	char peer_serial[80];
	char desc[160];
	struct moat_addr local_addr, peer_addr;
	uint16_t local_port, peer_port;
};

static void conn_flush(struct h2conn *c);
static void conn_update_interest(struct h2conn *c);
static void stream_check_done(struct h2stream *s);
static void stream_on_io(struct loop_io *io, uint32_t events);
static void stream_wait_tick(struct loop_timer *t);
static void stream_idle_tick(struct loop_timer *t);

/* ---- helpers ---- */

static const char *ssl_error_text(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();
	if (!e)
		return "connection closed";
	ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

static void conn_enter(struct h2conn *c)
{
	c->busy++;
}

static void conn_free(struct h2conn *c);

static void conn_leave(struct h2conn *c)
{
	if (--c->busy == 0 && c->dead)
		conn_free(c);
}

/* ---- streams ---- */

static struct h2stream *stream_new(struct h2conn *c, int fd)
{
	struct h2stream *s = xcalloc(1, sizeof(*s));
	s->conn = c;
	s->id = -1;
	s->fd = fd;
	s->opened_ms = s->last_io_ms = now_ms();
	loop_io_init(&s->io);
	loop_timer_init(&s->wait_timer, stream_wait_tick);
	loop_timer_init(&s->idle_timer, stream_idle_tick);
	s->next = c->streams;
	if (c->streams)
		c->streams->prev = s;
	c->streams = s;
	c->n_streams++;
	return s;
}

static void stream_free_headers(struct h2stream *s)
{
	free(s->method);
	free(s->authority);
	free(s->forwarded);
	free(s->baggage);
	free(s->traceparent);
	s->method = s->authority = s->forwarded = s->baggage = s->traceparent = NULL;
}

static void stream_set_error(struct h2stream *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void stream_set_error(struct h2stream *s, const char *fmt, ...)
{
	if (s->error)
		return; /* keep the first cause */
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&s->error, fmt, ap) < 0)
		s->error = NULL;
	va_end(ap);
	s->failed = true;
}

static void stream_close_fd(struct h2stream *s, bool rst)
{
	if (s->fd < 0)
		return;
	loop_io_del(s->conn->loop, &s->io);
	if (h2splice_release(s->conn->splice, s->fd, rst))
		; /* a DATA frame from it is half sent: the splice path closes it when done */
	else if (rst)
		close_rst(s->fd);
	else
		close(s->fd);
	s->fd = -1;
	free(s->pend);
	s->pend = NULL;
	s->pend_len = s->pend_off = 0;
}

/* Local side failed: RST the socket, reset the stream. */
static void stream_fail(struct h2stream *s, uint32_t h2_error)
{
	stream_close_fd(s, true);
	if (s->ng_open && s->conn->ng)
		nghttp2_submit_rst_stream(s->conn->ng, NGHTTP2_FLAG_NONE, s->id, h2_error);
	stream_check_done(s);
}

static void stream_unlink(struct h2stream *s)
{
	struct h2conn *c = s->conn;
	if (s->prev)
		s->prev->next = s->next;
	else
		c->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	c->n_streams--;
}

/* A stream ends when nghttp2 is done with it and its socket is closed. */
static void stream_check_done(struct h2stream *s)
{
	if (s->ng_open || s->fd >= 0)
		return;
	struct h2conn *c = s->conn;
	struct h2stream_stats st;
	h2stream_get_stats(s, &st);
	if (c->ng && s->id > 0)
		nghttp2_session_set_stream_user_data(c->ng, s->id, NULL);
	loop_timer_cancel(c->loop, &s->wait_timer);
	loop_timer_cancel(c->loop, &s->idle_timer);
	if (c->role == H2_CLIENT && !s->responded)
		c->n_waiting--;
	stream_unlink(s);
	if (s->ops && s->ops->on_close)
		s->ops->on_close(s, s->user, &st, s->failed ? (s->error ? s->error : "reset") : NULL);
	stream_free_headers(s);
	free(s->error);
	free(s);
	if (c->ops->on_streams && c->state != C_CLOSED)
		c->ops->on_streams(c, c->n_streams);
}

/* Watch the local socket only for what the stream waits for. With nothing to wait for it
 * leaves epoll altogether: a hung-up socket would otherwise report EPOLLHUP forever. */
static void stream_update_io(struct h2stream *s)
{
	if (s->fd < 0)
		return;
	uint32_t ev = 0;
	if (s->deferred)
		ev |= EPOLLIN;
	if (s->pend_len > s->pend_off)
		ev |= EPOLLOUT;
	if (s->watch_hup)
		ev |= EPOLLRDHUP;
	struct loop *l = s->conn->loop;
	if (!ev)
		loop_io_del(l, &s->io);
	else if (s->io.fd < 0)
		loop_io_add(l, &s->io, s->fd, ev, stream_on_io);
	else
		loop_io_mod(l, &s->io, ev);
}

static void stream_maybe_shut_wr(struct h2stream *s)
{
	if (s->remote_eof && !s->shut_wr && s->fd >= 0 && s->pend_len == s->pend_off) {
		shutdown(s->fd, SHUT_WR);
		s->shut_wr = true;
	}
	/* Both directions finished and nghttp2 is done: the socket can go. */
	if (!s->ng_open && s->fd >= 0 && s->pend_len == s->pend_off)
		stream_close_fd(s, s->failed);
}

/* Write peer data to the socket; whatever it does not take waits in s->pend. Returns the
 * number of bytes that reached the socket, or -1 when the socket failed. */
static ssize_t stream_deliver(struct h2stream *s, const uint8_t *data, size_t len)
{
	size_t done = 0;
	if (s->pend_len == s->pend_off) {
		while (done < len) {
			ssize_t n = send(s->fd, data + done, len - done, MSG_NOSIGNAL);
			if (n > 0) {
				done += (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			return -1;
		}
	}
	s->from_peer += done; /* counted once it reached the socket: what the app got */
	s->copied_from_peer += done;
	if (done > 0)
		s->last_io_ms = now_ms();
	if (done < len) {
		/* Compact what is still pending to the front, then append. */
		size_t rest = len - done, live = s->pend_len - s->pend_off;
		if (s->pend_off && live)
			memmove(s->pend, s->pend + s->pend_off, live);
		s->pend = xrealloc(s->pend, live + rest);
		memcpy(s->pend + live, data + done, rest);
		s->pend_len = live + rest;
		s->pend_off = 0;
		stream_update_io(s);
	}
	return (ssize_t)done;
}

static void stream_drain_pending(struct h2stream *s)
{
	struct h2conn *c = s->conn;
	size_t wrote = 0;
	while (s->pend_off < s->pend_len) {
		ssize_t n = send(s->fd, s->pend + s->pend_off, s->pend_len - s->pend_off,
				 MSG_NOSIGNAL);
		if (n > 0) {
			s->pend_off += (size_t)n;
			wrote += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		stream_set_error(s, "write to local socket: %s", strerror(errno));
		stream_fail(s, NGHTTP2_CONNECT_ERROR);
		return;
	}
	s->from_peer += wrote;
	s->copied_from_peer += wrote;
	if (wrote)
		s->last_io_ms = now_ms();
	if (wrote && c->ng && s->ng_open)
		nghttp2_session_consume(c->ng, s->id, wrote);
	if (s->pend_off == s->pend_len) {
		free(s->pend);
		s->pend = NULL;
		s->pend_len = s->pend_off = 0;
	}
	stream_update_io(s);
	stream_maybe_shut_wr(s);
	stream_check_done(s);
}

/* The app's socket saw FIN (or worse) while the stream waits for the CONNECT response. A
 * hang-up or error means the app is gone; a FIN alone may be a half-close (the app sent its
 * request and waits for the answer), so the owner is asked. An app that left must not keep
 * the stream, its fd and a slot of the pending caps until the response deadline. */
static void stream_app_hangup(struct h2stream *s, uint32_t events)
{
	bool gone = (events & (EPOLLHUP | EPOLLERR)) ||
		    (s->ops && s->ops->local_gone && s->ops->local_gone(s, s->user, s->fd));
	s->watch_hup = false;
	if (!gone) {
		stream_update_io(s); /* half-closed: keep waiting, the deadline still applies */
		return;
	}
	stream_set_error(s, "the app closed its connection while the CONNECT waited %llu ms for "
			    "a response",
			 (unsigned long long)(now_ms() - s->opened_ms));
	stream_fail(s, NGHTTP2_CANCEL);
}

static void stream_on_io(struct loop_io *io, uint32_t events)
{
	struct h2stream *s = container_of(io, struct h2stream, io);
	struct h2conn *c = s->conn;
	conn_enter(c);
	if (s->watch_hup && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
		stream_app_hangup(s, events);
		conn_flush(c);
		conn_leave(c);
		return;
	}
	/* HUP/ERR are answered by the next read or write, which reports what happened. */
	if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && s->pend_len > s->pend_off)
		stream_drain_pending(s);
	if (s->fd >= 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && s->deferred) {
		s->deferred = false;
		stream_update_io(s);
		if (s->ng_open)
			nghttp2_session_resume_data(c->ng, s->id);
	}
	conn_flush(c);
	conn_leave(c);
}

/* ---- deadlines ---- */

static void conn_send_ping(struct h2conn *c)
{
	if (c->ping_outstanding || c->state != C_OPEN)
		return;
	nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL);
	c->ping_outstanding = true;
	c->ping_sent_ms = now_ms();
}

/* A stream waited past the suspicion deadline: the connection may have gone silent (peer
 * gone without FIN). New streams go elsewhere until it answers a PING. */
static void conn_suspect(struct h2conn *c, uint64_t waited)
{
	if (c->suspect || c->state != C_OPEN)
		return;
	c->suspect = true;
	log_info("HBONE %s: a CONNECT waited %llu ms for its response: no new streams on this "
		 "connection until it answers a PING",
		 c->desc, (unsigned long long)waited);
	conn_send_ping(c);
}

static void stream_arm_wait(struct h2stream *s)
{
	struct h2conn *c = s->conn;
	uint64_t waited = now_ms() - s->opened_ms, next = UINT64_MAX;
	if (c->limits.response_ms > 0)
		next = (uint64_t)c->limits.response_ms > waited ? c->limits.response_ms - waited : 0;
	if (!c->suspect && c->limits.suspect_ms > 0 && waited < (uint64_t)c->limits.suspect_ms &&
	    (uint64_t)c->limits.suspect_ms - waited < next)
		next = c->limits.suspect_ms - waited;
	if (next != UINT64_MAX)
		loop_timer_arm(c->loop, &s->wait_timer, next);
}

static void stream_wait_tick(struct loop_timer *t)
{
	struct h2stream *s = container_of(t, struct h2stream, wait_timer);
	struct h2conn *c = s->conn;
	conn_enter(c);
	uint64_t waited = now_ms() - s->opened_ms;
	if (c->limits.response_ms > 0 && waited >= (uint64_t)c->limits.response_ms) {
		stream_set_error(s, "no response to CONNECT within %d ms", c->limits.response_ms);
		stream_fail(s, NGHTTP2_CANCEL);
	} else {
		if (c->limits.suspect_ms > 0 && waited >= (uint64_t)c->limits.suspect_ms)
			conn_suspect(c, waited);
		stream_arm_wait(s);
	}
	conn_flush(c);
	conn_leave(c);
}

static void stream_arm_idle(struct h2stream *s)
{
	struct h2conn *c = s->conn;
	s->last_io_ms = now_ms();
	if (c->limits.stream_idle_ms > 0)
		loop_timer_arm(c->loop, &s->idle_timer, (uint64_t)c->limits.stream_idle_ms);
}

/* Re-armed lazily: bytes only move last_io_ms, the timer checks it when it fires. */
static void stream_idle_tick(struct loop_timer *t)
{
	struct h2stream *s = container_of(t, struct h2stream, idle_timer);
	struct h2conn *c = s->conn;
	uint64_t idle = now_ms() - s->last_io_ms, limit = (uint64_t)c->limits.stream_idle_ms;
	if (limit == 0)
		return;
	if (idle < limit) {
		loop_timer_arm(c->loop, &s->idle_timer, limit - idle);
		return;
	}
	conn_enter(c);
	stream_set_error(s, "idle: no bytes either way for %llu ms (stream idle deadline)",
			 (unsigned long long)idle);
	stream_fail(s, NGHTTP2_CANCEL);
	conn_flush(c);
	conn_leave(c);
}

/* nghttp2 pulls the bytes to send straight from the local socket. */
static ssize_t data_read_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t len,
			    uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	(void)ng;
	(void)id;
	(void)arg;
	struct h2stream *s = src->ptr;
	if (!s || s->fd < 0) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return 0;
	}
	if (!s->relaying) {
		s->deferred = false; /* woken by the response / accept, not by the socket */
		return NGHTTP2_ERR_DEFERRED;
	}
	for (;;) {
		ssize_t n;
		if (s->conn->splice) {
			/* Only the length now: send_data_cb splices the payload itself. */
			n = h2splice_available(s->fd, len);
			if (n > 0) {
				*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
				s->last_io_ms = now_ms();
				return n;
			}
			if (n < 0) {
				errno = (int)-n;
				n = -1;
			}
		} else {
			n = recv(s->fd, buf, len, 0);
			if (n > 0) {
				s->to_peer += (uint64_t)n;
				s->copied_to_peer += (uint64_t)n; /* recv() into nghttp2's buffer */
				s->last_io_ms = now_ms();
				return n;
			}
		}
		if (n == 0) {
			s->local_eof = true;
			*flags |= NGHTTP2_DATA_FLAG_EOF;
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			s->deferred = true;
			stream_update_io(s);
			return NGHTTP2_ERR_DEFERRED;
		}
		stream_set_error(s, "read from local socket: %s", strerror(errno));
		stream_close_fd(s, true);
		nghttp2_submit_rst_stream(s->conn->ng, NGHTTP2_FLAG_NONE, s->id,
					  NGHTTP2_CONNECT_ERROR);
		return NGHTTP2_ERR_DEFERRED;
	}
}

/* A NO_COPY DATA frame (kTLS + splice): header and payload straight to the tunnel socket. */
static int send_data_cb(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *hd, size_t len,
			nghttp2_data_source *src, void *arg)
{
	(void)ng;
	struct h2conn *c = arg;
	struct h2stream *s = src->ptr;
	if (f->data.padlen) /* we never ask for padding */
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	int r = h2splice_send(c->splice, c->fd, hd, len, s->fd, &s->to_peer);
	if (r == 1) {
		c->tp_wants_write = true; /* resumed on EPOLLOUT, with the same frame */
		return NGHTTP2_ERR_WOULDBLOCK;
	}
	if (r < 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE; /* fatal: conn_flush tears down, saying why */
	s->last_io_ms = now_ms();
	return 0;
}

static ssize_t read_length_cb(nghttp2_session *ng, uint8_t type, int32_t id, int32_t conn_win,
			      int32_t stream_win, uint32_t max_frame, void *arg)
{
	(void)ng;
	(void)type;
	(void)id;
	(void)arg;
	int64_t n = H2_DATA_CHUNK;
	if (n > conn_win)
		n = conn_win;
	if (n > stream_win)
		n = stream_win;
	if (n > (int64_t)max_frame)
		n = max_frame;
	return n > 0 ? (ssize_t)n : 1;
}

/* ---- nghttp2 callbacks ---- */

static struct h2stream *stream_of(nghttp2_session *ng, int32_t id)
{
	return nghttp2_session_get_stream_user_data(ng, id);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
	struct h2conn *c = arg;
	if (c->role != H2_SERVER || f->hd.type != NGHTTP2_HEADERS ||
	    f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct h2stream *s = stream_new(c, -1);
	s->id = f->hd.stream_id;
	s->ng_open = true;
	nghttp2_session_set_stream_user_data(ng, s->id, s);
	if (c->ops->on_streams)
		c->ops->on_streams(c, c->n_streams);
	return 0;
}

static void keep_header(char **slot, const uint8_t *v, size_t vl)
{
	if (!*slot)
		*slot = xstrndup((const char *)v, vl);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
		     size_t nl, const uint8_t *value, size_t vl, uint8_t flags, void *arg)
{
	(void)flags;
	struct h2conn *c = arg;
	struct h2stream *s = stream_of(ng, f->hd.stream_id);
	if (!s)
		return 0;
#define IS(n) (nl == sizeof(n) - 1 && memcmp(name, n, nl) == 0)
	if (c->role == H2_SERVER) {
		if (IS(":method"))
			keep_header(&s->method, value, vl);
		else if (IS(":authority"))
			keep_header(&s->authority, value, vl);
		else if (IS("forwarded"))
			keep_header(&s->forwarded, value, vl);
		else if (IS("baggage"))
			keep_header(&s->baggage, value, vl);
		else if (IS("traceparent"))
			keep_header(&s->traceparent, value, vl);
	} else if (IS(":status") && vl == 3) {
		s->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
	}
#undef IS
	return 0;
}

static void server_request(struct h2conn *c, struct h2stream *s)
{
	struct hbone_request r = {
		.method = s->method ? s->method : "",
		.authority = s->authority ? s->authority : "",
		.forwarded = s->forwarded,
		.baggage = s->baggage,
		.traceparent = s->traceparent,
		.peer_id = c->peer_id,
		.local_addr = c->local_addr,
		.peer_addr = c->peer_addr,
		.local_port = c->local_port,
		.peer_port = c->peer_port,
	};
	c->ops->on_request(c, s, &r);
	if (s->id > 0)
		stream_free_headers(s);
}

static void client_response(struct h2conn *c, struct h2stream *s)
{
	int status = s->status;
	s->responded = true;
	c->n_waiting--;
	loop_timer_cancel(c->loop, &s->wait_timer);
	s->watch_hup = false;
	stream_update_io(s);
	if (s->ops && s->ops->on_response)
		s->ops->on_response(s, s->user, status);
	if (status == 200) {
		s->relaying = true;
		stream_arm_idle(s);
		if (s->ng_open)
			nghttp2_session_resume_data(c->ng, s->id);
		return;
	}
	stream_set_error(s, "HBONE CONNECT answered %d", status);
	stream_close_fd(s, true);
	if (s->ng_open)
		nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
	struct h2conn *c = arg;
	if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK)) {
		c->ping_outstanding = false;
		if (c->suspect)
			log_info("HBONE %s answered the PING: usable again", c->desc);
		c->suspect = false;
		return 0;
	}
	if (f->hd.type == NGHTTP2_GOAWAY) {
		c->goaway = true;
		if (f->goaway.error_code != NGHTTP2_NO_ERROR && !c->goaway_why)
			c->goaway_why = xasprintf("peer sent GOAWAY (%s)%s%.*s",
						  nghttp2_http2_strerror(f->goaway.error_code),
						  f->goaway.opaque_data_len ? ": " : "",
						  (int)(f->goaway.opaque_data_len > 200 ? 200 : f->goaway.opaque_data_len),
						  (const char *)f->goaway.opaque_data);
		return 0;
	}
	struct h2stream *s = stream_of(ng, f->hd.stream_id);
	if (!s)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS) {
		if (c->role == H2_SERVER && f->headers.cat == NGHTTP2_HCAT_REQUEST)
			server_request(c, s);
		else if (c->role == H2_CLIENT && !s->responded && s->status >= 100 && s->status < 200)
			s->status = 0; /* interim (1xx): the final response follows (RFC 9113 8.1) */
		else if (c->role == H2_CLIENT && !s->responded &&
			 (f->headers.cat == NGHTTP2_HCAT_RESPONSE || f->headers.cat == NGHTTP2_HCAT_HEADERS))
			client_response(c, s);
	}
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		s->remote_eof = true;
		stream_maybe_shut_wr(s);
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *arg)
{
	(void)flags;
	(void)arg;
	struct h2stream *s = stream_of(ng, id);
	if (!s || s->fd < 0 || !s->relaying) {
		/* Nobody to deliver to: give the window back so the connection keeps moving. */
		nghttp2_session_consume(ng, id, len);
		return 0;
	}
	ssize_t n = stream_deliver(s, data, len);
	if (n < 0) {
		stream_set_error(s, "write to local socket: %s", strerror(errno));
		nghttp2_session_consume(ng, id, len);
		stream_fail(s, NGHTTP2_CONNECT_ERROR);
		return 0;
	}
	if (n > 0)
		nghttp2_session_consume(ng, id, (size_t)n);
	return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *arg)
{
	(void)arg;
	struct h2stream *s = stream_of(ng, id);
	if (!s)
		return 0;
	s->ng_open = false;
	struct h2conn *c = s->conn;
	bool refused_by_us = c->role == H2_SERVER && s->status && s->status != 200;
	if (code != NGHTTP2_NO_ERROR && !refused_by_us) {
		if (s->rst_by_us)
			stream_set_error(s, "moatd reset the stream (HTTP/2 error %s)%s%s",
					 nghttp2_http2_strerror(code), c->ng_error[0] ? ": " : "",
					 c->ng_error);
		else
			stream_set_error(s, "stream reset by peer (HTTP/2 error %s)",
					 nghttp2_http2_strerror(code));
		stream_close_fd(s, true);
	} else if (c->role == H2_CLIENT && !s->responded) {
		stream_set_error(s, "stream closed before a response (%s, HTTP/2 error %s)",
				 s->rst_by_us ? "reset by moatd" : "by the peer",
				 nghttp2_http2_strerror(code));
		stream_close_fd(s, true);
	} else if (!s->local_eof && s->fd >= 0 && s->relaying) {
		/* Closed without our END_STREAM: data from the local socket would be lost. */
		stream_set_error(s, "stream closed before the local side finished");
		stream_close_fd(s, true);
	}
	stream_maybe_shut_wr(s);
	stream_check_done(s);
	return 0;
}

/* nghttp2's own account of a peer's protocol error ("PUSH_PROMISE: push disabled"), kept
 * for the GOAWAY or RST_STREAM it sends next. */
static int on_ng_error(nghttp2_session *ng, int lib_error, const char *msg, size_t len, void *arg)
{
	(void)ng;
	(void)lib_error;
	struct h2conn *c = arg;
	snprintf(c->ng_error, sizeof(c->ng_error), "%.*s", (int)len, msg);
	return 0;
}

static const char *frame_name(uint8_t type)
{
	static const char *names[] = {"DATA",          "HEADERS", "PRIORITY", "RST_STREAM",
				      "SETTINGS",      "PUSH_PROMISE", "PING", "GOAWAY",
				      "WINDOW_UPDATE", "CONTINUATION"};
	return type < ARRAY_SIZE(names) ? names[type] : "unknown";
}

static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int lib_error, void *arg)
{
	(void)ng;
	struct h2conn *c = arg;
	snprintf(c->ng_error, sizeof(c->ng_error), "invalid %s frame from the peer on stream %d: %s",
		 frame_name(f->hd.type), f->hd.stream_id, nghttp2_strerror(lib_error));
	return 0;
}

/* When nghttp2 gave no message (e.g. HPACK decoding failed), the error code says enough. */
static const char *goaway_meaning(uint32_t code)
{
	switch (code) {
	case NGHTTP2_COMPRESSION_ERROR:
		return "the peer's header block could not be decoded (bad HPACK, or a header field "
		       "over 64 KiB)";
	case NGHTTP2_FLOW_CONTROL_ERROR:
		return "the peer overflowed a flow-control window";
	case NGHTTP2_FRAME_SIZE_ERROR:
		return "the peer sent a frame of a size HTTP/2 does not allow";
	default:
		return "HTTP/2 protocol error by the peer";
	}
}

/* What we send that ends something is remembered with its reason: a GOAWAY with an error
 * code becomes the connection's teardown reason; an RST_STREAM is ours, not the peer's. */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *arg)
{
	struct h2conn *c = arg;
	if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR &&
	    !c->goaway_why) {
		/* Without a callback's message, nghttp2's GOAWAY debug data says why. */
		int dl = (int)(f->goaway.opaque_data_len > 200 ? 200 : f->goaway.opaque_data_len);
		if (!c->ng_error[0] && dl > 0)
			snprintf(c->ng_error, sizeof(c->ng_error), "%.*s", dl,
				 (const char *)f->goaway.opaque_data);
		c->goaway_why = xasprintf("moatd sent GOAWAY (%s): %s",
					  nghttp2_http2_strerror(f->goaway.error_code),
					  c->ng_error[0] ? c->ng_error
							 : goaway_meaning(f->goaway.error_code));
		log_warn("HBONE %s: %s", c->desc, c->goaway_why);
	} else if (f->hd.type == NGHTTP2_RST_STREAM) {
		struct h2stream *s = stream_of(ng, f->hd.stream_id);
		if (s) {
			s->rst_by_us = true;
			if (c->ng_error[0] && !s->error)
				stream_set_error(s, "moatd reset the stream (HTTP/2 error %s): %s",
						 nghttp2_http2_strerror(f->rst_stream.error_code),
						 c->ng_error);
			c->ng_error[0] = 0; /* used up: a later reset must not inherit it */
		}
	}
	return 0;
}

/* ---- the connection: TLS handshake, then nghttp2 over SSL_read / SSL_write ---- */

static int submit_settings(struct h2conn *c)
{
	nghttp2_settings_entry iv[4];
	size_t n = 0;
	iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW};
	iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_FRAME_SIZE, H2_MAX_FRAME};
	if (c->role == H2_SERVER)
		iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
						   H2_SERVER_STREAMS};
	else
		iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
	if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, n) != 0)
		return -1;
	return nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
}

static int session_new(struct h2conn *c)
{
	nghttp2_session_callbacks *cb;
	nghttp2_option *opt;
	if (nghttp2_session_callbacks_new(&cb) != 0)
		return -1;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_data_source_read_length_callback(cb, read_length_cb);
	nghttp2_session_callbacks_set_send_data_callback(cb, send_data_cb);
	nghttp2_session_callbacks_set_error_callback2(cb, on_ng_error);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cb);
		return -1;
	}
	/* Window updates only once bytes reached the local socket: real back-pressure. */
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_peer_max_concurrent_streams(opt, H2_CLIENT_STREAMS);
	int rv = c->role == H2_SERVER ? nghttp2_session_server_new2(&c->ng, cb, c, opt)
				      : nghttp2_session_client_new2(&c->ng, cb, c, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	if (rv != 0)
		return -1;
	return submit_settings(c);
}

static void conn_teardown(struct h2conn *c, const char *why)
{
	if (c->state == C_CLOSED)
		return;
	if (!why)
		why = c->goaway_why; /* an "orderly" end after a GOAWAY with an error code */
	c->state = C_CLOSED;
	loop_timer_cancel(c->loop, &c->ping_timer);
	loop_timer_cancel(c->loop, &c->handshake_timer);
	loop_timer_cancel(c->loop, &c->resume_timer);
	loop_io_del(c->loop, &c->io);
	while (c->streams) {
		struct h2stream *s = c->streams;
		if (why)
			stream_set_error(s, "HBONE connection %s: %s", c->desc, why);
		else if (s->fd >= 0 || s->ng_open)
			stream_set_error(s, "HBONE connection %s closed", c->desc);
		s->ng_open = false;
		stream_close_fd(s, true);
		stream_check_done(s);
	}
	c->dead = true;
	c->dead_why = why ? xstrdup(why) : NULL;
}

static void conn_free(struct h2conn *c)
{
	if (c->tp) {
		c->tp->ops->shutdown(c->tp); /* best effort close_notify; never blocks */
		c->tp_stats = c->tp->stats;
		c->tp->ops->free(c->tp);
		c->tp = NULL;
	} else if (c->ssl) {
		SSL_shutdown(c->ssl); /* best effort close_notify; never blocks (non-blocking fd) */
		SSL_free(c->ssl);
	}
	h2splice_free(c->splice);
	if (c->fd >= 0)
		close(c->fd);
	if (c->ng)
		nghttp2_session_del(c->ng);
	if (c->ops->on_closed)
		c->ops->on_closed(c, c->dead_why);
	free(c->dead_why);
	free(c->goaway_why);
	free(c);
}

void h2conn_abort(struct h2conn *c, const char *why)
{
	conn_enter(c);
	conn_teardown(c, why ? why : "aborted");
	conn_leave(c);
}

static void conn_fail_ssl(struct h2conn *c, const char *what)
{
	char buf[256], msg[512];
	const char *verify = tls_verify_error(c->ssl);
	snprintf(msg, sizeof(msg), "%s: %s", what, verify ? verify : ssl_error_text(buf, sizeof(buf)));
	conn_teardown(c, msg);
}

static void conn_update_interest(struct h2conn *c)
{
	if (c->state == C_CLOSED)
		return;
	/* A half-sent spliced DATA frame waits for the tunnel only: nothing is read meanwhile. */
	uint32_t ev = h2splice_busy(c->splice) ? 0 : EPOLLIN;
	if (c->out_len || c->tp_wants_write)
		ev |= EPOLLOUT;
	loop_io_mod(c->loop, &c->io, ev);
}

static void conn_flush(struct h2conn *c)
{
	if (c->state != C_OPEN)
		return;
	c->tp_wants_write = false;
	for (;;) {
		if (!c->out_len) {
			ssize_t n = nghttp2_session_mem_send(c->ng, &c->out);
			if (n < 0) {
				const char *sw = c->splice ? h2splice_why(c->splice) : "";
				conn_teardown(c, sw[0] ? sw : nghttp2_strerror((int)n));
				return;
			}
			if (n == 0)
				break;
			c->out_len = (size_t)n;
		}
		ssize_t w = c->tp->ops->write(c->tp, c->out, c->out_len);
		if (w > 0) {
			c->out += w;
			c->out_len -= (size_t)w;
			continue;
		}
		if (w == TP_WANT_WRITE || w == TP_WANT_READ) {
			c->tp_wants_write = true;
			break;
		}
		conn_teardown(c, w == TP_ERROR ? c->tp->why : "TLS write: connection closed");
		return;
	}
	if (!c->out_len && !nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng)) {
		conn_teardown(c, NULL); /* GOAWAY exchanged and every stream finished */
		return;
	}
	conn_update_interest(c);
}

/* The peer's bytes to nghttp2; false when that ended the connection. */
static bool conn_feed(struct h2conn *c, const uint8_t *buf, size_t len)
{
	ssize_t used = nghttp2_session_mem_recv(c->ng, buf, len);
	if (used >= 0)
		return true;
	char msg[400];
	snprintf(msg, sizeof(msg), "HTTP/2 protocol error: %s%s%s", nghttp2_strerror((int)used),
		 c->ng_error[0] ? ": " : "", c->ng_error);
	/* Let nghttp2 tell the peer (GOAWAY) before we go. */
	conn_flush(c);
	conn_teardown(c, msg);
	return false;
}

static void conn_read(struct h2conn *c)
{
	uint8_t buf[65536];
	if (h2splice_busy(c->splice))
		return; /* nghttp2 must not close the stream of a half-sent frame: read after it */
	for (int round = 0; round < H2_READ_ROUNDS && c->state == C_OPEN; round++) {
		/* Fill the buffer from every record that is there (one SSL_read returns one
		 * record): nghttp2 then gives a DATA payload spread over several records to the
		 * app socket in one send(), not one per 16 KiB record. */
		size_t have = 0;
		ssize_t n = 0;
		while (have < sizeof(buf)) {
			n = c->tp->ops->read(c->tp, buf + have, sizeof(buf) - have);
			if (n <= 0)
				break;
			have += (size_t)n;
		}
		if (have && (!conn_feed(c, buf, have) || c->state != C_OPEN))
			return;
		if (n > 0)
			continue; /* the buffer filled up: more may be there */
		if (n == TP_WANT_READ)
			return;
		if (n == TP_WANT_WRITE) {
			c->tp_wants_write = true;
			return;
		}
		if (n == TP_CLOSED) {
			conn_teardown(c, !c->n_streams	      ? NULL
					 : c->tp->eof_clean ? "peer closed the TLS session"
							      : "peer closed the connection");
			return;
		}
		conn_teardown(c, c->tp->why);
		return;
	}
	/* Still more to read: come back after the other ready connections had their turn.
	 * What is still in the socket wakes epoll again (level-triggered); bytes already
	 * inside the transport (OpenSSL's buffers) would not: a timer brings us back. */
	if (c->state == C_OPEN && c->tp->ops->pending(c->tp))
		loop_timer_arm(c->loop, &c->resume_timer, 0);
}

static void resume_read(struct loop_timer *t)
{
	struct h2conn *c = container_of(t, struct h2conn, resume_timer);
	conn_enter(c);
	conn_read(c);
	conn_flush(c);
	conn_leave(c);
}

static void ping_tick(struct loop_timer *t)
{
	struct h2conn *c = container_of(t, struct h2conn, ping_timer);
	conn_enter(c);
	if (c->ping_outstanding && now_ms() - c->ping_sent_ms >= H2_PING_TIMEOUT_MS) {
		conn_teardown(c, "PING not answered in 20 s");
	} else if (!c->ping_outstanding) {
		conn_send_ping(c);
		conn_flush(c);
	}
	if (c->state == C_OPEN)
		loop_timer_arm(c->loop, &c->ping_timer, H2_PING_INTERVAL_MS);
	conn_leave(c);
}

static void handshake_timeout(struct loop_timer *t)
{
	struct h2conn *c = container_of(t, struct h2conn, handshake_timer);
	conn_enter(c);
	conn_teardown(c, "TLS handshake timed out");
	conn_leave(c);
}

/* The handshake is done: the session moves to the kernel when asked and possible, else
 * stays with OpenSSL. A failed switch costs only the speed of this one connection. */
static void conn_pick_transport(struct h2conn *c)
{
	if (c->want_ktls)
		c->tp = transport_ktls_new(c->ssl, c->fd, c->ktls_reason, sizeof(c->ktls_reason),
					   c->ktls_why, sizeof(c->ktls_why));
	if (!c->tp)
		c->tp = transport_ossl_new(c->ssl, c->fd);
	c->ssl = NULL; /* the transport's now */
	c->engine = c->tp->ops->engine;
	if (transport_kernel(c->tp)) {
		c->splice = h2splice_new();
		if (c->splice)
			c->engine = "ktls-splice";
		else
			log_warn("HBONE %s: no pipe for the splice payload path (%s): payload is "
				 "copied through user space (engine ktls)",
				 c->desc, errno_name(errno));
	}
}

static void conn_handshake(struct h2conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r != 1) {
		int err = SSL_get_error(c->ssl, r);
		if (err == SSL_ERROR_WANT_READ) {
			loop_io_mod(c->loop, &c->io, EPOLLIN);
			return;
		}
		if (err == SSL_ERROR_WANT_WRITE) {
			loop_io_mod(c->loop, &c->io, EPOLLIN | EPOLLOUT);
			return;
		}
		conn_fail_ssl(c, "TLS handshake");
		return;
	}
	const unsigned char *alpn = NULL;
	unsigned alpn_len = 0;
	SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
	if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
		conn_teardown(c, "TLS handshake: peer did not negotiate ALPN h2");
		return;
	}
	const char *id = tls_peer_id(c->ssl);
	if (!id) {
		conn_teardown(c, "TLS handshake: peer identity not verified");
		return;
	}
	snprintf(c->peer_id, sizeof(c->peer_id), "%s", id);
	X509 *peer = SSL_get0_peer_certificate(c->ssl);
	BIGNUM *bn = peer ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(peer), NULL) : NULL;
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	snprintf(c->peer_serial, sizeof(c->peer_serial), "%s", hex ? hex : "");
	OPENSSL_free(hex);
	BN_free(bn);
	loop_timer_cancel(c->loop, &c->handshake_timer);
	conn_pick_transport(c);
	if (c->tp->broken) {
		conn_teardown(c, c->tp->why);
		return;
	}
	c->state = C_OPEN;
	if (c->role == H2_CLIENT)
		loop_timer_arm(c->loop, &c->ping_timer, H2_PING_INTERVAL_MS);
	if (c->ops->on_ready)
		c->ops->on_ready(c);
	conn_flush(c);
}

static void conn_on_io(struct loop_io *io, uint32_t events)
{
	struct h2conn *c = container_of(io, struct h2conn, io);
	conn_enter(c);
	if (c->state == C_HANDSHAKE) {
		conn_handshake(c);
	} else if (c->state == C_OPEN) {
		if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			conn_read(c);
		conn_flush(c);
	}
	conn_leave(c);
}

struct h2conn *h2conn_new(struct loop *l, enum h2_role role, int fd, SSL_CTX *ctx,
			  const char *expected_peer, const struct h2conn_ops *ops, void *owner,
			  const char *desc, struct err *e)
{
	struct h2conn *c = xcalloc(1, sizeof(*c));
	c->loop = l;
	c->role = role;
	c->fd = fd;
	c->ops = ops;
	c->owner = owner;
	c->limits = (struct h2_limits){.response_ms = H2_RESPONSE_TIMEOUT_MS,
				       .suspect_ms = H2_SUSPECT_MS};
	snprintf(c->desc, sizeof(c->desc), "%s", desc);
	loop_io_init(&c->io);
	loop_timer_init(&c->ping_timer, ping_tick);
	loop_timer_init(&c->handshake_timer, handshake_timeout);
	loop_timer_init(&c->resume_timer, resume_read);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		addr_from_sockaddr((struct sockaddr *)&ss, &c->local_addr, &c->local_port);
	sl = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
		addr_from_sockaddr((struct sockaddr *)&ss, &c->peer_addr, &c->peer_port);
	set_nonblock(fd);
	c->ssl = SSL_new(ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
		err_set(e, "HBONE %s: cannot set up TLS", desc);
		goto fail;
	}
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				     SSL_MODE_RELEASE_BUFFERS);
	if (role == H2_CLIENT) {
		SSL_set_connect_state(c->ssl);
		if (tls_expect_peer(c->ssl, expected_peer) < 0) {
			err_set(e, "HBONE %s: cannot set the expected peer %s", desc, expected_peer);
			goto fail;
		}
	} else {
		SSL_set_accept_state(c->ssl);
	}
	if (session_new(c) < 0) {
		err_set(e, "HBONE %s: cannot create the HTTP/2 session", desc);
		goto fail;
	}
	if (loop_io_add(l, &c->io, fd, EPOLLIN | EPOLLOUT, conn_on_io) < 0) {
		err_set(e, "HBONE %s: epoll: %s", desc, strerror(errno));
		goto fail;
	}
	loop_timer_arm(l, &c->handshake_timer, H2_HANDSHAKE_TIMEOUT_MS);
	return c;
fail:
	if (c->ng)
		nghttp2_session_del(c->ng);
	if (c->ssl)
		SSL_free(c->ssl);
	free(c);
	return NULL; /* fd stays with the caller */
}

void *h2conn_owner(const struct h2conn *c)
{
	return c->owner;
}

const char *h2conn_peer_id(const struct h2conn *c)
{
	return c->peer_id[0] ? c->peer_id : NULL;
}

const char *h2conn_peer_serial(const struct h2conn *c)
{
	return c->peer_serial;
}

const char *h2conn_desc(const struct h2conn *c)
{
	return c->desc;
}

int h2conn_streams(const struct h2conn *c)
{
	return c->n_streams;
}

void h2conn_want_ktls(struct h2conn *c)
{
	if (c->state != C_HANDSHAKE || !c->ssl)
		return;
	c->want_ktls = true;
	tls_capture_secrets(c->ssl);
}

const char *h2conn_engine(const struct h2conn *c)
{
	return c->engine ? c->engine : "userspace";
}

int h2conn_key_update(struct h2conn *c, bool request_peer)
{
	if (c->state != C_OPEN || !c->tp->ops->key_update)
		return -1;
	return c->tp->ops->key_update(c->tp, request_peer);
}

void h2conn_ktls_stats(const struct h2conn *c, struct h2_ktls_stats *st)
{
	const struct transport_stats *ts = c->tp ? &c->tp->stats : &c->tp_stats;
	*st = (struct h2_ktls_stats){.tickets_ignored = ts->tickets_ignored,
				     .key_updates = ts->key_updates,
				     .rekey_failed = ts->rekey_failed};
}

const char *h2conn_ktls_fallback(const struct h2conn *c, const char **why)
{
	if (why)
		*why = c->ktls_why;
	return c->want_ktls && c->ktls_reason[0] ? c->ktls_reason : NULL;
}

bool h2conn_ready(const struct h2conn *c)
{
	return c->state == C_OPEN;
}

bool h2conn_usable(const struct h2conn *c)
{
	return c->state != C_CLOSED && !c->goaway && !c->dead && !c->suspect;
}

int h2conn_waiting(const struct h2conn *c)
{
	return c->n_waiting;
}

void h2conn_set_limits(struct h2conn *c, const struct h2_limits *l)
{
	c->limits = *l;
}

void h2conn_shutdown(struct h2conn *c)
{
	conn_enter(c);
	if (c->state == C_OPEN) {
		c->goaway = true;
		nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
		conn_flush(c);
	} else {
		conn_teardown(c, NULL);
	}
	conn_leave(c);
}

/* ---- streams API ---- */

struct h2stream *h2conn_open_stream(struct h2conn *c, const char *authority,
				    const char *const *headers, int n_headers, int local_fd,
				    const struct h2stream_ops *ops, void *user, struct err *e)
{
	if (!h2conn_usable(c)) {
		err_set(e, "HBONE connection %s is closing", c->desc);
		return NULL;
	}
	nghttp2_nv nva[16];
	int n = 0;
#define NV(k, v)                                                                              \
	nva[n++] = (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v),          \
				NGHTTP2_NV_FLAG_NONE}
	NV(":method", "CONNECT");
	NV(":authority", authority);
	for (int i = 0; i + 1 < 2 * n_headers && n < 16; i += 2)
		NV(headers[i], headers[i + 1]);
#undef NV
	struct h2stream *s = stream_new(c, local_fd);
	s->ops = ops;
	s->user = user;
	nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read_cb};
	int32_t id = nghttp2_submit_request(c->ng, NULL, nva, (size_t)n, &prd, s);
	if (id < 0) {
		err_set(e, "HBONE %s: submit CONNECT %s: %s", c->desc, authority, nghttp2_strerror(id));
		s->fd = -1; /* the caller keeps the socket */
		stream_unlink(s);
		free(s);
		return NULL;
	}
	s->id = id;
	s->ng_open = true;
	c->n_waiting++;
	s->watch_hup = local_fd >= 0;
	stream_update_io(s);
	stream_arm_wait(s);
	if (c->ops->on_streams)
		c->ops->on_streams(c, c->n_streams);
	/* Send from the loop, not from here: no callback may run inside this call. */
	if (c->state == C_OPEN)
		loop_timer_arm(c->loop, &c->resume_timer, 0);
	return s;
}

void h2stream_set_ops(struct h2stream *s, const struct h2stream_ops *ops, void *user)
{
	s->ops = ops;
	s->user = user;
}

void h2stream_respond(struct h2stream *s, int status)
{
	struct h2conn *c = s->conn;
	char code[4];
	snprintf(code, sizeof(code), "%03d", status);
	nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE};
	s->status = status;
	conn_enter(c);
	if (s->ng_open && c->state == C_OPEN)
		nghttp2_submit_response(c->ng, s->id, &nv, 1, NULL);
	conn_flush(c);
	conn_leave(c);
}

int h2stream_accept(struct h2stream *s, int upstream_fd, struct err *e)
{
	struct h2conn *c = s->conn;
	if (!s->ng_open || c->state != C_OPEN)
		return err_set(e, "HBONE stream already closed");
	s->fd = upstream_fd;
	nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE};
	nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read_cb};
	s->status = 200;
	s->relaying = true;
	stream_arm_idle(s);
	conn_enter(c);
	if (nghttp2_submit_response(c->ng, s->id, &nv, 1, &prd) != 0) {
		stream_set_error(s, "submit 200 failed");
		stream_fail(s, NGHTTP2_INTERNAL_ERROR);
	}
	conn_flush(c);
	conn_leave(c);
	return 0;
}

void h2stream_reset(struct h2stream *s, const char *why)
{
	struct h2conn *c = s->conn;
	conn_enter(c);
	stream_set_error(s, "%s", why);
	stream_fail(s, NGHTTP2_CONNECT_ERROR);
	conn_flush(c);
	conn_leave(c);
}

struct h2conn *h2stream_conn(const struct h2stream *s)
{
	return s->conn;
}

void h2stream_get_stats(const struct h2stream *s, struct h2stream_stats *st)
{
	st->bytes_to_peer = s->to_peer;
	st->bytes_from_peer = s->from_peer;
	st->status = s->status;
	st->copied_to_peer = s->copied_to_peer;
	st->copied_from_peer = s->copied_from_peer;
}
