/* moat-probe: a TCP client/server pair that proves bytes arrive intact, in both directions,
 * between two points of the e2e lab, and reports exactly how a connection failed.
 *
 *   moat-probe serve --port P [--bind ADDR] [--send-bytes N] [--max-conns K]
 *                    [--timeout S] [--quiet]
 *   moat-probe connect HOST:PORT [--send-bytes N] [--expect-bytes N] [--seed N]
 *                    [--timeout S] [--json]
 *
 * The exchange: the client sends N bytes of a deterministic stream and shuts its write side;
 * the server reads to EOF while hashing, answers one header line
 *   "sha256=<hex of what I received> bytes=<n>\n"
 * followed by its own --send-bytes of the deterministic stream, and closes. The client checks
 * that the server hashed exactly what was sent and that the response equals the stream it
 * expects.
 *
 * The deterministic stream: splitmix64 outputs written little-endian, 8 bytes per step, from
 * a 64-bit seed. The client's seed is --seed (default: random per connection, so that two
 * concurrent connections never carry the same bytes). The server seeds its response with the
 * first 8 bytes it received read as a little-endian u64 (or 0 when fewer than 8 arrived), so
 * the response depends on the request: a relay that crossed two connections is caught.
 *
 * Everything is bounded: connect and every wait for progress time out (--timeout, 10 s). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define IO_CHUNK (64 * 1024)
#define HEADER_MAX 128
#define DEFAULT_TIMEOUT_S 10
#define MAX_CONNS 1024

/* Exit codes of `connect` (documented in --help). */
enum probe_exit {
	EXIT_OK = 0,
	EXIT_USAGE = 2,      /* bad arguments, name does not resolve */
	EXIT_DENIED = 3,     /* connect() failed with EPERM or EACCES (policy) */
	EXIT_CONNECT = 4,    /* connect() failed otherwise (ECONNREFUSED, EHOSTUNREACH, ...) */
	EXIT_TIMEOUT = 5,    /* connect() did not complete within --timeout */
	EXIT_IO = 6,         /* error or stall after connect (ECONNRESET, EPIPE, idle timeout) */
	EXIT_PROTOCOL = 7,   /* no or malformed header line from the server */
	EXIT_MISMATCH = 8,   /* the server hashed other bytes, or the response differs */
};

/* ---- the deterministic stream ---- */
struct stream {
	uint64_t state;
	uint8_t word[8];
	size_t used; /* bytes of word already handed out (8 = need a new word) */
};

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void stream_init(struct stream *s, uint64_t seed)
{
	s->state = seed;
	s->used = sizeof(s->word);
}

static void stream_fill(struct stream *s, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s->used == sizeof(s->word)) {
			uint64_t v = splitmix64(&s->state);
			for (int b = 0; b < 8; b++)
				s->word[b] = (uint8_t)(v >> (8 * b));
			s->used = 0;
		}
		out[i] = s->word[s->used++];
	}
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int b = 7; b >= 0; b--)
		v = (v << 8) | p[b];
	return v;
}

/* ---- small helpers ---- */
static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static const char *errno_name(int err)
{
	const char *name = strerrorname_np(err);
	return name ? name : "EUNKNOWN";
}

static bool parse_u64(const char *text, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 0);
	if (errno || end == text || *end || text[0] == '-')
		return false;
	*out = v;
	return true;
}

static void sockaddr_text(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		port = ntohs(in->sin_port);
		snprintf(buf, len, "%s:%u", ip, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		port = ntohs(in6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) { /* IPv4 on a dual-stack socket */
			inet_ntop(AF_INET, in6->sin6_addr.s6_addr + 12, ip, sizeof(ip));
			snprintf(buf, len, "%s:%u", ip, port);
			return;
		}
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, port);
	} else {
		snprintf(buf, len, "?");
	}
}

static void fd_addrs(int fd, char *local, char *peer, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	if (local && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		sockaddr_text(&ss, local, len);
	sl = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	if (peer && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
		sockaddr_text(&ss, peer, len);
}

static void hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = 0;
}

static EVP_MD_CTX *sha_new(void)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		fprintf(stderr, "moat-probe: sha256 init failed (OpenSSL)\n");
		exit(EXIT_USAGE);
	}
	return md;
}

