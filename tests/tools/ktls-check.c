/* ktls-check: does this kernel do TLS 1.3 record protection itself (kTLS), and does it get
 * it right? What moatd will ask at start-up, answered with real sockets on 127.0.0.1.
 *
 *   ktls-check [--bytes N] [--timeout S]
 *
 * Prints exactly one JSON line on stdout and exits with:
 *   0  available: TCP_ULP "tls" works and every check below passed
 *   1  broken: the ULP attaches but a check failed (do not use kTLS on this kernel)
 *   2  error: bad arguments, or no loopback TCP pair could be made (nothing was learnt)
 *   3  unavailable: no "tls" ULP (kernel without CONFIG_TLS, module not loaded); the agent
 *      falls back to TLS in user space. Needs no privileges to find this out.
 *
 * Checks, for TLS 1.3 with AES-GCM-128 and AES-GCM-256, keys installed by hand (random per
 * run; OpenSSL plays the other end, so the kernel is checked against an independent
 * implementation of the record layer, RFC 8446 section 5.2):
 *   tx-wire   two records sent through TLS_TX are read raw and opened by OpenSSL
 *             (header 17 03 03, per-record nonce = iv XOR sequence, inner type 0x17);
 *   rx-wire   two records sealed by OpenSSL are written raw and read through TLS_RX;
 *   rx-tamper a record with one flipped ciphertext bit is refused with EBADMSG;
 *   roundtrip --bytes each way between two sockets with TLS_TX and TLS_RX on both ends;
 * then /proc/net/tls_stat must show the TX/RX sockets and the decrypt errors counted.
 * Every wait is bounded by --timeout (default 20 s per transfer). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/util.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

enum ktls_exit {
	EXIT_AVAILABLE = 0,
	EXIT_BROKEN = 1,
	EXIT_ERROR = 2,
	EXIT_UNAVAILABLE = 3,
};

#define REC_HDR 5
#define REC_TAG 16
#define REC_MAX (REC_HDR + 512 + 1 + REC_TAG) /* the wire checks use small records */
#define CT_APPDATA 0x17
#define DEFAULT_BYTES (512 * 1024)
#define DEFAULT_TIMEOUT_S 20
#define IO_CHUNK (64 * 1024)

/* One cipher suite's key material, laid out the way both the kernel and OpenSSL need it. */
struct suite {
	const char *name;     /* "tls13-aes-gcm-128" */
	uint16_t cipher_type; /* TLS_CIPHER_AES_GCM_128 / _256 */
	size_t key_len;
	uint8_t key[32];
	uint8_t iv[8];   /* explicit part of the 12-byte static IV */
	uint8_t salt[4]; /* implicit part: static IV = salt || iv */
};

/* /proc/net/tls_stat counters this program moves. */
enum tls_counter { C_TX_SW, C_RX_SW, C_DECRYPT_ERR, C_COUNT };
static const char *const counter_names[C_COUNT] = {"TlsTxSw", "TlsRxSw", "TlsDecryptError"};

/* What the run found; becomes the JSON line. */
struct report {
	struct sbuf checks; /* JSON array body: {"name":...,"ok":...,"detail":...},... */
	int n_checks, n_failed;
	int timeout_ms;
	size_t bytes;
	long stat_before[C_COUNT];
	/* what the checks should have added to the counters */
	long expect_delta[C_COUNT];
};

struct pair {
	int cli, srv;
};

/* Which directions ktls_socket installs keys for. */
#define DIR_TX 1
#define DIR_RX 2

/* ---- small helpers ---- */

static void fill_pattern(uint8_t *buf, size_t n, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		x = x * 1664525u + 1013904223u;
		buf[i] = (uint8_t)(x >> 24);
	}
}

