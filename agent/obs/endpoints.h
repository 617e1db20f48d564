/* The agent's node ports and what they serve: Prometheus metrics (--metrics-addr,
 * --metrics-port, /metrics), admin on 127.0.0.1 (/config_dump, /healthz/ready) and readiness
 * (/healthz/ready). obs/ does not know the agent: what the pages show comes through
 * struct obs_sources, which main.c wires to the agent. */
#ifndef MOAT_OBS_ENDPOINTS_H
#define MOAT_OBS_ENDPOINTS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/util.h"

struct loop;
struct metrics;
struct access_log;

struct obs_sources {
	void *arg;
	struct metrics *metrics;
	uint64_t *accept_pauses;  /* moat_accept_pauses_total; the HTTP ports' pauses add to it */
	const struct access_log *access_log; /* moat_access_log_dropped_total (may be NULL) */
	bool (*ready)(void *arg); /* the agent serves traffic */
	/* /metrics is about to render: set the gauges kept outside the registry. */
	void (*scrape)(void *arg, struct metrics *m);
	/* /config_dump's JSON body. */
	void (*config_dump)(void *arg, struct sbuf *out);
};

struct obs_ports {
	const char *metrics_addr; /* "0.0.0.0", "127.0.0.1", "::" ... */
	uint16_t metrics, admin, ready;
};

struct obs_endpoints;
/* Listen on the three ports; src is copied. NULL (e says which port) when one fails. */
struct obs_endpoints *obs_endpoints_start(struct loop *l, const struct obs_sources *src,
					  const struct obs_ports *ports, struct err *e);
void obs_endpoints_free(struct obs_endpoints *ep); /* NULL: nothing */
/* Declare the agent's metric families (HELP and TYPE, in page order). */
void obs_describe_metrics(struct metrics *m);

#endif
