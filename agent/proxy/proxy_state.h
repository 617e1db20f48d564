/* What the proxy room keeps per agent: the connection records, the accepted HBONE
 * connections and the proxy's own log throttles. Private to proxy/: other rooms hold only
 * the opaque struct agent.proxy and go through proxy/proxy.h (conns_count, conns_dump,
 * proxy_export_gauges) or, from state/, state/proxy_ops.h. The HBONE pool stays a->pool
 * (proxy/pool.h), already opaque. */
#ifndef MOAT_PROXY_PROXY_STATE_H
#define MOAT_PROXY_PROXY_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/loop.h"

struct agent;
struct conn;
struct srv_conn;

struct proxy_state {
	struct agent *agent;
	struct conn *conns;           /* live proxied connections (conn.c) */
	struct srv_conn *srv_conns;   /* inbound HBONE (TLS) connections (inbound.c) */
	uint64_t n_conns;             /* connection ids handed out */
	struct loop_timer trim_timer; /* no connection left: give freed heap back (conn.c) */
	bool join_fallback_logged;    /* a failed same-node join was logged (once; join.c) */
	uint64_t ktls_fallback_log_ms; /* last kTLS fallback log line (engine.c) */
};

#endif
