/* Identity store: refcounts, renewal at half-life on a real loop, dump, bundle reload. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ssl.h>

#include "core/loop.h"
#include "core/util.h"
#include "identity/identity.h"
#include "test.h"
#include "test_identity_helpers.h"

#define TD "cluster.local"
#define ID_A "spiffe://cluster.local/ns/ns1/sa/web"
#define ID_B "spiffe://cluster.local/ns/ns2/sa/db"

TEST(store_acquire_release_refcounts)
{
	struct err e;
	struct moat_ca *ca = ca_new_ephemeral(TD, &e);
	REQUIRE(ca);
	struct identity_store_opts o = {.ca = ca, .ttl_seconds = 600};
	struct identity_store *s = identity_store_new(NULL, &o, &e);
	REQUIRE(s);
	CHECK(identity_server_ctx(s, ID_A) == NULL);
	CHECK_INT(identity_acquire(s, ID_A, &e), 0);
	const struct svid *first = identity_svid(s, ID_A);
	REQUIRE(first);
	char serial[80];
	snprintf(serial, sizeof(serial), "%s", first->serial);
	CHECK_INT(identity_acquire(s, ID_A, &e), 0); /* second reference: same certificate */
	CHECK_STR(identity_svid(s, ID_A)->serial, serial);
	CHECK(identity_server_ctx(s, ID_A) != NULL);
	CHECK(identity_client_ctx(s, ID_A) != NULL);
	identity_release(s, ID_A);
	CHECK(identity_svid(s, ID_A) != NULL);
	identity_release(s, ID_A);
	CHECK(identity_svid(s, ID_A) == NULL);
	CHECK(identity_server_ctx(s, ID_A) == NULL);
	identity_release(s, ID_A); /* unknown: ignored */

	CHECK_INT(identity_acquire(s, "spiffe://other.td/ns/a/sa/b", &e), -1);
	CHECK_CONTAINS(e.msg, "not in the CA's trust domain");
	CHECK_INT(identity_acquire(s, "web", &e), -1);
	CHECK_CONTAINS(e.msg, "invalid SPIFFE ID");
	identity_store_free(s);
	ca_free(ca);
}

TEST(store_dump_text_and_json)
{
	struct err e;
	struct moat_ca *ca = ca_new_ephemeral(TD, &e);
	REQUIRE(ca);
	struct identity_store_opts o = {.ca = ca, .ttl_seconds = 600};
	struct identity_store *s = identity_store_new(NULL, &o, &e);
	REQUIRE(s);
	REQUIRE(identity_acquire(s, ID_B, &e) == 0 && identity_acquire(s, ID_A, &e) == 0);
	struct sbuf out;
	sbuf_init(&out);
	identity_store_dump(s, false, &out);
	char nb[32], na[32];
	const struct svid *a = identity_svid(s, ID_A), *b = identity_svid(s, ID_B);
	struct tm tm;
	gmtime_r(&a->not_before, &tm);
	strftime(nb, sizeof(nb), "%Y-%m-%dT%H:%M:%SZ", &tm);
	gmtime_r(&a->not_after, &tm);
	strftime(na, sizeof(na), "%Y-%m-%dT%H:%M:%SZ", &tm);
	CHECK(strncmp(out.s, "IDENTITY ", 9) == 0);
	CHECK_CONTAINS(out.s, "SERIAL");
	CHECK_CONTAINS(out.s, "NOT-BEFORE");
	CHECK_CONTAINS(out.s, "NOT-AFTER\n");
	CHECK_CONTAINS(out.s, a->serial);
	CHECK_CONTAINS(out.s, nb);
	CHECK_CONTAINS(out.s, na);
	/* Sorted by identity: ns1/web before ns2/db. */
	char *pa = strstr(out.s, ID_A), *pb = strstr(out.s, ID_B);
	CHECK(pa && pb && pa < pb);
	int lines = 0;
	for (char *p = out.s; *p; p++)
		lines += *p == '\n';
	CHECK_INT(lines, 3);
	sbuf_free(&out);

	sbuf_init(&out);
	identity_store_dump(s, true, &out);
	char want[512];
	snprintf(want, sizeof(want),
		 "{\"identity\":\"%s\",\"serial\":\"%s\",\"not_before\":\"%s\",\"not_after\":\"%s\"}",
		 ID_A, a->serial, nb, na);
	CHECK(out.s[0] == '[');
	CHECK_CONTAINS(out.s, want);
	CHECK_CONTAINS(out.s, b->serial);
	sbuf_free(&out);
	identity_store_free(s);
	ca_free(ca);
}

/* ---- renewal on a real loop ---- */

struct renew_fix {
	struct loop *loop;
	struct identity_store *s;
	struct loop_timer poll, stop;
	uint64_t start_ms, changed_ms;
	char first_serial[80];
};

