/* Prometheus metrics store and text exposition (format 0.0.4).
 *
 * Layout: one hash table of series keyed by (family name, label set). A label set is
 * unordered (Prometheus semantics): the hash combines the (key, value) pairs commutatively
 * and the comparison first tries the stored order (the common case: every call site passes
 * labels in the same order) before an order-free match. Each series is one allocation that
 * holds its keys, values and the pre-rendered, escaped `{k="v",...}` text, so rendering and
 * sorting never re-escape. Families are few (tens); they are found by a linear scan, which
 * only happens when a series is created or a family described. */
#include "obs/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

enum value_kind { KIND_INT, KIND_FLOAT };

struct family {
	char *name;
	char *type; /* "counter", "gauge", ... ; NULL = untyped */
	char *help; /* NULL = no HELP line */
	bool described;
	size_t desc_order;       /* order of metrics_describe() calls */
	struct series **series;  /* for rendering */
	size_t n_series, cap_series;
	bool sorted;             /* series[] sorted by label text */
};

struct series {
	struct series *next; /* hash chain */
	uint64_t hash;
	struct family *fam;
	enum value_kind kind;
	uint64_t ival;
	double fval;
	int n;
	const char **key;
	const char **value;
	const char *label_text; /* `{k="v",...}` or "" without labels */
	/* keys, values and label text follow in the same allocation */
};

struct metrics {
	struct series **buckets;
	size_t n_buckets, n_series;
	struct family **fams;
	size_t n_fams, cap_fams;
	size_t n_described;
};

/* ---- labels ---- */

void metric_label(struct metric_labels *l, const char *key, const char *value)
{
	if (!value)
		value = "";
	for (int i = 0; i < l->n; i++) {
		if (strcmp(l->key[i], key) == 0) {
			l->value[i] = value;
			return;
		}
	}
	if (l->n >= METRIC_MAX_LABELS) {
		log_warn("metrics: label %s dropped: more than %d labels", key, METRIC_MAX_LABELS);
		return;
	}
	l->key[l->n] = key;
	l->value[l->n] = value;
	l->n++;
}

static int label_count(const struct metric_labels *l)
{
	if (!l || l->n < 0)
		return 0;
	return l->n > METRIC_MAX_LABELS ? METRIC_MAX_LABELS : l->n;
}

/* ---- hashing (FNV-1a + a 64-bit finaliser) ---- */

static uint64_t fnv(uint64_t h, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

static uint64_t series_hash(const char *name, const struct metric_labels *l)
{
	const uint64_t basis = 0xcbf29ce484222325ull;
	uint64_t pairs = 0;
	for (int i = 0; i < label_count(l); i++) {
		uint64_t h = fnv(basis, l->key[i]);
		h = fnv(h ^ 0xff, l->value[i] ? l->value[i] : "");
		pairs += mix(h); /* commutative: label order does not matter */
	}
	return mix(fnv(basis, name) ^ pairs);
}

/* ---- series matching ---- */

static const char *lv(const struct metric_labels *l, int i)
{
	return l->value[i] ? l->value[i] : "";
}

static bool labels_match_unordered(const struct series *s, const struct metric_labels *l)
{
	int n = label_count(l);
	for (int i = 0; i < s->n; i++) {
		int j = 0;
		while (j < n && strcmp(s->key[i], l->key[j]) != 0)
			j++;
		if (j == n || strcmp(s->value[i], lv(l, j)) != 0)
			return false;
	}
	return true;
}

static bool series_match(const struct series *s, uint64_t hash, const char *name,
			 const struct metric_labels *l)
{
	int n = label_count(l);
	if (s->hash != hash || s->n != n || strcmp(s->fam->name, name) != 0)
		return false;
	for (int i = 0; i < n; i++)
		if (strcmp(s->key[i], l->key[i]) != 0 || strcmp(s->value[i], lv(l, i)) != 0)
			return labels_match_unordered(s, l);
	return true;
}

/* ---- names and escaping ---- */

static bool valid_name(const char *s, bool allow_colon)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++) {
		char c = *s;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '_' || (allow_colon && c == ':');
		if (!ok)
			return false;
	}
	return true;
}

/* Label values escape backslash, double quote and newline; HELP text backslash and newline. */
static size_t escaped_len(const char *s, bool quote)
{
	size_t n = 0;
	for (; *s; s++)
		n += (*s == '\\' || *s == '\n' || (quote && *s == '"')) ? 2 : 1;
	return n;
}

static char *escape_into(char *out, const char *s, bool quote)
{
	for (; *s; s++) {
		if (*s == '\\') {
			*out++ = '\\';
			*out++ = '\\';
		} else if (*s == '\n') {
			*out++ = '\\';
			*out++ = 'n';
		} else if (quote && *s == '"') {
			*out++ = '\\';
			*out++ = '"';
		} else {
			*out++ = *s;
		}
	}
	return out;
}

static void sbuf_escaped(struct sbuf *b, const char *s, bool quote)
{
	size_t n = escaped_len(s, quote);
	char *tmp = xmalloc(n + 1);
	*escape_into(tmp, s, quote) = 0;
	sbuf_append(b, tmp, n);
	free(tmp);
}

