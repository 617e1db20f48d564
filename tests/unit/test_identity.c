/* Identity: SPIFFE IDs, the CA on disk, the SVID profile, trust bundles, peer validation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "identity/identity.h"
#include "test.h"
#include "test_identity_helpers.h"

#define TD "cluster.local"
#define ID_A "spiffe://cluster.local/ns/ns1/sa/web"
#define ID_B "spiffe://cluster.local/ns/ns2/sa/db"

/* ---- SPIFFE IDs ---- */

TEST(spiffe_id_parse_accepts_the_kubernetes_form)
{
	char td[64], ns[64], sa[64];
	CHECK(spiffe_id_parse(ID_A, td, sizeof(td), ns, sizeof(ns), sa, sizeof(sa)));
	CHECK_STR(td, "cluster.local");
	CHECK_STR(ns, "ns1");
	CHECK_STR(sa, "web");
	CHECK(spiffe_id_parse("spiffe://my-td_1.example/ns/Kube-System/sa/a.b_c", NULL, 0, NULL,
			      0, NULL, 0));
	CHECK_STR(spiffe_principal(ID_A), "cluster.local/ns/ns1/sa/web");
	CHECK_STR(spiffe_principal("already/ns/x/sa/y"), "already/ns/x/sa/y");
}

TEST(spiffe_id_parse_rejects_malformed_ids)
{
	static const char *bad[] = {
		"",
		"SPIFFE://cluster.local/ns/a/sa/b",   /* scheme must be lowercase */
		"https://cluster.local/ns/a/sa/b",
		"spiffe://Cluster.local/ns/a/sa/b",   /* td must be lowercase */
		"spiffe://cluster.local:8080/ns/a/sa/b",
		"spiffe:///ns/a/sa/b",                /* empty td */
		"spiffe://cluster.local",             /* no path */
		"spiffe://cluster.local/",
		"spiffe://cluster.local/ns/a",
		"spiffe://cluster.local/ns//sa/b",    /* empty namespace */
		"spiffe://cluster.local/ns/a/sa/",    /* empty sa */
		"spiffe://cluster.local/ns/a/sa/b/c", /* extra segment */
		"spiffe://cluster.local/ns/a/sa/b?x=1",
		"spiffe://cluster.local/ns/a/sa/b#f",
		"spiffe://cluster.local/ns/a/sx/b",
		"spiffe://cluster.local/ns/../sa/b",
		"spiffe://cluster.local/ns/a%2f/sa/b",
		"spiffe://user@cluster.local/ns/a/sa/b",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_MSG(!spiffe_id_parse(bad[i], NULL, 0, NULL, 0, NULL, 0), "accepted \"%s\"",
			  bad[i]);
	/* Longer than the SPIFFE limit of 2048 bytes. */
	char *longid = malloc(2100);
	int n = snprintf(longid, 2100, "spiffe://cluster.local/ns/a/sa/");
	memset(longid + n, 'x', 2100 - (size_t)n - 1);
	longid[2099] = 0;
	CHECK(!spiffe_id_parse(longid, NULL, 0, NULL, 0, NULL, 0));
	free(longid);
	/* An output buffer that is too small is a failure, not a truncation. */
	char tiny[4];
	CHECK(!spiffe_id_parse(ID_A, tiny, sizeof(tiny), NULL, 0, NULL, 0));
}

/* ---- the CA on disk ---- */

static int mode_of(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

TEST(ca_init_writes_files_with_modes_and_loads_back)
{
	char tmp[64], dir[128], path[192];
	REQUIRE(idt_tmpdir(tmp, sizeof(tmp)));
	snprintf(dir, sizeof(dir), "%s/ca/nested", tmp);
	struct err e = {{0}};
	CHECK_INT(ca_init_dir(dir, TD, &e), 0);
	CHECK_INT(mode_of(dir), 0700);
	snprintf(path, sizeof(path), "%s/root-cert.pem", dir);
	CHECK_INT(mode_of(path), 0644);
	snprintf(path, sizeof(path), "%s/root-key.pem", dir);
	CHECK_INT(mode_of(path), 0600);
	snprintf(path, sizeof(path), "%s/trust-domain", dir);
	CHECK_INT(mode_of(path), 0644);
	char *td = read_file(path, NULL, &e);
	CHECK_STR(td, TD "\n");
	free(td);

	struct moat_ca *ca = ca_load_dir(dir, &e);
	CHECK_MSG(ca != NULL, "load: %s", e.msg);
	if (ca) {
		CHECK_STR(ca_trust_domain(ca), TD);
		snprintf(path, sizeof(path), "%s/root-cert.pem", dir);
		CHECK_STR(ca_bundle_path(ca), path);
		struct svid *s = ca_mint_svid(ca, ID_A, 600, &e);
		CHECK(s != NULL);
		struct bundle *b = bundle_load(path, TD, &e);
		CHECK(b != NULL);
		char id[SPIFFE_ID_MAX];
		if (s && b)
			CHECK_INT(spiffe_verify_peer(b, s->cert, NULL, true, time(NULL), id, &e), 0);
		bundle_unref(b);
		svid_unref(s);
		ca_free(ca);
	}

	/* A second init must not replace the key. */
	snprintf(path, sizeof(path), "%s/root-key.pem", dir);
	char *key_before = read_file(path, NULL, &e);
	CHECK_INT(ca_init_dir(dir, TD, &e), -1);
	CHECK_CONTAINS(e.msg, "root-key.pem exists; refusing to overwrite: remove it or choose "
			      "another --out");
	char *key_after = read_file(path, NULL, &e);
	CHECK(key_before && key_after && strcmp(key_before, key_after) == 0);
	free(key_before);
	free(key_after);
	idt_rm_rf(tmp);
}

TEST(ca_load_refuses_a_readable_key_and_a_mismatched_pair)
{
	char tmp[64], a[128], b[128], path[192], other[192];
	REQUIRE(idt_tmpdir(tmp, sizeof(tmp)));
	snprintf(a, sizeof(a), "%s/a", tmp);
	snprintf(b, sizeof(b), "%s/b", tmp);
	struct err e = {{0}};
	REQUIRE(ca_init_dir(a, TD, &e) == 0 && ca_init_dir(b, TD, &e) == 0);

	snprintf(path, sizeof(path), "%s/root-key.pem", a);
	chmod(path, 0644);
	CHECK(ca_load_dir(a, &e) == NULL);
	CHECK_CONTAINS(e.msg, "mode 0644");
	CHECK_CONTAINS(e.msg, "chmod 600");
	chmod(path, 0600);

	/* b's certificate with a's key. */
	snprintf(path, sizeof(path), "%s/root-cert.pem", a);
	snprintf(other, sizeof(other), "%s/root-cert.pem", b);
	char *cert_b = read_file(other, NULL, &e);
	REQUIRE(cert_b && idt_write_text(path, cert_b));
	free(cert_b);
	CHECK(ca_load_dir(a, &e) == NULL);
	CHECK_CONTAINS(e.msg, "does not match the private key");

	/* A bad trust-domain file. */
	snprintf(path, sizeof(path), "%s/trust-domain", b);
	REQUIRE(idt_write_text(path, "Not A Domain\n"));
	CHECK(ca_load_dir(b, &e) == NULL);
	CHECK_CONTAINS(e.msg, "trust domain has invalid character");

	CHECK(ca_load_dir("/nonexistent/moat-ca", &e) == NULL);
	CHECK_CONTAINS(e.msg, "/nonexistent/moat-ca");
	idt_rm_rf(tmp);
}

TEST(ca_init_rejects_a_bad_trust_domain)
{
	struct err e = {{0}};
	CHECK_INT(ca_init_dir("/tmp/moat-identity-test.never", "Bad/TD", &e), -1);
	CHECK_CONTAINS(e.msg, "trust domain");
	CHECK(ca_new_ephemeral("", &e) == NULL);
}

static bool ext_critical(X509 *c, int nid, int *crit_out)
{
	int loc = X509_get_ext_by_NID(c, nid, -1);
	if (loc < 0)
		return false;
	*crit_out = X509_EXTENSION_get_critical(X509_get_ext(c, loc));
	return true;
}

TEST(ca_root_has_the_root_profile)
{
	struct err e;
	struct moat_ca *ca = ca_new_ephemeral(TD, &e);
	REQUIRE(ca);
	X509 *root = ca_root_cert(ca);
	char buf[256];
	X509_NAME_get_text_by_NID(X509_get_subject_name(root), NID_organizationName, buf,
				  sizeof(buf));
	CHECK_STR(buf, "moat");
	X509_NAME_get_text_by_NID(X509_get_subject_name(root), NID_commonName, buf, sizeof(buf));
	CHECK_STR(buf, "moat root CA cluster.local");
	int crit = -1;
	CHECK(ext_critical(root, NID_basic_constraints, &crit) && crit == 1);
	CHECK(X509_get_extension_flags(root) & EXFLAG_CA);
	CHECK(ext_critical(root, NID_key_usage, &crit) && crit == 1);
	CHECK_INT(X509_get_key_usage(root), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	CHECK(X509_get0_subject_key_id(root) != NULL);
	int days = 0, secs = 0;
	ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(root), X509_get0_notAfter(root));
	CHECK(days >= 3650 && days <= 3653);
	CHECK_STR(OBJ_nid2sn(EVP_PKEY_get_base_id(X509_get0_pubkey(root))), "id-ecPublicKey");
	CHECK_INT(EVP_PKEY_get_bits(X509_get0_pubkey(root)), 256);
	CHECK(ca_bundle_path(ca) == NULL);
	ca_free(ca);
}

/* ---- SVIDs ---- */

TEST(svid_has_exactly_the_spiffe_profile)
{
	struct err e;
	struct moat_ca *ca = ca_new_ephemeral(TD, &e);
	REQUIRE(ca);
	time_t before = time(NULL);
	struct svid *s = ca_mint_svid(ca, ID_A, 3600, &e);
	REQUIRE(s);
	X509 *c = s->cert;
	CHECK_STR(s->spiffe_id, ID_A);

	CHECK_INT(X509_get_ext_count(c), 5);
	int crit = -1;
	CHECK(ext_critical(c, NID_subject_alt_name, &crit) && crit == 1);
	GENERAL_NAMES *names = X509_get_ext_d2i(c, NID_subject_alt_name, NULL, NULL);
	REQUIRE(names);
	CHECK_INT(sk_GENERAL_NAME_num(names), 1);
	int type;
	ASN1_IA5STRING *uri = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(names, 0), &type);
	CHECK_INT(type, GEN_URI);
	CHECK_STR((const char *)ASN1_STRING_get0_data(uri), ID_A);
	GENERAL_NAMES_free(names);

	CHECK(ext_critical(c, NID_basic_constraints, &crit) && crit == 1);
	CHECK(!(X509_get_extension_flags(c) & EXFLAG_CA));
	CHECK(X509_get_extension_flags(c) & EXFLAG_BCONS);
	CHECK(ext_critical(c, NID_key_usage, &crit) && crit == 1);
	CHECK_INT(X509_get_key_usage(c), KU_DIGITAL_SIGNATURE);
	CHECK(ext_critical(c, NID_ext_key_usage, &crit) && crit == 0);
	CHECK_INT(X509_get_extended_key_usage(c), XKU_SSL_SERVER | XKU_SSL_CLIENT);
	CHECK(ext_critical(c, NID_authority_key_identifier, &crit) && crit == 0);
	const ASN1_OCTET_STRING *akid = X509_get0_authority_key_id(c);
	const ASN1_OCTET_STRING *skid = X509_get0_subject_key_id(ca_root_cert(ca));
	CHECK(akid && skid && ASN1_OCTET_STRING_cmp(akid, skid) == 0);

	CHECK_INT(X509_NAME_entry_count(X509_get_subject_name(c)), 0);
	CHECK(X509_NAME_cmp(X509_get_issuer_name(c), X509_get_subject_name(ca_root_cert(ca))) == 0);

	const ASN1_INTEGER *serial = X509_get0_serialNumber(c);
	CHECK_INT(ASN1_STRING_length(serial), 16);
	CHECK_INT(ASN1_STRING_type(serial), V_ASN1_INTEGER); /* positive */
	CHECK_INT(strlen(s->serial), 32);

	CHECK_INT(EVP_PKEY_get_bits(s->key), 256);
	CHECK_STR(OBJ_nid2sn(EVP_PKEY_get_base_id(s->key)), "id-ecPublicKey");
	CHECK_INT(X509_check_private_key(c, s->key), 1);
	CHECK_INT(X509_verify(c, X509_get0_pubkey(ca_root_cert(ca))), 1);

	time_t after = time(NULL);
	CHECK(s->not_before >= before - 60 && s->not_before <= after - 60);
	CHECK(s->not_after >= before + 3600 && s->not_after <= after + 3600);
	CHECK_INT(sk_X509_num(s->chain), 0);

	struct svid *t = ca_mint_svid(ca, ID_A, 3600, &e);
	REQUIRE(t);
	CHECK(strcmp(s->serial, t->serial) != 0);
	CHECK(EVP_PKEY_eq(s->key, t->key) != 1); /* a new key per SVID */
	CHECK(svid_ref(t) == t);
	svid_unref(t);
	svid_unref(t);
	svid_unref(s);
	ca_free(ca);
}

TEST(svid_mint_rejects_foreign_and_malformed_ids)
{
	struct err e;
	struct moat_ca *ca = ca_new_ephemeral(TD, &e);
	REQUIRE(ca);
	CHECK(ca_mint_svid(ca, "spiffe://other.td/ns/a/sa/b", 60, &e) == NULL);
	CHECK_CONTAINS(e.msg, "not in the CA's trust domain cluster.local");
	CHECK(ca_mint_svid(ca, "spiffe://cluster.local/ns/a/sa/b/c", 60, &e) == NULL);
	CHECK_CONTAINS(e.msg, "invalid SPIFFE ID");
	CHECK(ca_mint_svid(ca, "spiffe://cluster.local/ns/a/sa/b?q", 60, &e) == NULL);
	CHECK_CONTAINS(e.msg, "query and fragment");
	/* A default TTL of 24 h. */
	struct svid *s = ca_mint_svid(ca, ID_B, 0, &e);
	REQUIRE(s);
	CHECK(s->not_after - s->not_before >= 86400 + 60 - 2 &&
	      s->not_after - s->not_before <= 86400 + 60 + 2);
	svid_unref(s);
	ca_free(ca);
}

/* ---- trust bundles ---- */

TEST(bundle_load_takes_several_roots_and_rejects_bad_files)
{
	char tmp[64], path[128];
	REQUIRE(idt_tmpdir(tmp, sizeof(tmp)));
	snprintf(path, sizeof(path), "%s/bundle.pem", tmp);
	struct tca r1, r2;
	REQUIRE(idt_ca_new(&r1, "root one"));
	REQUIRE(idt_ca_new(&r2, "root two"));
	X509 *both[] = {r1.cert, r2.cert, NULL};
	char *pem = idt_pem_certs(both);
	REQUIRE(idt_write_text(path, pem));
	struct err e;
	struct bundle *b = bundle_load(path, TD, &e);
	CHECK_MSG(b != NULL, "%s", e.msg);
	if (b) {
		CHECK_STR(bundle_trust_domain(b), TD);
		/* Leaves of both roots verify. */
		struct tcert_opts o = {.uris = {ID_A}, .n_uris = 1};
		X509 *l1 = idt_cert_make(&r1, &o, NULL), *l2 = idt_cert_make(&r2, &o, NULL);
		CHECK_INT(spiffe_verify_peer(b, l1, NULL, false, time(NULL), NULL, &e), 0);
		CHECK_INT(spiffe_verify_peer(b, l2, NULL, false, time(NULL), NULL, &e), 0);
		X509_free(l1);
		X509_free(l2);
		CHECK(bundle_ref(b) == b);
		bundle_unref(b);
		bundle_unref(b);
	}

	/* Garbage, truncated PEM, empty file, a leaf as "root", missing file. */
	REQUIRE(idt_write_text(path, "not a certificate\n"));
	CHECK(bundle_load(path, TD, &e) == NULL);
	CHECK_CONTAINS(e.msg, "no certificates found");
	pem[strlen(pem) * 3 / 4] = 0; /* inside the second certificate */
	REQUIRE(idt_write_text(path, pem));
	struct bundle *cut = bundle_load(path, TD, &e);
	CHECK(cut == NULL);
	bundle_unref(cut);
	CHECK_CONTAINS(e.msg, "bad PEM after certificate 1");
	REQUIRE(idt_write_text(path, ""));
	CHECK(bundle_load(path, TD, &e) == NULL);
	struct tcert_opts lo = {.uris = {ID_A}, .n_uris = 1};
	X509 *leaf = idt_cert_make(&r1, &lo, NULL);
	X509 *leaves[] = {leaf, NULL};
	char *leafpem = idt_pem_certs(leaves);
	REQUIRE(idt_write_text(path, leafpem));
	CHECK(bundle_load(path, TD, &e) == NULL);
	CHECK_CONTAINS(e.msg, "is not a CA");
	CHECK(bundle_load("/nonexistent/bundle.pem", TD, &e) == NULL);
	CHECK_CONTAINS(e.msg, "/nonexistent/bundle.pem");
	free(leafpem);
	X509_free(leaf);
	free(pem);
	idt_ca_free(&r1);
	idt_ca_free(&r2);
	idt_rm_rf(tmp);
}

/* ---- strict peer validation ---- */

struct vfix {
	struct tca ca;
	struct bundle *b;
};

static bool vfix_init(struct vfix *f)
{
	struct err e;
	if (!idt_ca_new(&f->ca, "moat root CA cluster.local"))
		return false;
	f->b = bundle_from_cert(f->ca.cert, TD, &e);
	return f->b != NULL;
}

static void vfix_free(struct vfix *f)
{
	bundle_unref(f->b);
	idt_ca_free(&f->ca);
}

/* Verify a hand-made leaf; returns the error text ("" on success). */
static const char *verify_with(struct vfix *f, const struct tca *signer,
			       const struct tcert_opts *o, bool purpose_server, struct err *e)
{
	X509 *leaf = idt_cert_make(signer, o, NULL);
	if (!leaf) {
		snprintf(e->msg, sizeof(e->msg), "(could not build the test certificate)");
		return e->msg;
	}
	char id[SPIFFE_ID_MAX];
	e->msg[0] = 0;
	int rc = spiffe_verify_peer(f->b, leaf, NULL, purpose_server, time(NULL), id, e);
	X509_free(leaf);
	if (rc == 0)
		e->msg[0] = 0;
	return e->msg;
}

TEST(verify_peer_accepts_a_good_leaf_and_returns_its_id)
{
	struct vfix f;
	REQUIRE(vfix_init(&f));
	struct tcert_opts o = {.uris = {ID_A}, .n_uris = 1};
	X509 *leaf = idt_cert_make(&f.ca, &o, NULL);
	REQUIRE(leaf);
	char id[SPIFFE_ID_MAX] = "";
	struct err e = {{0}};
	CHECK_INT(spiffe_verify_peer(f.b, leaf, NULL, false, time(NULL), id, &e), 0);
	CHECK_STR(id, ID_A);
	CHECK_INT(spiffe_verify_peer(f.b, leaf, NULL, true, time(NULL), id, &e), 0);
	/* The verification time is the one given, not the clock. */
	CHECK_INT(spiffe_verify_peer(f.b, leaf, NULL, true, time(NULL) + 7200, id, &e), -1);
	CHECK_CONTAINS(e.msg, "peer certificate expired at ");
	X509_free(leaf);
	/* An extra DNS SAN is tolerated (not required, not used). */
	struct tcert_opts d = {.uris = {ID_A}, .n_uris = 1, .dns = "web.ns1.svc"};
	CHECK_STR(verify_with(&f, &f.ca, &d, true, &e), "");
	vfix_free(&f);
}

TEST(verify_peer_rejects_another_ca)
{
	struct vfix f;
	REQUIRE(vfix_init(&f));
	struct tca other;
	REQUIRE(idt_ca_new(&other, "moat root CA cluster.local")); /* same name, other key */
	struct tcert_opts o = {.uris = {ID_A}, .n_uris = 1};
	struct err e;
	CHECK_STR(verify_with(&f, &other, &o, false, &e),
		  "peer certificate does not chain to the trust bundle: unable to get local "
		  "issuer certificate");
	/* Even when the foreign root comes along in the chain. */
	X509 *leaf = idt_cert_make(&other, &o, NULL);
	STACK_OF(X509) *chain = sk_X509_new_null();
	sk_X509_push(chain, other.cert);
	CHECK_INT(spiffe_verify_peer(f.b, leaf, chain, false, time(NULL), NULL, &e), -1);
	CHECK_CONTAINS(e.msg, "does not chain to the trust bundle");
	sk_X509_free(chain);
	X509_free(leaf);
	idt_ca_free(&other);
	vfix_free(&f);
}

TEST(verify_peer_rejects_two_uri_sans)
{
	struct vfix f;
	REQUIRE(vfix_init(&f));
	struct tcert_opts o = {.uris = {ID_A, ID_B}, .n_uris = 2};
	struct err e;
	CHECK_STR(verify_with(&f, &f.ca, &o, false, &e),
		  "peer certificate has 2 URI SANs; SPIFFE requires exactly one");
	vfix_free(&f);
}

TEST(verify_peer_rejects_a_foreign_trust_domain)
{
	struct vfix f;
	REQUIRE(vfix_init(&f));
	struct tcert_opts o = {.uris = {"spiffe://other.td/ns/a/sa/b"}, .n_uris = 1};
	struct err e;
	CHECK_STR(verify_with(&f, &f.ca, &o, false, &e),
		  "peer SPIFFE ID spiffe://other.td/ns/a/sa/b is not in trust domain cluster.local");
	vfix_free(&f);
}

TEST(verify_peer_rejects_expired_and_not_yet_valid)
{
	struct vfix f;
	REQUIRE(vfix_init(&f));
	struct err e;
	struct tcert_opts old = {.uris = {ID_A}, .n_uris = 1, .not_before_rel = -7200,
				 .not_after_rel = -3600};
	X509 *leaf = idt_cert_make(&f.ca, &old, NULL);
	REQUIRE(leaf);
	char want[128], when[64];
	struct tm tm;
	ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(want, sizeof(want), "peer certificate expired at %s", when);
	CHECK_INT(spiffe_verify_peer(f.b, leaf, NULL, false, time(NULL), NULL, &e), -1);
	CHECK_STR(e.msg, want);
	X509_free(leaf);

	struct tcert_opts early = {.uris = {ID_A}, .n_uris = 1, .not_before_rel = 3600,
				   .not_after_rel = 7200};
	leaf = idt_cert_make(&f.ca, &early, NULL);
	REQUIRE(leaf);
	ASN1_TIME_to_tm(X509_get0_notBefore(leaf), &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(want, sizeof(want), "peer certificate is not valid yet: valid from %s", when);
	CHECK_INT(spiffe_verify_peer(f.b, leaf, NULL, false, time(NULL), NULL, &e), -1);
	CHECK_STR(e.msg, want);
	X509_free(leaf);
	vfix_free(&f);
}

TEST(verify_peer_rejects_a_ca_leaf_and_a_self_signed_leaf)
{
	struct vfix f;
	REQUIRE(vfix_init(&f));
	struct err e;
	struct tcert_opts ca = {.uris = {ID_A}, .n_uris = 1, .ca = true};
	CHECK_STR(verify_with(&f, &f.ca, &ca, false, &e),
		  "peer certificate is a CA certificate (basicConstraints CA:TRUE); a SPIFFE "
		  "leaf must not be a CA");
	struct tcert_opts self = {.uris = {ID_A}, .n_uris = 1, .self_signed = true};
	CHECK_STR(verify_with(&f, &f.ca, &self, false, &e),
		  "peer certificate does not chain to the trust bundle: self-signed certificate");
	/* The bundle's own root presented as a leaf. */
	CHECK_INT(spiffe_verify_peer(f.b, f.ca.cert, NULL, false, time(NULL), NULL, &e), -1);
	CHECK_CONTAINS(e.msg, "self-signed");
	vfix_free(&f);
}

TEST(verify_peer_checks_eku_for_the_role)
{
	struct vfix f;
	REQUIRE(vfix_init(&f));
	struct err e;
	struct tcert_opts srv = {.uris = {ID_A}, .n_uris = 1, .eku = "serverAuth"};
	CHECK_STR(verify_with(&f, &f.ca, &srv, false, &e),
		  "peer certificate extendedKeyUsage lacks clientAuth, required of a client");
	CHECK_STR(verify_with(&f, &f.ca, &srv, true, &e), "");
	struct tcert_opts cli = {.uris = {ID_A}, .n_uris = 1, .eku = "clientAuth"};
	CHECK_STR(verify_with(&f, &f.ca, &cli, true, &e),
		  "peer certificate extendedKeyUsage lacks serverAuth, required of a server");
	struct tcert_opts none = {.uris = {ID_A}, .n_uris = 1, .eku = ""};
	CHECK_STR(verify_with(&f, &f.ca, &none, false, &e),
		  "peer certificate has no extendedKeyUsage; clientAuth is required of a client");
	vfix_free(&f);
}

TEST(verify_peer_rejects_non_spiffe_and_missing_uri_sans)
{
	struct vfix f;
	REQUIRE(vfix_init(&f));
	struct err e;
	struct tcert_opts web = {.uris = {"https://web.example/ns/a/sa/b"}, .n_uris = 1};
	CHECK_STR(verify_with(&f, &f.ca, &web, false, &e),
		  "peer URI SAN https://web.example/ns/a/sa/b is not a valid SPIFFE ID: scheme "
		  "must be \"spiffe://\"");
	struct tcert_opts path = {.uris = {"spiffe://cluster.local/workload/x"}, .n_uris = 1};
	CHECK_CONTAINS(verify_with(&f, &f.ca, &path, false, &e),
		       "is not a valid SPIFFE ID: path must be /ns/<namespace>/sa/<service-account>");
	struct tcert_opts dns_only = {.dns = "web.ns1.svc.cluster.local"};
	CHECK_STR(verify_with(&f, &f.ca, &dns_only, false, &e),
		  "peer certificate has no URI SAN; SPIFFE requires exactly one");
	struct tcert_opts nothing = {0};
	CHECK_STR(verify_with(&f, &f.ca, &nothing, false, &e),
		  "peer certificate has no URI SAN; SPIFFE requires exactly one");
	CHECK_INT(spiffe_verify_peer(f.b, NULL, NULL, false, time(NULL), NULL, &e), -1);
	CHECK_STR(e.msg, "no client certificate");
	vfix_free(&f);
}
