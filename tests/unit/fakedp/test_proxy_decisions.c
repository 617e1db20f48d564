/* What the agent does with a connection (proxy/decide.c), table-driven over a small mesh
 * held by a real agent state: the outbound path for each kind of destination (HBONE,
 * same-node join, plaintext relay, egress, passthrough, deny with its reason code) and the
 * answer to an inbound HBONE CONNECT or plaintext connection (200/400/401/503). */
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "proxy/decide.h"
#include "test.h"

#define AP(name, ns)                                                                        \
	"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"                \
	"metadata: {name: " name ", namespace: " ns "}\n"

/* a/client and a/server are pods of this node; b/api is remote; c/db has no agent in front
 * (no ambient label); ext is a ServiceEntry. b/api takes callers from namespace a, except on
 * 9090 (DENY); a/server only on 8080; ext only from a/client. */
static const char mesh[] =
	"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
	"metadata: {name: client, namespace: a}\n"
	"spec: {address: 10.1.0.1, serviceAccount: client, labels: {app: client, "
	"istio.io/dataplane-mode: ambient}}\n"
	"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
	"metadata: {name: server, namespace: a}\n"
	"spec: {address: 10.1.0.2, serviceAccount: server, labels: {app: server, "
	"istio.io/dataplane-mode: ambient}}\n"
	"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
	"metadata: {name: api, namespace: b}\n"
	"spec: {address: 10.2.0.1, serviceAccount: api, labels: {app: api, "
	"istio.io/dataplane-mode: ambient}}\n"
	"---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
	"metadata: {name: db, namespace: c}\n"
	"spec: {address: 10.3.0.1, serviceAccount: db, labels: {app: db}}\n"
	"---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
	"metadata: {name: ext, namespace: a}\n"
	"spec: {hosts: [ext.example.com], addresses: ['203.0.113.10'], "
	"ports: [{number: 443, name: https, protocol: TLS}], resolution: STATIC}\n"
	AP("from-a", "b") "spec: {rules: [{from: [{source: {namespaces: [a]}}]}]}\n"
	AP("no-9090", "b") "spec: {action: DENY, rules: [{to: [{operation: {ports: ['9090']}}]}]}\n"
	AP("server-8080", "a") "spec: {selector: {matchLabels: {app: server}}, rules: [{to: "
	"[{operation: {ports: ['8080']}}]}]}\n"
	AP("ext-client", "a") "spec: {targetRefs: [{group: networking.istio.io, kind: "
	"ServiceEntry, name: ext}], rules: [{from: [{source: {principals: "
	"[cluster.local/ns/a/sa/client]}}]}]}\n";

static const char registry_only[] =
	"---\napiVersion: moat.dev/v1\nkind: MeshConfig\nmetadata: {name: mesh}\n"
	"spec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";

static struct moat_addr ip(const char *s)
{
	struct moat_addr a = {{0}};
	addr_parse(s, &a);
	return a;
}

struct out_case {
	const char *what;
	const char *from; /* local pod a/<from> */
	const char *dst;
	uint16_t port;
	bool registry_only;
	enum agent_engine engine;
	enum outbound_path path;
	const char *code;   /* OUT_DENY */
	const char *policy; /* deciding policy, NULL: none */
};

