/* Fuzz target: the inbound HBONE CONNECT request checks (agent/proxy/connect_req.c: method,
 * :authority, forwarded) with the address parsers under them (core: addr_port_parse).
 * Input: newline-separated fields  method, authority, forwarded, dialed pod address, peer
 * address (missing fields: forwarded absent, pod 10.1.0.2, peer 10.1.0.1).
 * Properties: an accepted request names exactly the dialed pod and never an agent port; a
 * refused one is refused with 400 and a reason (the forwarded field is carried but never read
 * for the source: the verified connection names it). */
#include "fuzz.h"

#include "proxy/connect_req.h"
#include "proxy/proxy.h"

static void addr_or(const char *text, const char *dflt, struct moat_addr *a)
{
	if (!addr_parse(text, a))
		addr_parse(dflt, a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *method = fuzz_field(&data, &size, '\n');
	char *authority = fuzz_field(&data, &size, '\n');
	bool has_fwd = size > 0;
	char *forwarded = fuzz_field(&data, &size, '\n');
	char *local = fuzz_field(&data, &size, '\n');
	char *peer = fuzz_field(&data, &size, '\n');
	struct hbone_request r = {
		.method = method,
		.authority = authority,
		.forwarded = has_fwd ? forwarded : NULL,
		.peer_id = "spiffe://cluster.local/ns/default/sa/fuzz",
		.local_port = 15008,
		.peer_port = 40000,
	};
	addr_or(local, "10.1.0.2", &r.local_addr);
	addr_or(peer, "10.1.0.1", &r.peer_addr);

	struct moat_addr dst;
	uint16_t dport = 0;
	char why[600] = "";
	int refusal = hbone_connect_check(&r, &r.local_addr, 1, &dst, &dport, why, sizeof(why));
	if (refusal == 0) {
		FUZZ_ASSERT(strcmp(method, "CONNECT") == 0, "method %s accepted", method);
		FUZZ_ASSERT(addr_eq(&dst, &r.local_addr), "authority %s is not the pod", authority);
		FUZZ_ASSERT(!is_agent_port(dport), "agent port %u accepted", dport);
		const char *ps = strrchr(authority, ':') + 1;
		FUZZ_ASSERT(*ps && strspn(ps, "0123456789") == strlen(ps),
			    "authority %s: port is not digits only", authority);
		struct moat_addr again;
		uint16_t port2;
		FUZZ_ASSERT(addr_port_parse(authority, &again, &port2) && addr_eq(&again, &dst) &&
				    port2 == dport,
			    "authority %s parses differently", authority);
	} else {
		FUZZ_ASSERT(refusal == 400 && why[0], "refusal %d \"%s\"", refusal, why);
	}
	free(method);
	free(authority);
	free(forwarded);
	free(local);
	free(peer);
	return 0;
}
