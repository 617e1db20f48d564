/* core/ (addresses, CIDRs, the loop's timers and deferred calls), the control protocol's
 * encoding, stable interned ids, and the plaintext relay over real TCP sockets. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/util.h"
#include "ctl/ctl.h"
#include "proxy/relay.h"
#include "state/agent.h"
#include "test.h"

TEST(core_addr_parse_and_format)
{
	struct moat_addr a;
	char buf[ADDR_STRLEN + 8];
	REQUIRE(addr_parse("10.244.1.10", &a));
	CHECK(addr_is_v4(&a));
	CHECK_STR(addr_str(&a, buf, sizeof(buf)), "10.244.1.10");
	CHECK_STR(addr_port_str(&a, 8080, buf, sizeof(buf)), "10.244.1.10:8080");
	REQUIRE(addr_parse("fd00::1", &a));
	CHECK(!addr_is_v4(&a));
	CHECK_STR(addr_port_str(&a, 443, buf, sizeof(buf)), "[fd00::1]:443");
	CHECK(!addr_parse("10.244.1", &a));
	CHECK(!addr_parse("", &a));
	uint16_t port;
	CHECK(addr_port_parse("10.0.0.2:15008", &a, &port) && port == 15008);
	CHECK(addr_port_parse("[fd00::2]:80", &a, &port) && port == 80);
	CHECK(!addr_port_parse("fd00::2:80", &a, &port));    /* IPv6 needs brackets */
	CHECK(!addr_port_parse("[10.0.0.2]:80", &a, &port)); /* brackets are for IPv6 */
	CHECK(!addr_port_parse("10.0.0.2:0", &a, &port));
	CHECK(!addr_port_parse("10.0.0.2:65536", &a, &port));
	CHECK(!addr_port_parse("10.0.0.2:80x", &a, &port));
	REQUIRE(addr_parse("127.0.0.9", &a));
	CHECK(addr_is_loopback(&a));
	REQUIRE(addr_parse("::1", &a));
	CHECK(addr_is_loopback(&a));
}

TEST(core_cidr_contains)
{
	struct cidr c;
	struct moat_addr a;
	char buf[64];
	REQUIRE(cidr_parse("10.244.0.0/16", &c));
	CHECK_STR(cidr_str(&c, buf, sizeof(buf)), "10.244.0.0/16");
	addr_parse("10.244.9.9", &a);
	CHECK(cidr_contains(&c, &a));
	addr_parse("10.245.0.1", &a);
	CHECK(!cidr_contains(&c, &a));
	REQUIRE(cidr_parse("10.1.2.3", &c)); /* bare address = /32 */
	CHECK_STR(cidr_str(&c, buf, sizeof(buf)), "10.1.2.3/32");
	addr_parse("10.1.2.4", &a);
	CHECK(!cidr_contains(&c, &a));
	REQUIRE(cidr_parse("10.1.2.3/24", &c)); /* host bits cleared */
	CHECK_STR(cidr_str(&c, buf, sizeof(buf)), "10.1.2.0/24");
	REQUIRE(cidr_parse("fd00::/8", &c));
	addr_parse("fdff::1", &a);
	CHECK(cidr_contains(&c, &a));
	addr_parse("10.1.2.3", &a);
	CHECK(!cidr_contains(&c, &a));
	CHECK(!cidr_parse("10.0.0.0/33", &c));
	CHECK(!cidr_parse("10.0.0.0/", &c));
}

struct timer_order {
	struct loop *l;
	struct loop_timer t[4];
	int fired[4], n;
};

static struct timer_order *the_order; /* timers cannot name their array slot */

static void record_fire(struct loop_timer *t)
{
	struct timer_order *o = the_order;
	o->fired[o->n++] = (int)(t - o->t);
	if (o->n == 3)
		loop_stop(o->l);
}

TEST(core_loop_timers_fire_in_deadline_order_and_cancel)
{
	struct timer_order o = {.l = loop_new()};
	the_order = &o;
	for (int i = 0; i < 4; i++)
		loop_timer_init(&o.t[i], record_fire);
	loop_timer_arm(o.l, &o.t[0], 30);
	loop_timer_arm(o.l, &o.t[1], 10);
	loop_timer_arm(o.l, &o.t[2], 20);
	loop_timer_arm(o.l, &o.t[3], 15);
	loop_timer_cancel(o.l, &o.t[3]);
	CHECK(!loop_timer_armed(&o.t[3]));
	loop_run(o.l);
	CHECK_INT(o.n, 3);
	CHECK_INT(o.fired[0], 1);
	CHECK_INT(o.fired[1], 2);
	CHECK_INT(o.fired[2], 0);
	loop_free(o.l);
}