static void report_check(struct report *r, const char *name, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void report_check(struct report *r, const char *name, bool ok, const char *fmt, ...)
{
	char detail[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	sbuf_printf(&r->checks, "%s{\"name\":", r->n_checks ? "," : "");
	sbuf_json_str(&r->checks, name);
	sbuf_printf(&r->checks, ",\"ok\":%s,\"detail\":", ok ? "true" : "false");
	sbuf_json_str(&r->checks, detail);
	sbuf_puts(&r->checks, "}");
	r->n_checks++;
	if (!ok)
		r->n_failed++;
}

static void pair_close(struct pair *p)
{
	if (p->cli >= 0)
		close(p->cli);
	if (p->srv >= 0)
		close(p->srv);
	p->cli = p->srv = -1;
}

/* A connected TCP pair on 127.0.0.1 (ephemeral port), both ends non-blocking. */
static int pair_open(struct pair *p, struct err *e)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sa_len = sizeof(sa);
	p->cli = p->srv = -1;
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return err_set(e, "socket(AF_INET, SOCK_STREAM): %s", errno_name(errno));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sa_len) < 0) {
		err_set(e, "listen on 127.0.0.1: %s", errno_name(errno));
		close(lfd);
		return -1;
	}
	p->cli = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->cli < 0 || connect(p->cli, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err_set(e, "connect 127.0.0.1:%u: %s", ntohs(sa.sin_port), errno_name(errno));
		close(lfd);
		pair_close(p);
		return -1;
	}
	/* Loopback completes the handshake inside connect(): accept has a connection waiting. */
	struct pollfd pfd = {.fd = lfd, .events = POLLIN};
	errno = ETIMEDOUT;
	if (poll(&pfd, 1, 2000) == 1)
		p->srv = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	int saved = errno;
	close(lfd);
	if (p->srv < 0) {
		err_set(e, "accept on 127.0.0.1:%u within 2 s: %s", ntohs(sa.sin_port),
			errno_name(saved));
		pair_close(p);
		return -1;
	}
	set_nonblock(p->cli);
	set_nonblock(p->srv);
	sock_nodelay(p->cli);
	return 0;
}

static int attach_ulp(int fd, struct err *e)
{
	if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0)
		return err_set(e, "setsockopt(TCP_ULP, \"tls\"): %s", errno_name(errno));
	return 0;
}

/* Install the suite's key with record sequence 0 for one direction (TLS_TX or TLS_RX). */
static int install_key(int fd, int dir, const struct suite *s, struct err *e)
{
	union {
		struct tls12_crypto_info_aes_gcm_128 g128;
		struct tls12_crypto_info_aes_gcm_256 g256;
	} u;
	size_t len;
	memset(&u, 0, sizeof(u));
	u.g128.info.version = TLS_1_3_VERSION;
	u.g128.info.cipher_type = s->cipher_type;
	if (s->cipher_type == TLS_CIPHER_AES_GCM_128) {
		memcpy(u.g128.key, s->key, sizeof(u.g128.key));
		memcpy(u.g128.iv, s->iv, sizeof(u.g128.iv));
		memcpy(u.g128.salt, s->salt, sizeof(u.g128.salt));
		len = sizeof(u.g128);
	} else {
		memcpy(u.g256.key, s->key, sizeof(u.g256.key));
		memcpy(u.g256.iv, s->iv, sizeof(u.g256.iv));
		memcpy(u.g256.salt, s->salt, sizeof(u.g256.salt));
		len = sizeof(u.g256);
	}
	if (setsockopt(fd, SOL_TLS, dir, &u, (socklen_t)len) < 0)
		return err_set(e, "setsockopt(SOL_TLS, %s, %s): %s", dir == TLS_TX ? "TLS_TX" : "TLS_RX",
			       s->name, errno_name(errno));
	return 0;
}

static int ktls_socket(int fd, int dirs, const struct suite *s, struct err *e)
{
	if (attach_ulp(fd, e) < 0)
		return -1;
	if ((dirs & DIR_TX) && install_key(fd, TLS_TX, s, e) < 0)
		return -1;
	if ((dirs & DIR_RX) && install_key(fd, TLS_RX, s, e) < 0)
		return -1;
	return 0;
}

/* Wait for fd to become ready for events; -1 with ETIMEDOUT when timeout_ms passes. */
static int wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	int n = poll(&pfd, 1, timeout_ms);
	if (n == 0)
		errno = ETIMEDOUT;
	return n > 0 ? 0 : -1;
}

