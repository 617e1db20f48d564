/* Relay engines as policy: what --engine and the kernel allow, and the bookkeeping of the
 * HBONE engine choice each connection made (kTLS or OpenSSL in user space): fallbacks
 * logged (rate-limited) and counted, non-data kTLS records counted. */
#ifndef MOAT_PROXY_ENGINE_H
#define MOAT_PROXY_ENGINE_H

#include <stdbool.h>

#include "hbone/h2.h"
#include "state/agent.h"

/* --engine allows joining same-node pairs in the kernel. */
bool engine_allows_sockmap(const struct agent *a);
/* HBONE connections try kTLS: --engine allows it and the kernel has it. */
bool engine_uses_ktls(const struct agent *a);
/* Why HBONE connections do not try kTLS (NULL when they do). */
const char *engine_ktls_off(const struct agent *a);
/* The name of --engine's value. */
const char *engine_name(enum agent_engine e);

/* Right after h2conn_new: ask for kTLS when allowed. */
void engine_hbone_new(struct agent *a, struct h2conn *h);
/* on_ready: a connection that asked for kTLS and stayed on OpenSSL is logged and counted. */
void engine_hbone_ready(struct agent *a, struct h2conn *h);
/* on_closed: the kTLS records it handled, counted. */
void engine_hbone_closed(struct agent *a, struct h2conn *h);

#endif
