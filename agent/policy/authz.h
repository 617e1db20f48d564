/* Istio L4 authorization as ztunnel enforces it (../shared/notes/l4-authz.md), with moat's
 * deliberate differences (docs/policy.md): DENY rules with L7 fields are enforced without
 * them; principals written with "spiffe://" are treated as the same principal; named ports
 * fail closed. A pure module: no I/O, no kernel; the agent, the verdict cache, `moatctl
 * explain` and `moatctl lint` all call it. */
#ifndef MOAT_POLICY_AUTHZ_H
#define MOAT_POLICY_AUTHZ_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "moat/abi.h"

/* The source of a connection. */
struct authz_peer {
	/* "cluster.local/ns/NS/sa/SA" (no "spiffe://"), NULL for a plaintext peer. */
	const char *principal;
	struct moat_addr ip;
	bool has_ip;
};

/* The destination: a workload (inbound, and the source-side fast deny) or a ServiceEntry
 * (egress, enforced at the source node). */
enum authz_target_kind { AUTHZ_TARGET_WORKLOAD = 0, AUTHZ_TARGET_SERVICE = 1 };

struct authz_target {
	enum authz_target_kind kind;
	const struct mc_workload *workload;     /* when kind == WORKLOAD */
	const struct mc_service_entry *service; /* when kind == SERVICE */
	struct moat_addr ip;                    /* the address dialed */
	uint16_t port;                          /* 0 = "a port no applicable policy names" */
};

#define AUTHZ_MAX_DRY_RUN 8

struct authz_dry_run {
	const struct mc_authz *policy;
	int rule;          /* 1-based, 0 when no rule matched */
	bool matched;
	enum moat_action would; /* what the policy would decide alone */
};

struct authz_decision {
	enum moat_action action;   /* MOAT_ACTION_ALLOW or MOAT_ACTION_DENY */
	enum moat_reason reason;   /* POLICY_DENY, NO_ALLOW, STRICT_PLAIN, ALLOWED */
	const struct mc_authz *policy;       /* deciding policy (DENY match or ALLOW match) */
	const struct mc_peer_auth *peer_auth; /* deciding PeerAuthentication for STRICT_PLAIN */
	int rule;                  /* 1-based rule of `policy` that matched, 0 when none */
	char why[512];             /* one sentence: what decided and why */
	struct authz_dry_run dry_run[AUTHZ_MAX_DRY_RUN];
	int n_dry_run;
};

/* Evaluate: PeerAuthentication (plaintext vs STRICT), then DENY, then ALLOW (notes order). */
void authz_evaluate(const struct mesh_config *c, const struct authz_target *t,
		    const struct authz_peer *p, struct authz_decision *d);

/* The same over a caller's pre-filtered policies: idx[0..n) are indices into c->policies,
 * ascending, each known to apply to t (authz_policy_applies). A caller that evaluates one
 * target for many sources and ports (the verdict sync) filters once instead of per call. */
void authz_evaluate_among(const struct mesh_config *c, const uint32_t *idx, size_t n,
			  const struct authz_target *t, const struct authz_peer *p,
			  struct authz_decision *d);
size_t authz_ports_among(const struct mesh_config *c, const uint32_t *idx, size_t n,
			 const struct authz_target *t, uint16_t **ports);

/* A 64-bit digest of everything in p that can change a decision (name, namespace, action,
 * selector, targetRefs, rules with their typed values, dry-run, unsupported): equal
 * fingerprints across two configurations mean the policy decides the same way. */
uint64_t authz_policy_fingerprint(const struct mc_authz *p);
/* True when a rule of p has a destination.ip condition (the decision then depends on the
 * address dialed, not only on the destination workload). */
bool authz_policy_uses_destination_ip(const struct mc_authz *p);

/* Does policy p apply to target t? (selector / namespace / root namespace / targetRefs) */
bool authz_policy_applies(const struct mesh_config *c, const struct mc_authz *p,
			  const struct authz_target *t);

/* Effective mTLS mode of a workload's port: workload selector (port level first) ->
 * namespace -> mesh (root namespace) -> PERMISSIVE; at one level the oldest wins.
 * `decider` (may be NULL) receives the deciding PeerAuthentication or NULL. */
