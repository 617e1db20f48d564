/* The one agent context: everything moatd holds lives here and is passed explicitly.
 * Rooms: state/ (this context, the registry of workloads and pods, verdict sync, config
 * reload, BPF events), proxy/ (outbound 15001, inbound 15008 + 15006, relays, the HBONE
 * pool), hbone/ (HTTP/2 over TLS), identity/, policy/, config/, bpf/, obs/, dns/, ctl/. */
#ifndef MOAT_STATE_AGENT_H
#define MOAT_STATE_AGENT_H

#include <net/if.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "core/accept.h"
#include "core/loop.h"
#include "core/util.h"
#include "moat/abi.h"
#include "policy/authz.h"
#include "state/tproxy.h"

struct dataplane;
struct identity_store;
struct moat_ca;
struct metrics;
struct obs_endpoints;
struct access_log;
struct dns_resolver;
struct hbone_pool;
struct ctl_server;
struct proxy_state;
struct reload_job;
struct verdict_cache;
struct wl_map;
struct svc_table;
struct svc_vstate;
struct svc_endpoint;
struct svc_port;
struct svc_ep_verdict;

/* --engine: the kernel paths moatd may use (proxy/engine.c). Each has a tested fallback to
 * user space, per connection. */
enum agent_engine {
	ENGINE_USERSPACE = 0, /* neither: HBONE on OpenSSL, same-node pairs over HBONE too */
	ENGINE_SOCKMAP,       /* same-node pairs joined in the kernel (proxy/join.c); HBONE on
			       * OpenSSL */
	ENGINE_KTLS,          /* HBONE on kernel TLS; same-node pairs over HBONE (on kTLS) */
	ENGINE_AUTO,          /* both (moatd's default) */
};

struct agent_opts {
	const char *config_dir;
	const char *state_dir;   /* default /run/moat */
	const char *bpf_dir;     /* default /sys/fs/bpf/moat */
	const char *ca_dir;      /* NULL: node-local ephemeral CA */
	const char *bundle_path; /* NULL: <ca_dir>/root-cert.pem */
	const char *resolv_conf; /* default /etc/resolv.conf */
	const char *access_log;  /* NULL: stdout */
	size_t access_log_buffer; /* bytes of lines queued for a slow sink (obs/access_log.c) */
	const char *node_name;
	int svid_ttl;            /* seconds */
	bool allow_tls12;
	bool transparent;        /* preserve client source addresses upstream (IP_TRANSPARENT) */
	int pool_idle_ms;        /* release idle HBONE connections after this */
	/* HBONE deadlines and caps (proxy/): every wait is bounded, every backlog capped. */
	int hbone_response_ms;   /* CONNECT response deadline (client) */
	int hbone_suspect_ms;    /* a stream waiting this long makes its connection suspect */
	int stream_idle_ms;      /* established streams without a byte either way (0 = none) */
	int inbound_idle_ms;     /* accepted HBONE connections without streams */
	int max_pending_dest;    /* CONNECTs awaiting their response, per destination address */
	int max_pending_pod;     /* ... per source pod */
	int pool_max_conns;      /* pooled connections per (pod, identity, destination) */
	uint16_t metrics_port, admin_port, ready_port;
	const char *metrics_addr; /* --metrics-addr (0.0.0.0) */
	bool cleanup;            /* --cleanup: remove capture, pins and records, then exit */
	enum agent_engine engine; /* --engine */
};

/* Stable ids for names (workloads, identities, policies): the same name keeps its id while
 * anything refers to it, so BPF map entries stay meaningful across reloads. id = index + 1.
 * intern_id pins a name for the agent's lifetime (configuration objects); intern_hold counts
 * a reference (enrolled pods, connection records) that intern_release gives back. A name
 * nothing holds or pins is quarantined and freed by intern_collect only after
 * INTERN_QUARANTINE_SYNCS syncs and quarantine_ms; only then is its id handed out again
 * (docs/architecture.md "Interned ids"). */
