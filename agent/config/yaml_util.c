/* Typed access to libyaml document nodes. Every problem becomes a finding with the file,
 * the node's line, the object, the field path and what to do. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config_internal.h"

static void pfind(struct pctx *x, enum mc_severity sev, const yaml_node_t *n, const char *field,
		  const char *fmt, va_list ap)
{
	mc_finding_vadd(x->findings, sev, x->file, n ? yline(n) : 0, x->kind, x->object, x->rule,
			field, fmt, ap);
	if (sev == MC_ERROR)
		x->errors++;
}

void perr(struct pctx *x, const yaml_node_t *n, const char *field, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pfind(x, MC_ERROR, n, field, fmt, ap);
	va_end(ap);
}

void pwarn(struct pctx *x, const yaml_node_t *n, const char *field, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pfind(x, MC_WARNING, n, field, fmt, ap);
	va_end(ap);
}

int yline(const yaml_node_t *n)
{
	return (int)n->start_mark.line + 1;
}

yaml_node_t *ynode(struct pctx *x, int id)
{
	return yaml_document_get_node(x->doc, id);
}

/* libyaml does not resolve implicit tags: a plain scalar spelled like null is null. */
bool y_null(const yaml_node_t *n)
{
	if (!n)
		return true;
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	/* The value first: it rules out almost every scalar at its first byte (this runs for
	 * every node of every load). */
	const char *v = (const char *)n->data.scalar.value;
	if (*v && *v != '~' && *v != 'n' && *v != 'N')
		return false;
	bool spelled_null = !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
			    !strcmp(v, "NULL");
	if (!spelled_null)
		return false;
	return !n->tag || strcmp((const char *)n->tag, YAML_NULL_TAG) == 0 ||
	       strcmp((const char *)n->tag, YAML_STR_TAG) == 0;
}

const char *y_what(const yaml_node_t *n)
{
	if (y_null(n))
		return "null";
	switch (n->type) {
	case YAML_SCALAR_NODE: return "a string";
	case YAML_SEQUENCE_NODE: return "a list";
	case YAML_MAPPING_NODE: return "a mapping";
	default: return "nothing";
	}
}

const char *y_text(const yaml_node_t *n)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return NULL;
	return (const char *)n->data.scalar.value;
}

/* Copy s after buf[*len], truncated as snprintf would to CFG_PATH_LEN with the NUL. */
static void path_append(char *buf, size_t *len, const char *s)
{
	size_t n = strlen(s);
	if (n > CFG_PATH_LEN - 1 - *len)
		n = CFG_PATH_LEN - 1 - *len;
	memcpy(buf + *len, s, n);
	*len += n;
	buf[*len] = 0;
}

/* Built for every field read, error or not (a load of 11,000 objects builds ~10^6): no
 * printf. */
const char *path_key(char *buf, const char *parent, const char *key)
{
	size_t len = 0;
	buf[0] = 0;
	if (parent && *parent) {
		path_append(buf, &len, parent);
		path_append(buf, &len, ".");
	}
	path_append(buf, &len, SHOW(key));
	return buf;
}

const char *path_idx(char *buf, const char *parent, size_t i)
{
	snprintf(buf, CFG_PATH_LEN, "%s[%zu]", parent, i);
	return buf;
}

/* ---- edit distance for "did you mean" ---- */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 64 || lb > 64)
		return (size_t)-1;
	size_t row[65];
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t cost = tolower((unsigned char)a[i - 1]) ==
					      tolower((unsigned char)b[j - 1])
					      ? 0
					      : 1;
			size_t best = diag + cost;
			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

const char *nearest_word(const char *word, const char *const *cands)
{
	const char *best = NULL;
	size_t best_d = (size_t)-1;
	for (size_t i = 0; cands[i]; i++) {
		size_t d = edit_distance(word, cands[i]);
		if (d < best_d) {
			best_d = d;
			best = cands[i];
		}
	}
	size_t len = strlen(word);
	size_t limit = len <= 4 ? 1 : len <= 8 ? 2 : 3;
	if (best && best_d <= limit)
		return best;
	/* A truncated value ("REGISTRY" for "REGISTRY_ONLY") is a near miss too. */
	for (size_t i = 0; len >= 3 && cands[i]; i++)
		if (strncasecmp(cands[i], word, len) == 0)
			return cands[i];
	return NULL;
}

static void known_list(struct sbuf *b, const char *const *known)
{
	for (size_t i = 0; known[i]; i++)
		sbuf_printf(b, "%s%s", i ? ", " : "", known[i]);
}

