#include "obs/access.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/reasons.h"
#include "obs/metrics.h"

void access_split_name(const char *full, char *ns, size_t nsl, char *name, size_t nl)
{
	ns[0] = name[0] = 0;
	if (!full)
		return;
	const char *slash = strchr(full, '/');
	if (!slash) {
		snprintf(name, nl, "%s", full);
		return;
	}
	snprintf(ns, nsl, "%.*s", (int)(slash - full), full);
	snprintf(name, nl, "%s", slash + 1);
}

const char *access_or_unknown(const char *s)
{
	return s && *s ? s : "unknown";
}

void access_json_addr(struct sbuf *b, const char *key, const struct moat_addr *a, uint16_t port)
{
	char s[ADDR_STRLEN + 8];
	sbuf_printf(b, ",\"%s\":", key);
	if (addr_is_zero(a))
		sbuf_puts(b, "null");
	else if (port)
		sbuf_json_str(b, addr_port_str(a, port, s, sizeof(s)));
	else
		sbuf_json_str(b, addr_str(a, s, sizeof(s)));
}

void access_log_deny(struct metrics *m, const struct deny_record *r)
{
	char ts[40];
	struct sbuf b;
	sbuf_init(&b);
	sbuf_printf(&b, "{\"time\":\"%s\",\"type\":\"deny\",\"phase\":\"%s\"",
		    iso8601_ms(wall_ms(), ts, sizeof(ts)), r->phase);
	sbuf_puts(&b, ",\"src_workload\":");
	sbuf_json_str(&b, r->src_workload);
	sbuf_puts(&b, ",\"src_identity\":");
	sbuf_json_str(&b, r->src_identity);
	static const struct moat_addr zero;
	access_json_addr(&b, "src_addr", r->src ? r->src : &zero, r->sport);
	access_json_addr(&b, "dst_addr", r->dst ? r->dst : &zero, r->dport);
	sbuf_puts(&b, ",\"dst_workload\":");
	sbuf_json_str(&b, r->dst_workload);
	sbuf_puts(&b, ",\"verdict\":\"DENY\",\"policy\":");
	sbuf_json_str(&b, r->policy);
	sbuf_puts(&b, ",\"reason\":");
	sbuf_json_str(&b, r->reason);
	sbuf_puts(&b, ",\"reason_code\":");
	sbuf_json_str(&b, r->reason_code);
	sbuf_puts(&b, "}");
	log_json_line(b.s);
	sbuf_free(&b);

	struct metric_labels l = {0};
	char ns[128], name[128], dns_[128], dname[128];
	access_split_name(r->src_workload, ns, sizeof(ns), name, sizeof(name));
	access_split_name(r->dst_workload, dns_, sizeof(dns_), dname, sizeof(dname));
	metric_label(&l, "reporter", strcmp(r->phase, "inbound") == 0 ? "destination" : "source");
	metric_label(&l, "source_workload", access_or_unknown(name));
	metric_label(&l, "source_workload_namespace", access_or_unknown(ns));
	metric_label(&l, "source_principal", access_or_unknown(r->src_identity));
	metric_label(&l, "destination_workload", access_or_unknown(dname));
	metric_label(&l, "destination_workload_namespace", access_or_unknown(dns_));
	metric_label(&l, "response_flags", r->response_flags ? r->response_flags : "DENY");
	metrics_counter_add(m, "istio_tcp_connections_closed_total", &l, 1);
	if (strcmp(r->phase, "connect") == 0) {
		struct metric_labels f = {0};
		metric_label(&f, "reason", r->reason_code ? r->reason_code
								 : moat_reason_code(MOAT_REASON_NONE));
		metrics_counter_add(m, "moat_bpf_fast_denies_total", &f, 1);
	} else {
		struct metric_labels f = {0};
		metric_label(&f, "phase", r->phase);
		metrics_counter_add(m, "moat_denies_total", &f, 1);
	}
}