#define INTERN_QUARANTINE_SYNCS 2
struct intern_use {
	uint32_t refs;
	bool pinned;
	bool released;      /* quarantined: refs dropped to 0, not pinned */
	uint64_t released_gen, released_ms;
};
struct intern {
	char **names;              /* NULL: freed, its id on free_ids */
	struct intern_use *uses;   /* parallel to names */
	size_t n, cap;
	struct intern_slot *slots; /* open addressing: hash -> id */
	size_t n_slots;
	uint32_t *free_ids;        /* ids past their quarantine, reused first */
	size_t n_free, cap_free;
	size_t n_live;             /* names not freed */
	uint64_t gen;              /* intern_collect calls so far */
};

uint32_t intern_id(struct intern *in, const char *name);
/* The stable copy of name (NULL stays NULL): records keep these instead of their own copies. */
const char *intern_str(struct intern *in, const char *name);
const char *intern_name(const struct intern *in, uint32_t id); /* NULL for 0 / unknown */
uint32_t intern_hold(struct intern *in, const char *name);
const char *intern_hold_str(struct intern *in, const char *name); /* NULL stays NULL */
void intern_release(struct intern *in, uint32_t id, uint64_t now);
void intern_release_str(struct intern *in, const char *str, uint64_t now); /* NULL: nothing */
/* One sync happened: free the names whose quarantine is over; returns how many. */
size_t intern_collect(struct intern *in, uint64_t now, uint64_t quarantine_ms);
void intern_free(struct intern *in);

struct listener {
	struct acceptor acc; /* the accept loop and its back-off (core/accept.c) */
	int fd;
	struct pod *pod;
	int kind; /* enum listener_kind (proxy/) */
};

/* A pod enrolled on this node. Facts come from its WorkloadEntry (looked up again on every
 * reload) or, when it has none, from the enroll request (synthetic workload). */
struct pod {
	struct agent *agent;
	char *ns, *name, *key;     /* key "ns/name" */
	char *fs_key;              /* "ns_name" for pin paths */
	char *spiffe_id;           /* spiffe://td/ns/NS/sa/SA */
	char *principal;           /* td/ns/NS/sa/SA */
	char *cgroup_path;
	struct mc_workload synth;  /* used when the config has no WorkloadEntry for it */
	const struct mc_workload *entry; /* into agent->cfg, refreshed on reload; NULL if none */
	struct moat_addr addr;     /* the primary address (= addrs[0]) */
	/* Every address of the pod (dual stack): its WorkloadEntry's, else the one read from
	 * its netns at enroll. Each is in the workloads map with the pod's workload id. */
	struct moat_addr addrs[MC_WL_MAX_ADDRS];
	size_t n_addrs;
	int netns_fd, cgroup_fd;
	uint64_t netns_cookie;
	char ifname[IF_NAMESIZE];
	uint32_t workload_id, identity_id;
	struct listener out4, out6, hbone4, hbone6, plain4, plain6;
	bool transparent_ok;       /* policy routing for IP_TRANSPARENT is in place */
	struct tproxy_was tproxy_was; /* the pod's sysctls before moat (state/tproxy.h) */
	struct pod_addrs *learned; /* its other interface addresses (state/addrs.c) */
	struct pod *next;
};

/* Where a destination address leads. */
enum dest_kind { DEST_NONE = 0, DEST_WORKLOAD, DEST_SERVICE };

struct dest {
	enum dest_kind kind;
	const struct mc_workload *wl;        /* DEST_WORKLOAD (config or a pod's synthetic) */
	const struct mc_service_entry *se;   /* DEST_SERVICE */
	struct pod *local;                   /* the destination is a pod on this node */
	uint32_t id;                         /* stable workload / service id */
	bool ambient;                        /* reached over HBONE */
	const char *name;                    /* "ns/name" */
	const char *spiffe_id;               /* DEST_WORKLOAD */
};

