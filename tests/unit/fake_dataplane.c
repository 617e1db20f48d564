/* agent/bpf/dataplane.h in memory for the unit tests (fake_dataplane.h says what it models). */
#include "fake_dataplane.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- a small hash map of fixed-size keys and values ---- */

#define FMAP_BUCKETS 1024

struct fent {
	struct fent *next;
	unsigned char kv[]; /* key, then value at voff (8-aligned: next follows a pointer) */
};

struct fmap {
	const char *name;
	size_t ksz, vsz, n;
	size_t voff; /* the value's offset in kv: aligned for its 64-bit fields */
	struct fent *b[FMAP_BUCKETS];
	struct fdp_counts c;
	bool fail_next;
};

struct dataplane {
	struct fmap m[FDP_MAPS];
	/* verdict keys written or deleted since the last fake_dp_reset_counts */
	struct moat_verdict_key *touched;
	size_t n_touched, cap_touched;
};

static void touch(struct dataplane *dp, const struct moat_verdict_key *k)
{
	*VEC_PUSH(dp->touched, dp->n_touched, dp->cap_touched) = *k;
}

static size_t fmap_bucket(const struct fmap *m, const void *k)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	const unsigned char *p = k;
	for (size_t i = 0; i < m->ksz; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return (size_t)(h % FMAP_BUCKETS);
}

static struct fent **fmap_slot(struct fmap *m, const void *k)
{
	struct fent **pp = &m->b[fmap_bucket(m, k)];
	while (*pp && memcmp((*pp)->kv, k, m->ksz))
		pp = &(*pp)->next;
	return pp;
}

static const void *fmap_get(const struct fmap *m, const void *k)
{
	struct fent **pp = fmap_slot((struct fmap *)m, k);
	return *pp ? (*pp)->kv + m->voff : NULL;
}

/* Counted as one write; fails once when fail_next was set (the next sync must cope). */
static int fmap_put(struct fmap *m, const void *k, const void *v, struct err *e)
{
	if (m->fail_next) {
		m->fail_next = false;
		return err_set(e, "fake %s map: update refused (test)", m->name);
	}
	struct fent **pp = fmap_slot(m, k);
	if (!*pp) {
		*pp = xcalloc(1, sizeof(**pp) + m->voff + m->vsz);
		memcpy((*pp)->kv, k, m->ksz);
		m->n++;
	}
	memcpy((*pp)->kv + m->voff, v, m->vsz);
	m->c.writes++;
	return 0;
}

static int fmap_del(struct fmap *m, const void *k)
{
	m->c.deletes++;
	struct fent **pp = fmap_slot(m, k);
	if (!*pp)
		return -1;
	struct fent *f = *pp;
	*pp = f->next;
	free(f);
	m->n--;
	return 0;
}

static void fmap_clear(struct fmap *m)
{
	for (size_t i = 0; i < FMAP_BUCKETS; i++)
		while (m->b[i]) {
			struct fent *f = m->b[i];
			m->b[i] = f->next;
			free(f);
		}
	m->n = 0;
}

/* Every key of m, copied into one array the caller frees. */
static void *fmap_keys(const struct fmap *m, size_t *n)
{
	char *keys = xcalloc(m->n + 1, m->ksz);
	*n = 0;
	for (size_t i = 0; i < FMAP_BUCKETS; i++)
		for (const struct fent *f = m->b[i]; f; f = f->next)
			memcpy(keys + (*n)++ * m->ksz, f->kv, m->ksz);
	return keys;
}

static void fmap_init(struct fmap *m, const char *name, size_t ksz, size_t vsz)
{
	m->name = name;
	m->ksz = ksz;
	m->vsz = vsz;
	m->voff = (ksz + 7) & ~(size_t)7;
}

/* ---- the test's handle ---- */

