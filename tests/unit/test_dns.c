/* The DNS resolver against fake nameservers on 127.0.0.1 (UDP and TCP sockets on the same
 * loop, answering crafted responses), and the message parser against hostile packets. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "core/util.h"
#include "dns/dns.h"
#include "dns/dns_msg.h"
#include "test.h"

/* ---- crafting packets ---- */

struct pkt {
	uint8_t b[16384];
	size_t n;
};

static void p8(struct pkt *p, uint8_t v)
{
	if (p->n < sizeof(p->b))
		p->b[p->n++] = v;
}

static void p16(struct pkt *p, uint16_t v)
{
	p8(p, (uint8_t)(v >> 8));
	p8(p, (uint8_t)v);
}

static void p32(struct pkt *p, uint32_t v)
{
	p16(p, (uint16_t)(v >> 16));
	p16(p, (uint16_t)v);
}

/* Uncompressed name; returns its offset (for later pointers). */
static size_t pname(struct pkt *p, const char *name)
{
	size_t at = p->n;
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t len = dot ? (size_t)(dot - name) : strlen(name);
		p8(p, (uint8_t)len);
		for (size_t i = 0; i < len; i++)
			p8(p, (uint8_t)name[i]);
		name += len + (dot ? 1 : 0);
	}
	p8(p, 0);
	return at;
}

static void pptr(struct pkt *p, size_t off)
{
	p16(p, (uint16_t)(0xc000 | off));
}

/* Header; flags beyond QR|RD|RA (0x8180) and the rcode. */
static void phdr(struct pkt *p, uint16_t id, uint16_t extra_flags, int rcode, uint16_t an,
		 uint16_t ns)
{
	p->n = 0;
	p16(p, id);
	p16(p, (uint16_t)(0x8180 | extra_flags | rcode));
	p16(p, 1);
	p16(p, an);
	p16(p, ns);
	p16(p, 0);
}

static void pquestion(struct pkt *p, const char *name, uint16_t type)
{
	pname(p, name);
	p16(p, type);
	p16(p, DNS_CLASS_IN);
}

/* Record whose owner is the question name (pointer to offset 12) or a text name. */
static void prr_head(struct pkt *p, const char *owner, uint16_t type, uint32_t ttl)
{
	if (owner)
		pname(p, owner);
	else
		pptr(p, 12);
	p16(p, type);
	p16(p, DNS_CLASS_IN);
	p32(p, ttl);
}

static void prr_a(struct pkt *p, const char *owner, uint32_t ttl, const char *ip)
{
	struct in_addr a;
	inet_pton(AF_INET, ip, &a);
	prr_head(p, owner, DNS_TYPE_A, ttl);
	p16(p, 4);
	memcpy(p->b + p->n, &a, 4);
	p->n += 4;
}

static void prr_aaaa(struct pkt *p, const char *owner, uint32_t ttl, const char *ip)
{
	struct in6_addr a;
	inet_pton(AF_INET6, ip, &a);
	prr_head(p, owner, DNS_TYPE_AAAA, ttl);
	p16(p, 16);
	memcpy(p->b + p->n, &a, 16);
	p->n += 16;
}

/* CNAME with an uncompressed target; returns the target's offset. */
static size_t prr_cname(struct pkt *p, const char *owner, uint32_t ttl, const char *target)
{
	prr_head(p, owner, DNS_TYPE_CNAME, ttl);
	size_t len_at = p->n;
	p16(p, 0);
	size_t at = pname(p, target);
	p->b[len_at] = (uint8_t)((p->n - at) >> 8);
	p->b[len_at + 1] = (uint8_t)(p->n - at);
	return at;
}

static void prr_soa(struct pkt *p, const char *zone, uint32_t ttl, uint32_t minimum)
{
	prr_head(p, zone, DNS_TYPE_SOA, ttl);
	size_t len_at = p->n;
	p16(p, 0);
	size_t start = p->n;
	pname(p, "ns1.example.com");
	pname(p, "hostmaster.example.com");
	p32(p, 2026112201);
	p32(p, 7200);
	p32(p, 3600);
	p32(p, 1209600);
	p32(p, minimum);
	p->b[len_at] = (uint8_t)((p->n - start) >> 8);
	p->b[len_at + 1] = (uint8_t)(p->n - start);
}

/* ---- fake nameserver ---- */

struct qin {
	uint16_t id, qtype;
	char name[256];
};

struct fake_ns;
/* Fill out and return true to answer; return false to stay silent. */
typedef bool (*answer_fn)(struct fake_ns *f, const struct qin *q, bool tcp, struct pkt *out);

struct tcp_peer {
	struct fake_ns *f;
	int fd;
	struct loop_io io;
	uint8_t buf[600];
	size_t have;
};

struct fake_ns {
	struct loop *loop;
	int udp, tcp;
	struct loop_io uio, tio;
	struct tcp_peer peers[4];
	uint16_t port;
	answer_fn answer;
	int udp_queries, tcp_queries;
	uint16_t ids[64];
	int n_ids;
	struct sockaddr_in peer; /* source of the last UDP query */
};

static bool parse_qin(const uint8_t *b, size_t n, struct qin *q)
{
	if (n < 17)
		return false;
	q->id = (uint16_t)(b[0] << 8 | b[1]);
	size_t off = 12, out = 0;
	while (off < n && b[off]) {
		size_t l = b[off];
		if (l > 63 || off + 1 + l >= n || out + l + 1 >= sizeof(q->name))
			return false;
		if (out)
			q->name[out++] = '.';
		memcpy(q->name + out, b + off + 1, l);
		out += l;
		off += 1 + l;
	}
	q->name[out] = 0;
	if (off + 5 > n)
		return false;
	q->qtype = (uint16_t)(b[off + 1] << 8 | b[off + 2]);
	return true;
}

