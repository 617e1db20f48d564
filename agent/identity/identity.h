/* Workload identity: the built-in CA, SVIDs, the trust bundle, strict SPIFFE validation of
 * peers, and the TLS contexts HBONE uses. OpenSSL 3.0.
 *
 * SVID rules (DESIGN.md, Identity): ECDSA P-256 key; exactly one URI SAN
 * spiffe://<td>/ns/<ns>/sa/<sa>, critical; empty subject (no CN); basicConstraints CA=false
 * (critical); keyUsage digitalSignature (critical); extendedKeyUsage serverAuth+clientAuth;
 * validity = TTL (default 24 h), backdated 60 s for clock skew; random 128-bit serial. */
#ifndef MOAT_IDENTITY_H
#define MOAT_IDENTITY_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "core/util.h"

#define SPIFFE_ID_MAX 512

/* ---- SPIFFE IDs ---- */
/* Strict parse of spiffe://<td>/ns/<ns>/sa/<sa>; outputs may be NULL. */
bool spiffe_id_parse(const char *id, char *td, size_t tdlen, char *ns, size_t nslen, char *sa,
		     size_t salen);
/* "spiffe://td/ns/x/sa/y" -> "td/ns/x/sa/y" (the form AuthorizationPolicy principals use). */
const char *spiffe_principal(const char *id);

/* ---- the CA (directory layout: root-cert.pem 0644, root-key.pem 0600, trust-domain 0644) ---- */
struct moat_ca;

/* `moatctl ca init`: create dir (0700) with a new ECDSA P-256 self-signed root, 10 years.
 * Refuses to overwrite an existing root-key.pem. */
int ca_init_dir(const char *dir, const char *trust_domain, struct err *e);
struct moat_ca *ca_load_dir(const char *dir, struct err *e);
/* A node-local CA in memory (moatd without --ca): works on one node only. */
struct moat_ca *ca_new_ephemeral(const char *trust_domain, struct err *e);
void ca_free(struct moat_ca *ca);
const char *ca_trust_domain(const struct moat_ca *ca);
X509 *ca_root_cert(const struct moat_ca *ca);          /* borrowed */
const char *ca_bundle_path(const struct moat_ca *ca);  /* root-cert.pem, NULL when ephemeral */

/* ---- SVIDs ---- */
struct svid {
	int refs;
	X509 *cert;
	EVP_PKEY *key;
	STACK_OF(X509) *chain; /* intermediates (empty for the built-in CA) */
	char spiffe_id[SPIFFE_ID_MAX];
	char serial[80];       /* hex */
	time_t not_before, not_after;
};

struct svid *ca_mint_svid(struct moat_ca *ca, const char *spiffe_id, int ttl_seconds,
			  struct err *e);
struct svid *svid_ref(struct svid *s);
void svid_unref(struct svid *s);

/* ---- trust bundle ---- */
struct bundle;

struct bundle *bundle_from_cert(X509 *root, const char *trust_domain, struct err *e);
/* PEM file with one or more root certificates. */
struct bundle *bundle_load(const char *pem_path, const char *trust_domain, struct err *e);
struct bundle *bundle_ref(struct bundle *b);
void bundle_unref(struct bundle *b);
const char *bundle_trust_domain(const struct bundle *b);

/* Strict SPIFFE validation of a peer's leaf + chain at time `now`: chains to the bundle,
 * leaf CA=false, exactly one URI SAN which is a valid SPIFFE ID in the bundle's trust
 * domain, EKU allows `purpose_server ? serverAuth : clientAuth`, inside its validity window.
 * On success writes the SPIFFE ID into id (SPIFFE_ID_MAX). Errors say exactly what failed
 * ("peer certificate has 2 URI SANs, SPIFFE requires exactly one"). */
int spiffe_verify_peer(const struct bundle *b, X509 *leaf, STACK_OF(X509) *untrusted,
		       bool purpose_server, time_t now, char *id, struct err *e);

/* ---- TLS contexts for HBONE ----
 * TLS 1.3 only (TLS 1.2 when allow_tls12), suites TLS_AES_256_GCM_SHA384 and
 * TLS_AES_128_GCM_SHA256, ALPN "h2", no session tickets, no resumption, no SNI.
 * Server: client certificate required, validated with spiffe_verify_peer (client purpose).
 * Client: server validated with spiffe_verify_peer (server purpose) and its ID must equal the
 * expected ID set on the SSL with tls_expect_peer(). The verified peer ID is read with
 * tls_peer_id(); a failed verification aborts the handshake and tls_verify_error() says why. */
SSL_CTX *tls_server_ctx(struct svid *s, struct bundle *b, bool allow_tls12, struct err *e);
SSL_CTX *tls_client_ctx(struct svid *s, struct bundle *b, bool allow_tls12, struct err *e);
int tls_expect_peer(SSL *ssl, const char *spiffe_id);
const char *tls_peer_id(const SSL *ssl);        /* NULL before a verified handshake */
const char *tls_verify_error(const SSL *ssl);   /* NULL when none */
/* kTLS: keep this connection's TLS 1.3 application traffic secrets (ask before the
 * handshake ends). tls_traffic_secrets copies them out and returns their length (the
 * cipher's hash size), 0 when they are not both known; tls_forget_secrets wipes them. */
#define TLS_SECRET_MAX 64
void tls_capture_secrets(SSL *ssl);
size_t tls_traffic_secrets(const SSL *ssl, uint8_t client[TLS_SECRET_MAX],
			   uint8_t server[TLS_SECRET_MAX]);
void tls_forget_secrets(SSL *ssl);

/* ---- the agent's identity store: one SVID and TLS context pair per local identity ---- */
struct loop;
struct identity_store;

struct identity_store_opts {
	struct moat_ca *ca;     /* owned by the caller, outlives the store */
	const char *bundle_path; /* reloaded when it changes; NULL = the CA's root */
	int ttl_seconds;        /* SVID validity (default 86400) */
	bool allow_tls12;
};

struct identity_store *identity_store_new(struct loop *l, const struct identity_store_opts *o,
					  struct err *e);
void identity_store_free(struct identity_store *s);

/* Take / release a reference on a local identity: the first reference mints its SVID and
 * schedules renewal at half-life (new certificate minted and swapped in before the old one
 * is released; connections keep the SSL they were made with). */
int identity_acquire(struct identity_store *s, const char *spiffe_id, struct err *e);
void identity_release(struct identity_store *s, const char *spiffe_id);
/* Current contexts (borrowed; stay valid until the next loop iteration at least: callers
 * create their SSL right away, SSL_new takes its own reference). NULL when unknown. */
SSL_CTX *identity_server_ctx(struct identity_store *s, const char *spiffe_id);
SSL_CTX *identity_client_ctx(struct identity_store *s, const char *spiffe_id);
const struct svid *identity_svid(struct identity_store *s, const char *spiffe_id);
struct bundle *identity_bundle(struct identity_store *s); /* borrowed */
/* Certificates as text for `moatctl certs`: one line per identity
 * "IDENTITY SERIAL NOT-BEFORE NOT-AFTER" (RFC 3339), header first; json when asked. */
void identity_store_dump(struct identity_store *s, bool json, struct sbuf *out);
/* Re-check the bundle file now (also done on a timer). */
void identity_store_check_bundle(struct identity_store *s);

#endif
