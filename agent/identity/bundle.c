/* The trust bundle (roots of one trust domain) and strict SPIFFE validation of peers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "identity/identity.h"
#include "identity/identity_internal.h"

/* Certificates signed with less than 112-bit security (SHA-1, RSA-1024) are refused. */
#define VERIFY_AUTH_LEVEL 2
#define VERIFY_MAX_DEPTH 8

struct bundle {
	int refs;
	char td[TRUST_DOMAIN_MAX];
	X509_STORE *store;
	STACK_OF(X509) *roots;
};

static struct bundle *bundle_alloc(const char *td)
{
	struct bundle *b = xcalloc(1, sizeof(*b));
	b->refs = 1;
	snprintf(b->td, sizeof(b->td), "%s", td);
	b->store = X509_STORE_new();
	b->roots = sk_X509_new_null();
	if (!b->store || !b->roots) {
		bundle_unref(b);
		return NULL;
	}
	return b;
}

/* Only CA certificates may be trust anchors: a leaf in the bundle would let that one
 * certificate vouch for itself. */
static int bundle_add(struct bundle *b, X509 *root, const char *where, struct err *e)
{
	if (!(X509_get_extension_flags(root) & EXFLAG_CA)) {
		char subj[256];
		X509_NAME_oneline(X509_get_subject_name(root), subj, sizeof(subj));
		return err_set(e, "%s: certificate %s is not a CA (basicConstraints CA:TRUE missing)",
			       where, subj);
	}
	if (X509_STORE_add_cert(b->store, root) != 1 || !sk_X509_push(b->roots, root)) {
		char oe[256];
		return err_set(e, "%s: add root: %s", where, id_ossl_errors(oe, sizeof(oe)));
	}
	X509_up_ref(root);
	return 0;
}

struct bundle *bundle_from_cert(X509 *root, const char *trust_domain, struct err *e)
{
	if (trust_domain_check(trust_domain, e) < 0) {
		err_wrap(e, "trust bundle");
		return NULL;
	}
	if (!root) {
		err_set(e, "trust bundle: no root certificate");
		return NULL;
	}
	struct bundle *b = bundle_alloc(trust_domain);
	if (!b) {
		err_set(e, "trust bundle: out of memory");
		return NULL;
	}
	if (bundle_add(b, root, "trust bundle", e) < 0) {
		bundle_unref(b);
		return NULL;
	}
	return b;
}

