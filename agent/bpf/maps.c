/* Reading and writing the maps of include/moat/abi.h, events and stats. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bpf/internal.h"
#include "core/netns.h"
#include "core/util.h"
#include "moat.skel.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

static int map_put(struct bpf_map *map, const void *key, size_t ksz, const void *val,
		   size_t vsz, const char *what, struct err *e)
{
	int rc = bpf_map__update_elem(map, key, ksz, val, vsz, BPF_ANY);
	if (rc < 0)
		return err_set(e, "update map %s (%s): %s", bpf_map__name(map), what,
			       strerror(-rc));
	return 0;
}

static int map_del(struct bpf_map *map, const void *key, size_t ksz)
{
	int rc = bpf_map__delete_elem(map, key, ksz, 0);
	return rc < 0 && rc != -ENOENT ? -1 : 0;
}

/* All keys of a hash map (collected before any deletion: deleting while walking restarts
 * the walk on hash maps). */
static int map_keys(struct bpf_map *map, void **keys, size_t *n)
{
	size_t ksz = bpf_map__key_size(map), cap = 64;
	char *buf = xmalloc(cap * ksz);
	size_t count = 0;
	const void *prev = NULL;
	for (;;) {
		if (count == cap) {
			cap *= 2;
			buf = xrealloc(buf, cap * ksz);
		}
		if (bpf_map__get_next_key(map, prev, buf + count * ksz, ksz) < 0)
			break;
		prev = buf + count * ksz;
		count++;
	}
	*keys = buf;
	*n = count;
	return 0;
}

static int map_clear(struct bpf_map *map)
{
	void *keys;
	size_t n, ksz = bpf_map__key_size(map);
	map_keys(map, &keys, &n);
	int rc = 0;
	for (size_t i = 0; i < n; i++)
		if (map_del(map, (char *)keys + i * ksz, ksz) < 0)
			rc = -1;
	free(keys);
	return rc;
}

int dataplane_settings_set(struct dataplane *dp, const struct moat_settings *s, struct err *e)
{
	__u32 zero = 0;
	return map_put(dp->skel->maps.settings, &zero, sizeof(zero), s, sizeof(*s), "settings",
		       e);
}

int dataplane_workload_put(struct dataplane *dp, const struct moat_addr *a,
			   const struct moat_workload *w, struct err *e)
{
	struct moat_workload_key k = {.addr = *a};
	char buf[ADDR_STRLEN];
	return map_put(dp->skel->maps.workloads, &k, sizeof(k), w, sizeof(*w),
		       addr_str(a, buf, sizeof(buf)), e);
}

int dataplane_workload_del(struct dataplane *dp, const struct moat_addr *a)
{
	struct moat_workload_key k = {.addr = *a};
	return map_del(dp->skel->maps.workloads, &k, sizeof(k));
}

int dataplane_workload_keys(struct dataplane *dp, struct moat_addr **keys, size_t *n)
{
	_Static_assert(sizeof(struct moat_workload_key) == sizeof(struct moat_addr), "key");
	void *raw;
	int rc = map_keys(dp->skel->maps.workloads, &raw, n);
	*keys = raw;
	return rc;
}

int dataplane_service_put(struct dataplane *dp, const struct moat_service_key *k,
			  const struct moat_service *v, struct err *e)
{
	char buf[ADDR_STRLEN + 8], what[ADDR_STRLEN + MOAT_NAME_LEN + 24];
	snprintf(what, sizeof(what), "service %.*s VIP %s", MOAT_NAME_LEN, v->name,
		 addr_port_str(&k->addr, k->port, buf, sizeof(buf)));
	return map_put(dp->skel->maps.services, k, sizeof(*k), v, sizeof(*v), what, e);
}

int dataplane_service_del(struct dataplane *dp, const struct moat_service_key *k)
{
	return map_del(dp->skel->maps.services, k, sizeof(*k));
}

int dataplane_service_keys(struct dataplane *dp, struct moat_service_key **keys, size_t *n)
{
	void *raw;
	int rc = map_keys(dp->skel->maps.services, &raw, n);
	*keys = raw;
	return rc;
}

