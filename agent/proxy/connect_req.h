/* The checks of an inbound HBONE CONNECT request that depend on the request alone (method,
 * :authority, forwarded), apart from the agent's state so they can be unit-tested and
 * fuzzed on plain strings (tests/fuzz/fuzz_connect.c). */
#ifndef MOAT_PROXY_CONNECT_REQ_H
#define MOAT_PROXY_CONNECT_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"
#include "hbone/h2.h"

/* Method CONNECT, :authority "ip:port" naming the dialed pod address (r->local_addr), not
 * one of the agent's own ports. Returns 0 with *dst and *dport set, or the HTTP status to
 * refuse with (400) and the reason in why. */
int hbone_connect_check(const struct hbone_request *r, struct moat_addr *dst, uint16_t *dport,
			char *why, size_t whylen);

/* forwarded: for="ip:port" from the source agent names the app's own port: returns it when
 * the address agrees with the address that connected (r->peer_addr), else 0. */
uint16_t hbone_forwarded_port(const struct hbone_request *r);

#endif
