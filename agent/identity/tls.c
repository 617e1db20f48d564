/* TLS contexts for HBONE: TLS 1.3, ALPN h2, mutual SPIFFE authentication, no resumption.
 *
 * Per-context state (the bundle, the role) and per-connection state (expected peer, verified
 * peer, why it failed) live in OpenSSL ex_data, so an SSL keeps working after the store has
 * swapped in new contexts: the SSL holds a reference on its SSL_CTX, which holds the bundle. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "identity/identity.h"
#include "identity/identity_internal.h"

#define TLS13_SUITES "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
#define TLS12_CIPHERS "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
#define TLS_GROUPS "X25519:P-256:P-384" /* what ztunnel (rustls) offers */
#define ALPN_H2 "\x02h2"
#define SESSION_ID_CONTEXT "moat-hbone"

struct tls_ctx_info {
	struct bundle *bundle; /* reference held for the context's lifetime */
	bool server;
};

struct tls_conn_info {
	bool verified;
	bool handshake_done;
	char expect[SPIFFE_ID_MAX]; /* client: the server identity we dialed */
	char peer[SPIFFE_ID_MAX];   /* verified peer identity */
	char error[sizeof(((struct err *)0)->msg)];
	/* kTLS: the TLS 1.3 application traffic secrets, kept only when asked for
	 * (tls_capture_secrets) and wiped once the kernel has its keys. */
	bool capture;
	size_t secret_len;
	uint8_t client_secret[TLS_SECRET_MAX], server_secret[TLS_SECRET_MAX];
	bool have_client, have_server;
};

/* OpenSSL ex_data indexes are process-wide by design; they are allocated once and never
 * change afterwards (the only global state of this room). */
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;
static int ctx_idx = -1, conn_idx = -1;

static void ctx_info_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			  void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	struct tls_ctx_info *ci = ptr;
	if (!ci)
		return;
	bundle_unref(ci->bundle);
	free(ci);
}

static void conn_info_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			   void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (ptr)
		OPENSSL_cleanse(ptr, sizeof(struct tls_conn_info));
	free(ptr);
}

static void ex_init(void)
{
	ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_info_free);
	conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_info_free);
}

static bool ex_ready(void)
{
	pthread_once(&ex_once, ex_init);
	return ctx_idx >= 0 && conn_idx >= 0;
}

static struct tls_ctx_info *ctx_info(const SSL *ssl)
{
	return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_idx);
}

/* Created on first use; NULL only when OpenSSL cannot store it. */
static struct tls_conn_info *conn_info(SSL *ssl)
{
	struct tls_conn_info *c = SSL_get_ex_data(ssl, conn_idx);
	if (!c) {
		c = xcalloc(1, sizeof(*c));
		if (!SSL_set_ex_data(ssl, conn_idx, c)) {
			free(c);
			return NULL;
		}
	}
	return c;
}

/* The first failure wins: later alerts are consequences of it. */
static void record_error(SSL *ssl, const char *msg)
{
	struct tls_conn_info *c = conn_info(ssl);
	if (c && !c->error[0])
		snprintf(c->error, sizeof(c->error), "%s", msg);
}

/* ---- verification ---- */

static bool alpn_is_h2(const SSL *ssl)
{
	const unsigned char *p;
	unsigned int n;
	SSL_get0_alpn_selected(ssl, &p, &n);
	return n == 2 && memcmp(p, "h2", 2) == 0;
}

/* Client only: the server must be the identity we dialed, and must have chosen h2 (ALPN
 * arrives in ServerHello/EncryptedExtensions, before the certificate). */
static int check_server_choice(SSL *ssl, struct tls_conn_info *c, const char *id,
			       struct err *e)
{
	if (!c->expect[0])
		return err_set(e, "no expected server identity was set (tls_expect_peer); refusing "
				  "server %s",
			       id);
	if (strcmp(c->expect, id) != 0)
		return err_set(e, "server identity %s does not match the expected %s", id,
			       c->expect);
	if (!alpn_is_h2(ssl))
		return err_set(e, "server %s did not select ALPN h2", id);
	return 0;
}

