/* kTLS without a kernel that has it: the TLS 1.3 key schedule against RFC 8448's published
 * values, the kernel crypto_info layout, the reading of the non-data records kTLS RX hands
 * up, and an HBONE pair that asks for kTLS where the switch cannot happen (a socketpair):
 * the connection stays on OpenSSL, says why, and carries data. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/tls.h>

#include "core/loop.h"
#include "hbone/h2.h"
#include "hbone/ktls.h"
#include "test.h"
#include "test_hbone_helpers.h"

static size_t unhex(const char *h, uint8_t *out, size_t max)
{
	size_t n = 0;
	unsigned v;
	while (*h && n < max) {
		while (*h == ' ')
			h++;
		if (!*h || sscanf(h, "%2x", &v) != 1)
			break;
		out[n++] = (uint8_t)v;
		h += 2;
	}
	return n;
}

#define CHECK_HEX(buf, len, hex)                                                              \
	do {                                                                                  \
		uint8_t want_[64];                                                            \
		size_t wl_ = unhex(hex, want_, sizeof(want_));                                \
		CHECK_INT(wl_, (len));                                                        \
		CHECK_MSG(memcmp((buf), want_, wl_) == 0, "%s differs from %s", #buf, hex);   \
	} while (0)

/* RFC 8448 section 3 (simple 1-RTT, TLS_AES_128_GCM_SHA256): the application traffic
 * secrets and the write keys and IVs derived from them. */
#define RFC8448_C_AP "9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5"
#define RFC8448_S_AP "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643"

TEST(ktls_key_schedule_matches_rfc8448_application_keys)
{
	uint8_t secret[32];
	struct ktls_keys k;
	REQUIRE(unhex(RFC8448_S_AP, secret, sizeof(secret)) == 32);
	REQUIRE(ktls_keys_from_secret(0x1301, secret, 32, &k) == 0);
	CHECK_INT(k.key_len, 16);
	CHECK_HEX(k.key, 16, "9f02283b6c9c07efc26bb9f2ac92e356");
	CHECK_HEX(k.iv, 12, "cf782b88dd83549aadf1e984");
	REQUIRE(unhex(RFC8448_C_AP, secret, sizeof(secret)) == 32);
	REQUIRE(ktls_keys_from_secret(0x1301, secret, 32, &k) == 0);
	CHECK_HEX(k.key, 16, "17422dda596ed5d9acd890e3c63f5051");
	CHECK_HEX(k.iv, 12, "5b78923dee08579033e523d9");
}

TEST(ktls_key_schedule_refuses_unknown_suites_and_wrong_secret_sizes)
{
	uint8_t secret[48] = {1};
	struct ktls_keys k;
	CHECK(ktls_keys_from_secret(0x1304, secret, 32, &k) < 0); /* AES-128-CCM: not ours */
	CHECK(ktls_keys_from_secret(0x1302, secret, 32, &k) < 0); /* SHA-384 suite, 32 bytes */
	CHECK(ktls_keys_from_secret(0x1302, secret, 48, &k) == 0);
	CHECK_INT(k.key_len, 32);
	CHECK(ktls_keys_from_secret(0x1303, secret, 32, &k) == 0);
	CHECK_INT(k.key_len, 32);
}

/* KeyUpdate: the next secret is HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)
 * and the keys come from it exactly as from the first one (RFC 8446 7.2). */
TEST(ktls_key_update_derives_the_next_generation_from_traffic_upd)
{
	uint8_t secret[32], next[32];
	struct ktls_keys k, want;
	REQUIRE(unhex(RFC8448_S_AP, secret, sizeof(secret)) == 32);
	REQUIRE(ktls_keys_from_secret(0x1301, secret, 32, &k) == 0);
	REQUIRE(ktls_expand_label(0x1301, secret, 32, "traffic upd", next, 32) == 0);
	REQUIRE(ktls_keys_from_secret(0x1301, next, 32, &want) == 0);
	REQUIRE(ktls_keys_update(&k) == 0);
	CHECK(memcmp(k.secret, next, 32) == 0);
	CHECK(memcmp(k.key, want.key, 16) == 0);
	CHECK(memcmp(k.iv, want.iv, 12) == 0);
	CHECK(memcmp(k.key, "\x9f\x02\x28\x3b", 4) != 0); /* not the old key */
}