/* Finish the digest into 65 chars of hex. */
static void sha_hex(EVP_MD_CTX *md, char out[65])
{
	uint8_t d[32];
	unsigned dl = 0;
	EVP_DigestFinal_ex(md, d, &dl);
	hex(d, 32, out);
}

/* JSON string body for short texts we produce (addresses, errno names, messages). */
static void json_str(FILE *f, const char *s)
{
	if (!s) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* ======================================================================== server */
struct sconn {
	int fd;
	EVP_MD_CTX *md;
	uint64_t received;
	uint8_t first8[8];
	bool writing;
	char header[HEADER_MAX];
	size_t header_len, header_off;
	char received_hex[65];
	struct stream out;
	uint64_t out_left, sent;
	uint8_t *buf;
	size_t buf_len, buf_off;
	char peer[80], local[80];
	uint64_t start_ms, last_ms;
};

struct server {
	uint16_t port;
	const char *bind_addr;
	uint64_t send_bytes;
	uint64_t max_conns; /* 0 = unlimited */
	unsigned timeout_s;
	bool quiet;
	int lfd;
	uint64_t accepted;
	struct sconn *conns;
	size_t n_conns;
	uint8_t rbuf[IO_CHUNK];
};

static int server_listen(struct server *srv)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	socklen_t sl;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, srv->bind_addr, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(srv->port);
		sl = sizeof(*in);
	} else if (inet_pton(AF_INET6, srv->bind_addr, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(srv->port);
		sl = sizeof(*in6);
	} else {
		fprintf(stderr, "moat-probe serve: --bind %s: not an IP address\n", srv->bind_addr);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "moat-probe serve: socket: %s\n", errno_name(errno));
		return -1;
	}
	int one = 1, zero = 0;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* "::" serves both families (dual-stack pods), whatever net.ipv6.bindv6only says. */
	if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
		fprintf(stderr, "moat-probe serve: bind %s port %u: %s (%s)\n", srv->bind_addr,
			srv->port, errno_name(errno), strerror(errno));
		close(fd);
		return -1;
	}
	if (listen(fd, 512) < 0) {
		fprintf(stderr, "moat-probe serve: listen: %s\n", errno_name(errno));
		close(fd);
		return -1;
	}
	srv->lfd = fd;
	return 0;
}

static void sconn_log(struct server *srv, struct sconn *c, const char *error)
{
	if (srv->quiet)
		return;
	printf("{\"event\":\"conn\",\"peer\":");
	json_str(stdout, c->peer);
	printf(",\"local\":");
	json_str(stdout, c->local);
	printf(",\"received\":%" PRIu64 ",\"received_sha256\":", c->received);
	json_str(stdout, c->writing ? c->received_hex : NULL);
	printf(",\"sent\":%" PRIu64 ",\"duration_ms\":%" PRIu64 ",\"error\":", c->sent,
	       mono_ms() - c->start_ms);
	json_str(stdout, error);
	printf("}\n");
	fflush(stdout);
}

static void sconn_close(struct server *srv, size_t i, const char *error)
{
	struct sconn *c = &srv->conns[i];
	sconn_log(srv, c, error);
	close(c->fd);
	EVP_MD_CTX_free(c->md);
	free(c->buf);
	srv->conns[i] = srv->conns[--srv->n_conns];
}

static void server_accept(struct server *srv)
{
	/* A bounded batch per poll round keeps the loop fair to open connections. */
	for (int round = 0; round < 64 && srv->n_conns < MAX_CONNS; round++) {
		if (srv->max_conns && srv->accepted >= srv->max_conns)
			return;
		int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED)
				fprintf(stderr, "moat-probe serve: accept: %s\n", errno_name(errno));
			return;
		}
		srv->accepted++;
		struct sconn *c = &srv->conns[srv->n_conns++];
		memset(c, 0, sizeof(*c));
		c->fd = fd;
		c->md = sha_new();
		c->buf = malloc(IO_CHUNK);
		if (!c->buf) {
			fprintf(stderr, "moat-probe serve: out of memory\n");
			exit(EXIT_USAGE);
		}
		snprintf(c->peer, sizeof(c->peer), "?");
		snprintf(c->local, sizeof(c->local), "?");
		fd_addrs(fd, c->local, c->peer, sizeof(c->peer));
		c->start_ms = c->last_ms = mono_ms();
	}
}

