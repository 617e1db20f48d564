/* The incremental load (mesh_config_load_dir_cached): after any change of the directory
 * (a file changed, added, removed, turned bad and back, a duplicate across files), a load
 * that reuses the unchanged files' documents gives exactly what a load from nothing gives:
 * the same digest, the same objects in the same order with the same file:line, the same
 * policies (decision fingerprints), the same findings, the same refusal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "policy/authz.h"
#include "test.h"

void th_write_file(const char *dir, const char *name, const char *text);
void th_remove_tree(const char *dir);

static void canon_meta(struct sbuf *b, const char *kind, const struct mc_meta *m)
{
	sbuf_printf(b, "%s %s/%s %s:%d seq=%u\n", kind, m->ns, m->name, m->file, m->line, m->seq);
}

static void canon_findings(struct sbuf *b, const struct mc_findings *f)
{
	char buf[2048];
	for (size_t i = 0; i < f->n; i++)
		sbuf_printf(b, "finding %s\n", mc_finding_str(&f->items[i], buf, sizeof(buf)));
}

/* Everything a load hands out, as text: equal texts, equal loads. */
static char *canon(int rc, const struct mesh_config *c, const struct mc_findings *f)
{
	struct sbuf b = {0};
	sbuf_printf(&b, "rc=%d\n", rc);
	canon_findings(&b, f);
	if (!c)
		return b.s ? b.s : xstrdup("");
	sbuf_printf(&b, "digest %s td %s root %s outbound %d\n", c->digest, c->mesh.trust_domain,
		    c->mesh.root_namespace, (int)c->mesh.outbound);
	for (size_t i = 0; i < c->n_workloads; i++) {
		const struct mc_workload *w = &c->workloads[i];
		char s[ADDR_STRLEN];
		canon_meta(&b, "WorkloadEntry", &w->meta);
		sbuf_printf(&b, "  %s %s ambient=%d sa=%s\n", addr_str(&w->address, s, sizeof(s)),
			    w->spiffe_id, w->ambient, w->service_account);
	}
	for (size_t i = 0; i < c->n_policies; i++) {
		canon_meta(&b, "AuthorizationPolicy", &c->policies[i].meta);
		sbuf_printf(&b, "  %s fingerprint %016llx\n", c->policies[i].id_name,
			    (unsigned long long)authz_policy_fingerprint(&c->policies[i]));
	}
	for (size_t i = 0; i < c->n_services; i++)
		canon_meta(&b, "ServiceEntry", &c->services[i].meta);
	for (size_t i = 0; i < c->n_peer_auths; i++)
		canon_meta(&b, "PeerAuthentication", &c->peer_auths[i].meta);
	for (size_t i = 0; i < c->n_namespaces; i++)
		canon_meta(&b, "Namespace", &c->namespaces[i].meta);
	canon_findings(&b, &c->findings);
	return b.s;
}

/* Load dir twice, through the cache and from nothing (both linted, as moatd does), and
 * compare. Returns the canonical text (the caller frees it). */
static char *load_both(const char *dir, struct mc_load_cache *cache, int want_rc)
{
	struct mesh_config *ci = NULL, *cf = NULL;
	struct mc_findings fi = {0}, ff = {0};
	int ri = mesh_config_load_dir_cached(dir, cache, &ci, &fi);
	int rf = mesh_config_load_dir(dir, &cf, &ff);
	if (ci)
		authz_lint_loaded(ci, NULL);
	if (cf)
		authz_lint_loaded(cf, NULL);
	CHECK_INT(ri, want_rc);
	char *a = canon(ri, ci, &fi), *b = canon(rf, cf, &ff);
	CHECK_STR(a, b);
	mesh_config_unref(ci);
	mesh_config_unref(cf);
	mc_findings_free(&fi);
	mc_findings_free(&ff);
	free(b);
	return a;
}

#define WL(ns, name, addr, sa)                                                             \
	"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: " name     \
	", namespace: " ns ", labels: {app: " name "}}\nspec: {address: " addr                \
	", serviceAccount: " sa "}\n"
#define POLICY(name, port)                                                                 \
	"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: " name \
	", namespace: shop}\nspec:\n  selector: {matchLabels: {app: cart}}\n  rules:\n"       \
	"  - from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]\n"               \
	"    to: [{operation: {ports: ['" port "'], methods: [GET]}}]\n"

