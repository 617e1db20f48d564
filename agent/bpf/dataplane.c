/* Load the BPF object, pin it, attach it per pod, and take it all down again. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpf/internal.h"
#include "core/log.h"
#include "core/netns.h"
#include "core/util.h"
#include "moat.skel.h"

const char *dataplane_pin_dir(const struct dataplane *dp)
{
	return dp->pin_dir;
}

/* ---------------- open / close ---------------- */

static int pin_objects(struct dataplane *dp, struct err *e)
{
	struct bpf_map *map;
	bpf_object__for_each_map(map, dp->skel->obj)
	{
		if (bpf_map__is_internal(map))
			continue; /* .rodata/.bss if globals are ever added: not ABI */
		char *path = xasprintf("%s/%s", dp->pin_dir, bpf_map__name(map));
		int rc = bpf_map__pin(map, path);
		free(path);
		if (rc < 0)
			return err_set(e, "pin map %s under %s: %s", bpf_map__name(map), dp->pin_dir,
				       strerror(-rc));
	}
	char *progs = xasprintf("%s/progs", dp->pin_dir);
	int rc = mkdir(progs, 0700) < 0 && errno != EEXIST
			 ? err_set(e, "mkdir %s: %s", progs, strerror(errno))
			 : 0;
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, dp->skel->obj)
	{
		if (rc < 0)
			break;
		char *path = xasprintf("%s/%s", progs, bpf_program__name(prog));
		int prc = bpf_program__pin(prog, path);
		if (prc < 0)
			rc = err_set(e, "pin program %s at %s: %s", bpf_program__name(prog), path,
				     strerror(-prc));
		free(path);
	}
	free(progs);
	if (rc < 0)
		return rc;
	char *links = xasprintf("%s/links", dp->pin_dir);
	if (mkdir(links, 0700) < 0 && errno != EEXIST)
		rc = err_set(e, "mkdir %s: %s", links, strerror(errno));
	free(links);
	return rc;
}

static int ring_event(void *ctx, void *data, size_t size)
{
	struct dataplane *dp = ctx;
	if (size < sizeof(struct moat_event) || !dp->ev_cb)
		return 0;
	struct moat_event ev; /* copy: ring buffer records are only 8-byte aligned */
	memcpy(&ev, data, sizeof(ev));
	dp->ev_cb(dp->ev_arg, &ev);
	return 0;
}

static int load_skeleton(struct dataplane *dp, struct err *e)
{
	dp->skel = moat_bpf__open();
	if (!dp->skel)
		return err_set(e, "open BPF object moat: %s", strerror(errno));
	int rc = moat_bpf__load(dp->skel);
	if (rc < 0)
		return err_set(e,
			       "load BPF object moat: %s (the verifier log above says which "
			       "program; the kernel needs Linux 6.1+ with BTF)",
			       strerror(-rc));
	return 0;
}

struct dataplane *dataplane_open(const char *pin_dir, struct err *e)
{
	if (!pin_dir || pin_dir[0] != '/')
		return err_set(e, "BPF pin dir must be an absolute path, got \"%s\"",
			       pin_dir ? pin_dir : "(null)"),
		       NULL;
	if (dp_ensure_bpffs(pin_dir, e) < 0)
		return NULL;
	if (mkdir_p(pin_dir, 0700) < 0) {
		err_set(e, "mkdir %s: %s", pin_dir, strerror(errno));
		return NULL;
	}
	/* A previous moatd's maps and programs go; its pinned links stay: they keep its programs
	 * attached to the pods (captured connects are refused while nobody listens, STRICT drops
	 * stay), so the pods fail closed until the agent re-enrolls them and each pod's links are
	 * replaced by ours (dataplane_attach_pod). */
	if (dp_clear_pins_keep(pin_dir, "links", e) < 0)
		return NULL;

	struct dataplane *dp = xcalloc(1, sizeof(*dp));
	dp->pin_dir = xstrdup(pin_dir);
	dp->ncpus = libbpf_num_possible_cpus();
	if (dp->ncpus <= 0) {
		err_set(e, "count possible CPUs: %s", strerror(-dp->ncpus));
		goto fail;
	}
	if (load_skeleton(dp, e) < 0 || pin_objects(dp, e) < 0 || dataplane_join_attach(dp, e) < 0)
		goto fail;
	struct moat_settings s = {.epoch = 1, .outbound_policy = MOAT_OUTBOUND_ALLOW_ANY};
	if (dataplane_settings_set(dp, &s, e) < 0)
		goto fail;
	dp->rb = ring_buffer__new(bpf_map__fd(dp->skel->maps.events), ring_event, dp, NULL);
	if (!dp->rb) {
		err_set(e, "ring buffer on map events: %s", strerror(errno));
		goto fail;
	}
	return dp;
fail:
	dataplane_close(dp);
	return NULL;
}