/* All of the request has arrived: prepare the header and the response stream. */
static void sconn_start_reply(struct server *srv, struct sconn *c)
{
	sha_hex(c->md, c->received_hex);
	c->header_len = (size_t)snprintf(c->header, sizeof(c->header), "sha256=%s bytes=%" PRIu64 "\n",
					 c->received_hex, c->received);
	uint64_t seed = c->received >= 8 ? le64(c->first8) : 0;
	stream_init(&c->out, seed);
	c->out_left = srv->send_bytes;
	c->writing = true;
}

/* Returns -1 with *error set when the connection must close, 1 when it is finished. */
static int sconn_read(struct server *srv, struct sconn *c, const char **error)
{
	for (int round = 0; round < 16; round++) {
		ssize_t n = read(c->fd, srv->rbuf, sizeof(srv->rbuf));
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return 0;
			*error = errno_name(errno);
			return -1;
		}
		if (n == 0) {
			sconn_start_reply(srv, c);
			return 0;
		}
		for (ssize_t k = 0; k < n && c->received + (uint64_t)k < 8; k++)
			c->first8[c->received + (uint64_t)k] = srv->rbuf[k];
		EVP_DigestUpdate(c->md, srv->rbuf, (size_t)n);
		c->received += (uint64_t)n;
		c->last_ms = mono_ms();
	}
	return 0;
}

static int sconn_write(struct sconn *c, const char **error)
{
	for (int round = 0; round < 16; round++) {
		if (c->buf_off == c->buf_len) {
			c->buf_off = c->buf_len = 0;
			if (c->header_off < c->header_len) {
				memcpy(c->buf, c->header, c->header_len);
				c->buf_len = c->header_len;
				c->header_off = c->header_len;
			}
			size_t room = IO_CHUNK - c->buf_len;
			size_t take = c->out_left < room ? (size_t)c->out_left : room;
			stream_fill(&c->out, c->buf + c->buf_len, take);
			c->buf_len += take;
			c->out_left -= take;
			if (c->buf_len == 0)
				return 1; /* everything written */
		}
		ssize_t n = send(c->fd, c->buf + c->buf_off, c->buf_len - c->buf_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return 0;
			*error = errno_name(errno);
			return -1;
		}
		c->buf_off += (size_t)n;
		c->sent += (uint64_t)n;
		c->last_ms = mono_ms();
	}
	return 0;
}

static int server_loop(struct server *srv)
{
	struct pollfd *pfd = calloc(MAX_CONNS + 1, sizeof(*pfd));
	srv->conns = calloc(MAX_CONNS, sizeof(*srv->conns));
	if (!pfd || !srv->conns) {
		fprintf(stderr, "moat-probe serve: out of memory\n");
		return EXIT_USAGE;
	}
	for (;;) {
		bool accepting = srv->lfd >= 0 && srv->n_conns < MAX_CONNS;
		if (srv->lfd >= 0 && srv->max_conns && srv->accepted >= srv->max_conns) {
			close(srv->lfd);
			srv->lfd = -1;
			accepting = false;
		}
		if (srv->lfd < 0 && srv->n_conns == 0)
			break;
		size_t np = 0;
		pfd[np++] = (struct pollfd){.fd = accepting ? srv->lfd : -1, .events = POLLIN};
		for (size_t i = 0; i < srv->n_conns; i++)
			pfd[np++] = (struct pollfd){.fd = srv->conns[i].fd,
						    .events = srv->conns[i].writing ? POLLOUT : POLLIN};
		int rc = poll(pfd, np, 1000);
		if (rc < 0 && errno != EINTR) {
			fprintf(stderr, "moat-probe serve: poll: %s\n", errno_name(errno));
			break;
		}
		/* Walk backwards: sconn_close moves the last connection into the freed slot. */
		for (size_t i = srv->n_conns; i-- > 0;) {
			struct sconn *c = &srv->conns[i];
			short re = pfd[i + 1].revents;
			const char *error = NULL;
			int st = 0;
			if (re & (POLLIN | POLLHUP | POLLERR) && !c->writing)
				st = sconn_read(srv, c, &error);
			if (st == 0 && c->writing && (re & (POLLOUT | POLLERR | POLLHUP) || c->sent == 0))
				st = sconn_write(c, &error);
			if (st == 0 && mono_ms() - c->last_ms > (uint64_t)srv->timeout_s * 1000) {
				error = "idle timeout";
				st = -1;
			}
			if (st != 0)
				sconn_close(srv, i, error);
		}
		if (accepting && (pfd[0].revents & POLLIN))
			server_accept(srv);
	}
	free(pfd);
	free(srv->conns);
	return 0;
}