/* Replaces X509_verify_cert for our contexts: spiffe_verify_peer decides. */
static int cert_verify_cb(X509_STORE_CTX *xctx, void *arg)
{
	(void)arg;
	SSL *ssl = X509_STORE_CTX_get_ex_data(xctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls_ctx_info *ci = ssl ? ctx_info(ssl) : NULL;
	struct tls_conn_info *c = ssl ? conn_info(ssl) : NULL;
	if (!ci || !c) {
		X509_STORE_CTX_set_error(xctx, X509_V_ERR_UNSPECIFIED);
		return 0;
	}
	struct err e;
	char id[SPIFFE_ID_MAX];
	int code;
	/* A server verifies a client and vice versa. */
	int rc = spiffe_verify_peer_code(ci->bundle, X509_STORE_CTX_get0_cert(xctx),
					 X509_STORE_CTX_get0_untrusted(xctx), !ci->server,
					 time(NULL), id, &code, &e);
	if (rc == 0 && !ci->server && check_server_choice(ssl, c, id, &e) < 0) {
		rc = -1;
		code = X509_V_ERR_CERT_REJECTED;
	}
	if (rc < 0) {
		record_error(ssl, e.msg);
		X509_STORE_CTX_set_error(xctx, code); /* picks the alert (unknown_ca, ...) */
		return 0;
	}
	snprintf(c->peer, sizeof(c->peer), "%s", id);
	c->verified = true;
	X509_STORE_CTX_set_error(xctx, X509_V_OK);
	return 1;
}

/* Bytes that are not TLS at all (a plaintext client on 15008, a port scanner, a server that
 * is not TLS) fail inside OpenSSL's record layer, often without an alert, so nothing else
 * names them: OpenSSL's own words ("http request") do not tell a user what happened. */
static const char *not_tls_reason(unsigned long err, char *buf, size_t len)
{
	if (!err || ERR_GET_LIB(err) != ERR_LIB_SSL)
		return NULL;
	switch (ERR_GET_REASON(err)) {
	case SSL_R_HTTP_REQUEST:
		return "not TLS: the peer sent a plaintext HTTP request (HBONE is HTTP/2 CONNECT "
		       "inside mutual TLS 1.3)";
	case SSL_R_HTTPS_PROXY_REQUEST:
		return "not TLS: the peer sent a plaintext HTTP CONNECT request (HBONE is HTTP/2 "
		       "CONNECT inside mutual TLS 1.3)";
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_UNKNOWN_PROTOCOL:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_RECORD_LENGTH_MISMATCH:
	case SSL_R_LENGTH_TOO_SHORT:
		snprintf(buf, len, "not TLS: the peer's first bytes are not a TLS handshake record "
			 "(%s)", ERR_reason_error_string(err));
		return buf;
	}
	return NULL;
}

/* Names the failures OpenSSL detects itself (missing client certificate, alerts). */
static void info_cb(const SSL *cssl, int where, int ret)
{
	/* OpenSSL hands the callback a const SSL; the per-connection record is ours to write. */
	SSL *ssl = (SSL *)cssl;
	bool alert = (where & SSL_CB_ALERT) && (ret >> 8) == SSL3_AL_FATAL;
	if (!(where & SSL_CB_HANDSHAKE_DONE) && !alert)
		return;
	struct tls_conn_info *c = conn_info(ssl);
	if (!c || c->error[0])
		return;
	if (where & SSL_CB_HANDSHAKE_DONE) {
		c->handshake_done = true;
		return;
	}
	char msg[512];
	if (where & SSL_CB_READ) {
		/* Kept even after the handshake: a TLS 1.3 client learns that the server
		 * rejected its certificate only after its own handshake finished. */
		snprintf(msg, sizeof(msg), "peer aborted the TLS session with alert: %s",
			 SSL_alert_desc_string_long(ret));
		record_error(ssl, msg);
		return;
	}
	/* Alerts we send after the handshake (EOF, bad records) are transport errors, not
	 * verification results. */
	if (c->handshake_done)
		return;
	struct tls_ctx_info *ci = ctx_info(ssl);
	unsigned long last = ERR_peek_last_error();
	bool no_cert = (ret & 0xff) == SSL_AD_CERTIFICATE_REQUIRED ||
		       (ERR_GET_LIB(last) == ERR_LIB_SSL &&
			ERR_GET_REASON(last) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE);
	if (ci && ci->server && no_cert) {
		record_error(ssl, "no client certificate");
		return;
	}
	const char *not_tls = not_tls_reason(last, msg, sizeof(msg));
	if (not_tls) {
		record_error(ssl, not_tls);
		return;
	}
	const char *why = last ? ERR_reason_error_string(last) : NULL;
	snprintf(msg, sizeof(msg), "TLS handshake failed (sent alert %s)%s%s",
		 SSL_alert_desc_string_long(ret), why ? ": " : "", why ? why : "");
	record_error(ssl, msg);
}

/* ---- ALPN (server) ---- */

/* HBONE is HTTP/2 only: a client that does not offer h2 gets no_application_protocol. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)arg;
	for (unsigned int i = 0; i < inlen;) {
		unsigned int n = in[i];
		if (i + 1 + n > inlen)
			break;
		if (n == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + n;
	}
	record_error(ssl, "client did not offer ALPN h2");
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* OpenSSL skips the ALPN callback when the client sends no ALPN extension at all. */
static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
	(void)arg;
	const unsigned char *data;
	size_t len;
	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
				      &data, &len))
		return SSL_CLIENT_HELLO_SUCCESS;
	record_error(ssl, "client offered no ALPN; h2 is required");
	*alert = SSL_AD_NO_APPLICATION_PROTOCOL;
	return SSL_CLIENT_HELLO_ERROR;
}

