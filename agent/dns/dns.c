/* Asynchronous DNS resolver: A and AAAA for one host, over UDP with TCP fallback on
 * truncation, to the nameservers of a resolv.conf.
 *
 * Each query runs two independent sub-queries (A, AAAA). A sub-query makes up to
 * attempts x nameservers tries, nameservers in order (glibc's order), each try with its own
 * socket: a fresh socket per try gets a fresh random source port from the kernel, and
 * connect() makes the kernel drop datagrams from any other source and report ICMP port
 * unreachable as ECONNREFUSED. A response counts only if its id, QR bit and question match
 * what we sent; anything else is ignored. The user's callback runs from the query's own
 * zero-delay timer once both sub-queries are done, never from inside dns_resolve() or a
 * socket callback, so callbacks may resolve, cancel or free the resolver.
 *
 * Everything about the packets is in the first half of this file (dns_msg.h); it parses
 * untrusted input and checks every length against the packet's end. */
#include "dns/dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "dns/dns_msg.h"

/* ======================================================================================
 * Messages
 * ====================================================================================== */

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

int dns_name_to_wire(const char *host, uint8_t out[DNS_NAME_WIRE_MAX], const char **why)
{
	size_t n = 0, hl = strlen(host);
	if (hl && host[hl - 1] == '.')
		hl--; /* absolute form */
	if (hl == 0) {
		*why = "empty name";
		return -1;
	}
	size_t start = 0;
	while (start <= hl) {
		size_t end = start;
		while (end < hl && host[end] != '.')
			end++;
		size_t ll = end - start;
		if (ll == 0) {
			*why = "empty label";
			return -1;
		}
		if (ll > 63) {
			*why = "label longer than 63 bytes";
			return -1;
		}
		if (n + 1 + ll + 1 > DNS_NAME_WIRE_MAX) {
			*why = "name longer than 255 bytes";
			return -1;
		}
		out[n++] = (uint8_t)ll;
		for (size_t i = start; i < end; i++) {
			unsigned char ch = (unsigned char)host[i];
			if (ch <= 0x20 || ch >= 0x7f || ch == '\\') {
				*why = "character not allowed in a host name";
				return -1;
			}
			out[n++] = (uint8_t)tolower(ch);
		}
		start = end + 1;
	}
	out[n++] = 0;
	return (int)n;
}

int dns_name_read(const uint8_t *pkt, size_t len, size_t *off, uint8_t out[DNS_NAME_WIRE_MAX],
		  size_t *out_len, const char **why)
{
	size_t pos = *off, run_start = *off, n = 0;
	bool jumped = false;
	for (;;) {
		if (pos >= len) {
			*why = "name runs past the end of the message";
			return -1;
		}
		uint8_t b = pkt[pos];
		if ((b & 0xc0) == 0xc0) {
			if (pos + 1 >= len) {
				*why = "compression pointer cut off";
				return -1;
			}
			size_t target = (size_t)(b & 0x3f) << 8 | pkt[pos + 1];
			/* Strictly before the labels read since the last jump: the run starts
			 * decrease at every jump, so a chain of pointers always ends. */
			if (target >= run_start) {
				*why = "compression pointer loops or points forward";
				return -1;
			}
			if (!jumped)
				*off = pos + 2;
			jumped = true;
			pos = run_start = target;
			continue;
		}
		if (b & 0xc0) {
			*why = "unsupported label type";
			return -1;
		}
		if (b == 0) {
			out[n++] = 0;
			if (!jumped)
				*off = pos + 1;
			*out_len = n;
			return 0;
		}
		if (pos + 1 + b > len) {
			*why = "label runs past the end of the message";
			return -1;
		}
		if (n + 1 + b + 1 > DNS_NAME_WIRE_MAX) {
			*why = "name longer than 255 bytes";
			return -1;
		}
		out[n++] = b;
		for (size_t i = 0; i < b; i++)
			out[n++] = (uint8_t)tolower(pkt[pos + 1 + i]);
		pos += 1 + (size_t)b;
	}
}

int dns_msg_query(uint8_t *buf, size_t cap, uint16_t id, const uint8_t *qname, size_t qname_len,
		  uint16_t qtype, bool edns)
{
	size_t need = 12 + qname_len + 4 + (edns ? 11 : 0);
	if (need > cap)
		return -1;
	memset(buf, 0, 12);
	put16(buf, id);
	put16(buf + 2, 0x0100); /* RD */
	put16(buf + 4, 1);      /* QDCOUNT */
	put16(buf + 10, edns ? 1 : 0);
	memcpy(buf + 12, qname, qname_len);
	uint8_t *p = buf + 12 + qname_len;
	put16(p, qtype);
	put16(p + 2, DNS_CLASS_IN);
	if (edns) {
		p += 4;
		p[0] = 0; /* root owner */
		put16(p + 1, DNS_TYPE_OPT);
		put16(p + 3, 1232); /* UDP payload size (the DNS flag day 2020 value) */
		memset(p + 5, 0, 6); /* extended rcode, version, flags, rdlength */
	}
	return (int)need;
}

