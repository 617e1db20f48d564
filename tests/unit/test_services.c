/* Services: kind Service and selecting ServiceEntries parse with file:line:field errors, the
 * service table selects endpoints (namespace-scoped, WorkloadEntries and local pods),
 * resolves target ports (names per endpoint), carries weights, keeps ids stable, looks VIPs
 * up, and svc_pick chooses by weight among allowed endpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "state/services.h"
#include "test.h"

const struct mc_finding *th_find(const struct mc_findings *f, enum mc_severity sev,
				 const char *field, const char *msg);
void th_dump(const struct mc_findings *f);

#define SVC(name, ns)                                                                       \
	"---\napiVersion: v1\nkind: Service\nmetadata: {name: " name ", namespace: " ns "}\n"
#define WEL(name, ns, addr, labels)                                                         \
	"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"                    \
	"metadata: {name: " name ", namespace: " ns "}\n"                                   \
	"spec:\n  address: '" addr "'\n  labels: " labels "\n"

static struct mesh_config *load(const char *yaml, struct mc_findings *f)
{
	const char *names[] = {"svc.yaml"};
	const char *texts[] = {yaml};
	struct mesh_config *c = NULL;
	if (mesh_config_load_texts(names, texts, 1, &c, f) != 0)
		th_dump(f);
	return c;
}

/* The load must fail with an error whose string contains want. */
static bool refused_with(const char *yaml, const char *want)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load(yaml, &f);
	char buf[1024];
	bool found = false;
	for (size_t i = 0; i < f.n && !found; i++)
		found = f.items[i].severity == MC_ERROR &&
			strstr(mc_finding_str(&f.items[i], buf, sizeof(buf)), want);
	if (!found) {
		fprintf(stderr, "    wanted an error containing: %s\n    got:\n", want);
		th_dump(&f);
	}
	mesh_config_unref(c);
	mc_findings_free(&f);
	return !c && found;
}

static void done(struct svc_table *t, struct mesh_config *c, struct mc_findings *f)
{
	svc_table_unref(t);
	mesh_config_unref(c);
	mc_findings_free(f);
}

static const char *addr_s(const struct moat_addr *a, char *buf)
{
	return addr_str(a, buf, ADDR_STRLEN);
}

TEST(service_parses_vips_ports_target_ports_and_selector)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load(SVC("reviews", "bookinfo")
				     "spec:\n"
				     "  type: ClusterIP\n"
				     "  clusterIP: 10.96.0.10\n"
				     "  clusterIPs: [10.96.0.10, 'fd00:96::10']\n"
				     "  selector: {app: reviews}\n"
				     "  ports:\n"
				     "  - {name: http, port: 9080}\n"
				     "  - {name: grpc, port: 9090, targetPort: grpc-port}\n"
				     "  - {name: metrics, port: 9100, targetPort: 19100, protocol: TCP}\n",
				     &f);
	REQUIRE(c);
	REQUIRE(c->n_kservices == 1);
	const struct mc_kservice *k = &c->kservices[0];
	char b[ADDR_STRLEN];
	CHECK_INT(k->n_vips, 2);
	CHECK_STR(addr_s(&k->vips[0], b), "10.96.0.10");
	CHECK_STR(addr_s(&k->vips[1], b), "fd00:96::10");
	CHECK_INT(k->n_ports, 3);
	CHECK_INT(k->ports[0].target_port, 9080); /* default = port */
	CHECK_STR(k->ports[1].target_name, "grpc-port");
	CHECK_INT(k->ports[1].target_port, 0);
	CHECK_INT(k->ports[2].target_port, 19100);
	CHECK_STR(mc_label_get(&k->selector, "app"), "reviews");
	CHECK(mc_kservice_by_name(c, "bookinfo", "reviews") == k);
	mesh_config_unref(c);
	mc_findings_free(&f);
}

