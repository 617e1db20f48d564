/* The agent's service table: rebuilt from the configuration in force and the enrolled pods
 * whenever the dataplane is synced, and swapped in whole (state/services.h). */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "state/agent.h"
#include "state/services.h"

static bool has_finding(const struct mc_findings *f, const char *s)
{
	char buf[1024];
	for (size_t i = 0; f && i < f->n; i++)
		if (!strcmp(mc_finding_str(&f->items[i], buf, sizeof(buf)), s))
			return true;
	return false;
}

/* Every sync rebuilds the table: say only what changed since the last one (a Service that
 * selected nothing is logged when that starts, not at every enroll). */
static void log_new_findings(const struct svc_table *t, const struct svc_table *prev)
{
	char buf[1024];
	for (size_t i = 0; i < t->findings.n; i++) {
		mc_finding_str(&t->findings.items[i], buf, sizeof(buf));
		if (!has_finding(prev ? &prev->findings : NULL, buf))
			log_warn("%s", buf);
	}
}

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
			.meta_labels = &pod_workload(p)->meta.labels,
			.addrs = p->addrs,
			.n_addrs = p->n_addrs,
			.entry = p->entry,
		};
	}
	struct svc_table *t = svc_table_build(a->cfg, lp, n, a->svcs, NULL);
	free(lp);
	log_new_findings(t, a->svcs);
	svc_table_unref(a->svcs);
	a->svcs = t;
}