static void fake_udp_io(struct loop_io *io, uint32_t events)
{
	struct fake_ns *f = container_of(io, struct fake_ns, uio);
	(void)events;
	uint8_t buf[2048];
	socklen_t sl = sizeof(f->peer);
	ssize_t n = recvfrom(f->udp, buf, sizeof(buf), 0, (struct sockaddr *)&f->peer, &sl);
	struct qin q;
	if (n <= 0 || !parse_qin(buf, (size_t)n, &q))
		return;
	f->udp_queries++;
	if (f->n_ids < 64)
		f->ids[f->n_ids++] = q.id;
	struct pkt *out = xcalloc(1, sizeof(*out));
	if (f->answer && f->answer(f, &q, false, out))
		sendto(f->udp, out->b, out->n, 0, (struct sockaddr *)&f->peer, sizeof(f->peer));
	free(out);
}

static void fake_send(struct fake_ns *f, const struct pkt *p)
{
	sendto(f->udp, p->b, p->n, 0, (struct sockaddr *)&f->peer, sizeof(f->peer));
}

static void peer_close(struct tcp_peer *tp)
{
	loop_io_del(tp->f->loop, &tp->io);
	close(tp->fd);
	tp->fd = -1;
}

static void fake_tcp_peer_io(struct loop_io *io, uint32_t events)
{
	struct tcp_peer *tp = container_of(io, struct tcp_peer, io);
	(void)events;
	ssize_t n = recv(tp->fd, tp->buf + tp->have, sizeof(tp->buf) - tp->have, 0);
	if (n <= 0) {
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			peer_close(tp);
		return;
	}
	tp->have += (size_t)n;
	if (tp->have < 2 || tp->have < 2u + (size_t)(tp->buf[0] << 8 | tp->buf[1]))
		return;
	struct qin q;
	struct fake_ns *f = tp->f;
	if (!parse_qin(tp->buf + 2, tp->have - 2, &q)) {
		peer_close(tp);
		return;
	}
	f->tcp_queries++;
	struct pkt *out = xcalloc(1, sizeof(*out));
	if (f->answer && f->answer(f, &q, true, out)) {
		uint8_t len[2] = {(uint8_t)(out->n >> 8), (uint8_t)out->n};
		CHECK(send(tp->fd, len, 2, MSG_NOSIGNAL) == 2);
		CHECK(send(tp->fd, out->b, out->n, MSG_NOSIGNAL) == (ssize_t)out->n);
	}
	free(out);
	tp->have = 0;
}

static void fake_tcp_accept(struct loop_io *io, uint32_t events)
{
	struct fake_ns *f = container_of(io, struct fake_ns, tio);
	(void)events;
	int fd = accept4(f->tcp, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(f->peers); i++) {
		struct tcp_peer *tp = &f->peers[i];
		if (tp->fd < 0) {
			tp->f = f;
			tp->fd = fd;
			tp->have = 0;
			loop_io_init(&tp->io);
			loop_io_add(f->loop, &tp->io, fd, EPOLLIN, fake_tcp_peer_io);
			return;
		}
	}
	close(fd);
}

