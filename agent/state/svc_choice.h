/* Choosing a service endpoint among those that allow the source (issue 9): the pure part,
 * shared by the verdict sync (state/svc_maps.c: "does any endpoint allow this pod?") and the
 * outbound path (proxy/svc_out.c: "which one, and which next when it fails?").
 *
 * An endpoint is allowed for a source when the verdict a direct connection from that source
 * to the endpoint's address and target port would get is ALLOW and its weight is > 0
 * (weight 0 keeps an endpoint listed, never chosen). moat picks only among allowed endpoints:
 * a deliberate difference from ztunnel, which may pick one that then refuses
 * (docs/policy.md). Unit-tested in tests/unit/test_svc_choice.c. */
#ifndef MOAT_STATE_SVC_CHOICE_H
#define MOAT_STATE_SVC_CHOICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"
#include "state/services.h"

/* Bounded endpoint attempts per service connection (the first one included). */
#define SVC_MAX_ATTEMPTS 3

struct svc_ep_verdict {
	uint32_t action;    /* MOAT_ACTION_ALLOW / MOAT_ACTION_DENY */
	uint32_t reason;    /* enum moat_reason */
	const char *policy; /* the deciding policy "ns/name", NULL when none */
};

/* The verdict of a direct connection to endpoint ep (at ep's target port). */
typedef void (*svc_decide_fn)(void *arg, const struct svc_endpoint *ep,
			      struct svc_ep_verdict *out);

/* Decide every endpoint of p into v[i] and allowed[i] (ALLOW and weight > 0); both arrays
 * have p->n_eps entries. Returns how many are allowed. */
size_t svc_decide_endpoints(const struct svc_port *p, svc_decide_fn fn, void *arg,
			    struct svc_ep_verdict *v, bool *allowed);

/* Weighted pick among the endpoints allowed and not yet tried (tried may be NULL): index,
 * or -1 when none is left. */
int svc_choose(const struct svc_port *p, const bool *allowed, const bool *tried, uint64_t rnd);

/* The service verdict the connect hook caches: ALLOW when an endpoint is allowed, else DENY
 * with reason NO_ENDPOINT and the first endpoint's deciding policy (NULL: no endpoint). */
struct svc_ep_verdict svc_port_verdict(const struct svc_port *p, const struct svc_ep_verdict *v,
				       size_t n_allowed);

/* "ns/a: DENY by ns/p; ns/b: weight 0" for a deny line: each endpoint and what decided it. */
void svc_deny_summary(const struct svc_port *p, const struct svc_ep_verdict *v,
		      struct sbuf *out);

#endif
