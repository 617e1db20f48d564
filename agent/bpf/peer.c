/* Where the host end of a pod's veth is. The TC programs that enforce security for a pod
 * belong there, in moatd's network namespace, where a pod with NET_ADMIN cannot remove them
 * (Cilium attaches there too). Found over rtnetlink: the pod interface names its peer
 * (IFLA_LINK + IFLA_LINK_NETNSID), and the peer, looked up in our netns, must name the pod
 * interface back and the pod's netns as its link netns. Anything else is not a host side. */
#include <errno.h>
#include <linux/if_link.h>
#include <linux/net_namespace.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bpf/internal.h"
#include "core/netns.h"
#include "core/util.h"

struct link_facts {
	int ifindex;
	int link;         /* IFLA_LINK: the peer's ifindex (in link_netnsid's netns), 0 = none */
	int link_netnsid; /* IFLA_LINK_NETNSID, -1 = the peer is in the same netns */
	char name[IF_NAMESIZE];
	char kind[16];    /* IFLA_INFO_KIND ("veth") */
};

struct nl_getlink {
	struct nlmsghdr nh;
	struct ifinfomsg ifi;
	char attrs[64];
};

static int nl_open(int netns_fd, struct err *e)
{
	int fd = netns_fd >= 0 ? netns_socket(netns_fd, AF_NETLINK, SOCK_RAW, NETLINK_ROUTE, e)
			       : socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return netns_fd >= 0 ? -1 : err_set(e, "netlink socket: %s", strerror(errno));
	struct timeval tv = {.tv_sec = 2}; /* the kernel answers at once; bound it anyway */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		int err = errno;
		close(fd); /* an unbounded netlink wait on the loop thread: refuse instead */
		return err_set(e, "netlink socket: setsockopt(SO_RCVTIMEO): %s", errno_name(err));
	}
	return fd;
}

static void parse_linkinfo(struct rtattr *info, int len, struct link_facts *f)
{
	for (struct rtattr *a = info; RTA_OK(a, len); a = RTA_NEXT(a, len))
		if (a->rta_type == IFLA_INFO_KIND)
			snprintf(f->kind, sizeof(f->kind), "%.*s", (int)RTA_PAYLOAD(a),
				 (const char *)RTA_DATA(a));
}

static void parse_link(struct nlmsghdr *h, struct link_facts *f)
{
	struct ifinfomsg *ifi = NLMSG_DATA(h);
	f->ifindex = ifi->ifi_index;
	int len = (int)IFLA_PAYLOAD(h);
	for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type == IFLA_LINK && RTA_PAYLOAD(a) >= 4)
			memcpy(&f->link, RTA_DATA(a), 4);
		else if (a->rta_type == IFLA_LINK_NETNSID && RTA_PAYLOAD(a) >= 4)
			memcpy(&f->link_netnsid, RTA_DATA(a), 4);
		else if (a->rta_type == IFLA_IFNAME)
			snprintf(f->name, sizeof(f->name), "%.*s", (int)RTA_PAYLOAD(a),
				 (const char *)RTA_DATA(a));
		else if (a->rta_type == IFLA_LINKINFO)
			parse_linkinfo(RTA_DATA(a), (int)RTA_PAYLOAD(a), f);
	}
}

/* Send one request, read the one answer of type want (or the error). */
static int nl_ask(int fd, struct nlmsghdr *req, int want, void *buf, size_t len, const char *what,
		  struct err *e)
{
	if (send(fd, req, req->nlmsg_len, 0) < 0)
		return err_set(e, "%s: netlink send: %s", what, strerror(errno));
	ssize_t n = recv(fd, buf, len, 0);
	if (n < 0)
		return err_set(e, "%s: netlink recv: %s", what, strerror(errno));
	struct nlmsghdr *h = buf;
	if (!NLMSG_OK(h, (unsigned)n))
		return err_set(e, "%s: short netlink answer", what);
	if (h->nlmsg_type == NLMSG_ERROR) {
		int code = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
		return err_set(e, "%s: %s", what, strerror(code ? code : EPROTO));
	}
	if (h->nlmsg_type != want)
		return err_set(e, "%s: unexpected netlink answer %d", what, h->nlmsg_type);
	return 0;
}

