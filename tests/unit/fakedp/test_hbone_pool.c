/* The outbound HBONE pool (proxy/pool.c) against a real HBONE server (hbone/h2.c, real TLS
 * with certificates from the agent's identity store) on 127.x.y.z:15008, no root: one
 * connection per (source pod, identity, destination) carries many streams; the caps on
 * CONNECTs awaiting a response (per destination, per pod) and on connections per key
 * (--pool-max-connections) refuse at once with the flag named; after a certificate renewal
 * new streams go to a new connection made with the new certificate, and the old one takes
 * none and closes when its last stream ends; a connection left without streams is released
 * after --pool-idle. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "identity/identity.h"
#include "obs/metrics.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "test.h"

#define TD "cluster.local"
#define SRC_ID "spiffe://cluster.local/ns/a/sa/client"
#define DST_ID "spiffe://cluster.local/ns/b/sa/server"
#define MAX_SRV_CONNS 8
#define MAX_UP 256

/* ---- an HBONE server: answers 200 (relaying to a socketpair the test holds) or holds ---- */
struct srv {
	struct loop *loop;
	struct identity_store *ids;
	struct moat_addr ip;
	int lfd;
	struct loop_io io;
	bool answer;
	int accepted, requests;
	struct h2conn *conns[MAX_SRV_CONNS];
	char serial[MAX_SRV_CONNS][80]; /* the client certificate of each connection */
	int up[MAX_UP];                 /* the test's end of each accepted stream's upstream */
	int n_up;
};

static int srv_index(struct srv *s, const struct h2conn *c)
{
	for (int i = 0; i < s->accepted && i < MAX_SRV_CONNS; i++)
		if (s->conns[i] == c)
			return i;
	return -1;
}

static void srv_stream_closed(struct h2stream *st, void *user, const struct h2stream_stats *x,
			      const char *error)
{
	(void)st, (void)user, (void)x, (void)error;
}

static const struct h2stream_ops srv_stream_ops = {.on_close = srv_stream_closed};

static void srv_request(struct h2conn *c, struct h2stream *st, const struct hbone_request *r)
{
	(void)r;
	struct srv *s = h2conn_owner(c);
	s->requests++;
	h2stream_set_ops(st, &srv_stream_ops, s);
	int sp[2];
	if (!s->answer || s->n_up == MAX_UP ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) < 0)
		return; /* held: no response until the client gives up */
	struct err e;
	if (h2stream_accept(st, sp[0], &e) < 0) {
		close(sp[0]);
		close(sp[1]);
		return;
	}
	s->up[s->n_up++] = sp[1];
}

static void srv_ready(struct h2conn *c)
{
	struct srv *s = h2conn_owner(c);
	int i = srv_index(s, c);
	if (i >= 0)
		snprintf(s->serial[i], sizeof(s->serial[i]), "%s", h2conn_peer_serial(c));
}

static void srv_closed(struct h2conn *c, const char *why)
{
	(void)why;
	struct srv *s = h2conn_owner(c);
	int i = srv_index(s, c);
	if (i >= 0)
		s->conns[i] = NULL;
}

static const struct h2conn_ops srv_ops = {
	.on_request = srv_request, .on_ready = srv_ready, .on_closed = srv_closed};

static void srv_accept(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct srv *s = container_of(io, struct srv, io);
	int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	struct err e;
	struct h2conn *c = s->accepted < MAX_SRV_CONNS
				   ? h2conn_new(s->loop, H2_SERVER, fd,
						identity_server_ctx(s->ids, DST_ID), NULL, &srv_ops, s,
						"test server", &e)
				   : NULL;
	if (!c) {
		close(fd);
		return;
	}
	s->conns[s->accepted++] = c;
}

static int srv_open_conns(const struct srv *s)
{
	int n = 0;
	for (int i = 0; i < s->accepted && i < MAX_SRV_CONNS; i++)
		n += s->conns[i] != NULL;
	return n;
}

