/* Helpers for the identity tests (see test_identity_helpers.h). */
#include "test_identity_helpers.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

static bool add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
	bool ok = ext && X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok;
}

static bool set_serial_and_times(X509 *cert, long nb_rel, long na_rel)
{
	unsigned char b[16];
	RAND_bytes(b, sizeof(b));
	b[0] = (unsigned char)((b[0] & 0x7f) | 0x01);
	BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
	ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
	time_t now = time(NULL);
	bool ok = ai && X509_set_serialNumber(cert, ai) &&
		  ASN1_TIME_set(X509_getm_notBefore(cert), now + nb_rel) &&
		  ASN1_TIME_set(X509_getm_notAfter(cert), now + na_rel);
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	return ok;
}

bool idt_ca_new(struct tca *ca, const char *cn)
{
	ca->key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	ca->cert = X509_new();
	X509_NAME *name = X509_NAME_new();
	bool ok = ca->key && ca->cert && name && X509_set_version(ca->cert, X509_VERSION_3) &&
		  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					     (const unsigned char *)cn, -1, -1, 0) &&
		  X509_set_subject_name(ca->cert, name) && X509_set_issuer_name(ca->cert, name) &&
		  X509_set_pubkey(ca->cert, ca->key) &&
		  set_serial_and_times(ca->cert, -3600, 86400L * 365) &&
		  add_ext(ca->cert, ca->cert, NID_basic_constraints, "critical,CA:TRUE") &&
		  add_ext(ca->cert, ca->cert, NID_key_usage, "critical,keyCertSign,cRLSign") &&
		  add_ext(ca->cert, ca->cert, NID_subject_key_identifier, "hash") &&
		  X509_sign(ca->cert, ca->key, EVP_sha256()) > 0;
	X509_NAME_free(name);
	if (!ok) {
		idt_ca_free(ca);
		return false;
	}
	return true;
}

void idt_ca_free(struct tca *ca)
{
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	ca->cert = NULL;
	ca->key = NULL;
}

static bool add_sans(X509 *cert, const struct tcert_opts *o)
{
	if (o->n_uris == 0 && !o->dns)
		return true;
	GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
	bool ok = names != NULL;
	for (int i = 0; ok && i < o->n_uris; i++) {
		GENERAL_NAME *gn = GENERAL_NAME_new();
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();
		ok = gn && s && ASN1_STRING_set(s, o->uris[i], (int)strlen(o->uris[i]));
		if (ok) {
			GENERAL_NAME_set0_value(gn, GEN_URI, s);
			sk_GENERAL_NAME_push(names, gn);
		} else {
			ASN1_IA5STRING_free(s);
			GENERAL_NAME_free(gn);
		}
	}
	if (ok && o->dns) {
		GENERAL_NAME *gn = GENERAL_NAME_new();
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();
		ASN1_STRING_set(s, o->dns, (int)strlen(o->dns));
		GENERAL_NAME_set0_value(gn, GEN_DNS, s);
		sk_GENERAL_NAME_push(names, gn);
	}
	ok = ok && X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 1, X509V3_ADD_DEFAULT) == 1;
	GENERAL_NAMES_free(names);
	return ok;
}

X509 *idt_cert_make(const struct tca *ca, const struct tcert_opts *o, EVP_PKEY **keyout)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *cert = X509_new();
	X509_NAME *self = X509_NAME_new();
	X509_NAME_add_entry_by_txt(self, "CN", MBSTRING_ASC, (const unsigned char *)"self", -1,
				   -1, 0);
	X509 *issuer = o->self_signed ? cert : ca->cert;
	EVP_PKEY *signer = o->self_signed ? key : ca->key;
	const char *eku = o->eku ? o->eku : "serverAuth,clientAuth";
	bool ok = key && cert && X509_set_version(cert, X509_VERSION_3) &&
		  X509_set_pubkey(cert, key) &&
		  set_serial_and_times(cert, o->not_before_rel ? o->not_before_rel : -60,
				       o->not_after_rel ? o->not_after_rel : 3600);
	if (ok && o->self_signed)
		ok = X509_set_subject_name(cert, self) && X509_set_issuer_name(cert, self) &&
		     add_ext(cert, cert, NID_subject_key_identifier, "hash");
	else if (ok)
		ok = X509_set_issuer_name(cert, X509_get_subject_name(ca->cert));
	ok = ok && add_sans(cert, o) &&
	     add_ext(cert, issuer, NID_basic_constraints, o->ca ? "critical,CA:TRUE" : "critical,CA:FALSE") &&
	     add_ext(cert, issuer, NID_key_usage,
		     o->ca ? "critical,digitalSignature,keyCertSign" : "critical,digitalSignature") &&
	     (!*eku || add_ext(cert, issuer, NID_ext_key_usage, eku)) &&
	     add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always") &&
	     X509_sign(cert, signer, EVP_sha256()) > 0;
	X509_NAME_free(self);
	if (!ok) {
		ERR_print_errors_fp(stderr);
		X509_free(cert);
		EVP_PKEY_free(key);
		return NULL;
	}
	if (keyout)
		*keyout = key;
	else
		EVP_PKEY_free(key);
	return cert;
}

