/* Config validation: each error class is reported with the right file, line, object and
 * field, every error of a load is reported, and any error fails the whole load. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "test.h"

bool th_load_fails(const char *yaml, struct mc_findings *f);
const struct mc_finding *th_find(const struct mc_findings *f, enum mc_severity sev,
				 const char *field, const char *msg);
void th_dump(const struct mc_findings *f);

#define AP_HDR "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n" \
	       "metadata: {name: p, namespace: ns}\n"

/* Expect the load to fail with an error at `line` whose field contains `field` and message
 * contains `msg`; returns the finding string for further checks. */
static bool expect_error(const char *yaml, int line, const char *field, const char *msg)
{
	struct mc_findings f = {0};
	bool failed = th_load_fails(yaml, &f);
	const struct mc_finding *e = th_find(&f, MC_ERROR, field, msg);
	bool ok = failed && e && e->line == line && e->file && strcmp(e->file, "test.yaml") == 0;
	if (!ok) {
		fprintf(stderr, "    wanted error at line %d field %s msg \"%s\"; got:\n", line,
			field ? field : "-", msg);
		th_dump(&f);
	}
	mc_findings_free(&f);
	return ok;
}

TEST(config_error_malformed_yaml)
{
	CHECK(expect_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: [a, b}\n", 3, NULL,
			   "malformed YAML"));
	CHECK(expect_error("a: b\n  c: d\n", 2, NULL, "malformed YAML: mapping values are not "
			   "allowed in this context"));
}

TEST(config_error_not_a_mapping)
{
	CHECK(expect_error("---\n- a\n- b\n", 2, NULL, "not a mapping (got a list)"));
	CHECK(expect_error("just text\n", 1, NULL, "not a mapping (got a string)"));
}

TEST(config_error_api_version_and_kind)
{
	CHECK(expect_error("kind: Namespace\nmetadata: {name: a}\n", 1, "apiVersion",
			   "missing apiVersion: Namespace uses v1"));
	CHECK(expect_error("apiVersion: v1\nmetadata: {name: a}\n", 1, "kind", "missing kind"));
	CHECK(expect_error("apiVersion: v1\nkind: AuthorisationPolicy\nmetadata: {name: a}\n", 2,
			   "kind", "did you mean \"AuthorizationPolicy\"?"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: AuthorizationPolicy\n"
			   "metadata: {name: a}\n", 1, "apiVersion",
			   "not valid for AuthorizationPolicy: use security.istio.io/v1"));
	CHECK(expect_error("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n", 2,
			   "kind", "unknown kind \"Deployment\""));
}

TEST(config_error_metadata)
{
	CHECK(expect_error("apiVersion: v1\nkind: Namespace\n", 1, "metadata", "missing metadata"));
	CHECK(expect_error("apiVersion: v1\nkind: Namespace\nmetadata:\n  labels: {a: b}\n", 4,
			   "metadata.name", "missing metadata.name"));
	CHECK(expect_error(AP_HDR "spec: {}\n---\napiVersion: security.istio.io/v1\n"
			   "kind: AuthorizationPolicy\nmetadata: {name: q, namespace: Bad_NS}\n",
			   8, "metadata.namespace", "not a valid namespace name (DNS-1123 label"));
	CHECK(expect_error("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n"
			   "  creationTimestamp: yesterday\n", 5, "metadata.creationTimestamp",
			   "not an RFC 3339 time"));
}

TEST(config_error_wrong_types_with_field_paths)
{
	struct mc_findings f = {0};
	char buf[512];
	CHECK(th_load_fails(AP_HDR "spec:\n  rules:\n  - to:\n    - operation:\n"
			    "        ports: ['80', {a: b}]\n", &f));
	const struct mc_finding *e = th_find(&f, MC_ERROR, NULL, "expected a string");
	REQUIRE(e);
	CHECK_STR(mc_finding_str(e, buf, sizeof(buf)),
		  "error: test.yaml:8: policy ns/p rule 1: spec.rules[0].to[0].operation.ports[1]: "
		  "expected a string, got a mapping");
	mc_findings_free(&f);
	CHECK(expect_error(AP_HDR "spec:\n  rules: {from: x}\n", 5, "spec.rules",
			   "expected a list, got a mapping"));
	CHECK(expect_error(AP_HDR "spec:\n  selector: [a]\n", 5, "spec.selector",
			   "expected a mapping, got a list"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
			   "metadata: {name: w}\nspec: {address: 10.0.0.1, weight: heavy}\n", 4,
			   "spec.weight", "expected a number"));
}