/* ---- contexts ---- */

static int set_policy(SSL_CTX *ctx, bool allow_tls12, struct err *e)
{
	if (!SSL_CTX_set_min_proto_version(ctx, allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) ||
	    !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) ||
	    !SSL_CTX_set1_groups_list(ctx, TLS_GROUPS)) {
		char oe[256];
		return err_set(e, "TLS policy: %s", id_ossl_errors(oe, sizeof(oe)));
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return 0;
}

static int set_identity(SSL_CTX *ctx, struct svid *s, struct err *e)
{
	if (SSL_CTX_use_certificate(ctx, s->cert) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, s->key) != 1 ||
	    (s->chain && sk_X509_num(s->chain) > 0 && SSL_CTX_set1_chain(ctx, s->chain) != 1) ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		char oe[256];
		return err_set(e, "TLS certificate %s: %s", s->spiffe_id,
			       id_ossl_errors(oe, sizeof(oe)));
	}
	return 0;
}

/* ---- traffic secrets for kTLS ----
 * OpenSSL 3.0 has no getter for the traffic secrets; its key log is the one place that hands
 * them out ("CLIENT_TRAFFIC_SECRET_0 <client random> <hex>"). Only connections that asked
 * keep them, and only until tls_forget_secrets(). */

static bool unhex(const char *h, uint8_t *out, size_t max, size_t *len)
{
	size_t n = strlen(h);
	if (n % 2 || n / 2 > max)
		return false;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(h + 2 * i, "%2x", &v) != 1)
			return false;
		out[i] = (uint8_t)v;
	}
	*len = n / 2;
	return true;
}

static void keylog_cb(const SSL *ssl, const char *line)
{
	struct tls_conn_info *c = SSL_get_ex_data(ssl, conn_idx);
	if (!c || !c->capture)
		return;
	bool client = strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0;
	bool server = strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0;
	if (!client && !server)
		return;
	const char *hex = strrchr(line, ' ');
	size_t len = 0;
	if (!unhex(hex + 1, client ? c->client_secret : c->server_secret, TLS_SECRET_MAX, &len))
		return;
	if ((c->have_client || c->have_server) && len != c->secret_len)
		return;
	c->secret_len = len;
	if (client)
		c->have_client = true;
	else
		c->have_server = true;
}

void tls_capture_secrets(SSL *ssl)
{
	struct tls_conn_info *c = ex_ready() ? conn_info(ssl) : NULL;
	if (c)
		c->capture = true;
}

size_t tls_traffic_secrets(const SSL *ssl, uint8_t client[TLS_SECRET_MAX],
			   uint8_t server[TLS_SECRET_MAX])
{
	const struct tls_conn_info *c = ex_ready() ? SSL_get_ex_data(ssl, conn_idx) : NULL;
	if (!c || !c->have_client || !c->have_server)
		return 0;
	memcpy(client, c->client_secret, c->secret_len);
	memcpy(server, c->server_secret, c->secret_len);
	return c->secret_len;
}