static const struct out_case out_cases[] = {
	{"remote ambient workload, allowed", "client", "10.2.0.1", 8080, false, ENGINE_SOCKMAP,
	 OUT_HBONE, NULL, "b/from-a"},
	{"remote ambient workload, DENY on its port", "client", "10.2.0.1", 9090, false,
	 ENGINE_SOCKMAP, OUT_DENY, "POLICY_DENY", "b/no-9090"},
	{"remote ambient workload, another pod of the allowed namespace", "server", "10.2.0.1", 8080, false,
	 ENGINE_SOCKMAP, OUT_HBONE, NULL, "b/from-a"},
	{"local pod, allowed, sockmap engine: joined on this node", "client", "10.1.0.2", 8080,
	 false, ENGINE_SOCKMAP, OUT_SAME_NODE, NULL, "a/server-8080"},
	{"local pod, allowed, user-space engine: HBONE", "client", "10.1.0.2", 8080, false,
	 ENGINE_USERSPACE, OUT_HBONE, NULL, "a/server-8080"},
	{"local pod on a port no ALLOW rule names", "client", "10.1.0.2", 7000, false,
	 ENGINE_SOCKMAP, OUT_DENY, "NO_ALLOW", NULL},
	{"a pod calling itself is not a same-node join", "server", "10.1.0.2", 8080, false,
	 ENGINE_SOCKMAP, OUT_HBONE, NULL, "a/server-8080"},
	{"agent port of a workload", "client", "10.2.0.1", 15008, false, ENGINE_SOCKMAP, OUT_DENY,
	 "AGENT_PORT", NULL},
	{"agent port of an unregistered address", "client", "198.51.100.7", 15001, false,
	 ENGINE_SOCKMAP, OUT_DENY, "AGENT_PORT", NULL},
	{"workload without an agent in front: plaintext", "client", "10.3.0.1", 5432, false,
	 ENGINE_SOCKMAP, OUT_PLAINTEXT, NULL, NULL},
	{"ServiceEntry, allowed source", "client", "203.0.113.10", 443, false, ENGINE_SOCKMAP,
	 OUT_EGRESS, NULL, "a/ext-client"},
	{"ServiceEntry, other source", "server", "203.0.113.10", 443, false, ENGINE_SOCKMAP,
	 OUT_DENY, "NO_ALLOW", NULL},
	{"unregistered, ALLOW_ANY: passthrough", "client", "198.51.100.7", 443, false,
	 ENGINE_SOCKMAP, OUT_PASSTHROUGH, NULL, NULL},
	{"unregistered, REGISTRY_ONLY: denied", "client", "198.51.100.7", 443, true,
	 ENGINE_SOCKMAP, OUT_DENY, "UNREGISTERED", NULL},
	{"loopback under REGISTRY_ONLY: passthrough", "client", "127.0.0.1", 80, true,
	 ENGINE_SOCKMAP, OUT_PASSTHROUGH, NULL, NULL},
	{"registered workload under REGISTRY_ONLY still HBONE", "client", "10.2.0.1", 8080, true,
	 ENGINE_SOCKMAP, OUT_HBONE, NULL, "b/from-a"},
};

static const char *const path_names[] = {"deny", "hbone", "same-node", "egress", "passthrough",
					 "plaintext"};

static struct fx *mesh_fx(bool reg_only)
{
	char *y = xasprintf("%s%s", mesh, reg_only ? registry_only : "");
	struct fx *f = fx_new(y);
	free(y);
	if (f && (!fx_pod(f, "a", "client") || !fx_pod(f, "a", "server"))) {
		fx_free(f);
		return NULL;
	}
	return f;
}

TEST(outbound_decision_picks_the_path_and_reason_for_each_kind_of_destination)
{
	struct fx *fx[2] = {mesh_fx(false), mesh_fx(true)};
	REQUIRE(fx[0] && fx[1]);
	for (size_t i = 0; i < sizeof(out_cases) / sizeof(out_cases[0]); i++) {
		const struct out_case *t = &out_cases[i];
		struct fx *f = fx[t->registry_only];
		f->a->opts.engine = t->engine;
		struct pod *p = agent_pod_by_name(f->a, "a", t->from);
		struct moat_addr dst = ip(t->dst);
		struct outbound_decision o;
		outbound_decide(f->a, p, &dst, t->port, &o);
		CHECK_MSG(o.path == t->path, "%s: path %s, expected %s", t->what, path_names[o.path],
			  path_names[t->path]);
		CHECK_MSG(!t->code || (o.code && !strcmp(o.code, t->code)), "%s: code %s, expected %s",
			  t->what, o.code ? o.code : "(none)", t->code);
		CHECK_MSG(t->path != OUT_DENY || (o.reason && *o.reason), "%s: a deny without a reason",
			  t->what);
		CHECK_MSG(t->path == OUT_DENY || !o.code, "%s: not a deny, yet code %s", t->what,
			  o.code);
		CHECK_MSG((!t->policy && !o.policy) || (t->policy && o.policy &&
							!strcmp(t->policy, o.policy)),
			  "%s: policy %s, expected %s", t->what, o.policy ? o.policy : "(none)",
			  t->policy ? t->policy : "(none)");
	}
	fx_free(fx[0]);
	fx_free(fx[1]);
}

