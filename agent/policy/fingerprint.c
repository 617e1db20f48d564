/* Policy fingerprints: a digest of what can change a decision, so the verdict sync can tell
 * an unchanged policy of a new configuration from a changed one without comparing trees.
 * Lines, files and lint-only fields are left out: moving a policy in its file changes
 * nothing the kernel needs. */
#include <string.h>

#include "policy/authz.h"

struct fp {
	uint64_t h;
};

static void fp_bytes(struct fp *f, const void *data, size_t n)
{
	const uint8_t *b = data;
	for (size_t i = 0; i < n; i++)
		f->h = (f->h ^ b[i]) * 1099511628211ull; /* FNV-1a */
}

/* Every field is framed by its length so ["ab","c"] and ["a","bc"] differ. */
static void fp_u64(struct fp *f, uint64_t v)
{
	fp_bytes(f, &v, sizeof(v));
}

static void fp_str(struct fp *f, const char *s)
{
	size_t n = s ? strlen(s) : (size_t)-1;
	fp_u64(f, n);
	if (s)
		fp_bytes(f, s, n);
}

static void fp_strs(struct fp *f, bool has, const struct mc_strs *l)
{
	fp_u64(f, has);
	fp_u64(f, l->n);
	for (size_t i = 0; i < l->n; i++)
		fp_str(f, l->items[i]);
}

static void fp_cidrs(struct fp *f, bool has, const struct mc_cidrs *l)
{
	fp_u64(f, has);
	fp_u64(f, l->n);
	for (size_t i = 0; i < l->n; i++) {
		fp_bytes(f, l->items[i].addr.bytes, 16);
		fp_u64(f, l->items[i].prefix);
	}
}

static void fp_ports(struct fp *f, bool has, const uint16_t *p, size_t n)
{
	fp_u64(f, has);
	fp_u64(f, n);
	if (n)
		fp_bytes(f, p, n * sizeof(*p));
}

static void fp_labels(struct fp *f, const struct mc_labels *l)
{
	fp_u64(f, l->n);
	for (size_t i = 0; i < l->n; i++) {
		fp_str(f, l->items[i].key);
		fp_str(f, l->items[i].value);
	}
}

static void fp_source(struct fp *f, const struct mc_source *s)
{
	fp_strs(f, s->has_principals, &s->principals);
	fp_strs(f, s->has_not_principals, &s->not_principals);
	fp_strs(f, s->has_namespaces, &s->namespaces);
	fp_strs(f, s->has_not_namespaces, &s->not_namespaces);
	fp_strs(f, s->has_service_accounts, &s->service_accounts);
	fp_strs(f, s->has_not_service_accounts, &s->not_service_accounts);
	fp_cidrs(f, s->has_ip_blocks, &s->ip_blocks);
	fp_cidrs(f, s->has_not_ip_blocks, &s->not_ip_blocks);
}

static void fp_operation(struct fp *f, const struct mc_operation *o)
{
	fp_ports(f, o->has_ports, o->ports, o->n_ports);
	fp_ports(f, o->has_not_ports, o->not_ports, o->n_not_ports);
	fp_u64(f, o->named_in_ports);
	fp_u64(f, o->named_in_not_ports);
}

static void fp_typed(struct fp *f, const struct mc_when_typed *t)
{
	fp_cidrs(f, true, &t->cidrs);
	fp_ports(f, true, t->ports, t->n_ports);
}

static void fp_condition(struct fp *f, const struct mc_condition *c)
{
	fp_u64(f, c->key);
	fp_strs(f, c->has_values, &c->values);
	fp_strs(f, c->has_not_values, &c->not_values);
	fp_typed(f, &c->typed);
	fp_typed(f, &c->not_typed);
}

static void fp_rule(struct fp *f, const struct mc_rule *r)
{
	fp_u64(f, r->has_from | r->has_to << 1 | r->has_when << 2 | r->had_l7 << 3 |
			  r->dropped << 4);
	fp_u64(f, r->n_from);
	for (size_t i = 0; i < r->n_from; i++)
		fp_source(f, &r->from[i]);
	fp_u64(f, r->n_to);
	for (size_t i = 0; i < r->n_to; i++)
		fp_operation(f, &r->to[i]);
	fp_u64(f, r->n_when);
	for (size_t i = 0; i < r->n_when; i++)
		fp_condition(f, &r->when[i]);
}

uint64_t authz_policy_fingerprint(const struct mc_authz *p)
{
	struct fp f = {.h = 1469598103934665603ull};
	fp_str(&f, p->meta.ns);
	fp_str(&f, p->meta.name);
	fp_str(&f, p->id_name);
	fp_u64(&f, p->action);
	fp_u64(&f, p->has_selector | p->dry_run << 1 | p->unsupported << 2);
	fp_labels(&f, &p->selector);
	fp_u64(&f, p->n_target_refs);
	for (size_t i = 0; i < p->n_target_refs; i++) {
		const struct mc_target_ref *r = &p->target_refs[i];
		fp_str(&f, r->group);
		fp_str(&f, r->kind);
		fp_str(&f, r->name);
		fp_str(&f, r->ns);
	}
	fp_u64(&f, p->n_rules);
	for (size_t i = 0; i < p->n_rules; i++)
		fp_rule(&f, &p->rules[i]);
	return f.h;
}

bool authz_policy_uses_destination_ip(const struct mc_authz *p)
{
	for (size_t i = 0; i < p->n_rules; i++)
		for (size_t j = 0; j < p->rules[i].n_when; j++)
			if (p->rules[i].when[j].key == MC_WHEN_DESTINATION_IP)
				return true;
	return false;
}