/* ---- families ---- */

/* Room for one more pointer in a growing array. */
static void *grow_ptrs(void *arr, size_t n, size_t *cap)
{
	if (n < *cap)
		return arr;
	*cap = *cap ? *cap * 2 : 8;
	return xrealloc(arr, *cap * sizeof(void *));
}

static struct family *family_find(struct metrics *m, const char *name)
{
	for (size_t i = 0; i < m->n_fams; i++)
		if (strcmp(m->fams[i]->name, name) == 0)
			return m->fams[i];
	return NULL;
}

static struct family *family_get(struct metrics *m, const char *name)
{
	struct family *f = family_find(m, name);
	if (f)
		return f;
	f = xcalloc(1, sizeof(*f));
	f->name = xstrdup(name);
	f->sorted = true;
	m->fams = grow_ptrs(m->fams, m->n_fams, &m->cap_fams);
	m->fams[m->n_fams++] = f;
	return f;
}

static void family_free(struct family *f)
{
	for (size_t i = 0; i < f->n_series; i++)
		free(f->series[i]);
	free(f->series);
	free(f->name);
	free(f->type);
	free(f->help);
	free(f);
}

void metrics_describe(struct metrics *m, const char *name, const char *type, const char *help)
{
	if (!valid_name(name, true)) {
		log_warn("metrics: invalid metric name \"%s\" not described", name ? name : "");
		return;
	}
	struct family *f = family_get(m, name);
	free(f->type);
	free(f->help);
	f->type = type && *type ? xstrdup(type) : NULL;
	f->help = help && *help ? xstrdup(help) : NULL;
	if (!f->described) {
		f->described = true;
		f->desc_order = m->n_described++;
	}
}

/* ---- series creation ---- */

static void table_grow(struct metrics *m)
{
	size_t nb = m->n_buckets ? m->n_buckets * 2 : 64;
	struct series **b = xcalloc(nb, sizeof(*b));
	for (size_t i = 0; i < m->n_buckets; i++) {
		struct series *s = m->buckets[i];
		while (s) {
			struct series *next = s->next;
			size_t k = s->hash & (nb - 1);
			s->next = b[k];
			b[k] = s;
			s = next;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->n_buckets = nb;
}

static bool labels_valid(const char *name, const struct metric_labels *l)
{
	if (!valid_name(name, true)) {
		log_warn("metrics: invalid metric name \"%s\": update ignored", name ? name : "");
		return false;
	}
	for (int i = 0; i < label_count(l); i++) {
		if (!valid_name(l->key[i], false) || strncmp(l->key[i], "__", 2) == 0) {
			log_warn("metrics: %s: invalid label name \"%s\": update ignored", name,
				 l->key[i] ? l->key[i] : "");
			return false;
		}
	}
	return true;
}

/* One allocation: struct, key/value pointer arrays, strings, escaped label text. */
static struct series *series_alloc(const struct metric_labels *l)
{
	int n = label_count(l);
	size_t strings = 0, text = n ? 2 : 0; /* braces */
	for (int i = 0; i < n; i++) {
		strings += strlen(l->key[i]) + 1 + strlen(lv(l, i)) + 1;
		text += strlen(l->key[i]) + 3 + escaped_len(lv(l, i), true) + (i ? 1 : 0);
	}
	size_t size = sizeof(struct series) + 2 * (size_t)n * sizeof(char *) + strings + text + 1;
	struct series *s = xcalloc(1, size);
	s->n = n;
	s->key = (const char **)(s + 1);
	s->value = s->key + n;
	char *p = (char *)(s->value + n);
	for (int i = 0; i < n; i++) {
		size_t kl = strlen(l->key[i]) + 1, vl = strlen(lv(l, i)) + 1;
		s->key[i] = memcpy(p, l->key[i], kl);
		p += kl;
		s->value[i] = memcpy(p, lv(l, i), vl);
		p += vl;
	}
	s->label_text = p;
	if (n) {
		*p++ = '{';
		for (int i = 0; i < n; i++) {
			if (i)
				*p++ = ',';
			size_t kl = strlen(s->key[i]);
			memcpy(p, s->key[i], kl);
			p += kl;
			*p++ = '=';
			*p++ = '"';
			p = escape_into(p, s->value[i], true);
			*p++ = '"';
		}
		*p++ = '}';
	}
	*p = 0;
	return s;
}

static struct series *series_lookup(struct metrics *m, const char *name,
				    const struct metric_labels *l, uint64_t hash)
{
	if (!m->n_buckets)
		return NULL;
	for (struct series *s = m->buckets[hash & (m->n_buckets - 1)]; s; s = s->next)
		if (series_match(s, hash, name, l))
			return s;
	return NULL;
}

static struct series *series_get(struct metrics *m, const char *name,
				 const struct metric_labels *l, enum value_kind first_kind)
{
	uint64_t hash = series_hash(name, l);
	struct series *s = series_lookup(m, name, l, hash);
	if (s)
		return s;
	if (!labels_valid(name, l))
		return NULL;
	if (m->n_series >= m->n_buckets)
		table_grow(m);
	s = series_alloc(l);
	s->hash = hash;
	s->fam = family_get(m, name);
	/* The family's declared type wins over the first operation. */
	if (s->fam->type && strcmp(s->fam->type, "counter") == 0)
		s->kind = KIND_INT;
	else if (s->fam->type && strcmp(s->fam->type, "gauge") == 0)
		s->kind = KIND_FLOAT;
	else
		s->kind = first_kind;
	size_t k = hash & (m->n_buckets - 1);
	s->next = m->buckets[k];
	m->buckets[k] = s;
	m->n_series++;
	struct family *f = s->fam;
	f->series = grow_ptrs(f->series, f->n_series, &f->cap_series);
	f->series[f->n_series++] = s;
	f->sorted = false;
	return s;
}

/* ---- public API ---- */

struct metrics *metrics_new(void)
{
	return xcalloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_fams; i++)
		family_free(m->fams[i]);
	free(m->fams);
	free(m->buckets);
	free(m);
}

void metrics_counter_add(struct metrics *m, const char *name, const struct metric_labels *l,
			 uint64_t delta)
{
	struct series *s = series_get(m, name, l, KIND_INT);
	if (!s)
		return;
	if (s->kind == KIND_INT)
		s->ival += delta;
	else
		s->fval += (double)delta;
}

static uint64_t to_u64(double v)
{
	if (!(v > 0)) /* negative and NaN */
		return 0;
	return v >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)v;
}