TEST(outbound_decision_names_the_destination_it_reached)
{
	struct fx *f = mesh_fx(false);
	REQUIRE(f);
	struct pod *p = agent_pod_by_name(f->a, "a", "client");
	struct moat_addr dst = ip("10.1.0.2");
	struct outbound_decision o;
	outbound_decide(f->a, p, &dst, 8080, &o);
	CHECK(o.d.local == agent_pod_by_name(f->a, "a", "server"));
	CHECK_STR(o.d.name, "a/server");
	CHECK_STR(o.d.spiffe_id, "spiffe://cluster.local/ns/a/sa/server");
	dst = ip("203.0.113.10");
	outbound_decide(f->a, p, &dst, 443, &o);
	CHECK_INT(o.d.kind, DEST_SERVICE);
	CHECK_STR(o.d.name, "a/ext");
	fx_free(f);
}

/* ---- inbound ---- */

struct in_case {
	const char *what;
	const char *method, *authority, *peer_id, *peer_ip;
	int status;
	const char *code;   /* 401 */
	const char *policy; /* deciding policy */
	const char *why;    /* substring of why (status other than 200) */
};

/* Into a/server (8080 only) and into b/api (namespace a only, never 9090): b/api is made a
 * local pod of its own node for these cases. */
static const struct in_case in_server[] = {
	{"allowed identity and port", "CONNECT", "10.1.0.2:8080", "spiffe://cluster.local/ns/a/sa/client",
	 "10.1.0.1", 200, NULL, "a/server-8080", NULL},
	{"a port no rule names", "CONNECT", "10.1.0.2:7000", "spiffe://cluster.local/ns/a/sa/client",
	 "10.1.0.1", 401, "NO_ALLOW", NULL, "server-8080"},
	{"authority of another pod", "CONNECT", "10.2.0.1:8080",
	 "spiffe://cluster.local/ns/a/sa/client", "10.1.0.1", 400, NULL, NULL, "10.2.0.1"},
	{"authority on an agent port", "CONNECT", "10.1.0.2:15008",
	 "spiffe://cluster.local/ns/a/sa/client", "10.1.0.1", 400, NULL, NULL, "agent ports"},
	{"not a CONNECT", "GET", "10.1.0.2:8080", "spiffe://cluster.local/ns/a/sa/client",
	 "10.1.0.1", 400, NULL, NULL, "GET"},
	{"authority without a port", "CONNECT", "10.1.0.2", "spiffe://cluster.local/ns/a/sa/client",
	 "10.1.0.1", 400, NULL, NULL, NULL},
};

static const struct in_case in_api[] = {
	{"identity of an allowed namespace", "CONNECT", "10.2.0.1:8080",
	 "spiffe://cluster.local/ns/a/sa/client", "10.1.0.1", 200, NULL, "b/from-a", NULL},
	{"identity of another namespace", "CONNECT", "10.2.0.1:8080",
	 "spiffe://cluster.local/ns/c/sa/db", "10.3.0.1", 401, "NO_ALLOW", NULL, NULL},
	{"allowed identity on the denied port", "CONNECT", "10.2.0.1:9090",
	 "spiffe://cluster.local/ns/a/sa/client", "10.1.0.1", 401, "POLICY_DENY", "b/no-9090",
	 "no-9090"},
};

