/* Same node, joined in the kernel: an allowed connection between two pods of this node is
 * carried by two sockets moatd joins in the `joined` sockhash (agent/bpf/join.c): the one it
 * accepted on the source pod's 15001 and the one it opens to the destination app inside the
 * destination pod's netns. The kernel moves the bytes between them (sk_skb verdict); moatd
 * only watches both for close, passes FIN on once the kernel has flushed, reads the byte
 * counts from the kernel, and writes the same records as the cross-node path (an outbound
 * and an inbound connection, engine "sockmap"). If the join fails, the same two sockets are
 * relayed in user space (engine "userspace"), logged once and counted. */
#ifndef MOAT_PROXY_JOIN_H
#define MOAT_PROXY_JOIN_H

#include "proxy/conn.h"
#include "state/agent.h"

struct join;

/* The app's connection (app_fd, accepted on the source pod's 15001) to dst:dport, already
 * authorized by the destination pod's policies for the source pod's identity (dec_policy:
 * the deciding ALLOW policy or NULL). Takes app_fd. svc: a record whose service fields
 * (dialed as a service) the outbound record copies, or NULL. */
void join_start(struct agent *a, struct pod *src, struct pod *dst_pod, int app_fd,
		const struct dest *d, const struct moat_addr *dst, uint16_t dport, uint16_t sport,
		const char *dec_policy, const struct conn *svc);
/* End now with RST on both sockets (policy change, unenroll, shutdown). */
void join_reset(struct join *j, const char *why);

#endif
