/* The HBONE connection pool of the outbound side: connections keyed by (source pod, source
 * identity, destination identity, destination address), each carrying up to 100 streams,
 * so a new TCP connection costs one HTTP/2 stream, not one TLS handshake. Connections are
 * made from inside the source pod's netns (the pool key includes the pod: its address is the
 * source address), released after `pool_idle_ms` without streams. */
#ifndef MOAT_PROXY_POOL_H
#define MOAT_PROXY_POOL_H

#include "hbone/h2.h"
#include "state/agent.h"

struct pool_req {
	struct pod *src;
	const char *dst_id;           /* SPIFFE ID the server must present */
	struct moat_addr dst_ip;      /* dialed at :15008 */
	const char *authority;        /* "ip:port" of the original destination */
	const char *const *headers;   /* name, value pairs */
	int n_headers;
	int app_fd;                   /* owned by the pool from now on */
	const struct h2stream_ops *ops;
	void *user;
};

struct hbone_pool *hbone_pool_new(struct agent *a);
void hbone_pool_free(struct hbone_pool *p);
/* Open a stream for r. The outcome always arrives through r->ops, later or during this
 * call: on_response / on_close with the stream, or on_close(NULL stream) when no connection
 * could be made. The caller must not touch r->user after this returns unless it knows it
 * is still alive. */
void hbone_pool_submit(struct hbone_pool *p, const struct pool_req *r);
/* Close every connection made from this pod (unenroll). */
void hbone_pool_drop_pod(struct hbone_pool *p, struct pod *pod);
/* Pooled connections and streams, for `moatctl status` / metrics. */
void hbone_pool_counts(const struct hbone_pool *p, int *conns, int *streams);
/* CONNECTs queued or sent that have no response yet. */
int hbone_pool_waiting(const struct hbone_pool *p);
void hbone_pool_dump(const struct hbone_pool *p, struct sbuf *out);

#endif
