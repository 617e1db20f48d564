/* Whether the app still holds its end of a connection the agent accepted inside a pod's netns,
 * asked of the kernel's socket table (NETLINK_SOCK_DIAG, an exact 4-tuple lookup). A FIN
 * alone cannot tell an app that half-closed (it sent its request and waits for the answer)
 * from one that closed its socket and left; the kernel can: a closed socket has no owner
 * (inode 0) or is gone. */
#ifndef MOAT_PROXY_SOCKDIAG_H
#define MOAT_PROXY_SOCKDIAG_H

/* 1: the peer socket of fd is orphaned or gone; 0: an app still owns it; -1: cannot tell. */
int sockdiag_peer_gone(int netns_fd, int fd);

#endif