struct rr {
	uint8_t owner[DNS_NAME_WIRE_MAX];
	size_t owner_len;
	uint16_t type, cls;
	uint32_t ttl;
	size_t rdata;   /* offset in the message */
	uint16_t rdlen;
};

/* One resource record at *off; checks it fits in the message. */
static int rr_read(const uint8_t *pkt, size_t len, size_t *off, struct rr *rr, const char **why)
{
	if (dns_name_read(pkt, len, off, rr->owner, &rr->owner_len, why) < 0)
		return -1;
	if (*off + 10 > len) {
		*why = "record header runs past the end of the message";
		return -1;
	}
	const uint8_t *p = pkt + *off;
	rr->type = get16(p);
	rr->cls = get16(p + 2);
	rr->ttl = get32(p + 4);
	if (rr->ttl > 0x7fffffffu) /* RFC 2181 8: treat as zero */
		rr->ttl = 0;
	rr->rdlen = get16(p + 8);
	rr->rdata = *off + 10;
	if (rr->rdata + rr->rdlen > len) {
		*why = "record data runs past the end of the message";
		return -1;
	}
	*off = rr->rdata + rr->rdlen;
	return 0;
}

static bool name_eq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

static void result_add(struct dns_msg_result *res, const struct moat_addr *a)
{
	for (size_t i = 0; i < res->n; i++)
		if (addr_eq(&res->addrs[i], a))
			return;
	if (res->n == res->cap) {
		res->cap = res->cap ? res->cap * 2 : 8;
		res->addrs = xrealloc(res->addrs, res->cap * sizeof(*res->addrs));
	}
	res->addrs[res->n++] = *a;
}

struct sections {
	size_t answers;   /* offset of the answer section */
	size_t authority; /* offset of the authority section */
	uint16_t ancount, nscount;
};

/* Walk the answer and authority sections once to check every record is well formed. */
static int sections_check(const uint8_t *pkt, size_t len, struct sections *sec, const char **why)
{
	size_t off = sec->answers;
	struct rr rr;
	for (unsigned i = 0; i < sec->ancount; i++)
		if (rr_read(pkt, len, &off, &rr, why) < 0)
			return -1;
	sec->authority = off;
	for (unsigned i = 0; i < sec->nscount; i++)
		if (rr_read(pkt, len, &off, &rr, why) < 0)
			return -1;
	return 0;
}

static uint32_t min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* The records of qtype owned by name (one hop of the chain); also the CNAME target if any. */
static int chain_hop(const uint8_t *pkt, size_t len, const struct sections *sec,
		     const uint8_t *name, size_t name_len, uint16_t qtype,
		     struct dns_msg_result *res, uint8_t *cname, size_t *cname_len,
		     uint32_t *cname_ttl, const char **why)
{
	size_t off = sec->answers;
	struct rr rr;
	*cname_len = 0;
	for (unsigned i = 0; i < sec->ancount; i++) {
		rr_read(pkt, len, &off, &rr, why); /* checked by sections_check */
		if (rr.cls != DNS_CLASS_IN || !name_eq(rr.owner, rr.owner_len, name, name_len))
			continue;
		if (rr.type == qtype) {
			struct moat_addr a;
			if (qtype == DNS_TYPE_A && rr.rdlen == 4) {
				uint32_t be;
				memcpy(&be, pkt + rr.rdata, 4);
				addr_from_v4(&a, be);
			} else if (qtype == DNS_TYPE_AAAA && rr.rdlen == 16) {
				memcpy(a.bytes, pkt + rr.rdata, 16);
				/* moat keeps IPv4 addresses in the mapped form: an AAAA record
				 * holding ::ffff:a.b.c.d would pass an IPv4 address off as an
				 * IPv6 answer. Not an IPv6 address: skip it. */
				if (addr_is_v4(&a))
					continue;
			} else {
				*why = "address record with a wrong length";
				return -1;
			}
			result_add(res, &a);
			res->ttl = min32(res->ttl, rr.ttl);
		} else if (rr.type == DNS_TYPE_CNAME && *cname_len == 0) {
			size_t roff = rr.rdata;
			if (dns_name_read(pkt, len, &roff, cname, cname_len, why) < 0)
				return -1;
			if (roff != rr.rdata + rr.rdlen) {
				*why = "CNAME data longer or shorter than its name";
				return -1;
			}
			*cname_ttl = rr.ttl;
		}
	}
	return 0;
}