static void check_stats(struct mc_load_cache *cache, size_t parsed, size_t reused,
			size_t files)
{
	const struct mc_load_cache_stats *st = mc_load_cache_stats(cache);
	CHECK_INT(st->parsed, parsed);
	CHECK_INT(st->reused, reused);
	CHECK_INT(st->files, files);
}

TEST(config_incremental_load_equals_a_full_load_after_each_change)
{
	char dir[] = "/tmp/moat-incr-test-XXXXXX";
	REQUIRE(mkdtemp(dir));
	th_write_file(dir, "00-mesh.yaml",
		      "apiVersion: moat.dev/v1\nkind: MeshConfig\nmetadata: {name: mesh}\n"
		      "spec: {trustDomain: example.org}\n---\n"
		      "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: "
		      "{istio.io/dataplane-mode: ambient}}\n");
	th_write_file(dir, "10-workloads.yaml",
		      WL("shop", "cart", "10.1.0.1", "cart") "---\n" WL("shop", "web", "10.1.0.2", "web"));
	th_write_file(dir, "20-a.yaml", POLICY("a", "8080"));
	th_write_file(dir, "30-b.yaml", POLICY("b", "9090"));
	struct mc_load_cache *cache = mc_load_cache_new();

	free(load_both(dir, cache, 0)); /* from an empty cache */
	check_stats(cache, 4, 0, 4);
	free(load_both(dir, cache, 0)); /* nothing changed */
	check_stats(cache, 0, 4, 4);

	th_write_file(dir, "20-a.yaml", POLICY("a", "8081")); /* one file changed */
	free(load_both(dir, cache, 0));
	check_stats(cache, 1, 3, 4);

	th_write_file(dir, "25-c.yaml", POLICY("c", "7070")); /* one added */
	free(load_both(dir, cache, 0));
	check_stats(cache, 1, 4, 5);

	char *gone = xasprintf("%s/30-b.yaml", dir); /* one removed: the cache drops it */
	unlink(gone);
	free(gone);
	char *good = load_both(dir, cache, 0);
	check_stats(cache, 0, 4, 4);

	/* turning bad: refused as a whole, with the error at its line, as a full load does */
	th_write_file(dir, "20-a.yaml", POLICY("a", "8081") "  bogus: 1\n");
	char *bad = load_both(dir, cache, -1);
	CHECK_CONTAINS(bad, "20-a.yaml:9");
	free(bad);
	check_stats(cache, 1, 3, 4);

	/* a copy of an unchanged file's policy: the whole-set duplicate check still sees it */
	th_write_file(dir, "20-a.yaml", POLICY("c", "8081"));
	char *dup = load_both(dir, cache, -1);
	CHECK_CONTAINS(dup, "duplicate AuthorizationPolicy shop/c");
	free(dup);

	/* a second MeshConfig in another file (its spec is wrong too): reported as a second
	 * one, against the first, and nothing of its spec, as a full load does */
	th_write_file(dir, "05-mesh.yaml", "apiVersion: moat.dev/v1\nkind: MeshConfig\n"
		      "metadata: {name: mesh2}\nspec: {trustDomain: 'Bad Domain'}\n");
	char *mesh2 = load_both(dir, cache, -1);
	CHECK_CONTAINS(mesh2, "more than one MeshConfig");
	CHECK(!strstr(mesh2, "Bad Domain"));
	free(mesh2);
	char *m2 = xasprintf("%s/05-mesh.yaml", dir);
	unlink(m2);
	free(m2);

	/* and back: the same snapshot as before it turned bad */
	th_write_file(dir, "20-a.yaml", POLICY("a", "8081"));
	char *back = load_both(dir, cache, 0);
	CHECK_STR(back, good);
	free(back);
	free(good);

	/* a change in a file others depend on (the trust domain) reaches every object */
	th_write_file(dir, "00-mesh.yaml",
		      "apiVersion: moat.dev/v1\nkind: MeshConfig\nmetadata: {name: mesh}\n"
		      "spec: {trustDomain: other.org}\n");
	char *td = load_both(dir, cache, 0);
	CHECK_CONTAINS(td, "spiffe://other.org/ns/shop/sa/cart");
	CHECK_CONTAINS(td, "ambient=0");
	free(td);
	check_stats(cache, 1, 3, 4);

	mc_load_cache_free(cache);
	th_remove_tree(dir);
}