enum mc_mtls authz_mtls_mode(const struct mesh_config *c, const struct mc_workload *w,
			     uint16_t port, const struct mc_peer_auth **decider);
/* True when some selector PeerAuthentication gives this workload port-level modes. */
bool authz_has_port_mtls(const struct mesh_config *c, const struct mc_workload *w);

/* Every port number that an applicable policy names for this target (ports, notPorts,
 * destination.port values): the verdict for any other port equals the verdict for port 0.
 * Returns the count; *ports is malloc'd (free it). */
size_t authz_ports_of_interest(const struct mesh_config *c, const struct authz_target *t,
			       uint16_t **ports);
/* True when the decision can depend on the source address (ipBlocks, source.ip), so a
 * cached verdict must be keyed by the source workload, not only its identity. */
bool authz_depends_on_source_ip(const struct mesh_config *c, const struct authz_target *t);

/* Lint: append to f every finding about what cannot be enforced at L4 (dropped ALLOW rules
 * with what the policy now means, DENY rules enforced without L7 fields, named ports,
 * spiffe:// principals, AUDIT/CUSTOM, dry-run, selector matching no workload...).
 * Reads c only (tests compare it against authz_lint_loaded). */
void authz_lint(const struct mesh_config *c, struct mc_findings *f);
/* Lint a snapshot mesh_config_load_* just produced, before anything else shares it. The
 * loader does not lint (config/ knows nothing of the policy engine): whoever puts a
 * configuration in force or shows its findings calls this after a successful load (moatd's
 * start and reload worker, `moatctl lint`). The findings are appended to c->findings (where
 * the agent keeps them) and, when f is given, to f (the load's own list), after the loader's
 * own warnings and notes: the same list, in the same order, the loader used to produce. */
void authz_lint_loaded(struct mesh_config *c, struct mc_findings *f);

/* String matching of principals and namespaces: "*" any non-empty, "*x" suffix,
 * "x*" prefix, else exact. */
bool authz_string_match(const char *pattern, const char *value);

/* JSON object {"verdict":"ALLOW"|"DENY","policy":"ns/name"|null,"rule":N|null,"reason":"..."}
 * (the `moatctl explain -o json` contract). */
void authz_decision_json(const struct authz_decision *d, struct sbuf *out);
/* Human text: verdict, deciding policy and rule, and why (several lines). */
void authz_decision_text(const struct authz_decision *d, const struct authz_target *t,
			 const struct authz_peer *p, struct sbuf *out);

/* `moatctl explain`, offline and live (added): turn (config, from, src_ip, to) into a target,
 * a peer and a decision, and format it. from: "spiffe://TD/ns/NS/sa/SA" (or without the
 * prefix) or "plaintext"; src_ip: NULL/"" when unknown (then, when exactly one WorkloadEntry
 * presents that identity, its address is used); to: "IP:PORT" of a WorkloadEntry (inbound
 * target) or else of a ServiceEntry (egress target). Writes the text (or one JSON object
 * and a newline) to out, or on bad input one line saying what is wrong.
 * Returns the exit code: 0 ALLOW, 1 DENY, 2 bad input. */
int authz_explain(const struct mesh_config *c, const char *from, const char *src_ip,
		  const char *to, bool json, struct sbuf *out);
/* The source half of explain (also for a service VIP, state/svc_show.c): from and src_ip
 * into a peer; *inferred = the WorkloadEntry whose address was taken as the source IP, or
 * NULL. Returns 0, or 2 with one line in out saying what is wrong. */
int authz_explain_source(const struct mesh_config *c, const char *from, const char *src_ip,
			struct authz_peer *peer, const struct mc_workload **inferred,
			struct sbuf *out);
/* The note explain adds about the source IP (inferred, or unknown while it matters). */
void authz_explain_source_note(const struct mesh_config *c, const struct authz_peer *peer,
			       const struct mc_workload *inferred, const struct authz_target *t,
			       struct sbuf *out);
/* For a NO_ALLOW denial: each ALLOW policy that applies to t and what its rules expect. */
void explain_allow_policies(const struct mesh_config *c, const struct authz_target *t,
			    const char *principal, struct sbuf *out);

#endif