struct agent {
	struct agent_opts opts;
	struct loop *loop;
	struct mesh_config *cfg;      /* the configuration in force (last good one) */
	/* Services of cfg + the local pods (state/services.h): rebuilt whole at every dataplane
	 * sync (reload, enroll, unenroll), never modified; hold a reference across waits. */
	struct svc_table *svcs;
	struct svc_vstate *svc_vstate; /* the service verdicts the BPF map holds (state/svc_maps.c) */
	struct dataplane *dp;
	struct moat_ca *ca;
	struct identity_store *ids;
	struct metrics *metrics;
	struct obs_endpoints *endpoints; /* metrics, admin and readiness ports (obs/) */
	struct access_log *access_log;   /* the JSON lines' writer (obs/access_log.c) */
	struct dns_resolver *dns;
	struct hbone_pool *pool;
	struct ctl_server *ctl;
	struct intern workload_ids, identity_ids, policy_ids;
	struct intern strings;        /* names and identities connection records point to */
	struct pod *pods;
	/* Owned by proxy/ (proxy_new / proxy_free; its type is private to proxy/): connection
	 * records and accepted HBONE connections. state/ reaches it only through
	 * state/proxy_ops.h, other rooms through proxy/proxy.h. */
	struct proxy_state *proxy;
	uint64_t epoch;               /* bumped only when the verdict cache is rebuilt whole */
	struct verdict_cache *verdicts; /* what the BPF verdict map holds (state/verdicts.c) */
	struct wl_map *wl_map;        /* what the BPF workloads map holds (state/wl_map.c) */
	bool ready;
	bool ktls;                    /* the kernel takes TCP_ULP "tls" (probed at start) */
	char ktls_why[160];
	/* config watch and the reload worker (state/reload.c) */
	bool watching;                /* agent_config_watch ran: the fields below are set up */
	int inotify_fd;
	struct loop_io inotify_io;
	struct loop_timer reload_timer;
	int reload_efd;               /* the worker signals a finished load here */
	struct loop_io reload_io;
	pthread_t reload_thread;
	bool reload_running;          /* reload_thread runs and owns reload_job */
	bool reload_pending;          /* asked again while running: load once more after */
	struct reload_job *reload_job;
	/* The files of the last load, composed: a change parses only what changed. Used by one
	 * load at a time (the worker's job, or the loop thread after worker_discard). */
	struct mc_load_cache *load_cache;
	uint64_t reloads_ok, reloads_failed;
	uint64_t accept_pauses;       /* listeners paused by EMFILE and friends */
	char last_reload_error[1024];
	/* BPF events */
	struct loop_io events_io;
	struct loop_timer stats_timer;
	struct moat_stats bpf_stats_last; /* exported as counter deltas */
	/* egress DNS (ServiceEntry resolution: DNS) */
	struct egress_dns *egress;
	struct loop_io signal_io;
	int signal_fd;
};

/* ---- registry (state/registry.c) ---- */
bool agent_lookup_dest(struct agent *a, const struct moat_addr *addr, struct dest *d);
struct pod *agent_pod_by_name(struct agent *a, const char *ns, const char *name);
/* The local pod one of whose addresses is addr. */
struct pod *agent_pod_by_addr(struct agent *a, const struct moat_addr *addr);
bool pod_has_addr(const struct pod *p, const struct moat_addr *addr);
/* The pod's address of the family of like (the source address of a connection to like),
 * else its primary address. */
const struct moat_addr *pod_addr_like(const struct pod *p, const struct moat_addr *like);
const struct mc_workload *pod_workload(const struct pod *p);
/* Recompute every BPF map from the configuration and the pods and write the difference. */
void agent_sync_dataplane(struct agent *a);
/* Write just one pod's addresses to the workloads map (before its TC programs attach). */
void agent_put_pod_addrs(struct agent *a, struct pod *p);
/* Evaluate with the agent's engine; fills target/peer/decision. */
void agent_authorize(struct agent *a, const struct dest *d, const struct moat_addr *dst_ip,
		     uint16_t dst_port, const char *principal, const struct moat_addr *src_ip,
		     struct authz_decision *out);
uint32_t agent_policy_id(struct agent *a, const struct mc_authz *p);
/* ServiceEntry addresses learnt from DNS (state/egress.c). */
const struct mc_service_entry *agent_service_by_resolved(struct agent *a, const struct moat_addr *ip);

/* The configuration in force and the pods as JSON (/config_dump; state/dump.c). */
void agent_config_dump(struct agent *a, struct sbuf *b);
/* ---- services (state/svc_sync.c) ---- */
/* Rebuild a->svcs from a->cfg and the pods (ids kept from the previous table); called by
 * agent_sync_dataplane before it writes the maps. Warnings that differ from the previous
 * build's are logged. */
void agent_services_rebuild(struct agent *a);
/* ---- services in the kernel (state/svc_maps.c) ---- */
/* Write the services map and the service verdicts (by difference); after the verdict sync. */
void agent_sync_services(struct agent *a);
void agent_svc_state_free(struct agent *a);
/* The verdict a direct connection from pod p to endpoint ep (its address of vip's family, at
 * its target port) would get: the rule for "this endpoint allows p". */
