/* The mesh configuration: a directory of Kubernetes-style YAML (the resources Istio users
 * already write) parsed, validated whole, and frozen into one immutable, refcounted snapshot.
 * A snapshot is either entirely valid or not produced at all: a bad file never replaces a
 * good configuration (the caller keeps the previous snapshot).
 *
 * Kinds: security.istio.io/v1 AuthorizationPolicy, PeerAuthentication;
 *        networking.istio.io/v1 WorkloadEntry, ServiceEntry;  v1 Namespace, Service;
 *        moat.dev/v1 MeshConfig.
 * Files: *.yaml and *.yml directly in the directory, read in name order; several documents
 * per file separated by `---`. Every object remembers the file and line it came from. */
#ifndef MOAT_CONFIG_H
#define MOAT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>

#include "core/util.h"

/* ---- bounds: what one load may cost (docs/config.md, "Limits") ----
 * A file or directory over a bound is an error at file:line like any other: the load fails
 * and the previous configuration stays in force. */
#define MC_MAX_FILE_BYTES (1024 * 1024)       /* one file */
#define MC_MAX_DIR_BYTES (64 * 1024 * 1024)   /* every file of the directory together */
#define MC_MAX_FILES 20000                    /* YAML files in the directory */
#define MC_MAX_DEPTH 64                       /* nesting of one document, aliases expanded */
#define MC_MAX_NODES 200000                   /* nodes of one document, aliases expanded */
#define MC_MAX_ALIAS_NODES 100000             /* nodes reached through aliases, per document */
#define MC_MAX_ANCHORS 1000                   /* anchors (&name) per document */
#define MC_MAX_ERRORS 200                     /* errors kept per load; the rest are counted */
#define MC_SHOW_MAX 48                        /* longest file value quoted in a message */
#define MC_MAX_SERVICES 10000                 /* Services + MESH_INTERNAL ServiceEntries with a
					       * workloadSelector, together */
#define MC_MAX_SERVICE_PORTS 64               /* spec.ports of one Service / ServiceEntry */

/* A file value as it may appear in a message: itself when short and made of name
 * characters, else "<N bytes, not shown>". SHOW(v) is valid until the end of the statement. */
struct mc_shown {
	char s[MC_SHOW_MAX + 32];
};
struct mc_shown mc_show(const char *v);
#define SHOW(v) (mc_show(v).s)

/* ---- findings: errors, warnings and notes with their place ---- */
enum mc_severity { MC_NOTE = 0, MC_WARNING = 1, MC_ERROR = 2 };

struct mc_finding {
	enum mc_severity severity;
	char *file;    /* path as given (dir + name) */
	int line;      /* 1-based; 0 when unknown */
	char *policy;  /* "namespace/name" of the object, or NULL */
	int rule;      /* 1-based rule index, 0 when not about a rule */
	char *field;   /* e.g. "rules[0].to[0].operation.methods", or NULL */
	char *message; /* what is wrong and what it now means / what to do */
	char *kind;    /* kind of the object ("AuthorizationPolicy", ...), NULL when unknown;
			* mc_finding_str writes "policy ns/name" for AuthorizationPolicy and
			* "<Kind> ns/name" for the others (added) */
};

struct mc_findings {
	struct mc_finding *items;
	size_t n, cap;
};

void mc_findings_free(struct mc_findings *f);
size_t mc_findings_count(const struct mc_findings *f, enum mc_severity sev);
/* One finding as "file:line: policy ns/name rule N: field: message" (parts that are absent
 * are left out), prefixed with "error: " / "warning: " / "note: ". Returns buf. */
const char *mc_finding_str(const struct mc_finding *f, char *buf, size_t len);
/* Append a finding (strings are copied; NULL parts are absent). Returns it. (added) */
struct mc_finding *mc_finding_add(struct mc_findings *f, enum mc_severity sev, const char *file,
				  int line, const char *kind, const char *object, int rule,
				  const char *field, const char *fmt, ...)
	__attribute__((format(printf, 9, 10)));
struct mc_finding *mc_finding_vadd(struct mc_findings *f, enum mc_severity sev, const char *file,
				   int line, const char *kind, const char *object, int rule,
				   const char *field, const char *fmt, va_list ap)
	__attribute__((format(printf, 9, 0)));
