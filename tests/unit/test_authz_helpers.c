/* Helpers shared by the config, authz and lint unit tests (declared in each test file). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "policy/authz.h"
#include "test.h"

/* Load one YAML text shown as "test.yaml"; NULL (and the findings printed) on failure. */
struct mesh_config *th_load(const char *yaml)
{
	const char *names[] = {"test.yaml"};
	const char *texts[] = {yaml};
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	if (mesh_config_load_texts(names, texts, 1, &c, &f) == 0) {
		authz_lint_loaded(c, NULL); /* as moatd and moatctl lint do */
	} else {
		char buf[1024];
		for (size_t i = 0; i < f.n; i++)
			fprintf(stderr, "    %s\n", mc_finding_str(&f.items[i], buf, sizeof(buf)));
	}
	mc_findings_free(&f);
	return c;
}

/* Load expecting failure: true when the load failed; its findings are left in f. */
bool th_load_fails(const char *yaml, struct mc_findings *f)
{
	const char *names[] = {"test.yaml"};
	const char *texts[] = {yaml};
	struct mesh_config *c = NULL;
	int rc = mesh_config_load_texts(names, texts, 1, &c, f);
	if (c)
		mesh_config_unref(c);
	return rc != 0 && c == NULL;
}

/* The first finding of that severity whose field contains `field` (NULL: any) and whose
 * message contains `msg`. */
const struct mc_finding *th_find(const struct mc_findings *f, enum mc_severity sev,
				 const char *field, const char *msg)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct mc_finding *it = &f->items[i];
		if (it->severity != sev)
			continue;
		if (field && (!it->field || !strstr(it->field, field)))
			continue;
		if (msg && (!it->message || !strstr(it->message, msg)))
			continue;
		return it;
	}
	return NULL;
}

void th_dump(const struct mc_findings *f)
{
	char buf[1024];
	for (size_t i = 0; i < f->n; i++)
		fprintf(stderr, "    %s\n", mc_finding_str(&f->items[i], buf, sizeof(buf)));
}

/* Decide a connection from `principal` (NULL: plaintext; with or without spiffe://) at
 * src_ip (NULL: unknown) to dst:port (a WorkloadEntry, else a ServiceEntry address).
 * Returns the action, MOAT_ACTION_NONE when the destination is unknown. */
enum moat_action th_decide(const struct mesh_config *c, const char *principal, const char *src_ip,
			   const char *dst, uint16_t port, struct authz_decision *d)
{
	struct authz_target t = {0};
	struct authz_peer p = {0};
	if (!addr_parse(dst, &t.ip))
		return MOAT_ACTION_NONE;
	t.port = port;
	if ((t.workload = mc_workload_by_addr(c, &t.ip)))
		t.kind = AUTHZ_TARGET_WORKLOAD;
	else if ((t.service = mc_service_by_addr(c, &t.ip)))
		t.kind = AUTHZ_TARGET_SERVICE;
	else
		return MOAT_ACTION_NONE;
	p.principal = principal;
	if (src_ip) {
		if (!addr_parse(src_ip, &p.ip))
			return MOAT_ACTION_NONE;
		p.has_ip = true;
	}
	memset(d, 0, sizeof(*d));
	authz_evaluate(c, &t, &p, d);
	return d->action;
}

/* dir/name with text (tests of directory loading). */
void th_write_file(const char *dir, const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
	free(path);
}

void th_remove_tree(const char *dir)
{
	char *cmd = xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	free(cmd);
}
