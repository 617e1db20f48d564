/* Fuzz target: the node ports' HTTP/1.1 request parser (agent/obs/http.c: metrics 15020,
 * readiness 15021, admin 15000), driven through its public API over a real loopback
 * connection: the input is sent as the request, the client half-closes, and the agent's
 * loop runs until the server has answered and closed.
 * Properties: the server always ends the exchange (answer or close, no hang); whatever it
 * sends is one HTTP/1.1 response with a status line; the handler only ever sees GET/HEAD
 * and a path starting with '/'. */
#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "obs/http.h"

#define GUARD_MS 4000 /* the server's own request timeout is 10 s: a hang ends here first */

static struct loop *loop;
static struct http_server *server;
static uint16_t port;

struct client {
	int fd;
	struct loop_io io;
	struct loop_timer guard;
	struct sbuf got;
	bool done, hung;
};

static void handler(void *arg, const char *method, const char *path, const char *query,
		    struct http_response *resp)
{
	(void)arg;
	FUZZ_ASSERT(strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0,
		    "handler got method \"%s\"", method);
	FUZZ_ASSERT(path[0] == '/', "handler got path \"%s\"", path);
	FUZZ_ASSERT(query != NULL, "query NULL");
	sbuf_printf(&resp->body, "path %zu query %zu\n", strlen(path), strlen(query));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_setup("fuzz_http", LOG_ERROR, NULL);
	loop = loop_new();
	struct err e;
	server = http_server_new(loop, "127.0.0.1", 0, handler, NULL, &e);
	if (!server) {
		fprintf(stderr, "fuzz_http: %s\n", e.msg);
		abort();
	}
	port = http_server_port(server);
	return 0;
}

static void client_io(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct client *c = container_of(io, struct client, io);
	char buf[4096];
	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0) {
			sbuf_append(&c->got, buf, (size_t)n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		c->done = true; /* EOF or reset: the server ended the exchange */
		loop_stop(loop);
		return;
	}
}

static void client_guard(struct loop_timer *t)
{
	struct client *c = container_of(t, struct client, guard);
	c->hung = true;
	loop_stop(loop);
}

static void check_response(const struct sbuf *got)
{
	if (got->len == 0)
		return; /* closed without an answer (e.g. an incomplete request) */
	FUZZ_ASSERT(got->len >= 12 && memcmp(got->s, "HTTP/1.1 ", 9) == 0 &&
			    got->s[9] >= '1' && got->s[9] <= '5',
		    "response does not start with a status line: %.40s", got->s);
}

/* Non-blocking connect: libFuzzer's timer signal interrupts a blocking one (EINTR). The
 * server's listen queue answers the handshake by itself, so waiting here is safe. */
static int connect_server(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (rc < 0 && errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		for (int i = 0; i < 100 && poll(&p, 1, 100) <= 0; i++)
			;
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		rc = (p.revents & POLLOUT) && !soerr ? 0 : -1;
		errno = soerr ? soerr : ETIMEDOUT;
	}
	FUZZ_ASSERT(rc == 0, "connect 127.0.0.1:%u: %s", port, strerror(errno));
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct client c = {.fd = connect_server()};
	sbuf_init(&c.got);
	/* The whole input fits the socket buffers (libFuzzer's -max_len is far below them);
	 * the server may already have answered and closed: errors are its business. */
	if (size)
		(void)send(c.fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
	shutdown(c.fd, SHUT_WR);
	loop_io_init(&c.io);
	loop_timer_init(&c.guard, client_guard);
	loop_io_add(loop, &c.io, c.fd, EPOLLIN, client_io);
	loop_timer_arm(loop, &c.guard, GUARD_MS);
	loop_run(loop);
	loop_io_del(loop, &c.io);
	loop_timer_cancel(loop, &c.guard);
	/* Close with a reset: the client closed first (its FIN went with the request), so a
	 * normal close would leave it in TIME_WAIT, and thousands of runs a second would use
	 * up the ephemeral ports. */
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(c.fd);
	FUZZ_ASSERT(!c.hung, "no answer and no close within %d ms", GUARD_MS);
	check_response(&c.got);
	sbuf_free(&c.got);
	return 0;
}
