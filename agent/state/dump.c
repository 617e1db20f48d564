/* The configuration in force and the enrolled pods as JSON: the admin port's /config_dump
 * (obs/endpoints.c serves it; main.c wires it here). */
#include "state/agent.h"

void agent_config_dump(struct agent *a, struct sbuf *b)
{
	const struct mesh_config *c = a->cfg;
	sbuf_puts(b, "{\"config_dir\":");
	sbuf_json_str(b, a->opts.config_dir);
	sbuf_printf(b, ",\"digest\":\"%s\",\"trust_domain\":", c->digest);
	sbuf_json_str(b, c->mesh.trust_domain);
	sbuf_puts(b, ",\"root_namespace\":");
	sbuf_json_str(b, c->mesh.root_namespace);
	sbuf_printf(b, ",\"outbound_traffic_policy\":\"%s\",\"workloads\":[",
		    c->mesh.outbound == MC_OUTBOUND_REGISTRY_ONLY ? "REGISTRY_ONLY" : "ALLOW_ANY");
	for (size_t i = 0; i < c->n_workloads; i++) {
		char s[ADDR_STRLEN];
		const struct mc_workload *w = &c->workloads[i];
		sbuf_printf(b, "%s{\"name\":", i ? "," : "");
		sbuf_json_str(b, w->meta.name);
		sbuf_puts(b, ",\"namespace\":");
		sbuf_json_str(b, w->meta.ns);
		sbuf_printf(b, ",\"address\":\"%s\",\"identity\":", addr_str(&w->address, s, sizeof(s)));
		sbuf_json_str(b, w->spiffe_id);
		sbuf_printf(b, ",\"ambient\":%s}", w->ambient ? "true" : "false");
	}
	sbuf_puts(b, "],\"policies\":[");
	static const char *actions[] = {"ALLOW", "DENY", "AUDIT", "CUSTOM"};
	for (size_t i = 0; i < c->n_policies; i++) {
		const struct mc_authz *p = &c->policies[i];
		sbuf_printf(b, "%s{\"name\":", i ? "," : "");
		sbuf_json_str(b, p->id_name);
		sbuf_printf(b, ",\"action\":\"%s\",\"rules\":%zu,\"dry_run\":%s,\"file\":",
			    actions[p->action], p->n_rules, p->dry_run ? "true" : "false");
		sbuf_json_str(b, p->meta.file);
		sbuf_printf(b, ",\"line\":%d}", p->meta.line);
	}
	sbuf_puts(b, "],\"pods\":[");
	for (struct pod *p = a->pods; p; p = p->next) {
		char s[ADDR_STRLEN];
		sbuf_printf(b, "%s{\"name\":", p == a->pods ? "" : ",");
		sbuf_json_str(b, p->key);
		sbuf_printf(b, ",\"address\":\"%s\",\"identity\":", addr_str(&p->addr, s, sizeof(s)));
		sbuf_json_str(b, p->spiffe_id);
		sbuf_puts(b, "}");
	}
	sbuf_puts(b, "]}\n");
}
