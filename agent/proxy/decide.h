/* What the agent does with a connection, decided apart from the sockets that carry it:
 * the outbound path for a captured connect (15001) and the answer to an inbound CONNECT
 * (15008) or plaintext connection (15006). Pure over the agent's state (registry, config,
 * options): outbound.c and inbound.c act on the result; tests/unit/fakedp checks it
 * table-driven without root. */
#ifndef MOAT_PROXY_DECIDE_H
#define MOAT_PROXY_DECIDE_H

#include "hbone/h2.h"
#include "state/agent.h"

enum outbound_path {
	OUT_DENY = 0,    /* refused: reason and code say why */
	OUT_HBONE,       /* authorized; the destination has an agent in front: HBONE (pooled) */
	OUT_SAME_NODE,   /* authorized; both pods here and --engine sockmap: joined in the kernel */
	OUT_EGRESS,      /* authorized; a ServiceEntry: connect directly from the pod */
	OUT_PASSTHROUGH, /* not in the registry, ALLOW_ANY: connect directly, as ztunnel */
	OUT_PLAINTEXT,   /* a workload without an agent in front: plaintext relay */
};

struct outbound_decision {
	enum outbound_path path;
	struct dest d;               /* where dst leads (kind DEST_NONE: unregistered) */
	struct authz_decision authz; /* set when the destination was authorized */
	bool authorized;
	const char *policy;          /* deciding policy, or NULL */
	const char *reason;          /* OUT_DENY: one sentence */
	const char *code;            /* OUT_DENY: AGENT_PORT, UNREGISTERED, POLICY_DENY, NO_ALLOW */
};

/* Pod p dialed dst:dport (the original destination of a captured connect). */
void outbound_decide(struct agent *a, struct pod *p, const struct moat_addr *dst, uint16_t dport,
		     struct outbound_decision *out);

struct inbound_decision {
	int status;                  /* 200 allowed; 400 malformed request; 401 denied by policy;
				      * 503 no such workload on this node */
	struct moat_addr dst;        /* the dialed pod address and port */
	uint16_t dport;
	struct dest d;
	struct authz_decision authz; /* set when status is 200 or 401 */
	const char *policy;          /* deciding policy, or NULL */
	const char *why;             /* status other than 200: one sentence */
	const char *code;            /* 401: POLICY_DENY, NO_ALLOW, STRICT_PLAINTEXT */
	char buf[600];
};

/* An HBONE CONNECT into local pod p from the verified peer r->peer_id at r->peer_addr. */
void inbound_hbone_decide(struct agent *a, struct pod *p, const struct hbone_request *r,
			  struct inbound_decision *out);
/* A plaintext connection from src to dst:dport steered into pod p's 15006 (no identity). */
void inbound_plain_decide(struct agent *a, struct pod *p, const struct moat_addr *src,
			  const struct moat_addr *dst, uint16_t dport, struct inbound_decision *out);

#endif