/* The kernel wants TLS 1.3's 12-byte IV split as salt (4) + iv (8) for GCM, whole for
 * ChaCha20, and a record sequence of 0 for a fresh key. */
TEST(ktls_crypto_info_splits_the_iv_and_starts_at_sequence_zero)
{
	uint8_t secret[32], buf[KTLS_CRYPTO_INFO_MAX];
	struct ktls_keys k;
	REQUIRE(unhex(RFC8448_S_AP, secret, sizeof(secret)) == 32);
	REQUIRE(ktls_keys_from_secret(0x1301, secret, 32, &k) == 0);
	size_t n = ktls_crypto_info(&k, buf);
	struct tls12_crypto_info_aes_gcm_128 *ci = (void *)buf;
	CHECK_INT(n, sizeof(*ci));
	CHECK_INT(ci->info.version, TLS_1_3_VERSION);
	CHECK_INT(ci->info.cipher_type, TLS_CIPHER_AES_GCM_128);
	CHECK_HEX(ci->salt, 4, "cf782b88");
	CHECK_HEX(ci->iv, 8, "dd83549aadf1e984");
	CHECK_HEX(ci->key, 16, "9f02283b6c9c07efc26bb9f2ac92e356");
	CHECK_HEX(ci->rec_seq, 8, "0000000000000000");
	k.suite = 0x1304;
	CHECK_INT(ktls_crypto_info(&k, buf), 0);
}

static enum ktls_ctl ctl(uint8_t type, const char *hex, bool *upd, char *why, size_t wl)
{
	uint8_t rec[256];
	size_t n = unhex(hex, rec, sizeof(rec));
	why[0] = 0;
	return ktls_control_record(type, rec, n, upd, why, wl);
}

TEST(ktls_control_records_tickets_are_ignored_keyupdate_rekeys_alerts_close)
{
	bool upd = true;
	char why[200];
	/* one NewSessionTicket (type 4, 8 bytes of body), then two in one record */
	CHECK_INT(ctl(22, "04000008 0000001c 00000000", &upd, why, sizeof(why)), KTLS_CTL_IGNORE);
	CHECK(!upd);
	CHECK_INT(ctl(22, "04000002 aabb 04000001 cc", &upd, why, sizeof(why)), KTLS_CTL_IGNORE);
	/* KeyUpdate, update_requested and not */
	CHECK_INT(ctl(22, "18000001 01", &upd, why, sizeof(why)), KTLS_CTL_KEY_UPDATE);
	CHECK(upd);
	CHECK_INT(ctl(22, "18000001 00", &upd, why, sizeof(why)), KTLS_CTL_KEY_UPDATE);
	CHECK(!upd);
	/* close_notify (warning, 0) closes cleanly; any other alert closes with its name */
	CHECK_INT(ctl(21, "0100", &upd, why, sizeof(why)), KTLS_CTL_CLOSE);
	CHECK_INT(ctl(21, "0228", &upd, why, sizeof(why)), KTLS_CTL_FAIL);
	CHECK_CONTAINS(why, "alert 40");
	CHECK_CONTAINS(why, "handshake failure");
}

TEST(ktls_control_records_refuse_what_could_be_misread)
{
	bool upd;
	char why[200];
	CHECK_INT(ctl(22, "18000001 02", &upd, why, sizeof(why)), KTLS_CTL_FAIL); /* bad value */
	CHECK_CONTAINS(why, "KeyUpdate");
	CHECK_INT(ctl(22, "18000002 0000", &upd, why, sizeof(why)), KTLS_CTL_FAIL);
	CHECK_INT(ctl(22, "18000001 01 04000000", &upd, why, sizeof(why)), KTLS_CTL_FAIL);
	CHECK_INT(ctl(22, "04000010 aabb", &upd, why, sizeof(why)), KTLS_CTL_FAIL); /* split */
	CHECK_CONTAINS(why, "split across records");
	CHECK_INT(ctl(22, "0400", &upd, why, sizeof(why)), KTLS_CTL_FAIL);
	CHECK_CONTAINS(why, "truncated");
	CHECK_INT(ctl(22, "", &upd, why, sizeof(why)), KTLS_CTL_FAIL);
	CHECK_INT(ctl(22, "14000000", &upd, why, sizeof(why)), KTLS_CTL_FAIL); /* Finished */
	CHECK_CONTAINS(why, "type 20");
	CHECK_INT(ctl(21, "01", &upd, why, sizeof(why)), KTLS_CTL_FAIL);
	CHECK_INT(ctl(20, "01", &upd, why, sizeof(why)), KTLS_CTL_FAIL); /* ChangeCipherSpec */
	CHECK_CONTAINS(why, "record type 20");
}