TEST(service_bad_fields_are_errors_at_file_line_field)
{
	static const char *const cases[][2] = {
		{SVC("s", "ns") "spec:\n  clusterIP: 10.96.0.300\n  ports: [{port: 80}]\n",
			   "svc.yaml:6: Service ns/s: spec.clusterIP: \"10.96.0.300\" is not a "
			   "cluster IP"},
		{SVC("s", "ns") "spec:\n  clusterIP: 10.96.0.1\n  ports:\n"
			   "  - {port: 80, tragetPort: 8080}\n",
			   "svc.yaml:8: Service ns/s: spec.ports[0].tragetPort: unknown field \"tragetPort\""},
		{SVC("s", "ns") "spec:\n  clusterIP: 10.96.0.1\n  ports:\n"
			   "  - {port: 80, targetPort: Not_A_Name}\n",
			   "spec.ports[0].targetPort: \"Not_A_Name\" is neither a port number nor a "
			   "port name"},
		{SVC("s", "ns") "spec:\n  clusterIP: 10.96.0.1\n  ports:\n"
			   "  - {port: 70000}\n", "spec.ports[0].port: port 70000 is out of range"},
		{SVC("s", "ns") "spec:\n  clusterIP: 10.96.0.1\n  ports:\n"
			   "  - {port: 80}\n  - {port: 81}\n",
			   "spec.ports[0]: a Service with several ports needs a name on each"},
		{SVC("s", "ns") "spec:\n  clusterIP: 10.96.0.1\n  ports:\n"
			   "  - {name: a, port: 80}\n  - {name: b, port: 80}\n",
			   "port 80/TCP appears twice"},
		{SVC("s", "ns") "spec:\n  clusterIP: 10.96.0.1\n"
			   "  clusterIPs: [10.96.0.2]\n  ports: [{port: 80}]\n",
			   "spec.clusterIPs[0]: \"10.96.0.2\" must equal clusterIP \"10.96.0.1\""},
		{SVC("s", "ns") "spec:\n  clusterIPs: [10.96.0.1, 10.96.0.2]\n"
			   "  ports: [{port: 80}]\n", "two cluster IPs of the same family"},
		{SVC("s", "ns") "spec:\n  clusterIP: 10.96.0.1\n",
			   "spec.ports: a Service needs at least one port"},
		{SVC("s", "ns") "spec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n"
			   "  type: Foo\n", "spec.type"},
		{SVC("s", "ns") "spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n"
		 SVC("s", "ns") "spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}\n",
		 "svc.yaml:7: Service ns/s: duplicate Service ns/s: also defined at svc.yaml:2"},
		{SVC("S_1", "ns") "spec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n",
			   "metadata.name: \"S_1\" is not a valid Service name"},
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		CHECK_MSG(refused_with(cases[i][0], cases[i][1]), "case %zu", i);
}

TEST(service_headless_udp_and_no_selector_are_warnings)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load(SVC("h", "ns") "spec: {clusterIP: None, selector: {app: h}}\n"
				     SVC("u", "ns") "spec:\n  clusterIP: 10.96.0.2\n"
				     "  selector: {app: u}\n  ports:\n"
				     "  - {name: dns, port: 53, protocol: UDP}\n"
				     "  - {name: dns-tcp, port: 53}\n"
				     SVC("n", "ns") "spec: {clusterIP: 10.96.0.3, ports: [{port: 80}]}\n",
				     &f);
	REQUIRE(c);
	CHECK(th_find(&f, MC_WARNING, "spec.clusterIP", "headless Service"));
	CHECK(th_find(&f, MC_WARNING, "spec.ports[0].protocol", "protocol UDP"));
	CHECK(th_find(&f, MC_WARNING, "spec.selector", "no selector"));
	struct svc_table *t = svc_table_build(c, NULL, 0, NULL, NULL);
	const struct svc *h = svc_by_name(t, "ns", "h");
	REQUIRE(h);
	CHECK_INT(h->n_vips, 0);
	const struct svc *u = svc_by_name(t, "ns", "u");
	REQUIRE(u);
	CHECK_INT(u->n_ports, 1); /* the UDP port is not served */
	CHECK_STR(u->ports[0].name, "dns-tcp");
	done(t, c, &f);
}