bool idt_tmpdir(char *buf, size_t len)
{
	snprintf(buf, len, "/tmp/moat-identity-test.XXXXXX");
	return mkdtemp(buf) != NULL;
}

static void idt_rm_rf_depth(const char *path, int depth)
{
	struct stat st;
	if (depth > 8 || lstat(path, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			char sub[4096];
			snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
			idt_rm_rf_depth(sub, depth + 1);
		}
		if (d)
			closedir(d);
		rmdir(path);
	} else {
		unlink(path);
	}
}

void idt_rm_rf(const char *path)
{
	/* Only ever delete what the tests made. */
	if (strncmp(path, "/tmp/moat-identity-test.", 24) != 0)
		return;
	idt_rm_rf_depth(path, 0);
}

bool idt_write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return false;
	bool ok = fputs(text, f) >= 0;
	return fclose(f) == 0 && ok;
}

char *idt_pem_certs(X509 *const *certs)
{
	BIO *bio = BIO_new(BIO_s_mem());
	for (int i = 0; certs[i]; i++)
		PEM_write_bio_X509(bio, certs[i]);
	char *data;
	long n = BIO_get_mem_data(bio, &data);
	char *out = strndup(data, (size_t)n);
	BIO_free(bio);
	return out;
}

bool idt_pair_new(struct tpair *p, SSL_CTX *cctx, SSL_CTX *sctx)
{
	memset(p, 0, sizeof(*p));
	BIO *bc, *bs;
	if (BIO_new_bio_pair(&bc, 0, &bs, 0) != 1)
		return false;
	p->c = SSL_new(cctx);
	p->s = SSL_new(sctx);
	if (!p->c || !p->s) {
		SSL_free(p->c);
		SSL_free(p->s);
		BIO_free(bc);
		BIO_free(bs);
		return false;
	}
	SSL_set_bio(p->c, bc, bc);
	SSL_set_bio(p->s, bs, bs);
	SSL_set_connect_state(p->c);
	SSL_set_accept_state(p->s);
	return true;
}

void idt_pair_free(struct tpair *p)
{
	SSL_free(p->c);
	SSL_free(p->s);
	p->c = p->s = NULL;
	ERR_clear_error();
}

static void step(SSL *ssl, int *done)
{
	if (*done)
		return;
	int r = SSL_do_handshake(ssl);
	if (r == 1) {
		*done = 1;
		return;
	}
	int err = SSL_get_error(ssl, r);
	if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
		*done = -1;
}

bool idt_pair_handshake(struct tpair *p)
{
	for (int i = 0; i < 64 && (!p->c_done || !p->s_done); i++) {
		step(p->c, &p->c_done);
		step(p->s, &p->s_done);
	}
	/* Let a finished side see an alert its peer sent when it failed. */
	if (p->c_done == 1 && p->s_done == -1) {
		char b[8];
		int r = SSL_read(p->c, b, sizeof(b));
		if (r <= 0 && SSL_get_error(p->c, r) != SSL_ERROR_WANT_READ)
			p->c_done = -1;
	}
	ERR_clear_error();
	return p->c_done == 1 && p->s_done == 1;
}

static bool send_recv(SSL *from, SSL *to, const char *msg)
{
	int n = (int)strlen(msg);
	if (SSL_write(from, msg, n) != n)
		return false;
	char buf[64];
	int got = 0;
	for (int i = 0; i < 16 && got < n; i++) {
		int r = SSL_read(to, buf + got, (int)sizeof(buf) - got);
		if (r > 0)
			got += r;
		else if (SSL_get_error(to, r) != SSL_ERROR_WANT_READ)
			return false;
	}
	return got == n && memcmp(buf, msg, (size_t)n) == 0;
}

bool idt_pair_exchange(struct tpair *p)
{
	bool ok = send_recv(p->c, p->s, "ping") && send_recv(p->s, p->c, "pong");
	ERR_clear_error();
	return ok;
}
