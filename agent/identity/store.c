/* The agent's identity store: one SVID and TLS context pair per local identity, renewed at
 * half-life, rebuilt when the trust bundle file changes.
 *
 * Replaced contexts and SVIDs are not freed at once: identity.h promises borrowed pointers
 * stay valid until the next loop iteration, so they wait on a "retired" list drained by a
 * timer that cannot fire in the current iteration. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "core/loop.h"
#include "identity/identity.h"
#include "identity/identity_internal.h"

#define DEFAULT_TTL_SECONDS 86400
#define BUNDLE_CHECK_MS 5000
#define RENEW_RETRY_MAX_MS 10000
#define RETIRE_DELAY_MS 1 /* > 0: run_timers never fires it in the pass that armed it */

struct ident {
	struct identity_store *store;
	char id[SPIFFE_ID_MAX];
	int refs;
	struct svid *svid;
	SSL_CTX *server, *client;
	struct loop_timer renew;
};

struct file_id {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct identity_store {
	struct loop *loop; /* may be NULL: no timers (tools, tests) */
	struct moat_ca *ca;
	char *bundle_path;
	int ttl;
	bool allow_tls12;
	struct bundle *bundle;
	struct file_id bundle_file;
	bool bundle_stat_failed; /* logged once until the file is back */
	struct loop_timer bundle_timer;
	struct ident **ids;
	size_t n_ids, cap_ids;
	SSL_CTX **retired_ctx;
	size_t n_retired_ctx, cap_retired_ctx;
	struct svid **retired_svid;
	size_t n_retired_svid, cap_retired_svid;
	struct loop_timer retire_timer;
};

/* ---- retiring replaced objects ---- */

static void drain_retired(struct identity_store *s)
{
	for (size_t i = 0; i < s->n_retired_ctx; i++)
		SSL_CTX_free(s->retired_ctx[i]); /* SSLs made from it keep their own reference */
	for (size_t i = 0; i < s->n_retired_svid; i++)
		svid_unref(s->retired_svid[i]);
	s->n_retired_ctx = s->n_retired_svid = 0;
}

static void retire_cb(struct loop_timer *t)
{
	drain_retired(container_of(t, struct identity_store, retire_timer));
}

static void retire_ctx(struct identity_store *s, SSL_CTX *ctx)
{
	if (!ctx)
		return;
	vec_grow((void **)&s->retired_ctx, &s->n_retired_ctx, &s->cap_retired_ctx,
		 sizeof(*s->retired_ctx));
	s->retired_ctx[s->n_retired_ctx++] = ctx;
	if (s->loop && !loop_timer_armed(&s->retire_timer))
		loop_timer_arm(s->loop, &s->retire_timer, RETIRE_DELAY_MS);
}

static void retire_svid(struct identity_store *s, struct svid *sv)
{
	if (!sv)
		return;
	vec_grow((void **)&s->retired_svid, &s->n_retired_svid, &s->cap_retired_svid,
		 sizeof(*s->retired_svid));
	s->retired_svid[s->n_retired_svid++] = sv;
	if (s->loop && !loop_timer_armed(&s->retire_timer))
		loop_timer_arm(s->loop, &s->retire_timer, RETIRE_DELAY_MS);
}

/* ---- contexts ---- */

static int build_ctxs(struct identity_store *s, struct svid *sv, SSL_CTX **server,
		      SSL_CTX **client, struct err *e)
{
	*server = tls_server_ctx(sv, s->bundle, s->allow_tls12, e);
	*client = *server ? tls_client_ctx(sv, s->bundle, s->allow_tls12, e) : NULL;
	if (!*client) {
		SSL_CTX_free(*server);
		*server = NULL;
		return -1;
	}
	return 0;
}

/* Install a new SVID (and contexts) into ident; the previous ones are retired. */
static void install(struct ident *id, struct svid *sv, SSL_CTX *server, SSL_CTX *client)
{
	retire_ctx(id->store, id->server);
	retire_ctx(id->store, id->client);
	retire_svid(id->store, id->svid);
	id->svid = sv;
	id->server = server;
	id->client = client;
}

/* Mint an SVID and its contexts; NULL svid on failure. */
static struct svid *mint(struct identity_store *s, const char *spiffe_id, SSL_CTX **server,
			 SSL_CTX **client, struct err *e)
{
	struct svid *sv = ca_mint_svid(s->ca, spiffe_id, s->ttl, e);
	if (sv && build_ctxs(s, sv, server, client, e) < 0) {
		svid_unref(sv);
		return NULL;
	}
	return sv;
}

/* ---- renewal ---- */

static void schedule_renewal(struct ident *id)
{
	struct identity_store *s = id->store;
	if (!s->loop)
		return;
	time_t left = id->svid->not_after - time(NULL);
	uint64_t half_ttl = (uint64_t)s->ttl * 500;
	uint64_t half_left = left > 0 ? (uint64_t)left * 500 : 0;
	loop_timer_arm(s->loop, &id->renew, half_left < half_ttl ? half_left : half_ttl);
}

static void renew_cb(struct loop_timer *t)
{
	struct ident *id = container_of(t, struct ident, renew);
	struct identity_store *s = id->store;
	struct err e;
	SSL_CTX *server, *client;
	struct svid *sv = mint(s, id->id, &server, &client, &e);
	char until[RFC3339_LEN];
	if (!sv) {
		/* Keep the current certificate and retry well before it expires. */
		time_t left = id->svid->not_after - time(NULL);
		uint64_t retry = left > 0 ? (uint64_t)left * 250 : 1000;
		if (retry > RENEW_RETRY_MAX_MS)
			retry = RENEW_RETRY_MAX_MS;
		log_error("identity %s: certificate renewal failed: %s; keeping serial %s (valid "
			  "until %s), retrying in %llu ms",
			  id->id, e.msg, id->svid->serial,
			  id_time_rfc3339(id->svid->not_after, until, sizeof(until)),
			  (unsigned long long)retry);
		loop_timer_arm(s->loop, &id->renew, retry);
		return;
	}
	char old[sizeof(id->svid->serial)];
	snprintf(old, sizeof(old), "%s", id->svid->serial);
	install(id, sv, server, client);
	log_info("identity %s: renewed certificate: serial %s (was %s), valid until %s", id->id,
		 sv->serial, old, id_time_rfc3339(sv->not_after, until, sizeof(until)));
	schedule_renewal(id);
}

/* ---- the trust bundle file ---- */

static int stat_file(const char *path, struct file_id *out)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return -1;
	out->dev = st.st_dev;
	out->ino = st.st_ino;
	out->size = st.st_size;
	out->mtime = st.st_mtim;
	return 0;
}