TEST(ctl_encoding_round_trips)
{
	const char *values[] = {"plain", "with space", "k=v=w", "spiffe://cluster.local/ns/a/sa/b",
				"100%", "line\nbreak", ""};
	for (size_t i = 0; i < ARRAY_SIZE(values); i++) {
		struct sbuf b;
		sbuf_init(&b);
		ctl_encode(&b, values[i]);
		char *enc = sbuf_take(&b);
		CHECK_MSG(!strchr(enc, ' ') && !strchr(enc, '\n'), "encoded \"%s\" has a separator", enc);
		CHECK(ctl_decode(enc));
		CHECK_STR(enc, values[i]);
		free(enc);
	}
	char bad[] = "abc%2";
	CHECK(!ctl_decode(bad));
	char bad2[] = "%zz";
	CHECK(!ctl_decode(bad2));
}

TEST(intern_ids_are_stable_and_dense)
{
	struct intern in = {0};
	uint32_t a = intern_id(&in, "ns/a"), b = intern_id(&in, "ns/b");
	CHECK_INT(a, 1);
	CHECK_INT(b, 2);
	char name[32];
	for (int i = 0; i < 1000; i++) { /* force rehashes */
		snprintf(name, sizeof(name), "ns/w%d", i);
		intern_id(&in, name);
	}
	CHECK_INT(intern_id(&in, "ns/a"), a);
	CHECK_INT(intern_id(&in, "ns/b"), b);
	CHECK_STR(intern_name(&in, b), "ns/b");
	CHECK(intern_name(&in, 0) == NULL);
	CHECK(intern_name(&in, 100000) == NULL);
	intern_free(&in);
}

TEST(intern_released_ids_are_freed_after_quarantine_and_reused)
{
	struct intern in = {0};
	uint32_t pinned = intern_id(&in, "ns/config");
	uint32_t a = intern_hold(&in, "ns/a");
	intern_release(&in, pinned, 0); /* pinned: a release does not free it */
	intern_release(&in, a, 1000);
	CHECK_INT(intern_collect(&in, 1000, 5000), 0); /* one sync: still quarantined */
	CHECK_STR(intern_name(&in, a), "ns/a");         /* stale ids name what they named */
	CHECK_INT(intern_collect(&in, 5999, 5000), 0); /* two syncs, not yet the time */
	CHECK_INT(intern_collect(&in, 6000, 5000), 1);
	CHECK(intern_name(&in, a) == NULL);
	CHECK_STR(intern_name(&in, pinned), "ns/config");
	CHECK_INT(intern_hold(&in, "ns/b"), a); /* past its quarantine: reused */
	CHECK_INT(intern_id(&in, "ns/config"), pinned);
	intern_free(&in);
}

TEST(intern_ids_are_never_reused_while_held_or_quarantined)
{
	struct intern in = {0};
	uint32_t a = intern_hold(&in, "ns/a");
	intern_hold(&in, "ns/a"); /* two holders (a pod enrolled again) */
	intern_release(&in, a, 0);
	for (int i = 0; i < 10; i++)
		CHECK_INT(intern_collect(&in, 100000 + (uint64_t)i, 5000), 0);
	CHECK(intern_hold(&in, "ns/b") != a);
	intern_release(&in, a, 200000);
	CHECK_INT(intern_hold(&in, "ns/a"), a); /* back from quarantine: same name, same id */
	intern_release(&in, a, 200000);
	intern_collect(&in, 200000, 5000);
	CHECK(intern_hold(&in, "ns/c") != a); /* quarantined ids are not handed out */
	CHECK_STR(intern_name(&in, a), "ns/a");
	intern_free(&in);
}

TEST(intern_churn_stays_bounded)
{
	struct intern in = {0};
	char name[32];
	uint64_t now = 0;
	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "ns/pod-%d", i);
		uint32_t id = intern_hold(&in, name);
		const char *s = intern_hold_str(&in, name);
		CHECK_STR(intern_name(&in, id), name);
		intern_release(&in, id, now);
		intern_release_str(&in, s, now);
		now += 1000;
		intern_collect(&in, now, 5000);
	}
	CHECK(in.n <= 16); /* ids in quarantine at once, not one per name ever seen */
	CHECK(in.n_live <= 16);
	CHECK(in.n_slots <= 64);
	intern_free(&in);
}

/* ---- relay over TCP ---- */

