/* The node-port HTTP server, with real sockets on 127.0.0.1 driven by the same loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "core/util.h"
#include "obs/http.h"
#include "test.h"

#define BIG_BODY (8u << 20)

struct hctx {
	struct loop *loop;
	struct loop_timer guard;
	bool timed_out;
	int pending; /* clients not finished */
	int handled; /* handler calls */
	char last_method[16];
};

struct client {
	struct hctx *ctx;
	int fd;
	struct loop_io io;
	struct loop_timer pace;
	const char *req;
	size_t req_len, sent;
	size_t piece;       /* bytes per send, 0 = all */
	uint32_t pause_ms;  /* between pieces */
	bool stop_sending;  /* send only the first piece, then wait */
	struct sbuf resp;
	bool done;
	uint64_t started, finished;
};

static void handler(void *arg, const char *method, const char *path, const char *query,
		    struct http_response *resp)
{
	struct hctx *c = arg;
	c->handled++;
	snprintf(c->last_method, sizeof(c->last_method), "%s", method);
	if (strcmp(path, "/") == 0) {
		sbuf_puts(&resp->body, "hello\n");
	} else if (strcmp(path, "/query") == 0) {
		sbuf_printf(&resp->body, "path=%s query=%s", path, query);
	} else if (strcmp(path, "/json") == 0) {
		resp->content_type = "application/json";
		sbuf_puts(&resp->body, "{}");
	} else if (strcmp(path, "/big") == 0) {
		for (unsigned i = 0; i < BIG_BODY / 16; i++)
			sbuf_printf(&resp->body, "%015u\n", i);
	} else {
		resp->status = 404;
		sbuf_puts(&resp->body, "not found\n");
	}
}

static void guard_fired(struct loop_timer *t)
{
	struct hctx *c = container_of(t, struct hctx, guard);
	c->timed_out = true;
	loop_stop(c->loop);
}

static void ctx_init(struct hctx *c)
{
	memset(c, 0, sizeof(*c));
	c->loop = loop_new();
	loop_timer_init(&c->guard, guard_fired);
}

static void ctx_fini(struct hctx *c)
{
	loop_timer_cancel(c->loop, &c->guard);
	loop_free(c->loop);
}

/* Run the loop until every client finished or max_ms passed. */
static void run(struct hctx *c, uint32_t max_ms)
{
	if (c->pending == 0)
		return;
	c->timed_out = false;
	loop_timer_arm(c->loop, &c->guard, max_ms);
	loop_run(c->loop);
	loop_timer_cancel(c->loop, &c->guard);
}

static void client_finish(struct client *cl)
{
	loop_io_del(cl->ctx->loop, &cl->io);
	loop_timer_cancel(cl->ctx->loop, &cl->pace);
	cl->done = true;
	cl->finished = now_ms();
	if (--cl->ctx->pending == 0)
		loop_stop(cl->ctx->loop);
}

static void client_read(struct client *cl)
{
	char buf[65536];
	for (;;) {
		ssize_t n = recv(cl->fd, buf, sizeof(buf), 0);
		if (n > 0) {
			sbuf_append(&cl->resp, buf, (size_t)n);
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return;
		} else {
			client_finish(cl); /* EOF or reset */
			return;
		}
	}
}

static void client_io(struct loop_io *io, uint32_t events);

static void client_resume(struct loop_timer *t)
{
	struct client *cl = container_of(t, struct client, pace);
	loop_io_mod(cl->ctx->loop, &cl->io, EPOLLOUT | EPOLLIN);
}

static void client_send(struct client *cl)
{
	size_t left = cl->req_len - cl->sent;
	size_t n = cl->piece && cl->piece < left ? cl->piece : left;
	ssize_t w = send(cl->fd, cl->req + cl->sent, n, MSG_NOSIGNAL);
	if (w < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			client_finish(cl);
		return;
	}
	cl->sent += (size_t)w;
	if (cl->sent == cl->req_len || cl->stop_sending) {
		loop_io_mod(cl->ctx->loop, &cl->io, EPOLLIN);
	} else if (cl->pause_ms) {
		loop_io_mod(cl->ctx->loop, &cl->io, EPOLLIN);
		loop_timer_arm(cl->ctx->loop, &cl->pace, cl->pause_ms);
	}
}

