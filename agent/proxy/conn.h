/* One proxied connection as the agent accounts for it: who talked to whom, under which
 * verdict and policy, over which path, how many bytes, how long, and how it ended. Opening
 * and closing update ztunnel's metrics; closing writes one JSON access-log line. Also the
 * deny records (connect-time fast denies, outbound and inbound refusals). */
#ifndef MOAT_PROXY_CONN_H
#define MOAT_PROXY_CONN_H

#include <stdint.h>

#include "obs/access.h"
#include "state/agent.h"

enum conn_dir { CONN_OUTBOUND = 0, CONN_INBOUND = 1 };
enum conn_path {
	PATH_HBONE = 0,      /* mTLS tunnel to a pod's agent */
	PATH_PLAINTEXT,      /* workload without an agent, reached directly */
	PATH_EGRESS,         /* ServiceEntry / outside the mesh, reached directly */
	PATH_INBOUND_PLAIN,  /* PERMISSIVE plaintext into a local pod (15006) */
	PATH_SAME_NODE,      /* both pods on this node: joined in the kernel (proxy/join.c) */
};

struct h2stream;
struct relay;
struct connector;
struct join;

struct conn {
	struct agent *agent;
	struct conn *prev, *next;
	uint64_t id;
	enum conn_dir dir;
	enum conn_path path;
	struct pod *pod; /* the local pod: source (outbound) or destination (inbound) */
	struct moat_addr src, dst;
	uint16_t sport, dport;
	/* Interned in agent->strings (no per-connection copies); may be NULL. */
	const char *src_workload, *src_identity, *dst_workload, *dst_identity;
	const char *policy; /* deciding ALLOW policy "ns/name", NULL when none */
	int64_t start_wall_ms;
	uint64_t start_ms;
	/* data path (at most one is active) */
	int app_fd;                 /* accepted socket before the relay owns it, else -1 */
	struct connector *connecting;
	struct relay *relay;
	struct h2stream *stream;
	struct join *join;   /* same node: the pair both records belong to */
	const char *engine;  /* what carried the bytes: "sockmap" or "userspace" (static) */
	char *note;          /* why it failed before it was carried (upstream connect error) */
	bool opened;         /* counted as opened (authorized and carried) */
	bool closed_as_deny; /* refused by the peer: logged as a deny, not as a connection */
	bool rechecked_deny; /* a policy change denied it: being closed */
	bool closed;
	/* A connection to a service VIP (proxy/svc_out.c); all NULL / 0 for a direct one. */
	const char *svc_host;     /* name.ns.svc.<domain> (ServiceEntry: its first host) */
	const char *svc_name, *svc_ns;
	const char *svc_endpoint; /* the chosen endpoint "ns/name" */
	struct moat_addr svc_vip;
	uint16_t svc_port;
	struct svc_attempt *attempt; /* endpoint choice and retries, until opened */
};

struct conn *conn_new(struct agent *a, enum conn_dir dir, enum conn_path path, struct pod *pod);
void conn_set_src(struct conn *c, const struct moat_addr *a, uint16_t port, const char *workload,
		  const char *identity);
void conn_set_dst(struct conn *c, const struct moat_addr *a, uint16_t port, const char *workload,
		  const char *identity);
void conn_set_policy(struct conn *c, const char *policy);
/* The service the connection was dialed as (host, "name", "ns"), its VIP and port. */
void conn_set_service(struct conn *c, const char *host, const char *name, const char *ns,
		      const struct moat_addr *vip, uint16_t port);
void conn_set_endpoint(struct conn *c, const char *endpoint);
/* Copy the service fields of from (NULL: none) to c. */
void conn_copy_service(struct conn *c, const struct conn *from);
/* The engine carrying the connection ("sockmap", "userspace"; a static string). */
void conn_set_engine(struct conn *c, const char *engine);
/* The connection is authorized and carried: count it as opened. */
void conn_opened(struct conn *c);
/* Finished: metrics, one access-log line, unlink and free. to_dest: bytes the source sent
 * to the destination (request); to_source: the response. */
void conn_close(struct conn *c, uint64_t to_dest, uint64_t to_source, const char *error);

/* An HBONE stream's payload that went through moatd's own buffers (copied into or out of
 * user space), per tunnel direction: moat_relay_payload_copied_bytes_total. A zero-copy
 * payload path (kTLS + splice) leaves to_tunnel at 0. */
void conn_count_copied(struct conn *c, uint64_t to_tunnel, uint64_t from_tunnel);

/* connector callback for the plaintext paths: relay the accepted socket (c->app_fd) with the
 * upstream one, or reset it and close the record with the connect error. */
void conn_upstream_relay(void *arg, int fd, int err_no, const char *error);

/* Drop the record without logging (it was already logged as a deny). */
void conn_discard(struct conn *c);

/* A deny about a connection the agent already has a record for (its addresses, workloads
 * and identities come from the record). */
void conn_log_deny(const struct conn *c, const char *phase, const char *policy,
		   const char *reason, const char *reason_code);

#endif
