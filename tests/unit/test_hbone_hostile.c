/* moat's HBONE client against a hostile destination: a raw HTTP/2 peer in a thread (real TLS
 * with the destination's certificate from the built-in CA, frames written by hand) that
 * never answers, answers 1xx first, sends PUSH_PROMISE, resets with NO_ERROR, answers 200
 * and goes silent, or ignores PINGs. Each case proves one deadline or one reason. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "core/loop.h"
#include "hbone/h2.h"
#include "identity/identity.h"
#include "proxy/sockdiag.h"
#include "test.h"
#include "test_hbone_helpers.h"

enum peer_mode {
	PEER_NEVER,        /* never answers the CONNECT */
	PEER_INFO_THEN_OK, /* 100, then 200, then echoes */
	PEER_PUSH,         /* PUSH_PROMISE (the client disabled push) */
	PEER_RST_NO_ERROR, /* RST_STREAM(NO_ERROR) instead of a response */
	PEER_OK_SILENT,    /* 200, then nothing */
	PEER_EVEN_HEADERS, /* HEADERS on stream 2 (even: the server never opens streams) */
	PEER_WINDOW_OVERFLOW, /* WINDOW_UPDATE pushing the connection window past 2^31-1 */
	PEER_BAD_HEADER_NAME, /* a response with an upper-case header name */
	PEER_HUGE_HEADER,  /* a response header field of 100 KiB (nghttp2 takes at most 64 KiB) */
};

struct peer {
	SSL_CTX *ctx;
	int fd;
	enum peer_mode mode;
	bool answer_ping;
	pthread_t th;
};

struct hworld {
	struct loop *loop;
	struct hbt_certs certs;
	struct h2conn *client;
	struct peer peer;
	int status, n_responses;
	char error[512], conn_why[512];
	struct h2stream_stats stats;
	bool stream_closed;
	struct loop_timer stop;
};

/* ---- the raw peer ---- */

static bool peer_read_full(SSL *ssl, uint8_t *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		int r = SSL_read(ssl, buf + got, (int)(n - got));
		if (r <= 0)
			return false;
		got += (size_t)r;
	}
	return true;
}

static void peer_frame(SSL *ssl, uint8_t type, uint8_t flags, uint32_t sid, const void *payload,
		       size_t len)
{
	uint8_t h[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len, type, flags,
			(uint8_t)(sid >> 24 & 0x7f), (uint8_t)(sid >> 16), (uint8_t)(sid >> 8),
			(uint8_t)sid};
	uint8_t *buf = malloc(9 + len);
	memcpy(buf, h, 9);
	if (len)
		memcpy(buf + 9, payload, len);
	SSL_write(ssl, buf, (int)(9 + len));
	free(buf);
}

enum { F_DATA = 0, F_HEADERS = 1, F_RST = 3, F_SETTINGS = 4, F_PUSH = 5, F_PING = 6,
       F_WINDOW_UPDATE = 8 };
enum { FL_END_STREAM = 1, FL_ACK = 1, FL_END_HEADERS = 4 };