/* RFC 2308: the negative TTL is min(SOA TTL, SOA MINIMUM); 30 s without an SOA. */
static int negative_ttl(const uint8_t *pkt, size_t len, const struct sections *sec,
			uint32_t *ttl, const char **why)
{
	size_t off = sec->authority;
	struct rr rr;
	for (unsigned i = 0; i < sec->nscount; i++) {
		rr_read(pkt, len, &off, &rr, why); /* checked by sections_check */
		if (rr.type != DNS_TYPE_SOA || rr.cls != DNS_CLASS_IN)
			continue;
		uint8_t name[DNS_NAME_WIRE_MAX];
		size_t name_len, roff = rr.rdata;
		if (dns_name_read(pkt, len, &roff, name, &name_len, why) < 0 || /* MNAME */
		    dns_name_read(pkt, len, &roff, name, &name_len, why) < 0)   /* RNAME */
			return -1;
		if (roff + 20 != rr.rdata + rr.rdlen) {
			*why = "SOA record with a wrong length";
			return -1;
		}
		uint32_t minimum = get32(pkt + roff + 16);
		if (minimum > 0x7fffffffu)
			minimum = 0;
		*ttl = min32(rr.ttl, minimum);
		return 0;
	}
	*ttl = DNS_DEFAULT_NEG_TTL;
	return 0;
}

static enum dns_parse_status malformed(struct dns_msg_result *res, const char *why)
{
	res->why = why;
	res->n = 0;
	return DNS_PARSE_MALFORMED;
}

/* Header and question: is this the answer to what we asked? */
static enum dns_parse_status check_header(const uint8_t *pkt, size_t len, uint16_t id,
					  const uint8_t *qname, size_t qname_len, uint16_t qtype,
					  size_t *after_question, struct dns_msg_result *res)
{
	if (len < 12) {
		res->why = "shorter than a DNS header";
		return DNS_PARSE_IGNORE;
	}
	if (get16(pkt) != id) {
		res->why = "transaction id differs";
		return DNS_PARSE_IGNORE;
	}
	if (!(pkt[2] & 0x80) || ((pkt[2] >> 3) & 0xf) != 0) {
		res->why = "not a response to a standard query";
		return DNS_PARSE_IGNORE;
	}
	if (get16(pkt + 4) != 1) {
		res->why = "question count is not 1";
		return DNS_PARSE_IGNORE;
	}
	uint8_t name[DNS_NAME_WIRE_MAX];
	size_t name_len, off = 12;
	const char *why;
	if (dns_name_read(pkt, len, &off, name, &name_len, &why) < 0 || off + 4 > len) {
		res->why = "question unreadable";
		return DNS_PARSE_IGNORE;
	}
	if (!name_eq(name, name_len, qname, qname_len) || get16(pkt + off) != qtype ||
	    get16(pkt + off + 2) != DNS_CLASS_IN) {
		res->why = "question differs";
		return DNS_PARSE_IGNORE;
	}
	*after_question = off + 4;
	return DNS_PARSE_OK;
}

/* Follow the CNAME chain from qname inside the answer section. */
static enum dns_parse_status follow_chain(const uint8_t *pkt, size_t len,
					  const struct sections *sec, const uint8_t *qname,
					  size_t qname_len, uint16_t qtype,
					  struct dns_msg_result *res)
{
	uint8_t target[DNS_NAME_WIRE_MAX], next[DNS_NAME_WIRE_MAX];
	size_t target_len = qname_len, next_len;
	uint32_t chain_ttl = UINT32_MAX, cname_ttl = 0;
	const char *why = NULL;
	memcpy(target, qname, qname_len);
	for (int hop = 0;; hop++) {
		if (chain_hop(pkt, len, sec, target, target_len, qtype, res, next, &next_len,
			      &cname_ttl, &why) < 0)
			return malformed(res, why);
		if (res->n || next_len == 0)
			break;
		if (hop == DNS_MAX_CNAME_HOPS)
			return malformed(res, "CNAME chain too long (or a loop)");
		chain_ttl = min32(chain_ttl, cname_ttl);
		memcpy(target, next, next_len);
		target_len = next_len;
	}
	if (!res->n) {
		uint32_t neg;
		if (negative_ttl(pkt, len, sec, &neg, &why) < 0)
			return malformed(res, why);
		res->ttl = neg;
	}
	res->ttl = min32(res->ttl, chain_ttl);
	return DNS_PARSE_OK;
}

enum dns_parse_status dns_msg_parse(const uint8_t *pkt, size_t len, uint16_t id,
				    const uint8_t *qname, size_t qname_len, uint16_t qtype,
				    bool accept_truncated, struct dns_msg_result *res)
{
	memset(res, 0, sizeof(*res));
	res->ttl = UINT32_MAX;
	struct sections sec = {0};
	enum dns_parse_status st =
		check_header(pkt, len, id, qname, qname_len, qtype, &sec.answers, res);
	if (st != DNS_PARSE_OK)
		return st;
	res->rcode = pkt[3] & 0xf;
	if ((pkt[2] & 0x02) && !accept_truncated)
		return DNS_PARSE_TRUNCATED;
	if (res->rcode != DNS_RCODE_NOERROR && res->rcode != DNS_RCODE_NXDOMAIN) {
		res->why = dns_rcode_name(res->rcode);
		return DNS_PARSE_SERVER_ERROR;
	}
	sec.ancount = get16(pkt + 6);
	sec.nscount = get16(pkt + 8);
	const char *why = NULL;
	if (sections_check(pkt, len, &sec, &why) < 0)
		return malformed(res, why);
	return follow_chain(pkt, len, &sec, qname, qname_len, qtype, res);
}

