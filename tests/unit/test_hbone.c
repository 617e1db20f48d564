/* HBONE end to end in one process: a client h2conn and a server h2conn joined by a socketpair,
 * real TLS with certificates from the built-in CA, CONNECT streams bridged to socketpairs
 * whose other ends are "apps" running in threads with blocking I/O. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "hbone/h2.h"
#include "identity/identity.h"
#include "test.h"
#include "test_hbone_helpers.h"

#define CLIENT_ID HBT_CLIENT_ID
#define SERVER_ID HBT_SERVER_ID

struct world {
	struct loop *loop;
	struct hbt_certs certs;
	struct h2conn *client, *server;
	int respond_status;  /* server answer: 200 relays to an upstream socketpair */
	int upstream_app;    /* the app end of the server's upstream socket */
	char authority[64], forwarded[128], method[16];
	int n_requests;
	int closed_streams;
	int expect_closed;
	char client_error[512], server_error[512];
	int client_status;
	struct h2stream_stats client_stats, server_stats;
	bool server_closed, client_closed;
	struct loop_timer deadline;
	bool timed_out;
};


static void stop_if_done(struct world *w)
{
	if (w->closed_streams >= w->expect_closed)
		loop_stop(w->loop);
}

static void server_stream_closed(struct h2stream *s, void *user, const struct h2stream_stats *st,
				 const char *error)
{
	(void)s;
	struct world *w = user;
	w->server_stats = *st;
	if (error)
		snprintf(w->server_error, sizeof(w->server_error), "%s", error);
	w->closed_streams++;
	stop_if_done(w);
}

static const struct h2stream_ops server_stream_ops = {.on_close = server_stream_closed};

static void on_request(struct h2conn *c, struct h2stream *s, const struct hbone_request *r)
{
	struct world *w = h2conn_owner(c);
	w->n_requests++;
	snprintf(w->authority, sizeof(w->authority), "%s", r->authority);
	snprintf(w->method, sizeof(w->method), "%s", r->method);
	snprintf(w->forwarded, sizeof(w->forwarded), "%s", r->forwarded ? r->forwarded : "");
	CHECK_STR(r->peer_id, CLIENT_ID);
	h2stream_set_ops(s, &server_stream_ops, w);
	if (w->respond_status != 200) {
		h2stream_respond(s, w->respond_status);
		return;
	}
	int sp[2];
	REQUIRE(hbt_tcp_pair(sp) == 0);
	w->upstream_app = sp[1];
	struct err e;
	if (h2stream_accept(s, sp[0], &e) < 0)
		test_fail(__FILE__, __LINE__, "accept: %s", e.msg);
}

static void conn_closed(struct h2conn *c, const char *why)
{
	struct world *w = h2conn_owner(c);
	(void)why;
	if (c == w->client) {
		w->client = NULL;
		w->client_closed = true;
	} else {
		w->server = NULL;
		w->server_closed = true;
	}
}

static const struct h2conn_ops server_ops = {.on_request = on_request, .on_closed = conn_closed};
static const struct h2conn_ops client_ops = {.on_closed = conn_closed};

static void client_response(struct h2stream *s, void *user, int status)
{
	(void)s;
	struct world *w = user;
	w->client_status = status;
}

static void client_closed(struct h2stream *s, void *user, const struct h2stream_stats *st,
			  const char *error)
{
	(void)s;
	struct world *w = user;
	w->client_stats = *st;
	if (error)
		snprintf(w->client_error, sizeof(w->client_error), "%s", error);
	w->closed_streams++;
	stop_if_done(w);
}

static const struct h2stream_ops client_stream_ops = {.on_response = client_response,
						      .on_close = client_closed};

static void on_deadline(struct loop_timer *t)
{
	struct world *w = container_of(t, struct world, deadline);
	w->timed_out = true;
	loop_stop(w->loop);
}

static bool world_init(struct world *w)
{
	memset(w, 0, sizeof(*w));
	struct err e;
	w->upstream_app = -1;
	w->respond_status = 200;
	w->loop = loop_new();
	if (!hbt_certs_init(&w->certs))
		return false;
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp) < 0)
		return false;
	w->client = h2conn_new(w->loop, H2_CLIENT, sp[0], w->certs.cctx, SERVER_ID, &client_ops, w,
			       "test client", &e);
	w->server = h2conn_new(w->loop, H2_SERVER, sp[1], w->certs.sctx, NULL, &server_ops, w,
			       "test server", &e);
	loop_timer_init(&w->deadline, on_deadline);
	loop_timer_arm(w->loop, &w->deadline, 20000);
	return w->client && w->server;
}

