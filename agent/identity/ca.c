/* The built-in CA: an ECDSA P-256 self-signed root (on disk or in memory) that mints SVIDs. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "core/log.h"
#include "identity/identity.h"
#include "identity/identity_internal.h"

#define ROOT_CERT_FILE "root-cert.pem"
#define ROOT_KEY_FILE "root-key.pem"
#define TRUST_DOMAIN_FILE "trust-domain"
#define ROOT_VALIDITY_DAYS 3652 /* 10 years, leap days included */
#define BACKDATE_SECONDS 60     /* tolerate peers whose clock is a little behind */
#define DEFAULT_TTL_SECONDS 86400
#define CN_MAX 64               /* X.520 upper bound for commonName */

struct moat_ca {
	char td[TRUST_DOMAIN_MAX];
	X509 *cert;
	EVP_PKEY *key;
	char *bundle_path; /* <dir>/root-cert.pem; NULL when ephemeral */
};

/* ---- certificate building blocks ---- */

static EVP_PKEY *new_p256_key(struct err *e)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	if (!k) {
		char oe[256];
		err_set(e, "generate ECDSA P-256 key: %s", id_ossl_errors(oe, sizeof(oe)));
	}
	return k;
}

/* Random positive serial of exactly 16 bytes (top bit clear so DER needs no 0x00 pad,
 * first byte non-zero so it is never shorter). */
static int set_random_serial(X509 *cert, struct err *e)
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return err_set(e, "random serial: RAND_bytes failed");
	b[0] &= 0x7f;
	if (b[0] == 0)
		b[0] = 0x01;
	BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
	ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
	int ok = ai && X509_set_serialNumber(cert, ai);
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	return ok ? 0 : err_set(e, "set certificate serial number");
}

static int set_validity(X509 *cert, time_t not_before, time_t not_after, struct err *e)
{
	if (!ASN1_TIME_set(X509_getm_notBefore(cert), not_before) ||
	    !ASN1_TIME_set(X509_getm_notAfter(cert), not_after))
		return err_set(e, "set certificate validity");
	return 0;
}

/* One extension from its OpenSSL config text ("critical,CA:TRUE"). */
static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value, struct err *e)
{
	X509V3_CTX v3;
	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
	if (!ext || !X509_add_ext(cert, ext, -1)) {
		char oe[256];
		X509_EXTENSION_free(ext);
		return err_set(e, "add extension %s=%s: %s", OBJ_nid2sn(nid), value,
			       id_ossl_errors(oe, sizeof(oe)));
	}
	X509_EXTENSION_free(ext);
	return 0;
}

/* Exactly one critical URI SAN, built as a GENERAL_NAME so the ID is never re-parsed as
 * config text. */
static int add_uri_san(X509 *cert, const char *uri, struct err *e)
{
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
	int ok = names && gn && ia5 && ASN1_STRING_set(ia5, uri, (int)strlen(uri));
	if (ok) {
		GENERAL_NAME_set0_value(gn, GEN_URI, ia5);
		ia5 = NULL;
		ok = sk_GENERAL_NAME_push(names, gn) > 0;
		if (ok)
			gn = NULL;
	}
	ok = ok && X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 1, X509V3_ADD_DEFAULT) == 1;
	ASN1_IA5STRING_free(ia5);
	GENERAL_NAME_free(gn);
	GENERAL_NAMES_free(names);
	return ok ? 0 : err_set(e, "add URI SAN %s", uri);
}

/* Ed25519/Ed448 keys sign without a separate digest; everything else uses SHA-256. */
static const EVP_MD *sign_digest(EVP_PKEY *key)
{
	int id = EVP_PKEY_get_id(key);
	return (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448) ? NULL : EVP_sha256();
}

static int sign_cert(X509 *cert, EVP_PKEY *key, struct err *e)
{
	if (X509_sign(cert, key, sign_digest(key)) <= 0) {
		char oe[256];
		return err_set(e, "sign certificate: %s", id_ossl_errors(oe, sizeof(oe)));
	}
	return 0;
}

