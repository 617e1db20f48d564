/* Enrollment: a pod hands its netns and cgroup to the agent (as istio-cni does for
 * ztunnel). The agent opens its listeners inside the pod, mints the pod's identity, then
 * attaches capture, so that by the time connects are rewritten something listens. */
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpf/dataplane.h"
#include "core/log.h"
#include "core/netns.h"
#include "identity/identity.h"
#include "state/agent.h"
#include "state/proxy_ops.h"
#include "state/tproxy.h"

#define DATAPLANE_MODE_LABEL "istio.io/dataplane-mode"

static bool dns_label(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i && i + 1 < n);
		if (!ok)
			return false;
	}
	return true;
}

/* The pod's address as its netns has it: the first global address of ifname (IPv4 first). */
static int read_pod_addr(int netns_fd, const char *ifname, struct moat_addr *out, struct err *e)
{
	int saved;
	if (netns_enter(netns_fd, &saved, e) < 0)
		return -1;
	struct ifaddrs *ifs = NULL;
	int rc = getifaddrs(&ifs);
	int err = errno;
	netns_leave(saved);
	if (rc < 0)
		return err_set(e, "read addresses of the pod netns: %s", strerror(err));
	bool found = false;
	for (int want = AF_INET; want && !found; want = want == AF_INET ? AF_INET6 : 0) {
		for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
			if (!i->ifa_addr || i->ifa_addr->sa_family != want || strcmp(i->ifa_name, ifname))
				continue;
			addr_from_sockaddr(i->ifa_addr, out, NULL);
			if (want == AF_INET6 && (out->bytes[0] == 0xfe && (out->bytes[1] & 0xc0) == 0x80))
				continue; /* link-local */
			found = true;
		}
	}
	freeifaddrs(ifs);
	if (!found)
		return err_set(e, "interface %s of the pod netns has no address", ifname);
	return 0;
}

static bool netns_has_addr(int netns_fd, const struct moat_addr *want)
{
	struct err e;
	int saved;
	if (netns_enter(netns_fd, &saved, &e) < 0)
		return false;
	struct ifaddrs *ifs = NULL;
	int rc = getifaddrs(&ifs);
	netns_leave(saved);
	if (rc < 0)
		return false;
	bool found = false;
	for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
		if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
			continue;
		struct moat_addr a;
		addr_from_sockaddr(i->ifa_addr, &a, NULL);
		found = addr_eq(&a, want);
	}
	freeifaddrs(ifs);
	return found;
}

static void labels_copy(struct mc_labels *dst, const struct mc_labels *src)
{
	for (size_t i = 0; i < src->n; i++) {
		struct mc_label *l = VEC_PUSH(dst->items, dst->n, dst->cap);
		l->key = xstrdup(src->items[i].key);
		l->value = xstrdup(src->items[i].value);
	}
}

static void labels_free(struct mc_labels *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->items[i].key);
		free(l->items[i].value);
	}
	free(l->items);
	memset(l, 0, sizeof(*l));
}

static void pod_free(struct agent *a, struct pod *p)
{
	/* Its ids are quarantined, not reused, until syncs removed them from every map
	 * (intern_collect). */
	intern_release(&a->workload_ids, p->workload_id, now_ms());
	intern_release(&a->identity_ids, p->identity_id, now_ms());
	pod_addrs_stop(a, p);
	proxy_pod_unlisten(a, p);
	if (p->netns_fd >= 0)
		close(p->netns_fd);
	if (p->cgroup_fd >= 0)
		close(p->cgroup_fd);
	labels_free(&p->synth.labels);
	labels_free(&p->synth.meta.labels);
	free(p->synth.meta.name);
	free(p->synth.meta.ns);
	free(p->synth.service_account);
	free(p->synth.spiffe_id);
	free(p->ns);
	free(p->name);
	free(p->key);
	free(p->fs_key);
	free(p->spiffe_id);
	free(p->principal);
	free(p->cgroup_path);
	free(p);
}

static void pod_plain_listeners_del(struct agent *a, struct pod *p)
{
	for (size_t i = 0; i < p->n_addrs; i++)
		dataplane_plain_listener_del(a->dp, &p->addrs[i]);
}

/* PERMISSIVE plaintext to each of the pod's addresses is steered (sk_lookup) to the 15006
 * listener of that address's family. */
static int pod_plain_listeners_put(struct agent *a, struct pod *p, struct err *e)
{
	for (size_t i = 0; i < p->n_addrs; i++) {
		struct listener *plain = addr_is_v4(&p->addrs[i]) ? &p->plain4 : &p->plain6;
		if (plain->fd >= 0 &&
		    dataplane_plain_listener_put(a->dp, &p->addrs[i], plain->fd, e) < 0) {
			pod_plain_listeners_del(a, p);
			return -1;
		}
	}
	return 0;
}