int dataplane_port_mtls_put(struct dataplane *dp, const struct moat_port_mtls_key *k,
			    const struct moat_port_mtls *v, struct err *e)
{
	char what[64];
	snprintf(what, sizeof(what), "workload %u port %u", k->workload, k->port);
	return map_put(dp->skel->maps.port_mtls, k, sizeof(*k), v, sizeof(*v), what, e);
}

int dataplane_port_mtls_clear(struct dataplane *dp)
{
	return map_clear(dp->skel->maps.port_mtls);
}

int dataplane_pod_put(struct dataplane *dp, uint64_t netns_cookie, const struct moat_pod *p,
		      struct err *e)
{
	struct moat_pod_key k = {.netns_cookie = netns_cookie};
	char what[MOAT_NAME_LEN + 48];
	snprintf(what, sizeof(what), "pod %.*s netns cookie %llu", MOAT_NAME_LEN, p->name,
		 (unsigned long long)netns_cookie);
	return map_put(dp->skel->maps.pods, &k, sizeof(k), p, sizeof(*p), what, e);
}

int dataplane_pod_del(struct dataplane *dp, uint64_t netns_cookie)
{
	struct moat_pod_key k = {.netns_cookie = netns_cookie};
	return map_del(dp->skel->maps.pods, &k, sizeof(k));
}

int dataplane_verdict_put(struct dataplane *dp, const struct moat_verdict_key *k,
			  const struct moat_verdict *v, struct err *e)
{
	char what[64];
	snprintf(what, sizeof(what), "verdict %u -> %u port %u", k->src_workload,
		 k->dst_workload, k->dst_port);
	return map_put(dp->skel->maps.verdicts, k, sizeof(*k), v, sizeof(*v), what, e);
}

int dataplane_verdict_get(struct dataplane *dp, const struct moat_verdict_key *k,
			  struct moat_verdict *v)
{
	return bpf_map__lookup_elem(dp->skel->maps.verdicts, k, sizeof(*k), v, sizeof(*v), 0) <
			       0
		       ? -1
		       : 0;
}

int dataplane_verdicts_each(struct dataplane *dp,
			    void (*cb)(void *arg, const struct moat_verdict_key *k,
				       const struct moat_verdict *v),
			    void *arg)
{
	struct bpf_map *map = dp->skel->maps.verdicts;
	void *keys;
	size_t n;
	map_keys(map, &keys, &n);
	const struct moat_verdict_key *k = keys;
	for (size_t i = 0; i < n; i++) {
		struct moat_verdict v;
		if (bpf_map__lookup_elem(map, &k[i], sizeof(k[i]), &v, sizeof(v), 0) == 0)
			cb(arg, &k[i], &v);
	}
	free(keys);
	return 0;
}

/* Batch ops (Linux 5.6+ for LRU hash maps); a kernel without them gets one call per entry.
 * A batch stops at its first failing element: count says how far it got. */
static bool batch_unsupported(int err)
{
	return err == EINVAL || err == EOPNOTSUPP || err == 524 /* ENOTSUPP */;
}

int dataplane_verdicts_update(struct dataplane *dp, const struct moat_verdict_key *k,
			      const struct moat_verdict *v, size_t n, struct err *e)
{
	int fd = bpf_map__fd(dp->skel->maps.verdicts);
	size_t done = 0;
	while (done < n) {
		__u32 count = (__u32)(n - done);
		int rc = bpf_map_update_batch(fd, k + done, v + done, &count, NULL);
		if (rc == 0) {
			done = n;
			break;
		}
		if (!batch_unsupported(-rc) || count) {
			size_t at = done + count < n ? done + count : n - 1;
			return err_set(e, "update map verdicts (entry %zu of %zu: %u -> %u port %u): %s",
				       at, n, k[at].src_workload, k[at].dst_workload, k[at].dst_port,
				       strerror(-rc));
		}
		for (; done < n; done++) /* no batch ops: one element at a time */
			if (dataplane_verdict_put(dp, &k[done], &v[done], e) < 0)
				return -1;
	}
	return 0;
}

