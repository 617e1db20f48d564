#include "test_hbone_helpers.h"

#include <fcntl.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

bool hbt_certs_init(struct hbt_certs *c)
{
	struct err e;
	memset(c, 0, sizeof(*c));
	c->ca = ca_new_ephemeral(HBT_TD, &e);
	if (!c->ca)
		return false;
	c->csvid = ca_mint_svid(c->ca, HBT_CLIENT_ID, 3600, &e);
	c->ssvid = ca_mint_svid(c->ca, HBT_SERVER_ID, 3600, &e);
	c->bundle = bundle_from_cert(ca_root_cert(c->ca), HBT_TD, &e);
	if (!c->csvid || !c->ssvid || !c->bundle)
		return false;
	c->cctx = tls_client_ctx(c->csvid, c->bundle, false, &e);
	c->sctx = tls_server_ctx(c->ssvid, c->bundle, false, &e);
	return c->cctx && c->sctx;
}

void hbt_certs_free(struct hbt_certs *c)
{
	SSL_CTX_free(c->cctx);
	SSL_CTX_free(c->sctx);
	svid_unref(c->csvid);
	svid_unref(c->ssvid);
	bundle_unref(c->bundle);
	ca_free(c->ca);
}

int hbt_tcp_pair(int sv[2])
{
	if (tcp_loopback_pair(sv) < 0)
		return -1;
	int fl = fcntl(sv[0], F_GETFL);
	fcntl(sv[0], F_SETFL, fl | O_NONBLOCK);
	return 0;
}