/* The pod's facts as they were at enrollment (its WorkloadEntry's, else the request's):
 * what the agent falls back to if the entry later leaves the configuration. */
static void pod_synth(struct agent *a, struct pod *p, const struct enroll_req *r,
		      const struct mc_workload *we)
{
	struct mc_workload *w = &p->synth;
	w->meta.name = xstrdup(r->name);
	w->meta.ns = xstrdup(r->ns);
	w->address = p->addr;
	memcpy(w->addrs, p->addrs, sizeof(w->addrs));
	w->n_addrs = p->n_addrs;
	w->service_account = xstrdup(we ? we->service_account : r->sa ? r->sa : "default");
	labels_copy(&w->labels, we ? &we->labels : &r->labels);
	if (we)
		labels_copy(&w->meta.labels, &we->meta.labels);
	w->ambient = true;
	w->spiffe_id = mc_spiffe_id(a->cfg, r->ns, w->service_account);
}

/* Every address the WorkloadEntry gives the pod (spec.address and moat.dev/addresses) must
 * be on the pod's netns: the agent serves and captures exactly those. */
static int pod_addrs_from_entry(struct pod *p, const struct enroll_req *r,
				const struct mc_workload *we, struct err *e)
{
	for (size_t i = 0; i < we->n_addrs; i++) {
		if (netns_has_addr(p->netns_fd, &we->addrs[i]))
			continue;
		char s[ADDR_STRLEN];
		return err_set(e, "pod %s/%s: its WorkloadEntry (%s:%d) says address %s, which "
				  "the pod's network namespace does not have",
			       r->ns, r->name, we->meta.file, we->meta.line,
			       addr_str(&we->addrs[i], s, sizeof(s)));
	}
	memcpy(p->addrs, we->addrs, sizeof(p->addrs));
	p->n_addrs = we->n_addrs;
	p->addr = we->address;
	return 0;
}

static int pod_identify(struct agent *a, struct pod *p, const struct enroll_req *r, struct err *e)
{
	const struct mc_workload *we = mc_workload_by_name(a->cfg, r->ns, r->name);
	if (!we && !r->sa)
		return err_set(e, "pod %s/%s has no WorkloadEntry in the configuration: give "
				  "--service-account (and --label k=v) to enroll it anyway",
			       r->ns, r->name);
	if (we && r->sa && strcmp(we->service_account, r->sa) != 0)
		log_warn("pod %s/%s: --service-account %s ignored: its WorkloadEntry (%s:%d) says %s",
			 r->ns, r->name, r->sa, we->meta.file, we->meta.line, we->service_account);
	if (we) {
		if (pod_addrs_from_entry(p, r, we, e) < 0)
			return -1;
	} else if (read_pod_addr(p->netns_fd, p->ifname, &p->addr, e) < 0) {
		return err_wrap(e, "pod %s/%s", r->ns, r->name);
	} else {
		p->addrs[0] = p->addr;
		p->n_addrs = 1;
	}
	pod_synth(a, p, r, we);
	p->entry = we;
	p->spiffe_id = xstrdup(p->synth.spiffe_id);
	p->principal = xstrdup(p->spiffe_id + strlen("spiffe://"));
	return 0;
}

/* "a,b": every address of the pod, for logs. */
static const char *pod_addrs_str(const struct pod *p, char *buf, size_t len)
{
	size_t off = 0;
	buf[0] = 0;
	for (size_t i = 0; i < p->n_addrs && off < len; i++) {
		char s[ADDR_STRLEN];
		int n = snprintf(buf + off, len - off, "%s%s", i ? "," : "",
				 addr_str(&p->addrs[i], s, sizeof(s)));
		off += n > 0 ? (size_t)n : 0;
	}
	return buf;
}

/* istio.io/dataplane-mode as Istio reads it for a pod: the workload's labels (its
 * WorkloadEntry's, else the enroll request's), else its Namespace's. */
static const char *dataplane_mode(const struct agent *a, const struct enroll_req *r,
				  const struct mc_workload *we)
{
	const char *mode = we ? mc_label_get(&we->labels, DATAPLANE_MODE_LABEL)
			      : mc_label_get(&r->labels, DATAPLANE_MODE_LABEL);
	if (!mode && we)
		mode = mc_label_get(&we->meta.labels, DATAPLANE_MODE_LABEL);
	if (!mode) {
		const struct mc_namespace *ns = mc_namespace_by_name(a->cfg, r->ns);
		mode = ns ? mc_label_get(&ns->meta.labels, DATAPLANE_MODE_LABEL) : NULL;
	}
	return mode;
}

