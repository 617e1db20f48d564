#include "state/tproxy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/netns.h"

struct nlreq {
	struct nlmsghdr nh;
	union {
		struct fib_rule_hdr rule;
		struct rtmsg rt;
	};
	char attrs[256];
};

static void add_attr(struct nlreq *r, unsigned short type, const void *data, unsigned short len)
{
	struct rtattr *ra = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->nh.nlmsg_len));
	ra->rta_type = type;
	ra->rta_len = (unsigned short)RTA_LENGTH(len);
	memcpy(RTA_DATA(ra), data, len);
	r->nh.nlmsg_len = NLMSG_ALIGN(r->nh.nlmsg_len) + RTA_ALIGN(ra->rta_len);
}

/* Send one request and read its ack; EEXIST (add) and ENOENT/ESRCH (delete) are fine. */
static int nl_talk(int fd, struct nlreq *r, struct err *e, const char *what)
{
	r->nh.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	if (send(fd, r, r->nh.nlmsg_len, 0) < 0)
		return err_set(e, "%s: netlink send: %s", what, strerror(errno));
	char buf[4096];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	if (n < 0)
		return err_set(e, "%s: netlink recv: %s", what, strerror(errno));
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	if (!NLMSG_OK(h, (unsigned)n) || h->nlmsg_type != NLMSG_ERROR)
		return err_set(e, "%s: unexpected netlink answer", what);
	int code = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
	if (code == 0 || code == EEXIST || code == ENOENT || code == ESRCH)
		return 0;
	return err_set(e, "%s: %s", what, strerror(code));
}

static int rule(int fd, int family, bool add, struct err *e)
{
	struct nlreq r = {0};
	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct fib_rule_hdr));
	r.nh.nlmsg_type = add ? RTM_NEWRULE : RTM_DELRULE;
	r.nh.nlmsg_flags = add ? NLM_F_CREATE | NLM_F_EXCL : 0;
	r.rule.family = (unsigned char)family;
	r.rule.action = FR_ACT_TO_TBL;
	uint32_t mark = TPROXY_MARK, mask = 0xffffffff, table = TPROXY_TABLE, prio = TPROXY_PRIO;
	add_attr(&r, FRA_FWMARK, &mark, 4);
	add_attr(&r, FRA_FWMASK, &mask, 4);
	add_attr(&r, FRA_TABLE, &table, 4);
	add_attr(&r, FRA_PRIORITY, &prio, 4);
	return nl_talk(fd, &r, e, family == AF_INET ? "ip rule fwmark" : "ip -6 rule fwmark");
}

static int local_route(int fd, int family, bool add, struct err *e)
{
	struct nlreq r = {0};
	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
	r.nh.nlmsg_type = add ? RTM_NEWROUTE : RTM_DELROUTE;
	r.nh.nlmsg_flags = add ? NLM_F_CREATE | NLM_F_REPLACE : 0;
	r.rt.rtm_family = (unsigned char)family;
	r.rt.rtm_dst_len = 0;
	r.rt.rtm_table = RT_TABLE_UNSPEC;
	r.rt.rtm_protocol = RTPROT_STATIC;
	r.rt.rtm_scope = RT_SCOPE_HOST;
	r.rt.rtm_type = RTN_LOCAL;
	uint32_t table = TPROXY_TABLE, oif = 1; /* lo is ifindex 1 in every netns */
	add_attr(&r, RTA_TABLE, &table, 4);
	add_attr(&r, RTA_OIF, &oif, 4);
	return nl_talk(fd, &r, e, family == AF_INET ? "ip route local default table 539"
						    : "ip -6 route local default table 539");
}

static int write_sysctl(const char *path, const char *value, struct err *e)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(e, "open %s: %s", path, strerror(errno));
	ssize_t n = write(fd, value, strlen(value));
	int err = errno;
	close(fd);
	if (n < 0)
		return err_set(e, "write %s: %s", path, strerror(err));
	return 0;
}

#define FWMARK_ACCEPT "/proc/sys/net/ipv4/tcp_fwmark_accept"

static int read_sysctl_int(const char *path)
{
	char buf[16] = {0};
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 && buf[0] >= '0' && buf[0] <= '9' ? atoi(buf) : -1;
}

static int parse_recorded(const char *recorded)
{
	if (!recorded || !*recorded || strspn(recorded, "0123456789") != strlen(recorded))
		return -1;
	return atoi(recorded);
}

int tproxy_setup(int netns_fd, const char *recorded, int *was, struct err *e)
{
	int saved;
	if (netns_enter(netns_fd, &saved, e) < 0)
		return -1;
	int rc = -1;
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0) {
		err_set(e, "netlink socket: %s", strerror(errno));
		goto out;
	}
	/* sysctls under /proc/sys/net belong to the netns of the thread that opens them. The value
	 * before moat is kept so that unenroll puts it back. */
	*was = parse_recorded(recorded);
	if (*was < 0)
		*was = read_sysctl_int(FWMARK_ACCEPT);
	if (write_sysctl(FWMARK_ACCEPT, "1", e) < 0)
		goto out;
	if (rule(fd, AF_INET, true, e) < 0 || local_route(fd, AF_INET, true, e) < 0)
		goto out;
	struct err e6;
	if (rule(fd, AF_INET6, true, &e6) == 0)
		local_route(fd, AF_INET6, true, &e6); /* IPv6 may be off in the pod: best effort */
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	netns_leave(saved);
	return rc;
}

void tproxy_teardown(int netns_fd, int was)
{
	struct err e;
	int saved;
	if (netns_enter(netns_fd, &saved, &e) < 0)
		return;
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd >= 0) {
		rule(fd, AF_INET, false, &e);
		local_route(fd, AF_INET, false, &e);
		rule(fd, AF_INET6, false, &e);
		local_route(fd, AF_INET6, false, &e);
		close(fd);
	}
	if (was >= 0) {
		char v[16];
		snprintf(v, sizeof(v), "%d", was);
		write_sysctl(FWMARK_ACCEPT, v, &e);
	}
	netns_leave(saved);
}
