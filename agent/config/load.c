/* Loading a configuration directory: files in name order, documents in file order, each
 * object validated, then the whole set cross-checked (duplicates, addresses), completed
 * (ambient flags, SPIFFE IDs) and linted. Any error and no snapshot is produced. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "config/config_internal.h"

#define AMBIENT_LABEL "istio.io/dataplane-mode"

enum obj_kind {
	K_AUTHZ,
	K_PEER_AUTH,
	K_WORKLOAD_ENTRY,
	K_SERVICE_ENTRY,
	K_NAMESPACE,
	K_MESH,
	K_SERVICE
};

static const char *const security_versions[] = {"security.istio.io/v1",
						"security.istio.io/v1beta1", NULL};
static const char *const networking_versions[] = {"networking.istio.io/v1",
						  "networking.istio.io/v1beta1",
						  "networking.istio.io/v1alpha3", NULL};
static const char *const core_versions[] = {"v1", NULL};
static const char *const moat_versions[] = {"moat.dev/v1", NULL};

static const struct kind_info {
	const char *name;
	const char *const *versions;
	enum obj_kind kind;
} kinds[] = {
	{"AuthorizationPolicy", security_versions, K_AUTHZ},
	{"PeerAuthentication", security_versions, K_PEER_AUTH},
	{"WorkloadEntry", networking_versions, K_WORKLOAD_ENTRY},
	{"ServiceEntry", networking_versions, K_SERVICE_ENTRY},
	{"Namespace", core_versions, K_NAMESPACE},
	{"MeshConfig", moat_versions, K_MESH},
	{"Service", core_versions, K_SERVICE},
};

static const char *const kind_names[] = {"AuthorizationPolicy", "PeerAuthentication",
					 "WorkloadEntry",	"ServiceEntry",
					 "Namespace",		"MeshConfig",
					 "Service",		NULL};

static const char *const top_keys[] = {"apiVersion", "kind", "metadata", "spec", "status", NULL};
/* Kubernetes bookkeeping fields are accepted (objects exported with kubectl carry them). */
static const char *const meta_keys[] = {
	"name",		 "namespace",	       "labels",	"annotations",
	"creationTimestamp", "uid",	       "resourceVersion", "generation",
	"managedFields", "finalizers",	       "ownerReferences", "generateName",
	"deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", NULL};

struct loadctx {
	struct mesh_config *c;
	struct mc_findings all; /* every finding of this load */
	int errors;
	unsigned seq;
	EVP_MD_CTX *md;
	size_t bytes; /* read so far, against MC_MAX_DIR_BYTES */
};

/* ---- metadata ---- */

/* RFC 3339: 2024-01-02T03:04:05Z, optional fraction, Z or +hh:mm. */
static bool parse_rfc3339(const char *s, int64_t *ms)
{
	struct tm tm = {0};
	int n = 0;
	if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 || n == 0)
		return false;
	const char *p = s + n;
	int64_t frac_ms = 0;
	if (*p == '.') {
		int digits = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, digits++)
			if (digits < 3)
				frac_ms = frac_ms * 10 + (*p - '0');
		if (digits == 0)
			return false;
		for (; digits < 3; digits++)
			frac_ms *= 10;
	}
	int64_t offset = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om, m = 0;
		if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &m) != 2 || m != 5)
			return false;
		offset = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return false;
	}
	if (*p || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return false;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	*ms = ((int64_t)t - offset) * 1000 + frac_ms;
	return true;
}

static bool parse_meta(struct pctx *x, yaml_node_t *md, bool namespaced, struct mc_meta *m)
{
	char sub[CFG_PATH_LEN];
	if (!md) {
		perr(x, x->root, "metadata", "missing metadata: every object needs metadata.name");
		return false;
	}
	if (!y_expect(x, md, YAML_MAPPING_NODE, "metadata"))
		return false;
	y_check_keys(x, md, "metadata", meta_keys);
	const char *name = y_str(x, md, "name", "metadata");
	const char *ns = y_str(x, md, "namespace", "metadata");
	if (!name) {
		perr(x, md, "metadata.name", "missing metadata.name: every object needs a name");
		return false;
	}
	if (!dns1123_subdomain(name))
		perr(x, y_get(x, md, "name"), "metadata.name",
		     "\"%s\" is not a valid name (lowercase letters, digits, '-' and '.')", SHOW(name));
	if (ns && !dns1123_label(ns))
		perr(x, y_get(x, md, "namespace"), "metadata.namespace",
		     "\"%s\" is not a valid namespace name (DNS-1123 label: lowercase letters, "
		     "digits and '-', at most 63 characters): it becomes part of SPIFFE IDs", SHOW(ns));
	m->name = xstrdup(name);
	m->ns = xstrdup(namespaced ? (ns ? ns : "default") : "");
	yaml_node_t *v;
	if ((v = y_get(x, md, "labels")))
		y_labels(x, v, "metadata.labels", &m->labels);
	if ((v = y_get(x, md, "annotations")))
		y_labels(x, v, "metadata.annotations", &m->annotations);
	const char *ts = y_str(x, md, "creationTimestamp", "metadata");
	if (ts && !parse_rfc3339(ts, &m->created_ms))
		perr(x, y_get(x, md, "creationTimestamp"), path_key(sub, "metadata",
								       "creationTimestamp"),
		     "\"%s\" is not an RFC 3339 time (e.g. 2024-05-01T10:00:00Z)", SHOW(ts));
	m->file = xstrdup(x->file);
	m->line = yline(x->root);
	m->seq = (*x->seq)++;
	return true;
}

