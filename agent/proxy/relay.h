/* Joins two connected TCP sockets and moves bytes both ways in user space (plaintext paths:
 * egress, workloads without an agent, PERMISSIVE inbound). Buffers are taken when a write
 * would block and returned once drained, so an idle relay holds no buffer. FIN is passed on
 * as shutdown(SHUT_WR) (half-close respected), an error or RST on one side resets the other. */
#ifndef MOAT_PROXY_RELAY_H
#define MOAT_PROXY_RELAY_H

#include <stdint.h>

#include "core/loop.h"

struct relay;

/* a_to_b: bytes read from a and written to b. error NULL on a clean close of both sides. */
typedef void (*relay_done_cb)(void *user, uint64_t a_to_b, uint64_t b_to_a, const char *error);

/* Takes ownership of both sockets (closed when the relay ends); NULL (sockets still the
 * caller's) only when they cannot be watched. */
struct relay *relay_new(struct loop *l, int fd_a, int fd_b, relay_done_cb done, void *user);
/* End now with RST on both sides (policy changed, shutdown); done is called. */
void relay_reset(struct relay *r, const char *why);
void relay_counts(const struct relay *r, uint64_t *a_to_b, uint64_t *b_to_a);

#endif
