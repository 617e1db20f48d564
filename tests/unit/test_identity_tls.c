/* Identity: the HBONE TLS contexts, driven in memory (BIO pairs) between our own server and
 * client contexts, plus hand-made peers that break one rule each. */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "identity/identity.h"
#include "test.h"
#include "test_identity_helpers.h"

#define TD "cluster.local"
#define ID_CLIENT "spiffe://cluster.local/ns/ns1/sa/web"
#define ID_SERVER "spiffe://cluster.local/ns/ns2/sa/db"

struct tfix {
	struct moat_ca *ca;
	struct bundle *b;
	struct svid *cs, *ss;
	SSL_CTX *cctx, *sctx;
};

static bool tfix_init(struct tfix *f, bool allow_tls12)
{
	memset(f, 0, sizeof(*f));
	struct err e;
	f->ca = ca_new_ephemeral(TD, &e);
	if (!f->ca)
		return false;
	f->b = bundle_from_cert(ca_root_cert(f->ca), TD, &e);
	f->cs = ca_mint_svid(f->ca, ID_CLIENT, 600, &e);
	f->ss = ca_mint_svid(f->ca, ID_SERVER, 600, &e);
	if (!f->b || !f->cs || !f->ss)
		return false;
	f->cctx = tls_client_ctx(f->cs, f->b, allow_tls12, &e);
	f->sctx = tls_server_ctx(f->ss, f->b, allow_tls12, &e);
	if (!f->cctx || !f->sctx)
		fprintf(stderr, "tfix: %s\n", e.msg);
	return f->cctx && f->sctx;
}

static void tfix_free(struct tfix *f)
{
	SSL_CTX_free(f->cctx);
	SSL_CTX_free(f->sctx);
	svid_unref(f->cs);
	svid_unref(f->ss);
	bundle_unref(f->b);
	ca_free(f->ca);
}

/* Counts session tickets the client is handed; the counter lives in the SSL_CTX. */
static int ticket_idx = -1;

static int count_ticket(SSL *ssl, SSL_SESSION *sess)
{
	(void)sess;
	int *n = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticket_idx);
	if (n)
		(*n)++;
	return 0; /* we did not keep the session */
}

/* new_session_cb only runs when the client cache is on; turn it on just to observe. */
static void watch_tickets(SSL_CTX *cctx, int *counter)
{
	if (ticket_idx < 0)
		ticket_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	SSL_CTX_set_ex_data(cctx, ticket_idx, counter);
	SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(cctx, count_ticket);
}

TEST(tls_mutual_handshake_tls13_h2_with_both_ids)
{
	struct tfix f;
	REQUIRE(tfix_init(&f, false));
	int tickets = 0;
	watch_tickets(f.cctx, &tickets);
	struct tpair p;
	REQUIRE(idt_pair_new(&p, f.cctx, f.sctx));
	CHECK(tls_peer_id(p.c) == NULL);
	CHECK_INT(tls_expect_peer(p.c, ID_SERVER), 0);
	CHECK(idt_pair_handshake(&p));
	CHECK_STR(SSL_get_version(p.c), "TLSv1.3");
	const unsigned char *alpn;
	unsigned int alpn_len;
	SSL_get0_alpn_selected(p.c, &alpn, &alpn_len);
	CHECK(alpn_len == 2 && memcmp(alpn, "h2", 2) == 0);
	SSL_get0_alpn_selected(p.s, &alpn, &alpn_len);
	CHECK(alpn_len == 2 && memcmp(alpn, "h2", 2) == 0);
	CHECK_STR(tls_peer_id(p.c), ID_SERVER);
	CHECK_STR(tls_peer_id(p.s), ID_CLIENT);
	CHECK(tls_verify_error(p.c) == NULL);
	CHECK(tls_verify_error(p.s) == NULL);
	const char *suite = SSL_CIPHER_standard_name(SSL_get_current_cipher(p.c));
	CHECK(suite && (!strcmp(suite, "TLS_AES_256_GCM_SHA384") ||
			!strcmp(suite, "TLS_AES_128_GCM_SHA256")));
	CHECK(SSL_get_servername(p.s, TLSEXT_NAMETYPE_host_name) == NULL); /* no SNI */
	CHECK(idt_pair_exchange(&p));
	CHECK(idt_pair_exchange(&p));
	CHECK_INT(tickets, 0);
	CHECK(!SSL_session_reused(p.c));
	idt_pair_free(&p);
	tfix_free(&f);
}