/* RTM_GETLINK by name (ifindex 0) or by index, in the netns of fd. */
static int get_link(int fd, const char *name, int ifindex, struct link_facts *f, struct err *e)
{
	struct nl_getlink r;
	memset(&r, 0, sizeof(r));
	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(r.ifi));
	r.nh.nlmsg_type = RTM_GETLINK;
	r.nh.nlmsg_flags = NLM_F_REQUEST;
	r.ifi.ifi_family = AF_UNSPEC;
	r.ifi.ifi_index = ifindex;
	if (name) {
		struct rtattr *a = (struct rtattr *)((char *)&r + NLMSG_ALIGN(r.nh.nlmsg_len));
		size_t n = strlen(name) + 1;
		a->rta_type = IFLA_IFNAME;
		a->rta_len = (unsigned short)RTA_LENGTH(n);
		memcpy(RTA_DATA(a), name, n);
		r.nh.nlmsg_len = NLMSG_ALIGN(r.nh.nlmsg_len) + RTA_ALIGN(a->rta_len);
	}
	char buf[8192];
	char what[64];
	snprintf(what, sizeof(what), "interface %s", name ? name : "");
	if (!name)
		snprintf(what, sizeof(what), "interface index %d", ifindex);
	if (nl_ask(fd, &r.nh, RTM_NEWLINK, buf, sizeof(buf), what, e) < 0)
		return -1;
	memset(f, 0, sizeof(*f));
	f->link_netnsid = -1;
	parse_link((struct nlmsghdr *)buf, f);
	return 0;
}

/* The id our netns gives the netns behind netns_fd (-1 when it has none). */
static int nsid_of(int fd, int netns_fd, int *nsid, struct err *e)
{
	struct {
		struct nlmsghdr nh;
		struct rtgenmsg g;
		char attrs[16];
	} r;
	memset(&r, 0, sizeof(r));
	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(r.g));
	r.nh.nlmsg_type = RTM_GETNSID;
	r.nh.nlmsg_flags = NLM_F_REQUEST;
	r.g.rtgen_family = AF_UNSPEC;
	struct rtattr *a = (struct rtattr *)((char *)&r + NLMSG_ALIGN(r.nh.nlmsg_len));
	a->rta_type = NETNSA_FD;
	a->rta_len = (unsigned short)RTA_LENGTH(sizeof(__u32));
	__u32 v = (__u32)netns_fd;
	memcpy(RTA_DATA(a), &v, sizeof(v));
	r.nh.nlmsg_len = NLMSG_ALIGN(r.nh.nlmsg_len) + RTA_ALIGN(a->rta_len);
	char buf[1024];
	if (nl_ask(fd, &r.nh, RTM_NEWNSID, buf, sizeof(buf), "netns id of the pod", e) < 0)
		return -1;
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(struct rtgenmsg)));
	*nsid = -1;
	for (struct rtattr *at = (struct rtattr *)((char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof(struct rtgenmsg)));
	     RTA_OK(at, len); at = RTA_NEXT(at, len))
		if (at->rta_type == NETNSA_NSID && RTA_PAYLOAD(at) >= 4)
			memcpy(nsid, RTA_DATA(at), 4);
	return 0;
}

/* Is the peer the kernel names for the pod interface here, pointing back at it? */
static int check_host_end(int netns_fd, const struct link_facts *pod, struct dp_host_peer *out,
			  struct err *e)
{
	int fd = nl_open(-1, e);
	if (fd < 0)
		return -1;
	struct link_facts h;
	struct err le;
	int rc = 0;
	int nsid = -1;
	if (get_link(fd, NULL, pod->link, &h, &le) < 0)
		rc = err_set(e, "its veth peer (index %d) is not in moatd's network namespace",
			     pod->link);
	/* The lookup above gave the pod netns an id here if it had none: ask for it now. */
	else if (nsid_of(fd, netns_fd, &nsid, e) < 0)
		rc = -1;
	else if (strcmp(h.kind, "veth") != 0 || h.link != pod->ifindex || h.link_netnsid < 0 ||
		 h.link_netnsid != nsid)
		rc = err_set(e,
			     "interface index %d in moatd's network namespace (%s) is not the "
			     "peer of the pod's interface",
			     pod->link, h.name);
	close(fd);
	if (rc < 0)
		return -1;
	out->ifindex = h.ifindex;
	snprintf(out->ifname, sizeof(out->ifname), "%s", h.name);
	return 0;
}

int dp_find_host_peer(int netns_fd, const char *ifname, struct dp_host_peer *out, struct err *e)
{
	memset(out, 0, sizeof(*out));
	int fd = nl_open(netns_fd, e);
	if (fd < 0)
		return err_wrap(e, "pod interface %s", ifname);
	struct link_facts pod;
	int rc = get_link(fd, ifname, 0, &pod, e);
	close(fd);
	if (rc < 0)
		return -1;
	if (strcmp(pod.kind, "veth") != 0 || pod.link == 0)
		return err_set(e, "pod interface %s is not a veth (kind \"%s\")", ifname, pod.kind);
	if (pod.link_netnsid < 0)
		return err_set(e, "the veth peer of pod interface %s is inside the pod's own network "
				  "namespace", ifname);
	if (check_host_end(netns_fd, &pod, out, e) < 0)
		return err_wrap(e, "pod interface %s", ifname);
	return 0;
}
