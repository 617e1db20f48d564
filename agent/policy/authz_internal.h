/* Private pieces of the policy engine shared by evaluation, lint and explain. */
#ifndef MOAT_POLICY_AUTHZ_INTERNAL_H
#define MOAT_POLICY_AUTHZ_INTERNAL_H

#include "policy/authz.h"

/* A principal "td/ns/NS/sa/SA" split into its parts (copied into fixed buffers: evaluation
 * must not allocate). ok is false when the principal does not have that shape. */
struct principal_parts {
	bool ok;
	char td[256];
	char ns[64];
	char sa[256];
	char ns_sa[324]; /* "NS/SA", what serviceAccounts entries are compared with */
};

bool principal_split(const char *principal, struct principal_parts *out);

/* "spiffe://x" -> "x"; other strings unchanged. */
const char *strip_spiffe(const char *s);

/* What a policy selects, for messages: "app=x", "every workload in namespace N",
 * "every workload in the mesh", "ServiceEntry ns/name". */
void describe_selection(const struct mesh_config *c, const struct mc_authz *p, char *buf,
			size_t len);

/* The peer in words: "principal cluster.local/ns/a/sa/b from 10.0.0.1", "plaintext peer". */
void describe_peer(const struct authz_peer *p, char *buf, size_t len);

/* The target in words: "ns/name" (workload) or "ServiceEntry ns/name". */
void describe_target(const struct authz_target *t, char *buf, size_t len);

/* Does the ServiceEntry-targeting reference name this ServiceEntry? */
bool target_ref_names(const struct mc_target_ref *r, const struct mc_service_entry *se);
/* Is this reference to a ServiceEntry at all (the only kind moat enforces)? */
bool target_ref_is_service_entry(const struct mc_target_ref *r);

/* A rule in words, for explain: "from principals [a, b]; to ports [8080]". */
void describe_rule(const struct mc_rule *r, struct sbuf *out);

#endif
