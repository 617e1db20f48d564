/* transport_ktls: the session's records are encrypted and decrypted by the kernel (TLS_TX /
 * TLS_RX on the socket); user space sends and receives plaintext.
 *
 * Record sequence numbers. Each direction's key starts at sequence 0 (RFC 8446 5.3), and
 * the kernel is told 0: that is right only if OpenSSL sent and read no record under the
 * application keys before the switch. The switch happens the moment SSL_do_handshake
 * returns 1, before any SSL_read or SSL_write:
 *   - TX: OpenSSL sent nothing under the application keys. Our server sends no session
 *     tickets (tls_server_ctx sets num_tickets 0; checked on the SSL here, since tickets are
 *     written right after the server's handshake completes), neither side sends early or
 *     0.5-RTT data.
 *   - RX: read_ahead is off (checked), so OpenSSL read the socket record by record and
 *     stopped after the peer's Finished; whatever the peer sent next (tickets, the HTTP/2
 *     preface) is still in the socket and will be decrypted by the kernel from sequence 0.
 *     SSL_has_pending() == 0 proves nothing sits in OpenSSL's buffers.
 * Any doubt leaves the connection on OpenSSL (a fallback, counted), never a guess.
 *
 * Order of the switch: ULP, then TLS_RX, then TLS_TX. A failure up to and including TLS_RX
 * leaves the socket plain TCP (the kernel keeps no half-configured direction), so the
 * connection continues on OpenSSL. TLS_TX after a successful TLS_RX uses the same cipher
 * and has never been seen to fail; if it does, the connection is closed (it can be neither
 * OpenSSL's nor the kernel's any more). */
#include "hbone/transport.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/tls.h>
#include <openssl/crypto.h>

#include "core/util.h"
#include "hbone/ktls.h"
#include "identity/identity.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef SOL_TLS
#define SOL_TLS 282
#endif

#define REC_APPLICATION_DATA 23
#define REC_ALERT 21
#define REC_HANDSHAKE 22
/* Non-data records handled per read() call before yielding (a flood of tickets must not
 * hold the loop). */
#define KTLS_CTL_ROUNDS 16

struct tp_ktls {
	struct transport t;
	SSL *ssl; /* kept only to be freed with the connection; never used for records */
	struct ktls_keys rx, tx;
	bool closed_sent;
};

static struct tp_ktls *ktls_of(struct transport *t)
{
	return container_of(t, struct tp_ktls, t);
}

static int install(int fd, int dir, const struct ktls_keys *k)
{
	uint8_t ci[KTLS_CRYPTO_INFO_MAX];
	size_t n = ktls_crypto_info(k, ci);
	if (!n) {
		errno = ENOPROTOOPT;
		return -1;
	}
	int rc = setsockopt(fd, SOL_TLS, dir, ci, (socklen_t)n);
	OPENSSL_cleanse(ci, sizeof(ci));
	return rc;
}