TEST(config_error_unknown_fields_suggest_the_nearest)
{
	struct mc_findings f = {0};
	char buf[512];
	/* `principal:` instead of `principals:` would otherwise turn the source into match-all */
	CHECK(th_load_fails(AP_HDR "spec:\n  rules:\n  - from:\n    - source:\n"
			    "        principal: [cluster.local/ns/a/sa/b]\n", &f));
	const struct mc_finding *e = th_find(&f, MC_ERROR, NULL, "unknown field");
	REQUIRE(e);
	CHECK_STR(mc_finding_str(e, buf, sizeof(buf)),
		  "error: test.yaml:8: policy ns/p rule 1: spec.rules[0].from[0].source.principal: "
		  "unknown field \"principal\" (did you mean \"principals\"?): unknown fields are "
		  "errors, because a misspelt field would silently change what a rule matches");
	mc_findings_free(&f);
	CHECK(expect_error(AP_HDR "spec: {rule: []}\n", 4, "spec.rule", "did you mean \"rules\"?"));
	CHECK(expect_error(AP_HDR "spek: {}\n", 4, "spek", "did you mean \"spec\"?"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{to: [{operation: {port: ['80']}}]}]}\n", 4,
			   "operation.port", "did you mean \"ports\"?"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
			   "metadata: {name: w}\nspec: {address: 10.0.0.1, serviceaccount: x}\n", 4,
			   "spec.serviceaccount", "did you mean \"serviceAccount\"?"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
			   "metadata: {name: w}\nspec: {address: 10.0.0.1, zzz: x}\n", 4, "spec.zzz",
			   "unknown field \"zzz\": expected one of address, ports"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{}], rules: [{}]}\n", 4, "spec.rules",
			   "appears twice"));
}

TEST(config_error_addresses)
{
	CHECK(expect_error(AP_HDR "spec:\n  rules:\n  - from:\n    - source:\n"
			   "        ipBlocks: [10.0.0.0/8, 10.0.0.300]\n", 8,
			   "source.ipBlocks[1]", "\"10.0.0.300\" is not an IP address or CIDR"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{from: [{source: {notIpBlocks: ['fd00::/129']}}]}]}\n",
			   4, "notIpBlocks[0]", "not an IP address or CIDR"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
			   "metadata: {name: w}\nspec:\n  address: web.local\n", 5, "spec.address",
			   "not an IP address"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
			   "metadata: {name: w}\nspec: {ports: {http: 80}}\n", 4, "spec.address",
			   "needs an address"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
			   "metadata: {name: s}\nspec: {hosts: [a.b], addresses: [1.2.3]}\n", 4,
			   "spec.addresses[0]", "not an IP address or CIDR"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{when: [{key: destination.ip, values: [x]}]}]}\n",
			   4, "when[0].values[0]", "not an IP address"));
}

TEST(config_error_ports_out_of_range)
{
	CHECK(expect_error(AP_HDR "spec:\n  rules:\n  - to:\n    - operation:\n"
			   "        ports: ['0', '70000']\n", 8, "ports[0]",
			   "port 0 is out of range 1..65535"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{to: [{operation: {notPorts: ['70000']}}]}]}\n", 4,
			   "notPorts[0]", "port 70000 is out of range"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{to: [{operation: {ports: ['-1']}}]}]}\n", 4,
			   "ports[0]", "expected a port number"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{when: [{key: destination.port, values: [http]}]}]}\n",
			   4, "values[0]", "expected a port number"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
			   "metadata: {name: w}\nspec:\n  address: 10.0.0.1\n  ports:\n"
			   "    http: 65536\n", 7, "spec.ports.http", "out of range"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
			   "metadata: {name: s}\nspec:\n  hosts: [a.b]\n  ports:\n  - {number: 0}\n",
			   7, "spec.ports[0].number", "out of range"));
	CHECK(expect_error("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
			   "metadata: {name: p}\nspec:\n  selector: {matchLabels: {a: b}}\n"
			   "  portLevelMtls:\n    '99999': {mode: STRICT}\n", 7, "portLevelMtls",
			   "out of range"));
}