/* ---------------- per pod ---------------- */

static bool pod_key_ok(const char *key)
{
	size_t n = strlen(key);
	if (n == 0 || n > 200 || strcmp(key, ".") == 0 || strcmp(key, "..") == 0)
		return false;
	return strchr(key, '/') == NULL;
}

static struct dp_pod *pod_find(struct dataplane *dp, const char *key)
{
	for (size_t i = 0; i < dp->n_pods; i++)
		if (strcmp(dp->pods[i].key, key) == 0)
			return &dp->pods[i];
	return NULL;
}

static const char *link_name(enum dp_link_slot slot)
{
	static const char *names[DP_LINK_COUNT] = {"capture4", "capture6", "sock_ops",
						   "plain_lookup"};
	return names[slot];
}

static char *pod_link_dir(const struct dataplane *dp, const char *key)
{
	return xasprintf("%s/links/%s", dp->pin_dir, key);
}

static struct bpf_program *link_prog(struct dataplane *dp, enum dp_link_slot slot)
{
	switch (slot) {
	case DP_LINK_CAPTURE4:
		return dp->skel->progs.capture4;
	case DP_LINK_CAPTURE6:
		return dp->skel->progs.capture6;
	case DP_LINK_SOCK_OPS:
		return dp->skel->progs.sock_ops;
	default:
		return dp->skel->progs.plain_lookup;
	}
}

/* Attach and pin one link. */
static int attach_link(struct dataplane *dp, struct dp_pod *pod, enum dp_link_slot slot,
		       int cgroup_fd, struct err *e)
{
	struct bpf_program *prog = link_prog(dp, slot);
	struct bpf_link *link = slot == DP_LINK_PLAIN_LOOKUP
					? bpf_program__attach_netns(prog, pod->netns_fd)
					: bpf_program__attach_cgroup(prog, cgroup_fd);
	if (!link)
		return err_set(e, "attach %s to pod %s %s: %s", link_name(slot), pod->key,
			       slot == DP_LINK_PLAIN_LOOKUP ? "netns" : "cgroup", strerror(errno));
	pod->links[slot] = link;
	char *dir = pod_link_dir(dp, pod->key);
	char *path = xasprintf("%s/%s", dir, link_name(slot));
	int rc = bpf_link__pin(link, path);
	if (rc < 0)
		err_set(e, "pin %s link of pod %s at %s: %s", link_name(slot), pod->key, path,
			strerror(-rc));
	free(path);
	free(dir);
	return rc < 0 ? -1 : 0;
}

static void tc_hook_init(struct bpf_tc_hook *hook, const struct dp_tc *tc)
{
	memset(hook, 0, sizeof(*hook));
	hook->sz = sizeof(*hook);
	hook->ifindex = tc->ifindex;
	hook->attach_point = (enum bpf_tc_attach_point)tc->attach_point;
}

static const char *tc_dir(const struct dp_tc *tc)
{
	return tc->attach_point == BPF_TC_EGRESS ? "egress" : "ingress";
}

/* One TC filter (prog) on tc->ifname (found by name when ifindex is 0), in the current netns. */
static int tc_attach_here(const char *pod_key, struct dp_tc *tc, struct bpf_program *prog,
			  struct err *e)
{
	if (tc->ifindex == 0)
		tc->ifindex = (int)if_nametoindex(tc->ifname);
	if (tc->ifindex == 0)
		return err_set(e, "TC %s of pod %s: interface %s: %s", tc_dir(tc), pod_key,
			       tc->ifname, strerror(errno));
	struct bpf_tc_hook hook;
	tc_hook_init(&hook, tc);
	int rc = tc->qdisc_shared ? -EEXIST : bpf_tc_hook_create(&hook);
	if (rc < 0 && rc != -EEXIST)
		return err_set(e, "TC %s of pod %s: add clsact qdisc on %s: %s", tc_dir(tc), pod_key,
			       tc->ifname, strerror(-rc));
	tc->qdisc_created = rc == 0;
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = DP_TC_HANDLE, .priority = DP_TC_PRIORITY,
		    .prog_fd = bpf_program__fd(prog), .flags = BPF_TC_F_REPLACE);
	rc = bpf_tc_attach(&hook, &opts);
	if (rc < 0)
		return err_set(e, "TC %s of pod %s: attach %s on %s: %s", tc_dir(tc), pod_key,
			       bpf_program__name(prog), tc->ifname, strerror(-rc));
	tc->attached = true;
	return 0;
}

