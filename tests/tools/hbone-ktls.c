/* hbone-ktls: moat's own HBONE code (hbone/h2.c) on real loopback TCP, asking for the kTLS
 * engine, with apps in threads checking every byte. For the vm layer (a kernel with TLS);
 * on a kernel without it the same runs report engine "userspace" and the fallback reason.
 *
 *   hbone-ktls pair [--bytes N] [--key-update] [--no-ktls] [--timeout S]
 *       a moat client and a moat server (both asking for kTLS) joined by 127.0.0.1 TCP; one
 *       CONNECT stream carries N bytes each way (client app -> server app, then back).
 *       --key-update: the client stays on OpenSSL and sends a KeyUpdate (update_requested)
 *       once the server app has half of its bytes: the kTLS server must follow it (kernels
 *       that can rekey) or close the connection saying so and counting it; never misread.
 *       --no-ktls: neither end asks for kTLS (the same run on OpenSSL, for comparison).
 *   hbone-ktls node --script tests/interop/h2_server.js [--bytes N] [--timeout S]
 *       moat's client (asking for kTLS) against Node's http2 echo server (which sends
 *       TLS 1.3 session tickets right after the handshake): N bytes out, the echo back.
 *   hbone-ktls node-client --script tests/interop/h2_client.js [--bytes N] [--timeout S]
 *       moat's server (asking for kTLS, as moatd's 15008) against Node's http2 client, which
 *       presents a certificate from the same CA and CONNECTs: N random bytes out, a server
 *       app echoes them back; the sha256 of what Node sent, what the server app received and
 *       what Node received must agree.
 *
 * Prints one JSON line (engines, fallback reasons, byte counts, sha256 verdicts, the
 * non-data records handled, errors, /proc/net/tls_stat deltas, elapsed_ms: a figure to
 * compare within one machine, never judged) and exits 0 when the run
 * met its checks, 1 when not, 2 on a setup error. Every wait is bounded by --timeout. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "core/log.h"
#include "core/loop.h"
#include "hbone/h2.h"
#include "identity/identity.h"

#define TD "cluster.local"
#define CLIENT_ID "spiffe://cluster.local/ns/t/sa/client"
#define SERVER_ID "spiffe://cluster.local/ns/t/sa/server"
#define NODE_ID "spiffe://cluster.local/ns/t/sa/node-server"

struct opts {
	const char *mode, *script;
	size_t bytes;
	bool key_update, no_ktls;
	int timeout_s;
};

/* ---- apps: a deterministic byte stream, checked byte by byte as it arrives ---- */

static uint8_t pattern(uint8_t seed, size_t i)
{
	return (uint8_t)(seed + i * 31 + (i >> 9));
}

struct flow {
	int fd;
	uint8_t seed;
	size_t bytes;
	_Atomic size_t got;
	size_t bad_at; /* first byte that differs from the pattern, SIZE_MAX if none */
	unsigned char sha[32], want_sha[32];
	int err;
};

static void fill(uint8_t seed, size_t off, uint8_t *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = pattern(seed, off + i);
}

static void *send_main(void *arg)
{
	struct flow *f = arg;
	uint8_t buf[65536];
	for (size_t off = 0; off < f->bytes;) {
		size_t n = f->bytes - off < sizeof(buf) ? f->bytes - off : sizeof(buf);
		fill(f->seed, off, buf, n);
		for (size_t done = 0; done < n;) {
			ssize_t w = write(f->fd, buf + done, n - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				f->err = errno;
				return NULL;
			}
			done += (size_t)w;
		}
		off += n;
	}
	shutdown(f->fd, SHUT_WR);
	return NULL;
}

