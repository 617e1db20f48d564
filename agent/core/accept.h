/* The one accept loop of every listening socket the agent owns: the pod listeners (15001,
 * 15008, 15006), the control socket and the HTTP ports. Each wake-up accepts up to `batch`
 * connections (so one busy listener cannot starve the loop), skips the transient errors
 * (EAGAIN, EINTR, ECONNABORTED, EPROTO), and when accept() fails for want of descriptors or
 * kernel memory (accept_err_is_pressure) stops watching the socket for ACCEPT_PAUSE_MS: the
 * connection stays queued and a level-triggered listener would stay readable, so accepting
 * again at once would spin the loop. Pauses are logged (rate-limited by the log) and counted
 * (moat_accept_pauses_total). The owner can also hold accepting (a connection cap). */
#ifndef MOAT_CORE_ACCEPT_H
#define MOAT_CORE_ACCEPT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/loop.h"

/* listen() backlog of the pod listeners and the HTTP ports: connections wait here while
 * accepting is paused (the kernel caps it at net.core.somaxconn). */
#define LISTEN_BACKLOG 4096

struct acceptor;
/* One accepted socket (non-blocking, close-on-exec), with its peer's address. */
typedef void (*acceptor_cb)(struct acceptor *ac, int fd, const struct sockaddr *peer,
			    socklen_t peer_len);

struct acceptor {
	struct loop *loop;
	int fd;                   /* the listening socket (the owner's; never closed here) */
	struct loop_io io;
	struct loop_timer backoff;
	int batch;                /* accepts per wake-up */
	bool paused;              /* out of descriptors or memory: waiting for the timer */
	bool held;                /* acceptor_hold */
	uint64_t *pauses;         /* incremented when a pause starts (NULL: not counted) */
	acceptor_cb cb;
	char what[128];           /* "15001 of pod ns/name", "control socket /run/moat/..." */
};

/* Watch fd (a listening socket) and call cb for each accepted connection. */
int acceptor_start(struct acceptor *ac, struct loop *l, int fd, int batch, acceptor_cb cb,
		   const char *what);
/* Stop watching (the timer too); fd stays open. Safe on one never started. */
void acceptor_stop(struct acceptor *ac);
/* Stop (hold) or resume accepting for the owner's own reason, e.g. a connection cap. */
void acceptor_hold(struct acceptor *ac, bool hold);

#endif