/* Append copies of every finding of src. (added) */
void mc_findings_append(struct mc_findings *dst, const struct mc_findings *src);

/* ---- common pieces ---- */
struct mc_label {
	char *key, *value;
};

struct mc_labels {
	struct mc_label *items;
	size_t n, cap;
};

struct mc_strs {
	char **items;
	size_t n, cap;
};

struct mc_meta {
	char *name;
	char *ns;            /* metadata.namespace; "default" when absent (except MeshConfig) */
	struct mc_labels labels;
	struct mc_labels annotations;
	int64_t created_ms;  /* metadata.creationTimestamp (RFC 3339), 0 when absent */
	unsigned seq;        /* load order: file name order, then document order */
	char *file;
	int line;            /* line of the document's first key */
};

/* ---- MeshConfig (moat.dev/v1), at most one ---- */
enum mc_outbound { MC_OUTBOUND_ALLOW_ANY = 0, MC_OUTBOUND_REGISTRY_ONLY = 1 };

struct mc_mesh {
	char *trust_domain;   /* spec.trustDomain, default "cluster.local" */
	char *root_namespace; /* spec.rootNamespace, default "istio-system" */
	enum mc_outbound outbound; /* spec.outboundTrafficPolicy.mode */
	char *file;           /* NULL when defaulted */
	int line;
};

/* ---- Namespace (v1): labels only (istio.io/dataplane-mode) ---- */
struct mc_namespace {
	struct mc_meta meta;
};

/* ---- WorkloadEntry (networking.istio.io/v1) ---- */
struct mc_port {
	char *name;       /* map key or ports[].name */
	uint16_t number;
};

/* A workload has at most this many addresses (dual stack: an IPv4 and an IPv6, with room). */
#define MC_WL_MAX_ADDRS 4
/* The annotation that gives a WorkloadEntry its other addresses (docs/config.md). */
#define MC_ADDRESSES_ANNOTATION "moat.dev/addresses"

struct mc_workload {
	struct mc_meta meta;
	struct moat_addr address; /* spec.address, must be an IP: the primary address */
	/* Every address: addrs[0] = spec.address, then the others the annotation
	 * moat.dev/addresses lists (dual stack), in the order written. */
	struct moat_addr addrs[MC_WL_MAX_ADDRS];
	size_t n_addrs;
	struct mc_labels labels;  /* spec.labels (selectors match these, then metadata.labels) */
	char *service_account;    /* spec.serviceAccount, default "default" */
	char *network;
	uint32_t weight;          /* spec.weight, default 1; 0 = never chosen as a Service endpoint */
	struct mc_port *ports;    /* spec.ports: name -> number */
	size_t n_ports, cap_ports;
	/* istio.io/dataplane-mode: ambient on spec.labels, metadata.labels, or its Namespace:
	 * the workload has an agent in front and is reached over HBONE. */
	bool ambient;
	char *spiffe_id;          /* spiffe://<td>/ns/<ns>/sa/<sa>, filled at load */
};

/* ---- ServiceEntry (networking.istio.io/v1) ---- */
enum mc_resolution { MC_RES_NONE = 0, MC_RES_STATIC = 1, MC_RES_DNS = 2 };
enum mc_location { MC_MESH_EXTERNAL = 0, MC_MESH_INTERNAL = 1 };

struct mc_se_port {
	uint16_t number;
	char *name;
	char *protocol;
	uint16_t target_port;
};

struct mc_se_endpoint {
	char *address;            /* IP, or hostname for DNS resolution */
	struct moat_addr ip;      /* valid when is_ip */
	bool is_ip;
	struct mc_labels labels;
	struct mc_port *ports;
	size_t n_ports, cap_ports;
};

struct mc_service_entry {
	struct mc_meta meta;
	/* spec.workloadSelector.labels (MESH_INTERNAL only): the endpoints are the
	 * WorkloadEntries of the ServiceEntry's namespace these select (Istio), and the
	 * service table (state/services.h) balances over them. */
	bool has_workload_selector;
	struct mc_labels workload_selector;
	int workload_selector_line;
	struct mc_strs hosts;
	struct cidr *addresses;   /* spec.addresses (IP or CIDR) */
	size_t n_addresses, cap_addresses;
	struct mc_se_port *ports;
	size_t n_ports, cap_ports;
	enum mc_location location;
	enum mc_resolution resolution;
	struct mc_se_endpoint *endpoints;
	size_t n_endpoints, cap_endpoints;
};

