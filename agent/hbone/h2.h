/* HBONE connections: HTTP/2 (libnghttp2) over TLS (OpenSSL) on a non-blocking socket, on
 * the agent loop. One h2conn is one TLS connection carrying many CONNECT streams; each
 * h2stream joins one stream to one local TCP socket (the app's, or the upstream one) and
 * moves bytes both ways with HTTP/2 flow control as back-pressure:
 *   socket -> peer: nghttp2's data provider read()s the socket straight into the frame
 *                   buffer (no per-connection buffer); EAGAIN defers until readable.
 *   peer -> socket: DATA is written to the socket as it arrives; only what the socket does
 *                   not take is copied into a pending buffer, and the stream window is
 *                   consumed (WINDOW_UPDATE) only once bytes reached the socket.
 * TCP FIN <-> END_STREAM, TCP RST <-> RST_STREAM(CONNECT_ERROR), as RFC 9113 8.5 says.
 * Every wait has a deadline (struct h2_limits); every teardown carries its reason, including
 * the ones nghttp2 decides itself (its GOAWAY or RST_STREAM on a peer's protocol violation).
 * Settings as ztunnel: stream window 4 MiB, connection window 16 MiB, max frame 1 MiB,
 * server max concurrent streams 200, push disabled; the client PINGs every 10 s and drops a
 * connection whose PING is not answered in 20 s. */
#ifndef MOAT_HBONE_H2_H
#define MOAT_HBONE_H2_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "core/loop.h"
#include "core/util.h"

#define H2_STREAM_WINDOW   (4u << 20)
#define H2_CONN_WINDOW     (16u << 20)
#define H2_MAX_FRAME       (1u << 20)
#define H2_SERVER_STREAMS  200
#define H2_CLIENT_STREAMS  100
#define H2_PING_INTERVAL_MS 10000
#define H2_PING_TIMEOUT_MS  20000
#define H2_HANDSHAKE_TIMEOUT_MS 10000
#define H2_RESPONSE_TIMEOUT_MS  10000
#define H2_SUSPECT_MS           2000

/* Deadlines for the waits of one connection's streams, in milliseconds (0 = none). Every
 * wait is bounded, so a destination that stalls cannot hold app sockets (and the agent's fds)
 * for longer than these. */
struct h2_limits {
	int response_ms;    /* client: a CONNECT without its final response is reset after this */
	int suspect_ms;     /* client: a stream waiting this long makes the connection suspect:
			     * PING at once, and no new streams on it until the PING is answered */
	int stream_idle_ms; /* an established stream carrying no byte either way is reset */
};

struct h2conn;
struct h2stream;

enum h2_role { H2_CLIENT = 0, H2_SERVER = 1 };

/* A CONNECT request as the server saw it (strings valid during on_request only). */
struct hbone_request {
	const char *method;
	const char *authority;
	const char *forwarded;
	const char *baggage;
	const char *traceparent;
	const char *peer_id; /* verified SPIFFE ID of the TLS peer */
	struct moat_addr local_addr, peer_addr; /* of the TLS connection */
	uint16_t local_port, peer_port;
};

struct h2conn_ops {
	/* Server: a request arrived. Answer later with h2stream_respond() or h2stream_accept(). */
	void (*on_request)(struct h2conn *c, struct h2stream *s, const struct hbone_request *r);
	/* The TLS handshake finished and the peer identity is verified. */
	void (*on_ready)(struct h2conn *c);
	/* The connection is gone; every stream already got on_close. The h2conn is freed right
	 * after this returns. why is NULL on an orderly close. */
	void (*on_closed)(struct h2conn *c, const char *why);
	/* The number of open streams changed (pool bookkeeping, idle timers). */
	void (*on_streams)(struct h2conn *c, int n_streams);
};

struct h2stream_stats {
	uint64_t bytes_to_peer;   /* read from the local socket, sent on the stream */
	uint64_t bytes_from_peer; /* received on the stream, written to the local socket */
	int status;               /* HTTP status sent (server) or received (client), 0 if none */
	/* Payload bytes that passed through a buffer of moatd's (read into it or written from
	 * it), per direction: what a zero-copy payload path (splice) keeps at 0. */
	uint64_t copied_to_peer, copied_from_peer;
};

