/* Config bounds: what a hostile or broken file may cost the loader (alias bombs, deep
 * nesting, oversize files), which files are read at all (no links out of the directory),
 * and that findings never carry file content into logs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "test.h"

bool th_load_fails(const char *yaml, struct mc_findings *f);
const struct mc_finding *th_find(const struct mc_findings *f, enum mc_severity sev,
				 const char *field, const char *msg);
void th_dump(const struct mc_findings *f);
void th_write_file(const char *dir, const char *name, const char *text);
void th_remove_tree(const char *dir);

#define AP_HDR "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n" \
	       "metadata: {name: p, namespace: ns}\n"

static char *tmpdir(void)
{
	char *dir = xstrdup("/tmp/moat-limits-test-XXXXXX");
	return mkdtemp(dir) ? dir : NULL;
}

static const char *const namespace_doc = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";

/* 100 rules x 100 sources x 100 principals through aliases: ~60 KB of text that a loader
 * without bounds expands into a million principals. */
TEST(config_limit_alias_bomb_is_refused_at_the_alias_that_crosses_the_bound)
{
	struct sbuf b;
	sbuf_init(&b);
	sbuf_puts(&b, AP_HDR "spec:\n  rules:\n  - &r\n    from:\n    - &s\n      source:\n"
		  "        principals: &p\n");
	for (int i = 0; i < 100; i++)
		sbuf_printf(&b, "        - td/ns/a/sa/s%d\n", i);
	for (int i = 1; i < 100; i++)
		sbuf_puts(&b, "    - *s\n");
	int first_rule_alias = 11 + 100 + 99; /* 1-based line of the first `- *r` */
	for (int i = 1; i < 100; i++)
		sbuf_puts(&b, "  - *r\n");
	struct mc_findings f = {0};
	CHECK(th_load_fails(b.s, &f));
	const struct mc_finding *e = th_find(&f, MC_ERROR, NULL, "MC_MAX_ALIAS_NODES");
	CHECK_MSG(e != NULL, "no alias-bound error");
	if (e) {
		/* each `*r` adds ~10k nodes: the bound (100k) breaks at about the 10th */
		CHECK(e->line > first_rule_alias && e->line < first_rule_alias + 15);
		CHECK_STR(e->file, "test.yaml");
	}
	if (test_failed_now())
		th_dump(&f);
	mc_findings_free(&f);
	sbuf_free(&b);
}

TEST(config_limit_alias_inside_its_own_anchor_is_refused)
{
	struct mc_findings f = {0};
	CHECK(th_load_fails(AP_HDR "spec:\n  rules: &x\n  - from: *x\n", &f));
	const struct mc_finding *e = th_find(&f, MC_ERROR, NULL, "a cycle");
	CHECK(e && e->line == 6);
	mc_findings_free(&f);
	CHECK(th_load_fails(AP_HDR "spec: {rules: [{from: *nowhere}]}\n", &f));
	CHECK(th_find(&f, MC_ERROR, NULL, "not defined before it") != NULL);
	mc_findings_free(&f);
}

TEST(config_limit_100k_deep_flow_sequence_is_refused_at_depth_64)
{
	struct sbuf b;
	sbuf_init(&b);
	sbuf_puts(&b, "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nspec: ");
	for (int i = 0; i < 100000; i++)
		sbuf_puts(&b, "[");
	for (int i = 0; i < 100000; i++)
		sbuf_puts(&b, "]");
	sbuf_puts(&b, "\n");
	struct mc_findings f = {0};
	CHECK(th_load_fails(b.s, &f));
	const struct mc_finding *e = th_find(&f, MC_ERROR, NULL, "nesting deeper than 64 levels");
	CHECK(e && e->line == 4);
	CHECK_INT(mc_findings_count(&f, MC_ERROR), 1);
	if (test_failed_now())
		th_dump(&f);
	mc_findings_free(&f);
	sbuf_free(&b);
}

