/* CONNECT request checks (connect_req.h): pure functions of the request. */
#include "proxy/connect_req.h"

#include <stdio.h>
#include <string.h>

#include "proxy/proxy.h"

int hbone_connect_check(const struct hbone_request *r, struct moat_addr *dst, uint16_t *dport,
			char *why, size_t whylen)
{
	if (strcmp(r->method, "CONNECT") != 0) {
		snprintf(why, whylen, "method %s is not CONNECT", r->method);
		return 400;
	}
	if (!addr_port_parse(r->authority, dst, dport)) {
		snprintf(why, whylen, "authority \"%s\" is not ip:port", r->authority);
		return 400;
	}
	if (!addr_eq(dst, &r->local_addr)) {
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

uint16_t hbone_forwarded_port(const struct hbone_request *r)
{
	if (!r->forwarded)
		return 0;
	const char *p = strstr(r->forwarded, "for=");
	if (!p)
		return 0;
	p += 4;
	char buf[ADDR_STRLEN + 16];
	size_t n = 0;
	if (*p == '"')
		p++;
	while (*p && *p != '"' && *p != ';' && *p != ',' && n + 1 < sizeof(buf))
		buf[n++] = *p++;
	buf[n] = 0;
	struct moat_addr a;
	uint16_t port;
	if (addr_port_parse(buf, &a, &port) && addr_eq(&a, &r->peer_addr))
		return port;
	return 0;
}
