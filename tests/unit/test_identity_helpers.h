/* Helpers for the identity tests: hand-built certificates (good and deliberately bad),
 * temporary directories and in-memory TLS connections. */
#ifndef MOAT_TEST_IDENTITY_HELPERS_H
#define MOAT_TEST_IDENTITY_HELPERS_H

#include <stdbool.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

/* A test CA (self-signed, CA:TRUE, keyCertSign). */
struct tca {
	X509 *cert;
	EVP_PKEY *key;
};
bool idt_ca_new(struct tca *ca, const char *cn);
void idt_ca_free(struct tca *ca);

/* What a hand-built certificate looks like; zero value = a valid SPIFFE leaf profile
 * except that the URI list is empty (set uris). */
struct tcert_opts {
	const char *uris[4];
	int n_uris;
	const char *dns;      /* add a DNS SAN too */
	bool ca;              /* basicConstraints CA:TRUE */
	const char *eku;      /* NULL = "serverAuth,clientAuth"; "" = no EKU extension */
	long not_before_rel;  /* seconds from now; 0 = -60 */
	long not_after_rel;   /* seconds from now; 0 = +3600 */
	bool self_signed;     /* sign with its own key, issuer = subject "CN=self" */
};
/* Leaf signed by ca (or self-signed); its new key returned in *key when key != NULL. */
X509 *idt_cert_make(const struct tca *ca, const struct tcert_opts *o, EVP_PKEY **key);

/* mkdtemp under /tmp; idt_rm_rf removes a tree made by the tests (bounded depth). */
bool idt_tmpdir(char *buf, size_t len);
void idt_rm_rf(const char *path);
bool idt_write_text(const char *path, const char *text);
/* PEM text of one or more certificates (NULL-terminated list); free() it. */
char *idt_pem_certs(X509 *const *certs);

/* Two SSLs joined by an in-memory BIO pair. */
struct tpair {
	SSL *c, *s;
	int c_done, s_done; /* 1 finished, -1 failed, 0 running */
};
bool idt_pair_new(struct tpair *p, SSL_CTX *cctx, SSL_CTX *sctx);
void idt_pair_free(struct tpair *p);
/* Run both handshakes until both finish or fail (bounded). true when both finished. */
bool idt_pair_handshake(struct tpair *p);
/* client -> server "ping", server -> client "pong"; true on success. Also makes the client
 * read whatever the server sent after the handshake (tickets, alerts). */
bool idt_pair_exchange(struct tpair *p);

#endif
