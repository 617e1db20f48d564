/* Private helpers shared by the identity room's files (not part of the public contract). */
#ifndef MOAT_IDENTITY_INTERNAL_H
#define MOAT_IDENTITY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/x509.h>

#include "core/util.h"
#include "identity/identity.h"

#define SPIFFE_URI_MAX 2048 /* SPIFFE spec: a SPIFFE ID is at most 2048 bytes */
#define TRUST_DOMAIN_MAX 256 /* 255 characters + NUL */
#define RFC3339_LEN 32

/* spiffe_id_parse with the reason for a rejection in e ("trust domain has invalid
 * character 'A' (allowed: a-z 0-9 . - _)"). Returns 0 or -1. */
int spiffe_id_check(const char *id, char *td, size_t tdlen, char *ns, size_t nslen, char *sa,
		    size_t salen, struct err *e);
/* A trust domain name on its own (e.g. from --trust-domain or the CA's trust-domain file). */
int trust_domain_check(const char *td, struct err *e);
/* Copy untrusted text for an error message: non-id_printable bytes become '?', long text is
 * cut with "...". */
const char *id_printable(const char *s, size_t n, char *buf, size_t buflen);

/* "2026-11-22T10:00:00Z" */
const char *id_time_rfc3339(time_t t, char *buf, size_t len);
/* ASN1_TIME -> time_t (UTC); false when the time cannot be read. */
bool id_asn1_time_to_time_t(const ASN1_TIME *t, time_t *out);
const char *id_asn1_time_rfc3339(const ASN1_TIME *t, char *buf, size_t len);
/* Pop OpenSSL's error queue into text ("unknown" when empty); the queue is left empty. */
const char *id_ossl_errors(char *buf, size_t len);
/* Uppercase hex of a certificate serial (as `openssl x509 -serial` prints it). */
void id_serial_hex(const ASN1_INTEGER *serial, char *buf, size_t len);

/* spiffe_verify_peer, also giving the X509_V_ERR_* code that best describes the failure
 * (the TLS layer turns it into an alert: unknown_ca, certificate_expired, bad_certificate). */
int spiffe_verify_peer_code(const struct bundle *b, X509 *leaf, STACK_OF(X509) *untrusted,
			    bool purpose_server, time_t now, char *id, int *x509_err,
			    struct err *e);
int bundle_root_count(const struct bundle *b);
/* Is this exact certificate one of the bundle's roots? */
bool bundle_has_root(const struct bundle *b, X509 *cert);

#endif