/* Every PEM certificate in text; the end of input is the only acceptable stop. */
static int add_pem_certs(struct bundle *b, const char *text, size_t len, const char *path,
			 struct err *e)
{
	BIO *bio = BIO_new_mem_buf(text, (int)len);
	if (!bio)
		return err_set(e, "%s: out of memory", path);
	ERR_clear_error();
	int rc = 0;
	X509 *cert;
	while (rc == 0 && (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		rc = bundle_add(b, cert, path, e);
		X509_free(cert);
	}
	unsigned long last = ERR_peek_last_error();
	bool at_end = ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE;
	if (rc == 0 && !at_end) {
		char oe[256];
		rc = err_set(e, "%s: bad PEM after certificate %d: %s", path,
			     sk_X509_num(b->roots), id_ossl_errors(oe, sizeof(oe)));
	}
	ERR_clear_error();
	BIO_free(bio);
	if (rc == 0 && sk_X509_num(b->roots) == 0)
		rc = err_set(e, "%s: no certificates found", path);
	return rc;
}

struct bundle *bundle_load(const char *pem_path, const char *trust_domain, struct err *e)
{
	if (trust_domain_check(trust_domain, e) < 0) {
		err_wrap(e, "trust bundle %s", pem_path);
		return NULL;
	}
	size_t len;
	char *text = read_file(pem_path, &len, e);
	if (!text)
		return NULL;
	struct bundle *b = bundle_alloc(trust_domain);
	if (!b || add_pem_certs(b, text, len, pem_path, e) < 0) {
		if (!b)
			err_set(e, "trust bundle %s: out of memory", pem_path);
		bundle_unref(b);
		b = NULL;
	}
	free(text);
	return b;
}

struct bundle *bundle_ref(struct bundle *b)
{
	if (b)
		b->refs++;
	return b;
}

void bundle_unref(struct bundle *b)
{
	if (!b || --b->refs > 0)
		return;
	X509_STORE_free(b->store);
	sk_X509_pop_free(b->roots, X509_free);
	free(b);
}

const char *bundle_trust_domain(const struct bundle *b)
{
	return b->td;
}

int bundle_root_count(const struct bundle *b)
{
	return sk_X509_num(b->roots);
}

bool bundle_has_root(const struct bundle *b, X509 *cert)
{
	for (int i = 0; i < sk_X509_num(b->roots); i++)
		if (X509_cmp(sk_X509_value(b->roots, i), cert) == 0)
			return true;
	return false;
}

/* ---- peer validation ---- */

static int time_error(X509 *bad, int code, int depth, struct err *e)
{
	char when[RFC3339_LEN], who[64] = "peer certificate";
	if (depth > 0)
		snprintf(who, sizeof(who), "CA certificate at depth %d of the peer's chain", depth);
	if (code == X509_V_ERR_CERT_HAS_EXPIRED)
		return err_set(e, "%s expired at %s", who,
			       id_asn1_time_rfc3339(X509_get0_notAfter(bad), when, sizeof(when)));
	return err_set(e, "%s is not valid yet: valid from %s", who,
		       id_asn1_time_rfc3339(X509_get0_notBefore(bad), when, sizeof(when)));
}

/* X509_verify_cert against the bundle only: no partial chains, the given time. */
static int check_chain(const struct bundle *b, X509 *leaf, STACK_OF(X509) *untrusted,
		       time_t now, int *x509_err, struct err *e)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	if (!ctx || X509_STORE_CTX_init(ctx, b->store, leaf, untrusted) != 1) {
		X509_STORE_CTX_free(ctx);
		*x509_err = X509_V_ERR_OUT_OF_MEM;
		return err_set(e, "verify peer certificate: cannot set up the verification");
	}
	X509_VERIFY_PARAM *p = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_time(p, now); /* also sets X509_V_FLAG_USE_CHECK_TIME */
	X509_VERIFY_PARAM_clear_flags(p, X509_V_FLAG_PARTIAL_CHAIN);
	X509_VERIFY_PARAM_set_auth_level(p, VERIFY_AUTH_LEVEL);
	X509_VERIFY_PARAM_set_depth(p, VERIFY_MAX_DEPTH);
	int rc = 0;
	if (X509_verify_cert(ctx) != 1) {
		int code = X509_STORE_CTX_get_error(ctx);
		int depth = X509_STORE_CTX_get_error_depth(ctx);
		X509 *bad = X509_STORE_CTX_get_current_cert(ctx);
		*x509_err = code;
		if ((code == X509_V_ERR_CERT_HAS_EXPIRED || code == X509_V_ERR_CERT_NOT_YET_VALID) &&
		    bad)
			rc = time_error(bad, code, depth, e);
		else if (depth > 0)
			rc = err_set(e,
				     "peer certificate does not chain to the trust bundle: %s (at depth %d)",
				     X509_verify_cert_error_string(code), depth);
		else
			rc = err_set(e, "peer certificate does not chain to the trust bundle: %s",
				     X509_verify_cert_error_string(code));
	} else if (sk_X509_num(X509_STORE_CTX_get0_chain(ctx)) < 2) {
		/* The peer presented a trust anchor itself. */
		*x509_err = X509_V_ERR_CERT_REJECTED;
		rc = err_set(e, "peer certificate is self-signed (a root of the trust bundle); a "
				"SPIFFE leaf must be issued by a CA");
	}
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return rc;
}

static int check_not_ca(X509 *leaf, struct err *e)
{
	uint32_t flags = X509_get_extension_flags(leaf);
	if (flags & EXFLAG_CA)
		return err_set(e, "peer certificate is a CA certificate (basicConstraints CA:TRUE); "
				  "a SPIFFE leaf must not be a CA");
	if (flags & EXFLAG_KUSAGE) {
		uint32_t ku = X509_get_key_usage(leaf);
		if (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN))
			return err_set(e, "peer certificate keyUsage has keyCertSign/cRLSign; not "
					  "allowed for a SPIFFE leaf");
		if (!(ku & KU_DIGITAL_SIGNATURE))
			return err_set(e, "peer certificate keyUsage lacks digitalSignature");
	}
	return 0;
}