/* UDP and TCP on the same 127.0.0.1 port. */
static bool fake_start(struct fake_ns *f, struct loop *l, answer_fn answer)
{
	memset(f, 0, sizeof(*f));
	f->loop = l;
	f->answer = answer;
	f->udp = f->tcp = -1;
	loop_io_init(&f->uio);
	loop_io_init(&f->tio);
	for (size_t i = 0; i < ARRAY_SIZE(f->peers); i++)
		f->peers[i].fd = -1;
	for (int attempt = 0; attempt < 20; attempt++) {
		struct sockaddr_in sa = {.sin_family = AF_INET};
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t sl = sizeof(sa);
		f->udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (f->udp < 0 || bind(f->udp, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    getsockname(f->udp, (struct sockaddr *)&sa, &sl) < 0)
			return false;
		f->port = ntohs(sa.sin_port);
		f->tcp = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		int one = 1;
		setsockopt(f->tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(f->tcp, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(f->tcp, 8) == 0)
			break;
		close(f->udp);
		close(f->tcp);
		f->udp = f->tcp = -1;
	}
	if (f->udp < 0)
		return false;
	loop_io_add(l, &f->uio, f->udp, EPOLLIN, fake_udp_io);
	loop_io_add(l, &f->tio, f->tcp, EPOLLIN, fake_tcp_accept);
	return true;
}

static void fake_stop(struct fake_ns *f)
{
	for (size_t i = 0; i < ARRAY_SIZE(f->peers); i++)
		if (f->peers[i].fd >= 0)
			peer_close(&f->peers[i]);
	if (f->udp >= 0) {
		loop_io_del(f->loop, &f->uio);
		close(f->udp);
	}
	if (f->tcp >= 0) {
		loop_io_del(f->loop, &f->tio);
		close(f->tcp);
	}
	f->udp = f->tcp = -1;
}

/* ---- resolver side ---- */

struct dctx {
	struct loop *loop;
	struct loop_timer guard;
	int pending;
	int conf_fd;
	char conf[64];
};

struct waiter {
	struct dctx *ctx;
	int calls;
	bool ok;
	struct moat_addr addrs[128];
	size_t n;
	uint32_t ttl;
	char error[1024];
	char host[256];
	uint64_t t_start, t_done;
};

static void guard_fired(struct loop_timer *t)
{
	loop_stop(container_of(t, struct dctx, guard)->loop);
}

/* The resolv.conf lives in a memfd (read through /proc/self/fd): nothing is left on disk
 * when a test stops early. */
static bool dctx_init(struct dctx *c)
{
	memset(c, 0, sizeof(*c));
	c->loop = loop_new();
	loop_timer_init(&c->guard, guard_fired);
	c->conf_fd = memfd_create("resolv.conf", MFD_CLOEXEC);
	if (c->conf_fd < 0)
		return false;
	snprintf(c->conf, sizeof(c->conf), "/proc/self/fd/%d", c->conf_fd);
	return true;
}

static void dctx_fini(struct dctx *c)
{
	loop_timer_cancel(c->loop, &c->guard);
	if (c->conf_fd >= 0)
		close(c->conf_fd);
	loop_free(c->loop);
}

static bool write_conf(struct dctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool write_conf(struct dctx *c, const char *fmt, ...)
{
	struct sbuf b;
	sbuf_init(&b);
	va_list ap;
	va_start(ap, fmt);
	sbuf_vprintf(&b, fmt, ap);
	va_end(ap);
	bool ok = ftruncate(c->conf_fd, 0) == 0 &&
		  pwrite(c->conf_fd, b.s, b.len, 0) == (ssize_t)b.len;
	sbuf_free(&b);
	return ok;
}

static struct dns_resolver *resolver(struct dctx *c)
{
	struct err e = {{0}};
	struct dns_resolver *r = dns_resolver_new(c->loop, c->conf, &e);
	if (!r)
		printf("    dns_resolver_new: %s\n", e.msg);
	return r;
}

static void on_answer(void *arg, const char *host, const struct dns_answer *a, const char *error)
{
	struct waiter *w = arg;
	w->calls++;
	w->t_done = now_ms();
	snprintf(w->host, sizeof(w->host), "%s", host);
	if (error) {
		w->ok = false;
		snprintf(w->error, sizeof(w->error), "%s", error);
		CHECK(a == NULL);
	} else {
		w->ok = true;
		CHECK(a != NULL);
		if (a) {
			w->n = a->n < ARRAY_SIZE(w->addrs) ? a->n : ARRAY_SIZE(w->addrs);
			if (w->n)
				memcpy(w->addrs, a->addrs, w->n * sizeof(*a->addrs));
			w->ttl = a->ttl;
		}
	}
	if (--w->ctx->pending == 0)
		loop_stop(w->ctx->loop);
}

static uint64_t start(struct dctx *c, struct dns_resolver *r, const char *host, struct waiter *w)
{
	memset(w, 0, sizeof(*w));
	w->ctx = c;
	w->t_start = now_ms();
	c->pending++;
	return dns_resolve(r, host, on_answer, w);
}

static void run(struct dctx *c, uint32_t max_ms)
{
	loop_timer_arm(c->loop, &c->guard, max_ms);
	loop_run(c->loop);
	loop_timer_cancel(c->loop, &c->guard);
}

static bool has_addr(const struct waiter *w, const char *ip)
{
	struct moat_addr a;
	if (!addr_parse(ip, &a))
		return false;
	for (size_t i = 0; i < w->n; i++)
		if (addr_eq(&w->addrs[i], &a))
			return true;
	return false;
}

/* ---- scenarios ---- */

static bool answer_basic(struct fake_ns *f, const struct qin *q, bool tcp, struct pkt *p)
{
	(void)f;
	(void)tcp;
	if (q->qtype == DNS_TYPE_A) {
		phdr(p, q->id, 0, 0, 2, 0);
		pquestion(p, q->name, q->qtype);
		prr_a(p, NULL, 300, "192.0.2.1");
		prr_a(p, NULL, 200, "192.0.2.2");
	} else {
		phdr(p, q->id, 0, 0, 1, 0);
		pquestion(p, q->name, q->qtype);
		prr_aaaa(p, NULL, 120, "2001:db8::1");
	}
	return true;
}

TEST(dns_a_and_aaaa)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns f;
	REQUIRE(fake_start(&f, c.loop, answer_basic));
	REQUIRE(write_conf(&c, "# test\nnameserver 127.0.0.1:%u\noptions timeout:2\n", f.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter w;
	uint64_t id = start(&c, r, "API.Example.com.", &w);
	CHECK(id > 0);
	CHECK_INT(w.calls, 0); /* never synchronous */
	run(&c, 3000);
	CHECK_INT(w.calls, 1);
	CHECK_MSG(w.ok, "error: %s", w.error);
	CHECK_STR(w.host, "API.Example.com.");
	CHECK_INT(w.n, 3);
	CHECK(has_addr(&w, "192.0.2.1") && has_addr(&w, "192.0.2.2") && has_addr(&w, "2001:db8::1"));
	CHECK_INT(w.ttl, 120);
	CHECK_INT(f.udp_queries, 2);
	CHECK_INT(f.tcp_queries, 0);
	dns_resolver_free(r);
	fake_stop(&f);
	dctx_fini(&c);
}

static bool answer_cname(struct fake_ns *f, const struct qin *q, bool tcp, struct pkt *p)
{
	(void)f;
	(void)tcp;
	phdr(p, q->id, 0, 0, 5, 0);
	pquestion(p, q->name, q->qtype);
	/* decoy first: an address for a name outside the chain must not be used */
	prr_a(p, "evil.example", 9999, "6.6.6.6");
	size_t t1 = prr_cname(p, NULL, 600, "a.example.net");
	/* second hop owned by a pointer to the first target; target partly compressed */
	pptr(p, t1);
	p16(p, DNS_TYPE_CNAME);
	p16(p, DNS_CLASS_IN);
	p32(p, 50);
	p16(p, 4);
	size_t t2 = p->n;
	p8(p, 1);
	p8(p, 'b');
	pptr(p, t1 + 2); /* "b" + "example.net" */
	(void)t2;
	if (q->qtype == DNS_TYPE_A) {
		/* owner "B.example.NET" in another case, uncompressed */
		prr_a(p, "B.example.NET", 300, "192.0.2.7");
		prr_a(p, "c.example.net", 300, "6.6.6.7"); /* not on the chain */
	} else {
		pptr(p, t2);
		p16(p, DNS_TYPE_AAAA);
		p16(p, DNS_CLASS_IN);
		p32(p, 100);
		p16(p, 16);
		struct in6_addr a6;
		inet_pton(AF_INET6, "2001:db8::7", &a6);
		memcpy(p->b + p->n, &a6, 16);
		p->n += 16;
		prr_a(p, "x.example", 1, "6.6.6.8");
	}
	return true;
}

TEST(dns_cname_chain_followed)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns f;
	REQUIRE(fake_start(&f, c.loop, answer_cname));
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\n", f.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter w;
	start(&c, r, "www.example.com", &w);
	run(&c, 3000);
	CHECK_INT(w.calls, 1);
	CHECK_MSG(w.ok, "error: %s", w.error);
	CHECK_INT(w.n, 2);
	CHECK(has_addr(&w, "192.0.2.7"));
	CHECK(has_addr(&w, "2001:db8::7"));
	CHECK(!has_addr(&w, "6.6.6.6") && !has_addr(&w, "6.6.6.7"));
	CHECK_INT(w.ttl, 50); /* the second CNAME */
	dns_resolver_free(r);
	fake_stop(&f);
	dctx_fini(&c);
}

static bool answer_negative(struct fake_ns *f, const struct qin *q, bool tcp, struct pkt *p)
{
	(void)f;
	(void)tcp;
	if (strcmp(q->name, "gone.example.com") == 0) {
		phdr(p, q->id, 0, DNS_RCODE_NXDOMAIN, 0, 1);
		pquestion(p, q->name, q->qtype);
		prr_soa(p, "example.com", 3600, 45);
	} else if (strcmp(q->name, "ttl.example.com") == 0) {
		if (q->qtype == DNS_TYPE_A) {
			phdr(p, q->id, 0, 0, 3, 0);
			pquestion(p, q->name, q->qtype);
			prr_a(p, NULL, 300, "192.0.2.1");
			prr_a(p, NULL, 100, "192.0.2.2");
			prr_a(p, NULL, 200, "192.0.2.3");
		} else { /* NODATA, negative TTL min(3600, 900) */
			phdr(p, q->id, 0, 0, 0, 1);
			pquestion(p, q->name, q->qtype);
			prr_soa(p, "example.com", 3600, 900);
		}
	} else if (strcmp(q->name, "soa-ttl.example.com") == 0) {
		phdr(p, q->id, 0, 0, 0, 1); /* NODATA, SOA TTL below its minimum */
		pquestion(p, q->name, q->qtype);
		prr_soa(p, "example.com", 20, 900);
	} else { /* NODATA without SOA */
		phdr(p, q->id, 0, 0, 0, 0);
		pquestion(p, q->name, q->qtype);
	}
	return true;
}

TEST(dns_nxdomain_nodata_negative_ttl)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns f;
	REQUIRE(fake_start(&f, c.loop, answer_negative));
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\n", f.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter nx, nodata, soa;
	start(&c, r, "gone.example.com", &nx);
	start(&c, r, "nothing.example.com", &nodata);
	start(&c, r, "soa-ttl.example.com", &soa);
	run(&c, 3000);
	CHECK_INT(nx.calls, 1);
	CHECK_MSG(nx.ok, "NXDOMAIN is an answer, got error %s", nx.error);
	CHECK_INT(nx.n, 0);
	CHECK_INT(nx.ttl, 45);
	CHECK(nodata.ok);
	CHECK_INT(nodata.n, 0);
	CHECK_INT(nodata.ttl, 30);
	CHECK(soa.ok);
	CHECK_INT(soa.ttl, 20);
	dns_resolver_free(r);
	fake_stop(&f);
	dctx_fini(&c);
}

TEST(dns_ttl_is_minimum_of_records)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns f;
	REQUIRE(fake_start(&f, c.loop, answer_negative));
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\n", f.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter w;
	start(&c, r, "ttl.example.com", &w);
	run(&c, 3000);
	CHECK(w.ok);
	CHECK_INT(w.n, 3);
	CHECK_INT(w.ttl, 100);
	dns_resolver_free(r);
	fake_stop(&f);
	dctx_fini(&c);
}

static bool answer_truncated(struct fake_ns *f, const struct qin *q, bool tcp, struct pkt *p)
{
	(void)f;
	if (!tcp) {
		phdr(p, q->id, 0x0200, 0, 0, 0); /* TC */
		pquestion(p, q->name, q->qtype);
		return true;
	}
	if (q->qtype == DNS_TYPE_AAAA) {
		phdr(p, q->id, 0, 0, 0, 1);
		pquestion(p, q->name, q->qtype);
		prr_soa(p, "example.com", 3600, 900);
		return true;
	}
	phdr(p, q->id, 0, 0, 60, 0);
	pquestion(p, q->name, q->qtype);
	for (int i = 0; i < 60; i++) {
		char ip[32];
		snprintf(ip, sizeof(ip), "10.9.0.%d", i + 1);
		prr_a(p, NULL, 600 - (uint32_t)i, ip);
	}
	return true;
}

TEST(dns_truncated_falls_back_to_tcp)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns f;
	REQUIRE(fake_start(&f, c.loop, answer_truncated));
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\noptions timeout:2 attempts:1\n", f.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter w;
	start(&c, r, "many.example.com", &w);
	run(&c, 4000);
	CHECK_INT(w.calls, 1);
	CHECK_MSG(w.ok, "error: %s", w.error);
	CHECK_INT(w.n, 60);
	CHECK(has_addr(&w, "10.9.0.1") && has_addr(&w, "10.9.0.60"));
	CHECK_INT(w.ttl, 541);
	CHECK_INT(f.udp_queries, 2);
	CHECK_INT(f.tcp_queries, 2);
	dns_resolver_free(r);
	fake_stop(&f);
	dctx_fini(&c);
}