int dataplane_verdicts_delete(struct dataplane *dp, const struct moat_verdict_key *k, size_t n,
			      struct err *e)
{
	int fd = bpf_map__fd(dp->skel->maps.verdicts);
	size_t done = 0;
	while (done < n) {
		__u32 count = (__u32)(n - done);
		int rc = bpf_map_delete_batch(fd, k + done, &count, NULL);
		if (rc == 0)
			break;
		done += count;
		if (-rc == ENOENT) { /* already gone (evicted): skip it and go on */
			done++;
			continue;
		}
		if (!batch_unsupported(-rc) || count)
			return err_set(e, "delete from map verdicts (batch of %zu at %zu): %s", n,
				       done, strerror(-rc));
		for (; done < n; done++)
			map_del(dp->skel->maps.verdicts, &k[done], sizeof(k[done]));
	}
	return 0;
}

int dataplane_verdicts_clear(struct dataplane *dp)
{
	return map_clear(dp->skel->maps.verdicts);
}

int dataplane_plain_listener_put(struct dataplane *dp, const struct moat_addr *pod_addr,
				 int listen_fd, struct err *e)
{
	struct moat_workload_key k = {.addr = *pod_addr};
	__u64 fd = (__u64)listen_fd; /* the kernel takes a socket fd as the value */
	char buf[ADDR_STRLEN], what[ADDR_STRLEN + 32];
	snprintf(what, sizeof(what), "listener fd %d for %s", listen_fd,
		 addr_str(pod_addr, buf, sizeof(buf)));
	return map_put(dp->skel->maps.plain_listeners, &k, sizeof(k), &fd, sizeof(fd), what, e);
}

int dataplane_plain_listener_del(struct dataplane *dp, const struct moat_addr *pod_addr)
{
	struct moat_workload_key k = {.addr = *pod_addr};
	return map_del(dp->skel->maps.plain_listeners, &k, sizeof(k));
}

int dataplane_orig_dst_take(struct dataplane *dp, uint64_t netns_cookie,
			    const struct moat_addr *client, uint16_t client_port,
			    struct moat_orig_dst *out)
{
	struct moat_conn_key k = {.netns_cookie = netns_cookie, .addr = *client,
				  .port = client_port};
	return bpf_map__lookup_and_delete_elem(dp->skel->maps.orig_dst, &k, sizeof(k), out,
					       sizeof(*out), 0) < 0
		       ? -1
		       : 0;
}

int dataplane_stats(struct dataplane *dp, struct moat_stats *out)
{
	__u32 zero = 0;
	struct moat_stats *per_cpu = xcalloc((size_t)dp->ncpus, sizeof(*per_cpu));
	int rc = bpf_map__lookup_elem(dp->skel->maps.stats, &zero, sizeof(zero), per_cpu,
				      sizeof(*per_cpu) * (size_t)dp->ncpus, 0);
	memset(out, 0, sizeof(*out));
	if (rc == 0) {
		enum { FIELDS = sizeof(struct moat_stats) / sizeof(__u64) };
		__u64 *sum = (__u64 *)out;
		for (int c = 0; c < dp->ncpus; c++) {
			const __u64 *v = (const __u64 *)&per_cpu[c];
			for (int f = 0; f < FIELDS; f++)
				sum[f] += v[f];
		}
	}
	free(per_cpu);
	return rc < 0 ? -1 : 0;
}

int dataplane_events_fd(struct dataplane *dp)
{
	return ring_buffer__epoll_fd(dp->rb);
}

int dataplane_events_consume(struct dataplane *dp, dataplane_event_cb cb, void *arg)
{
	dp->ev_cb = cb;
	dp->ev_arg = arg;
	int n = ring_buffer__consume(dp->rb);
	dp->ev_cb = NULL;
	dp->ev_arg = NULL;
	return n < 0 ? -1 : n;
}

int netns_cookie_of(int netns_fd, uint64_t *cookie, struct err *e)
{
	int fd = netns_socket(netns_fd, AF_INET, SOCK_DGRAM, 0, e);
	if (fd < 0)
		return err_wrap(e, "netns cookie");
	socklen_t len = sizeof(*cookie);
	int rc = getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len);
	int err = errno;
	close(fd);
	if (rc < 0)
		return err_set(e, "netns cookie: getsockopt SO_NETNS_COOKIE: %s (Linux 5.14+)",
			       strerror(err));
	return 0;
}