/* Requests refused before anything changes: the node's own netns (capturing it would capture
 * the node, moatd included), a netns that is already another pod's, and pods that opted out
 * of the mesh (istio.io/dataplane-mode: none, as istio-cni skips them). */
static int enroll_refusal(struct agent *a, const struct enroll_req *r, uint64_t cookie,
			  struct err *e)
{
	uint64_t own = 0;
	int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	bool known = self >= 0 && netns_cookie_of(self, &own, e) == 0;
	if (self >= 0)
		close(self);
	if (!known)
		return err_wrap(e, "enroll %s/%s: cannot tell the node's own network namespace",
				r->ns, r->name);
	if (cookie == own)
		return err_set(e, "enroll %s/%s: refused: that is the node's own network namespace "
				  "(moatd's), not a pod's", r->ns, r->name);
	for (struct pod *p = a->pods; p; p = p->next)
		if (p->netns_cookie == cookie && !(strcmp(p->ns, r->ns) == 0 &&
						   strcmp(p->name, r->name) == 0))
			return err_set(e, "enroll %s/%s: refused: that network namespace is pod %s's",
				       r->ns, r->name, p->key);
	const struct mc_workload *we = mc_workload_by_name(a->cfg, r->ns, r->name);
	const char *mode = dataplane_mode(a, r, we);
	if (mode && strcmp(mode, "none") == 0) {
		if (we)
			return err_set(e, "enroll %s/%s: refused: its WorkloadEntry (%s:%d) opts out "
					  "of the mesh (%s: none)", r->ns, r->name, we->meta.file,
				       we->meta.line, DATAPLANE_MODE_LABEL);
		return err_set(e, "enroll %s/%s: refused: it opts out of the mesh (%s: none)",
			       r->ns, r->name, DATAPLANE_MODE_LABEL);
	}
	return 0;
}

static struct pod *pod_new(struct agent *a, const struct enroll_req *r, uint64_t cookie)
{
	struct pod *p = xcalloc(1, sizeof(*p));
	p->agent = a;
	p->ns = xstrdup(r->ns);
	p->name = xstrdup(r->name);
	p->key = xasprintf("%s/%s", r->ns, r->name);
	p->fs_key = xasprintf("%s_%s", r->ns, r->name);
	p->cgroup_path = xstrdup(r->cgroup_path);
	p->netns_cookie = cookie;
	p->netns_fd = -1;
	p->cgroup_fd = -1;
	tproxy_was_unknown(&p->tproxy_was);
	snprintf(p->ifname, sizeof(p->ifname), "%s", r->ifname ? r->ifname : "eth0");
	struct listener *ls[] = {&p->out4, &p->out6, &p->hbone4, &p->hbone6, &p->plain4, &p->plain6};
	for (size_t i = 0; i < ARRAY_SIZE(ls); i++)
		ls[i]->fd = -1;
	return p;
}

/* Everything that can fail without touching shared state (maps, pins, the pod list): its
 * cgroup, its facts, its identity, its listeners inside its own netns. On failure nothing
 * else changed, so a running pod of the same name keeps working. */
static int pod_prepare(struct agent *a, struct pod *p, struct enroll_req *r, struct err *e)
{
	p->cgroup_fd = open(r->cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p->cgroup_fd < 0)
		return err_set(e, "enroll %s: open cgroup %s: %s", p->key, r->cgroup_path,
			       strerror(errno));
	p->netns_fd = r->netns_fd;
	r->netns_fd = -1;
	if (pod_identify(a, p, r, e) < 0)
		return -1;
	p->workload_id = intern_hold(&a->workload_ids, p->key);
	p->identity_id = intern_hold(&a->identity_ids, p->spiffe_id);
	if (identity_acquire(a->ids, p->spiffe_id, e) < 0)
		return err_wrap(e, "enroll %s: identity %s", p->key, p->spiffe_id);
	if (proxy_pod_listen(a, p, e) < 0) {
		identity_release(a->ids, p->spiffe_id);
		return -1;
	}
	return 0;
}

