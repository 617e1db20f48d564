/* Access-log records shared by every room that refuses connections: the JSON "deny" line and
 * its metrics (ztunnel's istio_tcp_connections_closed_total with response_flags DENY, and
 * moat's own deny counters), plus the small pieces connection records format the same way.
 * BPF events (state/) and the proxy's refusals (proxy/) both log through here. */
#ifndef MOAT_OBS_ACCESS_H
#define MOAT_OBS_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

struct metrics;

/* A refusal (no connection was carried): one JSON "deny" line + metrics. */
struct deny_record {
	const char *phase;   /* "connect" (BPF), "outbound", "inbound" */
	const char *src_workload, *src_identity;
	const struct moat_addr *src;
	uint16_t sport;
	const struct moat_addr *dst;
	uint16_t dport;
	const char *dst_workload;
	const char *policy;  /* "ns/name" or NULL */
	const char *reason;         /* one sentence for people */
	const char *reason_code;    /* POLICY_DENY, NO_ALLOW, UNREGISTERED, STRICT_PLAINTEXT... */
	const char *response_flags; /* default DENY (ztunnel's flag) */
};
void access_log_deny(struct metrics *m, const struct deny_record *r);

/* "ns/name" -> namespace and name, copied into the buffers (both "" for NULL). */
void access_split_name(const char *full, char *ns, size_t nsl, char *name, size_t nl);
/* The value, or "unknown" (ztunnel's label value for what the agent does not know). */
const char *access_or_unknown(const char *s);
/* ,"key":"addr:port" (or "addr" for port 0, null for no address) */
void access_json_addr(struct sbuf *b, const char *key, const struct moat_addr *a, uint16_t port);

#endif