static int tcp_pair(int sv[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0)
		return -1;
	sv[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (connect(sv[0], (struct sockaddr *)&a, sizeof(a)) < 0)
		return -1;
	sv[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	close(l);
	return sv[1] < 0 ? -1 : 0;
}

struct relay_world {
	struct loop *l;
	uint64_t a_to_b, b_to_a;
	char error[256];
	bool done;
	struct loop_timer deadline;
};

static void relay_finished(void *user, uint64_t a_to_b, uint64_t b_to_a, const char *error)
{
	struct relay_world *w = user;
	w->a_to_b = a_to_b;
	w->b_to_a = b_to_a;
	snprintf(w->error, sizeof(w->error), "%s", error ? error : "");
	w->done = true;
	loop_stop(w->l);
}

static void relay_deadline(struct loop_timer *t)
{
	struct relay_world *w = container_of(t, struct relay_world, deadline);
	loop_stop(w->l);
}

struct pump {
	int fd;
	size_t send;
	size_t got;
	bool reset; /* close with RST after sending */
};

static void *pump_main(void *arg)
{
	struct pump *p = arg;
	char buf[65536];
	memset(buf, 'x', sizeof(buf));
	for (size_t off = 0; off < p->send;) {
		ssize_t n = write(p->fd, buf, p->send - off < sizeof(buf) ? p->send - off : sizeof(buf));
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	if (p->reset) {
		close_rst(p->fd);
		p->fd = -1;
		return NULL;
	}
	shutdown(p->fd, SHUT_WR);
	for (;;) {
		ssize_t n = read(p->fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		p->got += (size_t)n;
	}
	return NULL;
}

TEST(relay_moves_bytes_both_ways_and_respects_half_close)
{
	int ab[2], cd[2];
	REQUIRE(tcp_pair(ab) == 0 && tcp_pair(cd) == 0);
	struct relay_world w = {.l = loop_new()};
	loop_timer_init(&w.deadline, relay_deadline);
	loop_timer_arm(w.l, &w.deadline, 20000);
	/* app ab[0] <-> relay(ab[1], cd[0]) <-> cd[1] app */
	REQUIRE(relay_new(w.l, ab[1], cd[0], relay_finished, &w) != NULL);
	struct pump left = {.fd = ab[0], .send = 3u << 20}, right = {.fd = cd[1], .send = 5u << 20};
	pthread_t t1, t2;
	pthread_create(&t1, NULL, pump_main, &left);
	pthread_create(&t2, NULL, pump_main, &right);
	loop_run(w.l);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	CHECK(w.done);
	CHECK_INT(w.a_to_b, 3u << 20);
	CHECK_INT(w.b_to_a, 5u << 20);
	CHECK_INT(right.got, 3u << 20);
	CHECK_INT(left.got, 5u << 20);
	CHECK_STR(w.error, "");
	close(ab[0]);
	close(cd[1]);
	loop_timer_cancel(w.l, &w.deadline);
	loop_free(w.l);
}

TEST(relay_passes_a_reset_on)
{
	int ab[2], cd[2];
	REQUIRE(tcp_pair(ab) == 0 && tcp_pair(cd) == 0);
	struct relay_world w = {.l = loop_new()};
	loop_timer_init(&w.deadline, relay_deadline);
	loop_timer_arm(w.l, &w.deadline, 20000);
	REQUIRE(relay_new(w.l, ab[1], cd[0], relay_finished, &w) != NULL);
	struct pump left = {.fd = ab[0], .send = 1024, .reset = true};
	pthread_t t1;
	pthread_create(&t1, NULL, pump_main, &left);
	loop_run(w.l);
	pthread_join(t1, NULL);
	CHECK(w.done);
	CHECK_MSG(w.error[0], "the relay ended without an error after a reset");
	/* The other side sees a reset too, not a clean end. */
	char b[2048];
	ssize_t n;
	do
		n = read(cd[1], b, sizeof(b));
	while (n > 0);
	CHECK_MSG(n < 0 && errno == ECONNRESET, "read after reset: %zd %s", n, strerror(errno));
	close(cd[1]);
	loop_timer_cancel(w.l, &w.deadline);
	loop_free(w.l);
}

/* Run fn with stderr captured; returns what it wrote (malloc'd). */
static char *capture_stderr(void (*fn)(void))
{
	fflush(stderr);
	FILE *tmp = tmpfile();
	if (!tmp)
		return NULL;
	int saved = dup(2);
	dup2(fileno(tmp), 2);
	fn();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	size_t len = (size_t)ftell(tmp);
	char *out = xcalloc(1, len + 1);
	rewind(tmp);
	if (fread(out, 1, len, tmp) != len)
		out[0] = 0;
	fclose(tmp);
	return out;
}

static size_t count_lines(const char *s, const char *needle)
{
	size_t n = 0;
	for (const char *p = s; p && (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static void log_many_identical(void)
{
	for (int i = 0; i < 1000; i++)
		log_warn("accept on 15001 of pod %s: %s", "ns/flood", "Too many open files");
}

static void log_many_distinct(void)
{
	for (int i = 0; i < 300; i++)
		log_error("distinct.yaml:%d: error number %d", i + 1, i);
}

TEST(log_identical_lines_are_rate_limited_and_counted)
{
	uint64_t before = log_suppressed_total();
	char *out = capture_stderr(log_many_identical);
	REQUIRE(out);
	size_t written = count_lines(out, "pod ns/flood: Too many open files");
	CHECK_MSG(written == 10, "%zu identical lines written, want 10", written);
	CHECK_INT(log_suppressed_total() - before, 990);
	CHECK_CONTAINS(out, "more identical lines within 10 s are counted, not written");
	free(out);
	/* distinct lines (every config error has its own place) all pass */
	out = capture_stderr(log_many_distinct);
	REQUIRE(out);
	CHECK_INT(count_lines(out, "distinct.yaml:"), 300);
	free(out);
}
