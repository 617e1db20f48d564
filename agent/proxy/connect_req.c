/* CONNECT request checks (connect_req.h): pure functions of the request. */
#include "proxy/connect_req.h"

#include <stdio.h>
#include <string.h>

#include "proxy/proxy.h"

int hbone_connect_check(const struct hbone_request *r, const struct moat_addr *pod_addrs,
			size_t n_pod_addrs, struct moat_addr *dst, uint16_t *dport, char *why,
			size_t whylen)
{
	if (strcmp(r->method, "CONNECT") != 0) {
		snprintf(why, whylen, "method %s is not CONNECT", r->method);
		return 400;
	}
	if (!addr_port_parse(r->authority, dst, dport)) {
		snprintf(why, whylen, "authority \"%s\" is not ip:port", r->authority);
		return 400;
	}
	if (!addr_list_has(pod_addrs, n_pod_addrs, dst)) {
		char d[ADDR_STRLEN];
		snprintf(why, whylen, "authority %s is not the dialed pod %s", r->authority,
			 addr_str(&r->local_addr, d, sizeof(d)));
		return 400;
	}
	if (is_agent_port(*dport)) {
		snprintf(why, whylen, "agent ports are not valid destinations");
		return 400;
	}
	return 0;
}