static bool tc_gone(int rc)
{
	return rc == -ENOENT || rc == -ENODEV || rc == -EINVAL;
}

/* Remove our filter (and the clsact qdisc when we created it), in the current netns. */
static void tc_detach_here(const char *pod_key, struct dp_tc *tc)
{
	struct bpf_tc_hook hook;
	tc_hook_init(&hook, tc);
	if (tc->attached) {
		LIBBPF_OPTS(bpf_tc_opts, opts, .handle = DP_TC_HANDLE,
			    .priority = DP_TC_PRIORITY);
		int rc = bpf_tc_detach(&hook, &opts);
		if (rc < 0 && !tc_gone(rc))
			log_warn("detach TC %s of pod %s on %s: %s", tc_dir(tc), pod_key,
				 tc->ifname, strerror(-rc));
		tc->attached = false;
	}
	if (tc->qdisc_created) {
		hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS; /* = the clsact qdisc */
		int rc = bpf_tc_hook_destroy(&hook);
		if (rc < 0 && !tc_gone(rc))
			log_warn("remove clsact qdisc of pod %s on %s: %s", pod_key, tc->ifname,
				 strerror(-rc));
		tc->qdisc_created = false;
	}
}

static struct bpf_program *tc_prog(struct dataplane *dp, enum dp_tc_slot slot)
{
	switch (slot) {
	case DP_TC_LO:
		return dp->skel->progs.lo_ingress;
	case DP_TC_HOST_TO:
		return dp->skel->progs.to_pod;
	case DP_TC_HOST_FROM:
		return dp->skel->progs.from_pod;
	default:
		return dp->skel->progs.ingress;
	}
}

static bool tc_slot_host(int slot)
{
	return slot == DP_TC_HOST_TO || slot == DP_TC_HOST_FROM;
}

/* Which slots a pod uses, on which interfaces: host side when there is one. */
static void tc_plan(struct dp_pod *pod, const char *ifname, const struct dp_host_peer *peer)
{
	for (int i = 0; i < DP_TC_COUNT; i++) {
		struct dp_tc *tc = &pod->tc[i];
		memset(tc, 0, sizeof(*tc));
		tc->attach_point = i == DP_TC_HOST_TO ? BPF_TC_EGRESS : BPF_TC_INGRESS;
		if (tc_slot_host(i)) {
			tc->wanted = peer != NULL;
			if (peer) {
				snprintf(tc->ifname, IF_NAMESIZE, "%s", peer->ifname);
				tc->ifindex = peer->ifindex;
				tc->qdisc_shared = i == DP_TC_HOST_FROM; /* HOST_TO makes it */
			}
		} else {
			tc->wanted = i == DP_TC_LO || peer == NULL;
			snprintf(tc->ifname, IF_NAMESIZE, "%s", i == DP_TC_LO ? "lo" : ifname);
		}
	}
}

/* An in-pod filter an earlier moatd left on the pod interface (before the host end was used)
 * would go on enforcing with that moatd's maps, never updated again: remove it by its fixed
 * identity. In the pod netns. */
static void tc_remove_leftover(const char *pod_key, const struct dp_tc *tc)
{
	struct dp_tc old = *tc;
	old.ifindex = (int)if_nametoindex(old.ifname);
	old.attached = old.ifindex > 0;
	old.qdisc_created = false;
	if (!old.attached)
		return;
	/* usually there is none: libbpf's "no such qdisc" would only be noise in the log */
	libbpf_print_fn_t print = libbpf_set_print(NULL);
	tc_detach_here(pod_key, &old);
	libbpf_set_print(print);
}

