#include "state/tproxy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stddef.h>
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

/* The sysctls moat sets in the pod, where they live in struct tproxy_was and in a record. */
struct knob {
	const char *path, *key;
	size_t off;
	bool required; /* else best effort: IPv6 may be off in the pod */
};
static const struct knob knobs[] = {
	{"/proc/sys/net/ipv4/tcp_fwmark_accept", "fwmark_accept_was",
	 offsetof(struct tproxy_was, accept), true},
	{"/proc/sys/net/ipv4/fwmark_reflect", "fwmark_reflect_was",
	 offsetof(struct tproxy_was, reflect), true},
	{"/proc/sys/net/ipv6/fwmark_reflect", "fwmark_reflect6_was",
	 offsetof(struct tproxy_was, reflect6), false},
};

static int *knob_val(struct tproxy_was *w, const struct knob *k)
{
	return (int *)((char *)w + k->off);
}

static int knob_get(const struct tproxy_was *w, const struct knob *k)
{
	return *(const int *)((const char *)w + k->off);
}

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

void tproxy_was_unknown(struct tproxy_was *w)
{
	w->accept = w->reflect = w->reflect6 = -1;
}

bool tproxy_was_parse(struct tproxy_was *w, const char *key, const char *value)
{
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		if (strcmp(key, knobs[i].key))
			continue;
		if (*value && strspn(value, "0123456789") == strlen(value) && strlen(value) < 6)
			*knob_val(w, &knobs[i]) = atoi(value);
		return true;
	}
	return false;
}

void tproxy_was_record(const struct tproxy_was *w, struct sbuf *b)
{
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++)
		if (knob_get(w, &knobs[i]) >= 0)
			sbuf_printf(b, "%s=%d\n", knobs[i].key, knob_get(w, &knobs[i]));
}

/* Set every knob to 1, keeping what to restore: the recorded value before moat when there is
 * one, else the value found now. sysctls under /proc/sys/net belong to the netns of the
 * thread that opens them (the caller entered the pod's). */
static int knobs_set(const struct tproxy_was *recorded, struct tproxy_was *was, struct err *e)
{
	tproxy_was_unknown(was);
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		const struct knob *k = &knobs[i];
		int before = recorded ? knob_get(recorded, k) : -1;
		if (before < 0)
			before = read_sysctl_int(k->path);
		struct err ke;
		if (write_sysctl(k->path, "1", &ke) < 0) {
			if (k->required)
				return err_set(e, "%s", ke.msg);
			continue;
		}
		*knob_val(was, k) = before;
	}
	return 0;
}

static void knobs_restore(const struct tproxy_was *was)
{
	struct err e;
	for (size_t i = 0; i < ARRAY_SIZE(knobs); i++) {
		int v = knob_get(was, &knobs[i]);
		if (v < 0)
			continue;
		char s[16];
		snprintf(s, sizeof(s), "%d", v);
		write_sysctl(knobs[i].path, s, &e);
	}
}

int tproxy_setup(int netns_fd, const struct tproxy_was *recorded, struct tproxy_was *was,
		 struct err *e)
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
	if (knobs_set(recorded, was, e) < 0)
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

void tproxy_teardown(int netns_fd, const struct tproxy_was *was)
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
	knobs_restore(was);
	netns_leave(saved);
}