static void peer_answer(SSL *ssl, enum peer_mode mode, uint32_t sid)
{
	static const uint8_t status_200[] = {0x88};                 /* indexed :status 200 */
	static const uint8_t status_100[] = {0x08, 3, '1', '0', '0'}; /* literal, name idx 8 */
	switch (mode) {
	case PEER_NEVER:
		break;
	case PEER_INFO_THEN_OK:
		peer_frame(ssl, F_HEADERS, FL_END_HEADERS, sid, status_100, sizeof(status_100));
		peer_frame(ssl, F_HEADERS, FL_END_HEADERS, sid, status_200, sizeof(status_200));
		break;
	case PEER_PUSH: {
		/* promised stream 2; GET https / (indexed), :authority "x" */
		static const uint8_t pp[] = {0, 0, 0, 2, 0x82, 0x87, 0x84, 0x41, 1, 'x'};
		peer_frame(ssl, F_PUSH, FL_END_HEADERS, sid, pp, sizeof(pp));
		break;
	}
	case PEER_RST_NO_ERROR: {
		static const uint8_t code[4] = {0, 0, 0, 0};
		peer_frame(ssl, F_RST, 0, sid, code, sizeof(code));
		break;
	}
	case PEER_OK_SILENT:
		peer_frame(ssl, F_HEADERS, FL_END_HEADERS, sid, status_200, sizeof(status_200));
		break;
	case PEER_EVEN_HEADERS:
		peer_frame(ssl, F_HEADERS, FL_END_HEADERS, 2, status_200, sizeof(status_200));
		break;
	case PEER_WINDOW_OVERFLOW: {
		static const uint8_t inc[4] = {0x7f, 0xff, 0xff, 0xff};
		peer_frame(ssl, F_WINDOW_UPDATE, 0, 0, inc, sizeof(inc));
		break;
	}
	case PEER_HUGE_HEADER: {
		/* :status 200, then "x: <100 KiB>" literal, length as an HPACK 7-bit prefix integer */
		size_t vlen = 100 << 10, n = 0;
		uint8_t *hb = malloc(vlen + 16);
		hb[n++] = 0x88;
		hb[n++] = 0x00;
		hb[n++] = 1;
		hb[n++] = 'x';
		hb[n++] = 0x7f;
		size_t v = vlen - 127;
		for (; v >= 128; v >>= 7)
			hb[n++] = (uint8_t)(0x80 | (v & 0x7f));
		hb[n++] = (uint8_t)v;
		memset(hb + n, 'v', vlen);
		peer_frame(ssl, F_HEADERS, FL_END_HEADERS, sid, hb, n + vlen);
		free(hb);
		break;
	}
	case PEER_BAD_HEADER_NAME: {
		/* :status 200, then a literal header (no indexing, new name) "Bad: x" */
		static const uint8_t hb[] = {0x88, 0x00, 3, 'B', 'a', 'd', 1, 'x'};
		peer_frame(ssl, F_HEADERS, FL_END_HEADERS, sid, hb, sizeof(hb));
		break;
	}
	}
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	SSL *ssl = SSL_new(p->ctx);
	SSL_set_fd(ssl, p->fd);
	uint8_t buf[70000];
	if (SSL_accept(ssl) != 1 || !peer_read_full(ssl, buf, 24))
		goto out;
	peer_frame(ssl, F_SETTINGS, 0, 0, NULL, 0);
	/* Bounded: the client ends the connection when the test is over. */
	for (int frames = 0; frames < 10000; frames++) {
		if (!peer_read_full(ssl, buf, 9))
			break;
		size_t len = (size_t)buf[0] << 16 | (size_t)buf[1] << 8 | buf[2];
		uint8_t type = buf[3], flags = buf[4];
		uint32_t sid = ((uint32_t)buf[5] & 0x7f) << 24 | (uint32_t)buf[6] << 16 |
			       (uint32_t)buf[7] << 8 | buf[8];
		if (len > sizeof(buf) || !peer_read_full(ssl, buf, len))
			break;
		if (type == F_SETTINGS && !(flags & FL_ACK))
			peer_frame(ssl, F_SETTINGS, FL_ACK, 0, NULL, 0);
		else if (type == F_PING && !(flags & FL_ACK) && p->answer_ping)
			peer_frame(ssl, F_PING, FL_ACK, 0, buf, len);
		else if (type == F_HEADERS)
			peer_answer(ssl, p->mode, sid);
		else if (type == F_DATA && p->mode == PEER_INFO_THEN_OK) /* echo */
			peer_frame(ssl, F_DATA, flags & FL_END_STREAM, sid, buf, len);
	}
out:
	SSL_free(ssl);
	close(p->fd);
	return NULL;
}

/* ---- the client side ---- */

static void hw_conn_closed(struct h2conn *c, const char *why)
{
	struct hworld *w = h2conn_owner(c);
	snprintf(w->conn_why, sizeof(w->conn_why), "%s", why ? why : "");
	w->client = NULL;
}

static const struct h2conn_ops hw_client_ops = {.on_closed = hw_conn_closed};

static void hw_response(struct h2stream *s, void *user, int status)
{
	(void)s;
	struct hworld *w = user;
	w->status = status;
	w->n_responses++;
}

