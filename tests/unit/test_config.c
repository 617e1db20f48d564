/* Config loading: kinds, fields, defaults, lines, documents, directories, digests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "policy/authz.h"
#include "test.h"

struct mesh_config *th_load(const char *yaml);
void th_dump(const struct mc_findings *f);

TEST(config_defaults)
{
	struct mesh_config *c = th_load(
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: w\n"
		"spec:\n  address: 10.1.0.1\n");
	REQUIRE(c);
	REQUIRE(c->n_workloads == 1);
	const struct mc_workload *w = &c->workloads[0];
	CHECK_STR(w->meta.ns, "default");
	CHECK_STR(w->service_account, "default");
	CHECK_STR(w->spiffe_id, "spiffe://cluster.local/ns/default/sa/default");
	CHECK(!w->ambient);
	CHECK_INT(w->weight, 1);
	CHECK_STR(c->mesh.trust_domain, "cluster.local");
	CHECK_STR(c->mesh.root_namespace, "istio-system");
	CHECK_INT(c->mesh.outbound, MC_OUTBOUND_ALLOW_ANY);
	CHECK(c->mesh.file == NULL);
	CHECK_INT(c->refs, 1);
	CHECK_INT(strlen(c->digest), 64);
	mesh_config_unref(c);
}

TEST(config_mesh_config_and_spiffe_ids)
{
	struct mesh_config *c = th_load(
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
		"metadata: {name: w, namespace: shop}\n"
		"spec: {address: 'fd00::7', serviceAccount: cart}\n"
		"---\n"
		"apiVersion: moat.dev/v1\nkind: MeshConfig\nmetadata: {name: mesh}\n"
		"spec:\n  trustDomain: example.org\n  rootNamespace: mesh-root\n"
		"  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n");
	REQUIRE(c);
	CHECK_STR(c->mesh.trust_domain, "example.org");
	CHECK_STR(c->mesh.root_namespace, "mesh-root");
	CHECK_INT(c->mesh.outbound, MC_OUTBOUND_REGISTRY_ONLY);
	CHECK_STR(c->mesh.file, "test.yaml");
	CHECK_INT(c->mesh.line, 6);
	/* the trust domain is applied even though MeshConfig comes after the workload */
	CHECK_STR(c->workloads[0].spiffe_id, "spiffe://example.org/ns/shop/sa/cart");
	char *id = mc_spiffe_id(c, "a", "b");
	CHECK_STR(id, "spiffe://example.org/ns/a/sa/b");
	free(id);
	mesh_config_unref(c);
}

TEST(config_documents_empty_ones_skipped_lines_and_order)
{
	struct mesh_config *c = th_load(
		"# a comment\n"
		"---\n"
		"---\n"
		"# only a comment\n"
		"---\n"
		"apiVersion: v1\n"                 /* line 6 */
		"kind: Namespace\n"
		"metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n"
		"---\n"
		"\n"
		"kind: AuthorizationPolicy\n"      /* line 11 */
		"apiVersion: security.istio.io/v1beta1\n"
		"metadata: {name: p, namespace: shop}\n"
		"spec:\n"
		"  rules:\n"
		"  - from:\n"                      /* line 16 */
		"    - source:\n"
		"        namespaces: [a]\n"        /* line 18 */
		"    to:\n"
		"    - operation:\n"
		"        ports: ['80']\n"          /* line 21 */
		"---\n");
	REQUIRE(c);
	REQUIRE(c->n_namespaces == 1 && c->n_policies == 1);
	CHECK_STR(c->namespaces[0].meta.file, "test.yaml");
	CHECK_INT(c->namespaces[0].meta.line, 6);
	const struct mc_authz *p = &c->policies[0];
	CHECK_INT(p->meta.line, 11);
	CHECK(c->namespaces[0].meta.seq < p->meta.seq);
	CHECK_STR(p->id_name, "shop/p");
	CHECK_INT(p->action, MC_ACTION_ALLOW);
	REQUIRE(p->n_rules == 1);
	CHECK_INT(p->rules[0].line, 16);
	REQUIRE(p->rules[0].n_from == 1 && p->rules[0].n_to == 1);
	CHECK_INT(p->rules[0].from[0].line, 18); /* the source's fields */
	CHECK_INT(p->rules[0].to[0].line, 21);
	mesh_config_unref(c);
}