static void renew_poll(struct loop_timer *t)
{
	struct renew_fix *f = container_of(t, struct renew_fix, poll);
	const struct svid *sv = identity_svid(f->s, ID_A);
	if (!f->changed_ms && sv && strcmp(sv->serial, f->first_serial) != 0) {
		f->changed_ms = now_ms();
		loop_stop(f->loop); /* renewed: nothing more to wait for */
		return;
	}
	loop_timer_arm(f->loop, &f->poll, 50);
}

static void renew_stop(struct loop_timer *t)
{
	struct renew_fix *f = container_of(t, struct renew_fix, stop);
	loop_stop(f->loop);
}

TEST(store_renews_at_half_life_and_old_connections_keep_working)
{
	struct err e;
	struct moat_ca *ca = ca_new_ephemeral(TD, &e);
	REQUIRE(ca);
	struct renew_fix f = {0};
	f.loop = loop_new();
	REQUIRE(f.loop);
	struct identity_store_opts o = {.ca = ca, .ttl_seconds = 4};
	f.s = identity_store_new(f.loop, &o, &e);
	REQUIRE(f.s);
	f.start_ms = now_ms(); /* before the renewal timer is armed (at acquire) */
	REQUIRE(identity_acquire(f.s, ID_A, &e) == 0);
	REQUIRE(identity_acquire(f.s, ID_B, &e) == 0);
	snprintf(f.first_serial, sizeof(f.first_serial), "%s", identity_svid(f.s, ID_A)->serial);

	/* Connections made before renewal: one finished its handshake, one has not started. */
	struct tpair done, fresh;
	REQUIRE(idt_pair_new(&done, identity_client_ctx(f.s, ID_A), identity_server_ctx(f.s, ID_B)));
	REQUIRE(idt_pair_new(&fresh, identity_client_ctx(f.s, ID_A), identity_server_ctx(f.s, ID_B)));
	tls_expect_peer(done.c, ID_B);
	tls_expect_peer(fresh.c, ID_B);
	CHECK(idt_pair_handshake(&done));

	loop_timer_init(&f.poll, renew_poll);
	loop_timer_init(&f.stop, renew_stop);
	loop_timer_arm(f.loop, &f.poll, 50);
	/* Bounds the test: half-life is 2 s, the certificate expires at 4 s. */
	loop_timer_arm(f.loop, &f.stop, 3900);
	CHECK_INT(loop_run(f.loop), 0);
	loop_timer_cancel(f.loop, &f.poll);
	loop_timer_cancel(f.loop, &f.stop);

	const struct svid *now_sv = identity_svid(f.s, ID_A);
	REQUIRE(now_sv);
	CHECK(strcmp(now_sv->serial, f.first_serial) != 0);
	uint64_t at = f.changed_ms - f.start_ms;
	/* Behaviour, not timing: never before half of the lifetime left, always before expiry
	 * (the poll is late on a loaded machine, never early). Certificate times are whole
	 * seconds, so "half of what is left" is 1.5 s when issuance fell late in a second. */
	CHECK_MSG(f.changed_ms && at >= 1500 && at < 4000, "renewed after %llu ms",
		  (unsigned long long)at);

	/* The old contexts are gone from the store (freed after the renewal iteration), yet
	 * the SSLs made from them still work. */
	CHECK(idt_pair_exchange(&done));
	CHECK(idt_pair_handshake(&fresh));
	CHECK(idt_pair_exchange(&fresh));
	CHECK_STR(tls_peer_id(fresh.s), ID_A);
	X509 *old_cert = SSL_get_certificate(fresh.c);
	char hex[80] = "";
	if (old_cert) {
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(old_cert), NULL);
		char *h = BN_bn2hex(bn);
		snprintf(hex, sizeof(hex), "%s", h);
		OPENSSL_free(h);
		BN_free(bn);
	}
	CHECK_STR(hex, f.first_serial);

	/* New connections use the new certificate. */
	struct tpair next;
	REQUIRE(idt_pair_new(&next, identity_client_ctx(f.s, ID_A), identity_server_ctx(f.s, ID_B)));
	tls_expect_peer(next.c, ID_B);
	CHECK(idt_pair_handshake(&next));
	CHECK(SSL_get_certificate(next.c) == now_sv->cert);

	struct sbuf out;
	sbuf_init(&out);
	identity_store_dump(f.s, false, &out);
	CHECK_CONTAINS(out.s, now_sv->serial);
	CHECK(strstr(out.s, f.first_serial) == NULL);
	sbuf_free(&out);

	idt_pair_free(&next);
	idt_pair_free(&done);
	idt_pair_free(&fresh);
	identity_store_free(f.s);
	loop_free(f.loop);
	ca_free(ca);
}

/* ---- bundle reload ---- */

static int verify_leaf_of(struct identity_store *s, const struct tca *ca, struct err *e)
{
	struct tcert_opts o = {.uris = {ID_B}, .n_uris = 1};
	X509 *leaf = idt_cert_make(ca, &o, NULL);
	int rc = spiffe_verify_peer(identity_bundle(s), leaf, NULL, false, time(NULL), NULL, e);
	X509_free(leaf);
	return rc;
}