/* Listen on a loopback address of our own (127.x.y.z:15008, no root needed), so that two
 * runs at once on this machine never meet. */
static bool srv_start(struct srv *s, struct loop *l, struct identity_store *ids)
{
	memset(s, 0, sizeof(*s));
	s->loop = l;
	s->ids = ids;
	s->lfd = -1;
	loop_io_init(&s->io);
	for (int attempt = 0; attempt < 20; attempt++) {
		unsigned r = (unsigned)getpid() * 7919u + (unsigned)attempt * 104729u;
		char txt[32];
		snprintf(txt, sizeof(txt), "127.%u.%u.%u", 16 + r % 200, (r / 200) % 250,
			 1 + (r / 50000) % 250);
		addr_parse(txt, &s->ip);
		struct sockaddr_storage ss;
		socklen_t sl = addr_to_sockaddr(&s->ip, MOAT_PORT_HBONE, &ss);
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd >= 0 && bind(fd, (struct sockaddr *)&ss, sl) == 0 && listen(fd, 64) == 0) {
			s->lfd = fd;
			return loop_io_add(l, &s->io, fd, EPOLLIN, srv_accept) == 0;
		}
		if (fd >= 0)
			close(fd);
	}
	return false;
}

static void srv_stop(struct srv *s)
{
	for (int i = 0; i < s->accepted && i < MAX_SRV_CONNS; i++)
		if (s->conns[i])
			h2conn_abort(s->conns[i], "test over");
	for (int i = 0; i < s->n_up; i++)
		if (s->up[i] >= 0)
			close(s->up[i]);
	if (s->lfd >= 0) {
		loop_io_del(s->loop, &s->io);
		close(s->lfd);
	}
}

/* ---- the agent side: a loop, an identity store, the pool, pods ---- */
struct pfx {
	struct agent a;
	struct moat_ca *ca;
	struct pod pods[2];
	struct srv srv;
};

static void pod_init(struct pod *p, struct agent *a, const char *name)
{
	memset(p, 0, sizeof(*p));
	p->agent = a;
	p->key = (char *)name;
	p->spiffe_id = (char *)SRC_ID;
	addr_parse("127.0.0.1", &p->addr);
	p->addrs[0] = p->addr;
	p->n_addrs = 1;
	p->netns_fd = p->cgroup_fd = -1;
}

static struct pfx *pfx_new(int ttl_seconds)
{
	struct pfx *f = xcalloc(1, sizeof(*f));
	struct err e;
	struct agent *a = &f->a;
	a->loop = loop_new();
	a->metrics = metrics_new();
	f->ca = ca_new_ephemeral(TD, &e);
	struct identity_store_opts o = {.ca = f->ca, .ttl_seconds = ttl_seconds};
	a->ids = f->ca ? identity_store_new(a->loop, &o, &e) : NULL;
	a->opts.pool_idle_ms = 60000;
	a->opts.hbone_response_ms = 30000;
	a->opts.hbone_suspect_ms = 30000;
	a->opts.max_pending_dest = 1000;
	a->opts.max_pending_pod = 1000;
	a->opts.pool_max_conns = 4;
	pod_init(&f->pods[0], a, "a/client-1");
	pod_init(&f->pods[1], a, "a/client-2");
	f->srv.lfd = -1;
	if (!a->ids || identity_acquire(a->ids, SRC_ID, &e) < 0 ||
	    identity_acquire(a->ids, DST_ID, &e) < 0 || !srv_start(&f->srv, a->loop, a->ids)) {
		fprintf(stderr, "    setup: %s\n", e.msg);
		return f; /* a->pool NULL: the test stops */
	}
	a->pool = hbone_pool_new(a);
	a->proxy = proxy_new(a); /* as agent_start: engine.c keeps its log throttle there */
	return f;
}

/* ---- running the loop until something holds (bounded) ---- */
struct waiter {
	struct loop *loop;
	struct loop_timer poll, deadline;
	bool (*cond)(void *arg);
	void *arg;
	bool met;
};