void dns_msg_result_free(struct dns_msg_result *res)
{
	free(res->addrs);
	res->addrs = NULL;
	res->n = res->cap = 0;
}

const char *dns_rcode_name(int rcode)
{
	static const char *names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
				      "NOTIMP", "REFUSED"};
	if (rcode >= 0 && (size_t)rcode < ARRAY_SIZE(names))
		return names[rcode];
	return "unexpected rcode";
}

const char *dns_type_name(uint16_t qtype)
{
	return qtype == DNS_TYPE_A ? "A" : qtype == DNS_TYPE_AAAA ? "AAAA" : "?";
}

/* ======================================================================================
 * Resolver
 * ====================================================================================== */

#define DNS_MAX_NS 3              /* as glibc: further nameserver lines are ignored */
#define DNS_DEFAULT_TIMEOUT_S 5
#define DNS_DEFAULT_ATTEMPTS 2
#define DNS_MAX_TIMEOUT_MS 30000
#define DNS_MAX_ATTEMPTS 5
#define DNS_LITERAL_TTL 86400     /* an IP literal never changes */
#define DNS_PARTIAL_TTL 30        /* one family failed: retry soon */
#define DNS_RX_MAX 65536

struct nameserver {
	struct sockaddr_storage sa;
	socklen_t salen;
	char name[ADDR_STRLEN + 8]; /* "10.0.0.2:53" */
};

enum sub_state { SUB_IDLE, SUB_UDP, SUB_TCP, SUB_DONE };

struct dns_query;

struct dns_sub {
	struct dns_query *q;
	uint16_t qtype;
	enum sub_state state;
	int tries;     /* started so far */
	int ns;        /* nameserver of the current try */
	uint16_t txid;
	int fd;
	struct loop_io io;
	struct loop_timer timer;
	uint8_t msg[2 + DNS_QUERY_MAX]; /* 2-byte TCP length prefix + query */
	size_t msg_len;                 /* query length, without the prefix */
	/* TCP exchange */
	bool tcp_connected;
	size_t tcp_sent;
	uint8_t tcp_hdr[2];
	uint8_t *tcp_in;
	size_t tcp_have, tcp_need;
	/* outcome */
	bool ok;
	struct dns_msg_result res;
	char error[320];
};

struct dns_query {
	struct dns_resolver *r;
	struct dns_query *prev, *next;
	uint64_t id;
	char *host;
	uint8_t qname[DNS_NAME_WIRE_MAX];
	size_t qname_len;
	dns_cb cb;
	void *arg;
	struct dns_sub sub[2];
	struct loop_timer finish;
	/* answered without the network */
	bool immediate;
	struct moat_addr literal;
	bool has_literal;
	char *immediate_error;
};

struct dns_resolver {
	struct loop *loop;
	struct nameserver ns[DNS_MAX_NS];
	int n_ns;
	uint32_t timeout_ms;
	int attempts;
	bool edns;
	struct dns_query *queries;
	uint64_t next_id;
	uint64_t rng;
	uint8_t *rx; /* DNS_RX_MAX bytes, shared by all UDP reads */
};

/* ---- configuration ---- */

static bool parse_nameserver(const char *text, struct nameserver *ns)
{
	struct moat_addr a;
	uint16_t port = 53;
	char buf[ADDR_STRLEN];
	uint32_t scope = 0;
	if (strlen(text) >= sizeof(buf))
		return false;
	strcpy(buf, text);
	char *pct = strchr(buf, '%');
	if (pct) { /* fe80::1%eth0 */
		*pct = 0;
		scope = if_nametoindex(pct + 1);
		if (!scope) {
			char *end;
			unsigned long v = strtoul(pct + 1, &end, 10);
			if (*end || !v)
				return false;
			scope = (uint32_t)v;
		}
	}
	/* moat extension for tests and labs: "127.0.0.1:5353", "[::1]:5353" */
	if (!addr_parse(buf, &a) && !addr_port_parse(buf, &a, &port))
		return false;
	ns->salen = addr_to_sockaddr(&a, port, &ns->sa);
	if (ns->sa.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&ns->sa)->sin6_scope_id = scope;
	addr_port_str(&a, port, ns->name, sizeof(ns->name));
	return true;
}