void tls_forget_secrets(SSL *ssl)
{
	struct tls_conn_info *c = ex_ready() ? SSL_get_ex_data(ssl, conn_idx) : NULL;
	if (!c)
		return;
	OPENSSL_cleanse(c->client_secret, sizeof(c->client_secret));
	OPENSSL_cleanse(c->server_secret, sizeof(c->server_secret));
	c->have_client = c->have_server = c->capture = false;
}

static SSL_CTX *new_ctx(struct svid *s, struct bundle *b, bool server, bool allow_tls12,
			struct err *e)
{
	if (!s || !b) {
		err_set(e, "TLS context: %s missing", s ? "trust bundle" : "SVID");
		return NULL;
	}
	if (!ex_ready()) {
		err_set(e, "TLS context: OpenSSL ex_data index unavailable");
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		char oe[256];
		err_set(e, "TLS context: %s", id_ossl_errors(oe, sizeof(oe)));
		return NULL;
	}
	struct tls_ctx_info *ci = xcalloc(1, sizeof(*ci));
	ci->bundle = bundle_ref(b);
	ci->server = server;
	if (!SSL_CTX_set_ex_data(ctx, ctx_idx, ci)) {
		ctx_info_free(NULL, ci, NULL, 0, 0, NULL);
		SSL_CTX_free(ctx);
		err_set(e, "TLS context: cannot attach the trust bundle");
		return NULL;
	}
	if (set_policy(ctx, allow_tls12, e) < 0 || set_identity(ctx, s, e) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_cert_verify_callback(ctx, cert_verify_cb, NULL);
	SSL_CTX_set_keylog_callback(ctx, keylog_cb);
	SSL_CTX_set_info_callback(ctx, info_cb);
	return ctx;
}

SSL_CTX *tls_server_ctx(struct svid *s, struct bundle *b, bool allow_tls12, struct err *e)
{
	SSL_CTX *ctx = new_ctx(s, b, true, allow_tls12, e);
	if (!ctx)
		return NULL;
	/* No tickets at all (TLS 1.3 sends them after the handshake, which would put
	 * non-data records on a kTLS socket) and no stateful resumption either. */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SESSION_ID_CONTEXT,
				       sizeof(SESSION_ID_CONTEXT) - 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
	SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
	return ctx;
}

SSL_CTX *tls_client_ctx(struct svid *s, struct bundle *b, bool allow_tls12, struct err *e)
{
	SSL_CTX *ctx = new_ctx(s, b, false, allow_tls12, e);
	if (!ctx)
		return NULL;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* set_alpn_protos returns 0 on success. No SNI: nothing calls set_tlsext_host_name. */
	if (SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)ALPN_H2,
				    sizeof(ALPN_H2) - 1) != 0) {
		SSL_CTX_free(ctx);
		err_set(e, "TLS client context: cannot set ALPN h2");
		return NULL;
	}
	return ctx;
}

int tls_expect_peer(SSL *ssl, const char *spiffe_id)
{
	if (!ex_ready() || !spiffe_id_parse(spiffe_id, NULL, 0, NULL, 0, NULL, 0) ||
	    strlen(spiffe_id) >= SPIFFE_ID_MAX)
		return -1;
	struct tls_conn_info *c = conn_info(ssl);
	if (!c)
		return -1;
	snprintf(c->expect, sizeof(c->expect), "%s", spiffe_id);
	return 0;
}

const char *tls_peer_id(const SSL *ssl)
{
	if (!ex_ready())
		return NULL;
	const struct tls_conn_info *c = SSL_get_ex_data(ssl, conn_idx);
	return c && c->verified ? c->peer : NULL;
}

const char *tls_verify_error(const SSL *ssl)
{
	if (!ex_ready())
		return NULL;
	struct tls_conn_info *c = SSL_get_ex_data(ssl, conn_idx);
	if (c && c->error[0])
		return c->error;
	if (c && c->handshake_done)
		return NULL;
	/* Garbage that made OpenSSL fail without sending an alert reached no callback (the
	 * per-connection record may not even exist yet): the reason is still the last error in
	 * the queue when the caller asks why the handshake failed. */
	char buf[256];
	const char *not_tls = not_tls_reason(ERR_peek_last_error(), buf, sizeof(buf));
	if (!not_tls)
		return NULL;
	/* The record is ours to write: OpenSSL's const only says the SSL is not changed. */
	record_error((SSL *)ssl, not_tls);
	c = SSL_get_ex_data(ssl, conn_idx);
	return c && c->error[0] ? c->error : NULL;
}