struct h2stream_ops {
	/* Client: the final response arrived (1xx interim responses are skipped, RFC 9113 8.1).
	 * 200 starts the relay; any other status ends the stream (on_close follows). */
	void (*on_response)(struct h2stream *s, void *user, int status);
	/* The stream and its local socket are finished (socket closed by the stream: with RST
	 * when error != NULL). Called exactly once; the stream is freed after it returns. */
	void (*on_close)(struct h2stream *s, void *user, const struct h2stream_stats *st,
			 const char *error);
	/* Client, optional: the local socket saw the app's FIN while the stream still waits for
	 * its response. Return true when the app has left (closed its socket) rather than only
	 * half-closed it: the stream is then reset at once instead of at the response deadline.
	 * A hang-up or error on the socket resets the stream without asking. */
	bool (*local_gone)(struct h2stream *s, void *user, int fd);
};

/* Take ownership of a connected (client) or accepted (server) non-blocking TCP socket and
 * start the TLS handshake. For a client, expected_peer is the SPIFFE ID the server must
 * present. desc names the connection in logs ("10.244.1.10 -> 10.244.2.10:15008"). */
struct h2conn *h2conn_new(struct loop *l, enum h2_role role, int fd, SSL_CTX *ctx,
			  const char *expected_peer, const struct h2conn_ops *ops, void *owner,
			  const char *desc, struct err *e);
void *h2conn_owner(const struct h2conn *c);
const char *h2conn_peer_id(const struct h2conn *c); /* after on_ready */
const char *h2conn_peer_serial(const struct h2conn *c); /* hex, after on_ready */
const char *h2conn_desc(const struct h2conn *c);
int h2conn_streams(const struct h2conn *c);
bool h2conn_usable(const struct h2conn *c); /* not closing, no GOAWAY, not suspect */
/* Client streams still waiting for their final response. */
int h2conn_waiting(const struct h2conn *c);
/* Replace the deadlines (h2conn_new starts with H2_RESPONSE_TIMEOUT_MS, H2_SUSPECT_MS and
 * no stream idle deadline); applies to streams opened or established afterwards. */
void h2conn_set_limits(struct h2conn *c, const struct h2_limits *l);
bool h2conn_ready(const struct h2conn *c);
/* Before the handshake ends: move the session into the kernel (kTLS) once it is done, when
 * the kernel and the negotiated session allow it. Otherwise the connection stays on OpenSSL
 * and h2conn_ktls_fallback() says why. */
void h2conn_want_ktls(struct h2conn *c);
/* What carries the connection after the handshake (static): "ktls-splice" (kernel TLS, the
 * app -> tunnel payload moved by splice()), "ktls" (kernel TLS, payload copied: no pipe) or
 * "userspace" (OpenSSL). */
const char *h2conn_engine(const struct h2conn *c);
/* Asked for kTLS but did not get it: a short reason (metric label) and, in *why, the log
 * sentence; NULL when kTLS was not asked for or was taken. */
const char *h2conn_ktls_fallback(const struct h2conn *c, const char **why);
/* Non-data records the kTLS engine handled on this connection (zeros for userspace). */
struct h2_ktls_stats {
	uint32_t tickets_ignored, key_updates, rekey_failed;
};
void h2conn_ktls_stats(const struct h2conn *c, struct h2_ktls_stats *st);
/* Send a TLS 1.3 KeyUpdate now (user-space engine only; -1 otherwise). For long-lived
 * connections and for the tests that prove the kTLS engine handles a peer's KeyUpdate. */
int h2conn_key_update(struct h2conn *c, bool request_peer);
/* Orderly shutdown: GOAWAY, finish open streams, then close. */
void h2conn_shutdown(struct h2conn *c);
/* Close now: every stream is reset. */
void h2conn_abort(struct h2conn *c, const char *why);

/* Client: open a CONNECT stream to authority ("ip:port" / "[ip6]:port") with extra headers
 * (name/value pairs, n of them), relaying to local_fd once a 200 arrives. The stream owns
 * local_fd from now on (closed by the stream, with RST on failure). Returns NULL and closes
 * nothing on failure (the caller still owns local_fd). */
struct h2stream *h2conn_open_stream(struct h2conn *c, const char *authority,
				    const char *const *headers, int n_headers, int local_fd,
				    const struct h2stream_ops *ops, void *user, struct err *e);

/* Server: set the owner of a new stream (before answering). */
void h2stream_set_ops(struct h2stream *s, const struct h2stream_ops *ops, void *user);
/* Server: refuse with status (400, 401, 503...); the stream ends, on_close follows. */
void h2stream_respond(struct h2stream *s, int status);
/* Server: answer 200 and relay with the connected upstream socket (owned from now on). */
int h2stream_accept(struct h2stream *s, int upstream_fd, struct err *e);
/* Reset the stream (and its socket) now, e.g. when policy changed (late rejection). */
void h2stream_reset(struct h2stream *s, const char *why);
struct h2conn *h2stream_conn(const struct h2stream *s);
void h2stream_get_stats(const struct h2stream *s, struct h2stream_stats *st);

#endif
