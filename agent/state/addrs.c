/* Address learning: every address on an enrolled pod's interface is either known to moat or
 * dropped at TC (to_pod / from_pod judge by the pod, see docs/bpf.md). The declared address
 * (WorkloadEntry, or the first one at enroll) is the pod's; the others are *learned* here:
 * read from the pod netns at enroll and kept current by a netlink socket subscribed to
 * address changes *inside* that netns, then registered as the same workload (same id,
 * LOCAL) so capture, verdicts, STRICT and 15006 apply to them as to the declared one.
 *
 * A learned address never takes an address from anyone: one that a WorkloadEntry, a
 * ServiceEntry or another pod already has stays theirs (and this pod's packets from it stay
 * dropped as forged). At most MOAT_POD_ADDRS_MAX addresses per pod; beyond that they are
 * logged and stay unregistered (dropped at TC). */
#include <errno.h>
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bpf/dataplane.h"
#include "core/log.h"
#include "core/netns.h"
#include "state/agent.h"

#define LEARNED_MAX (MOAT_POD_ADDRS_MAX - 1) /* the declared address is the 16th */
#define NL_READS_MAX 64                      /* per wake-up; a rescan catches the rest */
/* Changes are applied at most this often per pod: a pod flapping addresses costs one rescan
 * and one map sync per period, not one per message. Until then a new address is unknown,
 * so dropped at TC (fail closed). */
#define ADDR_SETTLE_MS 100

struct pod_addrs {
	struct pod *pod;
	struct moat_addr a[LEARNED_MAX];
	size_t n;
	int nl_fd;
	struct loop_io io;
	struct loop_timer settle;
};

static bool link_local6(const struct moat_addr *a)
{
	return !addr_is_v4(a) && a->bytes[0] == 0xfe && (a->bytes[1] & 0xc0) == 0x80;
}

bool pod_has_learned(const struct pod *p, const struct moat_addr *addr)
{
	return p->learned && addr_list_has(p->learned->a, p->learned->n, addr);
}

size_t pod_learned_addrs(const struct pod *p, const struct moat_addr **out)
{
	*out = p->learned ? p->learned->a : NULL;
	return p->learned ? p->learned->n : 0;
}

/* Whose is addr, if not p's to learn? NULL when nobody else claims it. */
static const char *claimed_by(struct agent *a, const struct pod *p, const struct moat_addr *addr)
{
	for (struct pod *q = a->pods; q; q = q->next)
		if (q != p && (addr_eq(&q->addr, addr) || pod_has_learned(q, addr)))
			return q->key;
	if (mc_workload_by_addr(a->cfg, addr))
		return "a WorkloadEntry";
	if (mc_service_by_addr(a->cfg, addr))
		return "a ServiceEntry";
	return NULL;
}