static bool same_file(const struct file_id *a, const struct file_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static struct bundle *initial_bundle(const struct identity_store *s, struct err *e)
{
	if (!s->bundle_path)
		return bundle_from_cert(ca_root_cert(s->ca), ca_trust_domain(s->ca), e);
	return bundle_load(s->bundle_path, ca_trust_domain(s->ca), e);
}

static void warn_if_foreign(const struct identity_store *s, const struct bundle *b)
{
	if (!bundle_has_root(b, ca_root_cert(s->ca)))
		log_warn("trust bundle %s does not contain this node's CA root: peers using it will "
			 "reject our certificates",
			 s->bundle_path);
}

/* New bundle: every identity gets contexts that verify with it (same SVIDs). */
static void rebuild_all(struct identity_store *s)
{
	for (size_t i = 0; i < s->n_ids; i++) {
		struct ident *id = s->ids[i];
		struct err e;
		SSL_CTX *server, *client;
		if (build_ctxs(s, id->svid, &server, &client, &e) < 0) {
			log_error("identity %s: cannot rebuild TLS contexts for the new trust bundle: "
				  "%s; keeping the previous ones",
				  id->id, e.msg);
			continue;
		}
		retire_ctx(s, id->server);
		retire_ctx(s, id->client);
		id->server = server;
		id->client = client;
	}
}

void identity_store_check_bundle(struct identity_store *s)
{
	if (!s->bundle_path)
		return;
	struct file_id now;
	if (stat_file(s->bundle_path, &now) < 0) {
		if (!s->bundle_stat_failed)
			log_warn("trust bundle %s: %s; keeping the previous bundle", s->bundle_path,
				 strerror(errno));
		s->bundle_stat_failed = true;
		return;
	}
	s->bundle_stat_failed = false;
	if (same_file(&now, &s->bundle_file))
		return;
	/* Remember this version even if it is bad, so it is reported once, not every 5 s. */
	s->bundle_file = now;
	struct err e;
	struct bundle *b = bundle_load(s->bundle_path, ca_trust_domain(s->ca), &e);
	if (!b) {
		log_warn("trust bundle %s changed but cannot be used: %s; keeping the previous "
			 "bundle",
			 s->bundle_path, e.msg);
		return;
	}
	bundle_unref(s->bundle);
	s->bundle = b;
	warn_if_foreign(s, b);
	rebuild_all(s);
	log_info("trust bundle %s reloaded: %d root certificate(s); %zu identities use it",
		 s->bundle_path, bundle_root_count(b), s->n_ids);
}

static void bundle_timer_cb(struct loop_timer *t)
{
	struct identity_store *s = container_of(t, struct identity_store, bundle_timer);
	identity_store_check_bundle(s);
	loop_timer_arm(s->loop, &s->bundle_timer, BUNDLE_CHECK_MS);
}

/* ---- the store ---- */

struct identity_store *identity_store_new(struct loop *l, const struct identity_store_opts *o,
					  struct err *e)
{
	if (!o || !o->ca) {
		err_set(e, "identity store: no CA");
		return NULL;
	}
	struct identity_store *s = xcalloc(1, sizeof(*s));
	s->loop = l;
	s->ca = o->ca;
	s->bundle_path = o->bundle_path ? xstrdup(o->bundle_path) : NULL;
	s->ttl = o->ttl_seconds > 0 ? o->ttl_seconds : DEFAULT_TTL_SECONDS;
	s->allow_tls12 = o->allow_tls12;
	loop_timer_init(&s->bundle_timer, bundle_timer_cb);
	loop_timer_init(&s->retire_timer, retire_cb);
	if (s->bundle_path && stat_file(s->bundle_path, &s->bundle_file) < 0) {
		err_set(e, "trust bundle %s: %s", s->bundle_path, strerror(errno));
		identity_store_free(s);
		return NULL;
	}
	s->bundle = initial_bundle(s, e);
	if (!s->bundle) {
		identity_store_free(s);
		return NULL;
	}
	if (s->bundle_path) {
		warn_if_foreign(s, s->bundle);
		if (l)
			loop_timer_arm(l, &s->bundle_timer, BUNDLE_CHECK_MS);
	}
	return s;
}

static void ident_free(struct identity_store *s, struct ident *id)
{
	if (s->loop)
		loop_timer_cancel(s->loop, &id->renew);
	SSL_CTX_free(id->server);
	SSL_CTX_free(id->client);
	svid_unref(id->svid);
	free(id);
}

void identity_store_free(struct identity_store *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_ids; i++)
		ident_free(s, s->ids[i]);
	free(s->ids);
	if (s->loop) {
		loop_timer_cancel(s->loop, &s->bundle_timer);
		loop_timer_cancel(s->loop, &s->retire_timer);
	}
	drain_retired(s);
	free(s->retired_ctx);
	free(s->retired_svid);
	bundle_unref(s->bundle);
	free(s->bundle_path);
	free(s);
}