/* ---- an HBONE pair that asks for kTLS on a socket that cannot take it ---- */

struct kw {
	struct loop *loop;
	struct loop_timer deadline;
	int ready, status;
	bool closed;
};

static void kw_ready(struct h2conn *c)
{
	struct kw *w = h2conn_owner(c);
	w->ready++;
}

static void kw_response(struct h2stream *s, void *user, int status)
{
	(void)s;
	((struct kw *)user)->status = status;
}

static void kw_closed(struct h2stream *s, void *user, const struct h2stream_stats *st,
		      const char *error)
{
	(void)s, (void)st, (void)error;
	struct kw *w = user;
	w->closed = true;
	loop_stop(w->loop);
}

static const struct h2stream_ops kw_stream_ops = {.on_response = kw_response,
						  .on_close = kw_closed};

static void kw_deadline(struct loop_timer *t)
{
	loop_stop(container_of(t, struct kw, deadline)->loop);
}

static void kw_request(struct h2conn *c, struct h2stream *s, const struct hbone_request *r)
{
	(void)c, (void)r;
	h2stream_respond(s, 503);
}

static const struct h2conn_ops kw_ops = {.on_ready = kw_ready, .on_request = kw_request};

/* Everything before the ULP passed (TLS 1.3, nothing buffered, no tickets, the traffic
 * secrets captured, the suite known): the reason is the socket itself, and the connection
 * carries on with OpenSSL. */
TEST(ktls_switch_that_cannot_happen_leaves_the_connection_on_openssl_with_its_reason)
{
	struct hbt_certs certs;
	REQUIRE(hbt_certs_init(&certs));
	struct kw w = {.loop = loop_new()};
	int sp[2];
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp) == 0);
	struct err e;
	struct h2conn *cl = h2conn_new(w.loop, H2_CLIENT, sp[0], certs.cctx, HBT_SERVER_ID, &kw_ops,
				       &w, "ktls client", &e);
	struct h2conn *sv = h2conn_new(w.loop, H2_SERVER, sp[1], certs.sctx, NULL, &kw_ops, &w,
				       "ktls server", &e);
	REQUIRE(cl && sv);
	CHECK(h2conn_ktls_fallback(cl, NULL) == NULL); /* not asked yet */
	h2conn_want_ktls(cl);
	h2conn_want_ktls(sv);
	loop_timer_init(&w.deadline, kw_deadline);
	loop_timer_arm(w.loop, &w.deadline, 10000);
	/* A CONNECT the server refuses: HEADERS both ways over the fallen-back session. */
	REQUIRE(h2conn_open_stream(cl, "10.0.0.2:80", NULL, 0, -1, &kw_stream_ops, &w, &e));
	loop_run(w.loop);
	loop_timer_cancel(w.loop, &w.deadline);
	CHECK_INT(w.ready, 2);
	CHECK(w.closed);
	CHECK_INT(w.status, 503);
	const char *why = NULL;
	CHECK_STR(h2conn_engine(cl), "userspace");
	CHECK_STR(h2conn_engine(sv), "userspace");
	const char *r = h2conn_ktls_fallback(cl, &why);
	CHECK_STR(r ? r : "(none)", "ulp");
	CHECK_CONTAINS(why, "TCP_ULP");
	r = h2conn_ktls_fallback(sv, &why);
	CHECK_STR(r ? r : "(none)", "ulp");
	CHECK(h2conn_usable(cl));
	h2conn_abort(cl, "test over");
	h2conn_abort(sv, "test over");
	hbt_certs_free(&certs);
	loop_free(w.loop);
}