static void *recv_main(void *arg)
{
	struct flow *f = arg;
	uint8_t buf[65536], want[65536];
	EVP_MD_CTX *h = EVP_MD_CTX_new(), *hw = EVP_MD_CTX_new();
	EVP_DigestInit_ex(h, EVP_sha256(), NULL);
	EVP_DigestInit_ex(hw, EVP_sha256(), NULL);
	f->bad_at = SIZE_MAX;
	for (;;) {
		ssize_t n = read(f->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0)
				f->err = errno;
			break;
		}
		size_t got = f->got;
		fill(f->seed, got, want, (size_t)n);
		for (ssize_t i = 0; i < n && f->bad_at == SIZE_MAX; i++)
			if (buf[i] != want[i])
				f->bad_at = got + (size_t)i;
		EVP_DigestUpdate(h, buf, (size_t)n);
		f->got = got + (size_t)n;
	}
	for (size_t off = 0; off < f->bytes;) {
		size_t n = f->bytes - off < sizeof(want) ? f->bytes - off : sizeof(want);
		fill(f->seed, off, want, n);
		EVP_DigestUpdate(hw, want, n);
		off += n;
	}
	EVP_DigestFinal_ex(h, f->sha, NULL);
	EVP_DigestFinal_ex(hw, f->want_sha, NULL);
	EVP_MD_CTX_free(h);
	EVP_MD_CTX_free(hw);
	return NULL;
}

static bool flow_intact(const struct flow *f)
{
	return f->got == f->bytes && f->bad_at == SIZE_MAX && memcmp(f->sha, f->want_sha, 32) == 0;
}

/* The receiving half saw only bytes of the pattern, in order (maybe fewer than sent). */
static bool flow_prefix_ok(const struct flow *f)
{
	return f->bad_at == SIZE_MAX;
}

static void sha_hex(const unsigned char *sha, char *out)
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", sha[i]);
}

/* ---- the agent side ---- */

struct run {
	struct opts o;
	struct loop *loop;
	struct loop_timer deadline, poll;
	struct h2conn *client, *server;
	struct h2stream *cstream;
	int app_fd;   /* client app's end of its socket */
	int up_app;   /* server app's end of the upstream socket */
	struct flow c_send, c_recv, s_recv, s_send;
	pthread_t th[4];
	int n_threads;
	bool server_app_started, key_update_sent, timed_out;
	struct echo *echo; /* node-client: the server app echoes instead of its own stream */
	int closed;
	char client_error[512], server_error[512], client_conn_error[512], server_conn_error[512];
	struct h2_ktls_stats cst, sst;
	const char *c_engine, *s_engine;
	char c_fallback[300], s_fallback[300];
	int status;
};

static int tcp_pair(int sv[2])
{
	return tcp_loopback_pair(sv);
}

static void start_thread(struct run *r, void *(*fn)(void *), struct flow *f)
{
	pthread_create(&r->th[r->n_threads++], NULL, fn, f);
}

static void maybe_done(struct run *r)
{
	if (r->closed >= (r->server ? 2 : 1) || (!r->client && !r->server))
		loop_stop(r->loop);
}

static void note_engine(struct h2conn *c, const char **engine, char *fb, size_t fbl)
{
	const char *why = NULL, *reason = h2conn_ktls_fallback(c, &why);
	*engine = h2conn_engine(c);
	snprintf(fb, fbl, "%s%s%s", reason ? reason : "", reason ? ": " : "", reason ? why : "");
}

static void on_ready(struct h2conn *c)
{
	struct run *r = h2conn_owner(c);
	if (c == r->client)
		note_engine(c, &r->c_engine, r->c_fallback, sizeof(r->c_fallback));
	else
		note_engine(c, &r->s_engine, r->s_fallback, sizeof(r->s_fallback));
}

static void on_conn_closed(struct h2conn *c, const char *why)
{
	struct run *r = h2conn_owner(c);
	bool client = c == r->client;
	h2conn_ktls_stats(c, client ? &r->cst : &r->sst);
	if (why)
		snprintf(client ? r->client_conn_error : r->server_conn_error, 512, "%s", why);
	if (client)
		r->client = NULL;
	else
		r->server = NULL;
	maybe_done(r);
}

static void server_stream_closed(struct h2stream *s, void *user, const struct h2stream_stats *st,
				 const char *error)
{
	(void)s, (void)st;
	struct run *r = user;
	if (error)
		snprintf(r->server_error, sizeof(r->server_error), "%s", error);
	r->closed++;
	maybe_done(r);
}