static bool option_value(const char *opt, const char *prefix, long lo, long hi, long *out)
{
	size_t pl = strlen(prefix);
	if (strncmp(opt, prefix, pl) != 0)
		return false;
	char *end;
	long v = strtol(opt + pl, &end, 10);
	if (end == opt + pl || *end)
		return false;
	*out = v < lo ? lo : v > hi ? hi : v;
	return true;
}

static void parse_options(struct dns_resolver *r, char *rest, const char *path, int line)
{
	long v;
	for (char *save = NULL, *opt = strtok_r(rest, " \t", &save); opt;
	     opt = strtok_r(NULL, " \t", &save)) {
		if (option_value(opt, "timeout:", 1, DNS_MAX_TIMEOUT_MS / 1000, &v))
			r->timeout_ms = (uint32_t)v * 1000;
		else if (option_value(opt, "timeout_ms:", 1, DNS_MAX_TIMEOUT_MS, &v))
			r->timeout_ms = (uint32_t)v; /* moat extension, glibc ignores it */
		else if (option_value(opt, "attempts:", 1, DNS_MAX_ATTEMPTS, &v))
			r->attempts = (int)v;
		else if (strcmp(opt, "edns0") == 0)
			r->edns = true;
		else
			log_debug("%s:%d: resolver option %s ignored", path, line, opt);
	}
}

static void parse_resolv_line(struct dns_resolver *r, char *text, const char *path, int line)
{
	text[strcspn(text, "#;")] = 0;
	char *save = NULL, *key = strtok_r(text, " \t\r", &save);
	if (!key)
		return;
	if (strcmp(key, "nameserver") == 0) {
		char *val = strtok_r(NULL, " \t\r", &save);
		if (!val) {
			log_warn("%s:%d: nameserver without an address ignored", path, line);
		} else if (r->n_ns == DNS_MAX_NS) {
			log_info("%s:%d: nameserver %s ignored: only the first %d are used", path,
				 line, val, DNS_MAX_NS);
		} else if (!parse_nameserver(val, &r->ns[r->n_ns])) {
			log_warn("%s:%d: nameserver \"%s\" is not an IP address; ignored", path,
				 line, val);
		} else {
			r->n_ns++;
		}
	} else if (strcmp(key, "options") == 0) {
		parse_options(r, save ? save : (char *)"", path, line);
	}
	/* search, domain, sortlist: not used (hosts are fully qualified) */
}

static int load_resolv_conf(struct dns_resolver *r, const char *path, struct err *e)
{
	char *text = read_file(path, NULL, e);
	if (!text)
		return err_wrap(e, "dns resolver: resolv.conf");
	int line = 1;
	for (char *p = text; p && *p; line++) {
		char *nl = strchr(p, '\n');
		if (nl)
			*nl = 0;
		parse_resolv_line(r, p, path, line);
		p = nl ? nl + 1 : NULL;
	}
	free(text);
	if (r->n_ns == 0) { /* glibc's default */
		parse_nameserver("127.0.0.1", &r->ns[0]);
		r->n_ns = 1;
		log_info("%s: no nameserver lines; using 127.0.0.1:53", path);
	}
	return 0;
}

/* ---- randomness ---- */

static uint64_t splitmix(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint16_t random_id(struct dns_resolver *r)
{
	uint16_t id;
	if (getrandom(&id, sizeof(id), GRND_NONBLOCK) == (ssize_t)sizeof(id))
		return id;
	return (uint16_t)splitmix(&r->rng);
}

/* ---- sub-queries ---- */

static void sub_next_try(struct dns_sub *s);
static void query_check_done(struct dns_query *q);

static struct nameserver *sub_ns(struct dns_sub *s)
{
	return &s->q->r->ns[s->ns];
}

static void sub_close(struct dns_sub *s)
{
	struct loop *l = s->q->r->loop;
	loop_io_del(l, &s->io);
	loop_timer_cancel(l, &s->timer);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	free(s->tcp_in);
	s->tcp_in = NULL;
}

static void sub_finish(struct dns_sub *s, bool ok)
{
	sub_close(s);
	s->ok = ok;
	s->state = SUB_DONE;
	query_check_done(s->q);
}

/* The current try failed: say why (naming the nameserver) and move on. */
static void sub_try_failed(struct dns_sub *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void sub_try_failed(struct dns_sub *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->error, sizeof(s->error), fmt, ap);
	va_end(ap);
	dns_msg_result_free(&s->res);
	sub_close(s);
	sub_next_try(s);
}

static void sub_on_timer(struct loop_timer *t)
{
	struct dns_sub *s = container_of(t, struct dns_sub, timer);
	sub_try_failed(s, "no answer from %s%s within %u ms", sub_ns(s)->name,
		       s->state == SUB_TCP ? " over TCP" : "", s->q->r->timeout_ms);
}

/* A complete response (UDP datagram or TCP message). */
static void sub_on_response(struct dns_sub *s, const uint8_t *pkt, size_t len, bool tcp);

static void sub_start_tcp(struct dns_sub *s);

static void sub_udp_read(struct dns_sub *s)
{
	struct dns_resolver *r = s->q->r;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(s->fd, r->rx, DNS_RX_MAX, 0, (struct sockaddr *)&from, &flen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			sub_try_failed(s, "%s: %s", sub_ns(s)->name,
				       errno == ECONNREFUSED ? "port unreachable (nothing listens)"
							     : strerror(errno));
			return;
		}
		/* connect() filters sources already; check anyway. */
		struct moat_addr fa, na;
		uint16_t fport, nport;
		addr_from_sockaddr((struct sockaddr *)&from, &fa, &fport);
		addr_from_sockaddr((struct sockaddr *)&sub_ns(s)->sa, &na, &nport);
		if (!addr_eq(&fa, &na) || fport != nport)
			continue;
		sub_on_response(s, r->rx, (size_t)n, false);
		if (s->state != SUB_UDP || s->fd < 0)
			return; /* finished, moved on, or switched to TCP */
	}
}