static void usage_serve(FILE *f)
{
	fprintf(f,
		"usage: moat-probe serve --port P [--bind ADDR] [--send-bytes N] [--max-conns K]\n"
		"                        [--timeout S] [--quiet]\n"
		"  Accepts connections (poll loop, up to %d at once). Per connection: reads to EOF\n"
		"  hashing with sha256, writes \"sha256=<hex> bytes=<n>\\n\" then N bytes of the\n"
		"  deterministic stream seeded with the first 8 received bytes (little-endian u64;\n"
		"  seed 0 when fewer arrived), then closes. Logs one JSON line per connection on\n"
		"  stdout: {\"event\":\"conn\",\"peer\":\"ip:port\",\"local\":..,\"received\":N,\n"
		"  \"received_sha256\":..,\"sent\":N,\"duration_ms\":N,\"error\":null|\"...\"}, after a\n"
		"  first line {\"event\":\"listening\",\"addr\":\"ip:port\"}.\n"
		"  --bind ADDR      address to listen on (default 0.0.0.0; an IPv6 address works too;\n"
		"                   :: serves IPv4 and IPv6, IPv4 peers shown as a.b.c.d:port)\n"
		"  --send-bytes N   response body size (default 0)\n"
		"  --max-conns K    exit after K connections were served (default 0: run until killed)\n"
		"  --timeout S      close a connection idle for S seconds (default %d)\n"
		"  --quiet          no per-connection lines\n",
		MAX_CONNS, DEFAULT_TIMEOUT_S);
}

