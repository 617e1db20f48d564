/* The service table: every Service VIP moat balances, built from one configuration snapshot
 * plus the labels of the pods enrolled on this node, and never changed after: a reload, an
 * enroll or an unenroll builds a new table and swaps it in whole (like the configuration),
 * so a connection that looked a service up keeps a consistent view while it holds a
 * reference.
 *
 * Services come from two kinds (docs/config.md "Services"):
 *  - Kubernetes `Service` (v1): VIPs = spec.clusterIP(s), endpoints = the WorkloadEntries and
 *    the local pods of the Service's namespace that spec.selector selects; host
 *    name.ns.svc.<trust domain>.
 *  - `ServiceEntry` with location MESH_INTERNAL and spec.workloadSelector: VIPs =
 *    spec.addresses (single IPs; the load refuses CIDR blocks there), endpoints = the
 *    WorkloadEntries and local pods of its namespace that workloadSelector.labels selects;
 *    host = its first spec.hosts entry.
 * A port's endpoint is a workload plus its resolved target port: a numeric targetPort is used
 * as is; a named one resolves through the workload's spec.ports (name -> number) and a
 * workload that does not declare the name is not an endpoint of that port. For a
 * ServiceEntry, a WorkloadEntry's ports[<service port name>] wins over targetPort (Istio).
 * Weight = WorkloadEntry.spec.weight (default 1); weight 0 keeps the endpoint listed but it
 * is never chosen. Local pods without a WorkloadEntry have weight 1 and declare no ports.
 *
 * Everything here is pure (no agent, no I/O): unit-tested in tests/unit/test_services.c.
 * The reference count is not atomic: moatd builds, swaps and drops tables on its loop
 * thread only (state/svc_sync.c). */
#ifndef MOAT_STATE_SERVICES_H
#define MOAT_STATE_SERVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/util.h"

/* A pod enrolled on this node, as the table needs it (the caller's memory; only read during
 * svc_table_build, everything kept is copied). A pod that has a WorkloadEntry in the
 * snapshot (entry != NULL) is that WorkloadEntry's endpoint and is not listed twice. */
struct svc_local_pod {
	const char *ns, *name;
	/* What selectors match, as for a WorkloadEntry: labels first, then meta_labels for a
	 * key labels lacks (the enroll labels, or the last WorkloadEntry's spec.labels and
	 * metadata.labels when the entry left the configuration). meta_labels may be NULL. */
	const struct mc_labels *labels;
	const struct mc_labels *meta_labels;
	const struct moat_addr *addrs;
	size_t n_addrs;
	const struct mc_workload *entry;     /* its WorkloadEntry in the snapshot, or NULL */
};

struct svc_endpoint {
	/* The WorkloadEntry (points into the table's snapshot, which the table holds), or
	 * NULL for a local pod without one. */
	const struct mc_workload *wl;
	char *name;              /* "ns/name" of the WorkloadEntry or pod */
	bool pod;                /* a local pod without a WorkloadEntry */
	struct moat_addr addrs[MC_WL_MAX_ADDRS]; /* addrs[0] = primary */
	size_t n_addrs;
	uint16_t target_port;    /* resolved (never 0) */
	uint32_t weight;         /* 0 = listed, never chosen */
};

struct svc_port {
	uint16_t port;           /* the service port (what clients dial on the VIP) */
	const char *name;        /* NULL when unnamed */
	const char *target_name; /* named targetPort, or NULL */
	uint16_t target_port;    /* numeric targetPort (0 when named) */
	struct svc_endpoint *eps; /* sorted by name: stable order for svc_pick and output */
	size_t n_eps;
};

enum svc_kind { SVC_KUBERNETES = 0, SVC_SERVICE_ENTRY = 1 };

struct svc {
	uint32_t id;             /* stable small id (>= 1) while the service exists */
	enum svc_kind kind;
	const char *name, *ns;
	char *host;              /* name.ns.svc.<domain>, or the ServiceEntry's first host */
	const struct mc_kservice *k;          /* SVC_KUBERNETES (into the snapshot) */
	const struct mc_service_entry *se;    /* SVC_SERVICE_ENTRY (into the snapshot) */
	struct moat_addr *vips;  /* IPv4 and IPv6 VIPs */
	size_t n_vips;
	struct svc_port *ports;  /* TCP ports only, in the order written */
	size_t n_ports;
	const char *file;
	int line;
};

/* One (VIP, port) -> service entry of the sorted index: what the BPF VIP map holds. */
struct svc_vip {
	struct moat_addr vip;
	uint16_t port;
	uint32_t id;             /* svc->id */
	uint32_t svc_index;      /* into the table's services */
	uint32_t port_index;     /* into that service's ports */
};