static void sub_tcp_io(struct dns_sub *s, uint32_t events);

static void sub_on_io(struct loop_io *io, uint32_t events)
{
	struct dns_sub *s = container_of(io, struct dns_sub, io);
	if (s->state == SUB_UDP)
		sub_udp_read(s);
	else if (s->state == SUB_TCP)
		sub_tcp_io(s, events);
}

static void sub_on_response(struct dns_sub *s, const uint8_t *pkt, size_t len, bool tcp)
{
	struct dns_query *q = s->q;
	const char *ns = sub_ns(s)->name;
	dns_msg_result_free(&s->res);
	enum dns_parse_status st = dns_msg_parse(pkt, len, s->txid, q->qname, q->qname_len,
						 s->qtype, tcp, &s->res);
	switch (st) {
	case DNS_PARSE_OK:
		sub_finish(s, true);
		return;
	case DNS_PARSE_IGNORE:
		if (tcp) /* a connection to the server we chose: a wrong answer is an error */
			sub_try_failed(s, "%s over TCP: answer does not match the query (%s)", ns,
				       s->res.why);
		else
			log_debug("dns %s %s: datagram from %s ignored: %s", q->host,
				  dns_type_name(s->qtype), ns, s->res.why);
		return;
	case DNS_PARSE_TRUNCATED:
		sub_start_tcp(s);
		return;
	case DNS_PARSE_SERVER_ERROR:
		sub_try_failed(s, "%s answered %s", ns, s->res.why);
		return;
	case DNS_PARSE_MALFORMED:
		sub_try_failed(s, "malformed answer from %s%s: %s", ns, tcp ? " over TCP" : "",
			       s->res.why);
		return;
	}
}

/* Open a socket of the nameserver's family, connected (or connecting) to it. */
static int sub_open(struct dns_sub *s, int type, const char **what)
{
	struct nameserver *ns = sub_ns(s);
	s->fd = socket(ns->sa.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		*what = "socket";
		return -1;
	}
	if (connect(s->fd, (struct sockaddr *)&ns->sa, ns->salen) < 0 && errno != EINPROGRESS) {
		*what = "connect";
		return -1;
	}
	return 0;
}

/* Send the query over UDP to the try's nameserver; -1 with s->error on failure. */
static int sub_udp_send(struct dns_sub *s)
{
	struct dns_query *q = s->q;
	struct dns_resolver *r = q->r;
	const char *what = "send";
	s->txid = random_id(r);
	int n = dns_msg_query(s->msg + 2, DNS_QUERY_MAX, s->txid, q->qname, q->qname_len,
			      s->qtype, r->edns);
	s->msg_len = (size_t)n; /* cannot fail: names are at most 255 bytes */
	if (sub_open(s, SOCK_DGRAM, &what) < 0 ||
	    send(s->fd, s->msg + 2, s->msg_len, MSG_NOSIGNAL) != (ssize_t)s->msg_len) {
		snprintf(s->error, sizeof(s->error), "%s %s: %s", what, sub_ns(s)->name,
			 strerror(errno));
		sub_close(s);
		return -1;
	}
	if (loop_io_add(r->loop, &s->io, s->fd, EPOLLIN, sub_on_io) < 0) {
		snprintf(s->error, sizeof(s->error), "epoll_ctl for %s: %s", sub_ns(s)->name,
			 strerror(errno));
		sub_close(s);
		return -1;
	}
	s->state = SUB_UDP;
	loop_timer_arm(r->loop, &s->timer, r->timeout_ms);
	return 0;
}

static void sub_next_try(struct dns_sub *s)
{
	struct dns_resolver *r = s->q->r;
	int max_tries = r->attempts * r->n_ns;
	while (s->tries < max_tries) {
		s->ns = s->tries % r->n_ns;
		s->tries++;
		if (sub_udp_send(s) == 0)
			return;
	}
	sub_finish(s, false);
}