static void client_io(struct loop_io *io, uint32_t events)
{
	struct client *cl = container_of(io, struct client, io);
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		client_read(cl);
		if (cl->done)
			return;
	}
	if ((events & EPOLLOUT) && cl->sent < cl->req_len)
		client_send(cl);
}

static bool client_start(struct hctx *c, struct client *cl, uint16_t port, const char *req)
{
	memset(cl, 0, sizeof(*cl));
	cl->ctx = c;
	cl->req = req;
	cl->req_len = strlen(req);
	sbuf_init(&cl->resp);
	loop_io_init(&cl->io);
	loop_timer_init(&cl->pace, client_resume);
	cl->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (cl->fd < 0)
		return false;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(cl->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		close(cl->fd);
		cl->fd = -1;
		return false;
	}
	uint32_t ev = EPOLLIN | (cl->req_len ? EPOLLOUT : 0);
	if (loop_io_add(c->loop, &cl->io, cl->fd, ev, client_io) < 0) {
		close(cl->fd);
		cl->fd = -1;
		return false;
	}
	cl->started = now_ms();
	c->pending++;
	return true;
}

static void client_fini(struct client *cl)
{
	if (cl->fd >= 0) {
		if (!cl->done) {
			loop_io_del(cl->ctx->loop, &cl->io);
			loop_timer_cancel(cl->ctx->loop, &cl->pace);
			cl->ctx->pending--;
		}
		close(cl->fd);
	}
	sbuf_free(&cl->resp);
}

static int status_of(const struct client *cl)
{
	int st = 0;
	if (!cl->resp.s || sscanf(cl->resp.s, "HTTP/1.1 %d ", &st) != 1)
		return -1;
	return st;
}

static const char *body_of(const struct client *cl)
{
	const char *p = cl->resp.s ? strstr(cl->resp.s, "\r\n\r\n") : NULL;
	return p ? p + 4 : NULL;
}

/* One request, one response. */
static void exchange(struct hctx *c, uint16_t port, const char *req, struct client *cl)
{
	if (!client_start(c, cl, port, req)) {
		CHECK_MSG(false, "connect to 127.0.0.1:%u failed: %s", port, strerror(errno));
		return;
	}
	run(c, 5000);
	CHECK_MSG(cl->done, "no complete response to %.40s", req);
}

static struct http_server *server(struct hctx *c)
{
	struct err e = {{0}};
	struct http_server *s = http_server_new(c->loop, "127.0.0.1", 0, handler, c, &e);
	if (!s)
		fprintf(stdout, "    http_server_new: %s\n", e.msg);
	return s;
}