/* ---- MeshConfig, Namespace ---- */
static bool trust_domain_ok(const char *td)
{
	if (!*td || strlen(td) > 255)
		return false;
	for (const char *p = td; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' ||
		      *p == '-' || *p == '_'))
			return false;
	return true;
}

static void parse_mesh(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta)
{
	static const char *const keys[] = {"trustDomain", "rootNamespace", "outboundTrafficPolicy",
					   NULL};
	static const char *const otp_keys[] = {"mode", NULL};
	static const char *const modes[] = {"ALLOW_ANY", "REGISTRY_ONLY", NULL};
	struct mc_mesh *mesh = &x->c->mesh;
	if (mesh->file) {
		perr(x, x->root, NULL, "more than one MeshConfig (the first is at %s:%d): keep one",
		     mesh->file, mesh->line);
		return;
	}
	mesh->file = xstrdup(x->file);
	mesh->line = meta->line;
	if (!spec || !y_expect(x, spec, YAML_MAPPING_NODE, "spec"))
		return;
	y_check_keys(x, spec, "spec", keys);
	const char *td = y_str(x, spec, "trustDomain", "spec");
	if (td && !trust_domain_ok(td))
		perr(x, y_get(x, spec, "trustDomain"), "spec.trustDomain",
		     "\"%s\" is not a valid trust domain (lowercase letters, digits, '.', '-', '_')",
		     SHOW(td));
	else if (td)
		mesh->trust_domain = xstrdup(td);
	const char *root = y_str(x, spec, "rootNamespace", "spec");
	if (root && !dns1123_label(root))
		perr(x, y_get(x, spec, "rootNamespace"), "spec.rootNamespace",
		     "\"%s\" is not a valid namespace name (DNS-1123 label)", SHOW(root));
	else if (root)
		mesh->root_namespace = xstrdup(root);
	yaml_node_t *otp = y_get(x, spec, "outboundTrafficPolicy");
	if (otp && y_expect(x, otp, YAML_MAPPING_NODE, "spec.outboundTrafficPolicy")) {
		y_check_keys(x, otp, "spec.outboundTrafficPolicy", otp_keys);
		yaml_node_t *mode = y_get(x, otp, "mode");
		int m = mode ? y_enum(x, mode, "spec.outboundTrafficPolicy.mode", modes) : 0;
		mesh->outbound = m == 1 ? MC_OUTBOUND_REGISTRY_ONLY : MC_OUTBOUND_ALLOW_ANY;
	}
}

static void parse_namespace(struct pctx *x, yaml_node_t *spec, struct mc_meta *meta)
{
	static const char *const keys[] = {"finalizers", NULL};
	if (!dns1123_label(meta->name))
		perr(x, x->root, "metadata.name",
		     "\"%s\" is not a valid namespace name (DNS-1123 label)", SHOW(meta->name));
	if (spec && y_expect(x, spec, YAML_MAPPING_NODE, "spec")) {
		y_check_keys(x, spec, "spec", keys);
		struct mc_strs ignored = {0};
		yaml_node_t *f = y_get(x, spec, "finalizers");
		if (f)
			y_strlist(x, f, "spec.finalizers", &ignored);
		mc_strs_free(&ignored);
	}
	struct mc_namespace *ns = VEC_PUSH(x->c->namespaces, x->c->n_namespaces,
					   x->c->cap_namespaces);
	ns->meta = *meta;
	memset(meta, 0, sizeof(*meta));
}

/* ---- one document ---- */
static const struct kind_info *find_kind(struct pctx *x, yaml_node_t *root)
{
	const char *api = y_str(x, root, "apiVersion", NULL);
	const char *kind = y_str(x, root, "kind", NULL);
	if (!kind) {
		perr(x, root, "kind", "missing kind: moat reads AuthorizationPolicy, "
		     "PeerAuthentication, WorkloadEntry, ServiceEntry, Service, Namespace and MeshConfig");
		return NULL;
	}
	const struct kind_info *ki = NULL;
	for (size_t i = 0; i < ARRAY_SIZE(kinds) && !ki; i++)
		if (strcmp(kinds[i].name, kind) == 0)
			ki = &kinds[i];
	if (!ki) {
		const char *near = nearest_word(kind, kind_names);
		perr(x, y_get(x, root, "kind"), "kind",
		     "unknown kind \"%s\"%s%s%s: moat reads AuthorizationPolicy, PeerAuthentication, "
		     "WorkloadEntry, ServiceEntry, Service, Namespace and MeshConfig", SHOW(kind),
		     near ? " (did you mean \"" : "", near ? near : "", near ? "\"?)" : "");
		return NULL;
	}
	if (!api) {
		perr(x, root, "apiVersion", "missing apiVersion: %s uses %s", kind, ki->versions[0]);
		return NULL;
	}
	for (size_t i = 0; ki->versions[i]; i++)
		if (strcmp(ki->versions[i], api) == 0)
			return ki;
	perr(x, y_get(x, root, "apiVersion"), "apiVersion",
	     "apiVersion \"%s\" is not valid for %s: use %s", SHOW(api), kind, ki->versions[0]);
	return NULL;
}