/* Addresses on the pod interface now (IPv4, and IPv6 but link-local), declared one left out. */
static int scan(struct pod *p, struct moat_addr *out, size_t max, size_t *n, struct err *e)
{
	int saved;
	if (netns_enter(p->netns_fd, &saved, e) < 0)
		return err_wrap(e, "pod %s: read its addresses", p->key);
	struct ifaddrs *ifs = NULL;
	int rc = getifaddrs(&ifs);
	int err = errno;
	netns_leave(saved);
	if (rc < 0)
		return err_set(e, "pod %s: read its addresses: %s", p->key, strerror(err));
	*n = 0;
	for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
		if (!i->ifa_addr || strcmp(i->ifa_name, p->ifname) != 0 ||
		    (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
			continue;
		struct moat_addr x;
		addr_from_sockaddr(i->ifa_addr, &x, NULL);
		if (link_local6(&x) || pod_has_addr(p, &x)) /* declared (dual stack) */
			continue;
		if (*n < max)
			out[*n] = x;
		(*n)++; /* counted beyond max, to say how many were left out */
	}
	freeifaddrs(ifs);
	return 0;
}

/* Keep what may be learned, in scan order, and say why the rest is not. */
static size_t admit(struct agent *a, struct pod *p, const struct moat_addr *found, size_t n_found,
		    size_t n_seen, struct moat_addr *keep)
{
	size_t n = 0;
	char s[ADDR_STRLEN];
	for (size_t i = 0; i < n_found && i < LEARNED_MAX; i++) {
		const char *owner = claimed_by(a, p, &found[i]);
		if (owner) {
			log_warn("pod %s: address %s on %s belongs to %s: not registered for the pod; "
				 "what it sends from it or receives on it is dropped at TC",
				 p->key, addr_str(&found[i], s, sizeof(s)), p->ifname, owner);
			continue;
		}
		keep[n++] = found[i];
	}
	if (n_seen > LEARNED_MAX)
		log_warn("pod %s: %zu addresses on %s, moat registers %d per pod: the other %zu are "
			 "dropped at TC",
			 p->key, n_seen + 1, p->ifname, MOAT_POD_ADDRS_MAX, n_seen - LEARNED_MAX);
	return n;
}

static void listener_for(struct agent *a, struct pod *p, const struct moat_addr *addr, bool add)
{
	if (!add) {
		dataplane_plain_listener_del(a->dp, addr);
		return;
	}
	struct listener *plain = addr_is_v4(addr) ? &p->plain4 : &p->plain6;
	struct err e;
	char s[ADDR_STRLEN];
	if (plain->fd < 0)
		log_warn("pod %s: no %s 15006 listener: PERMISSIVE plaintext to %s is refused", p->key,
			 addr_is_v4(addr) ? "IPv4" : "IPv6", addr_str(addr, s, sizeof(s)));
	else if (dataplane_plain_listener_put(a->dp, addr, plain->fd, &e) < 0)
		log_warn("pod %s: %s: PERMISSIVE plaintext to that address is refused", p->key, e.msg);
}

/* Make the learned set equal keep: 15006 entries follow; true when it changed. */
static bool replace(struct agent *a, struct pod *p, const struct moat_addr *keep, size_t n)
{
	struct pod_addrs *pa = p->learned;
	bool changed = n != pa->n;
	char s[ADDR_STRLEN];
	for (size_t i = 0; i < pa->n; i++)
		if (!addr_list_has(keep, n, &pa->a[i])) {
			changed = true;
			listener_for(a, p, &pa->a[i], false);
			log_info("pod %s: address %s left %s: unregistered", p->key,
				 addr_str(&pa->a[i], s, sizeof(s)), p->ifname);
		}
	for (size_t i = 0; i < n; i++)
		if (!addr_list_has(pa->a, pa->n, &keep[i])) {
			changed = true;
			listener_for(a, p, &keep[i], true);
			log_info("pod %s: learned address %s on %s: registered as the pod", p->key,
				 addr_str(&keep[i], s, sizeof(s)), p->ifname);
		}
	memcpy(pa->a, keep, n * sizeof(*keep));
	pa->n = n;
	return changed;
}

/* Read the interface again and apply; true when the learned set changed. */
static bool refresh(struct agent *a, struct pod *p)
{
	struct moat_addr found[LEARNED_MAX], keep[LEARNED_MAX];
	size_t n_seen = 0;
	struct err e;
	if (scan(p, found, LEARNED_MAX, &n_seen, &e) < 0) {
		log_warn("%s: learned addresses kept as they were", e.msg);
		return false;
	}
	size_t n_found = n_seen < LEARNED_MAX ? n_seen : LEARNED_MAX;
	size_t n = admit(a, p, found, n_found, n_seen, keep);
	return replace(a, p, keep, n);
}

static void on_settled(struct loop_timer *t)
{
	struct pod_addrs *pa = container_of(t, struct pod_addrs, settle);
	struct pod *p = pa->pod;
	if (refresh(p->agent, p))
		agent_sync_dataplane(p->agent);
}

static void on_addr_change(struct loop_io *io, uint32_t events)
{
	(void)events;
	struct pod_addrs *pa = container_of(io, struct pod_addrs, io);
	struct agent *a = pa->pod->agent;
	char buf[8192];
	/* What changed is read from the interface itself: a lost message (ENOBUFS) or one for
	 * another interface costs one rescan, never a wrong map. */
	for (int i = 0; i < NL_READS_MAX; i++)
		if (recv(pa->nl_fd, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno != ENOBUFS)
			break;
	if (!loop_timer_armed(&pa->settle))
		loop_timer_arm(a->loop, &pa->settle, ADDR_SETTLE_MS);
}

/* A netlink socket in the pod netns, told about every IPv4/IPv6 address change there. */
static int subscribe(struct pod *p, struct err *e)
{
	int fd = netns_socket(p->netns_fd, AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK, NETLINK_ROUTE, e);
	if (fd < 0)
		return err_wrap(e, "pod %s: watch its addresses", p->key);
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK,
				 .nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR};
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = errno;
		close(fd);
		return err_set(e, "pod %s: watch its addresses: netlink bind: %s", p->key,
			       strerror(err));
	}
	return fd;
}

int pod_addrs_start(struct agent *a, struct pod *p, struct err *e)
{
	struct pod_addrs *pa = xcalloc(1, sizeof(*pa));
	pa->pod = p;
	pa->nl_fd = -1;
	loop_io_init(&pa->io);
	loop_timer_init(&pa->settle, on_settled);
	p->learned = pa;
	/* Subscribe first: a change between the scan and the subscription is not lost. */
	pa->nl_fd = subscribe(p, e);
	if (pa->nl_fd < 0)
		return -1;
	if (loop_io_add(a->loop, &pa->io, pa->nl_fd, EPOLLIN, on_addr_change) < 0)
		return err_set(e, "pod %s: watch its addresses: epoll: %s", p->key, strerror(errno));
	refresh(a, p);
	return 0;
}

void pod_addrs_stop(struct agent *a, struct pod *p)
{
	struct pod_addrs *pa = p->learned;
	if (!pa)
		return;
	if (pa->io.fd >= 0)
		loop_io_del(a->loop, &pa->io);
	loop_timer_cancel(a->loop, &pa->settle);
	if (pa->nl_fd >= 0)
		close(pa->nl_fd);
	for (size_t i = 0; i < pa->n; i++)
		dataplane_plain_listener_del(a->dp, &pa->a[i]);
	free(pa);
	p->learned = NULL;
}
