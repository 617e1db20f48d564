/* BPF events: every connect() the kernel refused and every plaintext SYN TC dropped becomes
 * one JSON deny line naming source, destination, policy and reason; BPF counters become
 * metrics. */
#include <errno.h>
#include <string.h>

#include "bpf/dataplane.h"
#include "core/log.h"
#include "core/reasons.h"
#include "obs/access.h"
#include "obs/metrics.h"
#include "state/agent.h"

#define STATS_INTERVAL_MS 2000

static struct pod *pod_by_cookie(struct agent *a, uint64_t cookie)
{
	for (struct pod *p = a->pods; p; p = p->next)
		if (p->netns_cookie == cookie)
			return p;
	return NULL;
}

/* One deny line for a connect() the hook refused (p: the source pod, when still enrolled). */
static void log_connect_deny(struct agent *a, const struct moat_event *ev, const struct pod *p,
			     const char *dst_name, const char *policy, const char *why)
{
	struct deny_record r = {
		.phase = "connect",
		.src_workload = p ? p->key : intern_name(&a->workload_ids, ev->src_workload),
		.src_identity = p ? p->spiffe_id : NULL,
		.src = p ? pod_addr_like(p, &ev->dst) : NULL,
		.dst = &ev->dst,
		.dport = ev->dst_port,
		.dst_workload = dst_name,
		.policy = policy,
		.reason = why,
		.reason_code = moat_reason_code(ev->reason),
	};
	access_log_deny(a->metrics, &r);
}

/* A connect to a service VIP that no endpoint allows: the deny line names the service and
 * each endpoint's deciding policy (recomputed now, from the configuration in force). */
static void service_connect_denied(struct agent *a, const struct moat_event *ev)
{
	struct pod *p = pod_by_cookie(a, ev->netns_cookie);
	struct sbuf why;
	sbuf_init(&why);
	const char *policy = intern_name(&a->policy_ids, ev->policy), *name = NULL;
	if (!p || !agent_svc_deny_why(a, p, &ev->dst, ev->dst_port, &why, &policy, &name))
		sbuf_printf(&why, "service id %u: no endpoint allows this source (cached verdict)",
			    ev->dst_workload & ~MOAT_SERVICE_ID_BIT);
	log_connect_deny(a, ev, p, name, policy, why.s);
	sbuf_free(&why);
}

static void connect_denied(struct agent *a, const struct moat_event *ev)
{
	if (ev->dst_workload & MOAT_SERVICE_ID_BIT) {
		service_connect_denied(a, ev);
		return;
	}
	struct pod *p = pod_by_cookie(a, ev->netns_cookie);
	struct dest d;
	bool known = agent_lookup_dest(a, &ev->dst, &d);
	char why[600];
	const char *policy = intern_name(&a->policy_ids, ev->policy);
	if (ev->reason == MOAT_REASON_UNREGISTERED) {
		snprintf(why, sizeof(why), "outboundTrafficPolicy REGISTRY_ONLY: destination is not "
					   "in the registry (no WorkloadEntry or ServiceEntry)");
	} else if (p && known && ev->epoch == a->epoch) {
		/* Same engine, same configuration: the exact reason moatd would give. */
		struct authz_decision dec;
		agent_authorize(a, &d, &ev->dst, ev->dst_port, p->principal,
				pod_addr_like(p, &ev->dst), &dec);
		snprintf(why, sizeof(why), "%s", dec.why);
	} else {
		snprintf(why, sizeof(why), "%s", ev->reason == MOAT_REASON_POLICY_DENY
							 ? "a DENY policy matched"
							 : "no ALLOW policy matched");
	}
	log_connect_deny(a, ev, p, known ? d.name : NULL, policy, why);
}

static const char *tc_drop_why(uint32_t kind)
{
	switch (kind) {
	case MOAT_EV_UNKNOWN_DST_DROPPED:
		return "new TCP connection to a pod address moat did not register: SYN dropped by TC";
	case MOAT_EV_SPOOFED_DROPPED:
		return "the pod sent from an address that is not its own: packet dropped by TC";
	case MOAT_EV_PLAINTEXT_NO_LISTENER:
		return "plaintext to a PERMISSIVE workload while its 15006 listener is missing (moatd "
		       "down): SYN dropped by sk_lookup, fail closed";
	default:
		return "plaintext TCP to a STRICT mTLS workload: SYN dropped by TC";
	}
}