static void hw_stream_closed(struct h2stream *s, void *user, const struct h2stream_stats *st,
			     const char *error)
{
	(void)s;
	struct hworld *w = user;
	w->stats = *st;
	w->stream_closed = true;
	snprintf(w->error, sizeof(w->error), "%s", error ? error : "");
	loop_stop(w->loop);
}

static bool hw_gone(struct h2stream *s, void *user, int fd)
{
	(void)s;
	(void)user;
	return sockdiag_peer_gone(-1, fd) == 1;
}

static const struct h2stream_ops hw_stream_ops = {
	.on_response = hw_response, .on_close = hw_stream_closed, .local_gone = hw_gone};

static void hw_stop(struct loop_timer *t)
{
	loop_stop(container_of(t, struct hworld, stop)->loop);
}

static bool hw_init(struct hworld *w, enum peer_mode mode, bool answer_ping,
		    const struct h2_limits *lim)
{
	memset(w, 0, sizeof(*w));
	struct err e;
	w->loop = loop_new();
	if (!hbt_certs_init(&w->certs))
		return false;
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
		return false;
	w->peer = (struct peer){.ctx = w->certs.sctx, .fd = sp[1], .mode = mode, .answer_ping = answer_ping};
	pthread_create(&w->peer.th, NULL, peer_main, &w->peer);
	w->client = h2conn_new(w->loop, H2_CLIENT, sp[0], w->certs.cctx, HBT_SERVER_ID, &hw_client_ops, w,
			       "hostile peer", &e);
	if (!w->client)
		return false;
	h2conn_set_limits(w->client, lim);
	loop_timer_init(&w->stop, hw_stop);
	return true;
}

/* Run the loop until a stream closes or ms pass. */
static void hw_run(struct hworld *w, uint64_t ms)
{
	loop_timer_arm(w->loop, &w->stop, ms);
	loop_run(w->loop);
	loop_timer_cancel(w->loop, &w->stop);
}

static void hw_free(struct hworld *w)
{
	if (w->client)
		h2conn_abort(w->client, "test over");
	pthread_join(w->peer.th, NULL);
	hbt_certs_free(&w->certs);
	loop_free(w->loop);
}

/* Open a CONNECT relaying an app socket; returns the app's (blocking) end. */
static int hw_open(struct hworld *w)
{
	int ap[2];
	if (hbt_tcp_pair(ap) < 0)
		return -1;
	struct err e;
	if (!h2conn_open_stream(w->client, "10.0.0.2:8080", NULL, 0, ap[0], &hw_stream_ops, w, &e)) {
		test_fail(__FILE__, __LINE__, "open stream: %s", e.msg);
		close(ap[0]);
		close(ap[1]);
		return -1;
	}
	return ap[1];
}

static bool app_was_reset(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	if (poll(&p, 1, 2000) != 1)
		return false;
	char b;
	return read(fd, &b, 1) < 0 && errno == ECONNRESET;
}

TEST(hbone_client_skips_1xx_and_relays_after_the_final_200)
{
	struct hworld w;
	struct h2_limits lim = {.response_ms = 5000, .suspect_ms = 0};
	REQUIRE(hw_init(&w, PEER_INFO_THEN_OK, true, &lim));
	int app = hw_open(&w);
	REQUIRE(app >= 0);
	REQUIRE(write(app, "hello", 5) == 5);
	shutdown(app, SHUT_WR);
	hw_run(&w, 5000);
	char buf[16] = {0};
	ssize_t n = read(app, buf, sizeof(buf) - 1);
	CHECK_INT(w.n_responses, 1);
	CHECK_INT(w.status, 200);
	CHECK_MSG(!w.error[0], "stream error: %s", w.error);
	CHECK_INT(n, 5);
	CHECK_STR(buf, "hello");
	CHECK_INT(w.stats.bytes_to_peer, 5);
	CHECK_INT(w.stats.bytes_from_peer, 5);
	close(app);
	hw_free(&w);
}

