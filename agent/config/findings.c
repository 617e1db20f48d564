/* Findings: errors, warnings and notes with the place they are about. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

/* Findings reach logs: a control character taken from a file (a newline in a quoted key)
 * must not start a forged log line. Values themselves go through SHOW() where quoted. */
static char *dup_or_null(const char *s)
{
	if (!s)
		return NULL;
	char *d = xstrdup(s);
	for (char *p = d; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return d;
}

static bool name_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("-._/:*@~[] ", ch));
}

/* Names, addresses, ports and enum words pass; anything long or with other characters (a
 * secret, a certificate, a password hash in a file that is not a policy) does not. */
struct mc_shown mc_show(const char *v)
{
	struct mc_shown r;
	size_t n = v ? strlen(v) : 0;
	bool ok = n <= MC_SHOW_MAX;
	for (size_t i = 0; ok && i < n; i++)
		ok = name_char(v[i]);
	if (ok) /* n <= MC_SHOW_MAX < sizeof(r.s); every field name passes here: no printf */
		memcpy(r.s, v ? v : "", n + 1);
	else
		snprintf(r.s, sizeof(r.s), "<%zu bytes, not shown>", n);
	return r;
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

struct mc_finding *mc_finding_vadd(struct mc_findings *f, enum mc_severity sev, const char *file,
				   int line, const char *kind, const char *object, int rule,
				   const char *field, const char *fmt, va_list ap)
{
	struct mc_finding *it = VEC_PUSH(f->items, f->n, f->cap);
	struct sbuf msg;

	sbuf_init(&msg);
	sbuf_vprintf(&msg, fmt, ap);
	it->severity = sev;
	it->file = dup_or_null(file);
	it->line = line;
	it->kind = dup_or_null(kind);
	it->policy = dup_or_null(object);
	it->rule = rule;
	it->field = dup_or_null(field);
	it->message = dup_or_null(msg.s ? msg.s : "");
	sbuf_free(&msg);
	return it;
}

struct mc_finding *mc_finding_add(struct mc_findings *f, enum mc_severity sev, const char *file,
				  int line, const char *kind, const char *object, int rule,
				  const char *field, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	struct mc_finding *it = mc_finding_vadd(f, sev, file, line, kind, object, rule, field, fmt, ap);
	va_end(ap);
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