/* Duplicates are found through the known list (short), not by comparing every pair of keys:
 * a mapping with a million repeated keys costs a million steps, not 10^12. */
#define KNOWN_MAX 64

void y_check_keys(struct pctx *x, yaml_node_t *map, const char *path, const char *const *known)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return;
	int first_line[KNOWN_MAX] = {0};
	char sub[CFG_PATH_LEN];
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = ynode(x, p->key);
		const char *key = y_text(k);
		if (!key) {
			perr(x, k, path && *path ? path : NULL,
			     "a key must be a string, got %s", y_what(k));
			continue;
		}
		size_t i = 0;
		while (known[i] && strcmp(known[i], key) != 0)
			i++;
		if (!known[i] || (i < KNOWN_MAX && first_line[i]))
			path_key(sub, path, key); /* only a finding needs the path */
		if (!known[i]) {
			const char *near = nearest_word(key, known);
			struct sbuf b;
			sbuf_init(&b);
			known_list(&b, known);
			if (near)
				perr(x, k, sub,
				     "unknown field \"%s\" (did you mean \"%s\"?): unknown fields are "
				     "errors, because a misspelt field would silently change what a "
				     "rule matches",
				     SHOW(key), near);
			else
				perr(x, k, sub,
				     "unknown field \"%s\": expected one of %s", SHOW(key), b.s ? b.s : "");
			sbuf_free(&b);
			continue;
		}
		if (i < KNOWN_MAX && first_line[i])
			perr(x, k, sub, "field \"%s\" appears twice (first at line %d): keep one",
			     key, first_line[i]);
		else if (i < KNOWN_MAX)
			first_line[i] = yline(k);
	}
}

yaml_node_t *y_get(struct pctx *x, yaml_node_t *map, const char *key)
{
	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		const char *k = y_text(ynode(x, p->key));
		if (k && strcmp(k, key) == 0) {
			yaml_node_t *v = ynode(x, p->value);
			return y_null(v) ? NULL : v;
		}
	}
	return NULL;
}

static const char *type_name(yaml_node_type_t t)
{
	switch (t) {
	case YAML_SCALAR_NODE: return "a string";
	case YAML_SEQUENCE_NODE: return "a list";
	case YAML_MAPPING_NODE: return "a mapping";
	default: return "a value";
	}
}

bool y_expect(struct pctx *x, yaml_node_t *n, yaml_node_type_t type, const char *path)
{
	if (n && n->type == type && !(type == YAML_SCALAR_NODE && y_null(n)))
		return true;
	perr(x, n, path, "expected %s, got %s", type_name(type), y_what(n));
	return false;
}

const char *y_str(struct pctx *x, yaml_node_t *map, const char *key, const char *parent)
{
	char sub[CFG_PATH_LEN];
	yaml_node_t *n = y_get(x, map, key);
	if (!n)
		return NULL;
	if (!y_expect(x, n, YAML_SCALAR_NODE, path_key(sub, parent, key)))
		return NULL;
	return y_text(n);
}

bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

bool y_port(struct pctx *x, yaml_node_t *n, const char *path, uint16_t *out)
{
	if (!y_expect(x, n, YAML_SCALAR_NODE, path))
		return false;
	const char *v = y_text(n);
	if (!all_digits(v)) {
		perr(x, n, path, "expected a port number 1..65535, got \"%s\"", SHOW(v));
		return false;
	}
	errno = 0;
	unsigned long p = strtoul(v, NULL, 10);
	if (errno || p < 1 || p > 65535) {
		perr(x, n, path, "port %s is out of range 1..65535", v);
		return false;
	}
	*out = (uint16_t)p;
	return true;
}

bool y_uint32(struct pctx *x, yaml_node_t *n, const char *path, uint32_t *out)
{
	if (!y_expect(x, n, YAML_SCALAR_NODE, path))
		return false;
	const char *v = y_text(n);
	errno = 0;
	unsigned long long u = all_digits(v) ? strtoull(v, NULL, 10) : 0;
	if (!all_digits(v) || errno || u > UINT32_MAX) {
		perr(x, n, path, "expected a number 0..4294967295, got \"%s\"", SHOW(v));
		return false;
	}
	*out = (uint32_t)u;
	return true;
}

int y_enum(struct pctx *x, yaml_node_t *n, const char *path, const char *const *names)
{
	if (!y_expect(x, n, YAML_SCALAR_NODE, path))
		return -1;
	const char *v = y_text(n);
	for (int i = 0; names[i]; i++)
		if (strcmp(names[i], v) == 0)
			return i;
	struct sbuf b;
	sbuf_init(&b);
	known_list(&b, names);
	const char *near = nearest_word(v, names);
	if (near)
		perr(x, n, path, "unknown value \"%s\" (did you mean \"%s\"?): expected one of %s",
		     SHOW(v), near, b.s);
	else
		perr(x, n, path, "unknown value \"%s\": expected one of %s", SHOW(v), b.s);
	sbuf_free(&b);
	return -1;
}

