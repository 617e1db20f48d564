/* Kernel TLS detection: TCP_ULP "tls" can only be set on an established TCP socket, so the
 * probe makes a loopback connection in the agent's own netns and tries it. The answer gates
 * the kTLS engine (hbone/transport_ktls.c) and is reported (moatctl status, metrics).
 * Also here: the key schedule and control-record parsing that need no kernel. */
#include "hbone/ktls.h"

#include <linux/tls.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "core/util.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

bool ktls_probe(char *why, size_t len)
{
	int l = -1, c = -1, s = -1;
	bool ok = false;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0) {
		snprintf(why, len, "probe socket: %s", errno_name(errno));
		goto out;
	}
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0) {
		snprintf(why, len, "probe connect: %s", errno_name(errno));
		goto out;
	}
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (setsockopt(c, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) < 0) {
		snprintf(why, len, "setsockopt(TCP_ULP, \"tls\"): %s%s", errno_name(errno),
			 errno == ENOENT ? " (this kernel has no kernel TLS module)" : "");
		goto out;
	}
	snprintf(why, len, "TCP_ULP \"tls\" accepted");
	ok = true;
out:
	if (s >= 0)
		close(s);
	if (c >= 0)
		close(c);
	if (l >= 0)
		close(l);
	return ok;
}

/* ---- TLS 1.3 key schedule (RFC 8446 7.1, 7.3) ---- */

static const char *suite_digest(uint16_t suite)
{
	switch (suite) {
	case 0x1301:
	case 0x1303:
		return "SHA256";
	case 0x1302:
		return "SHA384";
	default:
		return NULL;
	}
}

int ktls_expand_label(uint16_t suite, const uint8_t *secret, size_t secret_len,
		      const char *label, uint8_t *out, size_t out_len)
{
	const char *md = suite_digest(suite);
	size_t ll = strlen(label);
	if (!md || ll > 249 || out_len > 255)
		return -1;
	/* struct HkdfLabel { uint16 length; opaque label<7..255> = "tls13 " + label;
	 *                    opaque context<0..255> = "" } */
	uint8_t info[2 + 1 + 255 + 1];
	size_t n = 0;
	info[n++] = (uint8_t)(out_len >> 8);
	info[n++] = (uint8_t)out_len;
	info[n++] = (uint8_t)(6 + ll);
	memcpy(info + n, "tls13 ", 6);
	memcpy(info + n + 6, label, ll);
	n += 6 + ll;
	info[n++] = 0;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	EVP_KDF_free(kdf);
	if (!kc)
		return -1;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)md, 0),
		OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n),
		OSSL_PARAM_construct_end(),
	};
	int rc = EVP_KDF_derive(kc, out, out_len, params) == 1 ? 0 : -1;
	EVP_KDF_CTX_free(kc);
	return rc;
}

int ktls_keys_from_secret(uint16_t suite, const uint8_t *secret, size_t secret_len,
			  struct ktls_keys *k)
{
	memset(k, 0, sizeof(*k));
	k->suite = suite;
	k->hash_len = suite == 0x1302 ? 48 : 32;
	k->key_len = suite == 0x1301 ? 16 : 32;
	if (!suite_digest(suite) || secret_len != k->hash_len)
		return -1;
	memcpy(k->secret, secret, secret_len);
	if (ktls_expand_label(suite, secret, secret_len, "key", k->key, k->key_len) < 0 ||
	    ktls_expand_label(suite, secret, secret_len, "iv", k->iv, sizeof(k->iv)) < 0)
		return -1;
	return 0;
}

int ktls_keys_update(struct ktls_keys *k)
{
	uint8_t next[48];
	if (ktls_expand_label(k->suite, k->secret, k->hash_len, "traffic upd", next, k->hash_len) < 0)
		return -1;
	int rc = ktls_keys_from_secret(k->suite, next, k->hash_len, k);
	OPENSSL_cleanse(next, sizeof(next));
	return rc;
}

/* TLS 1.3 in the kernel: the 12-byte IV is salt (4) + iv (8) for GCM, all iv for ChaCha;
 * rec_seq starts at 0 for each new key (RFC 8446 5.3). */
