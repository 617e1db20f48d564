/* Kernel TLS: the probe, and the parts of the switch that need no kernel (so unit tests run
 * them anywhere): the TLS 1.3 key schedule for the kernel's crypto_info and the reading of
 * the non-data records kTLS RX hands up. The socket side is hbone/transport_ktls.c. */
#ifndef MOAT_HBONE_KTLS_H
#define MOAT_HBONE_KTLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Does this kernel take TCP_ULP "tls"? why says what was seen either way. */
bool ktls_probe(char *why, size_t len);

/* One direction's record protection, as RFC 8446 7.3 derives it from a traffic secret. */
struct ktls_keys {
	uint16_t suite;       /* IANA: 0x1301 AES-128-GCM, 0x1302 AES-256-GCM, 0x1303 ChaCha20 */
	size_t hash_len;      /* 32 (SHA-256) or 48 (SHA-384): the secret's length */
	size_t key_len;       /* 16 or 32 */
	uint8_t key[32];
	uint8_t iv[12];
	uint8_t secret[48];   /* the traffic secret these came from (KeyUpdate derives on) */
};

/* HKDF-Expand-Label(secret, label, "", out_len) with the suite's hash. 0, or -1. */
int ktls_expand_label(uint16_t suite, const uint8_t *secret, size_t secret_len,
		      const char *label, uint8_t *out, size_t out_len);
/* key and iv from a traffic secret; -1 for a suite kTLS does not know. */
int ktls_keys_from_secret(uint16_t suite, const uint8_t *secret, size_t secret_len,
			  struct ktls_keys *k);
/* KeyUpdate: the next generation (RFC 8446 7.2, "traffic upd"). */
int ktls_keys_update(struct ktls_keys *k);

/* The kernel's crypto_info for k with record sequence 0 (TLS 1.3): fills buf (at least
 * KTLS_CRYPTO_INFO_MAX bytes), returns its length, or 0 for a suite the header lacks. */
#define KTLS_CRYPTO_INFO_MAX 128
size_t ktls_crypto_info(const struct ktls_keys *k, void *buf);

/* What a non-data record read from kTLS RX asks for. */
enum ktls_ctl {
	KTLS_CTL_IGNORE,      /* NewSessionTicket(s): we never resume */
	KTLS_CTL_KEY_UPDATE,  /* rekey RX; *update_requested: our TX must follow */
	KTLS_CTL_CLOSE,       /* close_notify */
	KTLS_CTL_FAIL,        /* anything else: close, why says what arrived */
};
/* type: the TLS record content type (TLS_GET_RECORD_TYPE); p/n: the record's plaintext. */
enum ktls_ctl ktls_control_record(uint8_t type, const uint8_t *p, size_t n,
				  bool *update_requested, char *why, size_t why_len);

#endif
