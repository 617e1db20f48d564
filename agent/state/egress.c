/* ServiceEntry `resolution: DNS`: the agent resolves the hosts itself, with the TTL the
 * answers carry, so that an app's connect to the address it resolved is recognised as that
 * ServiceEntry (and REGISTRY_ONLY lets it through, policy permitting). */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "dns/dns.h"
#include "state/agent.h"

#define EGRESS_MIN_TTL_S 5
#define EGRESS_MAX_TTL_S 300
#define EGRESS_RETRY_S 5
#define EGRESS_SYNC_DELAY_MS 50

struct egress_host {
	struct agent *agent;
	char *host, *se_ns, *se_name;
	struct moat_addr *addrs;
	size_t n;
	uint64_t query;
	bool seen;
	struct loop_timer refresh;
	struct egress_host *next;
};

struct egress_dns {
	struct agent *agent;
	struct egress_host *hosts;
	struct loop_timer sync; /* coalesces map syncs after a burst of answers */
};

static void host_free(struct agent *a, struct egress_host *h)
{
	if (h->query && a->dns)
		dns_cancel(a->dns, h->query);
	loop_timer_cancel(a->loop, &h->refresh);
	free(h->host);
	free(h->se_ns);
	free(h->se_name);
	free(h->addrs);
	free(h);
}

static bool same_addrs(const struct egress_host *h, const struct dns_answer *ans)
{
	if (h->n != ans->n)
		return false;
	for (size_t i = 0; i < ans->n; i++) {
		bool found = false;
		for (size_t j = 0; j < h->n && !found; j++)
			found = addr_eq(&ans->addrs[i], &h->addrs[j]);
		if (!found)
			return false;
	}
	return true;
}

static void resolve(struct egress_host *h);
static void sync_timer(struct loop_timer *t);

static void on_answer(void *arg, const char *host, const struct dns_answer *ans, const char *error)
{
	struct egress_host *h = arg;
	struct agent *a = h->agent;
	h->query = 0;
	uint32_t next_s = EGRESS_RETRY_S;
	if (error) {
		log_warn("ServiceEntry %s/%s: resolve %s: %s (keeping %zu known addresses, retry in "
			 "%d s)",
			 h->se_ns, h->se_name, host, error, h->n, EGRESS_RETRY_S);
	} else {
		next_s = ans->ttl < EGRESS_MIN_TTL_S ? EGRESS_MIN_TTL_S
		       : ans->ttl > EGRESS_MAX_TTL_S ? EGRESS_MAX_TTL_S : ans->ttl;
		if (!same_addrs(h, ans)) {
			free(h->addrs);
			h->addrs = xcalloc(ans->n ? ans->n : 1, sizeof(*h->addrs));
			memcpy(h->addrs, ans->addrs, ans->n * sizeof(*h->addrs));
			h->n = ans->n;
			char list[512] = "";
			for (size_t i = 0; i < h->n && strlen(list) < 400; i++) {
				char s[ADDR_STRLEN];
				strcat(list, i ? ", " : "");
				strcat(list, addr_str(&h->addrs[i], s, sizeof(s)));
			}
			log_info("ServiceEntry %s/%s: %s resolves to [%s] (ttl %u s)", h->se_ns,
				 h->se_name, host, list, ans->ttl);
			loop_timer_arm(a->loop, &a->egress->sync, EGRESS_SYNC_DELAY_MS);
		}
	}
	loop_timer_arm(a->loop, &h->refresh, (uint64_t)next_s * 1000);
}

static void resolve(struct egress_host *h)
{
	if (!h->query)
		h->query = dns_resolve(h->agent->dns, h->host, on_answer, h);
}

static void on_refresh(struct loop_timer *t)
{
	resolve(container_of(t, struct egress_host, refresh));
}

static struct egress_host *host_find(struct egress_dns *eg, const char *host,
				     const struct mc_service_entry *se)
{
	for (struct egress_host *h = eg->hosts; h; h = h->next)
		if (!strcmp(h->host, host) && !strcmp(h->se_ns, se->meta.ns) &&
		    !strcmp(h->se_name, se->meta.name))
			return h;
	return NULL;
}

static void want_host(struct agent *a, const char *host, const struct mc_service_entry *se)
{
	if (host[0] == '*' || strchr(host, '/'))
		return; /* wildcards cannot be resolved */
	struct moat_addr ip;
	if (addr_parse(host, &ip))
		return;
	struct egress_host *h = host_find(a->egress, host, se);
	if (!h) {
		h = xcalloc(1, sizeof(*h));
		h->agent = a;
		h->host = xstrdup(host);
		h->se_ns = xstrdup(se->meta.ns);
		h->se_name = xstrdup(se->meta.name);
		loop_timer_init(&h->refresh, on_refresh);
		h->next = a->egress->hosts;
		a->egress->hosts = h;
		resolve(h);
	}
	h->seen = true;
}

void agent_egress_refresh(struct agent *a)
{
	if (!a->dns)
		return;
	if (!a->egress) {
		a->egress = xcalloc(1, sizeof(*a->egress));
		a->egress->agent = a;
		loop_timer_init(&a->egress->sync, sync_timer);
	}
	for (struct egress_host *h = a->egress->hosts; h; h = h->next)
		h->seen = false;
	for (size_t i = 0; i < a->cfg->n_services; i++) {
		const struct mc_service_entry *se = &a->cfg->services[i];
		if (se->resolution != MC_RES_DNS)
			continue;
		if (se->n_endpoints) {
			for (size_t j = 0; j < se->n_endpoints; j++)
				if (!se->endpoints[j].is_ip)
					want_host(a, se->endpoints[j].address, se);
		}
		for (size_t j = 0; j < se->hosts.n; j++)
			want_host(a, se->hosts.items[j], se);
	}
	struct egress_host **pp = &a->egress->hosts;
	while (*pp) {
		struct egress_host *h = *pp;
		if (h->seen) {
			pp = &h->next;
			continue;
		}
		*pp = h->next;
		host_free(a, h);
	}
}

static void sync_timer(struct loop_timer *t)
{
	struct egress_dns *eg = container_of(t, struct egress_dns, sync);
	agent_sync_dataplane(eg->agent);
}

void agent_egress_free(struct agent *a)
{
	if (!a->egress)
		return;
	while (a->egress->hosts) {
		struct egress_host *h = a->egress->hosts;
		a->egress->hosts = h->next;
		host_free(a, h);
	}
	loop_timer_cancel(a->loop, &a->egress->sync);
	free(a->egress);
	a->egress = NULL;
}

const struct mc_service_entry *agent_service_by_resolved(struct agent *a, const struct moat_addr *ip)
{
	if (!a->egress)
		return NULL;
	for (struct egress_host *h = a->egress->hosts; h; h = h->next)
		for (size_t i = 0; i < h->n; i++)
			if (addr_eq(&h->addrs[i], ip))
				return mc_service_by_name(a->cfg, h->se_ns, h->se_name);
	return NULL;
}

void agent_egress_each(struct agent *a, void (*fn)(void *arg, const struct moat_addr *ip,
						   const struct mc_service_entry *se),
		       void *arg)
{
	if (!a->egress)
		return;
	for (struct egress_host *h = a->egress->hosts; h; h = h->next) {
		const struct mc_service_entry *se = mc_service_by_name(a->cfg, h->se_ns, h->se_name);
		for (size_t i = 0; se && i < h->n; i++)
			fn(arg, &h->addrs[i], se);
	}
}