TEST(store_reloads_a_changed_bundle_and_keeps_the_old_one_on_a_bad_file)
{
	char tmp[64], path[128];
	REQUIRE(idt_tmpdir(tmp, sizeof(tmp)));
	snprintf(path, sizeof(path), "%s/bundle.pem", tmp);
	struct err e;
	struct moat_ca *ca = ca_new_ephemeral(TD, &e);
	struct tca other;
	REQUIRE(ca && idt_ca_new(&other, "other root"));
	X509 *ours[] = {ca_root_cert(ca), NULL}, *both[] = {ca_root_cert(ca), other.cert, NULL};
	char *pem_ours = idt_pem_certs(ours), *pem_both = idt_pem_certs(both);
	REQUIRE(write_file_atomic(path, pem_ours, strlen(pem_ours), 0644, &e) == 0);

	struct loop *l = loop_new();
	struct identity_store_opts o = {.ca = ca, .bundle_path = path, .ttl_seconds = 600};
	struct identity_store *s = identity_store_new(l, &o, &e);
	REQUIRE(s);
	REQUIRE(identity_acquire(s, ID_A, &e) == 0);
	struct bundle *first = identity_bundle(s);
	SSL_CTX *first_server = identity_server_ctx(s, ID_A);
	CHECK_INT(verify_leaf_of(s, &other, &e), -1);

	/* Unchanged file: nothing happens. */
	identity_store_check_bundle(s);
	CHECK(identity_bundle(s) == first);
	CHECK(identity_server_ctx(s, ID_A) == first_server);

	/* A second root appears: new bundle, new contexts, the other CA's leaves verify. */
	REQUIRE(write_file_atomic(path, pem_both, strlen(pem_both), 0644, &e) == 0);
	identity_store_check_bundle(s);
	struct bundle *second = identity_bundle(s);
	CHECK(second != first);
	CHECK(identity_server_ctx(s, ID_A) != first_server);
	CHECK_INT(verify_leaf_of(s, &other, &e), 0);

	/* The new server context accepts a client of the other CA. */
	EVP_PKEY *ckey = NULL;
	struct tcert_opts co = {.uris = {ID_B}, .n_uris = 1};
	X509 *ccert = idt_cert_make(&other, &co, &ckey);
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	REQUIRE(ccert && cctx);
	SSL_CTX_use_certificate(cctx, ccert);
	SSL_CTX_use_PrivateKey(cctx, ckey);
	SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)"\x02h2", 3);
	struct tpair p;
	REQUIRE(idt_pair_new(&p, cctx, identity_server_ctx(s, ID_A)));
	CHECK(idt_pair_handshake(&p));
	CHECK_STR(tls_peer_id(p.s), ID_B);
	idt_pair_free(&p);

	/* A corrupt file is reported and ignored. */
	REQUIRE(idt_write_text(path, "-----BEGIN CERTIFICATE-----\ngarbage\n"));
	SSL_CTX *second_server = identity_server_ctx(s, ID_A);
	identity_store_check_bundle(s);
	CHECK(identity_bundle(s) == second);
	CHECK(identity_server_ctx(s, ID_A) == second_server);
	CHECK_INT(verify_leaf_of(s, &other, &e), 0);
	/* ... also when it disappears. */
	unlink(path);
	identity_store_check_bundle(s);
	CHECK(identity_bundle(s) == second);

	/* Back to only our root: the other CA is no longer trusted. */
	REQUIRE(write_file_atomic(path, pem_ours, strlen(pem_ours), 0644, &e) == 0);
	identity_store_check_bundle(s);
	CHECK(identity_bundle(s) != second);
	CHECK_INT(verify_leaf_of(s, &other, &e), -1);
	CHECK_CONTAINS(e.msg, "does not chain to the trust bundle");

	SSL_CTX_free(cctx);
	X509_free(ccert);
	EVP_PKEY_free(ckey);
	identity_store_free(s);
	loop_free(l);
	free(pem_ours);
	free(pem_both);
	idt_ca_free(&other);
	ca_free(ca);
	idt_rm_rf(tmp);
}

TEST(store_new_fails_on_a_missing_or_bad_bundle)
{
	struct err e;
	struct moat_ca *ca = ca_new_ephemeral(TD, &e);
	REQUIRE(ca);
	struct identity_store_opts o = {.ca = ca, .bundle_path = "/nonexistent/bundle.pem"};
	CHECK(identity_store_new(NULL, &o, &e) == NULL);
	CHECK_CONTAINS(e.msg, "/nonexistent/bundle.pem");
	struct identity_store_opts none = {0};
	CHECK(identity_store_new(NULL, &none, &e) == NULL);
	ca_free(ca);
}