TEST(http_get_200_exact_response)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	REQUIRE(http_server_port(s) != 0);
	struct client cl;
	exchange(&c, http_server_port(s), "GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n", &cl);
	CHECK_STR(cl.resp.s, "HTTP/1.1 200 OK\r\n"
			     "Content-Type: text/plain; charset=utf-8\r\n"
			     "Content-Length: 6\r\n"
			     "Connection: close\r\n"
			     "\r\n"
			     "hello\n");
	CHECK_INT(c.handled, 1);
	client_fini(&cl);
	exchange(&c, http_server_port(s), "GET /json HTTP/1.0\r\n\r\n", &cl);
	CHECK_CONTAINS(cl.resp.s, "Content-Type: application/json\r\n");
	CHECK_STR(body_of(&cl), "{}");
	client_fini(&cl);
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_404_from_handler)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	struct client cl;
	exchange(&c, http_server_port(s), "GET /nope HTTP/1.1\r\n\r\n", &cl);
	CHECK_INT(status_of(&cl), 404);
	CHECK_CONTAINS(cl.resp.s, "HTTP/1.1 404 Not Found\r\n");
	CHECK_STR(body_of(&cl), "not found\n");
	client_fini(&cl);
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_head_has_length_but_no_body)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	struct client cl;
	exchange(&c, http_server_port(s), "HEAD / HTTP/1.1\r\n\r\n", &cl);
	CHECK_INT(status_of(&cl), 200);
	CHECK_CONTAINS(cl.resp.s, "Content-Length: 6\r\n");
	CHECK_STR(body_of(&cl), "");
	CHECK_STR(c.last_method, "HEAD");
	client_fini(&cl);
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_405_for_other_methods)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	const char *reqs[] = {"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
			      "DELETE /x HTTP/1.1\r\n\r\n", "OPTIONS * HTTP/1.1\r\n\r\n"};
	for (size_t i = 0; i < ARRAY_SIZE(reqs); i++) {
		struct client cl;
		exchange(&c, http_server_port(s), reqs[i], &cl);
		CHECK_INT(status_of(&cl), 405);
		CHECK_CONTAINS(cl.resp.s, "Allow: GET, HEAD\r\n");
		client_fini(&cl);
	}
	CHECK_INT(c.handled, 0);
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_400_on_malformed_requests)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	const char *reqs[] = {
		"hello world\r\n\r\n",               /* no version */
		"GET /\r\n\r\n",                     /* HTTP/0.9 style */
		"GET / HTTP/1.1 extra\r\n\r\n",      /* too many fields */
		"GET nopath HTTP/1.1\r\n\r\n",       /* not origin-form */
		"GET / HTTX/1.1\r\n\r\n",            /* bad version */
		"GET / HTTP/1.1\r\nno colon\r\n\r\n",
		"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
		"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
		"G\x01T / HTTP/1.1\r\n\r\n",
		"\x16\x03\x01\x02\x05\x01\x07\x01\xfc\x03\x03\r\n\r\n", /* TLS to a plain port */
		"GET / HTTP/1.1\r\nHost: x", /* then EOF: incomplete */
	};
	for (size_t i = 0; i < ARRAY_SIZE(reqs); i++) {
		struct client cl;
		if (!client_start(&c, &cl, http_server_port(s), reqs[i]))
			continue;
		if (i == ARRAY_SIZE(reqs) - 1) {
			run(&c, 100); /* let it arrive, then half-close */
			shutdown(cl.fd, SHUT_WR);
		}
		run(&c, 5000);
		CHECK_MSG(status_of(&cl) == 400, "request %zu: got %d: %s", i, status_of(&cl),
			  cl.resp.s ? cl.resp.s : "(nothing)");
		client_fini(&cl);
	}
	struct client cl;
	exchange(&c, http_server_port(s), "GET / HTTP/2.0\r\n\r\n", &cl);
	CHECK_INT(status_of(&cl), 505);
	client_fini(&cl);
	exchange(&c, http_server_port(s), "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &cl);
	CHECK_INT(status_of(&cl), 505);
	client_fini(&cl);
	CHECK_INT(c.handled, 0);
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_431_on_huge_headers)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	struct sbuf req;
	sbuf_init(&req);
	sbuf_puts(&req, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 200; i++)
		sbuf_printf(&req, "X-Filler-%03d: %040d\r\n", i, i);
	sbuf_puts(&req, "\r\n");
	struct client cl;
	exchange(&c, http_server_port(s), req.s, &cl);
	CHECK_INT(status_of(&cl), 431);
	CHECK_CONTAINS(cl.resp.s, "Request Header Fields Too Large");
	client_fini(&cl);
	/* just under the limit is fine */
	sbuf_free(&req);
	sbuf_puts(&req, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 100; i++)
		sbuf_printf(&req, "X-Filler-%03d: %040d\r\n", i, i);
	sbuf_puts(&req, "\r\n");
	REQUIRE(req.len < 8192);
	exchange(&c, http_server_port(s), req.s, &cl);
	CHECK_INT(status_of(&cl), 200);
	client_fini(&cl);
	sbuf_free(&req);
	CHECK_INT(c.handled, 1);
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_query_splitting)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	const struct {
		const char *req, *body;
	} cases[] = {
		{"GET /query?a=1&b=2 HTTP/1.1\r\n\r\n", "path=/query query=a=1&b=2"},
		{"GET /query HTTP/1.1\r\n\r\n", "path=/query query="},
		{"GET /query? HTTP/1.1\r\n\r\n", "path=/query query="},
		{"GET /query?x=%2F?y HTTP/1.1\r\n\r\n", "path=/query query=x=%2F?y"},
		{"GET http://host:15020/query?z HTTP/1.1\r\n\r\n", "path=/query query=z"},
		{"GET /query\n\n", NULL}, /* LF-only without version: 400 */
		{"GET /query?lf HTTP/1.0\n\n", "path=/query query=lf"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct client cl;
		exchange(&c, http_server_port(s), cases[i].req, &cl);
		if (cases[i].body)
			CHECK_STR(body_of(&cl), cases[i].body);
		else
			CHECK_INT(status_of(&cl), 400);
		client_fini(&cl);
	}
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_request_arriving_in_pieces)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	struct client cl;
	REQUIRE(client_start(&c, &cl, http_server_port(s),
			     "GET /query?piece=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"));
	cl.piece = 3;
	cl.pause_ms = 5;
	run(&c, 5000);
	CHECK(cl.done);
	CHECK_STR(body_of(&cl), "path=/query query=piece=1");
	CHECK_INT(c.handled, 1);
	client_fini(&cl);
	/* the CR LF CR LF split across two reads */
	REQUIRE(client_start(&c, &cl, http_server_port(s), "GET / HTTP/1.1\r\n\r\n"));
	cl.piece = 17; /* "...\r\n\r" then "\n" */
	cl.pause_ms = 20;
	run(&c, 5000);
	CHECK_INT(status_of(&cl), 200);
	client_fini(&cl);
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_idle_timeout_closes)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	http_server_set_timeout(s, 200);
	struct client idle, partial;
	REQUIRE(client_start(&c, &idle, http_server_port(s), ""));
	REQUIRE(client_start(&c, &partial, http_server_port(s), "GET / HTTP/1.1\r\nHo"));
	partial.piece = 8;
	partial.stop_sending = true;
	run(&c, 5000);
	CHECK(idle.done && partial.done);
	CHECK_INT(idle.resp.len, 0);
	CHECK_INT(partial.resp.len, 0);
	uint64_t t1 = idle.finished - idle.started, t2 = partial.finished - partial.started;
	CHECK_MSG(t1 >= 180 && t1 < 2000, "idle client closed after %llu ms",
		  (unsigned long long)t1);
	CHECK_MSG(t2 >= 180 && t2 < 2000, "partial client closed after %llu ms",
		  (unsigned long long)t2);
	CHECK_INT(c.handled, 0);
	client_fini(&idle);
	client_fini(&partial);
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_many_concurrent_clients)
{
	enum { N = 300 }; /* above HTTP_MAX_CONNS (256): accepting pauses and resumes */
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	struct client *cls = xcalloc(N, sizeof(*cls));
	int started = 0;
	for (int i = 0; i < N; i++)
		started += client_start(&c, &cls[i], http_server_port(s),
					i % 2 ? "GET / HTTP/1.1\r\n\r\n" : "GET /nope HTTP/1.1\r\n\r\n");
	REQUIRE(started == N);
	run(&c, 10000);
	int ok = 0;
	for (int i = 0; i < N; i++) {
		ok += cls[i].done && status_of(&cls[i]) == (i % 2 ? 200 : 404);
		client_fini(&cls[i]);
	}
	CHECK_INT(ok, N);
	CHECK_INT(c.handled, N);
	free(cls);
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_large_body_partial_writes)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	struct client cl;
	exchange(&c, http_server_port(s), "GET /big HTTP/1.1\r\n\r\n", &cl);
	char want[64];
	snprintf(want, sizeof(want), "Content-Length: %u\r\n", BIG_BODY);
	CHECK_CONTAINS(cl.resp.s, want);
	const char *body = body_of(&cl);
	REQUIRE(body);
	CHECK_INT(cl.resp.len - (size_t)(body - cl.resp.s), BIG_BODY);
	CHECK(strncmp(body + BIG_BODY - 16, "000000000524287\n", 16) == 0);
	client_fini(&cl);
	http_server_free(s);
	ctx_fini(&c);
}

