/* DNS message encoding and decoding (RFC 1035), private to the dns room; declared here so the
 * unit tests can drive the parser directly with hostile input. Names are handled in wire
 * form (length-prefixed labels, lower-cased, root label included, at most 255 bytes) so a
 * label that contains a dot can never be confused with two labels. */
#ifndef MOAT_DNS_MSG_H
#define MOAT_DNS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

#define DNS_TYPE_A 1
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_SOA 6
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_OPT 41
#define DNS_CLASS_IN 1

#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_FORMERR 1
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3
#define DNS_RCODE_NOTIMP 4
#define DNS_RCODE_REFUSED 5

#define DNS_NAME_WIRE_MAX 255
#define DNS_QUERY_MAX 512       /* a question for a name of at most 255 bytes fits */
#define DNS_MAX_CNAME_HOPS 16
#define DNS_DEFAULT_NEG_TTL 30  /* NXDOMAIN / NODATA without an SOA */

/* Text name ("www.example.com", trailing dot optional) -> wire form. Returns the length,
 * or -1 with *why set (empty label, label > 63 bytes, name > 255 bytes, bad character). */
int dns_name_to_wire(const char *host, uint8_t out[DNS_NAME_WIRE_MAX], const char **why);

/* Read a possibly compressed name at *off. On success stores the wire form (lower-cased) in
 * out, its length in *out_len, advances *off past the name as it appears at *off, returns
 * 0. Returns -1 with *why on truncation, bad label types, a name over 255 bytes, or a
 * compression pointer that does not point strictly before the run of labels it ends
 * (which rules out loops). */
int dns_name_read(const uint8_t *pkt, size_t len, size_t *off, uint8_t out[DNS_NAME_WIRE_MAX],
		  size_t *out_len, const char **why);

/* Encode a recursive query (RD=1) for qname (wire form); with edns an OPT record offers a
 * 1232-byte UDP payload. Returns the length, or -1 if cap is too small. */
int dns_msg_query(uint8_t *buf, size_t cap, uint16_t id, const uint8_t *qname, size_t qname_len,
		  uint16_t qtype, bool edns);

enum dns_parse_status {
	DNS_PARSE_OK,           /* rcode NOERROR or NXDOMAIN; addrs/ttl filled */
	DNS_PARSE_IGNORE,       /* not the answer to our question (id, QR, question differ) */
	DNS_PARSE_TRUNCATED,    /* TC=1: ask again over TCP */
	DNS_PARSE_SERVER_ERROR, /* rcode SERVFAIL, REFUSED, ...: ask another server */
	DNS_PARSE_MALFORMED,    /* ours, but broken: ask another server */
};

struct dns_msg_result {
	int rcode;
	struct moat_addr *addrs; /* records of qtype at the end of the CNAME chain, deduplicated */
	size_t n, cap;
	uint32_t ttl;            /* min TTL of the chain + records, or the negative TTL */
	const char *why;         /* reason for IGNORE / MALFORMED (static text) */
};

/* Check and decode a response to the question (qname, qtype, class IN) sent with id.
 * accept_truncated: parse even when TC=1 (a TCP answer). The result's addrs must be freed
 * with dns_msg_result_free whatever the status. */
enum dns_parse_status dns_msg_parse(const uint8_t *pkt, size_t len, uint16_t id,
				    const uint8_t *qname, size_t qname_len, uint16_t qtype,
				    bool accept_truncated, struct dns_msg_result *res);
void dns_msg_result_free(struct dns_msg_result *res);
const char *dns_rcode_name(int rcode);
const char *dns_type_name(uint16_t qtype);

#endif
