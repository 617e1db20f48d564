/* Endpoint choice among allowed endpoints: see svc_choice.h. */
#include <stdlib.h>
#include <string.h>

#include "moat/abi.h"
#include "state/svc_choice.h"

size_t svc_decide_endpoints(const struct svc_port *p, svc_decide_fn fn, void *arg,
			    struct svc_ep_verdict *v, bool *allowed)
{
	size_t n = 0;
	for (size_t i = 0; i < p->n_eps; i++) {
		v[i] = (struct svc_ep_verdict){.action = MOAT_ACTION_DENY};
		fn(arg, &p->eps[i], &v[i]);
		allowed[i] = v[i].action == MOAT_ACTION_ALLOW && p->eps[i].weight > 0;
		n += allowed[i];
	}
	return n;
}

int svc_choose(const struct svc_port *p, const bool *allowed, const bool *tried, uint64_t rnd)
{
	if (!p->n_eps)
		return -1;
	bool *ok = xcalloc(p->n_eps, sizeof(*ok));
	for (size_t i = 0; i < p->n_eps; i++)
		ok[i] = allowed[i] && !(tried && tried[i]);
	int pick = svc_pick(p, ok, rnd);
	free(ok);
	return pick;
}

struct svc_ep_verdict svc_port_verdict(const struct svc_port *p, const struct svc_ep_verdict *v,
				       size_t n_allowed)
{
	if (n_allowed)
		return (struct svc_ep_verdict){.action = MOAT_ACTION_ALLOW,
					       .reason = MOAT_REASON_ALLOWED};
	struct svc_ep_verdict out = {.action = MOAT_ACTION_DENY, .reason = MOAT_REASON_NO_ENDPOINT};
	for (size_t i = 0; i < p->n_eps && !out.policy; i++)
		out.policy = v[i].policy;
	return out;
}

void svc_deny_summary(const struct svc_port *p, const struct svc_ep_verdict *v,
		      struct sbuf *out)
{
	if (!p->n_eps) {
		sbuf_puts(out, "no endpoints");
		return;
	}
	for (size_t i = 0; i < p->n_eps; i++) {
		const struct svc_endpoint *e = &p->eps[i];
		if (i)
			sbuf_puts(out, "; ");
		if (v[i].action == MOAT_ACTION_ALLOW)
			sbuf_printf(out, "%s: weight 0 (never chosen)", e->name);
		else if (v[i].policy)
			sbuf_printf(out, "%s: DENY by %s", e->name, v[i].policy);
		else
			sbuf_printf(out, "%s: DENY (%s)", e->name,
				    v[i].reason == MOAT_REASON_NO_ALLOW ? "no ALLOW policy matched"
									: "no policy allows it");
	}
}