bool y_each_str(struct pctx *x, yaml_node_t *n, const char *path, y_item_fn fn, void *arg)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_SEQUENCE_NODE, path))
		return false;
	yaml_node_item_t *start = n->data.sequence.items.start;
	yaml_node_item_t *top = n->data.sequence.items.top;
	if (start == top) {
		/* Istio reads an empty list as "not set", which widens the rule; moat would read
		 * it as "matches nothing". Neither is what the author meant: refuse it. */
		perr(x, n, path,
		     "empty list: list at least one value, or remove the field (Istio treats an "
		     "empty list as if the field were absent)");
		return true;
	}
	for (yaml_node_item_t *it = start; it < top; it++) {
		yaml_node_t *item = ynode(x, *it);
		path_idx(sub, path, (size_t)(it - start));
		if (!item || item->type != YAML_SCALAR_NODE || y_null(item)) {
			perr(x, item, sub, "expected a string, got %s", y_what(item));
			continue;
		}
		const char *v = y_text(item);
		if (!*v) {
			perr(x, item, sub, "empty value: remove it or write a value");
			continue;
		}
		fn(x, item, sub, v, arg);
	}
	return true;
}

static void push_str(struct pctx *x, yaml_node_t *item, const char *path, const char *value,
		     void *arg)
{
	(void)x;
	(void)item;
	(void)path;
	mc_strs_push(arg, value);
}

bool y_strlist(struct pctx *x, yaml_node_t *n, const char *path, struct mc_strs *out)
{
	return y_each_str(x, n, path, push_str, out);
}

static int cmp_key_node(const void *a, const void *b)
{
	const yaml_node_t *x = *(yaml_node_t *const *)a, *y = *(yaml_node_t *const *)b;
	int c = strcmp(y_text(x), y_text(y));
	return c ? c : (x->start_mark.index > y->start_mark.index) -
			       (x->start_mark.index < y->start_mark.index);
}

/* Duplicate keys by sorting (n log n): a label map may be as long as a file allows. */
static void labels_dup_check(struct pctx *x, yaml_node_t *n, const char *path)
{
	size_t cnt = 0, total = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	yaml_node_t **keys = xcalloc(total + 1, sizeof(*keys));
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = ynode(x, p->key);
		if (y_text(k) && !y_null(k) && *y_text(k))
			keys[cnt++] = k;
	}
	qsort(keys, cnt, sizeof(*keys), cmp_key_node);
	char sub[CFG_PATH_LEN];
	for (size_t i = 1; i < cnt; i++)
		if (strcmp(y_text(keys[i - 1]), y_text(keys[i])) == 0)
			perr(x, keys[i], path_key(sub, path, y_text(keys[i])),
			     "label \"%s\" appears twice (first at line %d): keep one",
			     SHOW(y_text(keys[i])), yline(keys[i - 1]));
	free(keys);
}

bool y_labels(struct pctx *x, yaml_node_t *n, const char *path, struct mc_labels *out)
{
	char sub[CFG_PATH_LEN];
	if (!y_expect(x, n, YAML_MAPPING_NODE, path))
		return false;
	labels_dup_check(x, n, path);
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = ynode(x, p->key), *v = ynode(x, p->value);
		const char *key = y_text(k);
		if (!key || y_null(k) || !*key) {
			perr(x, k, path, "a label key must be a non-empty string, got %s", y_what(k));
			continue;
		}
		path_key(sub, path, key);
		if (!v || v->type != YAML_SCALAR_NODE) {
			perr(x, v, sub, "expected a string, got %s", y_what(v));
			continue;
		}
		/* `key: ` (null) is the empty value in Kubernetes labels. */
		mc_labels_push(out, key, y_null(v) ? "" : y_text(v));
	}
	return true;
}

/* ---- names ---- */
bool dns1123_label(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
		if (!alnum && !(ch == '-' && i > 0 && i + 1 < n))
			return false;
	}
	return true;
}

bool dns1123_subdomain(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 253)
		return false;
	char part[256];
	const char *p = s;
	while (p) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);
		if (l >= sizeof(part))
			return false;
		memcpy(part, p, l);
		part[l] = 0;
		if (!dns1123_label(part))
			return false;
		p = dot ? dot + 1 : NULL;
	}
	return true;
}