/* The ticket counter is able to see tickets: a server that sends them is noticed, and our
 * client copes with post-handshake tickets (ztunnel sends two). */
TEST(tls_ticket_counter_sees_tickets_from_a_ticketing_server)
{
	struct tfix f;
	REQUIRE(tfix_init(&f, false));
	int tickets = 0;
	watch_tickets(f.cctx, &tickets);
	SSL_CTX_clear_options(f.sctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_num_tickets(f.sctx, 2);
	struct tpair p;
	REQUIRE(idt_pair_new(&p, f.cctx, f.sctx));
	tls_expect_peer(p.c, ID_SERVER);
	CHECK(idt_pair_handshake(&p));
	CHECK(idt_pair_exchange(&p));
	CHECK_INT(tickets, 2);
	idt_pair_free(&p);
	tfix_free(&f);
}

TEST(tls_client_rejects_an_unexpected_server_id_naming_both)
{
	struct tfix f;
	REQUIRE(tfix_init(&f, false));
	struct tpair p;
	REQUIRE(idt_pair_new(&p, f.cctx, f.sctx));
	CHECK_INT(tls_expect_peer(p.c, "spiffe://cluster.local/ns/ns2/sa/other"), 0);
	CHECK(!idt_pair_handshake(&p));
	CHECK_INT(p.c_done, -1);
	CHECK_STR(tls_verify_error(p.c),
		  "server identity spiffe://cluster.local/ns/ns2/sa/db does not match the expected "
		  "spiffe://cluster.local/ns/ns2/sa/other");
	CHECK(tls_peer_id(p.c) == NULL);
	CHECK_CONTAINS(tls_verify_error(p.s), "peer aborted the TLS session with alert: bad certificate");
	idt_pair_free(&p);
	tfix_free(&f);
}

TEST(tls_client_without_expected_id_fails_closed)
{
	struct tfix f;
	REQUIRE(tfix_init(&f, false));
	struct tpair p;
	REQUIRE(idt_pair_new(&p, f.cctx, f.sctx));
	CHECK_INT(tls_expect_peer(p.c, "not a spiffe id"), -1);
	CHECK(!idt_pair_handshake(&p));
	CHECK_CONTAINS(tls_verify_error(p.c), "no expected server identity was set");
	idt_pair_free(&p);
	tfix_free(&f);
}

TEST(tls_server_requires_a_client_certificate)
{
	struct tfix f;
	REQUIRE(tfix_init(&f, false));
	/* A client with the right ALPN and trust but no certificate of its own. */
	SSL_CTX *bare = SSL_CTX_new(TLS_client_method());
	REQUIRE(bare);
	SSL_CTX_set_alpn_protos(bare, (const unsigned char *)"\x02h2", 3);
	struct tpair p;
	REQUIRE(idt_pair_new(&p, bare, f.sctx));
	CHECK(!idt_pair_handshake(&p));
	CHECK_INT(p.s_done, -1);
	CHECK_STR(tls_verify_error(p.s), "no client certificate");
	CHECK(tls_peer_id(p.s) == NULL);
	idt_pair_free(&p);
	SSL_CTX_free(bare);
	tfix_free(&f);
}

TEST(tls_server_rejects_a_client_from_another_ca)
{
	struct tfix f, g;
	REQUIRE(tfix_init(&f, false));
	REQUIRE(tfix_init(&g, false)); /* same trust domain name, different root */
	struct tpair p;
	REQUIRE(idt_pair_new(&p, g.cctx, f.sctx));
	tls_expect_peer(p.c, ID_SERVER);
	CHECK(!idt_pair_handshake(&p));
	/* Each side rejects the other; the server's reason is the chain. */
	CHECK_STR(tls_verify_error(p.c), "peer certificate does not chain to the trust bundle: "
					 "unable to get local issuer certificate");
	idt_pair_free(&p);

	/* Same again with a client that trusts the server (so the server decides). */
	struct err e;
	struct bundle *both = bundle_from_cert(ca_root_cert(f.ca), TD, &e);
	SSL_CTX *cctx = tls_client_ctx(g.cs, both, false, &e);
	REQUIRE(cctx);
	REQUIRE(idt_pair_new(&p, cctx, f.sctx));
	tls_expect_peer(p.c, ID_SERVER);
	CHECK(!idt_pair_handshake(&p));
	CHECK_INT(p.s_done, -1);
	CHECK_STR(tls_verify_error(p.s), "peer certificate does not chain to the trust bundle: "
					 "unable to get local issuer certificate");
	CHECK(tls_peer_id(p.s) == NULL);
	CHECK_CONTAINS(tls_verify_error(p.c), "alert: unknown CA");
	idt_pair_free(&p);
	SSL_CTX_free(cctx);
	bundle_unref(both);
	tfix_free(&g);
	tfix_free(&f);
}

TEST(tls_server_requires_alpn_h2)
{
	struct tfix f;
	REQUIRE(tfix_init(&f, false));
	const char *protos[] = {NULL, "\x08http/1.1"};
	const char *want[] = {"client offered no ALPN; h2 is required",
			      "client did not offer ALPN h2"};
	for (int i = 0; i < 2; i++) {
		SSL_CTX *cctx = tls_client_ctx(f.cs, f.b, false, NULL);
		REQUIRE(cctx);
		if (protos[i])
			SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)protos[i], 9);
		else
			SSL_CTX_set_alpn_protos(cctx, NULL, 0);
		struct tpair p;
		REQUIRE(idt_pair_new(&p, cctx, f.sctx));
		tls_expect_peer(p.c, ID_SERVER);
		CHECK(!idt_pair_handshake(&p));
		CHECK_STR(tls_verify_error(p.s), want[i]);
		CHECK_CONTAINS(tls_verify_error(p.c), "no application protocol");
		idt_pair_free(&p);
		SSL_CTX_free(cctx);
	}
	tfix_free(&f);
}

