/* join_verdict (sk_skb stream verdict on the `joined` sockhash) on real sockets: two
 * connections into a pod netns, their accepted ends joined as moatd joins a same-node
 * connection. What one client sends comes out at the other, both ways, including what was
 * sent before the join; nothing reaches the joined sockets' user-space receive queues; the
 * kernel counts the bytes it moved; unjoined sockets carry nothing. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/netns.h"
#include "core/util.h"
#include "test.h"
#include "world.h"

#define JOIN_PORT 7071

/* A blocking client in the pod netns, connected to 127.0.0.1:JOIN_PORT. */
static int client_in(struct world *w)
{
	struct err e;
	int fd = netns_socket(w->netns_fd, AF_INET, SOCK_STREAM, 0, &e);
	if (fd < 0) {
		test_fail(__FILE__, __LINE__, "client socket: %s", e.msg);
		return -1;
	}
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(JOIN_PORT),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		test_fail(__FILE__, __LINE__, "connect 127.0.0.1:%d: %s", JOIN_PORT, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Read exactly len bytes within timeout_ms (bounded); returns the count read. */
static size_t read_exact(int fd, char *buf, size_t len, int timeout_ms)
{
	size_t got = 0;
	for (int round = 0; got < len && round < 1000; round++) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, timeout_ms) <= 0)
			break;
		ssize_t n = recv(fd, buf + got, len - got, MSG_DONTWAIT);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

static bool nothing_queued(int fd)
{
	char c;
	return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

static void joined_body(struct world *w)
{
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", JOIN_PORT);
	REQUIRE(lsn >= 0);
	int c1 = client_in(w), c2 = client_in(w);
	REQUIRE(c1 >= 0 && c2 >= 0);
	int s[2] = {world_accept(w, lsn, 2000), world_accept(w, lsn, 2000)};
	REQUIRE(s[0] >= 0 && s[1] >= 0);

	/* sent before the join: queued on s[0], must still come out at c2 */
	CHECK_INT(send(c1, "early;", 6, 0), 6);
	usleep(1000 * 20);
	uint64_t cookie[2];
	struct err e = {{0}};
	int rc = dataplane_join(w->dp, s, cookie, &e);
	CHECK_MSG(rc == 0, "dataplane_join: %s", e.msg);
	REQUIRE(rc == 0);

	static char big[256 * 1024], back[256 * 1024];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + 3);
	char head[6];
	CHECK_INT((long)read_exact(c2, head, 6, 2000), 6);
	CHECK(memcmp(head, "early;", 6) == 0);
	size_t sent = 0, got = 0;
	for (int round = 0; got < sizeof(big) && round < 5000; round++) {
		ssize_t n = sent < sizeof(big)
				    ? send(c1, big + sent, sizeof(big) - sent, MSG_DONTWAIT)
				    : 0;
		if (n > 0)
			sent += (size_t)n;
		got += read_exact(c2, back + got, sent - got, 20);
	}
	CHECK_INT((long)got, (long)sizeof(big));
	CHECK(memcmp(back, big, sizeof(big)) == 0);
	CHECK_INT((long)sent, (long)sizeof(big));
	/* the other way */
	CHECK_INT(send(c2, "pong", 4, 0), 4);
	char pong[4];
	CHECK_INT((long)read_exact(c1, pong, 4, 2000), 4);
	CHECK(memcmp(pong, "pong", 4) == 0);

	CHECK(nothing_queued(s[0]));
	CHECK(nothing_queued(s[1]));
	uint64_t bytes[2];
	dataplane_unjoin(w->dp, cookie, bytes);
	CHECK_INT((long)bytes[0], (long)(6 + sizeof(big)));
	CHECK_INT((long)bytes[1], 4L);
	struct moat_stats st;
	CHECK(dataplane_stats(w->dp, &st) == 0);
	CHECK(st.join_redirected > 0);
	close(c1);
	close(c2);
}

TEST(joined_sockets_carry_bytes_both_ways_in_the_kernel)
{
	struct world w;
	if (world_up(&w, W_NETNS) == 0)
		joined_body(&w);
	world_down(&w);
}

/* Joining refuses what the kernel cannot redirect (a TCP socket that is not connected) and
 * leaves nothing half-joined: the socket that went in first is taken out again. */
static void refused_body(struct world *w)
{
	int lsn = world_listen(w, w->netns_fd, "127.0.0.1", JOIN_PORT);
	REQUIRE(lsn >= 0);
	int c1 = client_in(w);
	REQUIRE(c1 >= 0);
	int s1 = world_accept(w, lsn, 2000);
	REQUIRE(s1 >= 0);
	struct err se;
	int loose = netns_socket(w->netns_fd, AF_INET, SOCK_STREAM, 0, &se);
	REQUIRE(loose >= 0);
	int fds[2] = {s1, loose};
	uint64_t cookie[2];
	struct err e = {{0}};
	CHECK(dataplane_join(w->dp, fds, cookie, &e) < 0);
	CHECK_CONTAINS(e.msg, "joined");
	/* s1 is not left in the map: what c1 sends stays readable on s1 */
	CHECK_INT(send(c1, "x", 1, 0), 1);
	char c;
	CHECK_INT((long)read_exact(s1, &c, 1, 2000), 1);
	close(c1);
	close(loose);
}

TEST(joining_an_unconnected_socket_is_refused_and_nothing_stays_joined)
{
	struct world w;
	if (world_up(&w, W_NETNS) == 0)
		refused_body(&w);
	world_down(&w);
}