/* The name of a workload id (a pod's, from the host-side TC), else of the address. */
static const char *name_of(struct agent *a, uint32_t id, const struct moat_addr *addr)
{
	struct dest d;
	if (agent_lookup_dest(a, addr, &d))
		return d.name;
	return intern_name(&a->workload_ids, id);
}

/* Packets dropped by TC or sk_lookup: who sent what to whom, and why. */
static void packet_dropped(struct agent *a, const struct moat_event *ev)
{
	bool spoofed = ev->kind == MOAT_EV_SPOOFED_DROPPED;
	struct deny_record r = {
		.phase = spoofed ? "outbound" : "inbound",
		/* a forged source names whoever it was forged after: the pod is the sender */
		.src_workload = spoofed ? intern_name(&a->workload_ids, ev->src_workload)
					: name_of(a, ev->src_workload, &ev->src),
		.src = &ev->src,
		.sport = ev->src_port,
		.dst = &ev->dst,
		.dport = ev->dst_port,
		.dst_workload = spoofed ? name_of(a, ev->dst_workload, &ev->dst)
					: intern_name(&a->workload_ids, ev->dst_workload),
		.reason = tc_drop_why(ev->kind),
		.reason_code = moat_reason_code(ev->reason),
	};
	access_log_deny(a->metrics, &r);
}

static void on_event(void *arg, const struct moat_event *ev)
{
	struct agent *a = arg;
	if (ev->kind == MOAT_EV_CONNECT_DENIED)
		connect_denied(a, ev);
	else
		packet_dropped(a, ev);
}

static void on_events(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct agent *a = container_of(io, struct agent, events_io);
	dataplane_events_consume(a->dp, on_event, a);
}

static void export_stats(struct loop_timer *t)
{
	struct agent *a = container_of(t, struct agent, stats_timer);
	struct moat_stats st;
	if (dataplane_stats(a->dp, &st) == 0) {
		const struct moat_stats *o = &a->bpf_stats_last;
		struct {
			const char *name;
			uint64_t now, before;
		} rows[] = {
			{"moat_bpf_connects_captured_total", st.connects_captured, o->connects_captured},
			{"moat_bpf_connects_denied_total", st.connects_denied, o->connects_denied},
			{"moat_bpf_connects_unregistered_total", st.connects_unregistered,
			 o->connects_unregistered},
			{"moat_bpf_connects_passed_total", st.connects_passed, o->connects_passed},
			{"moat_bpf_verdict_misses_total", st.verdict_misses, o->verdict_misses},
			{"moat_bpf_plaintext_dropped_total", st.plaintext_dropped, o->plaintext_dropped},
			{"moat_bpf_plaintext_redirected_total", st.plaintext_redirected,
			 o->plaintext_redirected},
			{"moat_bpf_events_lost_total", st.events_lost, o->events_lost},
			{"moat_bpf_unknown_dst_dropped_total", st.unknown_dst_dropped,
			 o->unknown_dst_dropped},
			{"moat_bpf_spoofed_dropped_total", st.spoofed_dropped, o->spoofed_dropped},
			{"moat_bpf_plaintext_no_listener_total", st.plaintext_no_listener,
			 o->plaintext_no_listener},
			{"moat_bpf_join_redirected_total", st.join_redirected, o->join_redirected},
			{"moat_bpf_join_unpaired_total", st.join_unpaired, o->join_unpaired},
			{"moat_bpf_service_captured_total", st.service_captured, o->service_captured},
			{"moat_bpf_service_denied_total", st.service_denied, o->service_denied},
		};
		struct metric_labels none = {0};
		for (size_t i = 0; i < ARRAY_SIZE(rows); i++)
			metrics_counter_add(a->metrics, rows[i].name, &none,
					    rows[i].now >= rows[i].before ? rows[i].now - rows[i].before : 0);
		a->bpf_stats_last = st;
	}
	loop_timer_arm(a->loop, &a->stats_timer, STATS_INTERVAL_MS);
}

int agent_events_start(struct agent *a, struct err *e)
{
	int fd = dataplane_events_fd(a->dp);
	if (fd < 0)
		return err_set(e, "BPF events: no ring buffer");
	loop_io_init(&a->events_io);
	if (loop_io_add(a->loop, &a->events_io, fd, EPOLLIN, on_events) < 0)
		return err_set(e, "BPF events: epoll: %s", strerror(errno));
	loop_timer_init(&a->stats_timer, export_stats);
	loop_timer_arm(a->loop, &a->stats_timer, STATS_INTERVAL_MS);
	return 0;
}