/* Before the real answer: a wrong id, another question, a query instead of a response,
 * and a spoof from another port; only the real answer counts. */
static bool answer_with_noise(struct fake_ns *f, const struct qin *q, bool tcp, struct pkt *p)
{
	(void)tcp;
	phdr(p, (uint16_t)(q->id + 1), 0, 0, 1, 0);
	pquestion(p, q->name, q->qtype);
	prr_a(p, NULL, 300, "6.6.6.1");
	fake_send(f, p);
	phdr(p, q->id, 0, 0, 1, 0);
	pquestion(p, "other.example.com", q->qtype);
	prr_a(p, NULL, 300, "6.6.6.2");
	fake_send(f, p);
	phdr(p, q->id, 0, 0, 1, 0);
	p->b[2] &= 0x7f; /* QR = 0 */
	pquestion(p, q->name, q->qtype);
	prr_a(p, NULL, 300, "6.6.6.3");
	fake_send(f, p);
	phdr(p, q->id, 0, 0, 1, 0);
	pquestion(p, q->name, DNS_TYPE_AAAA + DNS_TYPE_A - q->qtype); /* other type */
	prr_a(p, NULL, 300, "6.6.6.4");
	fake_send(f, p);
	p->n = 5; /* runt */
	fake_send(f, p);
	int spoof = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	phdr(p, q->id, 0, 0, 1, 0);
	pquestion(p, q->name, q->qtype);
	prr_a(p, NULL, 300, "6.6.6.5");
	if (spoof >= 0) {
		sendto(spoof, p->b, p->n, 0, (struct sockaddr *)&f->peer, sizeof(f->peer));
		close(spoof);
	}
	if (q->qtype == DNS_TYPE_A) {
		phdr(p, q->id, 0, 0, 1, 0);
		pquestion(p, q->name, q->qtype);
		prr_a(p, NULL, 300, "192.0.2.55");
	} else {
		phdr(p, q->id, 0, 0, 0, 0);
		pquestion(p, q->name, q->qtype);
	}
	return true;
}

