/* Building a libyaml document from parser events, with bounds. libyaml's own loader
 * (yaml_parser_load) has none: aliases share nodes, so a small file can stand for billions
 * of nodes once walked (billion laughs), an alias may point at a node that contains it (a
 * cycle), and deep flow nesting makes libyaml's scanner quadratic. Composing from events lets
 * every bound be checked as the parser goes, so a hostile file costs at most what its bytes
 * allow and nothing after the first broken bound is parsed. The document produced is the
 * same as yaml_parser_load's (nodes, ids, marks, shared alias targets). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

struct open_node {
	int id;
	int key;          /* mapping: pending key id, 0 when none */
};

struct anchor {
	char *name;
	int id;
};

struct composer {
	yaml_parser_t *p;
	yaml_document_t *doc;
	struct open_node stack[MC_MAX_DEPTH + 1];
	int depth;
	/* per node id (index id - 1): expanded size and depth, 0 while the node is open */
	uint64_t *size;
	unsigned *height;
	size_t n_size;
	struct anchor anchors[MC_MAX_ANCHORS];
	int n_anchors;
	uint64_t total;   /* nodes of the document counting every alias expansion */
	uint64_t aliased; /* nodes reached through aliases */
	struct mc_compose_error *err;
};

static int fail(struct composer *c, const yaml_mark_t *m, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct composer *c, const yaml_mark_t *m, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err->msg, sizeof(c->err->msg), fmt, ap);
	va_end(ap);
	c->err->line = (int)m->line + 1;
	return -1;
}

static void remember(struct composer *c, int id, uint64_t size, unsigned height)
{
	if ((size_t)id > c->n_size) {
		size_t n = c->n_size ? c->n_size * 2 : 256;
		while (n < (size_t)id)
			n *= 2;
		c->size = xrealloc(c->size, n * sizeof(*c->size));
		c->height = xrealloc(c->height, n * sizeof(*c->height));
		memset(c->size + c->n_size, 0, (n - c->n_size) * sizeof(*c->size));
		memset(c->height + c->n_size, 0, (n - c->n_size) * sizeof(*c->height));
		c->n_size = n;
	}
	c->size[id - 1] = size;
	c->height[id - 1] = height;
}

/* Hang a finished node under the open collection (or make it the document's root). */
static int attach(struct composer *c, int id, const yaml_mark_t *m)
{
	if (c->depth == 0)
		return 0; /* the root: yaml_document_get_root_node is node 1 */
	struct open_node *top = &c->stack[c->depth - 1];
	yaml_node_t *parent = yaml_document_get_node(c->doc, top->id);
	int ok;
	if (parent->type == YAML_SEQUENCE_NODE) {
		ok = yaml_document_append_sequence_item(c->doc, top->id, id);
	} else if (!top->key) {
		top->key = id;
		ok = 1;
	} else {
		ok = yaml_document_append_mapping_pair(c->doc, top->id, top->key, id);
		top->key = 0;
	}
	return ok ? 0 : fail(c, m, "out of memory while reading the YAML");
}

static int count(struct composer *c, uint64_t n, bool via_alias, const yaml_mark_t *m)
{
	c->total += n;
	if (via_alias)
		c->aliased += n;
	if (c->aliased > MC_MAX_ALIAS_NODES)
		return fail(c, m, "aliases expand to more than %d nodes in one document "
			    "(MC_MAX_ALIAS_NODES): write the repeated parts out, or split the file; "
			    "nothing after this point of the file was read", MC_MAX_ALIAS_NODES);
	if (c->total > MC_MAX_NODES)
		return fail(c, m, "more than %d YAML nodes in one document, aliases expanded "
			    "(MC_MAX_NODES): split it into several documents or files; nothing "
			    "after this point of the file was read", MC_MAX_NODES);
	return 0;
}

static int depth_check(struct composer *c, unsigned extra, const yaml_mark_t *m)
{
	if ((unsigned)c->depth + extra <= MC_MAX_DEPTH)
		return 0;
	return fail(c, m, "nesting deeper than %d levels (MC_MAX_DEPTH; moat's objects need "
		    "fewer than 15): check the brackets and indentation; nothing after this "
		    "point of the file was read", MC_MAX_DEPTH);
}

static int add_anchor(struct composer *c, const yaml_char_t *name, int id, const yaml_mark_t *m)
{
	if (!name)
		return 0;
	for (int i = 0; i < c->n_anchors; i++)
		if (strcmp(c->anchors[i].name, (const char *)name) == 0) {
			c->anchors[i].id = id; /* YAML 1.2: a later anchor of that name wins */
			return 0;
		}
	if (c->n_anchors == MC_MAX_ANCHORS)
		return fail(c, m, "more than %d anchors (&name) in one document (MC_MAX_ANCHORS): "
			    "write the repeated parts out; nothing after this point of the file "
			    "was read", MC_MAX_ANCHORS);
	c->anchors[c->n_anchors].name = xstrdup((const char *)name);
	c->anchors[c->n_anchors++].id = id;
	return 0;
}

static int on_alias(struct composer *c, const yaml_event_t *ev)
{
	const char *name = (const char *)ev->data.alias.anchor;
	const yaml_mark_t *m = &ev->start_mark;
	int id = 0;
	for (int i = 0; i < c->n_anchors && !id; i++)
		if (strcmp(c->anchors[i].name, name) == 0)
			id = c->anchors[i].id;
	if (!id) /* the anchor name is file content: not shown */
		return fail(c, m, "alias (*name) to an anchor that is not defined before it in "
			    "this document");
	if (c->size[id - 1] == 0)
		return fail(c, m, "alias (*name) inside the node its anchor names (a cycle): "
			    "remove the alias");
	if (depth_check(c, c->height[id - 1], m) < 0 || count(c, c->size[id - 1], true, m) < 0)
		return -1;
	return attach(c, id, m);
}

