#include "proxy/join.h"

#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bpf/dataplane.h"
#include "core/log.h"
#include "obs/metrics.h"
#include "proxy/connector.h"
#include "proxy/proxy.h"
#include "proxy/proxy_state.h"
#include "proxy/relay.h"

/* Passing a FIN on waits until the kernel has written everything it redirected; polled
 * every JOIN_FLUSH_MS, at most JOIN_FLUSH_TRIES times, then the pair is reset. */
#define JOIN_FLUSH_MS    2
#define JOIN_FLUSH_TRIES 2500

enum { SIDE_APP = 0, SIDE_UP = 1 }; /* source app's socket, destination app's socket */

struct join {
	struct agent *agent;
	struct conn *rec[2];  /* [0] outbound (source pod), [1] inbound (destination pod) */
	struct pod *dst_pod;
	int fd[2];
	uint64_t cookie[2];
	uint64_t written0[2]; /* acked + queued on fd[i] at join time */
	struct loop_io io[2];
	struct loop_timer flush;
	int flush_tries;
	bool joined;          /* in the sockhash (else relay or still connecting) */
	bool eof[2];          /* fd[i] read EOF */
	bool shut[2];         /* shutdown(fd[i], SHUT_WR) done */
	struct connector *connecting;
	struct relay *relay;  /* fallback */
	bool finished;
};

static const char *side_name(int i)
{
	return i == SIDE_APP ? "source app socket" : "destination app socket";
}

/* Bytes written into fd so far (acknowledged + still queued), from the kernel's counters. */
static uint64_t written_total(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	int outq = 0;
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0 || ioctl(fd, SIOCOUTQ, &outq) < 0)
		return 0;
	return ti.tcpi_bytes_acked + (uint64_t)(outq > 0 ? outq : 0);
}

static void records_close(struct join *j, uint64_t to_dest, uint64_t to_source,
			  const char *error)
{
	for (int i = 0; i < 2; i++) {
		struct conn *c = j->rec[i];
		j->rec[i] = NULL;
		if (!c)
			continue;
		c->join = NULL;
		conn_close(c, to_dest, to_source, error);
	}
}

static void join_finish(struct join *j, bool rst, const char *error)
{
	if (j->finished)
		return;
	j->finished = true;
	struct agent *a = j->agent;
	uint64_t bytes[2] = {0, 0};
	loop_timer_cancel(a->loop, &j->flush);
	for (int i = 0; i < 2; i++)
		loop_io_del(a->loop, &j->io[i]);
	if (j->joined)
		dataplane_unjoin(a->dp, j->cookie, bytes);
	for (int i = 0; i < 2; i++) {
		if (j->fd[i] < 0)
			continue;
		if (rst)
			close_rst(j->fd[i]);
		else
			close(j->fd[i]);
		j->fd[i] = -1;
	}
	records_close(j, bytes[SIDE_APP], bytes[SIDE_UP], error);
	free(j);
}

void join_reset(struct join *j, const char *why)
{
	if (j->connecting) {
		connector_cancel(j->connecting);
		j->connecting = NULL;
	}
	if (j->relay) {
		struct relay *r = j->relay;
		j->relay = NULL;
		relay_reset(r, why); /* its done callback finishes j */
		return;
	}
	join_finish(j, true, why);
}

static void on_io(struct join *j, int i, uint32_t events);
static void on_io_app(struct loop_io *io, uint32_t ev)
{
	on_io(container_of(io, struct join, io[SIDE_APP]), SIDE_APP, ev);
}
static void on_io_up(struct loop_io *io, uint32_t ev)
{
	on_io(container_of(io, struct join, io[SIDE_UP]), SIDE_UP, ev);
}

/* Everything the kernel redirected from fd[i] is in fd[!i]'s write queue: pass the FIN. */
static bool flushed(struct join *j, int i)
{
	uint64_t moved = dataplane_join_bytes(j->agent->dp, j->cookie[i]);
	uint64_t written = written_total(j->fd[!i]);
	if (j->flush_tries == 0)
		log_debug("same-node join: %s EOF: %llu bytes redirected, %llu written to the peer",
			  side_name(i), (unsigned long long)moved,
			  (unsigned long long)(written - j->written0[!i]));
	return written >= j->written0[!i] && written - j->written0[!i] >= moved;
}

static void pass_fins(struct join *j)
{
	bool waiting = false;
	for (int i = 0; i < 2; i++) {
		if (!j->eof[i] || j->shut[!i])
			continue;
		if (!flushed(j, i)) {
			waiting = true;
			continue;
		}
		shutdown(j->fd[!i], SHUT_WR);
		j->shut[!i] = true;
	}
	if (j->shut[0] && j->shut[1]) {
		join_finish(j, false, NULL);
		return;
	}
	if (!waiting)
		return;
	if (++j->flush_tries > JOIN_FLUSH_TRIES) {
		join_finish(j, true, "kernel did not flush the joined bytes before FIN");
		return;
	}
	loop_timer_arm(j->agent->loop, &j->flush, JOIN_FLUSH_MS);
}

static void on_flush(struct loop_timer *t)
{
	pass_fins(container_of(t, struct join, flush));
}