static int cmd_serve(int argc, char **argv)
{
	struct server *srv = calloc(1, sizeof(*srv));
	if (!srv)
		return EXIT_USAGE;
	srv->bind_addr = "0.0.0.0";
	srv->timeout_s = DEFAULT_TIMEOUT_S;
	srv->lfd = -1;
	bool have_port = false;
	static const struct option opts[] = {
		{"port", required_argument, NULL, 'p'},      {"bind", required_argument, NULL, 'b'},
		{"send-bytes", required_argument, NULL, 's'}, {"max-conns", required_argument, NULL, 'm'},
		{"timeout", required_argument, NULL, 't'},   {"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0},
	};
	int o;
	uint64_t v;
	while ((o = getopt_long(argc, argv, "p:b:s:m:t:qh", opts, NULL)) != -1) {
		switch (o) {
		case 'p':
			if (!parse_u64(optarg, &v) || v == 0 || v > 65535)
				goto bad;
			srv->port = (uint16_t)v;
			have_port = true;
			break;
		case 'b': srv->bind_addr = optarg; break;
		case 's':
			if (!parse_u64(optarg, &srv->send_bytes))
				goto bad;
			break;
		case 'm':
			if (!parse_u64(optarg, &srv->max_conns))
				goto bad;
			break;
		case 't':
			if (!parse_u64(optarg, &v) || v == 0 || v > 86400)
				goto bad;
			srv->timeout_s = (unsigned)v;
			break;
		case 'q': srv->quiet = true; break;
		case 'h': usage_serve(stdout); free(srv); return 0;
		default: goto bad;
		}
	}
	if (!have_port || optind != argc)
		goto bad;
	if (server_listen(srv) < 0) {
		free(srv);
		return EXIT_USAGE;
	}
	char addr[80] = "?";
	fd_addrs(srv->lfd, addr, NULL, sizeof(addr));
	if (!srv->quiet) {
		printf("{\"event\":\"listening\",\"addr\":");
		json_str(stdout, addr);
		printf("}\n");
		fflush(stdout);
	}
	int rc = server_loop(srv);
	free(srv);
	return rc;
bad:
	fprintf(stderr, "moat-probe serve: bad arguments (see --help)\n");
	usage_serve(stderr);
	free(srv);
	return EXIT_USAGE;
}

/* ======================================================================== client */
struct client {
	const char *target;
	uint64_t send_bytes;
	uint64_t expect_bytes;
	bool have_expect;
	uint64_t seed;
	unsigned timeout_s;
	bool json;

	/* results */
	const char *connect_result; /* "ok" or an errno name */
	uint64_t connect_us;
	char local[80], peer[80];
	uint64_t sent;
	char sent_hex[65];
	bool have_header;
	char server_hex[65];
	uint64_t server_bytes;
	uint64_t received; /* body bytes */
	bool body_matches; /* every body byte so far equals the expected stream */
	uint64_t duration_ms;
	char error[256];
	int exit_code;
};

static void client_fail(struct client *cl, int code, const char *what, const char *detail)
{
	if (cl->exit_code != EXIT_OK)
		return; /* keep the first failure: it is the cause */
	cl->exit_code = code;
	snprintf(cl->error, sizeof(cl->error), "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
}

/* Split "host:port" / "[v6]:port" and resolve. */
static int client_resolve(struct client *cl, struct sockaddr_storage *ss, socklen_t *sl)
{
	char host[256];
	const char *colon = strrchr(cl->target, ':');
	if (!colon || colon == cl->target || (size_t)(colon - cl->target) >= sizeof(host))
		return -1;
	const char *h = cl->target;
	size_t hl = (size_t)(colon - cl->target);
	if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	memcpy(host, h, hl);
	host[hl] = 0;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc != 0) {
		snprintf(cl->error, sizeof(cl->error), "resolve %s: %s", cl->target, gai_strerror(rc));
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sl = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Connect with a deadline. Returns the fd, or -1 with the result recorded. */
static int client_connect(struct client *cl, const struct sockaddr_storage *ss, socklen_t sl)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		cl->connect_result = errno_name(errno);
		client_fail(cl, EXIT_CONNECT, "socket", errno_name(errno));
		return -1;
	}
	uint64_t t0 = mono_us();
	int err = 0;
	if (connect(fd, (const struct sockaddr *)ss, sl) < 0) {
		err = errno;
		if (err == EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int rc;
			do {
				uint64_t spent_ms = (mono_us() - t0) / 1000;
				uint64_t limit_ms = (uint64_t)cl->timeout_s * 1000;
				int wait = spent_ms >= limit_ms ? 0 : (int)(limit_ms - spent_ms);
				rc = poll(&p, 1, wait);
			} while (rc < 0 && errno == EINTR);
			if (rc == 0) {
				err = ETIMEDOUT;
			} else {
				socklen_t el = sizeof(err);
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
					err = errno;
			}
		}
	}
	cl->connect_us = mono_us() - t0;
	if (err) {
		cl->connect_result = errno_name(err);
		char what[160];
		snprintf(what, sizeof(what), "connect %s", cl->target);
		int code = (err == EPERM || err == EACCES) ? EXIT_DENIED
			   : err == ETIMEDOUT		    ? EXIT_TIMEOUT
							    : EXIT_CONNECT;
		client_fail(cl, code, what, errno_name(err));
		close(fd);
		return -1;
	}
	cl->connect_result = "ok";
	fd_addrs(fd, cl->local, cl->peer, sizeof(cl->local));
	return fd;
}

/* Parse "sha256=<64 hex> bytes=<n>". */
static bool parse_header(const char *line, char hexout[65], uint64_t *bytes)
{
	if (strncmp(line, "sha256=", 7) != 0)
		return false;
	const char *h = line + 7;
	for (int i = 0; i < 64; i++)
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
			return false;
	if (strncmp(h + 64, " bytes=", 7) != 0)
		return false;
	memcpy(hexout, h, 64);
	hexout[64] = 0;
	return parse_u64(h + 71, bytes);
}

struct exchange {
	int fd;
	EVP_MD_CTX *sent_md;
	struct stream out, expect;
	uint8_t *obuf, *ibuf, *ebuf;
	size_t olen, ooff;
	bool write_done;
	char header[HEADER_MAX + 1];
	size_t header_len;
	uint64_t last_ms;
};

/* Feed received bytes: the header line first, then the body checked against the stream. */
static void exchange_take(struct client *cl, struct exchange *x, const uint8_t *p, size_t n)
{
	while (n > 0 && !cl->have_header) {
		char ch = (char)*p++;
		n--;
		if (ch == '\n') {
			x->header[x->header_len] = 0;
			if (!parse_header(x->header, cl->server_hex, &cl->server_bytes)) {
				client_fail(cl, EXIT_PROTOCOL, "malformed header line from the server",
					    x->header);
				return;
			}
			cl->have_header = true;
			uint64_t seed = 0;
			if (cl->send_bytes >= 8) {
				uint8_t first[8];
				struct stream s;
				stream_init(&s, cl->seed);
				stream_fill(&s, first, 8);
				seed = le64(first);
			}
			stream_init(&x->expect, seed);
			break;
		}
		if (x->header_len >= HEADER_MAX) {
			client_fail(cl, EXIT_PROTOCOL, "header line longer than 128 bytes", NULL);
			return;
		}
		x->header[x->header_len++] = ch;
	}
	if (n == 0 || !cl->have_header)
		return;
	stream_fill(&x->expect, x->ebuf, n);
	if (cl->body_matches && memcmp(x->ebuf, p, n) != 0)
		cl->body_matches = false;
	cl->received += n;
}

static void exchange_send(struct client *cl, struct exchange *x)
{
	for (int round = 0; round < 16 && !x->write_done; round++) {
		if (x->ooff == x->olen) {
			uint64_t left = cl->send_bytes - cl->sent;
			x->olen = left < IO_CHUNK ? (size_t)left : IO_CHUNK;
			x->ooff = 0;
			if (x->olen == 0) {
				shutdown(x->fd, SHUT_WR);
				x->write_done = true;
				return;
			}
			stream_fill(&x->out, x->obuf, x->olen);
			EVP_DigestUpdate(x->sent_md, x->obuf, x->olen);
		}
		ssize_t n = send(x->fd, x->obuf + x->ooff, x->olen - x->ooff, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return;
			client_fail(cl, EXIT_IO, "send", errno_name(errno));
			x->write_done = true;
			return;
		}
		x->ooff += (size_t)n;
		cl->sent += (uint64_t)n;
		x->last_ms = mono_ms();
	}
}

/* Returns true at EOF or on a fatal error. */
static bool exchange_recv(struct client *cl, struct exchange *x)
{
	for (int round = 0; round < 16; round++) {
		ssize_t n = read(x->fd, x->ibuf, IO_CHUNK);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return false;
			client_fail(cl, EXIT_IO, "receive", errno_name(errno));
			return true;
		}
		if (n == 0)
			return true;
		exchange_take(cl, x, x->ibuf, (size_t)n);
		x->last_ms = mono_ms();
	}
	return false;
}

