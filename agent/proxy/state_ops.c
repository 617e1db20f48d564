/* The proxy room's side of state/proxy_ops.h: what enrollment and reload ask of it. */
#include "state/proxy_ops.h"

#include <sys/socket.h>

#include "core/log.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"

static bool pod_has_family(const struct pod *p, int family)
{
	for (size_t i = 0; i < p->n_addrs; i++)
		if (addr_is_v4(&p->addrs[i]) == (family == AF_INET))
			return true;
	return false;
}

int proxy_pod_listen(struct agent *a, struct pod *p, struct err *e)
{
	struct {
		struct listener *l;
		enum listener_kind kind;
		int family;
	} want[] = {
		{&p->out4, LSN_OUTBOUND, AF_INET},  {&p->out6, LSN_OUTBOUND, AF_INET6},
		{&p->hbone4, LSN_HBONE, AF_INET},   {&p->hbone6, LSN_HBONE, AF_INET6},
		{&p->plain4, LSN_PLAIN, AF_INET},   {&p->plain6, LSN_PLAIN, AF_INET6},
	};
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		struct err le;
		if (listener_open(a, p, want[i].l, want[i].kind, want[i].family, &le) == 0)
			continue;
		if (want[i].family == AF_INET6 && !pod_has_family(p, AF_INET6)) {
			log_debug("pod %s: no IPv6 listener: %s", p->key, le.msg);
			continue;
		}
		*e = le;
		return -1;
	}
	return 0;
}

void proxy_pod_unlisten(struct agent *a, struct pod *p)
{
	struct listener *all[] = {&p->out4, &p->out6, &p->hbone4, &p->hbone6, &p->plain4, &p->plain6};
	for (size_t i = 0; i < ARRAY_SIZE(all); i++)
		listener_close(a, all[i]);
}

void proxy_pod_drop(struct agent *a, struct pod *p)
{
	hbone_pool_drop_pod(a->pool, p);
	inbound_drop_pod(a, p);
}

void proxy_policy_changed(struct agent *a)
{
	inbound_recheck(a);
}
