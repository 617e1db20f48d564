/* The agent's service table: rebuilt from the configuration in force and the enrolled pods
 * whenever the dataplane is synced, and swapped in whole (state/services.h). */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "state/agent.h"
#include "state/services.h"

void agent_services_rebuild(struct agent *a)
{
	size_t n = 0;
	for (struct pod *p = a->pods; p; p = p->next)
		n++;
	struct svc_local_pod *lp = xcalloc(n ? n : 1, sizeof(*lp));
	size_t i = 0;
	for (struct pod *p = a->pods; p; p = p->next, i++) {
		lp[i] = (struct svc_local_pod){
			.ns = p->ns,
			.name = p->name,
			.labels = &pod_workload(p)->labels,
			.addrs = p->addrs,
			.n_addrs = p->n_addrs,
			.entry = p->entry,
		};
	}
	struct mc_findings f = {0};
	struct svc_table *t = svc_table_build(a->cfg, lp, n, a->svcs, &f);
	free(lp);
	agent_log_findings(&f, MC_WARNING);
	mc_findings_free(&f);
	svc_table_unref(a->svcs);
	a->svcs = t;
}