void agent_svc_decide(struct agent *a, const struct pod *p, const struct moat_addr *vip,
		      const struct svc_endpoint *ep, struct svc_ep_verdict *out);
/* Every endpoint of port: v[i], allowed[i] (n_eps entries each); returns how many allowed. */
size_t agent_svc_decide_port(struct agent *a, const struct pod *p, const struct moat_addr *vip,
			     const struct svc_port *port, struct svc_ep_verdict *v, bool *allowed);
/* A deny of pod p's connect to the service at vip:port, explained: why gets "service <host>
 * (ns/name) port N: no endpoint allows this source: <each endpoint and its deciding policy>",
 * *policy the first deciding policy, *name the service host (valid until the next sync).
 * False when vip:port is no service now. */
bool agent_svc_deny_why(struct agent *a, const struct pod *p, const struct moat_addr *vip,
			uint16_t port, struct sbuf *why, const char **policy, const char **name);

/* ---- config (state/reload.c) ---- */
int agent_config_watch(struct agent *a, struct err *e);
/* Stop watching; waits for a running load and drops it. Safe when the watch never started. */
void agent_config_watch_stop(struct agent *a);
/* Load the directory on this thread (a running background load is dropped first); on
 * success swap it in and resync. Returns 0 / -1 (old config kept). Blocks the loop for as
 * long as the load takes: for requests that need the answer (`moatctl reload`). */
int agent_config_reload(struct agent *a);
/* Load the directory on the worker thread; the swap happens on the loop thread when it
 * ends. While a load runs, further requests coalesce into one more load. */
void agent_config_reload_async(struct agent *a);
/* Log findings of at least min severity, each at its own level (error/warn/info). */
void agent_log_findings(const struct mc_findings *f, enum mc_severity min);

/* ---- pods (state/pods.c) ---- */
struct enroll_req {
	const char *ns, *name, *sa;
	const char *cgroup_path;
	const char *ifname;       /* default eth0 */
	int netns_fd;             /* owned by the request until enroll succeeds */
	const char *netns_path;   /* where the netns can be opened again (restart), or NULL */
	struct mc_labels labels;  /* extra labels (no WorkloadEntry) */
	const struct tproxy_was *tproxy_was; /* from the enrollment record (restart), or NULL */
};
int agent_enroll(struct agent *a, struct enroll_req *r, struct err *e);
int agent_unenroll(struct agent *a, const char *ns, const char *name, struct err *e);
void agent_unenroll_all(struct agent *a);
/* Stop serving every pod without detaching its capture (agent shutdown, restart). */
void agent_release_pods(struct agent *a);

/* ---- address learning (state/addrs.c) ---- */
/* Learn the pod's other interface addresses and keep them current (netlink in its netns). */
int pod_addrs_start(struct agent *a, struct pod *p, struct err *e);
void pod_addrs_stop(struct agent *a, struct pod *p);
bool pod_has_learned(const struct pod *p, const struct moat_addr *addr);
size_t pod_learned_addrs(const struct pod *p, const struct moat_addr **out);

/* ---- enrollment records (state/persist.c) ---- */
int pod_record_save(struct agent *a, const struct pod *p, const struct enroll_req *r,
		    struct err *e);
void pod_record_delete(struct agent *a, const char *fs_key);
/* At start: take back the pods recorded by a previous agent. */
void agent_restore_pods(struct agent *a);
/* A recorded pod this agent could not take back: remove its capture and record. */
int agent_forget_pod(struct agent *a, const char *ns, const char *name, struct err *e);
/* moatd --cleanup: remove every recorded pod's capture and record. */
void agent_cleanup_all(struct agent *a);

/* ---- BPF events (state/events.c) ---- */
int agent_events_start(struct agent *a, struct err *e);

/* ---- egress DNS (state/egress.c) ---- */
void agent_egress_refresh(struct agent *a); /* (re)start resolution for the current config */
void agent_egress_free(struct agent *a);
/* Addresses currently resolved for ServiceEntries: callback per (address, service). */
void agent_egress_each(struct agent *a, void (*fn)(void *arg, const struct moat_addr *ip,
						   const struct mc_service_entry *se),
		       void *arg);

#endif