static void client_exchange(struct client *cl, int fd)
{
	struct exchange x = {.fd = fd};
	x.sent_md = sha_new();
	x.obuf = malloc(IO_CHUNK);
	x.ibuf = malloc(IO_CHUNK);
	x.ebuf = malloc(IO_CHUNK);
	if (!x.obuf || !x.ibuf || !x.ebuf) {
		fprintf(stderr, "moat-probe: out of memory\n");
		exit(EXIT_USAGE);
	}
	stream_init(&x.out, cl->seed);
	cl->body_matches = true;
	x.last_ms = mono_ms();
	bool eof = false;
	/* The loop ends at EOF, on an error, or after --timeout without progress. */
	while (!eof) {
		struct pollfd p = {.fd = fd, .events = POLLIN | (x.write_done ? 0 : POLLOUT)};
		int rc = poll(&p, 1, 200);
		if (rc < 0 && errno != EINTR) {
			client_fail(cl, EXIT_IO, "poll", errno_name(errno));
			break;
		}
		if (!x.write_done && (p.revents & (POLLOUT | POLLERR | POLLHUP)))
			exchange_send(cl, &x);
		if (p.revents & (POLLIN | POLLERR | POLLHUP))
			eof = exchange_recv(cl, &x);
		if (cl->exit_code != EXIT_OK)
			break;
		if (mono_ms() - x.last_ms > (uint64_t)cl->timeout_s * 1000) {
			client_fail(cl, EXIT_IO, x.write_done ? "timed out waiting for the response"
							       : "timed out sending",
				    "ETIMEDOUT");
			break;
		}
	}
	if (eof && !x.write_done)
		client_fail(cl, EXIT_IO, "the server closed before the request was sent", NULL);
	sha_hex(x.sent_md, cl->sent_hex);
	EVP_MD_CTX_free(x.sent_md);
	free(x.obuf);
	free(x.ibuf);
	free(x.ebuf);
}