/* A file removed from the middle, then one added: the slot the cache hands out for the new
 * file held a stale copy of a moved entry, and clearing it freed what that entry owns (a
 * use-after-free seen in moatd as "corrupted double-linked list" under ASan-less builds). */
TEST(config_incremental_load_survives_a_removal_then_an_addition)
{
	char dir[] = "/tmp/moat-incr-test-XXXXXX";
	REQUIRE(mkdtemp(dir));
	th_write_file(dir, "a.yaml", POLICY("a", "8080"));
	th_write_file(dir, "b.yaml", POLICY("b", "8081"));
	th_write_file(dir, "c.yaml", POLICY("c", "8082"));
	struct mc_load_cache *cache = mc_load_cache_new();
	free(load_both(dir, cache, 0));
	char *gone = xasprintf("%s/a.yaml", dir);
	unlink(gone);
	free(gone);
	free(load_both(dir, cache, 0));
	check_stats(cache, 0, 2, 2);
	th_write_file(dir, "d.yaml", POLICY("d", "8083"));
	free(load_both(dir, cache, 0));
	check_stats(cache, 1, 2, 3);
	th_write_file(dir, "e.yaml", POLICY("e", "8084"));
	free(load_both(dir, cache, 0));
	check_stats(cache, 1, 3, 4);
	mc_load_cache_free(cache);
	th_remove_tree(dir);
}

/* The cache knows a file by its bytes, not its time stamp: a rewrite with the same size in
 * the same clock tick is still seen. */
TEST(config_incremental_load_sees_a_same_size_rewrite)
{
	char dir[] = "/tmp/moat-incr-test-XXXXXX";
	REQUIRE(mkdtemp(dir));
	th_write_file(dir, "a.yaml", POLICY("a", "8080"));
	struct mc_load_cache *cache = mc_load_cache_new();
	free(load_both(dir, cache, 0));
	th_write_file(dir, "a.yaml", POLICY("a", "8081"));
	char *t = load_both(dir, cache, 0);
	check_stats(cache, 1, 0, 1);
	free(t);
	mc_load_cache_free(cache);
	th_remove_tree(dir);
}

static void check_unread(struct mc_load_cache *cache, size_t unread)
{
	CHECK_INT(mc_load_cache_stats(cache)->unread, unread);
}

/* Settled files (here: at once) are taken by their inode without being read; the snapshot
 * and digest are still a full load's, and a changed inode (a rename over it, another size)
 * or a link is read again. */
TEST(config_incremental_load_skips_reading_settled_unchanged_files)
{
	char dir[] = "/tmp/moat-incr-test-XXXXXX";
	REQUIRE(mkdtemp(dir));
	th_write_file(dir, "a.yaml", POLICY("a", "8080"));
	th_write_file(dir, "b.yaml", POLICY("b", "8080"));
	th_write_file(dir, "c.yaml", POLICY("c", "8080"));
	struct mc_load_cache *cache = mc_load_cache_new();
	mc_load_cache_set_settle(cache, 0);
	free(load_both(dir, cache, 0));
	check_stats(cache, 3, 0, 3);
	free(load_both(dir, cache, 0));
	check_stats(cache, 0, 3, 3);
	check_unread(cache, 3);

	th_write_file(dir, "b.yaml", POLICY("b", "9090") "# longer\n"); /* another size */
	free(load_both(dir, cache, 0));
	check_stats(cache, 1, 2, 3);
	check_unread(cache, 2);

	char *tmp = xasprintf("%s/tmp", dir), *c = xasprintf("%s/c.yaml", dir);
	th_write_file(dir, "tmp", POLICY("c", "7070")); /* same size, renamed over: new inode */
	REQUIRE(rename(tmp, c) == 0);
	free(load_both(dir, cache, 0));
	check_stats(cache, 1, 2, 3);
	check_unread(cache, 2);

	char *target = xasprintf("%s/a.yaml", dir), *link = xasprintf("%s/d.yaml", dir);
	th_write_file(dir, "x.txt", POLICY("d", "8080"));
	char *x = xasprintf("%s/x.txt", dir);
	REQUIRE(symlink(x, link) == 0); /* a link inside the directory: always read */
	free(load_both(dir, cache, 0));
	free(load_both(dir, cache, 0));
	check_stats(cache, 0, 4, 4);
	check_unread(cache, 3);
	free(x);
	free(target);
	free(link);
	free(tmp);
	free(c);
	mc_load_cache_free(cache);
	th_remove_tree(dir);
}