static int send_all(int fd, const uint8_t *buf, size_t n, int timeout_ms, struct err *e)
{
	size_t done = 0;
	while (done < n) {
		ssize_t w = send(fd, buf + done, n - done, MSG_NOSIGNAL);
		if (w > 0) {
			done += (size_t)w;
		} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
			return err_set(e, "send after %zu of %zu bytes: %s", done, n, errno_name(errno));
		} else if (wait_fd(fd, POLLOUT, timeout_ms) < 0) {
			return err_set(e, "send stalled after %zu of %zu bytes: %s", done, n,
				       errno_name(errno));
		}
	}
	return 0;
}

/* Read exactly n bytes; the errno of a failed recv is kept for the caller (EBADMSG). */
static int recv_exact(int fd, uint8_t *buf, size_t n, int timeout_ms, struct err *e)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = recv(fd, buf + done, n - done, 0);
		if (r > 0) {
			done += (size_t)r;
		} else if (r == 0) {
			errno = EPIPE;
			return err_set(e, "EOF after %zu of %zu bytes", done, n);
		} else if (errno != EAGAIN && errno != EINTR) {
			int saved = errno;
			err_set(e, "recv after %zu of %zu bytes: %s", done, n, errno_name(errno));
			errno = saved;
			return -1;
		} else if (wait_fd(fd, POLLIN, timeout_ms) < 0) {
			int saved = errno;
			err_set(e, "recv stalled after %zu of %zu bytes: %s", done, n, errno_name(errno));
			errno = saved;
			return -1;
		}
	}
	return 0;
}

/* ---- the record layer, done by OpenSSL (RFC 8446 5.2-5.3) ---- */

static void record_nonce(const struct suite *s, uint64_t seq, uint8_t nonce[12])
{
	memcpy(nonce, s->salt, 4);
	memcpy(nonce + 4, s->iv, 8);
	for (int i = 0; i < 8; i++)
		nonce[11 - i] ^= (uint8_t)(seq >> (8 * i));
}

static const EVP_CIPHER *suite_cipher(const struct suite *s)
{
	return s->key_len == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
}

/* Seal plain (type 0x17 appended) into rec; returns the record's length or -1. */
static int record_seal(const struct suite *s, uint64_t seq, const uint8_t *plain, size_t n,
		       uint8_t *rec, size_t cap)
{
	size_t inner = n + 1, total = REC_HDR + inner + REC_TAG;
	uint8_t nonce[12];
	int len = 0, ok;
	if (total > cap)
		return -1;
	rec[0] = CT_APPDATA; /* legacy type and version: always 17 03 03 in TLS 1.3 */
	rec[1] = 3;
	rec[2] = 3;
	rec[3] = (uint8_t)((inner + REC_TAG) >> 8);
	rec[4] = (uint8_t)(inner + REC_TAG);
	uint8_t *body = rec + REC_HDR;
	memcpy(body, plain, n);
	body[n] = CT_APPDATA;
	record_nonce(s, seq, nonce);
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	ok = c && EVP_EncryptInit_ex(c, suite_cipher(s), NULL, s->key, nonce) == 1 &&
	     EVP_EncryptUpdate(c, NULL, &len, rec, REC_HDR) == 1 &&
	     EVP_EncryptUpdate(c, body, &len, body, (int)inner) == 1 &&
	     EVP_EncryptFinal_ex(c, body + len, &len) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, REC_TAG, body + inner) == 1;
	EVP_CIPHER_CTX_free(c);
	return ok ? (int)total : -1;
}

/* Open one record in place; on success *plain points into rec, *plain_len excludes the
 * inner content type (which must be application data, after optional zero padding). */
