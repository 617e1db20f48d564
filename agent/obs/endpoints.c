#include "obs/endpoints.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "obs/access_log.h"
#include "obs/http.h"
#include "obs/metrics.h"

struct obs_endpoints {
	struct obs_sources src;
	struct http_server *metrics, *admin, *ready;
};

static void http_metrics(void *arg, const char *method, const char *path, const char *query,
			 struct http_response *resp)
{
	(void)method;
	(void)query;
	struct obs_endpoints *ep = arg;
	if (strcmp(path, "/metrics") != 0) {
		resp->status = 404;
		sbuf_puts(&resp->body, "not found: try /metrics\n");
		return;
	}
	struct metrics *m = ep->src.metrics;
	if (ep->src.scrape)
		ep->src.scrape(ep->src.arg, m);
	/* counters kept outside the registry: set to their totals */
	struct metric_labels none = {0};
	metrics_gauge_set(m, "moat_log_lines_suppressed_total", &none,
			  (double)log_suppressed_total());
	if (ep->src.accept_pauses)
		metrics_gauge_set(m, "moat_accept_pauses_total", &none,
				  (double)*ep->src.accept_pauses);
	if (ep->src.access_log)
		metrics_gauge_set(m, "moat_access_log_dropped_total", &none,
				  (double)access_log_dropped(ep->src.access_log));
	resp->content_type = METRICS_CONTENT_TYPE;
	metrics_render(m, &resp->body);
}

static void ready_page(struct obs_endpoints *ep, struct http_response *resp)
{
	bool ready = ep->src.ready && ep->src.ready(ep->src.arg);
	resp->status = ready ? 200 : 503;
	sbuf_puts(&resp->body, ready ? "ready\n" : "starting\n");
}

static void http_admin(void *arg, const char *method, const char *path, const char *query,
		       struct http_response *resp)
{
	(void)method;
	(void)query;
	struct obs_endpoints *ep = arg;
	if (strcmp(path, "/config_dump") == 0 && ep->src.config_dump) {
		resp->content_type = "application/json";
		ep->src.config_dump(ep->src.arg, &resp->body);
	} else if (strcmp(path, "/healthz/ready") == 0) {
		ready_page(ep, resp);
	} else {
		resp->status = 404;
		sbuf_puts(&resp->body, "not found: try /config_dump\n");
	}
}

static void http_ready(void *arg, const char *method, const char *path, const char *query,
		       struct http_response *resp)
{
	(void)method;
	(void)query;
	if (strcmp(path, "/healthz/ready") != 0) {
		resp->status = 404;
		sbuf_puts(&resp->body, "not found: try /healthz/ready\n");
		return;
	}
	ready_page(arg, resp);
}

static struct http_server *listen_port(struct obs_endpoints *ep, struct loop *l,
				       const char *addr, uint16_t port, http_handler h,
				       struct err *e)
{
	struct http_server *s = http_server_new(l, addr, port, h, ep, e);
	if (s)
		http_server_count_pauses(s, ep->src.accept_pauses);
	return s;
}

struct obs_endpoints *obs_endpoints_start(struct loop *l, const struct obs_sources *src,
					  const struct obs_ports *ports, struct err *e)
{
	struct obs_endpoints *ep = xcalloc(1, sizeof(*ep));
	ep->src = *src;
	ep->metrics = listen_port(ep, l, ports->metrics_addr, ports->metrics, http_metrics, e);
	if (!ep->metrics) {
		err_wrap(e, "metrics address %s port %u", ports->metrics_addr, ports->metrics);
		goto fail;
	}
	ep->admin = listen_port(ep, l, "127.0.0.1", ports->admin, http_admin, e);
	if (!ep->admin) {
		err_wrap(e, "admin port %u", ports->admin);
		goto fail;
	}
	ep->ready = listen_port(ep, l, "0.0.0.0", ports->ready, http_ready, e);
	if (!ep->ready) {
		err_wrap(e, "readiness port %u", ports->ready);
		goto fail;
	}
	return ep;
fail:
	obs_endpoints_free(ep);
	return NULL;
}

void obs_endpoints_free(struct obs_endpoints *ep)
{
	if (!ep)
		return;
	http_server_free(ep->metrics);
	http_server_free(ep->admin);
	http_server_free(ep->ready);
	free(ep);
}

/* In page order (declared families render first, in the order declared). */
static const struct {
	const char *name, *type, *help;
} families[] = {
	{"istio_tcp_connections_opened_total", "counter",
	 "TCP connections opened (authorized and carried)"},
	{"istio_tcp_connections_closed_total", "counter",
	 "TCP connections closed; refused ones with response_flags DENY, failed upstream "
	 "connects with CONNECT"},
	{"istio_tcp_sent_bytes_total", "counter", "Bytes of responses (destination to source)"},
	{"istio_tcp_received_bytes_total", "counter", "Bytes of requests (source to destination)"},
	{"moat_bpf_fast_denies_total", "counter",
	 "Connections refused inside connect() by the BPF verdict cache"},
	{"moat_denies_total", "counter",
	 "Connections refused by moatd after capture (outbound / inbound)"},
	{"moat_relay_engine", "gauge", "Relay engine in use (1 = active)"},
	{"moat_ktls_available", "gauge", "1 when the kernel accepted TCP_ULP \"tls\" at start-up"},
	{"moat_hbone_pool_connections", "gauge", "Pooled HBONE connections"},
	{"moat_log_lines_suppressed_total", "counter",
	 "Identical log lines dropped by the log rate limit"},
	{"moat_access_log_dropped_total", "counter",
	 "Access-log lines dropped because the sink did not keep up (the writer's ring was full)"},
	{"moat_accept_pauses_total", "counter",
	 "Times a listener paused accepting after EMFILE, ENFILE, ENOBUFS or ENOMEM"},
	{"moat_hbone_pool_streams", "gauge", "Streams on pooled HBONE connections"},
	{"moat_hbone_pool_waiting", "gauge",
	 "CONNECTs on pooled HBONE connections still awaiting their response"},
	{"moat_hbone_streams_refused_total", "counter",
	 "New outbound HBONE connections refused by a cap (reason)"},
	{"moat_relay_payload_copied_bytes_total", "counter",
	 "HBONE payload bytes that passed through moatd's own buffers, by tunnel direction "
	 "(to_tunnel, from_tunnel); 0 on a zero-copy (splice) path"},
	{"moat_ktls_fallbacks_total", "counter",
	 "HBONE connections that asked for kTLS and stayed on OpenSSL, by reason"},
	{"moat_ktls_control_records_total", "counter",
	 "Non-data TLS records handled on kTLS RX (session_ticket, key_update)"},
	{"moat_ktls_rekey_failures_total", "counter",
	 "kTLS connections closed because the kernel could not follow a KeyUpdate"},
	{"moat_service_endpoint_retries_total", "counter",
	 "Service connections moved to another endpoint after connecting to one failed"},
};

void obs_describe_metrics(struct metrics *m)
{
	for (size_t i = 0; i < ARRAY_SIZE(families); i++)
		metrics_describe(m, families[i].name, families[i].type, families[i].help);
}