static struct ident *find(const struct identity_store *s, const char *spiffe_id, size_t *at)
{
	for (size_t i = 0; spiffe_id && i < s->n_ids; i++) {
		if (strcmp(s->ids[i]->id, spiffe_id) == 0) {
			if (at)
				*at = i;
			return s->ids[i];
		}
	}
	return NULL;
}

int identity_acquire(struct identity_store *s, const char *spiffe_id, struct err *e)
{
	struct ident *id = find(s, spiffe_id, NULL);
	if (id) {
		id->refs++;
		return 0;
	}
	SSL_CTX *server, *client;
	struct svid *sv = mint(s, spiffe_id, &server, &client, e);
	if (!sv)
		return -1;
	id = xcalloc(1, sizeof(*id));
	id->store = s;
	snprintf(id->id, sizeof(id->id), "%s", spiffe_id);
	id->refs = 1;
	id->svid = sv;
	id->server = server;
	id->client = client;
	loop_timer_init(&id->renew, renew_cb);
	/* (VEC_PUSH's unused dereference trips -Wunused-value; same growth, spelled out.) */
	vec_grow((void **)&s->ids, &s->n_ids, &s->cap_ids, sizeof(*s->ids));
	s->ids[s->n_ids++] = id;
	schedule_renewal(id);
	char until[RFC3339_LEN];
	log_info("identity %s: issued certificate serial %s, valid until %s", spiffe_id,
		 sv->serial, id_time_rfc3339(sv->not_after, until, sizeof(until)));
	return 0;
}