/* Exactly one URI SAN, copied (NUL-free, bounded) into uri. */
static int the_uri_san(X509 *leaf, char *uri, size_t urilen, struct err *e)
{
	int crit = -1;
	GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, NULL);
	if (!names && crit == -2)
		return err_set(e, "peer certificate has more than one subjectAltName extension");
	int count = 0;
	const ASN1_IA5STRING *found = NULL;
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		int type;
		void *v = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(names, i), &type);
		if (type == GEN_URI) {
			count++;
			found = v;
		}
	}
	int rc = 0;
	if (count == 0)
		rc = err_set(e, "peer certificate has no URI SAN; SPIFFE requires exactly one");
	else if (count > 1)
		rc = err_set(e, "peer certificate has %d URI SANs; SPIFFE requires exactly one",
			     count);
	else {
		const char *d = (const char *)ASN1_STRING_get0_data(found);
		size_t n = (size_t)ASN1_STRING_length(found);
		char shown[160];
		if (memchr(d, 0, n) || n >= urilen)
			rc = err_set(e, "peer URI SAN %s is not a valid SPIFFE ID: %s",
				     id_printable(d, n, shown, sizeof(shown)),
				     n >= urilen ? "too long" : "contains a NUL byte");
		else {
			memcpy(uri, d, n);
			uri[n] = 0;
		}
	}
	GENERAL_NAMES_free(names);
	return rc;
}

static int check_eku(X509 *leaf, bool purpose_server, struct err *e)
{
	const char *need = purpose_server ? "serverAuth" : "clientAuth";
	const char *role = purpose_server ? "server" : "client";
	if (!(X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE))
		return err_set(e, "peer certificate has no extendedKeyUsage; %s is required of a %s",
			       need, role);
	uint32_t xku = X509_get_extended_key_usage(leaf);
	if (!(xku & (purpose_server ? XKU_SSL_SERVER : XKU_SSL_CLIENT)))
		return err_set(e, "peer certificate extendedKeyUsage lacks %s, required of a %s",
			       need, role);
	return 0;
}

int spiffe_verify_peer_code(const struct bundle *b, X509 *leaf, STACK_OF(X509) *untrusted,
			    bool purpose_server, time_t now, char *id, int *x509_err,
			    struct err *e)
{
	*x509_err = X509_V_ERR_CERT_REJECTED;
	if (!leaf)
		return err_set(e, "no %s certificate", purpose_server ? "server" : "client");
	if (check_chain(b, leaf, untrusted, now, x509_err, e) < 0)
		return -1;
	*x509_err = X509_V_ERR_CERT_REJECTED;
	if (check_not_ca(leaf, e) < 0)
		return -1;
	char uri[SPIFFE_ID_MAX], td[TRUST_DOMAIN_MAX];
	if (the_uri_san(leaf, uri, sizeof(uri), e) < 0)
		return -1;
	struct err why;
	if (spiffe_id_check(uri, td, sizeof(td), NULL, 0, NULL, 0, &why) < 0) {
		char shown[160];
		return err_set(e, "peer URI SAN %s is not a valid SPIFFE ID: %s",
			       id_printable(uri, strlen(uri), shown, sizeof(shown)), why.msg);
	}
	if (strcmp(td, b->td) != 0)
		return err_set(e, "peer SPIFFE ID %s is not in trust domain %s", uri, b->td);
	if (check_eku(leaf, purpose_server, e) < 0) {
		*x509_err = X509_V_ERR_INVALID_PURPOSE;
		return -1;
	}
	if (id)
		snprintf(id, SPIFFE_ID_MAX, "%s", uri);
	*x509_err = X509_V_OK;
	return 0;
}

int spiffe_verify_peer(const struct bundle *b, X509 *leaf, STACK_OF(X509) *untrusted,
		       bool purpose_server, time_t now, char *id, struct err *e)
{
	int code;
	return spiffe_verify_peer_code(b, leaf, untrusted, purpose_server, now, id, &code, e);
}