/* Policy routing, plaintext steering and capture: the steps that change the node. */
static int pod_commit(struct agent *a, struct pod *p, struct enroll_req *r, struct err *e)
{
	p->transparent_ok = a->opts.transparent &&
			    tproxy_setup(p->netns_fd, r->tproxy_was, &p->tproxy_was, e) == 0;
	if (a->opts.transparent && !p->transparent_ok) {
		log_warn("pod %s: client source addresses will not be preserved: %s", p->key, e->msg);
		tproxy_teardown(p->netns_fd, &p->tproxy_was); /* what the setup did so far */
	}
	if (pod_plain_listeners_put(a, p, e) < 0)
		goto fail;
	if (pod_addrs_start(a, p, e) < 0) {
		pod_plain_listeners_del(a, p);
		goto fail;
	}
	agent_put_pod_addrs(a, p); /* known before the pod's TC programs judge by them */
	if (dataplane_attach_pod(a->dp, p->fs_key, p->cgroup_fd, p->netns_fd, p->ifname,
				 p->workload_id, e) < 0) {
		pod_plain_listeners_del(a, p);
		err_wrap(e, "enroll %s", p->key);
		goto fail;
	}
	return 0;
fail:
	if (p->transparent_ok)
		tproxy_teardown(p->netns_fd, &p->tproxy_was);
	identity_release(a->ids, p->spiffe_id);
	return -1;
}

int agent_enroll(struct agent *a, struct enroll_req *r, struct err *e)
{
	if (!dns_label(r->ns) || !dns_label(r->name))
		return err_set(e, "namespace \"%s\" / name \"%s\": must be DNS labels (a-z, 0-9, -)",
			       r->ns, r->name);
	if (r->sa && !dns_label(r->sa))
		return err_set(e, "service account \"%s\": must be a DNS label", r->sa);
	uint64_t cookie;
	if (netns_cookie_of(r->netns_fd, &cookie, e) < 0)
		return err_wrap(e, "enroll %s/%s", r->ns, r->name);
	struct pod *old = agent_pod_by_name(a, r->ns, r->name);
	if (old && old->netns_cookie == cookie) {
		close(r->netns_fd);
		r->netns_fd = -1;
		log_info("pod %s already enrolled with this network namespace", old->key);
		return 0;
	}
	if (enroll_refusal(a, r, cookie, e) < 0)
		return -1;
	struct pod *p = pod_new(a, r, cookie);
	if (pod_prepare(a, p, r, e) < 0) {
		if (old)
			err_wrap(e, "enroll refused, %s keeps running as it was", old->key);
		pod_free(a, p);
		return -1;
	}
	if (old) {
		log_info("pod %s enrolled again with a new network namespace: replacing", old->key);
		agent_unenroll(a, r->ns, r->name, NULL);
	}
	if (pod_commit(a, p, r, e) < 0) {
		pod_free(a, p);
		agent_sync_dataplane(a);
		return -1;
	}
	p->next = a->pods;
	a->pods = p;
	struct err re = {{0}};
	if (pod_record_save(a, p, r, &re) < 0)
		log_warn("pod %s: enrollment not recorded (%s): after an agent restart it must be "
			 "enrolled again", p->key, re.msg);
	char s[MC_WL_MAX_ADDRS * (ADDR_STRLEN + 1)];
	log_info("enrolled pod %s: address %s, identity %s, interface %s%s", p->key,
		 pod_addrs_str(p, s, sizeof(s)), p->spiffe_id, p->ifname,
		 p->entry ? "" : " (no WorkloadEntry: facts from the enroll request)");
	agent_sync_dataplane(a);
	return 0;
}

int agent_unenroll(struct agent *a, const char *ns, const char *name, struct err *e)
{
	struct pod **pp = &a->pods;
	while (*pp && !(strcmp((*pp)->ns, ns) == 0 && strcmp((*pp)->name, name) == 0))
		pp = &(*pp)->next;
	if (!*pp) /* perhaps left captured by a previous agent that this one could not take back */
		return agent_forget_pod(a, ns, name, e);
	struct pod *p = *pp;
	*pp = p->next;
	pod_record_delete(a, p->fs_key);
	/* Capture off first (the pod is leaving the mesh), then its connections and our
	 * listeners go. */
	dataplane_detach_pod(a->dp, p->fs_key, p->netns_fd, p->ifname);
	dataplane_pod_del(a->dp, p->netns_cookie);
	pod_plain_listeners_del(a, p);
	tproxy_teardown(p->netns_fd, &p->tproxy_was);
	proxy_pod_drop(a, p);
	identity_release(a->ids, p->spiffe_id);
	log_info("unenrolled pod %s", p->key);
	pod_free(a, p);
	agent_sync_dataplane(a);
	return 0;
}

void agent_unenroll_all(struct agent *a)
{
	while (a->pods)
		agent_unenroll(a, a->pods->ns, a->pods->name, NULL);
}

void agent_release_pods(struct agent *a)
{
	while (a->pods) {
		struct pod *p = a->pods;
		a->pods = p->next;
		proxy_pod_drop(a, p);
		identity_release(a->ids, p->spiffe_id);
		pod_free(a, p);
	}
}