TEST(duplicate_vip_port_across_services_is_an_error_naming_both_files)
{
	const char *names[] = {"a.yaml", "b.yaml"};
	const char *texts[] = {
		SVC("one", "ns") "spec: {clusterIP: 10.96.0.1, selector: {app: x}, ports: [{port: 80}]}\n",
		SVC("two", "other") "spec: {clusterIP: 10.96.0.1, selector: {app: x},\n"
		"  ports: [{name: a, port: 81}, {name: b, port: 80}]}\n",
	};
	struct mc_findings f = {0};
	struct mesh_config *c = NULL;
	CHECK_INT(mesh_config_load_texts(names, texts, 2, &c, &f), -1);
	CHECK(!c);
	char buf[1024];
	const struct mc_finding *e = th_find(&f, MC_ERROR, "spec.clusterIP", "already");
	REQUIRE(e);
	CHECK_STR(mc_finding_str(e, buf, sizeof(buf)),
		  "error: b.yaml:6: Service other/two: spec.clusterIP: VIP 10.96.0.1:80 is already "
		  "a service port of Service ns/one (a.yaml:5): a VIP:port belongs to one service");
	mc_findings_free(&f);
	/* the same VIP on another port is another service port: fine */
	texts[1] = SVC("two", "other") "spec: {clusterIP: 10.96.0.1, selector: {app: x}, "
		   "ports: [{port: 81}]}\n";
	CHECK_INT(mesh_config_load_texts(names, texts, 2, &c, &f), 0);
	mesh_config_unref(c);
	mc_findings_free(&f);
}

TEST(service_vip_that_is_a_workload_address_is_an_error)
{
	CHECK(refused_with(WEL("w", "ns", "10.1.0.5", "{app: w}")
			   SVC("s", "ns") "spec: {clusterIP: 10.1.0.5, selector: {app: w}, "
			   "ports: [{port: 80}]}\n",
			   "VIP 10.1.0.5 is the address of WorkloadEntry ns/w (svc.yaml:2)"));
}

TEST(service_count_and_port_bounds_are_errors)
{
	size_t n = MC_MAX_SERVICE_PORTS + 1;
	char *yaml = xasprintf("%s", SVC("s", "ns") "spec:\n  clusterIP: 10.96.0.1\n  ports:\n");
	for (size_t i = 0; i < n; i++) {
		char *next = xasprintf("%s  - {name: p%zu, port: %zu}\n", yaml, i, 1000 + i);
		free(yaml);
		yaml = next;
	}
	CHECK(refused_with(yaml, "65 ports: a Service has at most 64 (MC_MAX_SERVICE_PORTS)"));
	free(yaml);
}

TEST(service_entry_workload_selector_is_accepted_mesh_internal_only)
{
	/* This was an error before ("workloadSelector is not supported by moat"). */
	struct mc_findings f = {0};
	struct mesh_config *c = load(
		"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
		"metadata: {name: ratings, namespace: ns}\n"
		"spec:\n  hosts: [ratings.internal]\n  addresses: [10.97.0.1]\n"
		"  location: MESH_INTERNAL\n  resolution: STATIC\n"
		"  ports: [{number: 9080, name: http, targetPort: 8080}]\n"
		"  workloadSelector: {labels: {app: ratings}}\n", &f);
	REQUIRE(c);
	CHECK(c->services[0].has_workload_selector);
	mesh_config_unref(c);
	mc_findings_free(&f);
	CHECK(refused_with("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
			   "metadata: {name: r, namespace: ns}\n"
			   "spec:\n  hosts: [r.internal]\n  addresses: [10.97.0.1]\n"
			   "  ports: [{number: 80, name: http}]\n"
			   "  workloadSelector: {labels: {app: r}}\n",
			   "svc.yaml:8: ServiceEntry ns/r: spec.workloadSelector: workloadSelector "
			   "needs location: MESH_INTERNAL"));
	CHECK(refused_with("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
			   "metadata: {name: r, namespace: ns}\n"
			   "spec:\n  hosts: [r.internal]\n  addresses: [10.97.0.0/24]\n"
			   "  location: MESH_INTERNAL\n  ports: [{number: 80, name: http}]\n"
			   "  workloadSelector: {labels: {app: r}}\n",
			   "a CIDR block cannot be the VIP"));
	CHECK(refused_with("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
			   "metadata: {name: r, namespace: ns}\n"
			   "spec:\n  hosts: [r.internal]\n  location: MESH_INTERNAL\n"
			   "  ports: [{number: 80, name: http}]\n"
			   "  workloadSelector: {labels: {app: r}, lables: {}}\n",
			   "unknown field \"lables\""));
}