/* Decide the verdict on the data once the exchange ended without an I/O error. */
static void client_verify(struct client *cl)
{
	if (!cl->have_header) {
		client_fail(cl, EXIT_PROTOCOL, "the server closed without a header line", NULL);
		return;
	}
	if (strcmp(cl->server_hex, cl->sent_hex) != 0 || cl->server_bytes != cl->sent) {
		char d[200];
		snprintf(d, sizeof(d), "server got %" PRIu64 " bytes sha256 %.12s..., sent %" PRIu64
			 " bytes sha256 %.12s...", cl->server_bytes, cl->server_hex, cl->sent, cl->sent_hex);
		client_fail(cl, EXIT_MISMATCH, "request corrupted", d);
		return;
	}
	if (!cl->body_matches) {
		client_fail(cl, EXIT_MISMATCH, "response differs from the expected stream", NULL);
		return;
	}
	if (cl->have_expect && cl->received != cl->expect_bytes) {
		char d[120];
		snprintf(d, sizeof(d), "received %" PRIu64 " bytes, expected %" PRIu64, cl->received,
			 cl->expect_bytes);
		client_fail(cl, EXIT_MISMATCH, "response length", d);
	}
}

static void client_report(const struct client *cl)
{
	bool received_ok = cl->have_header && cl->body_matches &&
			   (!cl->have_expect || cl->received == cl->expect_bytes);
	bool connected = cl->connect_result && strcmp(cl->connect_result, "ok") == 0;
	if (!cl->json) {
		printf("connect %s: %s in %.1f ms", cl->target,
		       cl->connect_result ? cl->connect_result : "not tried", cl->connect_us / 1000.0);
		if (connected)
			printf(", %s -> %s, sent %" PRIu64 " B, received %" PRIu64 " B%s", cl->local,
			       cl->peer, cl->sent, cl->received, received_ok ? " ok" : "");
		printf("%s%s\n", cl->exit_code ? ": " : "", cl->exit_code ? cl->error : "");
		return;
	}
	printf("{\"target\":");
	json_str(stdout, cl->target);
	printf(",\"connect\":");
	json_str(stdout, cl->connect_result ? cl->connect_result : "not tried");
	printf(",\"connect_ms\":%" PRIu64 ",\"connect_us\":%" PRIu64, cl->connect_us / 1000,
	       cl->connect_us);
	printf(",\"local\":");
	json_str(stdout, connected ? cl->local : NULL);
	printf(",\"peer\":");
	json_str(stdout, connected ? cl->peer : NULL);
	printf(",\"seed\":%" PRIu64 ",\"sent\":%" PRIu64 ",\"sent_sha256\":", cl->seed, cl->sent);
	json_str(stdout, connected ? cl->sent_hex : NULL);
	printf(",\"server_sha256\":");
	json_str(stdout, cl->have_header ? cl->server_hex : NULL);
	if (cl->have_header)
		printf(",\"server_bytes\":%" PRIu64, cl->server_bytes);
	else
		printf(",\"server_bytes\":null");
	printf(",\"received\":%" PRIu64 ",\"received_ok\":%s,\"duration_ms\":%" PRIu64
	       ",\"exit\":%d,\"error\":",
	       cl->received, received_ok ? "true" : "false", cl->duration_ms, cl->exit_code);
	json_str(stdout, cl->exit_code ? cl->error : NULL);
	printf("}\n");
}

