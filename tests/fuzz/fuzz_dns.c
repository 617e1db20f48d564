/* Fuzz target: the DNS message parser (agent/dns: dns_msg_parse, dns_name_read,
 * dns_name_to_wire), i.e. what a nameserver (or anyone spoofing one) can send moatd.
 * Input: one flags byte, then the message.  flags bit 0: ask AAAA (else A); bit 1: a TCP
 * answer (truncation accepted); bit 7: the rest is a host name for dns_name_to_wire instead.
 * The question the parser checks against is taken from the message itself (its id and
 * question name), so the fuzzer gets past "not our answer" into the records.
 * Properties: OK results hold only addresses of the asked family, deduplicated; a name
 * encoded to wire form reads back as itself. */
#include "fuzz.h"

#include "dns/dns_msg.h"

static void check_result(const struct dns_msg_result *res, uint16_t qtype)
{
	for (size_t i = 0; i < res->n; i++) {
		FUZZ_ASSERT(addr_is_v4(&res->addrs[i]) == (qtype == DNS_TYPE_A),
			    "address %zu of the wrong family", i);
		for (size_t k = 0; k < i; k++)
			FUZZ_ASSERT(!addr_eq(&res->addrs[i], &res->addrs[k]), "duplicate %zu", i);
	}
	FUZZ_ASSERT(res->n <= res->cap, "n %zu > cap %zu", res->n, res->cap);
}

static void fuzz_message(const uint8_t *pkt, size_t len, uint8_t flags)
{
	uint16_t qtype = (flags & 1) ? DNS_TYPE_AAAA : DNS_TYPE_A;
	uint8_t qname[DNS_NAME_WIRE_MAX];
	size_t qname_len = 0, off = 12;
	const char *why = NULL;
	if (len < 12 || dns_name_read(pkt, len, &off, qname, &qname_len, &why) < 0) {
		static const uint8_t dflt[] = "\7example\3com";
		memcpy(qname, dflt, sizeof(dflt));
		qname_len = sizeof(dflt);
	} else {
		FUZZ_ASSERT(qname_len >= 1 && qname_len <= DNS_NAME_WIRE_MAX && off <= len,
			    "name length %zu, offset %zu of %zu", qname_len, off, len);
	}
	uint16_t id = len >= 2 ? (uint16_t)(pkt[0] << 8 | pkt[1]) : 0;
	struct dns_msg_result res;
	enum dns_parse_status st =
		dns_msg_parse(pkt, len, id, qname, qname_len, qtype, flags & 2, &res);
	if (getenv("FUZZ_VERBOSE")) /* corpus upkeep: which outcome each input reaches */
		fprintf(stderr, "fuzz_dns: status %d, %zu addresses, ttl %u: %s\n", st, res.n,
			res.ttl, res.why ? res.why : "");
	if (st == DNS_PARSE_OK)
		check_result(&res, qtype);
	else
		FUZZ_ASSERT(res.why || st == DNS_PARSE_TRUNCATED, "status %d without a reason", st);
	dns_msg_result_free(&res);
}

static void fuzz_name(const uint8_t *data, size_t size)
{
	char *host = fuzz_cstr(data, size);
	uint8_t wire[DNS_NAME_WIRE_MAX];
	const char *why = NULL;
	int n = dns_name_to_wire(host, wire, &why);
	if (n < 0) {
		FUZZ_ASSERT(why, "refused \"%s\" without a reason", host);
		free(host);
		return;
	}
	FUZZ_ASSERT(n >= 2 && n <= DNS_NAME_WIRE_MAX, "wire length %d", n);
	/* Read it back as the question of a message: the same labels, lower-cased. */
	uint8_t pkt[12 + DNS_NAME_WIRE_MAX] = {0}, back[DNS_NAME_WIRE_MAX];
	memcpy(pkt + 12, wire, (size_t)n);
	size_t off = 12, back_len = 0;
	FUZZ_ASSERT(dns_name_read(pkt, 12 + (size_t)n, &off, back, &back_len, &why) == 0,
		    "own encoding of \"%s\" unreadable: %s", host, why);
	FUZZ_ASSERT(back_len == (size_t)n && memcmp(back, wire, back_len) == 0 &&
			    off == 12 + (size_t)n,
		    "\"%s\" reads back differently", host);
	free(host);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 0x80)
		fuzz_name(data + 1, size - 1);
	else
		fuzz_message(data + 1, size - 1, data[0]);
	return 0;
}