static const struct h2stream_ops server_stream_ops = {.on_close = server_stream_closed};

/* node-client's server app: echoes every byte back and hashes what it received. */
struct echo {
	int fd, err;
	size_t got;
	unsigned char sha[32];
};

static void *echo_main(void *arg)
{
	struct echo *x = arg;
	uint8_t buf[65536];
	EVP_MD_CTX *h = EVP_MD_CTX_new();
	EVP_DigestInit_ex(h, EVP_sha256(), NULL);
	for (;;) {
		ssize_t n = read(x->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			x->err = n < 0 ? errno : 0;
			break;
		}
		EVP_DigestUpdate(h, buf, (size_t)n);
		x->got += (size_t)n;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(x->fd, buf + done, (size_t)(n - done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				x->err = errno;
				goto out;
			}
			done += w;
		}
	}
	shutdown(x->fd, SHUT_WR); /* Node's request ended: end the response the same way */
out:
	EVP_DigestFinal_ex(h, x->sha, NULL);
	EVP_MD_CTX_free(h);
	return NULL;
}

static void start_echo(struct run *r, int fd)
{
	r->echo->fd = fd;
	pthread_create(&r->th[r->n_threads++], NULL, echo_main, r->echo);
	r->server_app_started = true;
}

static void on_request(struct h2conn *c, struct h2stream *s, const struct hbone_request *q)
{
	(void)c, (void)q;
	struct run *r = h2conn_owner(c);
	int up[2];
	h2stream_set_ops(s, &server_stream_ops, r);
	struct err e;
	if (tcp_pair(up) < 0 || fcntl(up[0], F_SETFL, O_NONBLOCK) < 0 ||
	    h2stream_accept(s, up[0], &e) < 0) {
		h2stream_respond(s, 503);
		return;
	}
	r->up_app = up[1];
	if (r->echo) {
		start_echo(r, up[1]);
		return;
	}
	r->s_recv.fd = r->s_send.fd = up[1];
	start_thread(r, recv_main, &r->s_recv);
	start_thread(r, send_main, &r->s_send);
	r->server_app_started = true;
}

static const struct h2conn_ops conn_ops = {
	.on_request = on_request, .on_ready = on_ready, .on_closed = on_conn_closed};

static void client_response(struct h2stream *s, void *user, int status)
{
	(void)s;
	((struct run *)user)->status = status;
}

static void client_closed(struct h2stream *s, void *user, const struct h2stream_stats *st,
			  const char *error)
{
	(void)s, (void)st;
	struct run *r = user;
	if (error)
		snprintf(r->client_error, sizeof(r->client_error), "%s", error);
	r->cstream = NULL;
	r->closed++;
	maybe_done(r);
}

static const struct h2stream_ops client_stream_ops = {.on_response = client_response,
						      .on_close = client_closed};

static void on_deadline(struct loop_timer *t)
{
	struct run *r = container_of(t, struct run, deadline);
	r->timed_out = true;
	loop_stop(r->loop);
}

/* --key-update: once the server app has half of its bytes, the OpenSSL client rekeys. */
static void on_poll(struct loop_timer *t)
{
	struct run *r = container_of(t, struct run, poll);
	if (!r->key_update_sent && r->client && r->s_recv.got >= r->o.bytes / 2) {
		r->key_update_sent = h2conn_key_update(r->client, true) == 0;
		fprintf(stderr, "hbone-ktls: client KeyUpdate at %zu bytes: %s\n",
			(size_t)r->s_recv.got, r->key_update_sent ? "sent" : "failed");
	}
	if (!r->key_update_sent)
		loop_timer_arm(r->loop, &r->poll, 2);
}

/* /proc/net/tls_stat: the named counter, -1 when the file or line is missing. */
static long tls_stat(const char *name)
{
	FILE *f = fopen("/proc/net/tls_stat", "r");
	char line[128], key[64];
	long v = -1, x;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%63s %ld", key, &x) == 2 && strcmp(key, name) == 0)
			v = x;
	if (f)
		fclose(f);
	return v;
}