TEST(config_ambient_flag_from_namespace_or_labels)
{
	struct mesh_config *c = th_load(
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: amb, labels: {istio.io/dataplane-mode: ambient}}\n"
		"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
		"metadata: {name: a, namespace: amb}\nspec: {address: 10.0.0.1}\n"
		"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
		"metadata: {name: b, namespace: amb}\nspec: {address: 10.0.0.2, labels: {istio.io/dataplane-mode: none}}\n"
		"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
		"metadata: {name: c, namespace: plain}\nspec: {address: 10.0.0.3, labels: {istio.io/dataplane-mode: ambient}}\n"
		"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
		"metadata: {name: d, namespace: plain, labels: {istio.io/dataplane-mode: ambient}}\nspec: {address: 10.0.0.4}\n"
		"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
		"metadata: {name: e, namespace: plain}\nspec: {address: 10.0.0.5}\n");
	REQUIRE(c);
	REQUIRE(c->n_workloads == 5);
	CHECK(c->workloads[0].ambient);
	CHECK(!c->workloads[1].ambient); /* the workload's own label wins */
	CHECK(c->workloads[2].ambient);
	CHECK(c->workloads[3].ambient);
	CHECK(!c->workloads[4].ambient);
	CHECK_STR(c->namespaces[0].meta.ns, "");
	mesh_config_unref(c);
}

TEST(config_workload_entry_fields_and_lookups)
{
	struct mesh_config *c = th_load(
		"apiVersion: networking.istio.io/v1alpha3\nkind: WorkloadEntry\n"
		"metadata: {name: w, namespace: ns, labels: {tier: back}}\n"
		"spec:\n  address: 10.0.0.9\n  serviceAccount: svc.acct\n  network: n1\n  weight: 7\n"
		"  locality: r/z\n  labels: {app: w}\n  ports: {http: 8080, grpc: 9090}\n");
	REQUIRE(c);
	const struct mc_workload *w = &c->workloads[0];
	CHECK_STR(w->service_account, "svc.acct");
	CHECK_STR(w->network, "n1");
	CHECK_INT(w->weight, 7);
	REQUIRE(w->n_ports == 2);
	CHECK_STR(w->ports[1].name, "grpc");
	CHECK_INT(w->ports[1].number, 9090);
	struct moat_addr a;
	addr_parse("10.0.0.9", &a);
	CHECK(mc_workload_by_addr(c, &a) == w);
	CHECK(mc_workload_by_name(c, "ns", "w") == w);
	CHECK(mc_workload_by_name(c, "other", "w") == NULL);
	struct mc_labels sel = {0};
	struct mc_label items[2] = {{"app", "w"}, {"tier", "back"}};
	sel.items = items;
	sel.n = 2;
	CHECK(mc_workload_selected(w, &sel)); /* spec.labels then metadata.labels */
	items[1].value = "front";
	CHECK(!mc_workload_selected(w, &sel));
	CHECK(!mc_labels_match(&sel, &w->labels));
	sel.n = 1;
	CHECK(mc_labels_match(&sel, &w->labels));
	CHECK_STR(mc_label_get(&w->meta.labels, "tier"), "back");
	mesh_config_unref(c);
}

