/* Effective PeerAuthentication mode of a workload port, as Istio resolves it for ambient:
 * workload (selector) policy -> namespace policy -> mesh policy (root namespace), UNSET
 * inheriting from the level above, the oldest policy winning at each level. A selector
 * policy in the root namespace is ignored (Istio does the same; lint reports it). */
#include <string.h>

#include "policy/authz_internal.h"

static bool older(const struct mc_peer_auth *a, const struct mc_peer_auth *b)
{
	if (!b)
		return true;
	if (a->meta.created_ms != b->meta.created_ms)
		return a->meta.created_ms < b->meta.created_ms;
	return a->meta.seq < b->meta.seq;
}

struct pa_levels {
	const struct mc_peer_auth *workload, *ns, *mesh;
};

static void find_levels(const struct mesh_config *c, const struct mc_workload *w,
			struct pa_levels *l)
{
	const char *root = c->mesh.root_namespace;
	memset(l, 0, sizeof(*l));
	for (size_t i = 0; i < c->n_peer_auths; i++) {
		const struct mc_peer_auth *pa = &c->peer_auths[i];
		bool in_root = strcmp(pa->meta.ns, root) == 0;
		if (!pa->has_selector) {
			if (in_root) {
				if (older(pa, l->mesh))
					l->mesh = pa;
			} else if (strcmp(pa->meta.ns, w->meta.ns) == 0 && older(pa, l->ns)) {
				l->ns = pa;
			}
		} else if (!in_root && strcmp(pa->meta.ns, w->meta.ns) == 0 &&
			   mc_workload_selected(w, &pa->selector) && older(pa, l->workload)) {
			l->workload = pa;
		}
	}
}

enum mc_mtls authz_mtls_mode(const struct mesh_config *c, const struct mc_workload *w,
			     uint16_t port, const struct mc_peer_auth **decider)
{
	struct pa_levels l;
	const struct mc_peer_auth *chosen = NULL;
	enum mc_mtls mode = MC_MTLS_UNSET;

	find_levels(c, w, &l);
	if (l.workload && port) {
		for (size_t i = 0; i < l.workload->n_port_level; i++)
			if (l.workload->port_level[i].port == port &&
			    l.workload->port_level[i].mode != MC_MTLS_UNSET) {
				chosen = l.workload;
				mode = l.workload->port_level[i].mode;
			}
	}
	const struct mc_peer_auth *chain[3] = {l.workload, l.ns, l.mesh};
	for (size_t i = 0; i < 3 && mode == MC_MTLS_UNSET; i++)
		if (chain[i] && chain[i]->mode != MC_MTLS_UNSET) {
			chosen = chain[i];
			mode = chain[i]->mode;
		}
	if (mode == MC_MTLS_UNSET)
		mode = MC_MTLS_PERMISSIVE;
	if (decider)
		*decider = chosen;
	return mode;
}

bool authz_has_port_mtls(const struct mesh_config *c, const struct mc_workload *w)
{
	struct pa_levels l;
	find_levels(c, w, &l);
	return l.workload && l.workload->n_port_level > 0;
}