TEST(config_error_unknown_enum_values)
{
	CHECK(expect_error(AP_HDR "spec:\n  action: allow\n", 5, "spec.action",
			   "unknown value \"allow\" (did you mean \"ALLOW\"?): expected one of ALLOW, "
			   "DENY, AUDIT, CUSTOM"));
	CHECK(expect_error("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
			   "metadata: {name: p}\nspec: {mtls: {mode: STRIKT}}\n", 4, "spec.mtls.mode",
			   "did you mean \"STRICT\"?"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
			   "metadata: {name: s}\nspec: {hosts: [a.b], resolution: DYNAMIC}\n", 4,
			   "spec.resolution", "unknown value \"DYNAMIC\""));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
			   "metadata: {name: s}\nspec: {hosts: [a.b], location: OUTSIDE}\n", 4,
			   "spec.location", "expected one of MESH_EXTERNAL, MESH_INTERNAL"));
	CHECK(expect_error("apiVersion: moat.dev/v1\nkind: MeshConfig\nmetadata: {name: m}\n"
			   "spec: {outboundTrafficPolicy: {mode: REGISTRY}}\n", 4,
			   "outboundTrafficPolicy.mode", "did you mean \"REGISTRY_ONLY\"?"));
}

TEST(config_error_duplicates_report_both_places)
{
	struct mc_findings f = {0};
	const char *names[] = {"one.yaml", "two.yaml"};
	const char *texts[] = {AP_HDR "spec: {}\n", "# again\n" AP_HDR "spec: {rules: [{}]}\n"};
	struct mesh_config *c = NULL;
	CHECK_INT(mesh_config_load_texts(names, texts, 2, &c, &f), -1);
	CHECK(c == NULL);
	const struct mc_finding *e = th_find(&f, MC_ERROR, NULL, "duplicate AuthorizationPolicy");
	REQUIRE(e);
	char buf[512];
	CHECK_STR(mc_finding_str(e, buf, sizeof(buf)),
		  "error: two.yaml:2: policy ns/p: duplicate AuthorizationPolicy ns/p: also defined "
		  "at one.yaml:1; rename or delete one");
	mc_findings_free(&f);
	/* the same name in another kind or namespace is fine */
	const char *ok[] = {AP_HDR "spec: {}\n",
			    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
			    "metadata: {name: p, namespace: ns}\n---\n"
			    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
			    "metadata: {name: p, namespace: ns2}\n"};
	CHECK_INT(mesh_config_load_texts(names, ok, 2, &c, NULL), 0);
	mesh_config_unref(c);
}

TEST(config_error_workload_addresses_must_be_unique)
{
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
			   "metadata: {name: a}\nspec: {address: 10.0.0.1}\n---\n"
			   "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
			   "metadata: {name: b, namespace: x}\nspec: {address: 10.0.0.1}\n", 6,
			   "spec.address", "address 10.0.0.1 is already used by WorkloadEntry "
			   "default/a (test.yaml:1)"));
}

TEST(config_error_more_than_one_mesh_config)
{
	CHECK(expect_error("apiVersion: moat.dev/v1\nkind: MeshConfig\nmetadata: {name: a}\n---\n"
			   "apiVersion: moat.dev/v1\nkind: MeshConfig\nmetadata: {name: b}\n", 5, NULL,
			   "more than one MeshConfig (the first is at test.yaml:1)"));
	CHECK(expect_error("apiVersion: moat.dev/v1\nkind: MeshConfig\nmetadata: {name: a}\n"
			   "spec: {trustDomain: Bad/TD}\n", 4, "spec.trustDomain",
			   "not a valid trust domain"));
}

TEST(config_error_spiffe_pieces_must_be_dns_names)
{
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
			   "metadata: {name: w}\nspec: {address: 10.0.0.1, serviceAccount: 'My SA'}\n",
			   4, "spec.serviceAccount", "not a valid service account name"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{from: [{source: {serviceAccounts: ['Ns/sa']}}]}]}\n",
			   4, "serviceAccounts[0]", "namespace \"Ns\" is not a valid namespace name"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{from: [{source: {serviceAccounts: ['a/b/c']}}]}]}\n",
			   4, "serviceAccounts[0]", "expected \"<service-account>\""));
	CHECK(expect_error(AP_HDR "spec: {rules: [{from: [{source: {serviceAccounts: ['*']}}]}]}\n",
			   4, "serviceAccounts[0]", "wildcards are not allowed"));
	CHECK(expect_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: Web.App}\n", 1,
			   "metadata.name", "not a valid namespace name"));
}

