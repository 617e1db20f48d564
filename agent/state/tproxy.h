/* Policy routing inside a pod so the agent can connect to the app from the client's own
 * address (IP_TRANSPARENT): the agent marks its upstream socket, the app's accepted socket
 * inherits the mark (net.ipv4.tcp_fwmark_accept=1), and marked packets are routed to the
 * local host (ip rule fwmark 0x539 lookup 539; local default dev lo table 539), so replies
 * to the foreign address come back to the agent instead of leaving the pod.
 * A reset the kernel sends for a port where nothing listens belongs to no socket, so it
 * carries no mark unless the pod reflects the mark of the packet it answers
 * (net.ipv4.fwmark_reflect / net.ipv6.fwmark_reflect = 1): without that the reset to the
 * agent's SYN left the pod towards the client's address and the agent waited for its
 * connect timeout instead of seeing ECONNREFUSED. */
#ifndef MOAT_STATE_TPROXY_H
#define MOAT_STATE_TPROXY_H

#include "core/util.h"

/* Marks the upstream socket of a transparent connection (proxy/inbound.c) so the app's
 * replies to the foreign source address are routed back to the agent. */
#define TPROXY_MARK  0x539
#define TPROXY_TABLE 539
#define TPROXY_PRIO  1000

/* The pod's sysctls before moat set them, put back at teardown; -1: unknown (left as is). */
struct tproxy_was {
	int accept;   /* net.ipv4.tcp_fwmark_accept */
	int reflect;  /* net.ipv4.fwmark_reflect */
	int reflect6; /* net.ipv6.fwmark_reflect (IPv6 may be off in the pod) */
};
void tproxy_was_unknown(struct tproxy_was *w);
/* An enrollment record's line KEY=VALUE: true when KEY is one of these values (kept in *w
 * when VALUE is a number). */
bool tproxy_was_parse(struct tproxy_was *w, const char *key, const char *value);
/* The known values as enrollment record lines. */
void tproxy_was_record(const struct tproxy_was *w, struct sbuf *b);

/* recorded: the pod's values before moat, as an enrollment record kept them (an agent taking
 * a pod back), or NULL; what it does not know is read now. *was receives what to restore. */
int tproxy_setup(int netns_fd, const struct tproxy_was *recorded, struct tproxy_was *was,
		 struct err *e);
/* Remove the rules and routes and put the sysctls back to *was (those >= 0). */
void tproxy_teardown(int netns_fd, const struct tproxy_was *was);

#endif
