/* transport_ossl: the user-space engine. OpenSSL does the record layer; its verdicts are
 * turned into the TP_ results h2.c understands, with the reason text h2.c used to build
 * itself (so the log lines of the user-space engine did not change with the seam). */
#include "hbone/transport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "core/util.h"
#include "identity/identity.h"

#define OSSL_READ_AHEAD (64u << 10)

struct tp_ossl {
	struct transport t;
	SSL *ssl;
};

static SSL *ossl_of(const struct transport *t)
{
	return container_of(t, struct tp_ossl, t)->ssl;
}

/* The text of a failed SSL call: the peer's verification failure if there was one, else
 * OpenSSL's first queued error. A peer that left without close_notify is its own case. */
static ssize_t ossl_fail(struct transport *t, SSL *ssl, const char *what)
{
	if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
		ERR_clear_error();
		snprintf(t->why, sizeof(t->why),
			 "peer closed the connection without a TLS close_notify");
		return TP_ERROR;
	}
	const char *verify = tls_verify_error(ssl);
	unsigned long e = ERR_get_error();
	char buf[200];
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	snprintf(t->why, sizeof(t->why), "%s: %s", what,
		 verify ? verify : e ? buf : "connection closed");
	return TP_ERROR;
}

static ssize_t ossl_read(struct transport *t, void *buf, size_t len)
{
	SSL *ssl = ossl_of(t);
	ERR_clear_error();
	int n = SSL_read(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (n > 0)
		return n;
	switch (SSL_get_error(ssl, n)) {
	case SSL_ERROR_WANT_READ:
		return TP_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return TP_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		t->eof_clean = true;
		return TP_CLOSED;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0)
			return TP_CLOSED; /* bare EOF or reset: the caller words it */
		/* fallthrough */
	default:
		return ossl_fail(t, ssl, "TLS read");
	}
}

static ssize_t ossl_write(struct transport *t, const void *buf, size_t len)
{
	SSL *ssl = ossl_of(t);
	ERR_clear_error();
	int w = SSL_write(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (w > 0)
		return w;
	int err = SSL_get_error(ssl, w);
	if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
		return TP_WANT_WRITE;
	return ossl_fail(t, ssl, "TLS write");
}

static bool ossl_pending(const struct transport *t)
{
	return SSL_has_pending(ossl_of(t)) == 1;
}

static void ossl_shutdown(struct transport *t)
{
	SSL_shutdown(ossl_of(t)); /* never blocks: the socket is non-blocking */
}

static void ossl_free(struct transport *t)
{
	struct tp_ossl *o = container_of(t, struct tp_ossl, t);
	SSL_free(o->ssl);
	free(o);
}

/* OpenSSL only schedules the KeyUpdate; a handshake call sends it at once. */
static int ossl_key_update(struct transport *t, bool request_peer)
{
	SSL *ssl = ossl_of(t);
	ERR_clear_error();
	if (SSL_key_update(ssl, request_peer ? SSL_KEY_UPDATE_REQUESTED
					     : SSL_KEY_UPDATE_NOT_REQUESTED) != 1)
		return -1;
	SSL_do_handshake(ssl);
	ERR_clear_error();
	return 0;
}

static const struct transport_ops ossl_ops = {
	.engine = "userspace",
	.read = ossl_read,
	.write = ossl_write,
	.pending = ossl_pending,
	.shutdown = ossl_shutdown,
	.free = ossl_free,
	.key_update = ossl_key_update,
};

struct transport *transport_ossl_new(SSL *ssl, int fd)
{
	struct tp_ossl *o = xcalloc(1, sizeof(*o));
	o->t.ops = &ossl_ops;
	o->t.fd = fd;
	o->ssl = ssl;
	/* Read ahead: one read() takes what the socket holds, up to OSSL_READ_AHEAD (several
	 * 16 KiB records), instead of a 5-byte header and then a body per record: the receiving
	 * side made two syscalls per record (bench/inbound). Only from here on: during the
	 * handshake nothing may be read past it (kTLS takes the socket over from there). The
	 * buffer is still released when empty (SSL_MODE_RELEASE_BUFFERS: idle memory). */
	SSL_set_default_read_buffer_len(ssl, OSSL_READ_AHEAD);
	SSL_set_read_ahead(ssl, 1);
	return &o->t;
}