static void w_poll(struct loop_timer *t)
{
	struct waiter *w = container_of(t, struct waiter, poll);
	if (w->cond && w->cond(w->arg)) {
		w->met = true;
		loop_stop(w->loop);
		return;
	}
	loop_timer_arm(w->loop, &w->poll, 5);
}

static void w_deadline(struct loop_timer *t)
{
	struct waiter *w = container_of(t, struct waiter, deadline);
	loop_stop(w->loop);
}

/* cond NULL: just run for max_ms. */
static bool run_until(struct loop *l, bool (*cond)(void *), void *arg, uint64_t max_ms)
{
	struct waiter w = {.loop = l, .cond = cond, .arg = arg};
	loop_timer_init(&w.poll, w_poll);
	loop_timer_init(&w.deadline, w_deadline);
	loop_timer_arm(l, &w.poll, 0);
	loop_timer_arm(l, &w.deadline, max_ms);
	loop_run(l);
	loop_timer_cancel(l, &w.poll);
	loop_timer_cancel(l, &w.deadline);
	return w.met || (cond && cond(arg));
}

static void pfx_free(struct pfx *f)
{
	struct agent *a = &f->a;
	hbone_pool_free(a->pool);
	proxy_free(a);
	srv_stop(&f->srv);
	run_until(a->loop, NULL, NULL, 20); /* deferred frees */
	identity_store_free(a->ids);
	ca_free(f->ca);
	metrics_free(a->metrics);
	loop_free(a->loop);
	free(f);
}

/* ---- requests from the app side ---- */
struct creq {
	int app; /* the app's end of the socket the pool relays */
	int status;
	bool closed;
	char why[400];
};

static void c_response(struct h2stream *s, void *user, int status)
{
	(void)s;
	((struct creq *)user)->status = status;
}

static void c_close(struct h2stream *s, void *user, const struct h2stream_stats *st,
		    const char *error)
{
	(void)s, (void)st;
	struct creq *r = user;
	r->closed = true;
	snprintf(r->why, sizeof(r->why), "%s", error ? error : "");
}

static const struct h2stream_ops c_ops = {.on_response = c_response, .on_close = c_close};

static void submit(struct pfx *f, struct pod *p, struct creq *r)
{
	memset(r, 0, sizeof(*r));
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) < 0) {
		r->closed = true;
		snprintf(r->why, sizeof(r->why), "socketpair: %s", strerror(errno));
		return;
	}
	r->app = sp[1];
	char authority[ADDR_STRLEN + 8];
	struct pool_req q = {.src = p, .dst_id = DST_ID, .dst_ip = f->srv.ip,
			     .authority = addr_port_str(&f->srv.ip, 8080, authority,
							sizeof(authority)),
			     .app_fd = sp[0], .ops = &c_ops, .user = r};
	hbone_pool_submit(f->a.pool, &q);
}

static void creqs_close(struct creq *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (r[i].app > 0)
			close(r[i].app);
}

struct all_ok {
	struct creq *r;
	size_t n;
};

static bool all_answered(void *arg)
{
	struct all_ok *w = arg;
	for (size_t i = 0; i < w->n; i++)
		if (w->r[i].status != 200)
			return false;
	return true;
}

static int pool_conns(const struct pfx *f)
{
	int conns, streams;
	hbone_pool_counts(f->a.pool, &conns, &streams);
	return conns;
}

static bool requests_seen(void *arg)
{
	struct pfx *f = arg;
	return f->srv.requests >= 2;
}

