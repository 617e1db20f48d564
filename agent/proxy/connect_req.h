/* The checks of an inbound HBONE CONNECT request that depend on the request alone (method,
 * :authority), apart from the agent's state so they can be unit-tested and
 * fuzzed on plain strings (tests/fuzz/fuzz_connect.c). */
#ifndef MOAT_PROXY_CONNECT_REQ_H
#define MOAT_PROXY_CONNECT_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"
#include "hbone/h2.h"

/* Method CONNECT, :authority "ip:port" naming one of the dialed pod's addresses (pod_addrs:
 * dual stack, a peer may tunnel over one family to the other), not one of the agent's own
 * ports. Returns 0 with *dst and *dport set, or the HTTP status to refuse with (400) and the
 * reason in why. The `forwarded` header is never read for the source: the verified TLS
 * connection names it. */
int hbone_connect_check(const struct hbone_request *r, const struct moat_addr *pod_addrs,
			size_t n_pod_addrs, struct moat_addr *dst, uint16_t *dport, char *why,
			size_t whylen);

#endif
