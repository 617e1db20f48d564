/* Shared by the HBONE unit tests: a CA with one client and one server SVID and their TLS
 * contexts, and loopback TCP pairs (unlike socketpair(), TCP can carry a reset). */
#ifndef MOAT_TEST_HBONE_HELPERS_H
#define MOAT_TEST_HBONE_HELPERS_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include "identity/identity.h"

#define HBT_TD "cluster.local"
#define HBT_CLIENT_ID "spiffe://cluster.local/ns/a/sa/client"
#define HBT_SERVER_ID "spiffe://cluster.local/ns/b/sa/server"

struct hbt_certs {
	struct moat_ca *ca;
	struct svid *csvid, *ssvid;
	struct bundle *bundle;
	SSL_CTX *cctx, *sctx;
};
bool hbt_certs_init(struct hbt_certs *c);
void hbt_certs_free(struct hbt_certs *c);

/* A connected pair on 127.0.0.1: sv[0] non-blocking (the agent's end), sv[1] blocking. */
int hbt_tcp_pair(int sv[2]);

#endif