TEST(hbone_pool_reuses_one_connection_per_source_pod_identity_and_destination)
{
	struct pfx *f = pfx_new(3600);
	REQUIRE(f->a.pool);
	f->srv.answer = true;
	struct creq r[4];
	for (int i = 0; i < 3; i++)
		submit(f, &f->pods[0], &r[i]);
	struct all_ok w = {r, 3};
	CHECK(run_until(f->a.loop, all_answered, &w, 10000));
	CHECK_INT(f->srv.accepted, 1);
	CHECK_INT(f->srv.requests, 3);
	CHECK_INT(pool_conns(f), 1);
	/* another pod (its own source address) gets its own connection */
	submit(f, &f->pods[1], &r[3]);
	struct all_ok w1 = {&r[3], 1};
	CHECK(run_until(f->a.loop, all_answered, &w1, 10000));
	CHECK_INT(f->srv.accepted, 2);
	CHECK_INT(pool_conns(f), 2);
	/* the certificate it presented is the pod's identity's */
	CHECK_STR(f->srv.serial[0], identity_svid(f->a.ids, SRC_ID)->serial);
	creqs_close(r, 4);
	pfx_free(f);
}

TEST(hbone_pool_refuses_past_the_pending_cap_per_destination)
{
	struct pfx *f = pfx_new(3600);
	REQUIRE(f->a.pool);
	f->a.opts.max_pending_dest = 2; /* the server holds every CONNECT: none is answered */
	struct creq r[3];
	for (int i = 0; i < 3; i++)
		submit(f, &f->pods[i % 2], &r[i]);
	/* refused during submit, naming the flag; the others wait */
	CHECK(r[2].closed);
	CHECK_CONTAINS(r[2].why, "--max-pending-per-destination 2");
	CHECK(!r[0].closed && !r[1].closed);
	CHECK_INT(hbone_pool_waiting(f->a.pool), 2);
	CHECK(run_until(f->a.loop, requests_seen, f, 10000));
	CHECK(!r[0].closed && !r[1].closed);
	creqs_close(r, 3);
	pfx_free(f);
}

TEST(hbone_pool_refuses_past_the_pending_cap_per_pod_and_not_other_pods)
{
	struct pfx *f = pfx_new(3600);
	REQUIRE(f->a.pool);
	f->a.opts.max_pending_pod = 2;
	struct creq r[4];
	submit(f, &f->pods[0], &r[0]);
	submit(f, &f->pods[0], &r[1]);
	submit(f, &f->pods[0], &r[2]);
	submit(f, &f->pods[1], &r[3]);
	CHECK(r[2].closed);
	CHECK_CONTAINS(r[2].why, "--max-pending-per-pod 2");
	CHECK(!r[0].closed && !r[1].closed && !r[3].closed);
	CHECK_INT(hbone_pool_waiting(f->a.pool), 3);
	creqs_close(r, 4);
	pfx_free(f);
}

TEST(hbone_pool_opens_no_more_connections_per_key_than_pool_max_connections)
{
	struct pfx *f = pfx_new(3600);
	REQUIRE(f->a.pool);
	f->a.opts.pool_max_conns = 1;
	/* a connection carries H2_CLIENT_STREAMS; the next stream needs a second connection */
	struct creq *r = xcalloc(H2_CLIENT_STREAMS + 2, sizeof(*r));
	for (int i = 0; i <= H2_CLIENT_STREAMS; i++)
		submit(f, &f->pods[0], &r[i]);
	CHECK(r[H2_CLIENT_STREAMS].closed);
	CHECK_CONTAINS(r[H2_CLIENT_STREAMS].why, "--pool-max-connections 1");
	CHECK(!r[H2_CLIENT_STREAMS - 1].closed);
	CHECK_INT(pool_conns(f), 1);
	/* with room for two, the same request opens a second connection */
	f->a.opts.pool_max_conns = 2;
	submit(f, &f->pods[0], &r[H2_CLIENT_STREAMS + 1]);
	CHECK(!r[H2_CLIENT_STREAMS + 1].closed);
	CHECK_INT(pool_conns(f), 2);
	pfx_free(f); /* its callbacks still write into r */
	creqs_close(r, H2_CLIENT_STREAMS + 2);
	free(r);
}

