/* Fuzz target: strict SPIFFE validation of a peer certificate from DER (what a TLS peer
 * presents: agent/identity/bundle.c spiffe_verify_peer), against a trust bundle made once
 * at start-up (an ECDSA P-256 root for trust domain "fuzz.test").
 * Input: one flags byte, then DER certificates back to back: the leaf, then the untrusted
 * chain.  flags bit 0: verify for a server (else a client); bit 1: re-sign the leaf with the
 * bundle's root first (issuer set to the root, authority key id dropped), so inputs reach the
 * checks after the chain (CA flag, key usage, URI SANs, EKU) instead of all failing the
 * signature; bit 2: check at the leaf's notBefore + 1 h instead of a fixed time.
 * Properties: success yields a SPIFFE ID in trust domain fuzz.test; failure says why. */
#include "fuzz.h"

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "identity/identity.h"

#define TD "fuzz.test"
#define MAX_CHAIN 4

static EVP_PKEY *root_key;
static X509 *root;
static struct bundle *bundle;

static X509 *make_root(EVP_PKEY *key)
{
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600L * 24 * 365 * 20);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365 * 50);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509_set_pubkey(x, key);
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (!X509_sign(x, key, EVP_sha256()))
		abort();
	return x;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	root_key = EVP_EC_gen("P-256");
	if (!root_key)
		abort();
	root = make_root(root_key);
	struct err e;
	bundle = bundle_from_cert(root, TD, &e);
	if (!bundle) {
		fprintf(stderr, "fuzz_cert: bundle: %s\n", e.msg);
		abort();
	}
	return 0;
}

/* Make the root the leaf's issuer and sign it (the fuzzer cannot forge signatures). */
static void resign(X509 *leaf)
{
	X509_set_issuer_name(leaf, X509_get_subject_name(root));
	int i;
	while ((i = X509_get_ext_by_NID(leaf, NID_authority_key_identifier, -1)) >= 0)
		X509_EXTENSION_free(X509_delete_ext(leaf, i));
	X509_sign(leaf, root_key, EVP_sha256());
}

static time_t check_time(X509 *leaf, bool from_leaf)
{
	time_t fixed = 1798761600; /* 2027-01-01 */
	if (!from_leaf)
		return fixed;
	struct tm tm;
	if (!ASN1_TIME_to_tm(X509_get0_notBefore(leaf), &tm))
		return fixed;
	return timegm(&tm) + 3600;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t flags = data[0];
	const unsigned char *p = data + 1;
	long left = (long)size - 1;
	X509 *leaf = d2i_X509(NULL, &p, left);
	if (!leaf) {
		ERR_clear_error();
		return 0;
	}
	STACK_OF(X509) *chain = sk_X509_new_null();
	for (int i = 0; i < MAX_CHAIN; i++) {
		left = (long)size - (long)(p - data);
		X509 *x = left > 0 ? d2i_X509(NULL, &p, left) : NULL;
		if (!x)
			break;
		sk_X509_push(chain, x);
	}
	if (flags & 2)
		resign(leaf);
	char id[SPIFFE_ID_MAX] = "";
	struct err e = {0};
	time_t now = check_time(leaf, flags & 4);
	int rc = spiffe_verify_peer(bundle, leaf, chain, flags & 1, now, id, &e);
	if (getenv("FUZZ_VERBOSE")) /* corpus upkeep: which check each input reaches */
		fprintf(stderr, "fuzz_cert: %s\n", rc == 0 ? id : e.msg);
	if (rc == 0) {
		char td[256];
		FUZZ_ASSERT(spiffe_id_parse(id, td, sizeof(td), NULL, 0, NULL, 0),
			    "accepted \"%s\"", id);
		FUZZ_ASSERT(strcmp(td, TD) == 0, "accepted trust domain %s", td);
	} else {
		FUZZ_ASSERT(e.msg[0], "refused without a reason");
	}
	sk_X509_pop_free(chain, X509_free);
	X509_free(leaf);
	ERR_clear_error();
	return 0;
}
