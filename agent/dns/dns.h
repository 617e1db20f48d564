/* An asynchronous DNS resolver on the agent loop, for ServiceEntry `resolution: DNS`:
 * A and AAAA over UDP (TCP on truncation) to the nameservers of a resolv.conf, with the
 * answers' TTL so the agent refreshes on time. getaddrinfo() hides TTLs and blocks. */
#ifndef MOAT_DNS_H
#define MOAT_DNS_H

#include <stdint.h>

#include "core/util.h"

struct loop;
struct dns_resolver;

struct dns_answer {
	struct moat_addr *addrs; /* A and AAAA records (CNAME chains followed) */
	size_t n;
	uint32_t ttl;            /* minimum TTL of the records used, seconds */
};

/* error is NULL on success (an empty answer, NXDOMAIN included, is a success with n = 0 and
 * the negative-caching TTL), else says what failed ("timeout after 3 tries to 10.0.0.2:53"). */
typedef void (*dns_cb)(void *arg, const char *host, const struct dns_answer *a, const char *error);

/* resolv_conf: path of a resolv.conf (nameserver lines; options timeout/attempts honoured).
 * moat extensions, ignored by glibc: "nameserver 127.0.0.1:5353", "nameserver [::1]:5353",
 * "options timeout_ms:N" (tests, labs). See docs/observability.md for the retry rules. */
struct dns_resolver *dns_resolver_new(struct loop *l, const char *resolv_conf, struct err *e);
void dns_resolver_free(struct dns_resolver *r); /* pending queries are cancelled, no callback */
/* Resolve host (A + AAAA); cb runs once, later, on the loop. Returns a query id > 0. */
uint64_t dns_resolve(struct dns_resolver *r, const char *host, dns_cb cb, void *arg);
void dns_cancel(struct dns_resolver *r, uint64_t id);

#endif