static void usage_connect(FILE *f)
{
	fprintf(f,
		"usage: moat-probe connect HOST:PORT [--send-bytes N] [--expect-bytes N] [--seed N]\n"
		"                          [--timeout S] [--json]\n"
		"  Connects, sends N bytes of the deterministic stream (splitmix64, little-endian,\n"
		"  seeded with --seed, default random), shuts down its write side, reads the server's\n"
		"  \"sha256=<hex> bytes=<n>\" line and the response, and checks that the server hashed\n"
		"  exactly what was sent and that the response is the stream seeded with the first\n"
		"  8 bytes sent (seed 0 when fewer than 8 were sent).\n"
		"  --send-bytes N    request size (default 0)\n"
		"  --expect-bytes N  required response size (default: any size, content still checked)\n"
		"  --timeout S       limit for connect() and for every wait for progress (default %d)\n"
		"  --json            print one JSON object: {\"target\",\"connect\":\"ok\"|errno name,\n"
		"                    \"connect_ms\",\"connect_us\",\"local\",\"peer\",\"seed\",\"sent\",\n"
		"                    \"sent_sha256\",\"server_sha256\",\"server_bytes\",\"received\",\n"
		"                    \"received_ok\",\"duration_ms\",\"exit\",\"error\":null|\"...\"}\n"
		"  Exit codes: 0 everything matched; 2 bad arguments or name not resolved;\n"
		"  3 connect() failed with EPERM or EACCES (denied); 4 connect() failed otherwise\n"
		"  (ECONNREFUSED, EHOSTUNREACH, ...); 5 connect() timed out; 6 I/O error or stall after\n"
		"  connect (ECONNRESET, EPIPE, closed early, timeout); 7 no or malformed header line;\n"
		"  8 the server hashed other bytes than were sent, or the response differs.\n",
		DEFAULT_TIMEOUT_S);
}

static int cmd_connect(int argc, char **argv)
{
	struct client cl = {.timeout_s = DEFAULT_TIMEOUT_S};
	bool have_seed = false;
	static const struct option opts[] = {
		{"send-bytes", required_argument, NULL, 's'}, {"expect-bytes", required_argument, NULL, 'e'},
		{"seed", required_argument, NULL, 'S'},       {"timeout", required_argument, NULL, 't'},
		{"json", no_argument, NULL, 'j'},             {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int o;
	uint64_t v;
	while ((o = getopt_long(argc, argv, "s:e:S:t:jh", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			if (!parse_u64(optarg, &cl.send_bytes))
				goto bad;
			break;
		case 'e':
			if (!parse_u64(optarg, &cl.expect_bytes))
				goto bad;
			cl.have_expect = true;
			break;
		case 'S':
			if (!parse_u64(optarg, &cl.seed))
				goto bad;
			have_seed = true;
			break;
		case 't':
			if (!parse_u64(optarg, &v) || v == 0 || v > 86400)
				goto bad;
			cl.timeout_s = (unsigned)v;
			break;
		case 'j': cl.json = true; break;
		case 'h': usage_connect(stdout); return 0;
		default: goto bad;
		}
	}
	if (optind != argc - 1)
		goto bad;
	cl.target = argv[optind];
	if (!have_seed && getrandom(&cl.seed, sizeof(cl.seed), 0) != (ssize_t)sizeof(cl.seed))
		cl.seed = mono_us();

	uint64_t start = mono_ms();
	struct sockaddr_storage ss;
	socklen_t sl = 0;
	memset(&ss, 0, sizeof(ss));
	if (client_resolve(&cl, &ss, &sl) < 0) {
		if (!cl.error[0])
			snprintf(cl.error, sizeof(cl.error), "bad target %s: want HOST:PORT", cl.target);
		cl.exit_code = EXIT_USAGE;
		client_report(&cl);
		return EXIT_USAGE;
	}
	int fd = client_connect(&cl, &ss, sl);
	if (fd >= 0) {
		client_exchange(&cl, fd);
		close(fd);
		if (cl.exit_code == EXIT_OK)
			client_verify(&cl);
	}
	cl.duration_ms = mono_ms() - start;
	client_report(&cl);
	return cl.exit_code;
bad:
	fprintf(stderr, "moat-probe connect: bad arguments (see --help)\n");
	usage_connect(stderr);
	return EXIT_USAGE;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: moat-probe serve|connect ... (moat-probe serve --help, "
		   "moat-probe connect --help)\n");
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "serve") == 0)
		return cmd_serve(argc - 1, argv + 1);
	if (strcmp(argv[1], "connect") == 0)
		return cmd_connect(argc - 1, argv + 1);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return EXIT_USAGE;
}