/* Two WorkloadEntries in ns selected, one in another namespace not, one local pod. */
static const char *const canary =
	WEL("reviews-v1", "bookinfo", "10.1.0.1", "{app: reviews, version: v1}")
	"  weight: 90\n  ports: {http: 9081}\n"
	WEL("reviews-v2", "bookinfo", "10.2.0.1", "{app: reviews, version: v2}")
	"  weight: 10\n"
	WEL("reviews-other", "elsewhere", "10.3.0.1", "{app: reviews}")
	WEL("reviews-v3", "bookinfo", "10.2.0.2", "{app: reviews, version: v3}")
	"  weight: 0\n  ports: {http: 9083}\n"
	SVC("reviews", "bookinfo")
	"spec:\n  clusterIP: 10.96.0.20\n  selector: {app: reviews}\n  ports:\n"
	"  - {name: plain, port: 9080}\n"
	"  - {name: named, port: 80, targetPort: http}\n";

TEST(service_table_selects_by_namespace_workload_entries_and_local_pods)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load(canary, &f);
	REQUIRE(c);
	struct moat_addr pod_addr;
	addr_parse("10.9.0.7", &pod_addr);
	struct mc_labels pl = {0};
	struct mc_label lab[] = {{"app", "reviews"}};
	pl.items = lab;
	pl.n = 1;
	/* a pod whose app label is in its metadata labels only (its WorkloadEntry left) */
	struct mc_labels none = {0}, ml = {0};
	struct mc_label mlab[] = {{"app", "reviews"}, {"team", "x"}};
	ml.items = mlab;
	ml.n = 2;
	/* a pod whose spec labels say otherwise: spec wins over metadata, as for entries */
	struct mc_labels other = {0};
	struct mc_label olab[] = {{"app", "ratings"}};
	other.items = olab;
	other.n = 1;
	struct svc_local_pod pods[] = {
		{.ns = "bookinfo", .name = "reviews-pod", .labels = &pl, .addrs = &pod_addr, .n_addrs = 1},
		{.ns = "elsewhere", .name = "other-pod", .labels = &pl, .addrs = &pod_addr, .n_addrs = 1},
		{.ns = "bookinfo", .name = "reviews-meta", .labels = &none, .meta_labels = &ml,
		 .addrs = &pod_addr, .n_addrs = 1},
		{.ns = "bookinfo", .name = "ratings-pod", .labels = &other, .meta_labels = &ml,
		 .addrs = &pod_addr, .n_addrs = 1},
		/* a pod that has a WorkloadEntry is that entry, not a second endpoint */
		{.ns = "bookinfo", .name = "reviews-v1", .labels = &pl, .addrs = &pod_addr, .n_addrs = 1,
		 .entry = &c->workloads[0]},
	};
	struct svc_table *t = svc_table_build(c, pods, ARRAY_SIZE(pods), NULL, NULL);
	REQUIRE(svc_count(t) == 1);
	const struct svc *s = svc_by_name(t, "bookinfo", "reviews");
	REQUIRE(s);
	CHECK_STR(s->host, "reviews.bookinfo.svc.cluster.local");
	CHECK_INT(s->id, 1);
	REQUIRE(s->n_ports == 2);
	const struct svc_port *p = &s->ports[0];
	/* v1, v2, v3 and the two pods; not the other namespace's, not ratings-pod */
	REQUIRE(p->n_eps == 5);
	CHECK_STR(p->eps[0].name, "bookinfo/reviews-meta");
	CHECK_STR(p->eps[1].name, "bookinfo/reviews-pod");
	CHECK(p->eps[1].pod);
	CHECK_INT(p->eps[1].weight, 1);
	CHECK_STR(p->eps[2].name, "bookinfo/reviews-v1");
	CHECK(!p->eps[2].pod && p->eps[2].wl == &c->workloads[0]);
	CHECK_INT(p->eps[2].weight, 90);
	CHECK_INT(p->eps[2].target_port, 9080);
	CHECK_STR(p->eps[3].name, "bookinfo/reviews-v2");
	CHECK_INT(p->eps[3].weight, 10);
	CHECK_STR(p->eps[4].name, "bookinfo/reviews-v3");
	CHECK_INT(p->eps[4].weight, 0);
	done(t, c, &f);
}