TEST(dns_mismatched_responses_ignored)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns f;
	REQUIRE(fake_start(&f, c.loop, answer_with_noise));
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\noptions attempts:1\n", f.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter w;
	start(&c, r, "real.example.com", &w);
	run(&c, 3000);
	CHECK_INT(w.calls, 1);
	CHECK_MSG(w.ok, "error: %s", w.error);
	CHECK_INT(w.n, 1);
	CHECK(has_addr(&w, "192.0.2.55"));
	CHECK_INT(f.udp_queries, 2);
	dns_resolver_free(r);
	fake_stop(&f);
	dctx_fini(&c);
}

TEST(dns_timeout_after_all_tries)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns f1, f2;
	REQUIRE(fake_start(&f1, c.loop, NULL));
	REQUIRE(fake_start(&f2, c.loop, NULL));
	REQUIRE(write_conf(&c,
			   "nameserver 127.0.0.1:%u\nnameserver 127.0.0.1:%u\n"
			   "options timeout_ms:100 attempts:2 ndots:5\n",
			   f1.port, f2.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter w;
	start(&c, r, "slow.example.com", &w);
	run(&c, 5000);
	CHECK_INT(w.calls, 1);
	CHECK(!w.ok);
	uint64_t took = w.t_done - w.t_start;
	CHECK_MSG(took >= 380 && took < 2000, "4 tries of 100 ms took %llu ms",
		  (unsigned long long)took);
	CHECK_CONTAINS(w.error, "slow.example.com A:");
	CHECK_CONTAINS(w.error, "slow.example.com AAAA:");
	CHECK_CONTAINS(w.error, "no answer from 127.0.0.1:");
	CHECK_CONTAINS(w.error, "within 100 ms");
	CHECK_CONTAINS(w.error, "(4 tries)");
	/* both servers were asked, twice per record type, each time with a fresh id */
	CHECK_INT(f1.udp_queries, 4);
	CHECK_INT(f2.udp_queries, 4);
	int distinct = 0;
	for (int i = 0; i < f1.n_ids; i++) {
		bool seen = false;
		for (int k = 0; k < i; k++)
			seen |= f1.ids[k] == f1.ids[i];
		distinct += !seen;
	}
	CHECK_MSG(distinct >= 3, "ids not random: %d distinct of %d", distinct, f1.n_ids);
	dns_resolver_free(r);
	fake_stop(&f1);
	fake_stop(&f2);
	dctx_fini(&c);
}

static bool answer_servfail(struct fake_ns *f, const struct qin *q, bool tcp, struct pkt *p)
{
	(void)f;
	(void)tcp;
	phdr(p, q->id, 0, DNS_RCODE_SERVFAIL, 0, 0);
	pquestion(p, q->name, q->qtype);
	return true;
}

TEST(dns_server_error_moves_to_next_nameserver)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns bad, good;
	REQUIRE(fake_start(&bad, c.loop, answer_servfail));
	REQUIRE(fake_start(&good, c.loop, answer_basic));
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\nnameserver 127.0.0.1:%u\n", bad.port,
			   good.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter w;
	start(&c, r, "api.example.com", &w);
	run(&c, 3000);
	CHECK_MSG(w.ok, "error: %s", w.error);
	CHECK_INT(w.n, 3);
	CHECK_INT(bad.udp_queries, 2);
	CHECK_INT(good.udp_queries, 2);
	dns_resolver_free(r);

	/* only the failing server: the error names it and the rcode */
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\noptions attempts:1\n", bad.port));
	r = resolver(&c);
	REQUIRE(r);
	start(&c, r, "api.example.com", &w);
	run(&c, 3000);
	CHECK(!w.ok);
	char want[64];
	snprintf(want, sizeof(want), "127.0.0.1:%u answered SERVFAIL", bad.port);
	CHECK_CONTAINS(w.error, want);
	dns_resolver_free(r);
	fake_stop(&bad);
	fake_stop(&good);
	dctx_fini(&c);
}

TEST(dns_port_unreachable_fails_fast)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns f;
	REQUIRE(fake_start(&f, c.loop, NULL));
	uint16_t port = f.port;
	fake_stop(&f); /* nothing listens there now */
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\noptions timeout:5 attempts:2\n", port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter w;
	start(&c, r, "x.example.com", &w);
	run(&c, 3000);
	CHECK_INT(w.calls, 1);
	CHECK(!w.ok);
	CHECK_CONTAINS(w.error, "port unreachable");
	CHECK_MSG(w.t_done - w.t_start < 1000, "took %llu ms",
		  (unsigned long long)(w.t_done - w.t_start));
	dns_resolver_free(r);
	dctx_fini(&c);
}

static bool answer_loop(struct fake_ns *f, const struct qin *q, bool tcp, struct pkt *p)
{
	(void)f;
	(void)tcp;
	phdr(p, q->id, 0, 0, 1, 0);
	pquestion(p, q->name, q->qtype);
	size_t at = p->n;
	p8(p, 1);
	p8(p, 'x');
	pptr(p, at); /* points at itself: x.x.x.x... */
	p16(p, q->qtype);
	p16(p, DNS_CLASS_IN);
	p32(p, 60);
	p16(p, 4);
	p32(p, 0x01020304);
	return true;
}

static bool answer_cut(struct fake_ns *f, const struct qin *q, bool tcp, struct pkt *p)
{
	(void)f;
	(void)tcp;
	phdr(p, q->id, 0, 0, 2, 0);
	pquestion(p, q->name, q->qtype);
	prr_a(p, NULL, 60, "192.0.2.1");
	prr_a(p, NULL, 60, "192.0.2.2");
	p->n -= 3; /* last record cut short */
	return true;
}

