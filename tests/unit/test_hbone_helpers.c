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
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0) {
		if (l >= 0)
			close(l);
		return -1;
	}
	sv[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sv[0] < 0 || connect(sv[0], (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(l);
		return -1;
	}
	sv[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	close(l);
	if (sv[1] < 0)
		return -1;
	int fl = fcntl(sv[0], F_GETFL);
	fcntl(sv[0], F_SETFL, fl | O_NONBLOCK);
	return 0;
}
