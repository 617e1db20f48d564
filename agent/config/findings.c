/* Findings: errors, warnings and notes with the place they are about. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

void mc_findings_free(struct mc_findings *f)
{
	for (size_t i = 0; i < f->n; i++) {
		struct mc_finding *it = &f->items[i];
		free(it->file);
		free(it->policy);
		free(it->field);
		free(it->message);
		free(it->kind);
	}
	free(f->items);
	f->items = NULL;
	f->n = f->cap = 0;
}

size_t mc_findings_count(const struct mc_findings *f, enum mc_severity sev)
{
	size_t n = 0;
	for (size_t i = 0; i < f->n; i++)
		n += f->items[i].severity == sev;
	return n;
}

struct mc_finding *mc_finding_add(struct mc_findings *f, enum mc_severity sev, const char *file,
				  int line, const char *kind, const char *object, int rule,
				  const char *field, const char *fmt, ...)
{
	struct mc_finding *it = VEC_PUSH(f->items, f->n, f->cap);
	struct sbuf msg;
	va_list ap;

	sbuf_init(&msg);
	va_start(ap, fmt);
	sbuf_vprintf(&msg, fmt, ap);
	va_end(ap);
	it->severity = sev;
	it->file = dup_or_null(file);
	it->line = line;
	it->kind = dup_or_null(kind);
	it->policy = dup_or_null(object);
	it->rule = rule;
	it->field = dup_or_null(field);
	it->message = sbuf_take(&msg);
	return it;
}

void mc_findings_append(struct mc_findings *dst, const struct mc_findings *src)
{
	for (size_t i = 0; i < src->n; i++) {
		const struct mc_finding *s = &src->items[i];
		mc_finding_add(dst, s->severity, s->file, s->line, s->kind, s->policy, s->rule,
			       s->field, "%s", s->message);
	}
}

static const char *severity_name(enum mc_severity s)
{
	switch (s) {
	case MC_ERROR: return "error";
	case MC_WARNING: return "warning";
	default: return "note";
	}
}

const char *mc_finding_str(const struct mc_finding *f, char *buf, size_t len)
{
	struct sbuf b;
	sbuf_init(&b);
	sbuf_printf(&b, "%s: ", severity_name(f->severity));
	if (f->file) {
		if (f->line > 0)
			sbuf_printf(&b, "%s:%d: ", f->file, f->line);
		else
			sbuf_printf(&b, "%s: ", f->file);
	}
	if (f->policy) {
		bool is_policy = !f->kind || strcmp(f->kind, "AuthorizationPolicy") == 0;
		sbuf_printf(&b, "%s %s", is_policy ? "policy" : f->kind, f->policy);
		if (f->rule > 0)
			sbuf_printf(&b, " rule %d", f->rule);
		sbuf_puts(&b, ": ");
	}
	if (f->field)
		sbuf_printf(&b, "%s: ", f->field);
	sbuf_puts(&b, f->message ? f->message : "");
	snprintf(buf, len, "%s", b.s ? b.s : "");
	sbuf_free(&b);
	return buf;
}