static int record_open(const struct suite *s, uint64_t seq, uint8_t *rec, size_t rec_len,
		       uint8_t **plain, size_t *plain_len, struct err *e)
{
	uint8_t nonce[12];
	int len = 0, ok;
	if (rec_len < REC_HDR + 1 + REC_TAG)
		return err_set(e, "record of %zu bytes is too short", rec_len);
	size_t ct_len = rec_len - REC_HDR - REC_TAG;
	uint8_t *body = rec + REC_HDR;
	record_nonce(s, seq, nonce);
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	ok = c && EVP_DecryptInit_ex(c, suite_cipher(s), NULL, s->key, nonce) == 1 &&
	     EVP_DecryptUpdate(c, NULL, &len, rec, REC_HDR) == 1 &&
	     EVP_DecryptUpdate(c, body, &len, body, (int)ct_len) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, REC_TAG, body + ct_len) == 1 &&
	     EVP_DecryptFinal_ex(c, body + len, &len) == 1;
	EVP_CIPHER_CTX_free(c);
	if (!ok)
		return err_set(e, "record %llu does not open with OpenSSL (wrong nonce, key or AAD)",
			       (unsigned long long)seq);
	size_t inner = ct_len;
	while (inner > 0 && body[inner - 1] == 0)
		inner--;
	if (inner == 0 || body[inner - 1] != CT_APPDATA)
		return err_set(e, "record %llu: inner content type %#x, want 0x17",
			       (unsigned long long)seq, inner ? body[inner - 1] : 0);
	*plain = body;
	*plain_len = inner - 1;
	return 0;
}

/* ---- the checks ---- */

static const size_t wire_msg_len[2] = {100, 333}; /* two records, different sizes */

/* The kernel seals, OpenSSL opens. */
static int check_tx_wire(struct report *r, const struct suite *s, struct err *e)
{
	struct pair p;
	int rc = -1;
	if (pair_open(&p, e) < 0)
		return -1;
	if (ktls_socket(p.cli, DIR_TX, s, e) < 0)
		goto out;
	r->expect_delta[C_TX_SW]++;
	for (uint64_t seq = 0; seq < 2; seq++) {
		uint8_t msg[512], rec[REC_MAX], *plain;
		size_t n = wire_msg_len[seq], plain_len = 0, body_len;
		fill_pattern(msg, n, (uint32_t)seq + 7);
		if (send_all(p.cli, msg, n, r->timeout_ms, e) < 0 ||
		    recv_exact(p.srv, rec, REC_HDR, r->timeout_ms, e) < 0) {
			err_wrap(e, "record %llu", (unsigned long long)seq);
			goto out;
		}
		body_len = ((size_t)rec[3] << 8) | rec[4];
		if (rec[0] != CT_APPDATA || rec[1] != 3 || rec[2] != 3 || body_len != n + 1 + REC_TAG) {
			err_set(e, "record %llu header %02x %02x %02x length %zu, want 17 03 03 length %zu",
				(unsigned long long)seq, rec[0], rec[1], rec[2], body_len, n + 1 + REC_TAG);
			goto out;
		}
		if (recv_exact(p.srv, rec + REC_HDR, body_len, r->timeout_ms, e) < 0)
			goto out;
		if (memmem(rec, REC_HDR + body_len, msg, 16)) {
			err_set(e, "record %llu carries the plaintext in the clear", (unsigned long long)seq);
			goto out;
		}
		if (record_open(s, seq, rec, REC_HDR + body_len, &plain, &plain_len, e) < 0)
			goto out;
		if (plain_len != n || memcmp(plain, msg, n) != 0) {
			err_set(e, "record %llu opened to other bytes (%zu, want %zu)",
				(unsigned long long)seq, plain_len, n);
			goto out;
		}
	}
	rc = 0;
out:
	pair_close(&p);
	return rc;
}

/* OpenSSL seals, the kernel opens. */
static int check_rx_wire(struct report *r, const struct suite *s, struct err *e)
{
	struct pair p;
	int rc = -1;
	if (pair_open(&p, e) < 0)
		return -1;
	if (ktls_socket(p.srv, DIR_RX, s, e) < 0)
		goto out;
	r->expect_delta[C_RX_SW]++;
	for (uint64_t seq = 0; seq < 2; seq++) {
		uint8_t msg[512], rec[REC_MAX], got[512];
		size_t n = wire_msg_len[seq];
		fill_pattern(msg, n, (uint32_t)seq + 70);
		int rec_len = record_seal(s, seq, msg, n, rec, sizeof(rec));
		if (rec_len < 0) {
			err_set(e, "OpenSSL could not seal record %llu", (unsigned long long)seq);
			goto out;
		}
		if (send_all(p.cli, rec, (size_t)rec_len, r->timeout_ms, e) < 0 ||
		    recv_exact(p.srv, got, n, r->timeout_ms, e) < 0) {
			err_wrap(e, "record %llu", (unsigned long long)seq);
			goto out;
		}
		if (memcmp(got, msg, n) != 0) {
			err_set(e, "record %llu decrypted to other bytes", (unsigned long long)seq);
			goto out;
		}
	}
	rc = 0;
out:
	pair_close(&p);
	return rc;
}