TEST(http_bind_errors_and_ipv6)
{
	struct hctx c;
	ctx_init(&c);
	struct err e = {{0}};
	struct http_server *s = server(&c);
	REQUIRE(s);
	struct http_server *dup =
		http_server_new(c.loop, "127.0.0.1", http_server_port(s), handler, &c, &e);
	CHECK(dup == NULL);
	CHECK_CONTAINS(e.msg, "bind");
	CHECK_CONTAINS(e.msg, "127.0.0.1:");
	http_server_free(dup);
	CHECK(http_server_new(c.loop, "not-an-ip", 0, handler, &c, &e) == NULL);
	CHECK_CONTAINS(e.msg, "not-an-ip");
	http_server_free(s);

	struct http_server *s6 = http_server_new(c.loop, "::1", 0, handler, &c, &e);
	if (!s6) {
		ctx_fini(&c);
		SKIP("no IPv6 loopback: %s", e.msg);
	}
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(http_server_port(s6)),
				  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	const char *req = "GET / HTTP/1.1\r\n\r\n";
	CHECK(send(fd, req, strlen(req), 0) == (ssize_t)strlen(req));
	/* drive the loop until the response is readable */
	char buf[512] = {0};
	size_t got = 0;
	for (int i = 0; i < 200 && !strstr(buf, "hello"); i++) {
		loop_timer_arm(c.loop, &c.guard, 10);
		loop_run(c.loop);
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, MSG_DONTWAIT);
		if (n > 0)
			got += (size_t)n;
	}
	CHECK_CONTAINS(buf, "HTTP/1.1 200 OK");
	CHECK_CONTAINS(buf, "hello\n");
	close(fd);
	http_server_free(s6);
	ctx_fini(&c);
}