static void parse_document(struct pctx *x, yaml_node_t *root)
{
	char object[512];
	x->root = root;
	x->kind = NULL;
	x->object = NULL;
	x->rule = 0;
	if (root->type != YAML_MAPPING_NODE) {
		perr(x, root, NULL, "not a mapping (got %s): each document must be one object with "
		     "apiVersion, kind, metadata and spec", y_what(root));
		return;
	}
	y_check_keys(x, root, NULL, top_keys);
	const struct kind_info *ki = find_kind(x, root);
	if (!ki)
		return;
	x->kind = ki->name;
	struct mc_meta meta = {0};
	bool namespaced = ki->kind != K_NAMESPACE && ki->kind != K_MESH;
	if (!parse_meta(x, y_get(x, root, "metadata"), namespaced, &meta)) {
		mc_meta_free(&meta);
		return;
	}
	if (namespaced)
		snprintf(object, sizeof(object), "%s/%s", SHOW(meta.ns), SHOW(meta.name));
	else
		snprintf(object, sizeof(object), "%s", SHOW(meta.name));
	x->object = object;
	yaml_node_t *spec = y_get(x, root, "spec");
	switch (ki->kind) {
	case K_AUTHZ: parse_authz(x, spec, &meta); break;
	case K_PEER_AUTH: parse_peer_auth(x, spec, &meta); break;
	case K_WORKLOAD_ENTRY: parse_workload_entry(x, spec, &meta); break;
	case K_SERVICE_ENTRY: parse_service_entry(x, spec, &meta); break;
	case K_NAMESPACE: parse_namespace(x, spec, &meta); break;
	case K_MESH: parse_mesh(x, spec, &meta); break;
	case K_SERVICE: parse_kservice(x, spec, &meta); break;
	}
	mc_meta_free(&meta);
	x->object = NULL;
}

static void sha256(const char *text, size_t len, unsigned char out[32])
{
	unsigned int n = 0;
	if (!EVP_Digest(text, len, out, &n, EVP_sha256(), NULL) || n != 32) {
		fprintf(stderr, "moat: SHA-256 failed (OpenSSL)\n");
		abort();
	}
}

/* The digest covers each file's name, size and SHA-256: a load that did not read an
 * unchanged file (its stamp, below) digests it from what the cache knows. */
static void digest_add(struct loadctx *lc, const char *name, size_t len,
		       const unsigned char sha[32])
{
	char lenbuf[32];
	int n = snprintf(lenbuf, sizeof(lenbuf), "%zu", len);
	EVP_DigestUpdate(lc->md, name, strlen(name) + 1);
	EVP_DigestUpdate(lc->md, lenbuf, (size_t)n + 1);
	EVP_DigestUpdate(lc->md, sha, 32);
}

static void digest_text(struct loadctx *lc, const char *name, const char *text, size_t len,
			unsigned char sha[32])
{
	sha256(text, len, sha);
	digest_add(lc, name, len, sha);
}