/* ---- Service (v1): a Kubernetes Service, a VIP balanced over selected workloads ---- */
struct mc_svc_port {
	char *name;         /* spec.ports[].name, NULL when absent */
	uint16_t port;      /* spec.ports[].port */
	uint16_t target_port; /* numeric targetPort (default = port); 0 when target_name is set */
	char *target_name;  /* named targetPort: resolved per endpoint through its ports map */
	bool tcp;           /* protocol TCP (default); UDP / SCTP ports are kept, never served */
	char *protocol;     /* as written, "TCP" when absent */
	int line;
};

/* A Service has at most this many cluster IPs (spec.clusterIPs: one per family). */
#define MC_SVC_MAX_VIPS 2

struct mc_kservice {
	struct mc_meta meta;
	struct moat_addr vips[MC_SVC_MAX_VIPS]; /* spec.clusterIP / clusterIPs, as written */
	size_t n_vips;
	bool headless;      /* clusterIP "None": no VIP, nothing to capture (warning) */
	int vips_line;
	struct mc_svc_port *ports;
	size_t n_ports, cap_ports;
	bool has_selector;  /* spec.selector present and non-empty */
	struct mc_labels selector; /* spec.selector: label map, namespace-scoped */
	int selector_line;
};

/* ---- AuthorizationPolicy (security.istio.io/v1) ---- */
enum mc_action { MC_ACTION_ALLOW = 0, MC_ACTION_DENY = 1, MC_ACTION_AUDIT = 2, MC_ACTION_CUSTOM = 3 };

struct mc_cidrs {
	struct cidr *items;
	size_t n, cap;
};

/* A list field of a source/operation/condition, with presence (an empty list written in
 * YAML counts as present and matches nothing / everything as Istio does). */
struct mc_source {
	bool has_principals, has_not_principals, has_namespaces, has_not_namespaces;
	bool has_service_accounts, has_not_service_accounts, has_ip_blocks, has_not_ip_blocks;
	struct mc_strs principals, not_principals;      /* "spiffe://" prefix already removed */
	struct mc_strs namespaces, not_namespaces;
	struct mc_strs service_accounts, not_service_accounts; /* normalised to "ns/sa" */
	struct mc_cidrs ip_blocks, not_ip_blocks;
	int line;
	/* principals / notPrincipals entries as written with "spiffe://" (for lint; added) */
	struct mc_strs spiffe_written;
};

struct mc_operation {
	bool has_ports, has_not_ports;
	uint16_t *ports, *not_ports; /* numeric entries only */
	size_t n_ports, cap_ports, n_not_ports, cap_not_ports;
	/* Named (non-numeric) entries cannot be enforced at L4; they fail closed:
	 * ALLOW: a named entry matches nothing (numeric entries still count);
	 * DENY: an operation with a named entry in `ports` matches every port. */
	bool named_in_ports, named_in_not_ports;
	int line;
	struct mc_strs named_ports, named_not_ports; /* the named entries, for lint (added) */
};

enum mc_when_key {
	MC_WHEN_SOURCE_IP = 0,
	MC_WHEN_SOURCE_NAMESPACE,
	MC_WHEN_SOURCE_PRINCIPAL,
	MC_WHEN_DESTINATION_IP,
	MC_WHEN_DESTINATION_PORT,
};

/* A `when` value list in the form its key needs, parsed once at load (file:line errors
 * there): CIDRs for source.ip / destination.ip, port numbers for destination.port. The
 * engine matches these and never re-parses the text. */
struct mc_when_typed {
	struct mc_cidrs cidrs;  /* MC_WHEN_SOURCE_IP, MC_WHEN_DESTINATION_IP */
	uint16_t *ports;        /* MC_WHEN_DESTINATION_PORT */
	size_t n_ports, cap_ports;
};

