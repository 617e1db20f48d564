/* Kernel TLS detection: TCP_ULP "tls" can only be set on an established TCP socket, so the
 * probe makes a loopback connection in the agent's own netns and tries it. The relay engine
 * that uses kTLS comes later; today the answer is reported (moatctl status, metrics). */
#include "hbone/ktls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