/* Attach (or detach) the slots that live in one netns (pod's or host's). */
static int tc_slots(struct dataplane *dp, struct dp_pod *pod, int netns_fd, bool host,
		    bool attach, struct err *e)
{
	int saved = -1;
	if (netns_fd >= 0 && netns_enter(netns_fd, &saved, e) < 0)
		return err_wrap(e, "TC of pod %s", pod->key);
	int rc = 0;
	/* Detach in reverse: the slot that created an interface's clsact qdisc (the first one
	 * on it) removes it last. */
	for (int n = 0; n < DP_TC_COUNT; n++) {
		int i = attach ? n : DP_TC_COUNT - 1 - n;
		struct dp_tc *tc = &pod->tc[i];
		if (attach && i == DP_TC_POD_IF && pod->host_side)
			tc_remove_leftover(pod->key, tc);
		if (tc_slot_host(i) != host || !tc->wanted)
			continue;
		if (!attach) {
			if (tc->ifindex == 0) /* a pod attached by a previous agent */
				tc->ifindex = (int)if_nametoindex(tc->ifname);
			if (tc->ifindex > 0)
				tc_detach_here(pod->key, tc);
		} else if (rc == 0) {
			rc = tc_attach_here(pod->key, tc, tc_prog(dp, (enum dp_tc_slot)i), e);
		}
	}
	netns_leave(saved);
	return rc;
}

static void tc_detach(struct dataplane *dp, struct dp_pod *pod)
{
	struct err e;
	if (pod->netns_fd >= 0 && tc_slots(dp, pod, pod->netns_fd, false, false, &e) < 0)
		log_warn("detach TC of pod %s: %s", pod->key, e.msg);
	if (pod->host_side && tc_slots(dp, pod, pod->host_netns_fd, true, false, &e) < 0)
		log_warn("detach TC of pod %s: %s", pod->key, e.msg);
}

static int tc_attach(struct dataplane *dp, struct dp_pod *pod, struct err *e)
{
	int rc = tc_slots(dp, pod, -1, true, true, e);
	if (rc == 0)
		rc = tc_slots(dp, pod, pod->netns_fd, false, true, e);
	if (rc < 0)
		tc_detach(dp, pod); /* incl. a qdisc we created */
	return rc;
}

static int pod_if_put(struct dataplane *dp, struct dp_pod *pod, uint32_t workload, struct err *e)
{
	struct moat_pod_if_key k = {.ifindex = (__u32)pod->tc[DP_TC_HOST_TO].ifindex};
	struct moat_pod_if v = {.workload = workload};
	snprintf(v.name, sizeof(v.name), "%s", pod->key);
	int rc = bpf_map__update_elem(dp->skel->maps.pod_ifs, &k, sizeof(k), &v, sizeof(v), BPF_ANY);
	if (rc < 0)
		return err_set(e, "pod %s: update map pod_ifs (host interface %s): %s", pod->key,
			       pod->tc[DP_TC_HOST_TO].ifname, strerror(-rc));
	return 0;
}

static void pod_if_del(struct dataplane *dp, struct dp_pod *pod)
{
	struct moat_pod_if_key k = {.ifindex = (__u32)pod->tc[DP_TC_HOST_TO].ifindex};
	bpf_map__delete_elem(dp->skel->maps.pod_ifs, &k, sizeof(k), 0);
}

/* Decide where the pod's enforcement goes, and say so when it cannot be out of its reach. */
static void pod_locate(struct dp_pod *pod, const char *ifname, bool announce)
{
	struct dp_host_peer peer;
	struct err e;
	pod->host_side = dp_find_host_peer(pod->netns_fd, ifname, &peer, &e) == 0;
	if (pod->host_side)
		pod->host_netns_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (!announce) {
		tc_plan(pod, ifname, pod->host_side ? &peer : NULL);
		return;
	}
	if (pod->host_side) {
		log_info("pod %s: TC enforcement on the host end %s (ifindex %d) of its interface %s",
			 pod->key, peer.ifname, peer.ifindex, ifname);
	} else {
		log_warn("pod %s: %s: TC enforcement falls back to the pod's own network namespace, "
			 "where a pod with NET_ADMIN could remove it; forged source addresses are "
			 "not dropped there",
			 pod->key, e.msg);
	}
	tc_plan(pod, ifname, pod->host_side ? &peer : NULL);
}