TEST(dns_malformed_answers_rejected)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns loop_ns, cut_ns;
	REQUIRE(fake_start(&loop_ns, c.loop, answer_loop));
	REQUIRE(fake_start(&cut_ns, c.loop, answer_cut));
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\noptions attempts:1\n", loop_ns.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter w;
	start(&c, r, "loop.example.com", &w);
	run(&c, 3000);
	CHECK_INT(w.calls, 1);
	CHECK(!w.ok);
	CHECK_CONTAINS(w.error, "malformed answer from 127.0.0.1:");
	CHECK_CONTAINS(w.error, "compression pointer");
	dns_resolver_free(r);

	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\noptions attempts:1\n", cut_ns.port));
	r = resolver(&c);
	REQUIRE(r);
	start(&c, r, "cut.example.com", &w);
	run(&c, 3000);
	CHECK(!w.ok);
	CHECK_CONTAINS(w.error, "runs past the end");
	dns_resolver_free(r);
	fake_stop(&loop_ns);
	fake_stop(&cut_ns);
	dctx_fini(&c);
}

TEST(dns_cancel_and_free_pending)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns f, silent;
	REQUIRE(fake_start(&f, c.loop, answer_basic));
	REQUIRE(fake_start(&silent, c.loop, NULL));
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\n", f.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter a, b, lit;
	uint64_t ida = start(&c, r, "a.example.com", &a);
	start(&c, r, "b.example.com", &b);
	uint64_t idl = start(&c, r, "10.1.2.3", &lit);
	dns_cancel(r, ida);
	dns_cancel(r, idl); /* an immediate answer can be cancelled too */
	dns_cancel(r, 999999); /* unknown: nothing happens */
	c.pending -= 2;
	run(&c, 3000);
	CHECK_INT(a.calls, 0);
	CHECK_INT(lit.calls, 0);
	CHECK_INT(b.calls, 1);
	CHECK(b.ok);
	dns_resolver_free(r);

	/* freeing the resolver with queries in flight: no callback, no leak */
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\n", silent.port));
	r = resolver(&c);
	REQUIRE(r);
	start(&c, r, "pending1.example.com", &a);
	start(&c, r, "pending2.example.com", &b);
	run(&c, 50);
	CHECK_INT(silent.udp_queries, 4);
	dns_resolver_free(r);
	c.pending = 0;
	run(&c, 50);
	CHECK_INT(a.calls + b.calls, 0);
	fake_stop(&f);
	fake_stop(&silent);
	dctx_fini(&c);
}

struct free_in_cb {
	struct waiter w;
	struct dns_resolver *r;
};

static void on_answer_free(void *arg, const char *host, const struct dns_answer *a,
			   const char *error)
{
	struct free_in_cb *fc = arg;
	on_answer(&fc->w, host, a, error);
	dns_resolver_free(fc->r); /* the other query is still pending */
	loop_stop(fc->w.ctx->loop);
}

TEST(dns_literals_invalid_names_and_free_in_callback)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct fake_ns silent;
	REQUIRE(fake_start(&silent, c.loop, NULL));
	REQUIRE(write_conf(&c, "nameserver 127.0.0.1:%u\n", silent.port));
	struct dns_resolver *r = resolver(&c);
	REQUIRE(r);
	struct waiter v4, v6, bad, toolong;
	start(&c, r, "10.1.2.3", &v4);
	start(&c, r, "fd00::5", &v6);
	start(&c, r, "bad..name", &bad);
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	start(&c, r, longname, &toolong);
	CHECK_INT(v4.calls + v6.calls + bad.calls + toolong.calls, 0);
	run(&c, 1000);
	CHECK(v4.ok && v4.n == 1 && has_addr(&v4, "10.1.2.3"));
	CHECK(v6.ok && v6.n == 1 && has_addr(&v6, "fd00::5"));
	CHECK_INT(v4.ttl, 86400);
	CHECK(!bad.ok);
	CHECK_CONTAINS(bad.error, "\"bad..name\": not a valid host name: empty label");
	CHECK(!toolong.ok);
	CHECK_CONTAINS(toolong.error, "label longer than 63");
	CHECK_INT(silent.udp_queries, 0);

	struct free_in_cb fc = {.r = r};
	struct waiter pending;
	start(&c, r, "pending.example.com", &pending);
	fc.w.ctx = &c;
	c.pending++;
	dns_resolve(r, "127.0.0.1", on_answer_free, &fc);
	run(&c, 1000);
	CHECK_INT(fc.w.calls, 1);
	CHECK_INT(pending.calls, 0);
	c.pending = 0;
	fake_stop(&silent);
	dctx_fini(&c);
}

TEST(dns_resolv_conf_errors_and_defaults)
{
	struct dctx c;
	REQUIRE(dctx_init(&c));
	struct err e = {{0}};
	CHECK(dns_resolver_new(c.loop, "/nonexistent/resolv.conf", &e) == NULL);
	CHECK_CONTAINS(e.msg, "/nonexistent/resolv.conf");
	/* junk lines are skipped; four nameservers: the fourth is ignored */
	REQUIRE(write_conf(&c, "; comment\nsearch a.example b.example\nnameserver\n"
			       "nameserver not-an-ip\nnameserver 127.0.0.1\nnameserver ::1\n"
			       "nameserver [::1]:5353\nnameserver 127.0.0.2\n"
			       "options timeout:0 attempts:99 rotate\n"));
	struct dns_resolver *r = resolver(&c);
	CHECK(r != NULL);
	dns_resolver_free(r);
	REQUIRE(write_conf(&c, "# nothing\n"));
	r = resolver(&c);
	CHECK(r != NULL);
	dns_resolver_free(r);
	dctx_fini(&c);
}

/* ---- the parser against hostile input ---- */

static const uint8_t *qname_www(size_t *len)
{
	static uint8_t wire[DNS_NAME_WIRE_MAX];
	const char *why;
	*len = (size_t)dns_name_to_wire("www.example.com", wire, &why);
	return wire;
}