struct mc_condition {
	enum mc_when_key key;
	bool has_values, has_not_values;
	struct mc_strs values, not_values; /* as written (principals without "spiffe://") */
	struct mc_when_typed typed, not_typed; /* values / notValues, typed (see above) */
	int line;
	struct mc_strs spiffe_written; /* source.principal values written with "spiffe://" (added) */
};

/* A field L4 cannot enforce, as found in a rule (added, for lint). */
struct mc_l7 {
	char *field; /* path, e.g. "spec.rules[0].to[0].operation.methods" or "...when[1] (request.headers[x])" */
	char *name;  /* short name: "methods", "requestPrincipals", "when request.headers[x]" */
	int line;
};

struct mc_rule {
	bool has_from, has_to, has_when;
	struct mc_source *from;
	size_t n_from, cap_from;
	struct mc_operation *to;
	size_t n_to, cap_to;
	struct mc_condition *when;
	size_t n_when, cap_when;
	/* The rule carried fields L4 cannot see (methods, paths, hosts, requestPrincipals,
	 * remoteIpBlocks, other `when` keys). In an ALLOW policy the rule is dropped (matches
	 * nothing); in a DENY policy it is enforced without them (fail closed). */
	bool had_l7;
	bool dropped;
	int line;
	struct mc_l7 *l7; /* the L7 fields found (added) */
	size_t n_l7, cap_l7;
};

struct mc_target_ref {
	char *group, *kind, *name, *ns; /* ns defaults to the policy's namespace */
	int line; /* (added) */
};

struct mc_authz {
	struct mc_meta meta;
	enum mc_action action;
	bool has_selector;
	struct mc_labels selector; /* spec.selector.matchLabels */
	struct mc_target_ref *target_refs; /* spec.targetRef / spec.targetRefs */
	size_t n_target_refs, cap_target_refs;
	struct mc_rule *rules;
	size_t n_rules, cap_rules;
	bool dry_run;              /* annotation istio.io/dry-run: "true" */
	bool unsupported;          /* AUDIT / CUSTOM: reported, never enforced */
	char *id_name;             /* "namespace/name" */
};

/* ---- PeerAuthentication (security.istio.io/v1) ---- */
enum mc_mtls { MC_MTLS_UNSET = 0, MC_MTLS_PERMISSIVE = 1, MC_MTLS_STRICT = 2, MC_MTLS_DISABLE = 3 };

struct mc_port_mtls {
	uint16_t port;
	enum mc_mtls mode;
};

struct mc_peer_auth {
	struct mc_meta meta;
	bool has_selector;
	struct mc_labels selector;
	enum mc_mtls mode;
	struct mc_port_mtls *port_level;
	size_t n_port_level, cap_port_level;
	char *id_name;
};

/* ---- the snapshot ---- */
struct mesh_config {
	int refs;
	char *dir;
	struct mc_mesh mesh;
	struct mc_namespace *namespaces;
	size_t n_namespaces, cap_namespaces;
	struct mc_workload *workloads;
	size_t n_workloads, cap_workloads;
	struct mc_service_entry *services;
	size_t n_services, cap_services;
	struct mc_kservice *kservices; /* kind Service (v1) */
	size_t n_kservices, cap_kservices;
	struct mc_authz *policies;
	size_t n_policies, cap_policies;
	struct mc_peer_auth *peer_auths;
	size_t n_peer_auths, cap_peer_auths;
	struct mc_findings findings; /* warnings and notes of this snapshot (lint) */
	/* Every WorkloadEntry address sorted (built at load): the per-connection lookup is a
	 * binary search, not a scan. Entry = workload index * MC_WL_MAX_ADDRS + address index. */
	uint32_t *wl_by_addr;
	size_t n_wl_by_addr;
	char digest[65];             /* sha256 of the inputs, hex: tells reloads apart */
	/* Loaded through a load cache: the objects above are shallow copies of these per-file
	 * configurations' (held by reference), the snapshot owns only its arrays, mesh, indexes,
	 * findings and what completion added (SPIFFE IDs). NULL: it owns every object. */
	struct mesh_config **shared;
	size_t n_shared, cap_shared;
};

/* Load every YAML file of dir. On success returns 0 and a snapshot (refs = 1); warnings and
 * notes are in (*out)->findings and also appended to `findings` when not NULL. On any
 * error returns -1, *out = NULL, and every error (and warning) is in `findings`. */
