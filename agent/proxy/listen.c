#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/netns.h"
#include "proxy/proxy.h"

/* accepts per wake-up of one pod listener: a flood on one pod cannot starve the others */
#define LISTENER_ACCEPT_BATCH 64

static void on_accepted(struct acceptor *ac, int fd, const struct sockaddr *sa, socklen_t len)
{
	(void)len;
	struct listener *l = container_of(ac, struct listener, acc);
	struct agent *a = l->pod->agent;
	switch (l->kind) {
	case LSN_OUTBOUND:
		outbound_accept(a, l, fd, sa);
		break;
	case LSN_HBONE:
		inbound_hbone_accept(a, l, fd, sa);
		break;
	case LSN_PLAIN:
		inbound_plain_accept(a, l, fd);
		break;
	}
}

/* Where each listener binds inside the pod: captured and steered connections arrive on
 * loopback addresses (so nothing outside the pod can dial 15001/15006 directly); HBONE
 * listens on every address of the pod. */
static void bind_addr(enum listener_kind kind, int family, struct moat_addr *out, uint16_t *port)
{
	memset(out, 0, sizeof(*out));
	bool loopback = kind != LSN_HBONE;
	if (family == AF_INET)
		addr_from_v4(out, loopback ? htonl(INADDR_LOOPBACK) : htonl(INADDR_ANY));
	else if (loopback)
		out->bytes[15] = 1;
	*port = kind == LSN_OUTBOUND ? MOAT_PORT_OUTBOUND
	      : kind == LSN_HBONE    ? MOAT_PORT_HBONE
				     : MOAT_PORT_INBOUND_PLAIN;
}

int listener_open(struct agent *a, struct pod *p, struct listener *l, enum listener_kind kind,
		  int family, struct err *e)
{
	l->fd = -1;
	l->pod = p;
	l->kind = (int)kind;
	struct moat_addr addr;
	uint16_t port;
	bind_addr(kind, family, &addr, &port);
	char where[ADDR_STRLEN + 8];
	int fd = netns_socket(p->netns_fd, family, SOCK_STREAM | SOCK_NONBLOCK, 0, e);
	if (fd < 0)
		return err_wrap(e, "listener %s in pod %s", addr_port_str(&addr, port, where, sizeof(where)), p->key);
	/* V6ONLY: the IPv6 wildcard must not take IPv4 too (the IPv4 listener has it). */
	if (sock_set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR", e) < 0 ||
	    (family == AF_INET6 &&
	     sock_set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY", e) < 0)) {
		close(fd);
		return err_wrap(e, "listener %s in pod %s",
				addr_port_str(&addr, port, where, sizeof(where)), p->key);
	}
	struct sockaddr_storage ss;
	socklen_t sl = addr_to_sockaddr(&addr, port, &ss);
	if (family == AF_INET6 && addr_is_zero(&addr)) {
		memset(&ss, 0, sizeof(ss));
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
		sl = sizeof(struct sockaddr_in6);
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		int err = errno;
		close(fd);
		return err_set(e, "listen on %s in pod %s: %s",
			       addr_port_str(&addr, port, where, sizeof(where)), p->key, errno_name(err));
	}
	char what[96];
	snprintf(what, sizeof(what), "%u of pod %s", port, p->key);
	l->acc.pauses = &a->accept_pauses;
	if (acceptor_start(&l->acc, a->loop, fd, LISTENER_ACCEPT_BATCH, on_accepted, what) < 0) {
		int err = errno;
		close(fd);
		return err_set(e, "watch listener of pod %s: %s", p->key, strerror(err));
	}
	l->fd = fd;
	return 0;
}

void listener_close(struct agent *a, struct listener *l)
{
	if (l->fd < 0)
		return;
	(void)a;
	acceptor_stop(&l->acc);
	close(l->fd);
	l->fd = -1;
}