static enum dns_parse_status parse(const struct pkt *p, struct dns_msg_result *res)
{
	size_t ql;
	const uint8_t *qn = qname_www(&ql);
	return dns_msg_parse(p->b, p->n, 0x1234, qn, ql, DNS_TYPE_A, false, res);
}

static void valid_response(struct pkt *p)
{
	phdr(p, 0x1234, 0, 0, 1, 0);
	pquestion(p, "www.example.com", DNS_TYPE_A);
	prr_a(p, NULL, 60, "192.0.2.1");
}

/* Found by tests/fuzz/fuzz_dns.c (corpus: crash-aaaa-ipv4-mapped). */
TEST(dns_aaaa_with_ipv4_mapped_address_is_not_an_ipv6_answer)
{
	size_t ql;
	const uint8_t *qn = qname_www(&ql);
	struct pkt p;
	struct dns_msg_result res;
	phdr(&p, 0x1234, 0, 0, 2, 0);
	pquestion(&p, "www.example.com", DNS_TYPE_AAAA);
	prr_aaaa(&p, NULL, 60, "::ffff:192.0.2.1");
	prr_aaaa(&p, NULL, 60, "2001:db8::1");
	CHECK_INT(dns_msg_parse(p.b, p.n, 0x1234, qn, ql, DNS_TYPE_AAAA, false, &res),
		  DNS_PARSE_OK);
	CHECK_INT(res.n, 1);
	struct moat_addr want;
	addr_parse("2001:db8::1", &want);
	CHECK(res.n == 1 && addr_eq(&res.addrs[0], &want));
	dns_msg_result_free(&res);

	phdr(&p, 0x1234, 0, 0, 1, 0);
	pquestion(&p, "www.example.com", DNS_TYPE_AAAA);
	prr_aaaa(&p, NULL, 60, "::ffff:192.0.2.1");
	CHECK_INT(dns_msg_parse(p.b, p.n, 0x1234, qn, ql, DNS_TYPE_AAAA, false, &res),
		  DNS_PARSE_OK);
	CHECK_INT(res.n, 0); /* no IPv6 address: an empty answer */
	dns_msg_result_free(&res);
}

TEST(dns_parser_rejects_hostile_packets)
{
	struct pkt p;
	struct dns_msg_result res;
	valid_response(&p);
	CHECK_INT(parse(&p, &res), DNS_PARSE_OK);
	CHECK_INT(res.n, 1);
	dns_msg_result_free(&res);

	/* two pointers pointing at each other */
	phdr(&p, 0x1234, 0, 0, 1, 0);
	pquestion(&p, "www.example.com", DNS_TYPE_A);
	size_t a = p.n;
	pptr(&p, a + 2);
	pptr(&p, a);
	p16(&p, DNS_TYPE_A);
	CHECK_INT(parse(&p, &res), DNS_PARSE_MALFORMED);
	CHECK_CONTAINS(res.why, "compression pointer");
	dns_msg_result_free(&res);

	/* pointer beyond the end */
	phdr(&p, 0x1234, 0, 0, 1, 0);
	pquestion(&p, "www.example.com", DNS_TYPE_A);
	pptr(&p, 0x3fff);
	CHECK_INT(parse(&p, &res), DNS_PARSE_MALFORMED);
	dns_msg_result_free(&res);

	/* reserved label type */
	phdr(&p, 0x1234, 0, 0, 1, 0);
	pquestion(&p, "www.example.com", DNS_TYPE_A);
	p8(&p, 0x41);
	CHECK_INT(parse(&p, &res), DNS_PARSE_MALFORMED);
	CHECK_STR(res.why, "unsupported label type");
	dns_msg_result_free(&res);

	/* rdlength beyond the end */
	valid_response(&p);
	p.b[p.n - 5] = 0x40;
	CHECK_INT(parse(&p, &res), DNS_PARSE_MALFORMED);
	dns_msg_result_free(&res);

	/* A record with 5 bytes of data */
	valid_response(&p);
	p.b[p.n - 5] = 5;
	p8(&p, 9);
	CHECK_INT(parse(&p, &res), DNS_PARSE_MALFORMED);
	CHECK_CONTAINS(res.why, "wrong length");
	dns_msg_result_free(&res);

	/* answer count larger than the records present */
	valid_response(&p);
	p.b[7] = 2;
	CHECK_INT(parse(&p, &res), DNS_PARSE_MALFORMED);
	dns_msg_result_free(&res);

	/* CNAME loop www -> a -> www */
	phdr(&p, 0x1234, 0, 0, 2, 0);
	pquestion(&p, "www.example.com", DNS_TYPE_A);
	prr_cname(&p, NULL, 60, "a.example.com");
	prr_cname(&p, "a.example.com", 60, "www.example.com");
	CHECK_INT(parse(&p, &res), DNS_PARSE_MALFORMED);
	CHECK_CONTAINS(res.why, "CNAME chain");
	dns_msg_result_free(&res);

	/* TTL with the top bit set counts as 0 */
	valid_response(&p);
	p.b[p.n - 10] = 0x80;
	CHECK_INT(parse(&p, &res), DNS_PARSE_OK);
	CHECK_INT(res.ttl, 0);
	dns_msg_result_free(&res);

	/* SOA whose rdlength leaves out part of its fields */
	phdr(&p, 0x1234, 0, DNS_RCODE_NXDOMAIN, 0, 1);
	pquestion(&p, "www.example.com", DNS_TYPE_A);
	prr_soa(&p, "example.com", 60, 60);
	CHECK_INT(parse(&p, &res), DNS_PARSE_OK);
	dns_msg_result_free(&res);
	size_t body = 17 + 24 + 20; /* MNAME, RNAME, five numbers */
	size_t rdlen_at = p.n - body - 2;
	p.n -= 4;
	p.b[rdlen_at + 1] = (uint8_t)(body - 4);
	CHECK_INT(parse(&p, &res), DNS_PARSE_MALFORMED);
	CHECK_CONTAINS(res.why, "SOA");
	dns_msg_result_free(&res);
}