/* ---- TCP fallback (RFC 7766): 2-byte length, then the message ---- */

static void sub_start_tcp(struct dns_sub *s)
{
	struct dns_resolver *r = s->q->r;
	const char *what = "";
	sub_close(s);
	s->state = SUB_TCP;
	s->tcp_connected = false;
	s->tcp_sent = 0;
	s->tcp_have = s->tcp_need = 0;
	put16(s->msg, (uint16_t)s->msg_len);
	if (sub_open(s, SOCK_STREAM, &what) < 0 ||
	    loop_io_add(r->loop, &s->io, s->fd, EPOLLOUT, sub_on_io) < 0) {
		sub_try_failed(s, "answer from %s truncated; TCP %s: %s", sub_ns(s)->name,
			       *what ? what : "epoll_ctl", strerror(errno));
		return;
	}
	loop_timer_arm(r->loop, &s->timer, r->timeout_ms);
}

static bool sub_tcp_send(struct dns_sub *s)
{
	if (!s->tcp_connected) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			sub_try_failed(s, "answer from %s truncated; TCP connect: %s",
				       sub_ns(s)->name, strerror(soerr));
			return false;
		}
		s->tcp_connected = true;
	}
	size_t total = s->msg_len + 2;
	while (s->tcp_sent < total) {
		ssize_t n = send(s->fd, s->msg + s->tcp_sent, total - s->tcp_sent, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return false;
		if (n < 0) {
			sub_try_failed(s, "%s over TCP: send: %s", sub_ns(s)->name,
				       strerror(errno));
			return false;
		}
		s->tcp_sent += (size_t)n;
	}
	if (loop_io_mod(s->q->r->loop, &s->io, EPOLLIN) < 0) {
		sub_try_failed(s, "%s over TCP: epoll_ctl: %s", sub_ns(s)->name, strerror(errno));
		return false;
	}
	return true;
}