struct dataplane *fake_dp_new(void)
{
	struct dataplane *dp = xcalloc(1, sizeof(*dp));
	fmap_init(&dp->m[FDP_SETTINGS], "settings", sizeof(uint32_t), sizeof(struct moat_settings));
	fmap_init(&dp->m[FDP_WORKLOADS], "workloads", sizeof(struct moat_addr),
		  sizeof(struct moat_workload));
	fmap_init(&dp->m[FDP_PORT_MTLS], "port_mtls", sizeof(struct moat_port_mtls_key),
		  sizeof(struct moat_port_mtls));
	fmap_init(&dp->m[FDP_PODS], "pods", sizeof(uint64_t), sizeof(struct moat_pod));
	fmap_init(&dp->m[FDP_VERDICTS], "verdicts", sizeof(struct moat_verdict_key),
		  sizeof(struct moat_verdict));
	fmap_init(&dp->m[FDP_PLAIN_LSN], "plain_listeners", sizeof(struct moat_addr), sizeof(int));
	fmap_init(&dp->m[FDP_ORIG_DST], "orig_dst", sizeof(struct moat_conn_key),
		  sizeof(struct moat_orig_dst));
	fmap_init(&dp->m[FDP_SERVICES], "services", sizeof(struct moat_service_key),
		  sizeof(struct moat_service));
	return dp;
}

void fake_dp_free(struct dataplane *dp)
{
	if (!dp)
		return;
	for (int i = 0; i < FDP_MAPS; i++)
		fmap_clear(&dp->m[i]);
	free(dp->touched);
	free(dp);
}

const struct fdp_counts *fake_dp_counts(const struct dataplane *dp, enum fdp_map m)
{
	return &dp->m[m].c;
}

void fake_dp_reset_counts(struct dataplane *dp)
{
	for (int i = 0; i < FDP_MAPS; i++)
		memset(&dp->m[i].c, 0, sizeof(dp->m[i].c));
	dp->n_touched = 0;
}

size_t fake_dp_verdicts_touched(const struct dataplane *dp, const struct moat_verdict_key **keys)
{
	*keys = dp->touched;
	return dp->n_touched;
}

size_t fake_dp_entries(const struct dataplane *dp, enum fdp_map m)
{
	return dp->m[m].n;
}

void fake_dp_fail_next(struct dataplane *dp, enum fdp_map m)
{
	dp->m[m].fail_next = true;
}

bool fake_dp_verdict(const struct dataplane *dp, const struct moat_verdict_key *k,
		     struct moat_verdict *out)
{
	const struct moat_verdict *v = fmap_get(&dp->m[FDP_VERDICTS], k);
	if (v && out)
		*out = *v;
	return v != NULL;
}

bool fake_dp_workload(const struct dataplane *dp, const struct moat_addr *a,
		      struct moat_workload *out)
{
	const struct moat_workload *w = fmap_get(&dp->m[FDP_WORKLOADS], a);
	if (w && out)
		*out = *w;
	return w != NULL;
}

const struct moat_settings *fake_dp_settings(const struct dataplane *dp)
{
	uint32_t zero = 0;
	return fmap_get(&dp->m[FDP_SETTINGS], &zero);
}

/* bpf/moat.bpf.c, lookup_verdict: the exact port, then port 0; an entry of another epoch
 * is no verdict at all. */
enum moat_action fake_dp_hook_verdict(const struct dataplane *dp, uint32_t src, uint32_t dst,
				      uint16_t port)
{
	const struct moat_settings *st = fake_dp_settings(dp);
	struct moat_verdict_key k = {.src_workload = src, .dst_workload = dst, .dst_port = port};
	struct moat_verdict v;
	if (!fake_dp_verdict(dp, &k, &v)) {
		k.dst_port = 0;
		if (!fake_dp_verdict(dp, &k, &v))
			return MOAT_ACTION_NONE;
	}
	if (!st || v.epoch != st->epoch)
		return MOAT_ACTION_NONE;
	return (enum moat_action)v.action;
}

static struct moat_conn_key conn_key(uint64_t netns_cookie, const struct moat_addr *client,
				     uint16_t client_port)
{
	return (struct moat_conn_key){.netns_cookie = netns_cookie, .addr = *client,
				      .port = client_port};
}