static void world_free(struct world *w)
{
	if (w->client)
		h2conn_abort(w->client, "test over");
	if (w->server)
		h2conn_abort(w->server, "test over");
	loop_timer_cancel(w->loop, &w->deadline);
	if (w->upstream_app >= 0)
		close(w->upstream_app);
	hbt_certs_free(&w->certs);
	loop_free(w->loop);
}

/* ---- apps in threads ---- */

struct app {
	int fd;
	size_t send_bytes;
	uint8_t seed;
	uint64_t got;
	uint64_t sum; /* position-weighted checksum of what was received */
	bool send_first; /* send all, shut down, then read; else read all first, then send */
	int err;
};

static uint8_t pattern(uint8_t seed, size_t i)
{
	return (uint8_t)(seed + i * 31 + (i >> 9));
}

static uint64_t expected_sum(uint8_t seed, size_t n)
{
	uint64_t s = 0;
	for (size_t i = 0; i < n; i++)
		s += (uint64_t)pattern(seed, i) * (i % 251 + 1);
	return s;
}

static void app_send(struct app *a)
{
	uint8_t buf[65536];
	for (size_t off = 0; off < a->send_bytes;) {
		size_t n = a->send_bytes - off < sizeof(buf) ? a->send_bytes - off : sizeof(buf);
		for (size_t i = 0; i < n; i++)
			buf[i] = pattern(a->seed, off + i);
		size_t done = 0;
		while (done < n) {
			ssize_t w = write(a->fd, buf + done, n - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				a->err = errno;
				return;
			}
			done += (size_t)w;
		}
		off += n;
	}
	shutdown(a->fd, SHUT_WR);
}

static void app_recv(struct app *a)
{
	uint8_t buf[65536];
	for (;;) {
		ssize_t n = read(a->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			a->err = errno;
			return;
		}
		if (n == 0)
			return;
		for (ssize_t i = 0; i < n; i++)
			a->sum += (uint64_t)buf[i] * ((a->got + (uint64_t)i) % 251 + 1);
		a->got += (uint64_t)n;
	}
}

static void *app_main(void *arg)
{
	struct app *a = arg;
	if (a->send_first) {
		app_send(a);
		app_recv(a);
	} else {
		app_recv(a);
		app_send(a);
	}
	return NULL;
}

static void set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/* ---- the server side starts its app when the stream is accepted ---- */

struct server_app {
	struct app app;
	pthread_t th;
	bool started;
};

static struct server_app *current_server_app;

static void start_server_app(struct world *w)
{
	if (!current_server_app || w->upstream_app < 0 || current_server_app->started)
		return;
	current_server_app->app.fd = w->upstream_app;
	set_blocking(w->upstream_app);
	pthread_create(&current_server_app->th, NULL, app_main, &current_server_app->app);
	current_server_app->started = true;
}

static void poll_server_app(struct loop_timer *t);
static struct loop_timer server_app_timer;
static struct world *server_app_world;

static void poll_server_app(struct loop_timer *t)
{
	start_server_app(server_app_world);
	if (!current_server_app->started)
		loop_timer_arm(server_app_world->loop, t, 1);
}

static int open_client_stream(struct world *w, int *app_fd)
{
	int ap[2];
	if (hbt_tcp_pair(ap) < 0)
		return -1;
	const char *headers[] = {"forwarded", "for=\"10.0.0.1:4242\"", "baggage", "k8s.namespace.name=a"};
	struct err e;
	struct h2stream *s = h2conn_open_stream(w->client, "10.0.0.2:8080", headers, 2, ap[0],
						&client_stream_ops, w, &e);
	if (!s) {
		test_fail(__FILE__, __LINE__, "open stream: %s", e.msg);
		close(ap[0]);
		close(ap[1]);
		return -1;
	}
	*app_fd = ap[1];
	set_blocking(ap[1]);
	return 0;
}