TEST(named_target_port_resolves_per_endpoint_and_skips_those_without_it)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load(canary, &f);
	REQUIRE(c);
	struct svc_table *t = svc_table_build(c, NULL, 0, NULL, NULL);
	const struct svc_port *p = NULL;
	struct moat_addr vip;
	addr_parse("10.96.0.20", &vip);
	const struct svc *s = svc_lookup(t, &vip, 80, &p);
	REQUIRE(s && p);
	CHECK_STR(p->target_name, "http");
	REQUIRE(p->n_eps == 2); /* v2 declares no "http" port */
	CHECK_STR(p->eps[0].name, "bookinfo/reviews-v1");
	CHECK_INT(p->eps[0].target_port, 9081);
	CHECK_STR(p->eps[1].name, "bookinfo/reviews-v3");
	CHECK_INT(p->eps[1].target_port, 9083);
	CHECK(!svc_lookup(t, &vip, 81, NULL));
	/* rebuilt from the same snapshot (an enroll): the same endpoints, the same id */
	struct svc_table *again = svc_table_build(c, NULL, 0, t, NULL);
	const struct svc_port *q = NULL;
	const struct svc *s2 = svc_lookup(again, &vip, 80, &q);
	REQUIRE(s2 && q && q->n_eps == 2);
	CHECK_INT(s2->id, s->id);
	CHECK_STR(q->eps[1].name, "bookinfo/reviews-v3");
	CHECK_INT(q->eps[1].target_port, 9083);
	svc_table_unref(again);
	done(t, c, &f);
}

TEST(service_entry_target_port_is_the_endpoint_port_of_the_service_port_name)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load(
		WEL("r1", "ns", "10.1.0.1", "{app: r}") "  ports: {http: 7001}\n"
		WEL("r2", "ns", "10.1.0.2", "{app: r}")
		"---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
		"metadata: {name: r, namespace: ns}\n"
		"spec:\n  hosts: [r.internal, r2.internal]\n  addresses: [10.97.0.1, 'fd00:97::1']\n"
		"  location: MESH_INTERNAL\n  resolution: STATIC\n"
		"  ports: [{number: 80, name: http, targetPort: 8080}, {number: 81, name: x}]\n"
		"  workloadSelector: {labels: {app: r}}\n", &f);
	REQUIRE(c);
	struct svc_table *t = svc_table_build(c, NULL, 0, NULL, NULL);
	const struct svc *s = svc_by_name(t, "ns", "r");
	REQUIRE(s);
	CHECK_STR(s->host, "r.internal");
	CHECK_INT(s->n_vips, 2);
	CHECK_INT(svc_vip_count(t), 4);
	REQUIRE(s->ports[0].n_eps == 2);
	CHECK_INT(s->ports[0].eps[0].target_port, 7001); /* r1: ports[http] */
	CHECK_INT(s->ports[0].eps[1].target_port, 8080); /* r2: targetPort */
	CHECK_INT(s->ports[1].eps[1].target_port, 81);   /* neither: the port */
	struct moat_addr v6;
	addr_parse("fd00:97::1", &v6);
	const struct svc_port *p;
	CHECK(svc_lookup(t, &v6, 81, &p) == s && p == &s->ports[1]);
	done(t, c, &f);
}