/* A record with one flipped bit must be refused, never delivered. */
static int check_rx_tamper(struct report *r, const struct suite *s, struct err *e)
{
	struct pair p;
	uint8_t msg[64], rec[REC_MAX], got[64];
	int rc = -1;
	if (pair_open(&p, e) < 0)
		return -1;
	if (ktls_socket(p.srv, DIR_RX, s, e) < 0)
		goto out;
	r->expect_delta[C_RX_SW]++;
	fill_pattern(msg, sizeof(msg), 99);
	int rec_len = record_seal(s, 0, msg, sizeof(msg), rec, sizeof(rec));
	if (rec_len < 0) {
		err_set(e, "OpenSSL could not seal the record");
		goto out;
	}
	rec[REC_HDR + 10] ^= 0x01;
	if (send_all(p.cli, rec, (size_t)rec_len, r->timeout_ms, e) < 0)
		goto out;
	if (recv_exact(p.srv, got, sizeof(got), r->timeout_ms, e) == 0) {
		err_set(e, "a tampered record was delivered as data");
		goto out;
	}
	if (errno != EBADMSG) {
		err_wrap(e, "want EBADMSG for a tampered record");
		goto out;
	}
	r->expect_delta[C_DECRYPT_ERR]++;
	rc = 0;
out:
	pair_close(&p);
	return rc;
}

/* Move n bytes from one socket to the other, sending and receiving in the same loop (both
 * socket buffers are finite: sending everything first would stall). */