/* Undo everything a pod record holds: links (unpinned), TC, its pin directory. */
static void pod_teardown(struct dataplane *dp, struct dp_pod *pod)
{
	for (int i = 0; i < DP_LINK_COUNT; i++) {
		if (!pod->links[i])
			continue;
		bpf_link__unpin(pod->links[i]);
		bpf_link__destroy(pod->links[i]);
		pod->links[i] = NULL;
	}
	tc_detach(dp, pod);
	if (pod->host_side)
		pod_if_del(dp, pod);
	if (pod->netns_fd >= 0)
		close(pod->netns_fd);
	if (pod->host_netns_fd >= 0)
		close(pod->host_netns_fd);
	pod->netns_fd = -1;
	pod->host_netns_fd = -1;
	char *dir = pod_link_dir(dp, pod->key);
	struct err e;
	if (dp_clear_pins(dir, &e) < 0)
		log_warn("detach pod %s: %s", pod->key, e.msg);
	else if (rmdir(dir) < 0 && errno != ENOENT)
		log_warn("detach pod %s: rmdir %s: %s", pod->key, dir, strerror(errno));
	free(dir);
	free(pod->key);
	pod->key = NULL;
}

/* A new zeroed pod record. (Not VEC_PUSH: as util.h defines it today, its unused left
 * operand trips -Wunused-value under -Werror.) */
static struct dp_pod *pod_push(struct dataplane *dp)
{
	if (dp->n_pods == dp->cap_pods) {
		dp->cap_pods = dp->cap_pods ? dp->cap_pods * 2 : 4;
		dp->pods = xrealloc(dp->pods, dp->cap_pods * sizeof(*dp->pods));
	}
	struct dp_pod *pod = &dp->pods[dp->n_pods++];
	memset(pod, 0, sizeof(*pod));
	pod->netns_fd = -1;
	pod->host_netns_fd = -1;
	return pod;
}

static void pod_remove(struct dataplane *dp, struct dp_pod *pod)
{
	pod_teardown(dp, pod);
	size_t i = (size_t)(pod - dp->pods);
	dp->pods[i] = dp->pods[--dp->n_pods];
}

static void adopt_pinned_links(struct dataplane *dp, const char *pod_key,
			       struct bpf_link *prev[DP_LINK_COUNT])
{
	for (int i = 0; i < DP_LINK_COUNT; i++) {
		char *path = xasprintf("%s/links/%s/%s", dp->pin_dir, pod_key,
				       link_name((enum dp_link_slot)i));
		prev[i] = access(path, F_OK) == 0 ? bpf_link__open(path) : NULL;
		if (libbpf_get_error(prev[i]))
			prev[i] = NULL;
		if (prev[i])
			unlink(path); /* our fd keeps the link; the path is for ours */
		free(path);
	}
}

/* drop: detach the previous links (ours are in place); else pin them back. */
static void release_adopted(struct dataplane *dp, const char *pod_key,
			    struct bpf_link *prev[DP_LINK_COUNT], bool drop)
{
	for (int i = 0; i < DP_LINK_COUNT; i++) {
		if (!prev[i])
			continue;
		if (!drop) {
			char *dir = xasprintf("%s/links/%s", dp->pin_dir, pod_key);
			char *path = xasprintf("%s/%s", dir, link_name((enum dp_link_slot)i));
			mkdir(dir, 0700);
			if (bpf_link__pin(prev[i], path) < 0)
				log_warn("pod %s: cannot keep the previous %s link pinned at %s",
					 pod_key, link_name((enum dp_link_slot)i), path);
			free(path);
			free(dir);
		} else {
			bpf_link__detach(prev[i]);
		}
		bpf_link__destroy(prev[i]);
		prev[i] = NULL;
	}
}

