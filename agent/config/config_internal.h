/* Private helpers of the config room: the parse context, typed access to libyaml document
 * nodes with findings that carry file:line and the field path, and name checks. */
#ifndef MOAT_CONFIG_INTERNAL_H
#define MOAT_CONFIG_INTERNAL_H

#include <yaml.h>

#include "config/config.h"

#define CFG_PATH_LEN 256

/* One document being parsed. */
struct pctx {
	struct mesh_config *c;
	struct mc_findings *findings;
	const char *file;       /* as shown in findings */
	yaml_document_t *doc;
	yaml_node_t *root;      /* the document's root mapping */
	const char *kind;       /* kind of the current object, for findings */
	const char *object;     /* "ns/name" of the current object, or NULL */
	int rule;               /* 1-based rule being parsed, 0 outside rules */
	int errors;             /* errors reported so far (whole load) */
	unsigned *seq;          /* load order counter */
};

/* ---- composing a document from parser events, within the bounds (compose.c) ---- */
struct mc_compose_error {
	int line;      /* 1-based */
	char msg[512]; /* never holds file content */
};
/* The next document of the stream into *doc: 1 (delete it with yaml_document_delete), 0 at
 * the end of the stream, -1 on malformed YAML or a broken bound (err filled; stop reading). */
int mc_compose(yaml_parser_t *p, yaml_document_t *doc, struct mc_compose_error *err);

/* ---- findings ---- */
void perr(struct pctx *x, const yaml_node_t *n, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The same as a warning: the load goes on, the finding stays in the snapshot (lint). */
void pwarn(struct pctx *x, const yaml_node_t *n, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* ---- nodes ---- */
int yline(const yaml_node_t *n);
yaml_node_t *ynode(struct pctx *x, int id);
bool y_null(const yaml_node_t *n);
/* "a string", "a list", "a mapping", "null" */
const char *y_what(const yaml_node_t *n);
const char *y_text(const yaml_node_t *n); /* scalar value, NULL otherwise */

/* Child paths: "spec" + "rules" -> "spec.rules"; "spec.rules" + 0 -> "spec.rules[0]". */
const char *path_key(char *buf, const char *parent, const char *key);
const char *path_idx(char *buf, const char *parent, size_t i);

/* Every key of the mapping must be one of `known` (NULL-terminated) and appear once;
 * an unknown key is an error that suggests the nearest known name. */
void y_check_keys(struct pctx *x, yaml_node_t *map, const char *path, const char *const *known);
/* Value of `key` in the mapping; NULL when absent or null. */
yaml_node_t *y_get(struct pctx *x, yaml_node_t *map, const char *key);
/* Report "expected <what>, got <y_what>" unless n has the given type. */
bool y_expect(struct pctx *x, yaml_node_t *n, yaml_node_type_t type, const char *path);
/* String field: NULL when absent; reports a non-string. */
const char *y_str(struct pctx *x, yaml_node_t *map, const char *key, const char *parent);
/* s is one or more decimal digits and nothing else. */
bool all_digits(const char *s);
/* A port number 1..65535 (scalar). */
bool y_port(struct pctx *x, yaml_node_t *n, const char *path, uint16_t *out);
bool y_uint32(struct pctx *x, yaml_node_t *n, const char *path, uint32_t *out);
/* One of `names` (NULL-terminated); returns its index, or -1 after an error that lists the
 * accepted values and suggests the nearest. */
int y_enum(struct pctx *x, yaml_node_t *n, const char *path, const char *const *names);

/* A list of strings: calls fn(value) for each string item; a non-string item, an empty
 * string and an empty list are errors. Returns false when n is not a list. */
typedef void (*y_item_fn)(struct pctx *x, yaml_node_t *item, const char *path, const char *value,
			  void *arg);
bool y_each_str(struct pctx *x, yaml_node_t *n, const char *path, y_item_fn fn, void *arg);
/* A string list stored as is. */
bool y_strlist(struct pctx *x, yaml_node_t *n, const char *path, struct mc_strs *out);
/* A mapping of string -> string (labels, annotations, matchLabels). */
bool y_labels(struct pctx *x, yaml_node_t *n, const char *path, struct mc_labels *out);

/* A workload selector {matchLabels: {...}} (no wildcards). */
void y_selector(struct pctx *x, yaml_node_t *n, const char *path, struct mc_labels *out);

/* ---- names ---- */
bool dns1123_label(const char *s);
bool dns1123_subdomain(const char *s);
/* The candidate nearest to word (edit distance), or NULL when none is close. */
const char *nearest_word(const char *word, const char *const *cands);

/* ---- object parsers (parse_*.c): parse spec into the snapshot ---- */
void parse_authz(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta);
void parse_peer_auth(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta);
void parse_workload_entry(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta);
void parse_service_entry(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta);
void parse_kservice(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta);
/* Whole-set checks of Services (parse_service.c): bounds, VIP:port claimed twice, a VIP
 * that is a workload's address. Each error counts in *errors. */
void mc_check_services(struct mesh_config *c, struct mc_findings *f, int *errors);

/* ---- freeing ---- */
void mc_strs_free(struct mc_strs *s);
void mc_labels_free(struct mc_labels *l);
void mc_meta_free(struct mc_meta *m);
void mc_config_free(struct mesh_config *c);
void mc_strs_push(struct mc_strs *s, const char *v);
void mc_labels_push(struct mc_labels *l, const char *k, const char *v);

/* Indexes for the lookups (lookup.c); called once a snapshot is complete. */
void mc_build_indexes(struct mesh_config *c);

#endif