static X509 *new_root_cert(EVP_PKEY *key, const char *td, struct err *e)
{
	X509 *cert = X509_new();
	X509_NAME *name = X509_NAME_new();
	char cn[CN_MAX + 1];
	snprintf(cn, sizeof(cn), "moat root CA %s", td);
	time_t now = time(NULL);
	bool ok = cert && name && X509_set_version(cert, X509_VERSION_3) &&
		  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
					     (const unsigned char *)"moat", -1, -1, 0) &&
		  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					     (const unsigned char *)cn, -1, -1, 0) &&
		  X509_set_subject_name(cert, name) && X509_set_issuer_name(cert, name) &&
		  X509_set_pubkey(cert, key);
	if (!ok) {
		char oe[256];
		err_set(e, "build root certificate: %s", id_ossl_errors(oe, sizeof(oe)));
	}
	ok = ok && set_random_serial(cert, e) == 0 &&
	     set_validity(cert, now - BACKDATE_SECONDS, now + ROOT_VALIDITY_DAYS * 86400L, e) == 0 &&
	     add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE", e) == 0 &&
	     add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign", e) == 0 &&
	     add_ext(cert, cert, NID_subject_key_identifier, "hash", e) == 0 &&
	     sign_cert(cert, key, e) == 0;
	X509_NAME_free(name);
	if (!ok) {
		X509_free(cert);
		return NULL;
	}
	return cert;
}

static struct moat_ca *ca_alloc(const char *td, X509 *cert, EVP_PKEY *key)
{
	struct moat_ca *ca = xcalloc(1, sizeof(*ca));
	snprintf(ca->td, sizeof(ca->td), "%s", td);
	ca->cert = cert;
	ca->key = key;
	return ca;
}

struct moat_ca *ca_new_ephemeral(const char *trust_domain, struct err *e)
{
	if (trust_domain_check(trust_domain, e) < 0) {
		err_wrap(e, "trust domain \"%s\"", trust_domain ? trust_domain : "");
		return NULL;
	}
	EVP_PKEY *key = new_p256_key(e);
	X509 *cert = key ? new_root_cert(key, trust_domain, e) : NULL;
	if (!cert) {
		EVP_PKEY_free(key);
		return NULL;
	}
	return ca_alloc(trust_domain, cert, key);
}

void ca_free(struct moat_ca *ca)
{
	if (!ca)
		return;
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	free(ca->bundle_path);
	free(ca);
}

const char *ca_trust_domain(const struct moat_ca *ca)
{
	return ca->td;
}

X509 *ca_root_cert(const struct moat_ca *ca)
{
	return ca->cert;
}

const char *ca_bundle_path(const struct moat_ca *ca)
{
	return ca->bundle_path;
}

/* ---- on disk ---- */

static char *pem_of_cert(X509 *cert, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *out = NULL, *data;
	if (bio && PEM_write_bio_X509(bio, cert)) {
		long n = BIO_get_mem_data(bio, &data);
		out = xstrndup(data, (size_t)n);
		*len = (size_t)n;
	}
	BIO_free(bio);
	return out;
}

/* PKCS#8 "PRIVATE KEY", unencrypted: the directory's mode is its protection. */
static char *pem_of_key(EVP_PKEY *key, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *out = NULL, *data;
	if (bio && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
		long n = BIO_get_mem_data(bio, &data);
		out = xstrndup(data, (size_t)n);
		*len = (size_t)n;
	}
	BIO_free(bio);
	return out;
}

static int write_all(int fd, const char *p, size_t left)
{
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		left -= (size_t)n;
	}
	return 0;
}

/* Create path with data, never replacing an existing file: the data goes to a private temp
 * file (created with `mode`, so a key is never readable by others even briefly) that is then
 * hard-linked into place; link() fails with EEXIST instead of overwriting. */