TEST(dns_parser_name_compression_limits)
{
	uint8_t out[DNS_NAME_WIRE_MAX];
	size_t out_len, off;
	const char *why = NULL;
	struct pkt p = {.n = 0};
	/* five blocks of a 63-byte label, each pointing back to the previous: 321 bytes */
	size_t prev = 0;
	for (int i = 0; i < 5; i++) {
		size_t at = p.n;
		p8(&p, 63);
		for (int k = 0; k < 63; k++)
			p8(&p, 'a');
		if (i == 0)
			p8(&p, 0);
		else
			pptr(&p, prev);
		prev = at;
	}
	off = prev;
	CHECK_INT(dns_name_read(p.b, p.n, &off, out, &out_len, &why), -1);
	CHECK_STR(why, "name longer than 255 bytes");
	/* three of them fit: 3 * 64 + 1 */
	off = 64 + 1 + 64 + 2;
	CHECK_INT(dns_name_read(p.b, p.n, &off, out, &out_len, &why), 0);
	CHECK_INT(out_len, 193);
	CHECK_INT(off, 64 + 1 + 64 + 2 + 64 + 2);

	/* a pointer to itself, a pointer forward, a pointer cut in half */
	struct pkt q = {.n = 0};
	p8(&q, 1);
	p8(&q, 'x');
	pptr(&q, 0); /* x -> x -> ...: target 0 is not before the run start 0 */
	off = 0;
	CHECK_INT(dns_name_read(q.b, q.n, &off, out, &out_len, &why), -1);
	CHECK_CONTAINS(why, "loops");
	q.n = 0;
	pptr(&q, 4);
	p8(&q, 0);
	p8(&q, 0);
	p8(&q, 0);
	off = 0;
	CHECK_INT(dns_name_read(q.b, q.n, &off, out, &out_len, &why), -1);
	q.n = 0;
	p8(&q, 0xc0);
	off = 0;
	CHECK_INT(dns_name_read(q.b, q.n, &off, out, &out_len, &why), -1);
	CHECK_STR(why, "compression pointer cut off");
	/* a label running past the end */
	q.n = 0;
	p8(&q, 5);
	p8(&q, 'a');
	off = 0;
	CHECK_INT(dns_name_read(q.b, q.n, &off, out, &out_len, &why), -1);
	/* the root name */
	q.n = 0;
	p8(&q, 0);
	off = 0;
	CHECK_INT(dns_name_read(q.b, q.n, &off, out, &out_len, &why), 0);
	CHECK_INT(out_len, 1);
	CHECK_INT(off, 1);
}

TEST(dns_parser_name_encoding)
{
	uint8_t wire[DNS_NAME_WIRE_MAX];
	const char *why = NULL;
	CHECK_INT(dns_name_to_wire("WWW.Example.com.", wire, &why), 17);
	CHECK(memcmp(wire, "\3www\7example\3com\0", 17) == 0);
	CHECK_INT(dns_name_to_wire("", wire, &why), -1);
	CHECK_INT(dns_name_to_wire(".", wire, &why), -1);
	CHECK_INT(dns_name_to_wire("a b.com", wire, &why), -1);
	char name[300];
	/* 4 labels of 63 = 4*64 + 1 = 257 bytes: too long; 3 labels + 61 fits 255 */
	snprintf(name, sizeof(name), "%063d.%063d.%063d.%063d", 0, 0, 0, 0);
	CHECK_INT(dns_name_to_wire(name, wire, &why), -1);
	CHECK_STR(why, "name longer than 255 bytes");
	snprintf(name, sizeof(name), "%063d.%063d.%063d.%061d", 0, 0, 0, 0);
	CHECK_INT(dns_name_to_wire(name, wire, &why), 255);

	uint8_t buf[DNS_QUERY_MAX];
	int n = dns_msg_query(buf, sizeof(buf), 0xbeef, wire, 255, DNS_TYPE_AAAA, true);
	CHECK_INT(n, 12 + 255 + 4 + 11);
	CHECK(buf[0] == 0xbe && buf[1] == 0xef && buf[2] == 0x01 && buf[11] == 1);
}

/* Random corruption of valid responses: the parser must never read out of bounds (ASan)
 * nor loop; the outcome itself does not matter. */
TEST(dns_parser_survives_random_corruption)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	struct pkt base, p;
	phdr(&base, 0x1234, 0, 0, 4, 1);
	pquestion(&base, "www.example.com", DNS_TYPE_A);
	size_t t = prr_cname(&base, NULL, 60, "cdn.example.net");
	pptr(&base, t);
	p16(&base, DNS_TYPE_A);
	p16(&base, DNS_CLASS_IN);
	p32(&base, 30);
	p16(&base, 4);
	p32(&base, 0xc0000201);
	prr_a(&base, "cdn.example.net", 40, "192.0.2.2");
	prr_aaaa(&base, NULL, 40, "2001:db8::2");
	prr_soa(&base, "example.com", 60, 60);
	struct dns_msg_result res;
	CHECK_INT(parse(&base, &res), DNS_PARSE_OK);
	CHECK_INT(res.n, 2);
	dns_msg_result_free(&res);
	int outcomes[5] = {0};
	for (int i = 0; i < 20000; i++) {
		p = base;
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		int flips = 1 + (int)((seed >> 40) % 4);
		for (int k = 0; k < flips; k++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			size_t at = 12 + (size_t)((seed >> 33) % (p.n - 12));
			p.b[at] = (uint8_t)(seed >> 20);
		}
		if (i % 3 == 0)
			p.n = 12 + (size_t)((seed >> 13) % (p.n - 12));
		uint8_t *copy = xmalloc(p.n); /* exact size so ASan sees any overread */
		memcpy(copy, p.b, p.n);
		size_t ql;
		const uint8_t *qn = qname_www(&ql);
		enum dns_parse_status st =
			dns_msg_parse(copy, p.n, 0x1234, qn, ql, DNS_TYPE_A, true, &res);
		outcomes[st]++;
		dns_msg_result_free(&res);
		free(copy);
	}
	CHECK(outcomes[DNS_PARSE_OK] > 0);
	CHECK(outcomes[DNS_PARSE_MALFORMED] > 0);
}