void fake_dp_orig_dst_add(struct dataplane *dp, uint64_t netns_cookie,
			  const struct moat_addr *client, uint16_t client_port,
			  const struct moat_orig_dst *od)
{
	struct moat_conn_key k = conn_key(netns_cookie, client, client_port);
	struct err e;
	fmap_put(&dp->m[FDP_ORIG_DST], &k, od, &e);
}

/* ---- agent/bpf/dataplane.h ---- */

int dataplane_probe(const char *pin_dir, struct err *e)
{
	(void)pin_dir;
	(void)e;
	return 0;
}

struct dataplane *dataplane_open(const char *pin_dir, struct err *e)
{
	(void)pin_dir;
	(void)e;
	return fake_dp_new();
}

void dataplane_close(struct dataplane *dp)
{
	fake_dp_free(dp);
}

void dataplane_release(struct dataplane *dp)
{
	fake_dp_free(dp);
}

int dataplane_attach_pod(struct dataplane *dp, const char *pod_key, int cgroup_fd, int netns_fd,
			 const char *ifname, uint32_t workload, struct err *e)
{
	(void)dp, (void)pod_key, (void)cgroup_fd, (void)netns_fd, (void)ifname, (void)workload;
	(void)e;
	return 0;
}

void dataplane_detach_pod(struct dataplane *dp, const char *pod_key, int netns_fd,
			  const char *ifname)
{
	(void)dp, (void)pod_key, (void)netns_fd, (void)ifname;
}

int dataplane_settings_set(struct dataplane *dp, const struct moat_settings *s, struct err *e)
{
	uint32_t zero = 0;
	return fmap_put(&dp->m[FDP_SETTINGS], &zero, s, e);
}

int dataplane_workload_put(struct dataplane *dp, const struct moat_addr *a,
			   const struct moat_workload *w, struct err *e)
{
	return fmap_put(&dp->m[FDP_WORKLOADS], a, w, e);
}

int dataplane_workload_del(struct dataplane *dp, const struct moat_addr *a)
{
	return fmap_del(&dp->m[FDP_WORKLOADS], a);
}

int dataplane_workload_keys(struct dataplane *dp, struct moat_addr **keys, size_t *n)
{
	*keys = fmap_keys(&dp->m[FDP_WORKLOADS], n);
	return 0;
}

int dataplane_service_put(struct dataplane *dp, const struct moat_service_key *k,
			  const struct moat_service *v, struct err *e)
{
	return fmap_put(&dp->m[FDP_SERVICES], k, v, e);
}

int dataplane_service_del(struct dataplane *dp, const struct moat_service_key *k)
{
	return fmap_del(&dp->m[FDP_SERVICES], k);
}

int dataplane_service_keys(struct dataplane *dp, struct moat_service_key **keys, size_t *n)
{
	*keys = fmap_keys(&dp->m[FDP_SERVICES], n);
	return 0;
}

int dataplane_port_mtls_put(struct dataplane *dp, const struct moat_port_mtls_key *k,
			    const struct moat_port_mtls *v, struct err *e)
{
	return fmap_put(&dp->m[FDP_PORT_MTLS], k, v, e);
}

int dataplane_port_mtls_clear(struct dataplane *dp)
{
	dp->m[FDP_PORT_MTLS].c.clears++;
	fmap_clear(&dp->m[FDP_PORT_MTLS]);
	return 0;
}

int dataplane_pod_put(struct dataplane *dp, uint64_t netns_cookie, const struct moat_pod *p,
		      struct err *e)
{
	return fmap_put(&dp->m[FDP_PODS], &netns_cookie, p, e);
}

int dataplane_pod_del(struct dataplane *dp, uint64_t netns_cookie)
{
	return fmap_del(&dp->m[FDP_PODS], &netns_cookie);
}

int dataplane_verdict_put(struct dataplane *dp, const struct moat_verdict_key *k,
			  const struct moat_verdict *v, struct err *e)
{
	touch(dp, k);
	return fmap_put(&dp->m[FDP_VERDICTS], k, v, e);
}

int dataplane_verdict_get(struct dataplane *dp, const struct moat_verdict_key *k,
			  struct moat_verdict *v)
{
	return fake_dp_verdict(dp, k, v) ? 0 : -1;
}