TEST(config_service_entry_fields_and_lookups)
{
	struct mesh_config *c = th_load(
		"apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\n"
		"metadata: {name: ext, namespace: ns}\n"
		"spec:\n  hosts: [api.example.com, '*.example.net']\n"
		"  addresses: [192.0.2.0/28, '2001:db8::1']\n"
		"  ports:\n  - {number: 443, name: https, protocol: TLS, targetPort: 8443}\n"
		"  location: MESH_INTERNAL\n  resolution: STATIC\n"
		"  endpoints:\n  - {address: 198.51.100.7, labels: {v: '1'}, ports: {https: 8443}}\n"
		"  exportTo: ['.']\n"
		"---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
		"metadata: {name: dns, namespace: ns}\n"
		"spec: {hosts: [a.example.com], resolution: DNS_ROUND_ROBIN, endpoints: [{address: b.example.com}]}\n");
	REQUIRE(c);
	REQUIRE(c->n_services == 2);
	const struct mc_service_entry *se = &c->services[0];
	CHECK_INT(se->hosts.n, 2);
	CHECK_INT(se->n_addresses, 2);
	CHECK_INT(se->location, MC_MESH_INTERNAL);
	CHECK_INT(se->resolution, MC_RES_STATIC);
	REQUIRE(se->n_ports == 1);
	CHECK_INT(se->ports[0].target_port, 8443);
	CHECK_STR(se->ports[0].protocol, "TLS");
	CHECK(mc_service_has_port(se, 443));
	CHECK(!mc_service_has_port(se, 80));
	REQUIRE(se->n_endpoints == 1);
	CHECK(se->endpoints[0].is_ip);
	struct moat_addr a;
	addr_parse("192.0.2.15", &a);
	CHECK(mc_service_by_addr(c, &a) == se);
	addr_parse("192.0.2.16", &a);
	CHECK(mc_service_by_addr(c, &a) == NULL);
	addr_parse("198.51.100.7", &a);
	CHECK(mc_service_by_addr(c, &a) == se);
	addr_parse("2001:db8::1", &a);
	CHECK(mc_service_by_addr(c, &a) == se);
	CHECK(mc_service_by_name(c, "ns", "dns") == &c->services[1]);
	CHECK_INT(c->services[1].resolution, MC_RES_DNS);
	CHECK(!c->services[1].endpoints[0].is_ip);
	CHECK_INT(c->services[1].location, MC_MESH_EXTERNAL);
	mesh_config_unref(c);
}

TEST(config_authorization_policy_fields)
{
	struct mesh_config *c = th_load(
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		"metadata: {name: p, namespace: ns, creationTimestamp: '2024-05-01T10:00:00.250Z'}\n"
		"spec:\n"
		"  action: DENY\n"
		"  selector: {matchLabels: {app: x}}\n"
		"  rules:\n"
		"  - from:\n"
		"    - source:\n"
		"        principals: ['spiffe://cluster.local/ns/a/sa/b', c]\n"
		"        notNamespaces: [z]\n"
		"        ipBlocks: [10.0.0.0/8, '::1']\n"
		"    - source: {serviceAccounts: [s1, other/s2]}\n"
		"    to:\n"
		"    - operation: {ports: ['80', http], notPorts: ['81'], methods: [GET]}\n"
		"    when:\n"
		"    - {key: destination.port, notValues: ['22']}\n"
		"    - {key: 'request.auth.claims[iss]', values: [x]}\n");
	REQUIRE(c);
	const struct mc_authz *p = &c->policies[0];
	CHECK_INT(p->action, MC_ACTION_DENY);
	CHECK(p->has_selector);
	CHECK_STR(mc_label_get(&p->selector, "app"), "x");
	CHECK_INT(p->meta.created_ms, 1714557600250LL);
	const struct mc_rule *r = &p->rules[0];
	CHECK(r->has_from && r->has_to && r->has_when);
	CHECK(r->had_l7 && !r->dropped); /* DENY keeps the rule */
	REQUIRE(r->n_l7 == 2);
	CHECK_STR(r->l7[0].name, "methods");
	CHECK_STR(r->l7[0].field, "spec.rules[0].to[0].operation.methods");
	CHECK_STR(r->l7[1].name, "when request.auth.claims[iss]");
	const struct mc_source *s = &r->from[0];
	CHECK(s->has_principals && s->has_not_namespaces && !s->has_namespaces);
	CHECK_STR(s->principals.items[0], "cluster.local/ns/a/sa/b");
	CHECK_STR(s->spiffe_written.items[0], "spiffe://cluster.local/ns/a/sa/b");
	REQUIRE(r->n_from == 2);
	CHECK_STR(r->from[1].service_accounts.items[0], "ns/s1");
	CHECK_STR(r->from[1].service_accounts.items[1], "other/s2");
	CHECK_INT(s->ip_blocks.n, 2);
	const struct mc_operation *o = &r->to[0];
	CHECK_INT(o->n_ports, 1);
	CHECK_INT(o->ports[0], 80);
	CHECK(o->named_in_ports && !o->named_in_not_ports);
	CHECK_STR(o->named_ports.items[0], "http");
	CHECK_INT(o->not_ports[0], 81);
	REQUIRE(r->n_when == 1);
	CHECK_INT(r->when[0].key, MC_WHEN_DESTINATION_PORT);
	CHECK(!r->when[0].has_values && r->when[0].has_not_values);
	mesh_config_unref(c);
}