TEST(tls12_only_when_allowed)
{
	struct tfix f;
	REQUIRE(tfix_init(&f, false));
	SSL_CTX_set_max_proto_version(f.cctx, TLS1_2_VERSION);
	struct tpair p;
	REQUIRE(idt_pair_new(&p, f.cctx, f.sctx));
	tls_expect_peer(p.c, ID_SERVER);
	CHECK(!idt_pair_handshake(&p));
	idt_pair_free(&p);
	tfix_free(&f);

	REQUIRE(tfix_init(&f, true));
	SSL_CTX_set_max_proto_version(f.cctx, TLS1_2_VERSION);
	REQUIRE(idt_pair_new(&p, f.cctx, f.sctx));
	tls_expect_peer(p.c, ID_SERVER);
	CHECK(idt_pair_handshake(&p));
	CHECK_STR(SSL_get_version(p.c), "TLSv1.2");
	CHECK_STR(SSL_CIPHER_standard_name(SSL_get_current_cipher(p.c)),
		  "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384");
	CHECK_STR(tls_peer_id(p.c), ID_SERVER);
	CHECK_STR(tls_peer_id(p.s), ID_CLIENT);
	CHECK(idt_pair_exchange(&p));
	idt_pair_free(&p);
	tfix_free(&f);
}

/* The context outlives the caller's reference: an SSL made from it keeps working. */
TEST(tls_ssl_outlives_its_freed_context)
{
	struct tfix f;
	REQUIRE(tfix_init(&f, false));
	struct tpair p;
	REQUIRE(idt_pair_new(&p, f.cctx, f.sctx));
	SSL_CTX_free(f.cctx);
	SSL_CTX_free(f.sctx);
	f.cctx = f.sctx = NULL;
	bundle_unref(f.b); /* the contexts hold their own bundle reference */
	f.b = NULL;
	tls_expect_peer(p.c, ID_SERVER);
	CHECK(idt_pair_handshake(&p));
	CHECK(idt_pair_exchange(&p));
	CHECK_STR(tls_peer_id(p.s), ID_CLIENT);
	idt_pair_free(&p);
	tfix_free(&f);
}