int mesh_config_load_dir(const char *dir, struct mesh_config **out, struct mc_findings *findings);
/* The same, reusing the objects an earlier load through the same cache parsed from files
 * whose bytes did not change (path, size and SHA-256 alike): only changed files are parsed
 * again, and the outcome (snapshot, digest, findings, refusal) is that of
 * mesh_config_load_dir. The cache keeps the files of the last load only; snapshots share
 * the cached objects (by reference, freed with the last holder). One load at a time per
 * cache. */
struct mc_load_cache;
struct mc_load_cache_stats {
	size_t reused, parsed;   /* files of the last load: taken from the cache / parsed */
	size_t unread;           /* of the reused: not even read (unchanged inode, settled) */
	size_t files;            /* files the cache holds */
};
struct mc_load_cache *mc_load_cache_new(void);
/* How old a file's ctime must be before its inode alone (no read) may stand for its bytes
 * (default 2 s; tests set 0 to reach that path at once). */
void mc_load_cache_set_settle(struct mc_load_cache *cache, int64_t ns);
void mc_load_cache_free(struct mc_load_cache *cache);
const struct mc_load_cache_stats *mc_load_cache_stats(const struct mc_load_cache *cache);
int mesh_config_load_dir_cached(const char *dir, struct mc_load_cache *cache,
				struct mesh_config **out, struct mc_findings *findings);
/* The same from in-memory documents (tests, `moatctl lint -`): names[i] is shown as the file. */
int mesh_config_load_texts(const char *const *names, const char *const *texts, size_t n,
			   struct mesh_config **out, struct mc_findings *findings);
/* One in-memory file of len bytes (need not be NUL-terminated; may hold NUL bytes, which
 * are refused): the entry point for fuzzing. name is shown as the file. */
int mesh_config_load_buffer(const char *name, const char *data, size_t len,
			    struct mesh_config **out, struct mc_findings *findings);
/* An empty configuration with defaults (no policies: everything allowed). */
struct mesh_config *mesh_config_empty(void);
struct mesh_config *mesh_config_ref(struct mesh_config *c);
void mesh_config_unref(struct mesh_config *c);

/* ---- lookups ---- */
/* The WorkloadEntry one of whose addresses is a. */
const struct mc_workload *mc_workload_by_addr(const struct mesh_config *c, const struct moat_addr *a);
/* Does w have address a (any of its addresses)? */
bool mc_workload_has_addr(const struct mc_workload *w, const struct moat_addr *a);
/* w's address of a's family (IPv4 or IPv6), else its primary address. */
const struct moat_addr *mc_workload_addr_like(const struct mc_workload *w, const struct moat_addr *a);
const struct mc_workload *mc_workload_by_name(const struct mesh_config *c, const char *ns, const char *name);
const struct mc_namespace *mc_namespace_by_name(const struct mesh_config *c, const char *ns);
/* A ServiceEntry whose spec.addresses or IP endpoints contain a (DNS-resolved addresses are
 * the agent's business, see proxy/egress). */
const struct mc_service_entry *mc_service_by_addr(const struct mesh_config *c, const struct moat_addr *a);
const struct mc_service_entry *mc_service_by_name(const struct mesh_config *c, const char *ns, const char *name);
bool mc_service_has_port(const struct mc_service_entry *se, uint16_t port);
const struct mc_kservice *mc_kservice_by_name(const struct mesh_config *c, const char *ns,
					      const char *name);
/* matchLabels semantics: every selector label present with the same value. */
bool mc_labels_match(const struct mc_labels *selector, const struct mc_labels *labels);
const char *mc_label_get(const struct mc_labels *l, const char *key);
/* matchLabels over two label sets: a key is looked up in labels, then (when absent there)
 * in fallback (may be NULL). */
bool mc_labels_selected(const struct mc_labels *selector, const struct mc_labels *labels,
			const struct mc_labels *fallback);
/* Workload labels as selectors see them: spec.labels, then metadata.labels. */
bool mc_workload_selected(const struct mc_workload *w, const struct mc_labels *selector);
/* "spiffe://<td>/ns/<ns>/sa/<sa>" (malloc'd). */
char *mc_spiffe_id(const struct mesh_config *c, const char *ns, const char *sa);

#endif