TEST(hbone_connect_carries_data_both_ways_with_half_close)
{
	struct world w;
	REQUIRE(world_init(&w));
	struct server_app sa = {.app = {.send_bytes = 3u << 20, .seed = 7, .send_first = false}};
	current_server_app = &sa;
	server_app_world = &w;
	loop_timer_init(&server_app_timer, poll_server_app);
	loop_timer_arm(w.loop, &server_app_timer, 1);
	int app_fd;
	REQUIRE(open_client_stream(&w, &app_fd) == 0);
	struct app ca = {.fd = app_fd, .send_bytes = 5u << 20, .seed = 3, .send_first = true};
	pthread_t cth;
	pthread_create(&cth, NULL, app_main, &ca);
	w.expect_closed = 2;
	loop_run(w.loop);
	loop_timer_cancel(w.loop, &server_app_timer);
	CHECK(!w.timed_out);
	pthread_join(cth, NULL);
	if (sa.started)
		pthread_join(sa.th, NULL);
	close(app_fd);
	CHECK_INT(w.n_requests, 1);
	CHECK_STR(w.method, "CONNECT");
	CHECK_STR(w.authority, "10.0.0.2:8080");
	CHECK_STR(w.forwarded, "for=\"10.0.0.1:4242\"");
	CHECK_INT(w.client_status, 200);
	CHECK_INT(sa.app.got, 5u << 20);
	CHECK(sa.app.sum == expected_sum(3, 5u << 20));
	CHECK_INT(ca.got, 3u << 20);
	CHECK(ca.sum == expected_sum(7, 3u << 20));
	CHECK_INT(w.client_stats.bytes_to_peer, 5u << 20);
	CHECK_INT(w.client_stats.bytes_from_peer, 3u << 20);
	CHECK_INT(w.server_stats.bytes_from_peer, 5u << 20);
	CHECK_MSG(!w.client_error[0], "client stream error: %s", w.client_error);
	CHECK_MSG(!w.server_error[0], "server stream error: %s", w.server_error);
	w.upstream_app = -1; /* closed by the server app thread's owner below */
	close(sa.app.fd);
	world_free(&w);
}

TEST(hbone_refusal_status_reaches_client_and_resets_app)
{
	struct world w;
	REQUIRE(world_init(&w));
	w.respond_status = 401;
	int app_fd;
	REQUIRE(open_client_stream(&w, &app_fd) == 0);
	w.expect_closed = 2;
	loop_run(w.loop);
	CHECK(!w.timed_out);
	CHECK_INT(w.client_status, 401);
	CHECK_CONTAINS(w.client_error, "401");
	/* The app sees a reset, not a clean EOF. */
	char b;
	ssize_t n = read(app_fd, &b, 1);
	CHECK_MSG(n < 0 && errno == ECONNRESET, "app read: %zd %s", n, strerror(errno));
	close(app_fd);
	world_free(&w);
}

TEST(hbone_upstream_reset_propagates_to_client_app)
{
	struct world w;
	REQUIRE(world_init(&w));
	int app_fd;
	REQUIRE(open_client_stream(&w, &app_fd) == 0);
	/* Run until the server accepted, then reset the upstream "app" socket. */
	for (int i = 0; i < 2000 && w.upstream_app < 0; i++) {
		loop_timer_arm(w.loop, &w.deadline, 1);
		loop_run(w.loop);
	}
	REQUIRE(w.upstream_app >= 0);
	w.timed_out = false;
	loop_timer_arm(w.loop, &w.deadline, 10000);
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(w.upstream_app, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(w.upstream_app);
	w.upstream_app = -1;
	w.expect_closed = 2;
	loop_run(w.loop);
	CHECK(!w.timed_out);
	CHECK(w.client_error[0] != 0);
	char b;
	ssize_t n = read(app_fd, &b, 1);
	CHECK_MSG(n < 0 && errno == ECONNRESET, "app read: %zd %s", n, strerror(errno));
	close(app_fd);
	world_free(&w);
}

TEST(hbone_client_rejects_wrong_server_identity)
{
	struct world w;
	REQUIRE(world_init(&w));
	/* Replace the client with one that expects another identity. */
	h2conn_abort(w.client, "replace");
	h2conn_abort(w.server, "replace");
	int sp[2];
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp) == 0);
	struct err e;
	w.client_closed = w.server_closed = false;
	w.client = h2conn_new(w.loop, H2_CLIENT, sp[0], w.certs.cctx,
			      "spiffe://cluster.local/ns/b/sa/someone-else", &client_ops, &w,
			      "test client", &e);
	w.server = h2conn_new(w.loop, H2_SERVER, sp[1], w.certs.sctx, NULL, &server_ops, &w, "test server",
			      &e);
	REQUIRE(w.client && w.server);
	int app_fd;
	REQUIRE(open_client_stream(&w, &app_fd) == 0);
	w.expect_closed = 1;
	loop_run(w.loop);
	CHECK(!w.timed_out);
	CHECK_CONTAINS(w.client_error, "someone-else");
	CHECK_INT(w.n_requests, 0);
	close(app_fd);
	world_free(&w);
}