TEST(http_free_with_open_connections)
{
	struct hctx c;
	ctx_init(&c);
	struct http_server *s = server(&c);
	REQUIRE(s);
	struct client a, b;
	REQUIRE(client_start(&c, &a, http_server_port(s), "GET / HTTP/1.1\r\n"));
	REQUIRE(client_start(&c, &b, http_server_port(s), ""));
	run(&c, 100); /* accepted, waiting for more */
	CHECK(!a.done && !b.done);
	http_server_free(s); /* closes both; ASan would report a leak */
	run(&c, 2000);
	CHECK(a.done && b.done);
	client_fini(&a);
	client_fini(&b);
	ctx_fini(&c);
}

TEST(http_bind_addr_valid_takes_ip_addresses_only)
{
	CHECK(http_bind_addr_valid("0.0.0.0"));
	CHECK(http_bind_addr_valid("127.0.0.1"));
	CHECK(http_bind_addr_valid("::1"));
	CHECK(http_bind_addr_valid("[::1]"));
	CHECK(!http_bind_addr_valid(""));
	CHECK(!http_bind_addr_valid(NULL));
	CHECK(!http_bind_addr_valid("localhost"));
	CHECK(!http_bind_addr_valid("127.0.0.1:15020"));
	CHECK(!http_bind_addr_valid("10.0.0.256"));
}