TEST(config_limit_nesting_within_the_bound_still_loads)
{
	/* 60 levels inside an ignored-but-accepted place: metadata.managedFields */
	struct sbuf b;
	sbuf_init(&b);
	sbuf_puts(&b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  managedFields: ");
	for (int i = 0; i < 60; i++)
		sbuf_puts(&b, "[");
	for (int i = 0; i < 60; i++)
		sbuf_puts(&b, "]");
	sbuf_puts(&b, "\n");
	const char *names[] = {"ok.yaml"};
	const char *texts[] = {b.s};
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	CHECK_INT(mesh_config_load_texts(names, texts, 1, &c, &f), 0);
	if (!c)
		th_dump(&f);
	mesh_config_unref(c);
	mc_findings_free(&f);
	sbuf_free(&b);
}

TEST(config_limit_oversize_file_is_refused_with_its_name)
{
	char *dir = tmpdir();
	REQUIRE(dir);
	struct sbuf b;
	sbuf_init(&b);
	sbuf_puts(&b, namespace_doc);
	while (b.len <= MC_MAX_FILE_BYTES)
		sbuf_puts(&b, "# padding padding padding padding padding padding padding padding\n");
	th_write_file(dir, "big.yaml", b.s);
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	CHECK_INT(mesh_config_load_dir(dir, &c, &f), -1);
	CHECK(c == NULL);
	const struct mc_finding *e = th_find(&f, MC_ERROR, NULL, "larger than 1048576 bytes "
					     "(MC_MAX_FILE_BYTES): split it");
	char *want = xasprintf("%s/big.yaml", dir);
	CHECK(e && e->file && strcmp(e->file, want) == 0);
	free(want);
	mc_findings_free(&f);
	/* the in-memory entry point holds the same bound */
	CHECK_INT(mesh_config_load_buffer("mem.yaml", b.s, b.len, &c, &f), -1);
	CHECK(th_find(&f, MC_ERROR, NULL, "MC_MAX_FILE_BYTES") != NULL);
	mc_findings_free(&f);
	/* exactly at the bound is fine */
	CHECK_INT(mesh_config_load_buffer("mem.yaml", b.s, MC_MAX_FILE_BYTES - 100, &c, &f), 0);
	mesh_config_unref(c);
	mc_findings_free(&f);
	sbuf_free(&b);
	th_remove_tree(dir);
	free(dir);
}

TEST(config_limit_link_out_of_the_directory_is_refused)
{
	char *dir = tmpdir(), *outside = tmpdir();
	REQUIRE(dir && outside);
	th_write_file(outside, "secret.yaml", namespace_doc);
	char *target = xasprintf("%s/secret.yaml", outside);
	char *link = xasprintf("%s/stolen.yaml", dir);
	CHECK(symlink(target, link) == 0);
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	CHECK_INT(mesh_config_load_dir(dir, &c, &f), -1);
	const struct mc_finding *e = th_find(&f, MC_ERROR, NULL, "a link out of the configuration "
					     "directory: refused");
	CHECK(e && e->file && strcmp(e->file, link) == 0);
	mc_findings_free(&f);
	free(target);
	free(link);
	th_remove_tree(dir);
	th_remove_tree(outside);
	free(dir);
	free(outside);
}

/* A mounted ConfigMap: name -> ..data/name, ..data -> ..<timestamp>/ (all inside). */
TEST(config_limit_configmap_links_inside_the_directory_are_read)
{
	char *dir = tmpdir();
	REQUIRE(dir);
	char *ts = xasprintf("%s/..2026_11_29_22_00_00.1", dir);
	CHECK(mkdir(ts, 0700) == 0);
	th_write_file(ts, "ns.yaml", namespace_doc);
	char *data = xasprintf("%s/..data", dir), *name = xasprintf("%s/ns.yaml", dir);
	CHECK(symlink("..2026_11_29_22_00_00.1", data) == 0);
	CHECK(symlink("..data/ns.yaml", name) == 0);
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	CHECK_INT(mesh_config_load_dir(dir, &c, &f), 0);
	CHECK(c && c->n_namespaces == 1);
	if (!c)
		th_dump(&f);
	mesh_config_unref(c);
	mc_findings_free(&f);
	free(ts);
	free(data);
	free(name);
	th_remove_tree(dir);
	free(dir);
}

TEST(config_limit_fifo_is_refused_without_blocking)
{
	char *dir = tmpdir();
	REQUIRE(dir);
	char *fifo = xasprintf("%s/pipe.yaml", dir);
	CHECK(mkfifo(fifo, 0600) == 0);
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	CHECK_INT(mesh_config_load_dir(dir, &c, &f), -1);
	CHECK(th_find(&f, MC_ERROR, NULL, "not a regular file") != NULL);
	mc_findings_free(&f);
	free(fifo);
	th_remove_tree(dir);
	free(dir);
}

/* A private key or password hash that ends up in the directory (or a value that is one)
 * never reaches a finding, and a newline in a key cannot forge a log line. */
TEST(config_findings_never_echo_file_content)
{
	const char *yaml =
		"apiVersion: v1\nkind: \"-----BEGIN PRIVATE KEY-----MIIEvQIBADANBgkqhkiG9w0\"\n"
		"metadata: {name: a}\n"
		"---\n"
		"apiVersion: v1\nkind: Namespace\n"
		"metadata: {name: \"root:$6$saltsalt$hashhashhashhashhashhashhash\"}\n"
		"\"evil\\nerror: forged line\": 1\n"
		"---\n"
		"apiVersion: v1\nkind: Namspace\nmetadata: {name: b}\n";
	struct mc_findings f = {0};
	CHECK(th_load_fails(yaml, &f));
	char buf[2048];
	for (size_t i = 0; i < f.n; i++) {
		mc_finding_str(&f.items[i], buf, sizeof(buf));
		CHECK_MSG(!strstr(buf, "MIIEv") && !strstr(buf, "hashhash") && !strstr(buf, "$6$"),
			  "content echoed: %s", buf);
		CHECK_MSG(!strchr(buf, '\n'), "newline in: %s", buf);
	}
	/* short names are still shown: they are what the author needs to find the mistake */
	CHECK(th_find(&f, MC_ERROR, NULL, "unknown kind \"Namspace\" (did you mean") != NULL);
	CHECK(th_find(&f, MC_ERROR, NULL, "<") != NULL);
	CHECK_INT(mc_findings_count(&f, MC_ERROR) >= 3, 1);
	if (test_failed_now())
		th_dump(&f);
	mc_findings_free(&f);
}

TEST(config_limit_errors_kept_per_load_are_bounded)
{
	struct sbuf b;
	sbuf_init(&b);
	sbuf_puts(&b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n");
	for (int i = 0; i < 1000; i++)
		sbuf_printf(&b, "  bogus%d: x\n", i);
	struct mc_findings f = {0};
	CHECK(th_load_fails(b.s, &f));
	CHECK_INT(mc_findings_count(&f, MC_ERROR), MC_MAX_ERRORS + 1);
	const struct mc_finding *more = th_find(&f, MC_ERROR, NULL,
						"800 more errors not shown (MC_MAX_ERRORS = 200)");
	char buf[512];
	REQUIRE(more);
	/* at the first error not shown (bogus200 on line 205), like every finding */
	CHECK_STR(mc_finding_str(more, buf, sizeof(buf)),
		  "error: test.yaml:205: 800 more errors not shown (MC_MAX_ERRORS = 200), the first "
		  "here: fix the ones above first");
	mc_findings_free(&f);
	sbuf_free(&b);
}

TEST(config_limit_nodes_per_document_are_bounded)
{
	/* 250,000 items in one flow list: ~500 KB, under the file bound, over the node bound */
	struct sbuf b;
	sbuf_init(&b);
	sbuf_puts(&b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  managedFields: [");
	for (int i = 0; i < 250000; i++)
		sbuf_puts(&b, "x,");
	sbuf_puts(&b, "x]\n");
	struct mc_findings f = {0};
	CHECK(th_load_fails(b.s, &f));
	const struct mc_finding *e = th_find(&f, MC_ERROR, NULL, "more than 200000 YAML nodes in "
					     "one document, aliases expanded (MC_MAX_NODES)");
	CHECK(e && e->line == 5);
	if (test_failed_now())
		th_dump(&f);
	mc_findings_free(&f);
	sbuf_free(&b);
}