TEST(config_target_refs_default_namespace_and_group)
{
	struct mesh_config *c = th_load(
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		"metadata: {name: p, namespace: ns}\n"
		"spec:\n  targetRefs:\n  - {kind: ServiceEntry, name: a}\n"
		"  - {group: networking.istio.io, kind: ServiceEntry, name: b, namespace: other}\n"
		"  rules: [{}]\n");
	REQUIRE(c);
	const struct mc_authz *p = &c->policies[0];
	REQUIRE(p->n_target_refs == 2);
	CHECK_STR(p->target_refs[0].ns, "ns");
	CHECK_STR(p->target_refs[0].group, "");
	CHECK_STR(p->target_refs[1].ns, "other");
	CHECK(!p->has_selector);
	mesh_config_unref(c);
}

TEST(config_peer_authentication_fields)
{
	struct mesh_config *c = th_load(
		"apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\n"
		"metadata: {name: p, namespace: ns}\n"
		"spec:\n  selector: {matchLabels: {app: x}}\n  mtls: {mode: STRICT}\n"
		"  portLevelMtls:\n    8080: {mode: PERMISSIVE}\n    '9090': {mode: DISABLE}\n"
		"---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
		"metadata: {name: q, namespace: ns}\nspec: {selector: {}}\n");
	REQUIRE(c);
	const struct mc_peer_auth *pa = &c->peer_auths[0];
	CHECK(pa->has_selector);
	CHECK_INT(pa->mode, MC_MTLS_STRICT);
	REQUIRE(pa->n_port_level == 2);
	CHECK_INT(pa->port_level[0].port, 8080);
	CHECK_INT(pa->port_level[0].mode, MC_MTLS_PERMISSIVE);
	CHECK_INT(pa->port_level[1].mode, MC_MTLS_DISABLE);
	CHECK_STR(pa->id_name, "ns/p");
	/* an empty selector is namespace-wide, mode absent is UNSET */
	CHECK(!c->peer_auths[1].has_selector);
	CHECK_INT(c->peer_auths[1].mode, MC_MTLS_UNSET);
	mesh_config_unref(c);
}

TEST(config_kubectl_bookkeeping_fields_are_accepted)
{
	struct mesh_config *c = th_load(
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		"metadata:\n  name: p\n  namespace: ns\n  uid: 1234\n  resourceVersion: '99'\n"
		"  generation: 2\n  annotations: {kubectl.kubernetes.io/last-applied-configuration: x}\n"
		"spec: {}\nstatus: {conditions: [{type: Accepted}]}\n");
	REQUIRE(c);
	CHECK_INT(c->n_policies, 1);
	mesh_config_unref(c);
}

TEST(config_snapshot_keeps_warnings_and_reports_them)
{
	const char *names[] = {"w.yaml"};
	const char *texts[] = {"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
			       "metadata: {name: p, namespace: ns}\n"
			       "spec: {action: AUDIT, rules: [{}]}\n"};
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	CHECK_INT(mesh_config_load_texts(names, texts, 1, &c, &f), 0);
	REQUIRE(c);
	authz_lint_loaded(c, &f); /* the AUDIT warning is lint's, run after the load */
	CHECK_INT(mc_findings_count(&f, MC_WARNING), 1);
	CHECK_INT(mc_findings_count(&c->findings, MC_WARNING), 1);
	CHECK_INT(mc_findings_count(&c->findings, MC_ERROR), 0);
	mc_findings_free(&f);
	CHECK(mesh_config_ref(c) == c);
	CHECK_INT(c->refs, 2);
	mesh_config_unref(c);
	CHECK_INT(c->refs, 1);
	mesh_config_unref(c);
}

