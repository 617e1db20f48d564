/* Policy routing inside a pod so the agent can connect to the app from the client's own
 * address (IP_TRANSPARENT): the agent marks its upstream socket, the app's accepted socket
 * inherits the mark (net.ipv4.tcp_fwmark_accept=1), and marked packets are routed to the
 * local host (ip rule fwmark 0x539 lookup 539; local default dev lo table 539), so replies
 * to the foreign address come back to the agent instead of leaving the pod. */
#ifndef MOAT_STATE_TPROXY_H
#define MOAT_STATE_TPROXY_H

#include "core/util.h"

/* Marks the upstream socket of a transparent connection (proxy/inbound.c) so the app's
 * replies to the foreign source address are routed back to the agent. */
#define TPROXY_MARK  0x539
#define TPROXY_TABLE 539
#define TPROXY_PRIO  1000

/* recorded: the pod's tcp_fwmark_accept before moat, as an enrollment record kept it (an
 * agent taking a pod back), or NULL to read it now. *was receives the value to restore. */
int tproxy_setup(int netns_fd, const char *recorded, int *was, struct err *e);
/* Remove the rules and routes and put tcp_fwmark_accept back to was (when >= 0). */
void tproxy_teardown(int netns_fd, int was);

#endif