void identity_release(struct identity_store *s, const char *spiffe_id)
{
	size_t at;
	struct ident *id = find(s, spiffe_id, &at);
	if (!id || --id->refs > 0)
		return;
	if (s->loop)
		loop_timer_cancel(s->loop, &id->renew);
	/* Retired, not freed: a caller may still hold this iteration's borrowed pointers. */
	retire_ctx(s, id->server);
	retire_ctx(s, id->client);
	retire_svid(s, id->svid);
	if (!s->loop)
		drain_retired(s);
	free(id);
	s->ids[at] = s->ids[--s->n_ids];
	log_info("identity %s: released", spiffe_id);
}

SSL_CTX *identity_server_ctx(struct identity_store *s, const char *spiffe_id)
{
	struct ident *id = find(s, spiffe_id, NULL);
	return id ? id->server : NULL;
}

SSL_CTX *identity_client_ctx(struct identity_store *s, const char *spiffe_id)
{
	struct ident *id = find(s, spiffe_id, NULL);
	return id ? id->client : NULL;
}

const struct svid *identity_svid(struct identity_store *s, const char *spiffe_id)
{
	struct ident *id = find(s, spiffe_id, NULL);
	return id ? id->svid : NULL;
}

struct bundle *identity_bundle(struct identity_store *s)
{
	return s->bundle;
}

/* ---- `moatctl certs` ---- */

static int by_id(const void *a, const void *b)
{
	const struct ident *x = *(struct ident *const *)a, *y = *(struct ident *const *)b;
	return strcmp(x->id, y->id);
}

static void dump_json(struct ident **ids, size_t n, struct sbuf *out)
{
	sbuf_puts(out, "[");
	for (size_t i = 0; i < n; i++) {
		const struct svid *sv = ids[i]->svid;
		char nb[RFC3339_LEN], na[RFC3339_LEN];
		sbuf_puts(out, i ? ",{\"identity\":" : "{\"identity\":");
		sbuf_json_str(out, ids[i]->id);
		sbuf_puts(out, ",\"serial\":");
		sbuf_json_str(out, sv->serial);
		sbuf_puts(out, ",\"not_before\":");
		sbuf_json_str(out, id_time_rfc3339(sv->not_before, nb, sizeof(nb)));
		sbuf_puts(out, ",\"not_after\":");
		sbuf_json_str(out, id_time_rfc3339(sv->not_after, na, sizeof(na)));
		sbuf_puts(out, "}");
	}
	sbuf_puts(out, "]\n");
}

static void dump_text(struct ident **ids, size_t n, struct sbuf *out)
{
	int w_id = (int)strlen("IDENTITY"), w_serial = (int)strlen("SERIAL");
	for (size_t i = 0; i < n; i++) {
		int a = (int)strlen(ids[i]->id), b = (int)strlen(ids[i]->svid->serial);
		w_id = a > w_id ? a : w_id;
		w_serial = b > w_serial ? b : w_serial;
	}
	sbuf_printf(out, "%-*s  %-*s  %-20s  %s\n", w_id, "IDENTITY", w_serial, "SERIAL",
		    "NOT-BEFORE", "NOT-AFTER");
	for (size_t i = 0; i < n; i++) {
		const struct svid *sv = ids[i]->svid;
		char nb[RFC3339_LEN], na[RFC3339_LEN];
		sbuf_printf(out, "%-*s  %-*s  %-20s  %s\n", w_id, ids[i]->id, w_serial, sv->serial,
			    id_time_rfc3339(sv->not_before, nb, sizeof(nb)),
			    id_time_rfc3339(sv->not_after, na, sizeof(na)));
	}
}

void identity_store_dump(struct identity_store *s, bool json, struct sbuf *out)
{
	struct ident **sorted = xcalloc(s->n_ids ? s->n_ids : 1, sizeof(*sorted));
	if (s->n_ids)
		memcpy(sorted, s->ids, s->n_ids * sizeof(*sorted));
	qsort(sorted, s->n_ids, sizeof(*sorted), by_id);
	if (json)
		dump_json(sorted, s->n_ids, out);
	else
		dump_text(sorted, s->n_ids, out);
	free(sorted);
}