int dataplane_attach_pod(struct dataplane *dp, const char *pod_key, int cgroup_fd, int netns_fd,
			 const char *ifname, uint32_t workload, struct err *e)
{
	if (!pod_key_ok(pod_key))
		return err_set(e, "attach pod \"%s\": the key must be a file name (no '/')",
			       pod_key);
	if (!ifname || strlen(ifname) >= IF_NAMESIZE || strcmp(ifname, "lo") == 0)
		return err_set(e,
			       "attach pod %s: bad interface name \"%s\" (the pod's network "
			       "interface, not lo)",
			       pod_key, ifname ? ifname : "(null)");
	struct dp_pod *old = pod_find(dp, pod_key);
	if (old)
		pod_remove(dp, old); /* re-enrollment replaces the previous attachment */

	/* Links a previous moatd pinned for this pod keep it captured until ours are in place:
	 * hold them by fd, free their pin paths, and drop them only once ours are attached. */
	struct bpf_link *prev[DP_LINK_COUNT] = {0};
	adopt_pinned_links(dp, pod_key, prev);

	char *dir = pod_link_dir(dp, pod_key);
	int rc = mkdir(dir, 0700) < 0 && errno != EEXIST
			 ? err_set(e, "attach pod %s: mkdir %s: %s", pod_key, dir, strerror(errno))
			 : 0;
	free(dir);
	if (rc < 0) {
		release_adopted(dp, pod_key, prev, false);
		return rc;
	}

	struct dp_pod *pod = pod_push(dp);
	pod->key = xstrdup(pod_key);
	pod->netns_fd = fcntl(netns_fd, F_DUPFD_CLOEXEC, 3);
	if (pod->netns_fd < 0) {
		rc = err_set(e, "attach pod %s: dup netns fd %d: %s", pod_key, netns_fd,
			     strerror(errno));
		pod_remove(dp, pod);
		release_adopted(dp, pod_key, prev, false);
		return rc;
	}
	pod_locate(pod, ifname, true);
	for (int i = 0; i < DP_LINK_COUNT && rc == 0; i++)
		rc = attach_link(dp, pod, (enum dp_link_slot)i, cgroup_fd, e);
	/* The pod is named for its host interface before the programs there look it up. */
	if (rc == 0 && pod->host_side)
		rc = pod_if_put(dp, pod, workload, e);
	if (rc == 0)
		rc = tc_attach(dp, pod, e);
	if (rc < 0)
		pod_remove(dp, pod);
	/* Ours are attached: the previous ones go. Ours failed: the previous ones stay pinned. */
	release_adopted(dp, pod_key, prev, rc == 0);
	return rc;
}

void dataplane_detach_pod(struct dataplane *dp, const char *pod_key, int netns_fd,
			  const char *ifname)
{
	struct dp_pod *pod = pod_find(dp, pod_key);
	if (pod) {
		pod_remove(dp, pod);
		return;
	}
	/* Not attached by this process (e.g. pins left by a previous run): unpinning its links
	 * detaches them; TC filters we cannot know about are removed by their fixed identity
	 * (their clsact qdiscs stay: we cannot know who created them). */
	if (!pod_key_ok(pod_key))
		return;
	struct dp_pod stale = {.key = xstrdup(pod_key), .netns_fd = -1, .host_netns_fd = -1};
	if (netns_fd >= 0 && ifname && strlen(ifname) < IF_NAMESIZE) {
		stale.netns_fd = fcntl(netns_fd, F_DUPFD_CLOEXEC, 3);
		pod_locate(&stale, ifname, false); /* to find its filters */
		for (int i = 0; i < DP_TC_COUNT; i++)
			stale.tc[i].attached = stale.tc[i].wanted;
	}
	pod_teardown(dp, &stale);
}

void dataplane_release(struct dataplane *dp)
{
	if (!dp)
		return;
	/* Pinned links keep the pods captured (fail closed) until an agent takes them over. */
	for (size_t i = 0; i < dp->n_pods; i++) {
		for (int j = 0; j < DP_LINK_COUNT; j++)
			if (dp->pods[i].links[j])
				bpf_link__destroy(dp->pods[i].links[j]); /* closes our fd only */
		if (dp->pods[i].netns_fd >= 0)
			close(dp->pods[i].netns_fd);
		if (dp->pods[i].host_netns_fd >= 0)
			close(dp->pods[i].host_netns_fd);
		free(dp->pods[i].key);
	}
	free(dp->pods);
	ring_buffer__free(dp->rb);
	moat_bpf__destroy(dp->skel);
	free(dp->pin_dir);
	free(dp);
}

void dataplane_close(struct dataplane *dp)
{
	if (!dp)
		return;
	while (dp->n_pods > 0)
		pod_remove(dp, &dp->pods[dp->n_pods - 1]);
	free(dp->pods);
	ring_buffer__free(dp->rb);
	moat_bpf__destroy(dp->skel);
	struct err e;
	if (dp_clear_pins(dp->pin_dir, &e) < 0)
		log_warn("close BPF data plane: %s", e.msg);
	else if (rmdir(dp->pin_dir) < 0 && errno != ENOENT)
		log_warn("close BPF data plane: rmdir %s: %s", dp->pin_dir, strerror(errno));
	free(dp->pin_dir);
	free(dp);
}
