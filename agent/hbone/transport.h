/* The transport of one HBONE connection after its TLS handshake: how HTTP/2 bytes reach and
 * leave the TLS session. h2.c speaks only through these ops, so the engine is chosen per
 * connection:
 *   ossl: OpenSSL in user space (SSL_read / SSL_write); the handshake always runs here;
 *   ktls: the kernel holds the TLS 1.3 keys (TLS_TX / TLS_RX); plain send / recvmsg on the
 *         socket, non-data records (tickets, KeyUpdate, alerts) handled in transport_ktls.c.
 * The payload path (what moves a stream's bytes between its local socket and the session)
 * is the stream's business in h2.c; transport_kernel() tells it whether the socket itself
 * carries plaintext (a zero-copy path may then write to t->fd directly). */
#ifndef MOAT_HBONE_TRANSPORT_H
#define MOAT_HBONE_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

/* Results of read/write other than a byte count (> 0). */
enum {
	TP_WANT_READ = -1,  /* come back when the socket is readable */
	TP_WANT_WRITE = -2, /* come back when the socket is writable */
	TP_CLOSED = -3,     /* the peer ended the session cleanly (close_notify, or plain EOF) */
	TP_ERROR = -4,      /* failed: t->why says how */
};

struct transport;

struct transport_ops {
	const char *engine; /* "userspace" or "ktls": what the access log and metrics show */
	/* > 0 bytes, or a TP_ value. */
	ssize_t (*read)(struct transport *t, void *buf, size_t len);
	ssize_t (*write)(struct transport *t, const void *buf, size_t len);
	/* Bytes already inside the transport that epoll cannot announce. */
	bool (*pending)(const struct transport *t);
	/* Best-effort close_notify; never blocks. */
	void (*shutdown)(struct transport *t);
	void (*free)(struct transport *t);
	/* Optional: send a TLS 1.3 KeyUpdate now (request_peer: ask the peer to update too).
	 * 0, or -1 when this transport cannot. */
	int (*key_update)(struct transport *t, bool request_peer);
};

/* Non-data records the kernel engine met (the user-space engine leaves them to OpenSSL). */
struct transport_stats {
	uint32_t tickets_ignored; /* handshake records of NewSessionTickets, ignored */
	uint32_t key_updates;     /* peer KeyUpdates followed */
	uint32_t rekey_failed;    /* KeyUpdates the kernel could not follow: connection closed */
};

struct transport {
	const struct transport_ops *ops;
	int fd;             /* not owned: the h2conn closes it */
	bool eof_clean;     /* TP_CLOSED came with a close_notify (not a bare EOF) */
	bool broken;        /* the switch failed halfway: close at once, why says why */
	struct transport_stats stats;
	char why[256];      /* after TP_ERROR, or when broken */
};

/* Takes ownership of ssl (handshake finished). */
struct transport *transport_ossl_new(SSL *ssl, int fd);

/* Moves the session into the kernel (TLS 1.3 only). On failure returns NULL, ssl is still
 * the caller's and usable, and reason gets a short metric label ("cipher", "setsockopt",
 * "ulp", "secrets", "buffered", "version") and why a sentence for the log. */
struct transport *transport_ktls_new(SSL *ssl, int fd, char *reason, size_t reason_len,
				     char *why, size_t why_len);

static inline bool transport_kernel(const struct transport *t)
{
	return t->ops->engine[0] == 'k';
}

#endif
