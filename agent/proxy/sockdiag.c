#include "proxy/sockdiag.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <sys/socket.h>

#include "core/netns.h"

/* The request names the peer's socket: its local end is our peer, its remote end is us. */
static int fill_id(int fd, struct inet_diag_req_v2 *r)
{
	struct sockaddr_storage l, p;
	socklen_t ll = sizeof(l), pl = sizeof(p);
	if (getsockname(fd, (struct sockaddr *)&l, &ll) < 0 ||
	    getpeername(fd, (struct sockaddr *)&p, &pl) < 0 || l.ss_family != p.ss_family)
		return -1;
	r->sdiag_family = (uint8_t)l.ss_family;
	if (l.ss_family == AF_INET) {
		const struct sockaddr_in *l4 = (const void *)&l, *p4 = (const void *)&p;
		r->id.idiag_sport = p4->sin_port;
		r->id.idiag_dport = l4->sin_port;
		r->id.idiag_src[0] = p4->sin_addr.s_addr;
		r->id.idiag_dst[0] = l4->sin_addr.s_addr;
		return 0;
	}
	if (l.ss_family == AF_INET6) {
		const struct sockaddr_in6 *l6 = (const void *)&l, *p6 = (const void *)&p;
		r->id.idiag_sport = p6->sin6_port;
		r->id.idiag_dport = l6->sin6_port;
		memcpy(r->id.idiag_src, &p6->sin6_addr, 16);
		memcpy(r->id.idiag_dst, &l6->sin6_addr, 16);
		return 0;
	}
	return -1;
}

int sockdiag_peer_gone(int netns_fd, int fd)
{
	struct {
		struct nlmsghdr nh;
		struct inet_diag_req_v2 r;
	} req;
	memset(&req, 0, sizeof(req));
	if (fill_id(fd, &req.r) < 0)
		return -1;
	req.nh.nlmsg_len = sizeof(req);
	req.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nh.nlmsg_flags = NLM_F_REQUEST;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_states = ~0u;
	req.r.id.idiag_cookie[0] = req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	int nl = netns_fd >= 0 ? netns_socket(netns_fd, AF_NETLINK, SOCK_DGRAM, NETLINK_SOCK_DIAG, NULL)
			       : socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nl < 0)
		return -1;
	int verdict = -1;
	union {
		struct nlmsghdr nh;
		char buf[4096];
	} resp;
	/* The kernel answers an exact lookup while handling send(): the reply is queued already. */
	if (send(nl, &req, sizeof(req), 0) == (ssize_t)sizeof(req)) {
		ssize_t n = recv(nl, &resp, sizeof(resp), MSG_DONTWAIT);
		const struct nlmsghdr *h = &resp.nh;
		if (n >= (ssize_t)sizeof(*h) && NLMSG_OK(h, (size_t)n)) {
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);
				verdict = e->error == -ENOENT ? 1 : -1;
			} else if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
				const struct inet_diag_msg *m = NLMSG_DATA(h);
				verdict = m->idiag_inode == 0 ? 1 : 0;
			}
		}
	}
	close(nl);
	return verdict;
}