static void on_io(struct join *j, int i, uint32_t events)
{
	char why[200];
	if (events & EPOLLERR) {
		int err = 0;
		socklen_t l = sizeof(err);
		getsockopt(j->fd[i], SOL_SOCKET, SO_ERROR, &err, &l);
		snprintf(why, sizeof(why), "%s: %s", side_name(i), errno_name(err ? err : ECONNRESET));
		join_finish(j, true, why);
		return;
	}
	char c;
	ssize_t n = recv(j->fd[i], &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0) {
		/* Bytes reached user space: the kernel found no peer for them. Their order with
		 * what it redirected is lost, so the connection cannot go on (fail closed). */
		snprintf(why, sizeof(why), "%s: data reached user space past the join", side_name(i));
		log_warn("same-node join %s -> %s: %s; reset", j->rec[0]->src_workload,
			 j->rec[0]->dst_workload, why);
		metrics_counter_add(j->agent->metrics, "moat_join_failures_total", NULL, 1);
		join_finish(j, true, why);
		return;
	}
	/* Watched for EPOLLRDHUP only (a joined socket's EPOLLIN says nothing: the kernel
	 * takes its bytes), so a wake-up without EOF is spurious. */
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) &&
	    !(events & (EPOLLHUP | EPOLLRDHUP)))
		return;
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
		snprintf(why, sizeof(why), "%s: %s", side_name(i), errno_name(errno));
		join_finish(j, true, why);
		return;
	}
	j->eof[i] = true;
	loop_io_del(j->agent->loop, &j->io[i]); /* level-triggered EOF would wake us forever */
	pass_fins(j);
}

/* ---- fallback: relay the two sockets in user space ---- */

static void relay_done(void *user, uint64_t a_to_b, uint64_t b_to_a, const char *error)
{
	struct join *j = user;
	j->relay = NULL;
	j->fd[0] = j->fd[1] = -1; /* the relay closed them */
	if (j->finished)
		return;
	j->finished = true;
	records_close(j, a_to_b, b_to_a, error);
	free(j);
}

static void fall_back(struct join *j, const char *why)
{
	struct agent *a = j->agent;
	if (!a->proxy->join_fallback_logged) {
		log_warn("same-node join %s -> %s failed: %s; relaying in user space (logged "
			 "once; counted in moat_join_failures_total)",
			 j->rec[0]->src_workload, j->rec[0]->dst_workload, why);
		a->proxy->join_fallback_logged = true;
	}
	metrics_counter_add(a->metrics, "moat_join_failures_total", NULL, 1);
	j->relay = relay_new(a->loop, j->fd[SIDE_APP], j->fd[SIDE_UP], relay_done, j);
	if (!j->relay) {
		join_finish(j, true, "cannot watch sockets");
		return;
	}
	for (int i = 0; i < 2; i++)
		conn_set_engine(j->rec[i], "userspace");
}

static void upstream_ready(void *arg, int fd, int err_no, const char *error)
{
	(void)err_no;
	struct join *j = arg;
	struct agent *a = j->agent;
	j->connecting = NULL;
	if (fd < 0) {
		log_info("same-node %s -> %s: %s", j->rec[0]->src_workload,
			 j->rec[0]->dst_workload, error);
		join_finish(j, true, error);
		return;
	}
	j->fd[SIDE_UP] = fd;
	for (int i = 0; i < 2; i++)
		conn_opened(j->rec[i]);
	struct err e = {{0}};
	for (int i = 0; i < 2; i++)
		j->written0[i] = written_total(j->fd[i]);
	if (dataplane_join(a->dp, j->fd, j->cookie, &e) < 0) {
		fall_back(j, e.msg);
		return;
	}
	j->joined = true;
	loop_io_add(a->loop, &j->io[SIDE_APP], j->fd[SIDE_APP], EPOLLRDHUP, on_io_app);
	loop_io_add(a->loop, &j->io[SIDE_UP], j->fd[SIDE_UP], EPOLLRDHUP, on_io_up);
}

static struct conn *record(struct agent *a, enum conn_dir dir, struct pod *owner,
			   struct pod *src, const struct dest *d, const struct moat_addr *dst,
			   uint16_t dport, uint16_t sport, const char *policy, struct join *j)
{
	struct conn *c = conn_new(a, dir, PATH_SAME_NODE, owner);
	conn_set_src(c, pod_addr_like(src, dst), sport, src->key, src->spiffe_id);
	conn_set_dst(c, dst, dport, d->name, d->spiffe_id);
	conn_set_policy(c, policy);
	conn_set_engine(c, "sockmap");
	c->join = j;
	return c;
}

void join_start(struct agent *a, struct pod *src, struct pod *dst_pod, int app_fd,
		const struct dest *d, const struct moat_addr *dst, uint16_t dport, uint16_t sport,
		const char *dec_policy, const struct conn *svc)
{
	struct join *j = xcalloc(1, sizeof(*j));
	j->agent = a;
	j->dst_pod = dst_pod;
	j->fd[SIDE_APP] = app_fd;
	j->fd[SIDE_UP] = -1;
	for (int i = 0; i < 2; i++)
		loop_io_init(&j->io[i]);
	loop_timer_init(&j->flush, on_flush);
	j->rec[0] = record(a, CONN_OUTBOUND, src, src, d, dst, dport, sport, dec_policy, j);
	j->rec[1] = record(a, CONN_INBOUND, dst_pod, src, d, dst, dport, sport, dec_policy, j);
	conn_copy_service(j->rec[0], svc);
	/* As the destination's inbound path would: from inside its netns, from the source
	 * pod's address where policy routing allows (the app sees the real client). */
	j->connecting = pod_app_connect(a, dst_pod, pod_addr_like(src, dst), dst, dport,
					upstream_ready, j);
}