TEST(config_digest_tells_inputs_apart)
{
	const char *names[] = {"a.yaml"};
	const char *t1[] = {"apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"};
	const char *t2[] = {"apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n"};
	const char *other_name[] = {"b.yaml"};
	struct mesh_config *a = NULL, *b = NULL, *a2 = NULL, *n2 = NULL;
	mesh_config_load_texts(names, t1, 1, &a, NULL);
	mesh_config_load_texts(names, t2, 1, &b, NULL);
	mesh_config_load_texts(names, t1, 1, &a2, NULL);
	mesh_config_load_texts(other_name, t1, 1, &n2, NULL);
	REQUIRE(a && b && a2 && n2);
	CHECK_STR(a->digest, a2->digest);
	CHECK(strcmp(a->digest, b->digest) != 0);
	CHECK(strcmp(a->digest, n2->digest) != 0);
	for (size_t i = 0; i < 64; i++)
		CHECK(strchr("0123456789abcdef", a->digest[i]) != NULL);
	mesh_config_unref(a);
	mesh_config_unref(b);
	mesh_config_unref(a2);
	mesh_config_unref(n2);
}

void th_write_file(const char *dir, const char *name, const char *text);
void th_remove_tree(const char *dir);

TEST(config_load_dir_reads_yaml_files_in_name_order)
{
	char dir[] = "/tmp/moat-config-test-XXXXXX";
	REQUIRE(mkdtemp(dir));
	th_write_file(dir, "b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: second}\n");
	th_write_file(dir, "a.yml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: first}\n");
	th_write_file(dir, "c.txt", "this is not read\n");
	th_write_file(dir, ".hidden.yaml", "not: read\n");
	char *sub = xasprintf("%s/sub.yaml", dir);
	mkdir(sub, 0700);
	free(sub);
	struct mesh_config *c = NULL;
	struct mc_findings f = {0};
	int rc = mesh_config_load_dir(dir, &c, &f);
	th_dump(&f);
	CHECK_INT(rc, 0);
	if (c) {
		CHECK_INT(c->n_namespaces, 2);
		CHECK_STR(c->namespaces[0].meta.name, "first");
		char *want = xasprintf("%s/a.yml", dir);
		CHECK_STR(c->namespaces[0].meta.file, want);
		free(want);
		CHECK_STR(c->dir, dir);
		char digest[65];
		memcpy(digest, c->digest, sizeof(digest));
		mesh_config_unref(c);
		/* a change in any file changes the digest */
		th_write_file(dir, "b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n");
		c = NULL;
		CHECK_INT(mesh_config_load_dir(dir, &c, NULL), 0);
		CHECK(c && strcmp(c->digest, digest) != 0);
		mesh_config_unref(c);
	}
	mc_findings_free(&f);
	th_remove_tree(dir);
}

TEST(config_load_dir_missing_directory)
{
	struct mesh_config *c = (struct mesh_config *)1;
	struct mc_findings f = {0};
	CHECK_INT(mesh_config_load_dir("/nonexistent/moat-config", &c, &f), -1);
	CHECK(c == NULL);
	REQUIRE(f.n == 1);
	CHECK_STR(f.items[0].file, "/nonexistent/moat-config");
	CHECK_CONTAINS(f.items[0].message, "cannot open the configuration directory");
	mc_findings_free(&f);
}

TEST(config_finding_str_format)
{
	struct mc_findings f = {0};
	char buf[512];
	mc_finding_add(&f, MC_ERROR, "a.yaml", 3, "AuthorizationPolicy", "ns/p", 2,
		       "spec.rules[1].from", "bad %s", "thing");
	mc_finding_add(&f, MC_WARNING, "b.yaml", 0, "WorkloadEntry", "ns/w", 0, NULL, "x");
	mc_finding_add(&f, MC_NOTE, NULL, 0, NULL, NULL, 0, NULL, "just a note");
	CHECK_STR(mc_finding_str(&f.items[0], buf, sizeof(buf)),
		  "error: a.yaml:3: policy ns/p rule 2: spec.rules[1].from: bad thing");
	CHECK_STR(mc_finding_str(&f.items[1], buf, sizeof(buf)),
		  "warning: b.yaml: WorkloadEntry ns/w: x");
	CHECK_STR(mc_finding_str(&f.items[2], buf, sizeof(buf)), "note: just a note");
	CHECK_INT(mc_findings_count(&f, MC_ERROR), 1);
	CHECK_INT(mc_findings_count(&f, MC_NOTE), 1);
	mc_findings_free(&f);
}