/* Read what is there; true when the whole message has arrived. */
static bool sub_tcp_recv(struct dns_sub *s)
{
	for (;;) {
		uint8_t *dst;
		size_t want;
		if (!s->tcp_in) {
			dst = s->tcp_hdr + s->tcp_have;
			want = 2 - s->tcp_have;
		} else {
			dst = s->tcp_in + s->tcp_have;
			want = s->tcp_need - s->tcp_have;
		}
		ssize_t n = recv(s->fd, dst, want, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return false;
		if (n <= 0) {
			sub_try_failed(s, "%s over TCP: %s before the whole answer arrived",
				       sub_ns(s)->name, n == 0 ? "connection closed" : strerror(errno));
			return false;
		}
		s->tcp_have += (size_t)n;
		if (!s->tcp_in && s->tcp_have == 2) {
			s->tcp_need = get16(s->tcp_hdr);
			if (s->tcp_need < 12) {
				sub_try_failed(s, "malformed answer from %s over TCP: length %zu",
					       sub_ns(s)->name, s->tcp_need);
				return false;
			}
			s->tcp_in = xmalloc(s->tcp_need);
			s->tcp_have = 0;
		} else if (s->tcp_in && s->tcp_have == s->tcp_need) {
			return true;
		}
	}
}

static void sub_tcp_io(struct dns_sub *s, uint32_t events)
{
	(void)events;
	if (s->tcp_sent < s->msg_len + 2) {
		sub_tcp_send(s);
		return; /* the answer comes with a later EPOLLIN */
	}
	if (!sub_tcp_recv(s))
		return;
	uint8_t *msg = s->tcp_in;
	size_t len = s->tcp_need;
	s->tcp_in = NULL; /* sub_on_response may close the sub */
	sub_on_response(s, msg, len, true);
	free(msg);
}

/* ---- queries ---- */

static void query_unlink(struct dns_query *q)
{
	struct dns_resolver *r = q->r;
	if (q->prev)
		q->prev->next = q->next;
	else
		r->queries = q->next;
	if (q->next)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
}

static void query_free(struct dns_query *q)
{
	for (int i = 0; i < 2; i++) {
		sub_close(&q->sub[i]);
		dns_msg_result_free(&q->sub[i].res);
	}
	loop_timer_cancel(q->r->loop, &q->finish);
	free(q->immediate_error);
	free(q->host);
	free(q);
}

static void query_check_done(struct dns_query *q)
{
	if (q->sub[0].state == SUB_DONE && q->sub[1].state == SUB_DONE)
		loop_timer_arm(q->r->loop, &q->finish, 0);
}

/* Merge both sub-queries; returns the error text or NULL. */
static char *query_merge(struct dns_query *q, struct dns_answer *a)
{
	a->ttl = UINT32_MAX;
	a->n = 0;
	size_t total = q->sub[0].res.n + q->sub[1].res.n;
	a->addrs = total ? xcalloc(total, sizeof(*a->addrs)) : NULL;
	bool failed = false;
	for (int i = 0; i < 2; i++) {
		struct dns_sub *s = &q->sub[i];
		if (!s->ok) {
			failed = true;
			continue;
		}
		for (size_t k = 0; k < s->res.n; k++)
			a->addrs[a->n++] = s->res.addrs[k];
		a->ttl = min32(a->ttl, s->res.ttl);
	}
	if (!failed)
		return NULL;
	struct sbuf err;
	sbuf_init(&err);
	for (int i = 0; i < 2; i++) {
		struct dns_sub *s = &q->sub[i];
		if (!s->ok)
			sbuf_printf(&err, "%s%s %s: %s (%d %s)", err.len ? "; " : "", q->host,
				    dns_type_name(s->qtype), s->error, s->tries,
				    s->tries == 1 ? "try" : "tries");
	}
	if (a->n) {
		/* One family answered: use it, and come back soon for the other. */
		log_warn("dns: %s; using the %zu other address(es)", err.s, a->n);
		a->ttl = min32(a->ttl, DNS_PARTIAL_TTL);
		sbuf_free(&err);
		return NULL;
	}
	return sbuf_take(&err);
}

static void query_on_finish(struct loop_timer *t)
{
	struct dns_query *q = container_of(t, struct dns_query, finish);
	struct dns_answer a = {0};
	char *error = NULL;
	if (q->immediate) {
		error = q->immediate_error;
		q->immediate_error = NULL;
		if (q->has_literal) {
			a.addrs = xmalloc(sizeof(*a.addrs));
			a.addrs[0] = q->literal;
			a.n = 1;
			a.ttl = DNS_LITERAL_TTL;
		}
	} else {
		error = query_merge(q, &a);
	}
	dns_cb cb = q->cb;
	void *arg = q->arg;
	char *host = q->host;
	q->host = NULL;
	/* Forget the query before the callback: it may free the resolver. */
	query_unlink(q);
	query_free(q);
	cb(arg, host, error ? NULL : &a, error);
	free(a.addrs);
	free(error);
	free(host);
}

static void sub_init(struct dns_sub *s, struct dns_query *q, uint16_t qtype)
{
	s->q = q;
	s->qtype = qtype;
	s->state = SUB_IDLE;
	s->fd = -1;
	loop_io_init(&s->io);
	loop_timer_init(&s->timer, sub_on_timer);
}

uint64_t dns_resolve(struct dns_resolver *r, const char *host, dns_cb cb, void *arg)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	q->r = r;
	q->id = r->next_id++;
	q->host = xstrdup(host ? host : "");
	q->cb = cb;
	q->arg = arg;
	loop_timer_init(&q->finish, query_on_finish);
	sub_init(&q->sub[0], q, DNS_TYPE_A);
	sub_init(&q->sub[1], q, DNS_TYPE_AAAA);
	q->next = r->queries;
	if (r->queries)
		r->queries->prev = q;
	r->queries = q;

	const char *why = NULL;
	if (addr_parse(q->host, &q->literal)) {
		q->immediate = q->has_literal = true;
	} else {
		int n = dns_name_to_wire(q->host, q->qname, &why);
		if (n < 0) {
			q->immediate = true;
			q->immediate_error =
				xasprintf("resolve \"%s\": not a valid host name: %s", q->host, why);
		} else {
			q->qname_len = (size_t)n;
		}
	}
	if (q->immediate) {
		loop_timer_arm(r->loop, &q->finish, 0);
		return q->id;
	}
	sub_next_try(&q->sub[0]);
	sub_next_try(&q->sub[1]);
	return q->id;
}

void dns_cancel(struct dns_resolver *r, uint64_t id)
{
	for (struct dns_query *q = r->queries; q; q = q->next) {
		if (q->id == id) {
			query_unlink(q);
			query_free(q);
			return;
		}
	}
}

struct dns_resolver *dns_resolver_new(struct loop *l, const char *resolv_conf, struct err *e)
{
	struct dns_resolver *r = xcalloc(1, sizeof(*r));
	r->loop = l;
	r->timeout_ms = DNS_DEFAULT_TIMEOUT_S * 1000;
	r->attempts = DNS_DEFAULT_ATTEMPTS;
	r->next_id = 1;
	if (getrandom(&r->rng, sizeof(r->rng), GRND_NONBLOCK) != (ssize_t)sizeof(r->rng))
		r->rng = now_ns() ^ ((uint64_t)getpid() << 32);
	if (load_resolv_conf(r, resolv_conf, e) < 0) {
		free(r);
		return NULL;
	}
	r->rx = xmalloc(DNS_RX_MAX);
	return r;
}

void dns_resolver_free(struct dns_resolver *r)
{
	if (!r)
		return;
	while (r->queries) {
		struct dns_query *q = r->queries;
		query_unlink(q);
		query_free(q);
	}
	free(r->rx);
	free(r);
}