static int on_scalar(struct composer *c, const yaml_event_t *ev)
{
	const yaml_mark_t *m = &ev->start_mark;
	if (depth_check(c, 1, m) < 0 || count(c, 1, false, m) < 0)
		return -1;
	int id = yaml_document_add_scalar(c->doc, ev->data.scalar.tag, ev->data.scalar.value,
					  (int)ev->data.scalar.length, ev->data.scalar.style);
	if (!id)
		return fail(c, m, "out of memory while reading the YAML");
	yaml_node_t *n = yaml_document_get_node(c->doc, id);
	n->start_mark = ev->start_mark;
	n->end_mark = ev->end_mark;
	remember(c, id, 1, 1);
	if (add_anchor(c, ev->data.scalar.anchor, id, m) < 0)
		return -1;
	return attach(c, id, m);
}

static int on_start(struct composer *c, const yaml_event_t *ev)
{
	const yaml_mark_t *m = &ev->start_mark;
	if (depth_check(c, 1, m) < 0 || count(c, 1, false, m) < 0)
		return -1;
	bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
	int id = seq ? yaml_document_add_sequence(c->doc, ev->data.sequence_start.tag,
						  ev->data.sequence_start.style)
		     : yaml_document_add_mapping(c->doc, ev->data.mapping_start.tag,
						 ev->data.mapping_start.style);
	if (!id)
		return fail(c, m, "out of memory while reading the YAML");
	yaml_node_t *n = yaml_document_get_node(c->doc, id);
	n->start_mark = ev->start_mark;
	remember(c, id, 0, 0); /* open: an alias to it now would be a cycle */
	if (add_anchor(c, seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor,
		       id, m) < 0)
		return -1;
	c->stack[c->depth++] = (struct open_node){.id = id};
	return 0;
}

/* A collection is complete: its expanded size and height are those of its children. */
static int on_end(struct composer *c, const yaml_event_t *ev)
{
	struct open_node top = c->stack[--c->depth];
	yaml_node_t *n = yaml_document_get_node(c->doc, top.id);
	n->end_mark = ev->end_mark;
	uint64_t size = 1;
	unsigned height = 0;
	if (n->type == YAML_SEQUENCE_NODE) {
		for (yaml_node_item_t *it = n->data.sequence.items.start;
		     it < n->data.sequence.items.top; it++) {
			size += c->size[*it - 1];
			height = c->height[*it - 1] > height ? c->height[*it - 1] : height;
		}
	} else {
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
		     p < n->data.mapping.pairs.top; p++) {
			size += c->size[p->key - 1] + c->size[p->value - 1];
			unsigned h = c->height[p->key - 1] > c->height[p->value - 1]
					     ? c->height[p->key - 1] : c->height[p->value - 1];
			height = h > height ? h : height;
		}
	}
	/* sizes are bounded by MC_MAX_NODES before they get here: no overflow */
	remember(c, top.id, size, height + 1);
	return attach(c, top.id, &ev->start_mark);
}

static int on_event(struct composer *c, const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_ALIAS_EVENT: return on_alias(c, ev);
	case YAML_SCALAR_EVENT: return on_scalar(c, ev);
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT: return on_start(c, ev);
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT: return on_end(c, ev);
	default: return 0;
	}
}

static int parse_error(struct composer *c)
{
	yaml_parser_t *p = c->p;
	return fail(c, &p->problem_mark,
		    "malformed YAML: %s%s%s (column %zu); nothing after this point of the file "
		    "was read",
		    p->problem ? p->problem : "parse error", p->context ? " " : "",
		    p->context ? p->context : "", p->problem_mark.column + 1);
}

/* Events of one document, from DOCUMENT-START to DOCUMENT-END. */
static int compose_document(struct composer *c, const yaml_event_t *start)
{
	if (!yaml_document_initialize(c->doc, start->data.document_start.version_directive,
				      start->data.document_start.tag_directives.start,
				      start->data.document_start.tag_directives.end,
				      start->data.document_start.implicit, 1))
		return fail(c, &start->start_mark, "out of memory while reading the YAML");
	c->doc->start_mark = start->start_mark;
	for (;;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(c->p, &ev)) {
			yaml_document_delete(c->doc);
			return parse_error(c);
		}
		if (ev.type == YAML_DOCUMENT_END_EVENT) {
			c->doc->end_mark = ev.end_mark;
			yaml_event_delete(&ev);
			return 1;
		}
		int rc = on_event(c, &ev);
		yaml_event_delete(&ev);
		if (rc < 0) {
			yaml_document_delete(c->doc);
			return -1;
		}
	}
}

int mc_compose(yaml_parser_t *p, yaml_document_t *doc, struct mc_compose_error *err)
{
	struct composer *c = xcalloc(1, sizeof(*c));
	c->p = p;
	c->doc = doc;
	c->err = err;
	memset(doc, 0, sizeof(*doc));
	int rc = 0;
	for (;;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(p, &ev)) {
			rc = parse_error(c);
			break;
		}
		yaml_event_type_t t = ev.type;
		if (t == YAML_DOCUMENT_START_EVENT)
			rc = compose_document(c, &ev);
		yaml_event_delete(&ev);
		if (t == YAML_DOCUMENT_START_EVENT || t == YAML_STREAM_END_EVENT ||
		    t == YAML_NO_EVENT)
			break;
	}
	for (int i = 0; i < c->n_anchors; i++)
		free(c->anchors[i].name);
	free(c->size);
	free(c->height);
	free(c);
	return rc;
}