size_t ktls_crypto_info(const struct ktls_keys *k, void *buf)
{
	memset(buf, 0, KTLS_CRYPTO_INFO_MAX);
/* The two GCM layouts differ only in the key's size. */
#define GCM_INFO(type, cipher)                                                                \
	do {                                                                                  \
		struct type *ci = buf;                                                        \
		ci->info.version = TLS_1_3_VERSION;                                           \
		ci->info.cipher_type = cipher;                                                \
		memcpy(ci->salt, k->iv, 4);                                                   \
		memcpy(ci->iv, k->iv + 4, 8);                                                 \
		memcpy(ci->key, k->key, sizeof(ci->key));                                     \
		return sizeof(*ci);                                                           \
	} while (0)
	if (k->suite == 0x1301)
		GCM_INFO(tls12_crypto_info_aes_gcm_128, TLS_CIPHER_AES_GCM_128);
	if (k->suite == 0x1302)
		GCM_INFO(tls12_crypto_info_aes_gcm_256, TLS_CIPHER_AES_GCM_256);
#undef GCM_INFO
#ifdef TLS_CIPHER_CHACHA20_POLY1305
	if (k->suite == 0x1303) {
		struct tls12_crypto_info_chacha20_poly1305 *ci = buf;
		ci->info.version = TLS_1_3_VERSION;
		ci->info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
		memcpy(ci->iv, k->iv, 12);
		memcpy(ci->key, k->key, 32);
		return sizeof(*ci);
	}
#endif
	return 0;
}

/* ---- non-data records from kTLS RX ---- */

#define REC_ALERT 21
#define REC_HANDSHAKE 22
#define HS_NEW_SESSION_TICKET 4
#define HS_KEY_UPDATE 24

/* A handshake record may carry several messages; every one must be a ticket, or the record
 * is one KeyUpdate. A message split across records is refused rather than guessed at. */
static enum ktls_ctl handshake_record(const uint8_t *p, size_t n, bool *update_requested,
				      char *why, size_t why_len)
{
	size_t off = 0;
	enum ktls_ctl act = KTLS_CTL_IGNORE;
	if (n == 0) {
		snprintf(why, why_len, "empty handshake record after the handshake");
		return KTLS_CTL_FAIL;
	}
	while (off < n) {
		if (n - off < 4) {
			snprintf(why, why_len, "truncated handshake message header (%zu bytes)",
				 n - off);
			return KTLS_CTL_FAIL;
		}
		uint8_t type = p[off];
		size_t len = (size_t)p[off + 1] << 16 | (size_t)p[off + 2] << 8 | p[off + 3];
		if (len > n - off - 4) {
			snprintf(why, why_len,
				 "handshake message %u of %zu bytes split across records", type, len);
			return KTLS_CTL_FAIL;
		}
		if (type == HS_KEY_UPDATE) {
			if (len != 1 || p[off + 4] > 1 || off + 5 != n) {
				snprintf(why, why_len, "malformed KeyUpdate (length %zu)", len);
				return KTLS_CTL_FAIL;
			}
			*update_requested = p[off + 4] == 1;
			act = KTLS_CTL_KEY_UPDATE;
		} else if (type != HS_NEW_SESSION_TICKET) {
			snprintf(why, why_len, "unexpected post-handshake message type %u", type);
			return KTLS_CTL_FAIL;
		}
		off += 4 + len;
	}
	return act;
}

enum ktls_ctl ktls_control_record(uint8_t type, const uint8_t *p, size_t n,
				  bool *update_requested, char *why, size_t why_len)
{
	*update_requested = false;
	if (type == REC_HANDSHAKE)
		return handshake_record(p, n, update_requested, why, why_len);
	if (type == REC_ALERT) {
		if (n != 2) {
			snprintf(why, why_len, "malformed alert record (%zu bytes)", n);
			return KTLS_CTL_FAIL;
		}
		if (p[1] == 0) /* close_notify */
			return KTLS_CTL_CLOSE;
		snprintf(why, why_len, "peer sent TLS alert %u (%s)", p[1],
			 SSL_alert_desc_string_long(p[1]));
		return KTLS_CTL_FAIL;
	}
	snprintf(why, why_len, "unexpected TLS record type %u", type);
	return KTLS_CTL_FAIL;
}