struct certs {
	struct moat_ca *ca;
	struct bundle *b;
	struct svid *cs, *ss;
	SSL_CTX *cctx, *sctx;
};

static int certs_init(struct certs *c, const char *server_id)
{
	struct err e = {{0}};
	c->ca = ca_new_ephemeral(TD, &e);
	c->b = c->ca ? bundle_from_cert(ca_root_cert(c->ca), TD, &e) : NULL;
	c->cs = c->ca ? ca_mint_svid(c->ca, CLIENT_ID, 3600, &e) : NULL;
	c->ss = c->ca ? ca_mint_svid(c->ca, server_id, 3600, &e) : NULL;
	c->cctx = c->cs && c->b ? tls_client_ctx(c->cs, c->b, false, &e) : NULL;
	c->sctx = c->ss && c->b ? tls_server_ctx(c->ss, c->b, false, &e) : NULL;
	if (!c->cctx || !c->sctx) {
		fprintf(stderr, "hbone-ktls: certificates: %s\n", e.msg);
		return -1;
	}
	return 0;
}

static void certs_free(struct certs *c)
{
	SSL_CTX_free(c->cctx);
	SSL_CTX_free(c->sctx);
	svid_unref(c->cs);
	svid_unref(c->ss);
	bundle_unref(c->b);
	ca_free(c->ca);
}

static int write_pem(const char *dir, const char *name, X509 *x, EVP_PKEY *k)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	if (!f)
		return -1;
	int ok = x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	return ok == 1 ? 0 : -1;
}