TEST(svc_lookup_finds_every_vip_port_among_many)
{
	/* 200 Services: every (VIP, port) found by binary search, a near miss not. */
	char *yaml = xstrdup("");
	for (int i = 0; i < 200; i++) {
		char *next = xasprintf("%s" SVC("s%d", "ns") "spec: {clusterIP: 10.96.%d.%d, "
				       "selector: {app: a}, ports: [{name: a, port: %d}, "
				       "{name: b, port: 443}]}\n",
				       yaml, i, i / 100, i % 100 + 1, 1000 + i);
		free(yaml);
		yaml = next;
	}
	struct mc_findings f = {0};
	struct mesh_config *c = load(yaml, &f);
	free(yaml);
	REQUIRE(c);
	struct svc_table *t = svc_table_build(c, NULL, 0, NULL, NULL);
	CHECK_INT(svc_vip_count(t), 400);
	int found = 0;
	for (int i = 0; i < 200; i++) {
		char ip[32], name[16];
		struct moat_addr a;
		snprintf(ip, sizeof(ip), "10.96.%d.%d", i / 100, i % 100 + 1);
		snprintf(name, sizeof(name), "s%d", i);
		addr_parse(ip, &a);
		const struct svc *s = svc_lookup(t, &a, (uint16_t)(1000 + i), NULL);
		found += s && !strcmp(s->name, name) && svc_lookup(t, &a, 443, NULL) == s &&
			 !svc_lookup(t, &a, (uint16_t)(1001 + i), NULL) && svc_by_id(t, s->id) == s;
	}
	CHECK_INT(found, 200);
	for (size_t i = 1; i < svc_vip_count(t); i++)
		CHECK(memcmp(&svc_vip_at(t, i - 1)->vip, &svc_vip_at(t, i)->vip, 16) <= 0);
	done(t, c, &f);
}

TEST(service_ids_stay_stable_across_rebuilds_and_reuse_freed_ones)
{
	struct mc_findings f = {0};
	struct mesh_config *c1 = load(SVC("a", "ns") "spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n"
				      SVC("b", "ns") "spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}\n"
				      SVC("c", "ns") "spec: {clusterIP: 10.96.0.3, ports: [{port: 80}]}\n",
				      &f);
	struct mesh_config *c2 = load(SVC("d", "ns") "spec: {clusterIP: 10.96.0.4, ports: [{port: 80}]}\n"
				      SVC("c", "ns") "spec: {clusterIP: 10.96.0.3, ports: [{port: 80}]}\n"
				      SVC("a", "ns") "spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n",
				      &f);
	REQUIRE(c1 && c2);
	struct svc_table *t1 = svc_table_build(c1, NULL, 0, NULL, NULL);
	struct svc_table *t2 = svc_table_build(c2, NULL, 0, t1, NULL);
	CHECK_INT(svc_by_name(t1, "ns", "b")->id, 2);
	CHECK_INT(svc_by_name(t2, "ns", "a")->id, svc_by_name(t1, "ns", "a")->id);
	CHECK_INT(svc_by_name(t2, "ns", "c")->id, svc_by_name(t1, "ns", "c")->id);
	CHECK_INT(svc_by_name(t2, "ns", "d")->id, 2); /* b's, free again */
	CHECK(!svc_by_id(t2, 4));
	CHECK(svc_by_id(t2, 3) == svc_by_name(t2, "ns", "c"));
	svc_table_unref(t1);
	svc_table_unref(t2);
	mesh_config_unref(c1);
	mesh_config_unref(c2);
	mc_findings_free(&f);
}

static struct svc_port weighted_port(struct svc_endpoint *eps, const uint32_t *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		eps[i] = (struct svc_endpoint){.weight = w[i], .target_port = 80};
	return (struct svc_port){.port = 80, .eps = eps, .n_eps = n};
}

TEST(svc_pick_follows_weights_over_a_deterministic_sequence)
{
	struct svc_endpoint eps[3];
	const uint32_t w[] = {90, 10, 0};
	struct svc_port p = weighted_port(eps, w, 3);
	int count[3] = {0};
	/* rnd = 0..999: exactly weight/total of them pick each endpoint */
	for (uint64_t r = 0; r < 1000; r++)
		count[svc_pick(&p, NULL, r)]++;
	CHECK_INT(count[0], 900);
	CHECK_INT(count[1], 100);
	CHECK_INT(count[2], 0); /* weight 0: never chosen */
	/* a spread-out sequence (an LCG) gives the split within a few percent */
	int lcg[3] = {0};
	uint64_t x = 12345;
	for (int i = 0; i < 10000; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		lcg[svc_pick(&p, NULL, x >> 11)]++;
	}
	CHECK(lcg[0] > 8800 && lcg[0] < 9200);
	CHECK_INT(lcg[2], 0);
}

