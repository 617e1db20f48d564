/* Network namespaces: a socket belongs to the netns it was created in, so moatd creates the
 * sockets of each pod (listeners, HBONE and upstream connections) by entering the pod's
 * netns on the calling thread for the duration of socket() and switching back. */
#ifndef MOAT_CORE_NETNS_H
#define MOAT_CORE_NETNS_H

#include "core/util.h"

/* Enter target netns; *saved receives an fd of the thread's current netns. */
int netns_enter(int target_fd, int *saved, struct err *e);
/* Return to the saved netns and close it. Aborts if that fails: continuing in the wrong
 * netns would put the agent's own sockets into a pod. */
void netns_leave(int saved);
/* socket() inside the netns of netns_fd (CLOEXEC; NONBLOCK when type has SOCK_NONBLOCK). */
int netns_socket(int netns_fd, int domain, int type, int protocol, struct err *e);
/* Open a netns by path (/run/netns/x, /proc/PID/ns/net). */
int netns_open(const char *path, struct err *e);

#endif