int dataplane_verdicts_update(struct dataplane *dp, const struct moat_verdict_key *k,
			      const struct moat_verdict *v, size_t n, struct err *e)
{
	struct fmap *m = &dp->m[FDP_VERDICTS];
	m->c.batches++;
	for (size_t i = 0; i < n; i++) {
		if (fmap_put(m, &k[i], &v[i], e) < 0)
			return -1;
		touch(dp, &k[i]);
	}
	return 0;
}

int dataplane_verdicts_delete(struct dataplane *dp, const struct moat_verdict_key *k, size_t n,
			      struct err *e)
{
	(void)e;
	struct fmap *m = &dp->m[FDP_VERDICTS];
	m->c.batches++;
	for (size_t i = 0; i < n; i++) {
		fmap_del(m, &k[i]); /* a missing key is not an error */
		touch(dp, &k[i]);
	}
	return 0;
}

int dataplane_verdicts_each(struct dataplane *dp,
			    void (*cb)(void *arg, const struct moat_verdict_key *k,
				       const struct moat_verdict *v),
			    void *arg)
{
	const struct fmap *m = &dp->m[FDP_VERDICTS];
	for (size_t i = 0; i < FMAP_BUCKETS; i++)
		for (const struct fent *f = m->b[i]; f; f = f->next)
			cb(arg, (const void *)f->kv, (const void *)(f->kv + m->voff));
	return 0;
}

int dataplane_verdicts_clear(struct dataplane *dp)
{
	dp->m[FDP_VERDICTS].c.clears++;
	fmap_clear(&dp->m[FDP_VERDICTS]);
	return 0;
}

int dataplane_plain_listener_put(struct dataplane *dp, const struct moat_addr *pod_addr,
				 int listen_fd, struct err *e)
{
	return fmap_put(&dp->m[FDP_PLAIN_LSN], pod_addr, &listen_fd, e);
}

int dataplane_plain_listener_del(struct dataplane *dp, const struct moat_addr *pod_addr)
{
	return fmap_del(&dp->m[FDP_PLAIN_LSN], pod_addr);
}

int dataplane_orig_dst_take(struct dataplane *dp, uint64_t netns_cookie,
			    const struct moat_addr *client, uint16_t client_port,
			    struct moat_orig_dst *out)
{
	struct fmap *m = &dp->m[FDP_ORIG_DST];
	struct moat_conn_key k = conn_key(netns_cookie, client, client_port);
	const struct moat_orig_dst *od = fmap_get(m, &k);
	if (!od)
		return -1;
	*out = *od;
	fmap_del(m, &k);
	return 0;
}

int dataplane_stats(struct dataplane *dp, struct moat_stats *out)
{
	(void)dp;
	memset(out, 0, sizeof(*out));
	return 0;
}

int dataplane_events_fd(struct dataplane *dp)
{
	(void)dp;
	return -1;
}

int dataplane_events_consume(struct dataplane *dp, dataplane_event_cb cb, void *arg)
{
	(void)dp, (void)cb, (void)arg;
	return 0;
}

int dataplane_join(struct dataplane *dp, const int fd[2], uint64_t cookie[2], struct err *e)
{
	(void)dp, (void)fd, (void)cookie;
	return err_set(e, "fake dataplane: no kernel joins in unit tests");
}

uint64_t dataplane_join_bytes(struct dataplane *dp, uint64_t cookie)
{
	(void)dp, (void)cookie;
	return 0;
}

void dataplane_unjoin(struct dataplane *dp, const uint64_t cookie[2], uint64_t bytes[2])
{
	(void)dp, (void)cookie;
	bytes[0] = bytes[1] = 0;
}

const char *dataplane_pin_dir(const struct dataplane *dp)
{
	(void)dp;
	return "(fake dataplane)";
}

bool dataplane_cgroup2_mount(char *where, size_t len)
{
	(void)where, (void)len;
	return false;
}

int netns_cookie_of(int netns_fd, uint64_t *cookie, struct err *e)
{
	(void)netns_fd;
	*cookie = 0;
	return err_set(e, "fake dataplane: no netns cookies in unit tests");
}