struct svc_table {
	int refs;
	struct mesh_config *cfg; /* held: endpoints and services point into it */
	struct svc *svcs;        /* in load order */
	size_t n_svcs;
	struct svc_vip *vips;    /* sorted by (vip bytes, port) */
	size_t n_vips;
	struct svc **by_id;      /* index = id - 1; NULL for unused ids */
	size_t n_by_id;
	struct mc_findings findings; /* the build's warnings (lint), also appended to f */
	/* The WorkloadEntries' labels indexed for selectors (services.c): built once per
	 * snapshot and copied into the next table of the same snapshot (enroll, unenroll). */
	struct svc_label_ref *label_index;
	size_t n_label_index;
};

/* Build the table for snapshot c and the local pods. prev (may be NULL) is the table in
 * force: a service (same kind, namespace and name) keeps its id from it; new services get
 * the smallest ids no kept service uses. Findings (warnings: a selector selecting nothing, a
 * named targetPort no endpoint declares, headless Services) are appended to f when not NULL.
 * Never fails (errors such as duplicate VIP:port were refused when the configuration was
 * loaded). Returns a table with refs = 1. */
struct svc_table *svc_table_build(const struct mesh_config *c, const struct svc_local_pod *pods,
				  size_t n_pods, const struct svc_table *prev,
				  struct mc_findings *f);
struct svc_table *svc_table_ref(struct svc_table *t);
void svc_table_unref(struct svc_table *t); /* NULL is fine */

/* The service and port a connection to vip:port is for, O(log n); NULL when none. */
const struct svc *svc_lookup(const struct svc_table *t, const struct moat_addr *vip,
			     uint16_t port, const struct svc_port **port_out);
const struct svc *svc_by_id(const struct svc_table *t, uint32_t id);
const struct svc *svc_by_name(const struct svc_table *t, const char *ns, const char *name);
size_t svc_count(const struct svc_table *t);
/* Every (VIP, port, id), sorted: i < svc_vip_count(t). */
size_t svc_vip_count(const struct svc_table *t);
const struct svc_vip *svc_vip_at(const struct svc_table *t, size_t i);

/* Weighted choice among the allowed endpoints of p: rnd (any 64-bit value, e.g. a random
 * draw) picks endpoint i with probability weight_i / sum of allowed weights. allowed may be
 * NULL (every endpoint allowed), else allowed[i] for each of p->eps. Returns the index, or
 * -1 when no allowed endpoint has a weight > 0. Pure: the same rnd gives the same pick. */
int svc_pick(const struct svc_port *p, const bool *allowed, uint64_t rnd);

/* The endpoint's address of the VIP's family (IPv4 / IPv6), else its primary address. */
const struct moat_addr *svc_endpoint_addr_like(const struct svc_endpoint *e,
					       const struct moat_addr *vip);

/* ---- showing and explaining (svc_show.c; `moatctl services`, `moatctl explain`) ---- */
struct sbuf;
/* What only the agent knows about an endpoint. Both callbacks may be NULL (offline). */
struct svc_view {
	/* The workload an endpoint is (a local pod's synthetic one); NULL: e->wl. */
	const struct mc_workload *(*workload)(void *arg, const struct svc_endpoint *e);
	/* Whether the endpoint is usable now, in a word or two; NULL: "ok", or "weight 0" for
	 * an endpoint never chosen. */
	const char *(*health)(void *arg, const struct svc *s, const struct svc_port *p,
			      const struct svc_endpoint *e);
	void *arg;
};

/* Every service: VIPs, ports, endpoints (address:targetPort, weight, health); text or one
 * JSON array. */
void svc_table_show(const struct svc_table *t, const struct svc_view *v, bool json,
		    struct sbuf *out);
/* `moatctl explain --to VIP:PORT`: when `to` is a service port of t, the verdict from
 * `from` (and src_ip, as authz_explain takes them) for EVERY endpoint of that port, and
 * which are eligible for the weighted choice (allowed, weight > 0) with their share.
 * Returns -1 when `to` is not a service VIP:port of t (nothing written: explain it as an
 * address), 0 when at least one endpoint is eligible, 1 when none is (the connect would
 * fail with EPERM), 2 on bad input (one line in out; also a Service's VIP with a port it
 * does not have). */
int svc_explain(const struct mesh_config *c, const struct svc_table *t,
		const struct svc_view *v, const char *from, const char *src_ip, const char *to,
		bool json, struct sbuf *out);

#endif
