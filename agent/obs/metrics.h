/* Prometheus metrics: counters and gauges with labels, rendered in the text exposition
 * format 0.0.4. Names and labels follow ztunnel's so existing dashboards work
 * (istio_tcp_connections_opened_total{reporter,source_workload,...}). Single-threaded
 * (the loop thread); updates are O(1) amortised (hash on name + label values). */
#ifndef MOAT_OBS_METRICS_H
#define MOAT_OBS_METRICS_H

#include <stdint.h>

#include "core/util.h"

#define METRIC_MAX_LABELS 24
/* Content-Type of the /metrics response. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metric_labels {
	const char *key[METRIC_MAX_LABELS];
	const char *value[METRIC_MAX_LABELS];
	int n;
};

void metric_label(struct metric_labels *l, const char *key, const char *value);

struct metrics;
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);
/* Declare a family once (type "counter" or "gauge"); undeclared families render untyped. */
void metrics_describe(struct metrics *m, const char *name, const char *type, const char *help);
void metrics_counter_add(struct metrics *m, const char *name, const struct metric_labels *l,
			 uint64_t delta);
void metrics_gauge_set(struct metrics *m, const char *name, const struct metric_labels *l,
		       double value);
void metrics_gauge_add(struct metrics *m, const char *name, const struct metric_labels *l,
		       double delta);
/* Current value of one series (tests, moatctl status); 0 when absent. */
double metrics_value(struct metrics *m, const char *name, const struct metric_labels *l);
/* Families in description order, series sorted; label values escaped (\\, \", \n). */
void metrics_render(struct metrics *m, struct sbuf *out);

#endif
