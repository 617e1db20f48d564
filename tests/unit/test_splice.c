/* The splice payload path (hbone/splice.c) on loopback TCP: the host has no kTLS, but the
 * frame discipline is the same on any socket: a DATA frame's header then exactly its
 * payload, resumed where a full tunnel socket stopped it, finished from a socket its stream
 * let go of, and the app socket's "how much, or EOF" answered without reading it. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hbone/splice.h"
#include "test.h"

/* A connected loopback TCP pair: *w writes, *r reads (both non-blocking). */
static int tcp_pair(int *w, int *r, int sndbuf)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0)
		return -1;
	*w = socket(AF_INET, SOCK_STREAM, 0);
	if (sndbuf)
		setsockopt(*w, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (connect(*w, (struct sockaddr *)&a, sizeof(a)) < 0)
		return -1;
	*r = accept(l, NULL, NULL);
	close(l);
	if (*r < 0)
		return -1;
	if (sndbuf)
		setsockopt(*r, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
	fcntl(*w, F_SETFL, O_NONBLOCK);
	fcntl(*r, F_SETFL, O_NONBLOCK);
	return 0;
}

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 7 + (i >> 8));
}

/* Write n pattern bytes (from offset off) into fd, waiting for room (bounded). */
static size_t write_pattern(int fd, size_t off, size_t n)
{
	uint8_t buf[4096];
	size_t done = 0;
	for (int spins = 0; done < n && spins < 100000; spins++) {
		size_t k = n - done < sizeof(buf) ? n - done : sizeof(buf);
		for (size_t i = 0; i < k; i++)
			buf[i] = pattern(off + done + i);
		ssize_t w = send(fd, buf, k, MSG_DONTWAIT);
		if (w > 0)
			done += (size_t)w;
		else
			poll(&(struct pollfd){.fd = fd, .events = POLLOUT}, 1, 10);
	}
	return done;
}

/* Read what is there (at most max) into out; returns the count. */
static size_t read_some(int fd, uint8_t *out, size_t max)
{
	size_t got = 0;
	while (got < max) {
		ssize_t n = recv(fd, out + got, max - got, MSG_DONTWAIT);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

static bool payload_ok(const uint8_t *p, size_t n, size_t off)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != pattern(off + i))
			return false;
	return true;
}

static const uint8_t HD[9] = {0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};

TEST(splice_frame_is_header_then_exactly_its_length_of_payload)
{
	int app_w, src, tun, peer;
	REQUIRE(tcp_pair(&app_w, &src, 0) == 0 && tcp_pair(&tun, &peer, 0) == 0);
	REQUIRE(write_pattern(app_w, 0, 100000) == 100000);
	struct h2splice *sp = h2splice_new();
	REQUIRE(sp);
	ssize_t len = 0;
	for (int i = 0; i < 200 && len < 65536; i++) { /* loopback delivers at once; bounded */
		len = h2splice_available(src, 65536);
		if (len < 65536)
			poll(NULL, 0, 5);
	}
	CHECK_INT(len, 65536);
	uint64_t count = 0;
	CHECK_INT(h2splice_send(sp, tun, HD, (size_t)len, src, &count), 0);
	CHECK_INT(count, 65536);
	CHECK(!h2splice_busy(sp));
	uint8_t *got = malloc(70000);
	size_t n = 0;
	for (int i = 0; i < 200 && n < 9 + 65536; i++) {
		n += read_some(peer, got + n, 70000 - n);
		if (n < 9 + 65536)
			poll(NULL, 0, 5);
	}
	CHECK_INT(n, 9 + 65536); /* not one byte more: the rest stays in the app socket */
	CHECK(memcmp(got, HD, 9) == 0);
	CHECK(payload_ok(got + 9, 65536, 0));
	int left = 0;
	ioctl(src, FIONREAD, &left);
	CHECK_INT(left, 100000 - 65536);
	free(got);
	h2splice_free(sp);
	close(app_w), close(src), close(tun), close(peer);
}

/* Drive a frame of len bytes through a small tunnel, reading the peer side slowly; after
 * the first "tunnel full", optionally release src as a stream would. Returns the bytes the
 * peer saw (header + payload) in *out. */