static void run_inbound(struct fx *f, struct pod *p, const struct in_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct in_case *t = &cases[i];
		struct hbone_request r = {.method = t->method, .authority = t->authority,
					  .peer_id = t->peer_id, .peer_addr = ip(t->peer_ip),
					  .peer_port = 40000, .local_addr = p->addr,
					  .local_port = 15008};
		struct inbound_decision d;
		inbound_hbone_decide(f->a, p, &r, &d);
		CHECK_MSG(d.status == t->status, "%s: status %d, expected %d (%s)", t->what, d.status,
			  t->status, d.why ? d.why : "");
		CHECK_MSG(!t->code || (d.code && !strcmp(d.code, t->code)), "%s: code %s, expected %s",
			  t->what, d.code ? d.code : "(none)", t->code);
		CHECK_MSG(!t->policy || (d.policy && !strcmp(d.policy, t->policy)),
			  "%s: policy %s, expected %s", t->what, d.policy ? d.policy : "(none)",
			  t->policy);
		CHECK_MSG(d.status == 200 || (d.why && *d.why), "%s: refused without a reason",
			  t->what);
		CHECK_MSG(!t->why || (d.why && strstr(d.why, t->why)), "%s: why \"%s\" lacks \"%s\"",
			  t->what, d.why ? d.why : "", t->why);
	}
}

TEST(inbound_hbone_decision_authorizes_the_verified_peer_against_the_dialed_pod)
{
	struct fx *f = mesh_fx(false);
	REQUIRE(f);
	REQUIRE(fx_pod(f, "b", "api"));
	run_inbound(f, agent_pod_by_name(f->a, "a", "server"), in_server,
		    sizeof(in_server) / sizeof(in_server[0]));
	run_inbound(f, agent_pod_by_name(f->a, "b", "api"), in_api, sizeof(in_api) / sizeof(in_api[0]));
	fx_free(f);
}

static const char strict_api[] =
	"---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
	"metadata: {name: strict, namespace: b}\nspec: {mtls: {mode: STRICT}}\n";

TEST(inbound_plaintext_decision_is_the_empty_identity_and_strict_refuses_it)
{
	char *y = xasprintf("%s%s", mesh, strict_api);
	struct fx *f = fx_new(y);
	free(y);
	REQUIRE(f);
	struct pod *server = fx_pod(f, "a", "server"), *api = fx_pod(f, "b", "api");
	REQUIRE(server && api);
	struct moat_addr src = ip("10.3.0.1"), s_ip = ip("10.1.0.2"), api_ip = ip("10.2.0.1");
	struct inbound_decision d;
	/* PERMISSIVE a/server: plaintext is authorized as no identity (its policy names a port) */
	inbound_plain_decide(f->a, server, &src, &s_ip, 8080, &d);
	CHECK_INT(d.status, 200);
	CHECK_STR(d.policy, "a/server-8080");
	inbound_plain_decide(f->a, server, &src, &s_ip, 7000, &d);
	CHECK_INT(d.status, 401);
	CHECK_STR(d.code, "NO_ALLOW");
	/* STRICT b/api: plaintext refused before any policy */
	inbound_plain_decide(f->a, api, &src, &api_ip, 8080, &d);
	CHECK_INT(d.status, 401);
	CHECK_STR(d.code, "STRICT_PLAINTEXT");
	/* another pod's address, or an agent port: not this pod's workload */
	inbound_plain_decide(f->a, server, &src, &api_ip, 8080, &d);
	CHECK_INT(d.status, 503);
	inbound_plain_decide(f->a, server, &src, &s_ip, 15006, &d);
	CHECK_INT(d.status, 503);
	fx_free(f);
}
