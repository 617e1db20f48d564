/* Building and freeing the snapshot's pieces. */
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

void mc_strs_push(struct mc_strs *s, const char *v)
{
	*VEC_PUSH(s->items, s->n, s->cap) = xstrdup(v);
}

void mc_labels_push(struct mc_labels *l, const char *k, const char *v)
{
	struct mc_label *it = VEC_PUSH(l->items, l->n, l->cap);
	it->key = xstrdup(k);
	it->value = xstrdup(v);
}

void mc_strs_free(struct mc_strs *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->items[i]);
	free(s->items);
	memset(s, 0, sizeof(*s));
}

void mc_labels_free(struct mc_labels *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->items[i].key);
		free(l->items[i].value);
	}
	free(l->items);
	memset(l, 0, sizeof(*l));
}

void mc_meta_free(struct mc_meta *m)
{
	free(m->name);
	free(m->ns);
	mc_labels_free(&m->labels);
	mc_labels_free(&m->annotations);
	free(m->file);
}

static void ports_free(struct mc_port *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(p[i].name);
	free(p);
}

static void workload_free(struct mc_workload *w)
{
	mc_meta_free(&w->meta);
	mc_labels_free(&w->labels);
	free(w->service_account);
	free(w->network);
	ports_free(w->ports, w->n_ports);
	free(w->spiffe_id);
}

static void service_free(struct mc_service_entry *se)
{
	mc_meta_free(&se->meta);
	mc_strs_free(&se->hosts);
	free(se->addresses);
	for (size_t i = 0; i < se->n_ports; i++) {
		free(se->ports[i].name);
		free(se->ports[i].protocol);
	}
	free(se->ports);
	for (size_t i = 0; i < se->n_endpoints; i++) {
		struct mc_se_endpoint *ep = &se->endpoints[i];
		free(ep->address);
		mc_labels_free(&ep->labels);
		ports_free(ep->ports, ep->n_ports);
	}
	free(se->endpoints);
	mc_labels_free(&se->workload_selector);
}

static void kservice_free(struct mc_kservice *k)
{
	mc_meta_free(&k->meta);
	for (size_t i = 0; i < k->n_ports; i++) {
		free(k->ports[i].name);
		free(k->ports[i].target_name);
		free(k->ports[i].protocol);
	}
	free(k->ports);
	mc_labels_free(&k->selector);
}

static void source_free(struct mc_source *s)
{
	mc_strs_free(&s->principals);
	mc_strs_free(&s->not_principals);
	mc_strs_free(&s->namespaces);
	mc_strs_free(&s->not_namespaces);
	mc_strs_free(&s->service_accounts);
	mc_strs_free(&s->not_service_accounts);
	free(s->ip_blocks.items);
	free(s->not_ip_blocks.items);
	mc_strs_free(&s->spiffe_written);
}

static void operation_free(struct mc_operation *o)
{
	free(o->ports);
	free(o->not_ports);
	mc_strs_free(&o->named_ports);
	mc_strs_free(&o->named_not_ports);
}

static void when_typed_free(struct mc_when_typed *t)
{
	free(t->cidrs.items);
	free(t->ports);
}

static void rule_free(struct mc_rule *r)
{
	for (size_t i = 0; i < r->n_from; i++)
		source_free(&r->from[i]);
	free(r->from);
	for (size_t i = 0; i < r->n_to; i++)
		operation_free(&r->to[i]);
	free(r->to);
	for (size_t i = 0; i < r->n_when; i++) {
		mc_strs_free(&r->when[i].values);
		mc_strs_free(&r->when[i].not_values);
		mc_strs_free(&r->when[i].spiffe_written);
		when_typed_free(&r->when[i].typed);
		when_typed_free(&r->when[i].not_typed);
	}
	free(r->when);
	for (size_t i = 0; i < r->n_l7; i++) {
		free(r->l7[i].field);
		free(r->l7[i].name);
	}
	free(r->l7);
}

static void authz_free(struct mc_authz *p)
{
	mc_meta_free(&p->meta);
	mc_labels_free(&p->selector);
	for (size_t i = 0; i < p->n_target_refs; i++) {
		free(p->target_refs[i].group);
		free(p->target_refs[i].kind);
		free(p->target_refs[i].name);
		free(p->target_refs[i].ns);
	}
	free(p->target_refs);
	for (size_t i = 0; i < p->n_rules; i++)
		rule_free(&p->rules[i]);
	free(p->rules);
	free(p->id_name);
}

static void peer_auth_free(struct mc_peer_auth *pa)
{
	mc_meta_free(&pa->meta);
	mc_labels_free(&pa->selector);
	free(pa->port_level);
	free(pa->id_name);
}

/* A snapshot of a load cache: its objects belong to the per-file configurations it holds;
 * only the SPIFFE IDs completion gave its copies are its own. */
static void shared_objects_free(struct mesh_config *c)
{
	for (size_t i = 0; i < c->n_workloads; i++)
		free(c->workloads[i].spiffe_id);
	free(c->namespaces);
	free(c->workloads);
	free(c->services);
	free(c->kservices);
	free(c->policies);
	free(c->peer_auths);
	for (size_t i = 0; i < c->n_shared; i++)
		mesh_config_unref(c->shared[i]);
	free(c->shared);
}

static void own_objects_free(struct mesh_config *c)
{
	for (size_t i = 0; i < c->n_namespaces; i++)
		mc_meta_free(&c->namespaces[i].meta);
	free(c->namespaces);
	for (size_t i = 0; i < c->n_workloads; i++)
		workload_free(&c->workloads[i]);
	free(c->workloads);
	for (size_t i = 0; i < c->n_services; i++)
		service_free(&c->services[i]);
	free(c->services);
	for (size_t i = 0; i < c->n_kservices; i++)
		kservice_free(&c->kservices[i]);
	free(c->kservices);
	for (size_t i = 0; i < c->n_policies; i++)
		authz_free(&c->policies[i]);
	free(c->policies);
	for (size_t i = 0; i < c->n_peer_auths; i++)
		peer_auth_free(&c->peer_auths[i]);
	free(c->peer_auths);
}

void mc_config_free(struct mesh_config *c)
{
	if (!c)
		return;
	free(c->dir);
	free(c->mesh.trust_domain);
	free(c->mesh.root_namespace);
	free(c->mesh.file);
	if (c->shared)
		shared_objects_free(c);
	else
		own_objects_free(c);
	mc_findings_free(&c->findings);
	free(c->wl_by_addr);
	free(c);
}