TEST(hbone_client_resets_a_connect_never_answered_at_the_response_deadline)
{
	struct hworld w;
	struct h2_limits lim = {.response_ms = 300, .suspect_ms = 0};
	REQUIRE(hw_init(&w, PEER_NEVER, true, &lim));
	int app = hw_open(&w);
	REQUIRE(app >= 0);
	hw_run(&w, 10000);
	CHECK(w.stream_closed);
	CHECK_CONTAINS(w.error, "no response to CONNECT within 300 ms");
	CHECK(app_was_reset(app));
	CHECK_INT(h2conn_waiting(w.client), 0);
	close(app);
	hw_free(&w);
}

TEST(hbone_client_says_why_after_nghttp2_sends_goaway_for_push_promise)
{
	struct hworld w;
	struct h2_limits lim = {.response_ms = 5000};
	REQUIRE(hw_init(&w, PEER_PUSH, true, &lim));
	int app = hw_open(&w);
	REQUIRE(app >= 0);
	hw_run(&w, 5000);
	CHECK(w.stream_closed);
	CHECK_CONTAINS(w.error, "moatd sent GOAWAY (PROTOCOL_ERROR)");
	CHECK_CONTAINS(w.error, "PUSH_PROMISE");
	CHECK(w.client == NULL);
	CHECK_CONTAINS(w.conn_why, "PUSH_PROMISE");
	close(app);
	hw_free(&w);
}

TEST(hbone_client_reports_rst_no_error_before_a_response_as_an_error)
{
	struct hworld w;
	struct h2_limits lim = {.response_ms = 5000};
	REQUIRE(hw_init(&w, PEER_RST_NO_ERROR, true, &lim));
	int app = hw_open(&w);
	REQUIRE(app >= 0);
	hw_run(&w, 5000);
	CHECK(w.stream_closed);
	CHECK_CONTAINS(w.error, "stream closed before a response");
	CHECK_CONTAINS(w.error, "by the peer");
	CHECK(app_was_reset(app));
	close(app);
	hw_free(&w);
}

TEST(hbone_client_stops_using_a_connection_that_ignores_ping_after_a_stream_waits)
{
	for (int answers = 0; answers < 2; answers++) {
		struct hworld w;
		struct h2_limits lim = {.response_ms = 5000, .suspect_ms = 300};
		REQUIRE(hw_init(&w, PEER_NEVER, answers, &lim));
		uint64_t t0 = now_ms();
		int app = hw_open(&w);
		REQUIRE(app >= 0);
		hw_run(&w, 100);
		/* Only an observation made before the deadline says anything (a loaded machine
		 * may stall this thread past it). */
		if (now_ms() - t0 < (uint64_t)lim.suspect_ms)
			CHECK_MSG(h2conn_usable(w.client), "usable before the suspicion deadline");
		hw_run(&w, 800);
		/* Silent (no PING answer): suspect, no new streams. Answering: usable again. */
		CHECK_MSG(h2conn_usable(w.client) == (answers == 1),
			  "usable=%d after a stream waited 900 ms, peer answers PING: %d",
			  h2conn_usable(w.client), answers);
		CHECK(!w.stream_closed);
		close(app);
		hw_free(&w);
	}
}

TEST(hbone_client_resets_a_waiting_connect_when_the_app_closes)
{
	struct hworld w;
	struct h2_limits lim = {.response_ms = 8000, .suspect_ms = 0};
	REQUIRE(hw_init(&w, PEER_NEVER, true, &lim));
	int app = hw_open(&w);
	REQUIRE(app >= 0);
	hw_run(&w, 100);
	CHECK(!w.stream_closed);
	close(app); /* FIN, and the socket is gone (orphaned) */
	hw_run(&w, 5000);
	CHECK(w.stream_closed);
	CHECK_CONTAINS(w.error, "the app closed its connection while the CONNECT waited");
	CHECK_INT(h2conn_waiting(w.client), 0);
	hw_free(&w);
}