/* Send one non-data record (alert, KeyUpdate) through kTLS TX. */
static ssize_t send_record(int fd, uint8_t type, const void *p, size_t n)
{
	char cbuf[CMSG_SPACE(sizeof(uint8_t))] = {0};
	struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			   .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_TLS;
	cm->cmsg_type = TLS_SET_RECORD_TYPE;
	cm->cmsg_len = CMSG_LEN(sizeof(uint8_t));
	*CMSG_DATA(cm) = type;
	return sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* The peer moved to its next key: so does our RX. If it asked, our TX follows after telling
 * it so (our KeyUpdate goes out under the old key). Kernels before 6.14 refuse a second
 * TLS_RX/TLS_TX: the connection then ends here, said plainly, rather than misreading. */
static ssize_t key_update(struct tp_ktls *k, bool update_requested)
{
	struct transport *t = &k->t;
	if (ktls_keys_update(&k->rx) < 0 || install(t->fd, TLS_RX, &k->rx) < 0) {
		t->stats.rekey_failed++;
		snprintf(t->why, sizeof(t->why),
			 "kTLS: the peer sent a KeyUpdate and this kernel cannot install the next "
			 "receive key (setsockopt TLS_RX: %s): connection closed",
			 errno_name(errno));
		return TP_ERROR;
	}
	t->stats.key_updates++;
	if (!update_requested)
		return 0;
	static const uint8_t ku[5] = {24, 0, 0, 1, 0}; /* KeyUpdate(update_not_requested) */
	if (send_record(t->fd, REC_HANDSHAKE, ku, sizeof(ku)) != (ssize_t)sizeof(ku) ||
	    ktls_keys_update(&k->tx) < 0 || install(t->fd, TLS_TX, &k->tx) < 0) {
		t->stats.rekey_failed++;
		snprintf(t->why, sizeof(t->why),
			 "kTLS: the peer asked for a KeyUpdate and our send key could not follow "
			 "(%s): connection closed",
			 errno_name(errno));
		return TP_ERROR;
	}
	return 0;
}

/* A non-data record arrived: 0 to keep reading, or the TP_ result that ends the read. */
static ssize_t control_record(struct tp_ktls *k, uint8_t type, const uint8_t *p, size_t n)
{
	struct transport *t = &k->t;
	bool upd = false;
	char why[160];
	switch (ktls_control_record(type, p, n, &upd, why, sizeof(why))) {
	case KTLS_CTL_IGNORE:
		t->stats.tickets_ignored++;
		return 0;
	case KTLS_CTL_KEY_UPDATE:
		return key_update(k, upd);
	case KTLS_CTL_CLOSE:
		t->eof_clean = true;
		return TP_CLOSED;
	case KTLS_CTL_FAIL:
	default:
		snprintf(t->why, sizeof(t->why), "kTLS read: %s", why);
		return TP_ERROR;
	}
}

static ssize_t ktls_read(struct transport *t, void *buf, size_t len)
{
	struct tp_ktls *k = ktls_of(t);
	for (int round = 0; round < KTLS_CTL_ROUNDS; round++) {
		char cbuf[CMSG_SPACE(sizeof(uint8_t))];
		struct iovec iov = {.iov_base = buf, .iov_len = len};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				   .msg_controllen = sizeof(cbuf)};
		ssize_t n = recvmsg(t->fd, &m, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return TP_WANT_READ;
		if (n < 0) {
			snprintf(t->why, sizeof(t->why), "kTLS read: %s%s", errno_name(errno),
				 errno == EBADMSG ? " (a record failed authentication)" : "");
			return TP_ERROR;
		}
		if (n == 0)
			return TP_CLOSED; /* EOF without close_notify */
		uint8_t type = REC_APPLICATION_DATA;
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		if (cm && cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE)
			type = *CMSG_DATA(cm);
		if (type == REC_APPLICATION_DATA)
			return n;
		ssize_t r = control_record(k, type, buf, (size_t)n);
		if (r < 0)
			return r;
	}
	return TP_WANT_READ; /* ... after a burst of control records: epoll says if more */
}

static ssize_t ktls_write(struct transport *t, const void *buf, size_t len)
{
	for (;;) {
		ssize_t n = send(t->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n >= 0)
			return n > 0 ? n : TP_WANT_WRITE;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return TP_WANT_WRITE;
		snprintf(t->why, sizeof(t->why), "kTLS write: %s", errno_name(errno));
		return TP_ERROR;
	}
}

static bool ktls_pending(const struct transport *t)
{
	(void)t;
	return false; /* the kernel holds everything: epoll sees it */
}

static void ktls_shutdown(struct transport *t)
{
	struct tp_ktls *k = ktls_of(t);
	static const uint8_t close_notify[2] = {1, 0};
	if (!k->closed_sent)
		send_record(t->fd, REC_ALERT, close_notify, sizeof(close_notify));
	k->closed_sent = true;
}

static void ktls_free(struct transport *t)
{
	struct tp_ktls *k = ktls_of(t);
	SSL_free(k->ssl);
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

static const struct transport_ops ktls_ops = {
	.engine = "ktls",
	.read = ktls_read,
	.write = ktls_write,
	.pending = ktls_pending,
	.shutdown = ktls_shutdown,
	.free = ktls_free,
};

#define FAIL(r, ...)                                                                          \
	do {                                                                                  \
		snprintf(reason, reason_len, "%s", r);                                        \
		snprintf(why, why_len, __VA_ARGS__);                                          \
		goto fail;                                                                    \
	} while (0)

struct transport *transport_ktls_new(SSL *ssl, int fd, char *reason, size_t reason_len,
				     char *why, size_t why_len)
{
	uint8_t cs[TLS_SECRET_MAX], ss[TLS_SECRET_MAX];
	struct tp_ktls *k = xcalloc(1, sizeof(*k));
	const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
	uint16_t suite = cipher ? SSL_CIPHER_get_protocol_id(cipher) : 0;
	bool server = SSL_is_server(ssl);
	size_t slen = tls_traffic_secrets(ssl, cs, ss);
	tls_forget_secrets(ssl);
	if (SSL_version(ssl) != TLS1_3_VERSION)
		FAIL("version", "kTLS needs TLS 1.3, the session is %s", SSL_get_version(ssl));
	if (SSL_get_read_ahead(ssl) || SSL_has_pending(ssl) || SSL_pending(ssl))
		FAIL("buffered", "OpenSSL already holds bytes read past the handshake");
	if (server && SSL_get_num_tickets(ssl) != 0)
		FAIL("tickets", "the server is set to send session tickets");
	if (!slen)
		FAIL("secrets", "the traffic secrets were not captured");
	const uint8_t *rx = server ? cs : ss, *tx = server ? ss : cs;
	if (ktls_keys_from_secret(suite, rx, slen, &k->rx) < 0 ||
	    ktls_keys_from_secret(suite, tx, slen, &k->tx) < 0 ||
	    !ktls_crypto_info(&k->rx, (uint8_t[KTLS_CRYPTO_INFO_MAX]){0}))
		FAIL("cipher", "cipher %s has no kTLS mapping here",
		     cipher ? SSL_CIPHER_get_name(cipher) : "?");
	if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) < 0)
		FAIL("ulp", "setsockopt(TCP_ULP, \"tls\"): %s", errno_name(errno));
	if (install(fd, TLS_RX, &k->rx) < 0)
		FAIL(errno == ENOENT || errno == EINVAL || errno == ENOPROTOOPT ? "cipher"
										 : "setsockopt",
		     "setsockopt(TLS_RX, %s): %s", SSL_CIPHER_get_name(cipher), errno_name(errno));
	if (install(fd, TLS_TX, &k->tx) < 0) {
		/* RX is the kernel's already: OpenSSL cannot take the connection back. */
		snprintf(reason, reason_len, "tx");
		snprintf(why, why_len, "setsockopt(TLS_TX, %s): %s after TLS_RX succeeded",
			 SSL_CIPHER_get_name(cipher), errno_name(errno));
		k->t.ops = &ktls_ops;
		k->t.fd = fd;
		k->ssl = ssl;
		k->t.broken = true;
		k->closed_sent = true; /* no TX key: an alert would go out in clear */
		snprintf(k->t.why, sizeof(k->t.why), "kTLS switch failed halfway: %s", why);
		goto out;
	}
	k->t.ops = &ktls_ops;
	k->t.fd = fd;
	k->ssl = ssl;
	reason[0] = why[0] = 0;
	goto out;
fail:
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
	k = NULL;
out:
	OPENSSL_cleanse(cs, sizeof(cs));
	OPENSSL_cleanse(ss, sizeof(ss));
	return k ? &k->t : NULL;
}