void metrics_gauge_set(struct metrics *m, const char *name, const struct metric_labels *l,
		       double value)
{
	struct series *s = series_get(m, name, l, KIND_FLOAT);
	if (!s)
		return;
	if (s->kind == KIND_FLOAT)
		s->fval = value;
	else
		s->ival = to_u64(value);
}

void metrics_gauge_add(struct metrics *m, const char *name, const struct metric_labels *l,
		       double delta)
{
	struct series *s = series_get(m, name, l, KIND_FLOAT);
	if (!s)
		return;
	if (s->kind == KIND_FLOAT)
		s->fval += delta;
	else
		s->ival = to_u64((double)s->ival + delta);
}

double metrics_value(struct metrics *m, const char *name, const struct metric_labels *l)
{
	struct series *s = series_lookup(m, name, l, series_hash(name, l));
	if (!s)
		return 0;
	return s->kind == KIND_INT ? (double)s->ival : s->fval;
}

/* ---- rendering ---- */

/* Shortest text that reads back as the same double; integral values without exponent. */
static void format_double(double v, char *buf, size_t len)
{
	if (isnan(v)) {
		snprintf(buf, len, "NaN");
	} else if (isinf(v)) {
		snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
	} else if (v == floor(v) && fabs(v) < 9007199254740992.0) {
		snprintf(buf, len, "%.0f", v);
		if (strcmp(buf, "-0") == 0)
			snprintf(buf, len, "0");
	} else {
		for (int prec = 1; prec <= 17; prec++) {
			snprintf(buf, len, "%.*g", prec, v);
			if (strtod(buf, NULL) == v)
				break;
		}
	}
}

static int series_cmp(const void *a, const void *b)
{
	const struct series *x = *(const struct series *const *)a;
	const struct series *y = *(const struct series *const *)b;
	return strcmp(x->label_text, y->label_text);
}

static int family_cmp(const void *a, const void *b)
{
	const struct family *x = *(const struct family *const *)a;
	const struct family *y = *(const struct family *const *)b;
	if (x->described != y->described)
		return x->described ? -1 : 1;
	if (x->described)
		return x->desc_order < y->desc_order ? -1 : x->desc_order > y->desc_order;
	return strcmp(x->name, y->name);
}

static void render_family(struct family *f, struct sbuf *out)
{
	if (f->help) {
		sbuf_printf(out, "# HELP %s ", f->name);
		sbuf_escaped(out, f->help, false);
		sbuf_puts(out, "\n");
	}
	sbuf_printf(out, "# TYPE %s %s\n", f->name, f->type ? f->type : "untyped");
	if (!f->sorted) {
		qsort(f->series, f->n_series, sizeof(*f->series), series_cmp);
		f->sorted = true;
	}
	for (size_t i = 0; i < f->n_series; i++) {
		const struct series *s = f->series[i];
		char num[64];
		if (s->kind == KIND_INT)
			snprintf(num, sizeof(num), "%llu", (unsigned long long)s->ival);
		else
			format_double(s->fval, num, sizeof(num));
		sbuf_printf(out, "%s%s %s\n", f->name, s->label_text, num);
	}
}

void metrics_render(struct metrics *m, struct sbuf *out)
{
	if (!m->n_fams)
		return;
	struct family **order = xmalloc(m->n_fams * sizeof(*order));
	memcpy(order, m->fams, m->n_fams * sizeof(*order));
	qsort(order, m->n_fams, sizeof(*order), family_cmp);
	for (size_t i = 0; i < m->n_fams; i++)
		render_family(order[i], out);
	free(order);
}
