#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "proxy/proxy.h"
#include "state/services.h"
#include "state/verdicts.h"
#include "state/wl_map.h"

static int write_config(struct fx *f, const char *yaml)
{
	char path[192];
	snprintf(path, sizeof(path), "%s/mesh.yaml", f->dir);
	FILE *fp = fopen(path, "w");
	if (!fp)
		return -1;
	int rc = fputs(yaml, fp) < 0 ? -1 : 0;
	return fclose(fp) == 0 ? rc : -1;
}

struct fx *fx_new(const char *yaml)
{
	/* each sync logs a line at info: keep the test output to what went wrong */
	log_setup("moatd", LOG_WARN, NULL);
	struct fx *f = xcalloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/moat-fakedp-XXXXXX");
	f->next_cookie = 1000;
	f->a = xcalloc(1, sizeof(*f->a));
	f->a->loop = loop_new();
	f->a->dp = fake_dp_new();
	f->a->opts.config_dir = f->dir;
	f->a->opts.engine = ENGINE_SOCKMAP;
	f->a->signal_fd = f->a->inotify_fd = f->a->reload_efd = -1;
	f->a->proxy = proxy_new(f->a); /* as agent_start: reload re-checks its connections */
	if (!mkdtemp(f->dir) || write_config(f, yaml) < 0 || agent_config_reload(f->a) < 0) {
		fx_free(f);
		return NULL;
	}
	return f;
}

static void pod_free(struct agent *a, struct pod *p)
{
	intern_release(&a->workload_ids, p->workload_id, 0);
	intern_release(&a->identity_ids, p->identity_id, 0);
	free(p->ns);
	free(p->name);
	free(p->key);
	free(p->fs_key);
	free(p->spiffe_id);
	free(p->principal);
	free(p->synth.service_account);
	free(p);
}

void fx_free(struct fx *f)
{
	if (!f)
		return;
	struct agent *a = f->a;
	while (a->pods) {
		struct pod *p = a->pods;
		a->pods = p->next;
		pod_free(a, p);
	}
	proxy_free(a);
	verdicts_free(a->verdicts);
	svc_table_unref(a->svcs);
	agent_svc_state_free(a);
	intern_free(&a->workload_ids);
	intern_free(&a->identity_ids);
	intern_free(&a->policy_ids);
	intern_free(&a->strings);
	if (a->cfg)
		mesh_config_unref(a->cfg);
	mc_load_cache_free(a->load_cache);
	wl_map_free(a->wl_map);
	fake_dp_free(a->dp);
	loop_free(a->loop);
	free(a);
	char path[192];
	snprintf(path, sizeof(path), "%s/mesh.yaml", f->dir);
	unlink(path);
	rmdir(f->dir);
	free(f);
}

int fx_reload(struct fx *f, const char *yaml)
{
	if (write_config(f, yaml) < 0)
		return -1;
	return agent_config_reload(f->a);
}

struct pod *fx_pod(struct fx *f, const char *ns, const char *name)
{
	struct agent *a = f->a;
	const struct mc_workload *we = mc_workload_by_name(a->cfg, ns, name);
	if (!we)
		return NULL;
	struct pod *p = xcalloc(1, sizeof(*p));
	p->agent = a;
	p->ns = xstrdup(ns);
	p->name = xstrdup(name);
	p->key = xasprintf("%s/%s", ns, name);
	p->fs_key = xasprintf("%s_%s", ns, name);
	p->entry = we;
	p->synth.service_account = xstrdup(we->service_account);
	p->spiffe_id = xstrdup(we->spiffe_id);
	p->principal = xstrdup(p->spiffe_id + strlen("spiffe://"));
	p->addr = we->address;
	for (size_t i = 0; i < we->n_addrs; i++)
		p->addrs[p->n_addrs++] = we->addrs[i];
	p->netns_fd = p->cgroup_fd = -1;
	p->netns_cookie = f->next_cookie++;
	/* as agent_enroll: ids held by the pod, by the same names the configuration uses */
	p->workload_id = intern_hold(&a->workload_ids, p->key);
	p->identity_id = intern_hold(&a->identity_ids, p->spiffe_id);
	p->next = a->pods;
	a->pods = p;
	agent_sync_dataplane(a);
	return p;
}

uint32_t fx_wl_id(struct fx *f, const char *ns, const char *name)
{
	char key[300];
	snprintf(key, sizeof(key), "%s/%s", ns, name);
	return intern_id(&f->a->workload_ids, key);
}

void fx_yaml_workload(struct sbuf *b, const char *ns, const char *name, const char *addr,
		      const char *sa, const char *labels)
{
	sbuf_printf(b, "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
		       "metadata: {name: %s, namespace: %s}\n"
		       "spec: {address: '%s', serviceAccount: %s, labels: {%s%sistio.io/dataplane-mode: "
		       "ambient}}\n",
		    name, ns, addr, sa, labels, *labels ? ", " : "");
}