/* Node's echo server on 127.0.0.1, port chosen by the kernel; its pid in *pid. */
static int start_node(const struct opts *o, struct certs *c, char *dir, pid_t *pid)
{
	if (!mkdtemp(dir) || write_pem(dir, "cert.pem", c->ss->cert, NULL) < 0 ||
	    write_pem(dir, "key.pem", NULL, c->ss->key) < 0 ||
	    write_pem(dir, "ca.pem", ca_root_cert(c->ca), NULL) < 0)
		return -1;
	int p[2];
	if (pipe(p) < 0)
		return -1;
	*pid = fork();
	if (*pid == 0) {
		char cert[600], key[600], ca[600];
		snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
		snprintf(key, sizeof(key), "%s/key.pem", dir);
		snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
		dup2(p[1], 1);
		close(p[0]);
		execlp("node", "node", o->script, "--port", "0", "--cert", cert, "--key", key,
		       "--ca", ca, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	FILE *f = fdopen(p[0], "r");
	char line[512];
	int port = -1;
	/* Bounded: node prints "listening" first or dies (EOF). */
	while (port < 0 && f && fgets(line, sizeof(line), f)) {
		const char *q = strstr(line, "\"port\":");
		if (strstr(line, "listening") && q)
			port = atoi(q + 7);
	}
	/* Keep the pipe open (node writes a line per stream) but never read it again. */
	return port;
}

static int connect_port(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				.sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void json_str(const char *k, const char *v, bool comma)
{
	printf("\"%s\":\"", k);
	for (const char *p = v ? v : ""; *p; p++)
		printf(*p == '"' || *p == '\\' ? "\\%c" : (unsigned char)*p < 32 ? " " : "%c", *p);
	printf("\"%s", comma ? "," : "");
}

static void report_flow(const char *k, const struct flow *f)
{
	char s[65];
	sha_hex(f->sha, s);
	printf("\"%s\":{\"bytes\":%zu,\"got\":%zu,\"intact\":%s,\"prefix_ok\":%s,\"sha256\":\"%s\"},",
	       k, f->bytes, (size_t)f->got, flow_intact(f) ? "true" : "false",
	       flow_prefix_ok(f) ? "true" : "false", s);
}

/* ---- node-client: Node's http2 client against moat's server ---- */

/* A listener on 127.0.0.1, port chosen by the kernel; its port in *port. */
static int listen_loopback(int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

/* Node's client toward 127.0.0.1:port with the client SVID; its stdout on *out. */
static pid_t start_node_client(const struct opts *o, struct certs *c, char *dir, int port,
			       FILE **out)
{
	int p[2];
	if (!mkdtemp(dir) || write_pem(dir, "cert.pem", c->cs->cert, NULL) < 0 ||
	    write_pem(dir, "key.pem", NULL, c->cs->key) < 0 ||
	    write_pem(dir, "ca.pem", ca_root_cert(c->ca), NULL) < 0 || pipe(p) < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		char cert[600], key[600], ca[600], ports[16], send[32], ms[32];
		snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
		snprintf(key, sizeof(key), "%s/key.pem", dir);
		snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
		snprintf(ports, sizeof(ports), "%d", port);
		snprintf(send, sizeof(send), "%zu", o->bytes);
		snprintf(ms, sizeof(ms), "%d", o->timeout_s * 1000);
		dup2(p[1], 1);
		close(p[0]);
		execlp("node", "node", o->script, "--host", "127.0.0.1", "--port", ports,
		       "--authority", "127.0.0.1:9", "--cert", cert, "--key", key, "--ca", ca,
		       "--send", send, "--expect-echo", "--timeout", ms, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	*out = pid > 0 ? fdopen(p[0], "r") : NULL;
	return pid;
}

static void remove_pems(const char *dir)
{
	static const char *const names[] = {"cert.pem", "key.pem", "ca.pem"};
	char p[600];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
}

/* Accept Node's connection, waiting at most timeout_s: non-blocking, as moatd's 15008. */
static int accept_bounded(int lfd, int timeout_s)
{
	struct pollfd pf = {.fd = lfd, .events = POLLIN};
	if (poll(&pf, 1, timeout_s * 1000) != 1)
		return -1;
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

/* The value of "key" in Node's one-line JSON (a string without quotes, or a literal). */
static void node_field(const char *line, const char *key, char *v, size_t vl)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(line, pat);
	v[0] = 0;
	if (!p)
		return;
	p += strlen(pat);
	p += *p == '"';
	size_t n = strcspn(p, "\",}");
	snprintf(v, vl, "%.*s", (int)(n < vl ? n : vl - 1), p);
}

static int node_client_main(struct run *r, struct certs *c)
{
	struct echo echo = {.fd = -1};
	char dir[] = "/tmp/hbone-ktls.XXXXXX", line[4096] = "", sent[80], rsha[80], got[32],
	     status[16], echo_ok[16], mine[65];
	int port, lfd = listen_loopback(&port), sfd = -1;
	FILE *nout = NULL;
	pid_t pid = lfd >= 0 ? start_node_client(&r->o, c, dir, port, &nout) : -1;
	struct err e = {{0}};
	long tx0 = tls_stat("TlsTxSw"), rx0 = tls_stat("TlsRxSw");
	r->echo = &echo;
	if (pid > 0 && (sfd = accept_bounded(lfd, r->o.timeout_s)) >= 0)
		r->server = h2conn_new(r->loop, H2_SERVER, sfd, c->sctx, NULL, &conn_ops, r,
				       "hbone-ktls server (node client)", &e);
	if (lfd >= 0)
		close(lfd);
	if (!r->server) {
		fprintf(stderr, "hbone-ktls: no connection from Node's client: %s\n",
			e.msg[0] ? e.msg : strerror(errno));
		if (pid > 0) {
			kill(pid, SIGTERM);
			waitpid(pid, NULL, 0);
		}
		remove_pems(dir);
		return 2;
	}
	h2conn_want_ktls(r->server);
	uint64_t t0 = now_ms();
	loop_timer_init(&r->deadline, on_deadline);
	loop_timer_arm(r->loop, &r->deadline, (uint64_t)r->o.timeout_s * 1000);
	loop_run(r->loop); /* ends when Node closes the session, or at the deadline */
	uint64_t elapsed = now_ms() - t0;
	loop_timer_cancel(r->loop, &r->deadline);
	if (r->server) {
		h2conn_ktls_stats(r->server, &r->sst);
		h2conn_abort(r->server, "hbone-ktls: over");
	}
	for (int i = 0; i < r->n_threads; i++)
		pthread_join(r->th[i], NULL);
	if (r->timed_out)
		kill(pid, SIGTERM); /* so its line (or EOF) comes now */
	if (!nout || !fgets(line, sizeof(line), nout))
		line[0] = 0;
	line[strcspn(line, "\n")] = 0;
	waitpid(pid, NULL, 0);
	remove_pems(dir);
	long tx1 = tls_stat("TlsTxSw"), rx1 = tls_stat("TlsRxSw");

	node_field(line, "sent_sha256", sent, sizeof(sent));
	node_field(line, "received_sha256", rsha, sizeof(rsha));
	node_field(line, "received", got, sizeof(got));
	node_field(line, "status", status, sizeof(status));
	node_field(line, "echo_ok", echo_ok, sizeof(echo_ok));
	sha_hex(echo.sha, mine);
	/* Three views of one byte stream: Node's, the server app's, and Node's again. */
	bool up_ok = echo.got == r->o.bytes && strcmp(sent, mine) == 0;
	bool down_ok = strtoull(got, NULL, 10) == r->o.bytes && strcmp(rsha, sent) == 0 &&
		       strcmp(echo_ok, "true") == 0;
	bool ok = up_ok && down_ok && !r->timed_out && r->s_engine;
	printf("{");
	json_str("mode", r->o.mode, true);
	json_str("outcome", up_ok && down_ok ? "intact" : "broken", true);
	json_str("client_engine", "node", true);
	json_str("server_engine", r->s_engine, true);
	json_str("client_fallback", "", true);
	json_str("server_fallback", r->s_fallback, true);
	printf("\"to_server\":{\"bytes\":%zu,\"got\":%zu,\"intact\":%s,\"sha256\":\"%s\"},",
	       r->o.bytes, echo.got, up_ok ? "true" : "false", mine);
	printf("\"to_client\":{\"bytes\":%zu,\"got\":%llu,\"intact\":%s,\"sha256\":\"%s\"},",
	       r->o.bytes, strtoull(got, NULL, 10), down_ok ? "true" : "false", rsha);
	printf("\"elapsed_ms\":%llu,\"status\":%d,\"timed_out\":%s,", (unsigned long long)elapsed,
	       atoi(status), r->timed_out ? "true" : "false");
	printf("\"server_ktls\":{\"tickets_ignored\":%u,\"key_updates\":%u,\"rekey_failed\":%u},",
	       r->sst.tickets_ignored, r->sst.key_updates, r->sst.rekey_failed);
	printf("\"tls_stat\":{\"TlsTxSw\":%ld,\"TlsRxSw\":%ld},",
	       tx0 >= 0 && tx1 >= 0 ? tx1 - tx0 : -1, rx0 >= 0 && rx1 >= 0 ? rx1 - rx0 : -1);
	json_str("server_error", r->server_error, true);
	json_str("server_conn_error", r->server_conn_error, true);
	json_str("node", line, true);
	printf("\"ok\":%s}\n", ok ? "true" : "false");
	fflush(stdout);
	return ok ? 0 : 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: hbone-ktls pair [--bytes N] [--key-update] [--timeout S]\n"
			"       hbone-ktls node --script FILE [--bytes N] [--timeout S]\n"
			"       hbone-ktls node-client --script FILE [--bytes N] [--timeout S]\n");
	exit(2);
}

static void parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {{"bytes", required_argument, 0, 'b'},
					   {"key-update", no_argument, 0, 'k'},
					   {"no-ktls", no_argument, 0, 'n'},
					   {"timeout", required_argument, 0, 't'},
					   {"script", required_argument, 0, 's'},
					   {0, 0, 0, 0}};
	*o = (struct opts){.bytes = 4u << 20, .timeout_s = 60};
	if (argc < 2)
		usage();
	o->mode = argv[1];
	optind = 2;
	for (int c; (c = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
		if (c == 'b')
			o->bytes = strtoull(optarg, NULL, 0);
		else if (c == 'k')
			o->key_update = true;
		else if (c == 'n')
			o->no_ktls = true;
		else if (c == 't')
			o->timeout_s = atoi(optarg);
		else if (c == 's')
			o->script = optarg;
		else
			usage();
	}
	bool node = strcmp(o->mode, "node") == 0 || strcmp(o->mode, "node-client") == 0;
	if (strcmp(o->mode, "pair") != 0 && (!node || !o->script))
		usage();
}

int main(int argc, char **argv)
{
	struct run r = {.app_fd = -1, .up_app = -1};
	parse(argc, argv, &r.o);
	bool node = strcmp(r.o.mode, "node") == 0;
	signal(SIGPIPE, SIG_IGN);
	log_setup("hbone-ktls", LOG_INFO, NULL);
	struct certs c = {0};
	if (certs_init(&c, node ? NODE_ID : SERVER_ID) < 0)
		return 2;
	/* moat's client context refuses tickets (SSL_OP_NO_TICKET), so a well-behaved server
	 * sends none; here it asks for them, so Node sends its two right after the handshake
	 * and the kTLS engine must read them as the non-data records they are. */
	if (node)
		SSL_CTX_clear_options(c.cctx, SSL_OP_NO_TICKET);
	r.loop = loop_new();
	if (strcmp(r.o.mode, "node-client") == 0) {
		int rc = node_client_main(&r, &c);
		loop_free(r.loop);
		certs_free(&c);
		return rc;
	}
	long tx0 = tls_stat("TlsTxSw"), rx0 = tls_stat("TlsRxSw");
	char dir[] = "/tmp/hbone-ktls.XXXXXX";
	pid_t node_pid = -1;
	int cfd = -1, sfd = -1;
	struct err e = {{0}};
	if (node) {
		int port = start_node(&r.o, &c, dir, &node_pid);
		cfd = port > 0 ? connect_port(port) : -1;
	} else {
		int sv[2];
		if (tcp_pair(sv) == 0) {
			cfd = sv[0];
			sfd = sv[1];
		}
	}
	if (cfd < 0 || (!node && sfd < 0)) {
		fprintf(stderr, "hbone-ktls: no connection to the %s\n", node ? "node server" : "pair");
		return 2;
	}
	r.client = h2conn_new(r.loop, H2_CLIENT, cfd, c.cctx, node ? NODE_ID : SERVER_ID,
			      &conn_ops, &r, "hbone-ktls client", &e);
	if (!node)
		r.server = h2conn_new(r.loop, H2_SERVER, sfd, c.sctx, NULL, &conn_ops, &r,
				      "hbone-ktls server", &e);
	if (!r.client || (!node && !r.server)) {
		fprintf(stderr, "hbone-ktls: %s\n", e.msg);
		return 2;
	}
	if (!r.o.key_update && !r.o.no_ktls)
		h2conn_want_ktls(r.client);
	if (r.server && !r.o.no_ktls)
		h2conn_want_ktls(r.server);
	uint64_t t0 = now_ms();
	int ap[2];
	if (tcp_pair(ap) < 0 || !(r.cstream = h2conn_open_stream(r.client, "127.0.0.1:9", NULL, 0,
								 ap[0], &client_stream_ops,
								 &r, &e))) {
		fprintf(stderr, "hbone-ktls: stream: %s\n", e.msg);
		return 2;
	}
	fcntl(ap[0], F_SETFL, fcntl(ap[0], F_GETFL) | O_NONBLOCK);
	r.app_fd = ap[1];
	r.c_send = (struct flow){.fd = ap[1], .seed = 3, .bytes = r.o.bytes};
	/* node echoes what it got; the pair's server app sends its own stream */
	r.c_recv = (struct flow){.fd = ap[1], .seed = node ? 3 : 7, .bytes = r.o.bytes};
	r.s_recv = (struct flow){.seed = 3, .bytes = r.o.bytes};
	r.s_send = (struct flow){.seed = 7, .bytes = r.o.bytes};
	start_thread(&r, send_main, &r.c_send);
	start_thread(&r, recv_main, &r.c_recv);
	loop_timer_init(&r.deadline, on_deadline);
	loop_timer_arm(r.loop, &r.deadline, (uint64_t)r.o.timeout_s * 1000);
	loop_timer_init(&r.poll, on_poll);
	if (r.o.key_update)
		loop_timer_arm(r.loop, &r.poll, 2);
	loop_run(r.loop);
	uint64_t elapsed = now_ms() - t0;
	loop_timer_cancel(r.loop, &r.poll);
	loop_timer_cancel(r.loop, &r.deadline);
	if (r.client) {
		h2conn_ktls_stats(r.client, &r.cst);
		h2conn_abort(r.client, "hbone-ktls: over");
	}
	if (r.server) {
		h2conn_ktls_stats(r.server, &r.sst);
		h2conn_abort(r.server, "hbone-ktls: over");
	}
	/* the agent side is gone: every app socket sees EOF or RST, the threads end */
	for (int i = 0; i < r.n_threads; i++)
		pthread_join(r.th[i], NULL);
	if (node_pid > 0) {
		kill(node_pid, SIGTERM);
		waitpid(node_pid, NULL, 0);
	}
	if (node)
		remove_pems(dir); /* Node has read them long ago */
	long tx1 = tls_stat("TlsTxSw"), rx1 = tls_stat("TlsRxSw");

	bool to_server = node ? true : flow_intact(&r.s_recv);
	bool both = flow_intact(&r.c_recv) && to_server;
	bool ok;
	const char *outcome;
	bool server_ktls = r.s_engine && strncmp(r.s_engine, "ktls", 4) == 0; /* ktls, ktls-splice */
	if (r.o.key_update && !server_ktls) {
		outcome = both ? "intact" : "broken"; /* OpenSSL followed the KeyUpdate itself */
		ok = both && r.key_update_sent;
	} else if (r.o.key_update && both && r.sst.key_updates >= 1) {
		outcome = "rekeyed";
		ok = true;
	} else if (r.o.key_update) {
		/* Closed because the kernel could not follow: said so, counted, nothing misread. */
		outcome = "closed";
		ok = r.sst.rekey_failed >= 1 && strstr(r.server_conn_error, "KeyUpdate") &&
		     flow_prefix_ok(&r.s_recv) && flow_prefix_ok(&r.c_recv);
	} else {
		outcome = both ? "intact" : "broken";
		ok = both && !r.timed_out;
	}
	printf("{");
	json_str("mode", r.o.mode, true);
	json_str("outcome", outcome, true);
	json_str("client_engine", r.c_engine, true);
	json_str("server_engine", node ? "node" : r.s_engine, true);
	json_str("client_fallback", r.c_fallback, true);
	json_str("server_fallback", r.s_fallback, true);
	report_flow("to_client", &r.c_recv);
	if (!node)
		report_flow("to_server", &r.s_recv);
	printf("\"elapsed_ms\":%llu,", (unsigned long long)elapsed);
	printf("\"status\":%d,\"timed_out\":%s,\"key_update_sent\":%s,", r.status,
	       r.timed_out ? "true" : "false", r.key_update_sent ? "true" : "false");
	printf("\"client_ktls\":{\"tickets_ignored\":%u,\"key_updates\":%u,\"rekey_failed\":%u},",
	       r.cst.tickets_ignored, r.cst.key_updates, r.cst.rekey_failed);
	printf("\"server_ktls\":{\"tickets_ignored\":%u,\"key_updates\":%u,\"rekey_failed\":%u},",
	       r.sst.tickets_ignored, r.sst.key_updates, r.sst.rekey_failed);
	printf("\"tls_stat\":{\"TlsTxSw\":%ld,\"TlsRxSw\":%ld},",
	       tx0 >= 0 && tx1 >= 0 ? tx1 - tx0 : -1, rx0 >= 0 && rx1 >= 0 ? rx1 - rx0 : -1);
	json_str("client_error", r.client_error, true);
	json_str("server_error", r.server_error, true);
	json_str("client_conn_error", r.client_conn_error, true);
	json_str("server_conn_error", r.server_conn_error, true);
	printf("\"ok\":%s}\n", ok ? "true" : "false");
	fflush(stdout);
	loop_free(r.loop);
	certs_free(&c);
	return ok ? 0 : 1;
}