static int frame_through_full_tunnel(size_t len, bool release, uint8_t **out, size_t *got,
				     uint64_t *count, int *src_out, int *blocked)
{
	int app_w, src, tun, peer;
	if (tcp_pair(&app_w, &src, 0) || tcp_pair(&tun, &peer, 16384))
		return -1;
	*src_out = src;
	struct h2splice *sp = h2splice_new();
	if (!sp || write_pattern(app_w, 0, len) != len)
		return -1;
	for (int i = 0; i < 200 && h2splice_available(src, len) < (ssize_t)len; i++)
		poll(NULL, 0, 5);
	*out = malloc(len + 9);
	*got = 0;
	*blocked = 0;
	int r = -1;
	time_t t0 = time(NULL);
	for (int round = 0; round < 100000 && time(NULL) - t0 < 20; round++) {
		r = h2splice_send(sp, tun, HD, len, src, count);
		if (r != 1)
			break;
		if ((*blocked)++ == 0 && release && !h2splice_release(sp, src, false))
			return -1;
		CHECK(h2splice_busy(sp));
		poll(&(struct pollfd){.fd = peer, .events = POLLIN}, 1, 10);
		*got += read_some(peer, *out + *got, len + 9 - *got);
	}
	for (int i = 0; i < 200 && *got < len + 9; i++) {
		*got += read_some(peer, *out + *got, len + 9 - *got);
		if (*got < len + 9)
			poll(&(struct pollfd){.fd = peer, .events = POLLIN}, 1, 10);
	}
	*got += read_some(peer, *out + *got, len + 9 - *got);
	h2splice_free(sp);
	close(app_w), close(tun), close(peer);
	return r;
}

TEST(splice_frame_resumes_where_the_full_tunnel_stopped_it)
{
	size_t len = 1u << 20, got = 0;
	uint8_t *out = NULL;
	uint64_t count = 0;
	int src = -1, blocked = 0;
	CHECK_INT(frame_through_full_tunnel(len, false, &out, &got, &count, &src, &blocked), 0);
	CHECK_MSG(blocked > 0, "the 16 KiB tunnel never filled up: nothing was resumed");
	CHECK_INT(got, len + 9);
	CHECK(out && memcmp(out, HD, 9) == 0);
	CHECK(out && payload_ok(out + 9, len, 0));
	CHECK_INT(count, len);
	free(out);
	close(src);
}

TEST(splice_socket_let_go_mid_frame_is_finished_then_closed)
{
	size_t len = 1u << 20, got = 0;
	uint8_t *out = NULL;
	uint64_t count = 0;
	int src = -1, blocked = 0;
	CHECK_INT(frame_through_full_tunnel(len, true, &out, &got, &count, &src, &blocked), 0);
	CHECK_MSG(blocked > 0, "the 16 KiB tunnel never filled up: nothing was released");
	CHECK_INT(got, len + 9); /* the frame was still finished, byte for byte */
	CHECK(out && payload_ok(out + 9, len, 0));
	CHECK_MSG(count < len, "bytes after the stream let go were counted for it");
	errno = 0;
	CHECK_MSG(fcntl(src, F_GETFD) < 0 && errno == EBADF,
		  "the released socket is closed once its frame is done");
	free(out);
}

TEST(splice_available_tells_end_of_stream_from_not_yet)
{
	int app_w, src;
	REQUIRE(tcp_pair(&app_w, &src, 0) == 0);
	CHECK_INT(h2splice_available(src, 1000), -EAGAIN);
	REQUIRE(write_pattern(app_w, 0, 10) == 10);
	ssize_t n = -EAGAIN;
	for (int i = 0; i < 200 && n == -EAGAIN; i++) {
		n = h2splice_available(src, 4);
		if (n == -EAGAIN)
			poll(NULL, 0, 5);
	}
	CHECK_INT(n, 4); /* capped by what the frame may carry */
	uint8_t b[10];
	REQUIRE(read_some(src, b, 10) == 10);
	shutdown(app_w, SHUT_WR);
	n = -EAGAIN;
	for (int i = 0; i < 200 && n == -EAGAIN; i++) {
		n = h2splice_available(src, 1000);
		if (n == -EAGAIN)
			poll(NULL, 0, 5);
	}
	CHECK_INT(n, 0);
	close(app_w), close(src);
}
