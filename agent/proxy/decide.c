/* The decisions of outbound.c and inbound.c (proxy/decide.h). */
#include "proxy/decide.h"

#include <string.h>

#include "core/reasons.h"
#include "identity/identity.h"
#include "proxy/connect_req.h"
#include "proxy/engine.h"
#include "proxy/proxy.h"

/* The reason code logged with an authorization deny (one mapping for every phase). */
static const char *deny_code(const struct authz_decision *dec)
{
	switch (dec->reason) {
	case MOAT_REASON_STRICT_PLAIN:
	case MOAT_REASON_POLICY_DENY:
		return moat_reason_code(dec->reason);
	default:
		return moat_reason_code(MOAT_REASON_NO_ALLOW);
	}
}

static void out_deny(struct outbound_decision *o, const char *reason, const char *code)
{
	o->path = OUT_DENY;
	o->reason = reason;
	o->code = code;
}

/* A ServiceEntry or a workload with an agent in front: the engine decides, then the path. */
static void out_authorized(struct agent *a, struct pod *p, const struct moat_addr *dst,
			   uint16_t dport, struct outbound_decision *o)
{
	/* The pod speaks from its address of the family it dialed (dual stack). */
	const struct moat_addr *src = pod_addr_like(p, dst);
	agent_authorize(a, &o->d, dst, dport, p->principal, src, &o->authz);
	o->authorized = true;
	o->policy = o->authz.policy ? o->authz.policy->id_name : NULL;
	if (o->authz.action != MOAT_ACTION_ALLOW) {
		out_deny(o, o->authz.why, deny_code(&o->authz));
		return;
	}
	/* Both pods here: the decision above is the destination's own (its policies, the
	 * source's identity and address), exactly what its inbound would decide. */
	if (o->d.kind == DEST_WORKLOAD && o->d.local && o->d.local != p &&
	    engine_allows_sockmap(a))
		o->path = OUT_SAME_NODE;
	else
		o->path = o->d.kind == DEST_SERVICE ? OUT_EGRESS : OUT_HBONE;
}

void outbound_decide(struct agent *a, struct pod *p, const struct moat_addr *dst, uint16_t dport,
		     struct outbound_decision *out)
{
	memset(out, 0, sizeof(*out));
	agent_lookup_dest(a, dst, &out->d);
	if (is_agent_port(dport)) {
		out_deny(out, moat_reason_text(MOAT_REASON_AGENT_PORT),
			 moat_reason_code(MOAT_REASON_AGENT_PORT));
		return;
	}
	if (out->d.kind == DEST_NONE) {
		if (a->cfg->mesh.outbound == MC_OUTBOUND_REGISTRY_ONLY && !addr_is_loopback(dst))
			out_deny(out, "outboundTrafficPolicy REGISTRY_ONLY: destination is not in the "
				      "registry (no WorkloadEntry or ServiceEntry)",
				 moat_reason_code(MOAT_REASON_UNREGISTERED));
		else
			out->path = OUT_PASSTHROUGH;
		return;
	}
	if (out->d.kind == DEST_SERVICE || out->d.ambient) {
		out_authorized(a, p, dst, dport, out);
		return;
	}
	/* A workload without an agent: plaintext, as ztunnel. */
	out->path = OUT_PLAINTEXT;
}

/* The dialed destination is local pod p; authorize principal (NULL: plaintext) from src. */
static void in_authorize(struct agent *a, struct pod *p, const char *principal,
			 const struct moat_addr *src, struct inbound_decision *o)
{
	if (!agent_lookup_dest(a, &o->dst, &o->d) || o->d.local != p) {
		o->status = 503;
		o->why = "no such workload on this node";
		return;
	}
	agent_authorize(a, &o->d, &o->dst, o->dport, principal, src, &o->authz);
	o->policy = o->authz.policy ? o->authz.policy->id_name : NULL;
	if (o->authz.action != MOAT_ACTION_ALLOW) {
		o->status = 401;
		o->why = o->authz.why;
		o->code = deny_code(&o->authz);
		return;
	}
	o->status = 200;
}

void inbound_hbone_decide(struct agent *a, struct pod *p, const struct hbone_request *r,
			  struct inbound_decision *out)
{
	memset(out, 0, sizeof(*out));
	/* The dialed pod is the one owning the address the tunnel reached; the authority may be
	 * any of its addresses (dual stack: a peer may tunnel over one family to the other). */
	int refusal = hbone_connect_check(r, p->n_addrs ? p->addrs : &p->addr,
					  p->n_addrs ? p->n_addrs : 1, &out->dst, &out->dport,
					  out->buf, sizeof(out->buf));
	if (refusal) {
		out->status = refusal;
		out->why = out->buf;
		return;
	}
	in_authorize(a, p, spiffe_principal(r->peer_id), &r->peer_addr, out);
}

void inbound_plain_decide(struct agent *a, struct pod *p, const struct moat_addr *src,
			  const struct moat_addr *dst, uint16_t dport, struct inbound_decision *out)
{
	memset(out, 0, sizeof(*out));
	out->dst = *dst;
	out->dport = dport;
	if (is_agent_port(dport)) {
		out->status = 503;
		out->why = moat_reason_text(MOAT_REASON_AGENT_PORT);
		return;
	}
	in_authorize(a, p, NULL, src, out);
}