/* ---- certificate rotation ---- */
struct renewed {
	struct pfx *f;
	char first[80];
};

static bool serial_changed(void *arg)
{
	struct renewed *w = arg;
	const struct svid *sv = identity_svid(w->f->a.ids, SRC_ID);
	return sv && strcmp(sv->serial, w->first) != 0;
}

static bool old_conn_gone(void *arg)
{
	struct pfx *f = arg;
	return f->srv.conns[0] == NULL && srv_open_conns(&f->srv) == 1 && pool_conns(f) == 1;
}

TEST(hbone_pool_drains_connections_made_with_a_renewed_certificate)
{
	/* a 3 s certificate is renewed at half-life: the test waits for that, bounded */
	struct pfx *f = pfx_new(3);
	REQUIRE(f->a.pool);
	f->srv.answer = true;
	struct creq r[3];
	submit(f, &f->pods[0], &r[0]);
	struct all_ok w0 = {r, 1};
	REQUIRE(run_until(f->a.loop, all_answered, &w0, 10000));
	struct renewed rn = {.f = f};
	snprintf(rn.first, sizeof(rn.first), "%s", identity_svid(f->a.ids, SRC_ID)->serial);
	REQUIRE(run_until(f->a.loop, serial_changed, &rn, 4000));

	/* new streams go to a new connection with the new certificate */
	submit(f, &f->pods[0], &r[1]);
	submit(f, &f->pods[0], &r[2]);
	struct all_ok w12 = {&r[1], 2};
	CHECK(run_until(f->a.loop, all_answered, &w12, 10000));
	CHECK_INT(f->srv.accepted, 2);
	CHECK_STR(f->srv.serial[0], rn.first);
	CHECK_STR(f->srv.serial[1], identity_svid(f->a.ids, SRC_ID)->serial);
	/* the old one still carries its stream */
	CHECK(f->srv.conns[0] != NULL);
	CHECK(!r[0].closed);
	CHECK_INT(pool_conns(f), 2);

	/* its last stream ends (both sides close): it is released; the new one stays */
	close(r[0].app);
	r[0].app = -1;
	close(f->srv.up[0]);
	f->srv.up[0] = -1;
	CHECK(run_until(f->a.loop, old_conn_gone, f, 10000));
	CHECK(r[0].closed);
	CHECK(f->srv.conns[1] != NULL);
	CHECK(!r[1].closed && !r[2].closed);
	creqs_close(r, 3);
	pfx_free(f);
}

static bool no_conns(void *arg)
{
	struct pfx *f = arg;
	return srv_open_conns(&f->srv) == 0 && pool_conns(f) == 0;
}

TEST(hbone_pool_releases_a_connection_left_without_streams_after_pool_idle)
{
	struct pfx *f = pfx_new(3600);
	REQUIRE(f->a.pool);
	f->a.opts.pool_idle_ms = 100;
	f->srv.answer = true;
	struct creq r[2];
	submit(f, &f->pods[0], &r[0]);
	struct all_ok w = {r, 1};
	REQUIRE(run_until(f->a.loop, all_answered, &w, 10000));
	/* while a stream is open the connection stays, idle deadline or not */
	run_until(f->a.loop, NULL, NULL, 300);
	CHECK_INT(pool_conns(f), 1);
	CHECK_INT(srv_open_conns(&f->srv), 1);
	/* the stream ends: the connection is released once idle */
	close(r[0].app);
	r[0].app = -1;
	close(f->srv.up[0]);
	f->srv.up[0] = -1;
	CHECK(run_until(f->a.loop, no_conns, f, 10000));
	/* and the next request opens a new one */
	submit(f, &f->pods[0], &r[1]);
	struct all_ok w1 = {&r[1], 1};
	CHECK(run_until(f->a.loop, all_answered, &w1, 10000));
	CHECK_INT(f->srv.accepted, 2);
	creqs_close(r, 2);
	pfx_free(f);
}