TEST(svc_pick_chooses_only_allowed_endpoints_and_none_when_none_allowed)
{
	struct svc_endpoint eps[3];
	const uint32_t w[] = {90, 10, 5};
	struct svc_port p = weighted_port(eps, w, 3);
	bool only_v2[] = {false, true, false};
	for (uint64_t r = 0; r < 100; r++)
		CHECK_INT(svc_pick(&p, only_v2, r), 1);
	bool v2_v3[] = {false, true, true};
	int count[3] = {0};
	for (uint64_t r = 0; r < 15; r++)
		count[svc_pick(&p, v2_v3, r)]++;
	CHECK_INT(count[1], 10);
	CHECK_INT(count[2], 5);
	bool none[] = {false, false, false};
	CHECK_INT(svc_pick(&p, none, 7), -1);
	const uint32_t zero[] = {0, 0, 0};
	p = weighted_port(eps, zero, 3);
	CHECK_INT(svc_pick(&p, NULL, 7), -1);
	p.n_eps = 0;
	CHECK_INT(svc_pick(&p, NULL, 7), -1);
}

TEST(lint_reports_a_selector_selecting_nothing_and_an_undeclared_target_port_name)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load(WEL("w", "ns", "10.1.0.1", "{app: w}")
				     WEL("x", "other", "10.1.0.2", "{app: nothing}")
				     SVC("empty", "ns") "spec: {clusterIP: 10.96.0.1, "
				     "selector: {app: nothing}, ports: [{port: 80}]}\n"
				     SVC("named", "ns") "spec:\n  clusterIP: 10.96.0.2\n"
				     "  selector: {app: w}\n  ports:\n"
				     "  - {name: a, port: 80}\n"
				     "  - {name: b, port: 81, targetPort: grpc}\n", &f);
	REQUIRE(c);
	struct mc_findings lint = {0};
	struct svc_table *t = svc_table_build(c, NULL, 0, NULL, &lint);
	char buf[1024];
	const struct mc_finding *w = th_find(&lint, MC_WARNING, "spec.selector", NULL);
	REQUIRE(w);
	CHECK_STR(mc_finding_str(w, buf, sizeof(buf)),
		  "warning: svc.yaml:16: Service ns/empty: spec.selector: selects no WorkloadEntry "
		  "and no pod enrolled here in namespace ns: connections to it have no endpoint");
	w = th_find(&lint, MC_WARNING, "spec.ports[1].targetPort", NULL);
	REQUIRE(w);
	CHECK_CONTAINS(mc_finding_str(w, buf, sizeof(buf)),
		       "Service ns/named: spec.ports[1].targetPort: port 81: no selected endpoint "
		       "declares the port name \"grpc\"");
	CHECK_INT(lint.n, 2);
	CHECK_INT(t->findings.n, 2);
	done(t, c, &f);
	mc_findings_free(&lint);
}