static void load_error(struct loadctx *lc, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void load_error(struct loadctx *lc, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	mc_finding_vadd(&lc->all, MC_ERROR, file, line, NULL, NULL, 0, NULL, fmt, ap);
	va_end(ap);
	lc->errors++;
}

/* Bytes every loader entry point refuses before YAML sees them: the bounds, which count
 * over the whole set (MC_MAX_DIR_BYTES), are checked at every load, cached file or not. */
static bool size_acceptable(struct loadctx *lc, const char *file, size_t len)
{
	if (len > MC_MAX_FILE_BYTES) {
		load_error(lc, file, 0, "file is larger than %d bytes (MC_MAX_FILE_BYTES): split it "
			   "into several files", MC_MAX_FILE_BYTES);
		return false;
	}
	lc->bytes += len;
	if (lc->bytes > MC_MAX_DIR_BYTES) {
		load_error(lc, file, 0, "the configuration is larger than %d bytes in all "
			   "(MC_MAX_DIR_BYTES) with this file: remove what is not needed",
			   MC_MAX_DIR_BYTES);
		return false;
	}
	return true;
}

/* The line of the first NUL byte, 0 when there is none. */
static int nul_line(const char *text, size_t len)
{
	const char *nul = memchr(text, 0, len);
	if (!nul)
		return 0;
	int line = 1;
	for (const char *p = text; p < nul; p++)
		line += *p == '\n';
	return line;
}

static struct mesh_config *config_new(void)
{
	struct mesh_config *c = xcalloc(1, sizeof(*c));
	c->refs = 1;
	return c;
}

/* Compose and parse one file's text into lc (its snapshot, findings, load order), as a
 * load from nothing does. False when libyaml could not start (out of memory). */
static bool parse_text(struct loadctx *lc, const char *file, const char *text, size_t len)
{
	struct pctx x = {.c = lc->c, .findings = &lc->all, .file = file, .seq = &lc->seq};
	int nul = nul_line(text, len);
	if (nul) {
		load_error(lc, file, nul, "a NUL byte: this is not a YAML text file");
		return true;
	}
	yaml_parser_t parser;
	if (!yaml_parser_initialize(&parser)) {
		load_error(lc, file, 0, "cannot initialise the YAML parser (out of memory?)");
		return false;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	for (;;) {
		yaml_document_t doc;
		struct mc_compose_error ce = {0};
		int rc = mc_compose(&parser, &doc, &ce);
		if (rc < 0)
			load_error(lc, file, ce.line, "%s", ce.msg);
		if (rc <= 0)
			break;
		yaml_node_t *root = yaml_document_get_root_node(&doc);
		x.doc = &doc;
		x.errors = 0;
		if (root && !y_null(root)) /* empty documents (`---` alone, comments) are skipped */
			parse_document(&x, root);
		lc->errors += x.errors;
		yaml_document_delete(&doc);
	}
	yaml_parser_delete(&parser);
	return true;
}

/* ---- one file's objects: what a load keeps of a file between loads ----
 * Parsing a file depends on no other file but for the load order (renumbered when the file
 * is taken) and the one MeshConfig (a file that brings a second one is parsed again in the
 * load, where the first one is known). So a file whose bytes did not change (path, size and
 * SHA-256 alike) gives the same objects and findings: the load takes them from its fragment
 * (a configuration holding only that file's objects) and runs the whole-set checks, indexes
 * and completion on the new snapshot, as a load from nothing does. A snapshot shares the
 * objects of the fragments it holds references to (mc_config_free). */
struct fragment {
	struct mesh_config *c;    /* the file's objects; findings below */
	struct mc_findings found; /* what parsing the file found, in order */
	int errors;
	unsigned n_seq;           /* objects numbered in load order */
};

/* A regular file's inode, as read: while it is the same (same inode, size, mtime and
 * ctime), so are the bytes, provided the ctime was already in the past when the file was
 * read (MC_STAMP_SETTLE_NS): a write after the read moves the ctime, and one in the same
 * clock tick as an earlier write cannot be confused with it, because files changed that
 * recently are always read. A write sets the ctime to now, and nothing sets it back. */
#define MC_STAMP_SETTLE_NS (2 * 1000000000LL)

struct file_stamp {
	dev_t dev;
	ino_t ino;
	off_t size;
	int64_t mtime_ns, ctime_ns;
};

struct cached_file {
	char *path;
	size_t len;
	unsigned char sha[32];
	bool valid;               /* sha holds the bytes frag was parsed from */
	struct fragment frag;
	struct file_stamp stamp;
	bool settled;             /* stamp may stand for the bytes (not a link, not recent) */
	bool seen;                /* read by the current load */
};

struct mc_load_cache {
	struct cached_file *files; /* by path after a load: the order a load reads them in */
	size_t n, cap;
	size_t hint;               /* where the next lookup starts */
	int64_t settle_ns;         /* MC_STAMP_SETTLE_NS; tests shorten it */
	struct mc_load_cache_stats st;
};

static void fragment_clear(struct fragment *f)
{
	mesh_config_unref(f->c);
	mc_findings_free(&f->found);
	memset(f, 0, sizeof(*f));
}

static void cached_file_clear(struct cached_file *cf)
{
	fragment_clear(&cf->frag);
	free(cf->path);
	memset(cf, 0, sizeof(*cf));
}

/* Parse text alone into a fragment; `first_mesh` (or NULL) is where an earlier file's
 * MeshConfig is, so that this file's is reported as a second one. False: not reusable. */
static bool fragment_parse(struct fragment *f, const struct mc_mesh *first_mesh,
			   const char *file, const char *text, size_t len)
{
	struct loadctx fl = {.c = config_new()};
	if (first_mesh) {
		fl.c->mesh.file = xstrdup(first_mesh->file);
		fl.c->mesh.line = first_mesh->line;
	}
	bool ok = parse_text(&fl, file, text, len);
	*f = (struct fragment){.c = fl.c, .found = fl.all, .errors = fl.errors, .n_seq = fl.seq};
	return ok;
}

static struct cached_file *cache_find(struct mc_load_cache *cache, const char *path)
{
	/* Files are read in name order, the order the cache keeps: the hint finds the next
	 * one at once (a scan from the start per file is quadratic in MC_MAX_FILES). */
	size_t start = cache->hint ? cache->hint - 1 : 0; /* this file again, or the next */
	for (size_t k = 0; k < cache->n; k++) {
		size_t i = (start + k) % cache->n;
		if (strcmp(cache->files[i].path, path) == 0) {
			cache->hint = i + 1;
			return &cache->files[i];
		}
	}
	return NULL;
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static struct file_stamp stamp_of(const struct stat *st)
{
	return (struct file_stamp){.dev = st->st_dev, .ino = st->st_ino, .size = st->st_size,
				   .mtime_ns = ts_ns(&st->st_mtim),
				   .ctime_ns = ts_ns(&st->st_ctim)};
}

static bool stamp_eq(const struct file_stamp *a, const struct file_stamp *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

/* Remember the inode the bytes were read from (st: fstat of the open file, taken before
 * the read). */
static void stamp_record(const struct mc_load_cache *cache, struct cached_file *cf,
			 const struct stat *st)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	cf->stamp = stamp_of(st);
	cf->settled = S_ISREG(st->st_mode) && cf->stamp.ctime_ns < ts_ns(&now) - cache->settle_ns;
}

/* The fragment of (path, text): the cache's when parsed from the same bytes, else parsed
 * now and kept. */
static const struct fragment *cached_fragment(struct mc_load_cache *cache, const char *path,
					      const char *text, size_t len,
					      const unsigned char sha[32], const struct stat *st)
{
	struct cached_file *cf = cache_find(cache, path);
	if (cf && cf->valid && cf->len == len && memcmp(cf->sha, sha, 32) == 0) {
		cache->st.reused++;
		cf->seen = true;
		stamp_record(cache, cf, st);
		return &cf->frag;
	}
	if (!cf)
		cf = VEC_PUSH(cache->files, cache->n, cache->cap);
	cached_file_clear(cf);
	cf->path = xstrdup(path);
	cf->len = len;
	memcpy(cf->sha, sha, 32);
	cf->valid = fragment_parse(&cf->frag, NULL, path, text, len);
	stamp_record(cache, cf, st);
	cf->seen = true;
	cache->st.parsed++;
	return &cf->frag;
}

#define TAKE_OBJECTS(c, f, arr, n, cap, base)                                               \
	do {                                                                                 \
		for (size_t i_ = 0; i_ < (f)->n; i_++) {                                     \
			*VEC_PUSH((c)->arr, (c)->n, (c)->cap) = (f)->arr[i_];                \
			(c)->arr[(c)->n - 1].meta.seq += (base);                             \
		}                                                                            \
	} while (0)

/* The snapshot takes the fragment's objects (shared: it holds a reference), findings and
 * MeshConfig, in load order after what it holds. */
static void take_fragment(struct loadctx *lc, const struct fragment *f, bool mesh)
{
	struct mesh_config *c = lc->c, *fc = f->c;
	mc_findings_append(&lc->all, &f->found);
	lc->errors += f->errors;
	unsigned base = lc->seq;
	TAKE_OBJECTS(c, fc, namespaces, n_namespaces, cap_namespaces, base);
	TAKE_OBJECTS(c, fc, workloads, n_workloads, cap_workloads, base);
	TAKE_OBJECTS(c, fc, services, n_services, cap_services, base);
	TAKE_OBJECTS(c, fc, kservices, n_kservices, cap_kservices, base);
	TAKE_OBJECTS(c, fc, policies, n_policies, cap_policies, base);
	TAKE_OBJECTS(c, fc, peer_auths, n_peer_auths, cap_peer_auths, base);
	lc->seq += f->n_seq;
	if (mesh && fc->mesh.file) { /* the snapshot's own copy: completion may add to it */
		c->mesh.file = xstrdup(fc->mesh.file);
		c->mesh.line = fc->mesh.line;
		c->mesh.trust_domain = fc->mesh.trust_domain ? xstrdup(fc->mesh.trust_domain) : NULL;
		c->mesh.root_namespace = fc->mesh.root_namespace ? xstrdup(fc->mesh.root_namespace)
								 : NULL;
		c->mesh.outbound = fc->mesh.outbound;
	}
	*VEC_PUSH(c->shared, c->n_shared, c->cap_shared) = mesh_config_ref(fc);
}

/* st: the file's fstat (cache only), sha: of text. */
static void load_text(struct loadctx *lc, struct mc_load_cache *cache, const char *file,
		      const char *text, size_t len, const unsigned char sha[32],
		      const struct stat *st)
{
	if (!size_acceptable(lc, file, len))
		return;
	if (!cache) {
		parse_text(lc, file, text, len);
		return;
	}
	const struct fragment *f = cached_fragment(cache, file, text, len, sha, st);
	if (!f->c->mesh.file || !lc->c->mesh.file) {
		take_fragment(lc, f, true);
		return;
	}
	/* A second MeshConfig: parsed again knowing the first (not kept: it depends on it). */
	struct fragment again;
	fragment_parse(&again, &lc->c->mesh, file, text, len);
	take_fragment(lc, &again, false);
	fragment_clear(&again);
}

struct mc_load_cache *mc_load_cache_new(void)
{
	struct mc_load_cache *cache = xcalloc(1, sizeof(*cache));
	cache->settle_ns = MC_STAMP_SETTLE_NS;
	return cache;
}

void mc_load_cache_set_settle(struct mc_load_cache *cache, int64_t ns)
{
	cache->settle_ns = ns;
}

void mc_load_cache_free(struct mc_load_cache *cache)
{
	if (!cache)
		return;
	for (size_t i = 0; i < cache->n; i++)
		cached_file_clear(&cache->files[i]);
	free(cache->files);
	free(cache);
}

const struct mc_load_cache_stats *mc_load_cache_stats(const struct mc_load_cache *cache)
{
	return &cache->st;
}

static void cache_begin(struct mc_load_cache *cache)
{
	if (!cache)
		return;
	cache->st.reused = cache->st.parsed = cache->st.unread = 0;
	cache->hint = 0;
	for (size_t i = 0; i < cache->n; i++)
		cache->files[i].seen = false;
}

static int cmp_cached_path(const void *a, const void *b)
{
	return strcmp(((const struct cached_file *)a)->path, ((const struct cached_file *)b)->path);
}

/* Files the load did not read (removed, renamed, no longer YAML) leave the cache. */
static void cache_sweep(struct mc_load_cache *cache)
{
	if (!cache)
		return;
	size_t out = 0;
	for (size_t i = 0; i < cache->n; i++) {
		if (cache->files[i].seen)
			cache->files[out++] = cache->files[i];
		else
			cached_file_clear(&cache->files[i]);
	}
	/* The slots past the kept ones still hold copies of moved entries: a later VEC_PUSH
	 * hands one out and clears it, which would free what a kept entry owns. */
	memset(cache->files + out, 0, (cache->n - out) * sizeof(*cache->files));
	cache->n = out;
	cache->st.files = out;
	qsort(cache->files, cache->n, sizeof(*cache->files), cmp_cached_path);
}

/* ---- whole-set checks ---- */
static int cmp_meta(const void *pa, const void *pb)
{
	const struct mc_meta *a = *(struct mc_meta *const *)pa, *b = *(struct mc_meta *const *)pb;
	int c = strcmp(a->ns, b->ns);
	if (!c)
		c = strcmp(a->name, b->name);
	return c ? c : (a->seq > b->seq) - (a->seq < b->seq);
}

/* Sorted by (namespace, name, load order): each later copy is reported against the first.
 * n log n, because 10,000 policies compared pairwise took seconds. */
static void dup_check(struct loadctx *lc, const char *kind, struct mc_meta **metas, size_t n)
{
	qsort(metas, n, sizeof(*metas), cmp_meta);
	for (size_t i = 1, first = 0; i < n; i++) {
		const struct mc_meta *a = metas[first], *b = metas[i];
		if (strcmp(a->ns, b->ns) != 0 || strcmp(a->name, b->name) != 0) {
			first = i;
			continue;
		}
		char object[512];
		snprintf(object, sizeof(object), "%s%s%s", SHOW(b->ns), *b->ns ? "/" : "",
			 SHOW(b->name));
		mc_finding_add(&lc->all, MC_ERROR, b->file, b->line, kind, object, 0, NULL,
			       "duplicate %s %s: also defined at %s:%d; rename or delete one",
			       kind, object, a->file, a->line);
		lc->errors++;
	}
}

#define DUP_CHECK(lc, kind, arr, n)                                                          \
	do {                                                                                 \
		struct mc_meta **m_ = xcalloc((n) + 1, sizeof(*m_));                         \
		for (size_t i_ = 0; i_ < (n); i_++)                                          \
			m_[i_] = &(arr)[i_].meta;                                            \
		dup_check(lc, kind, m_, n);                                                  \
		free(m_);                                                                    \
	} while (0)

/* No two workloads share an address (any of their addresses): adjacent entries of the
 * sorted address index (mc_build_indexes) name both. */
static void check_addresses(struct loadctx *lc)
{
	struct mesh_config *c = lc->c;
	for (size_t k = 1; k < c->n_wl_by_addr; k++) {
		uint32_t ea = c->wl_by_addr[k - 1], eb = c->wl_by_addr[k];
		const struct mc_workload *a = &c->workloads[ea / MC_WL_MAX_ADDRS];
		const struct mc_workload *b = &c->workloads[eb / MC_WL_MAX_ADDRS];
		const struct moat_addr *ip = &b->addrs[eb % MC_WL_MAX_ADDRS];
		if (a == b || !addr_eq(&a->addrs[ea % MC_WL_MAX_ADDRS], ip))
			continue;
		char s[ADDR_STRLEN], object[512];
		snprintf(object, sizeof(object), "%s/%s", b->meta.ns, b->meta.name);
		mc_finding_add(&lc->all, MC_ERROR, b->meta.file, b->meta.line, "WorkloadEntry",
			       object, 0, eb % MC_WL_MAX_ADDRS ? "metadata.annotations." MC_ADDRESSES_ANNOTATION
							   : "spec.address",
			       "address %s is already used by WorkloadEntry %s/%s (%s:%d): "
			       "each workload needs its own address",
			       addr_str(ip, s, sizeof(s)), a->meta.ns, a->meta.name,
			       a->meta.file, a->meta.line);
		lc->errors++;
	}
}

static void complete(struct mesh_config *c)
{
	if (!c->mesh.trust_domain)
		c->mesh.trust_domain = xstrdup("cluster.local");
	if (!c->mesh.root_namespace)
		c->mesh.root_namespace = xstrdup("istio-system");
	for (size_t i = 0; i < c->n_workloads; i++) {
		struct mc_workload *w = &c->workloads[i];
		const char *mode = mc_label_get(&w->labels, AMBIENT_LABEL);
		if (!mode)
			mode = mc_label_get(&w->meta.labels, AMBIENT_LABEL);
		if (!mode) {
			const struct mc_namespace *ns = mc_namespace_by_name(c, w->meta.ns);
			mode = ns ? mc_label_get(&ns->meta.labels, AMBIENT_LABEL) : NULL;
		}
		w->ambient = mode && strcmp(mode, "ambient") == 0;
		w->spiffe_id = mc_spiffe_id(c, w->meta.ns, w->service_account);
	}
}

static void begin(struct loadctx *lc)
{
	memset(lc, 0, sizeof(*lc));
	lc->c = config_new();
	lc->md = EVP_MD_CTX_new();
	if (!lc->md || !EVP_DigestInit_ex(lc->md, EVP_sha256(), NULL)) {
		fprintf(stderr, "moat: cannot initialise SHA-256 (OpenSSL)\n");
		abort();
	}
}

/* A broken file can hold an error per line: keep the first MC_MAX_ERRORS (what a person
 * reads, and what reaches the log) and say how many more there were. */
static void cap_errors(struct mc_findings *f)
{
	size_t kept = 0, dropped = 0;
	const struct mc_finding *first_dropped = NULL;
	struct mc_findings out = {0};
	for (size_t i = 0; i < f->n; i++) {
		struct mc_finding *it = &f->items[i];
		if (it->severity == MC_ERROR && kept == MC_MAX_ERRORS) {
			first_dropped = first_dropped ? first_dropped : it;
			dropped++;
			continue;
		}
		kept += it->severity == MC_ERROR;
		mc_finding_add(&out, it->severity, it->file, it->line, it->kind, it->policy,
			       it->rule, it->field, "%s", it->message);
	}
	if (!dropped) {
		mc_findings_free(&out);
		return;
	}
	/* Placed where the first unshown error is, like every finding (a file, a line). */
	mc_finding_add(&out, MC_ERROR, first_dropped->file, first_dropped->line, NULL, NULL, 0,
		       NULL, "%zu more errors not shown (MC_MAX_ERRORS = %d), the first here: "
		       "fix the ones above first", dropped, MC_MAX_ERRORS);
	mc_findings_free(f);
	*f = out;
}

/* Cross-check and complete; hand out the snapshot or the errors. Linting (what L4 cannot
 * enforce) is the policy room's: callers run authz_lint_loaded on the snapshot. */
static int finish(struct loadctx *lc, struct mesh_config **out, struct mc_findings *findings)
{
	struct mesh_config *c = lc->c;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_DigestFinal_ex(lc->md, md, &mdlen);
	EVP_MD_CTX_free(lc->md);
	for (unsigned i = 0; i < mdlen && i < 32; i++)
		snprintf(c->digest + 2 * i, 3, "%02x", md[i]);
	DUP_CHECK(lc, "AuthorizationPolicy", c->policies, c->n_policies);
	DUP_CHECK(lc, "PeerAuthentication", c->peer_auths, c->n_peer_auths);
	DUP_CHECK(lc, "WorkloadEntry", c->workloads, c->n_workloads);
	DUP_CHECK(lc, "ServiceEntry", c->services, c->n_services);
	DUP_CHECK(lc, "Namespace", c->namespaces, c->n_namespaces);
	DUP_CHECK(lc, "Service", c->kservices, c->n_kservices);
	mc_build_indexes(c);
	check_addresses(lc);
	mc_check_services(c, &lc->all, &lc->errors);
	complete(c);
	cap_errors(&lc->all);
	if (findings)
		mc_findings_append(findings, &lc->all);
	if (lc->errors) {
		mc_findings_free(&lc->all);
		mc_config_free(c);
		*out = NULL;
		return -1;
	}
	c->findings = lc->all;
	*out = c;
	return 0;
}

int mesh_config_load_texts(const char *const *names, const char *const *texts, size_t n,
			   struct mesh_config **out, struct mc_findings *findings)
{
	struct loadctx lc;
	begin(&lc);
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(texts[i]);
		unsigned char sha[32];
		digest_text(&lc, names[i], texts[i], len, sha);
		load_text(&lc, NULL, names[i], texts[i], len, sha, NULL);
	}
	return finish(&lc, out, findings);
}

int mesh_config_load_buffer(const char *name, const char *data, size_t len,
			    struct mesh_config **out, struct mc_findings *findings)
{
	struct loadctx lc;
	begin(&lc);
	unsigned char sha[32];
	digest_text(&lc, name, data, len, sha);
	load_text(&lc, NULL, name, data, len, sha, NULL);
	return finish(&lc, out, findings);
}

static bool yaml_name(const char *name)
{
	size_t n = strlen(name);
	if (name[0] == '.') /* editor files, and Kubernetes' ..data links */
		return false;
	return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) ||
	       (n > 4 && strcmp(name + n - 4, ".yml") == 0);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read one file of the directory, at most MC_MAX_FILE_BYTES + 1 bytes of it. It must be a
 * regular file whose real path lies inside the directory's real path `real_dir`: links
 * inside the directory (a mounted ConfigMap's name -> ..data/name -> ..<timestamp>/name) are
 * followed, a link out of it (to /etc/shadow, to another tenant's secrets) is refused, and a
 * FIFO or device never blocks or floods the loader. */
#define CONFIG_OPEN_FLAGS (O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)

/* Open name of the directory, -1 after an error (or -2 for a link out of it). */
static int open_config_file(struct loadctx *lc, const char *path, const char *name,
			    const char *real_dir)
{
	/* What is not a link in the real directory lies inside it: no realpath, which costs
	 * a readlink per path component, per file, per load (a twentieth of a reload). */
	char *direct = xasprintf("%s/%s", real_dir, name);
	int fd = open(direct, CONFIG_OPEN_FLAGS);
	free(direct);
	if (fd >= 0)
		return fd;
	char *real = realpath(path, NULL); /* a link (ELOOP), or an error told below */
	size_t rl = strlen(real_dir);
	if (!real) {
		load_error(lc, path, 0, "cannot read: %s", strerror(errno));
		return -2;
	}
	if (strncmp(real, real_dir, rl) != 0 || (rl > 1 && real[rl] != '/')) {
		load_error(lc, path, 0, "a link out of the configuration directory: refused (only "
			   "files inside it are read, links included); copy the file in instead");
		free(real);
		return -2;
	}
	fd = open(real, CONFIG_OPEN_FLAGS);
	free(real);
	return fd;
}

static char *read_config_file(struct loadctx *lc, const char *path, const char *name,
			      const char *real_dir, size_t *len, struct stat *st_out)
{
	int fd = open_config_file(lc, path, name, real_dir);
	if (fd == -2)
		return NULL;
	struct stat st;
	if (fd < 0 || fstat(fd, st_out) < 0) {
		load_error(lc, path, 0, "cannot read: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	st = *st_out;
	if (S_ISDIR(st.st_mode)) { /* subdirectories are not read, whatever their name */
		close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		load_error(lc, path, 0, "not a regular file (a FIFO, socket or device): refused");
		close(fd);
		return NULL;
	}
	char *buf = xmalloc(MC_MAX_FILE_BYTES + 2);
	size_t n = 0;
	while (n <= MC_MAX_FILE_BYTES) {
		ssize_t r = read(fd, buf + n, MC_MAX_FILE_BYTES + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			load_error(lc, path, 0, "cannot read: %s", strerror(errno));
			close(fd);
			free(buf);
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = 0;
	*len = n;
	return buf;
}

/* The YAML names of dir, sorted; at most MC_MAX_FILES. */
static bool list_dir(struct loadctx *lc, const char *dir, struct mc_strs *names)
{
	DIR *d = opendir(dir);
	if (!d) {
		load_error(lc, dir, 0, "cannot open the configuration directory: %s",
			   strerror(errno));
		return false;
	}
	for (struct dirent *de; (de = readdir(d));) {
		if (!yaml_name(de->d_name))
			continue;
		if (names->n == MC_MAX_FILES) {
			load_error(lc, dir, 0, "more than %d YAML files (MC_MAX_FILES): put several "
				   "documents in one file", MC_MAX_FILES);
			closedir(d);
			return false;
		}
		mc_strs_push(names, de->d_name);
	}
	closedir(d);
	qsort(names->items, names->n, sizeof(char *), cmp_str);
	return true;
}

static void read_dir_file(struct loadctx *lc, struct mc_load_cache *cache, const char *path,
		      const char *name, const char *real_dir)
{
	size_t len = 0;
	struct stat st;
	char *text = read_config_file(lc, path, name, real_dir, &len, &st);
	if (text) {
		unsigned char sha[32];
		digest_text(lc, name, text, len, sha);
		load_text(lc, cache, path, text, len, sha, &st);
	}
	free(text);
}

/* A settled regular file whose inode says it did not change since it was read is taken
 * from the cache without opening it (1,013 files opened, read and hashed took a sixth of
 * a reload). Links, recent files and a second MeshConfig are read. */
static bool unchanged_file(struct loadctx *lc, struct mc_load_cache *cache, const char *path,
			   const char *name, const char *real_dir)
{
	struct cached_file *cf = cache ? cache_find(cache, path) : NULL;
	if (!cf || !cf->valid || !cf->settled ||
	    (cf->frag.c->mesh.file && lc->c->mesh.file))
		return false;
	char *direct = xasprintf("%s/%s", real_dir, name);
	struct stat st;
	int rc = lstat(direct, &st);
	free(direct);
	if (rc < 0 || !S_ISREG(st.st_mode))
		return false;
	struct file_stamp now = stamp_of(&st);
	if (!stamp_eq(&now, &cf->stamp))
		return false;
	digest_add(lc, name, cf->len, cf->sha);
	if (size_acceptable(lc, path, cf->len))
		take_fragment(lc, &cf->frag, true);
	cf->seen = true;
	cache->st.reused++;
	cache->st.unread++;
	return true;
}

int mesh_config_load_dir_cached(const char *dir, struct mc_load_cache *cache,
				struct mesh_config **out, struct mc_findings *findings)
{
	struct loadctx lc;
	begin(&lc);
	cache_begin(cache);
	lc.c->dir = xstrdup(dir);
	struct mc_strs names = {0};
	char *real_dir = realpath(dir, NULL);
	if (!real_dir)
		load_error(&lc, dir, 0, "cannot open the configuration directory: %s",
			   strerror(errno));
	else if (list_dir(&lc, dir, &names))
		for (size_t i = 0; i < names.n; i++) {
			char *path = xasprintf("%s/%s", dir, names.items[i]);
			if (!unchanged_file(&lc, cache, path, names.items[i], real_dir))
				read_dir_file(&lc, cache, path, names.items[i], real_dir);
			free(path);
		}
	free(real_dir);
	mc_strs_free(&names);
	cache_sweep(cache);
	return finish(&lc, out, findings);
}

int mesh_config_load_dir(const char *dir, struct mesh_config **out, struct mc_findings *findings)
{
	return mesh_config_load_dir_cached(dir, NULL, out, findings);
}

struct mesh_config *mesh_config_empty(void)
{
	struct mesh_config *c;
	struct loadctx lc;
	begin(&lc);
	finish(&lc, &c, NULL);
	return c;
}

struct mesh_config *mesh_config_ref(struct mesh_config *c)
{
	if (c)
		__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
	return c;
}

void mesh_config_unref(struct mesh_config *c)
{
	if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
		mc_config_free(c);
}