TEST(config_error_istio_validation_rules)
{
	CHECK(expect_error(AP_HDR "spec: {rules: [{from: []}]}\n", 4, "spec.rules[0].from",
			   "`from` must not be empty"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{from: [{source: {}}]}]}\n", 4,
			   "from[0].source", "empty source"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{from: [{}]}]}\n", 4, "from[0]",
			   "`from` entry without `source`"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{to: [{operation: {}}]}]}\n", 4,
			   "to[0].operation", "empty operation"));
	CHECK(expect_error(AP_HDR "spec: {action: DENY}\n", 4, "spec.rules",
			   "DENY policy without rules never matches"));
	CHECK(expect_error(AP_HDR "spec: {action: CUSTOM, rules: [{}]}\n", 4, "spec.provider.name",
			   "CUSTOM policy needs provider.name"));
	CHECK(expect_error(AP_HDR "spec: {provider: {name: x}, rules: [{}]}\n", 4, "spec.provider",
			   "only valid with action CUSTOM"));
	CHECK(expect_error(AP_HDR "spec: {selector: {matchLabels: {a: b}}, targetRef: {kind: "
			   "ServiceEntry, name: x}}\n", 4, "spec.selector",
			   "either selector or targetRef"));
	CHECK(expect_error(AP_HDR "spec: {targetRef: {kind: ServiceEntry}}\n", 4, "spec.targetRef",
			   "needs `kind` and `name`"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{from: [{source: {principals: [a], "
			   "serviceAccounts: [b]}}]}]}\n", 4, "source",
			   "serviceAccounts cannot be combined with principals"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{when: [{key: source.ipp, values: [a]}]}]}\n", 4,
			   "when[0].key", "did you mean \"source.ip\"?"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{when: [{key: destination.namespace, values: [a]}]}]}\n",
			   4, "when[0].key", "replaced by the policy's metadata.namespace"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{when: [{key: source.ip}]}]}\n", 4, "when[0]",
			   "needs `values` or `notValues`"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{when: [{values: [a]}]}]}\n", 4, "when[0]",
			   "condition without `key`"));
	CHECK(expect_error(AP_HDR "spec: {selector: {matchLabels: {app: 'web*'}}}\n", 4,
			   "matchLabels", "wildcard in selector"));
	CHECK(expect_error("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
			   "metadata: {name: p}\nspec: {portLevelMtls: {'80': {mode: STRICT}}}\n", 4,
			   "spec.portLevelMtls", "portLevelMtls needs a selector"));
	CHECK(expect_error("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
			   "metadata: {name: p, annotations: {istio.io/dry-run: maybe}}\nspec: {}\n", 1,
			   "dry-run", "is not a boolean"));
}

TEST(config_error_empty_lists_and_values)
{
	CHECK(expect_error(AP_HDR "spec: {rules: [{from: [{source: {principals: []}}]}]}\n", 4,
			   "source.principals", "empty list"));
	CHECK(expect_error(AP_HDR "spec: {rules: [{from: [{source: {namespaces: ['']}}]}]}\n", 4,
			   "namespaces[0]", "empty value"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
			   "metadata: {name: s}\nspec: {addresses: [1.2.3.4]}\n", 4, "spec.hosts",
			   "needs at least one host"));
	CHECK(expect_error("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
			   "metadata: {name: s}\nspec: {hosts: [a.b], resolution: STATIC, endpoints: "
			   "[{address: c.d}]}\n", 4, "spec.endpoints[0].address",
			   "which resolution STATIC requires"));
}

TEST(config_error_any_bad_file_fails_the_whole_load_and_all_errors_are_reported)
{
	const char *names[] = {"good.yaml", "bad.yaml"};
	const char *texts[] = {
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: fine}\n",
		AP_HDR "spec:\n  action: NOPE\n  rules:\n  - from:\n    - source: {ipBlocks: [x]}\n"
		"---\napiVersion: v1\nkind: Namespace\nmetadata: {name: also-fine, colour: red}\n"};
	struct mesh_config *c = (struct mesh_config *)1;
	struct mc_findings f = {0};
	CHECK_INT(mesh_config_load_texts(names, texts, 2, &c, &f), -1);
	CHECK(c == NULL);
	CHECK_INT(mc_findings_count(&f, MC_ERROR), 3);
	const struct mc_finding *e = th_find(&f, MC_ERROR, "spec.action", "NOPE");
	CHECK(e && e->line == 5 && strcmp(e->file, "bad.yaml") == 0);
	e = th_find(&f, MC_ERROR, "ipBlocks[0]", "not an IP");
	CHECK(e && e->line == 8 && e->rule == 1);
	e = th_find(&f, MC_ERROR, "metadata.colour", "unknown field");
	CHECK(e && e->line == 12 && e->kind && strcmp(e->kind, "Namespace") == 0);
	for (size_t i = 0; i < f.n; i++)
		CHECK(strcmp(f.items[i].file, "good.yaml") != 0);
	mc_findings_free(&f);
}