TEST(explain_vip_gives_every_endpoint_verdict_and_the_eligible_ones)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load(
		WEL("v1", "bi", "10.1.0.1", "{app: reviews, version: v1}") "  weight: 90\n"
		WEL("v2", "bi", "10.2.0.1", "{app: reviews, version: v2}") "  weight: 10\n"
		WEL("v3", "bi", "10.2.0.2", "{app: reviews, version: v3}") "  weight: 0\n"
		WEL("client", "bi", "10.3.0.1", "{app: client}") "  serviceAccount: client\n"
		SVC("reviews", "bi") "spec: {clusterIP: 10.96.0.20, selector: {app: reviews}, "
		"ports: [{port: 9080}]}\n"
		"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		"metadata: {name: deny-v2, namespace: bi}\n"
		"spec:\n  selector: {matchLabels: {version: v2}}\n  action: DENY\n"
		"  rules: [{from: [{source: {principals: [cluster.local/ns/bi/sa/client]}}]}]\n", &f);
	REQUIRE(c);
	struct svc_table *t = svc_table_build(c, NULL, 0, NULL, NULL);
	struct sbuf out;
	sbuf_init(&out);
	const char *client = "spiffe://cluster.local/ns/bi/sa/client";
	CHECK_INT(svc_explain(c, t, NULL, client, NULL, "10.96.0.20:9080", false, &out), 0);
	CHECK_CONTAINS(out.s, "3 endpoints, 1 eligible for the weighted choice");
	CHECK_CONTAINS(out.s, "endpoint bi/v1 10.1.0.1:9080 weight 90: eligible, share 100.0%");
	CHECK_CONTAINS(out.s, "endpoint bi/v2 10.2.0.1:9080 weight 10: not eligible: denied");
	CHECK_CONTAINS(out.s, "policy: bi/deny-v2 rule 1");
	CHECK_CONTAINS(out.s, "endpoint bi/v3 10.2.0.2:9080 weight 0: not eligible: weight 0");
	sbuf_free(&out);
	sbuf_init(&out);
	/* plaintext is not denied by deny-v2: v1 and v2 share 90/10 */
	CHECK_INT(svc_explain(c, t, NULL, "plaintext", NULL, "10.96.0.20:9080", true, &out), 0);
	CHECK_CONTAINS(out.s, "\"eligible\":2");
	CHECK_CONTAINS(out.s, "\"endpoint\":\"bi/v2\",\"address\":\"10.2.0.1:9080\",\"weight\":10,"
		       "\"eligible\":true,\"share\":0.1000");
	sbuf_free(&out);
	sbuf_init(&out);
	/* not a service VIP: the caller explains the address instead */
	CHECK_INT(svc_explain(c, t, NULL, client, NULL, "10.1.0.1:9080", false, &out), -1);
	CHECK(!out.s || !*out.s);
	/* the VIP on a port the Service does not have: bad input naming its ports */
	CHECK_INT(svc_explain(c, t, NULL, client, NULL, "10.96.0.20:9081", false, &out), 2);
	CHECK_CONTAINS(out.s, "10.96.0.20 is the VIP of Service bi/reviews, which has no port "
		       "9081 (its ports: 9080)");
	sbuf_free(&out);
	sbuf_init(&out);
	CHECK_INT(svc_explain(c, t, NULL, "bogus", NULL, "10.96.0.20:9080", false, &out), 2);
	sbuf_free(&out);
	done(t, c, &f);
}

TEST(explain_vip_with_every_endpoint_denied_has_none_eligible)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load(
		WEL("v1", "bi", "10.1.0.1", "{app: reviews}")
		SVC("reviews", "bi") "spec: {clusterIP: 10.96.0.20, selector: {app: reviews}, "
		"ports: [{port: 9080}]}\n"
		"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
		"metadata: {name: deny-all, namespace: bi}\n"
		"spec:\n  action: DENY\n  rules: [{}]\n", &f);
	REQUIRE(c);
	struct svc_table *t = svc_table_build(c, NULL, 0, NULL, NULL);
	struct sbuf out;
	sbuf_init(&out);
	CHECK_INT(svc_explain(c, t, NULL, "plaintext", NULL, "10.96.0.20:9080", false, &out), 1);
	CHECK_CONTAINS(out.s, "DENY  10.96.0.20:9080: Service bi/reviews");
	CHECK_CONTAINS(out.s, "0 eligible for the weighted choice");
	sbuf_free(&out);
	done(t, c, &f);
}

TEST(services_show_lists_vips_ports_endpoints_weights_and_health)
{
	struct mc_findings f = {0};
	struct mesh_config *c = load(canary, &f);
	REQUIRE(c);
	struct svc_table *t = svc_table_build(c, NULL, 0, NULL, NULL);
	struct sbuf out;
	sbuf_init(&out);
	svc_table_show(t, NULL, false, &out);
	CHECK_CONTAINS(out.s, "Service bookinfo/reviews  id 1  host reviews.bookinfo.svc.cluster.local"
		       "  VIPs 10.96.0.20");
	CHECK_CONTAINS(out.s, "port 80 named -> targetPort http: 2 endpoints");
	CHECK_CONTAINS(out.s, "bookinfo/reviews-v3");
	CHECK_CONTAINS(out.s, "weight 0 (never chosen)");
	sbuf_free(&out);
	sbuf_init(&out);
	svc_table_show(t, NULL, true, &out);
	CHECK_CONTAINS(out.s, "{\"endpoint\":\"bookinfo/reviews-v1\",\"kind\":\"WorkloadEntry\","
		       "\"address\":\"10.1.0.1:9081\",\"targetPort\":9081,\"weight\":90,"
		       "\"health\":\"ok\"}");
	CHECK_CONTAINS(out.s, "\"vips\":[\"10.96.0.20\"]");
	sbuf_free(&out);
	done(t, c, &f);
}