static int write_new_file(const char *path, const char *data, size_t len, mode_t mode,
			  struct err *e)
{
	char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0) {
		err_set(e, "create %s: %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	int rc = 0;
	if (write_all(fd, data, len) < 0 || fchmod(fd, mode) < 0 || fsync(fd) < 0)
		rc = err_set(e, "write %s: %s", tmp, strerror(errno));
	if (close(fd) < 0 && rc == 0)
		rc = err_set(e, "write %s: %s", tmp, strerror(errno));
	if (rc == 0 && link(tmp, path) < 0) {
		if (errno == EEXIST)
			rc = err_set(e, "%s exists; refusing to overwrite: remove it or choose another --out",
				     path);
		else
			rc = err_set(e, "create %s: %s", path, strerror(errno));
	}
	unlink(tmp);
	free(tmp);
	return rc;
}

static int prepare_dir(const char *dir, struct err *e)
{
	struct stat st;
	if (stat(dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return err_set(e, "%s exists and is not a directory", dir);
		return 0;
	}
	if (errno != ENOENT)
		return err_set(e, "stat %s: %s", dir, strerror(errno));
	if (mkdir_p(dir, 0700) < 0)
		return err_set(e, "create directory %s: %s", dir, strerror(errno));
	/* mkdir's mode is filtered by the umask; make the CA directory exactly 0700. */
	if (chmod(dir, 0700) < 0)
		return err_set(e, "chmod 0700 %s: %s", dir, strerror(errno));
	return 0;
}

static int write_ca_files(const char *dir, const char *td, X509 *cert, EVP_PKEY *key,
			  struct err *e)
{
	char *keypath = xasprintf("%s/%s", dir, ROOT_KEY_FILE);
	char *certpath = xasprintf("%s/%s", dir, ROOT_CERT_FILE);
	char *tdpath = xasprintf("%s/%s", dir, TRUST_DOMAIN_FILE);
	char *tdtext = xasprintf("%s\n", td);
	size_t keylen = 0, certlen = 0;
	char *keypem = pem_of_key(key, &keylen), *certpem = pem_of_cert(cert, &certlen);
	int rc = -1;
	if (!keypem || !certpem) {
		char oe[256];
		err_set(e, "encode CA as PEM: %s", id_ossl_errors(oe, sizeof(oe)));
	} else if (write_new_file(keypath, keypem, keylen, 0600, e) == 0) {
		rc = write_file_atomic(certpath, certpem, certlen, 0644, e);
		if (rc == 0)
			rc = write_file_atomic(tdpath, tdtext, strlen(tdtext), 0644, e);
		if (rc < 0) /* do not leave a key without its certificate behind */
			unlink(keypath);
	}
	if (keypem)
		OPENSSL_cleanse(keypem, keylen);
	free(keypem);
	free(certpem);
	free(keypath);
	free(certpath);
	free(tdpath);
	free(tdtext);
	return rc;
}

int ca_init_dir(const char *dir, const char *trust_domain, struct err *e)
{
	if (trust_domain_check(trust_domain, e) < 0)
		return err_wrap(e, "trust domain \"%s\"", trust_domain ? trust_domain : "");
	if (!dir || !*dir)
		return err_set(e, "no CA directory given");
	char *keypath = xasprintf("%s/%s", dir, ROOT_KEY_FILE);
	struct stat st;
	/* Checked early for a clear message before any work; write_new_file re-checks
	 * atomically. */
	bool exists = lstat(keypath, &st) == 0;
	if (exists)
		err_set(e, "%s exists; refusing to overwrite: remove it or choose another --out",
			keypath);
	free(keypath);
	if (exists || prepare_dir(dir, e) < 0)
		return -1;
	EVP_PKEY *key = new_p256_key(e);
	X509 *cert = key ? new_root_cert(key, trust_domain, e) : NULL;
	int rc = cert ? write_ca_files(dir, trust_domain, cert, key, e) : -1;
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}

/* The key file must be private to its owner: anything else is an error, because a CA key
 * readable by others lets them mint any identity in the mesh. */
static int check_modes(const char *dir, const char *keypath, const char *certpath,
		       struct err *e)
{
	struct stat st;
	if (stat(keypath, &st) < 0)
		return err_set(e, "%s: %s", keypath, strerror(errno));
	if (st.st_mode & 077)
		return err_set(e,
			       "%s has mode %04o: the CA key must not be accessible by group or others "
			       "(chmod 600 %s)",
			       keypath, (unsigned)(st.st_mode & 07777), keypath);
	if (stat(certpath, &st) == 0 && (st.st_mode & 022))
		log_warn("%s has mode %04o: group/others can replace the root certificate "
			 "(chmod 644 %s)",
			 certpath, (unsigned)(st.st_mode & 07777), certpath);
	if (stat(dir, &st) == 0 && (st.st_mode & 022))
		log_warn("CA directory %s has mode %04o: group/others can replace its files "
			 "(chmod 700 %s)",
			 dir, (unsigned)(st.st_mode & 07777), dir);
	return 0;
}

static int load_trust_domain(const char *path, char *td, size_t tdlen, struct err *e)
{
	char *text = read_file(path, NULL, e);
	if (!text)
		return -1;
	size_t n = strlen(text);
	while (n && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' ' ||
		     text[n - 1] == '\t'))
		text[--n] = 0;
	int rc = trust_domain_check(text, e);
	if (rc < 0)
		err_wrap(e, "%s", path);
	else
		snprintf(td, tdlen, "%s", text);
	free(text);
	return rc;
}

static X509 *load_cert_pem(const char *path, struct err *e)
{
	size_t len;
	char *text = read_file(path, &len, e);
	if (!text)
		return NULL;
	BIO *bio = BIO_new_mem_buf(text, (int)len);
	X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	if (!cert) {
		char oe[256];
		err_set(e, "%s: no PEM certificate: %s", path, id_ossl_errors(oe, sizeof(oe)));
	}
	BIO_free(bio);
	free(text);
	return cert;
}

static EVP_PKEY *load_key_pem(const char *path, struct err *e)
{
	size_t len;
	char *text = read_file(path, &len, e);
	if (!text)
		return NULL;
	BIO *bio = BIO_new_mem_buf(text, (int)len);
	EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	if (!key) {
		char oe[256];
		err_set(e, "%s: no PEM private key: %s", path, id_ossl_errors(oe, sizeof(oe)));
	}
	BIO_free(bio);
	OPENSSL_cleanse(text, len);
	free(text);
	return key;
}

/* The pair must be a usable CA: key matches, CA:TRUE, not expired. */
static int check_root(const char *certpath, X509 *cert, EVP_PKEY *key, struct err *e)
{
	if (X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		return err_set(e, "%s does not match the private key %s", certpath, ROOT_KEY_FILE);
	}
	if (!(X509_get_extension_flags(cert) & EXFLAG_CA))
		return err_set(e, "%s is not a CA certificate (basicConstraints CA:TRUE missing)",
			       certpath);
	time_t na;
	char when[RFC3339_LEN];
	if (id_asn1_time_to_time_t(X509_get0_notAfter(cert), &na) && na <= time(NULL))
		return err_set(e, "%s expired at %s: create a new CA", certpath,
			       id_time_rfc3339(na, when, sizeof(when)));
	return 0;
}

struct moat_ca *ca_load_dir(const char *dir, struct err *e)
{
	char *keypath = xasprintf("%s/%s", dir, ROOT_KEY_FILE);
	char *certpath = xasprintf("%s/%s", dir, ROOT_CERT_FILE);
	char *tdpath = xasprintf("%s/%s", dir, TRUST_DOMAIN_FILE);
	char td[TRUST_DOMAIN_MAX];
	struct moat_ca *ca = NULL;
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	if (check_modes(dir, keypath, certpath, e) == 0 &&
	    load_trust_domain(tdpath, td, sizeof(td), e) == 0 &&
	    (cert = load_cert_pem(certpath, e)) && (key = load_key_pem(keypath, e)) &&
	    check_root(certpath, cert, key, e) == 0) {
		ca = ca_alloc(td, cert, key);
		ca->bundle_path = certpath;
		certpath = NULL;
		cert = NULL;
		key = NULL;
	}
	if (!ca)
		err_wrap(e, "load CA from %s", dir);
	X509_free(cert);
	EVP_PKEY_free(key);
	free(keypath);
	free(certpath);
	free(tdpath);
	return ca;
}

/* ---- SVIDs ---- */

static void svid_fill(struct svid *s, const char *id)
{
	snprintf(s->spiffe_id, sizeof(s->spiffe_id), "%s", id);
	id_serial_hex(X509_get0_serialNumber(s->cert), s->serial, sizeof(s->serial));
	id_asn1_time_to_time_t(X509_get0_notBefore(s->cert), &s->not_before);
	id_asn1_time_to_time_t(X509_get0_notAfter(s->cert), &s->not_after);
}

static int check_svid_id(const struct moat_ca *ca, const char *id, struct err *e)
{
	char td[TRUST_DOMAIN_MAX];
	if (spiffe_id_check(id, td, sizeof(td), NULL, 0, NULL, 0, e) < 0)
		return err_wrap(e, "invalid SPIFFE ID \"%s\"", id ? id : "");
	if (strlen(id) >= SPIFFE_ID_MAX)
		return err_set(e, "SPIFFE ID %s is longer than %d bytes", id, SPIFFE_ID_MAX - 1);
	if (strcmp(td, ca->td) != 0)
		return err_set(e, "SPIFFE ID %s is not in the CA's trust domain %s", id, ca->td);
	return 0;
}

/* The SVID profile from identity.h; notAfter never outlives the CA. */
static X509 *new_svid_cert(struct moat_ca *ca, EVP_PKEY *key, const char *id, int ttl,
			   struct err *e)
{
	X509 *cert = X509_new();
	time_t now = time(NULL), not_after = now + ttl, ca_end;
	if (id_asn1_time_to_time_t(X509_get0_notAfter(ca->cert), &ca_end) && ca_end < not_after)
		not_after = ca_end;
	bool ok = cert && X509_set_version(cert, X509_VERSION_3) &&
		  X509_set_issuer_name(cert, X509_get_subject_name(ca->cert)) &&
		  X509_set_pubkey(cert, key); /* subject stays empty: identity is the URI SAN */
	if (!ok)
		err_set(e, "build certificate for %s", id);
	ok = ok && set_random_serial(cert, e) == 0 &&
	     set_validity(cert, now - BACKDATE_SECONDS, not_after, e) == 0 &&
	     add_uri_san(cert, id, e) == 0 &&
	     add_ext(cert, ca->cert, NID_basic_constraints, "critical,CA:FALSE", e) == 0 &&
	     add_ext(cert, ca->cert, NID_key_usage, "critical,digitalSignature", e) == 0 &&
	     add_ext(cert, ca->cert, NID_ext_key_usage, "serverAuth,clientAuth", e) == 0 &&
	     add_ext(cert, ca->cert, NID_authority_key_identifier, "keyid:always", e) == 0 &&
	     sign_cert(cert, ca->key, e) == 0;
	if (!ok) {
		X509_free(cert);
		return NULL;
	}
	return cert;
}

struct svid *ca_mint_svid(struct moat_ca *ca, const char *spiffe_id, int ttl_seconds,
			  struct err *e)
{
	if (check_svid_id(ca, spiffe_id, e) < 0)
		return NULL;
	int ttl = ttl_seconds > 0 ? ttl_seconds : DEFAULT_TTL_SECONDS;
	EVP_PKEY *key = new_p256_key(e);
	X509 *cert = key ? new_svid_cert(ca, key, spiffe_id, ttl, e) : NULL;
	if (!cert) {
		EVP_PKEY_free(key);
		err_wrap(e, "mint SVID for %s", spiffe_id);
		return NULL;
	}
	struct svid *s = xcalloc(1, sizeof(*s));
	s->refs = 1;
	s->cert = cert;
	s->key = key;
	s->chain = sk_X509_new_null();
	svid_fill(s, spiffe_id);
	return s;
}

struct svid *svid_ref(struct svid *s)
{
	if (s)
		s->refs++;
	return s;
}

void svid_unref(struct svid *s)
{
	if (!s || --s->refs > 0)
		return;
	X509_free(s->cert);
	EVP_PKEY_free(s->key);
	sk_X509_pop_free(s->chain, X509_free);
	free(s);
}