static int transfer(int from, int to, size_t n, uint32_t seed, int timeout_ms, struct err *e)
{
	uint8_t *out = xmalloc(n), *in = xmalloc(n);
	size_t sent = 0, got = 0;
	int rc = -1;
	fill_pattern(out, n, seed);
	while (got < n) {
		struct pollfd pfd[2] = {{.fd = to, .events = POLLIN},
					{.fd = from, .events = sent < n ? POLLOUT : 0}};
		int ready = poll(pfd, 2, timeout_ms);
		if (ready <= 0) {
			err_set(e, "stalled with %zu sent, %zu received of %zu: %s", sent, got, n,
				ready == 0 ? "no progress within the timeout" : errno_name(errno));
			goto out;
		}
		if (sent < n && (pfd[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
			size_t chunk = n - sent < IO_CHUNK ? n - sent : IO_CHUNK;
			ssize_t w = send(from, out + sent, chunk, MSG_NOSIGNAL);
			if (w > 0)
				sent += (size_t)w;
			else if (w < 0 && errno != EAGAIN && errno != EINTR) {
				err_set(e, "send after %zu of %zu bytes: %s", sent, n, errno_name(errno));
				goto out;
			}
		}
		if (pfd[0].revents & (POLLIN | POLLERR | POLLHUP)) {
			ssize_t rd = recv(to, in + got, n - got, 0);
			if (rd > 0)
				got += (size_t)rd;
			else if (rd == 0 || (errno != EAGAIN && errno != EINTR)) {
				err_set(e, "recv after %zu of %zu bytes: %s", got, n,
					rd == 0 ? "EOF" : errno_name(errno));
				goto out;
			}
		}
	}
	if (memcmp(in, out, n) != 0) {
		err_set(e, "%zu bytes arrived but differ from what was sent", n);
		goto out;
	}
	rc = 0;
out:
	free(in);
	free(out);
	return rc;
}

static int check_roundtrip(struct report *r, const struct suite *s, struct err *e)
{
	struct pair p;
	int rc = -1;
	if (pair_open(&p, e) < 0)
		return -1;
	if (ktls_socket(p.cli, DIR_TX | DIR_RX, s, e) < 0 ||
	    ktls_socket(p.srv, DIR_TX | DIR_RX, s, e) < 0)
		goto out;
	r->expect_delta[C_TX_SW] += 2;
	r->expect_delta[C_RX_SW] += 2;
	if (transfer(p.cli, p.srv, r->bytes, 1, r->timeout_ms, e) < 0) {
		err_wrap(e, "client -> server");
		goto out;
	}
	if (transfer(p.srv, p.cli, r->bytes, 2, r->timeout_ms, e) < 0) {
		err_wrap(e, "server -> client");
		goto out;
	}
	rc = 0;
out:
	pair_close(&p);
	return rc;
}

/* ---- /proc/net/tls_stat ---- */

static bool read_counters(long out[C_COUNT])
{
	FILE *f = fopen("/proc/net/tls_stat", "re");
	char name[64];
	long value;
	for (int i = 0; i < C_COUNT; i++)
		out[i] = -1;
	if (!f)
		return false;
	while (fscanf(f, "%63s %ld", name, &value) == 2)
		for (int i = 0; i < C_COUNT; i++)
			if (strcmp(name, counter_names[i]) == 0)
				out[i] = value;
	fclose(f);
	return true;
}

static void check_counters(struct report *r, struct sbuf *deltas)
{
	long after[C_COUNT];
	struct sbuf why;
	sbuf_init(&why);
	if (!read_counters(after)) {
		report_check(r, "tls_stat", false, "/proc/net/tls_stat: %s", strerror(errno));
		return;
	}
	for (int i = 0; i < C_COUNT; i++) {
		long delta = after[i] - r->stat_before[i];
		sbuf_printf(deltas, "%s\"%s\":%ld", i ? "," : "", counter_names[i], delta);
		if (after[i] < 0 || r->stat_before[i] < 0)
			sbuf_printf(&why, " %s missing;", counter_names[i]);
		else if (delta < r->expect_delta[i])
			sbuf_printf(&why, " %s moved by %ld, want at least %ld;", counter_names[i], delta,
				    r->expect_delta[i]);
	}
	report_check(r, "tls_stat", why.len == 0, "%s",
		     why.len ? why.s : "TX, RX and decrypt-error counters moved as expected");
	sbuf_free(&why);
}

/* ---- main ---- */

struct check {
	const char *name;
	int (*fn)(struct report *, const struct suite *, struct err *);
};

static const struct check checks[] = {
	{"tx-wire", check_tx_wire},
	{"rx-wire", check_rx_wire},
	{"rx-tamper", check_rx_tamper},
	{"roundtrip", check_roundtrip},
};

static void run_suite(struct report *r, struct suite *s)
{
	if (getrandom(s->key, sizeof(s->key), 0) != sizeof(s->key) ||
	    getrandom(s->iv, sizeof(s->iv), 0) != sizeof(s->iv) ||
	    getrandom(s->salt, sizeof(s->salt), 0) != sizeof(s->salt)) {
		report_check(r, s->name, false, "getrandom: %s", errno_name(errno));
		return;
	}
	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
		char name[96];
		struct err e = {{0}};
		uint64_t t0 = now_ms();
		snprintf(name, sizeof(name), "%s %s", s->name, checks[i].name);
		int rc = checks[i].fn(r, s, &e);
		report_check(r, name, rc == 0, "%s (%llu ms)", rc == 0 ? "ok" : e.msg,
			     (unsigned long long)(now_ms() - t0));
	}
}

static void print_line(const char *verdict, const char *reason, struct report *r,
		       const char *deltas)
{
	struct utsname u;
	struct sbuf out;
	sbuf_init(&out);
	if (uname(&u) < 0)
		snprintf(u.release, sizeof(u.release), "unknown");
	sbuf_puts(&out, "{\"ktls\":");
	sbuf_json_str(&out, verdict);
	sbuf_puts(&out, ",\"kernel\":");
	sbuf_json_str(&out, u.release);
	sbuf_puts(&out, ",\"reason\":");
	sbuf_json_str(&out, reason);
	sbuf_printf(&out, ",\"bytes\":%zu,\"passed\":%d,\"failed\":%d,\"checks\":[%s]",
		    r->bytes, r->n_checks - r->n_failed, r->n_failed, r->checks.s ? r->checks.s : "");
	sbuf_printf(&out, ",\"tls_stat_delta\":{%s}}\n", deltas ? deltas : "");
	fputs(out.s, stdout);
	fflush(stdout);
	sbuf_free(&out);
}

/* Can a socket take the "tls" ULP at all? Fills reason when not. */
static enum ktls_exit probe_ulp(char *reason, size_t len)
{
	struct pair p;
	struct err e = {{0}};
	if (pair_open(&p, &e) < 0) {
		snprintf(reason, len, "no loopback TCP pair to probe with: %s", e.msg);
		return EXIT_ERROR;
	}
	int rc = setsockopt(p.cli, SOL_TCP, TCP_ULP, "tls", sizeof("tls"));
	int saved = errno;
	pair_close(&p);
	if (rc == 0)
		return EXIT_AVAILABLE;
	if (saved == ENOENT)
		snprintf(reason, len,
			 "setsockopt(TCP_ULP, \"tls\") on a 127.0.0.1 TCP socket: ENOENT: this kernel "
			 "has no \"tls\" ULP (built without CONFIG_TLS, or the tls module is not loaded "
			 "and this process may not load it); use TLS in user space");
	else
		snprintf(reason, len,
			 "setsockopt(TCP_ULP, \"tls\") on a 127.0.0.1 TCP socket: %s; use TLS in "
			 "user space", errno_name(saved));
	return EXIT_UNAVAILABLE;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ktls-check [--bytes N] [--timeout S]\n"
		   "  one JSON line on stdout; exit 0 available, 1 broken, 2 error, 3 unavailable\n");
}