TEST(hbone_client_keeps_a_waiting_connect_when_the_app_only_half_closes)
{
	struct hworld w;
	struct h2_limits lim = {.response_ms = 600, .suspect_ms = 0};
	REQUIRE(hw_init(&w, PEER_NEVER, true, &lim));
	int app = hw_open(&w);
	REQUIRE(app >= 0);
	REQUIRE(write(app, "req", 3) == 3);
	shutdown(app, SHUT_WR); /* request sent, waits for the answer */
	hw_run(&w, 5000);
	CHECK(w.stream_closed);
	/* Ended by the response deadline, not by the half-close. */
	CHECK_CONTAINS(w.error, "no response to CONNECT within 600 ms");
	close(app);
	hw_free(&w);
}

TEST(hbone_stream_idle_deadline_resets_an_established_stream_carrying_nothing)
{
	struct hworld w;
	struct h2_limits lim = {.response_ms = 5000, .stream_idle_ms = 300};
	REQUIRE(hw_init(&w, PEER_OK_SILENT, true, &lim));
	int app = hw_open(&w);
	REQUIRE(app >= 0);
	hw_run(&w, 5000);
	CHECK_INT(w.status, 200);
	CHECK(w.stream_closed);
	CHECK_CONTAINS(w.error, "idle: no bytes either way");
	CHECK(app_was_reset(app));
	close(app);
	hw_free(&w);
}

TEST(sockdiag_tells_a_closed_app_from_a_half_closed_one)
{
	int sv[2];
	REQUIRE(hbt_tcp_pair(sv) == 0);
	CHECK_INT(sockdiag_peer_gone(-1, sv[0]), 0);
	shutdown(sv[1], SHUT_WR);
	CHECK_INT(sockdiag_peer_gone(-1, sv[0]), 0);
	close(sv[1]);
	CHECK_INT(sockdiag_peer_gone(-1, sv[0]), 1);
	close(sv[0]);
}

TEST(addr_port_parse_takes_strict_decimal_ports_only)
{
	struct moat_addr a;
	uint16_t port = 0;
	CHECK(addr_port_parse("10.0.0.2:8080", &a, &port) && port == 8080);
	CHECK(addr_port_parse("[fd00::2]:1", &a, &port) && port == 1);
	CHECK(!addr_port_parse("10.0.0.2:08080", &a, &port));
	CHECK(!addr_port_parse("10.0.0.2:+8080", &a, &port));
	CHECK(!addr_port_parse("10.0.0.2: 8080", &a, &port));
	CHECK(!addr_port_parse("10.0.0.2:-1", &a, &port));
	CHECK(!addr_port_parse("10.0.0.2:", &a, &port));
	CHECK(!addr_port_parse("10.0.0.2:0", &a, &port));
	CHECK(!addr_port_parse("10.0.0.2:99999999999999999999", &a, &port));
	CHECK(!addr_port_parse("[fd00::2]:0080", &a, &port));
}

/* nghttp2 ends the connection (GOAWAY) or the stream (RST_STREAM) on its own; the reason is
 * nghttp2's, and the reset is never blamed on the peer. */
TEST(hbone_client_names_nghttp2s_reason_for_each_protocol_violation)
{
	static const struct {
		enum peer_mode mode;
		const char *want1, *want2;
	} cases[] = {
		{PEER_EVEN_HEADERS, "moatd sent GOAWAY (PROTOCOL_ERROR)", "HEADERS"},
		{PEER_WINDOW_OVERFLOW, "moatd sent GOAWAY (FLOW_CONTROL_ERROR)", "WINDOW_UPDATE"},
		{PEER_BAD_HEADER_NAME, "moatd reset the stream (HTTP/2 error PROTOCOL_ERROR)", "HEADERS"},
		{PEER_HUGE_HEADER, "moatd sent GOAWAY (COMPRESSION_ERROR)", "header field over 64 KiB"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct hworld w;
		struct h2_limits lim = {.response_ms = 5000};
		REQUIRE(hw_init(&w, cases[i].mode, true, &lim));
		int app = hw_open(&w);
		REQUIRE(app >= 0);
		hw_run(&w, 5000);
		CHECK_MSG(w.stream_closed, "case %zu: stream still open", i);
		CHECK_CONTAINS(w.error, cases[i].want1);
		CHECK_CONTAINS(w.error, cases[i].want2);
		CHECK_MSG(!strstr(w.error, "by peer"), "case %zu: %s", i, w.error);
		close(app);
		hw_free(&w);
	}
}