static int parse_args(int argc, char **argv, struct report *r)
{
	static const struct option opts[] = {{"bytes", required_argument, NULL, 'b'},
					     {"timeout", required_argument, NULL, 't'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "b:t:h", opts, NULL)) != -1) {
		char *end;
		unsigned long v = 0;
		if (c == 'b' || c == 't') {
			errno = 0;
			v = strtoul(optarg, &end, 0);
			if (errno || end == optarg || *end || optarg[0] == '-' || v == 0 ||
			    v > (c == 'b' ? 64ul << 20 : 3600ul)) {
				fprintf(stderr, "ktls-check: --%s %s: want %s\n",
					c == 'b' ? "bytes" : "timeout", optarg,
					c == 'b' ? "1..67108864 bytes" : "1..3600 seconds");
				return -1;
			}
		}
		if (c == 'b')
			r->bytes = v;
		else if (c == 't')
			r->timeout_ms = (int)v * 1000;
		else {
			usage(c == 'h' ? stdout : stderr);
			return c == 'h' ? 1 : -1;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct report r = {.bytes = DEFAULT_BYTES, .timeout_ms = DEFAULT_TIMEOUT_S * 1000};
	char reason[1024] = "";
	sbuf_init(&r.checks);
	int args = parse_args(argc, argv, &r);
	if (args != 0)
		return args > 0 ? 0 : EXIT_ERROR;

	enum ktls_exit verdict = probe_ulp(reason, sizeof(reason));
	if (verdict != EXIT_AVAILABLE) {
		print_line(verdict == EXIT_UNAVAILABLE ? "unavailable" : "error", reason, &r, NULL);
		sbuf_free(&r.checks);
		return verdict;
	}
	read_counters(r.stat_before);
	struct suite suites[] = {
		{.name = "tls13-aes-gcm-128", .cipher_type = TLS_CIPHER_AES_GCM_128, .key_len = 16},
		{.name = "tls13-aes-gcm-256", .cipher_type = TLS_CIPHER_AES_GCM_256, .key_len = 32},
	};
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		run_suite(&r, &suites[i]);
	struct sbuf deltas;
	sbuf_init(&deltas);
	check_counters(&r, &deltas);
	if (r.n_failed)
		snprintf(reason, sizeof(reason), "the tls ULP attaches but %d of %d checks failed",
			 r.n_failed, r.n_checks);
	print_line(r.n_failed ? "broken" : "available", r.n_failed ? reason : NULL, &r, deltas.s);
	sbuf_free(&deltas);
	sbuf_free(&r.checks);
	return r.n_failed ? EXIT_BROKEN : EXIT_AVAILABLE;
}
