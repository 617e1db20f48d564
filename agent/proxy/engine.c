#include "proxy/engine.h"

#include "core/log.h"
#include "obs/metrics.h"
#include "proxy/proxy_state.h"

/* One kTLS fallback line per this many ms at most: a kernel that refuses every connection
 * must not flood the log; the counter keeps the exact number. */
#define KTLS_FALLBACK_LOG_MS 60000

bool engine_allows_sockmap(const struct agent *a)
{
	return a->opts.engine == ENGINE_AUTO || a->opts.engine == ENGINE_SOCKMAP;
}

bool engine_uses_ktls(const struct agent *a)
{
	return a->ktls && (a->opts.engine == ENGINE_AUTO || a->opts.engine == ENGINE_KTLS);
}

const char *engine_name(enum agent_engine e)
{
	switch (e) {
	case ENGINE_AUTO:
		return "auto";
	case ENGINE_SOCKMAP:
		return "sockmap";
	case ENGINE_KTLS:
		return "ktls";
	case ENGINE_USERSPACE:
	default:
		return "userspace";
	}
}

const char *engine_ktls_off(const struct agent *a)
{
	if (!a->ktls)
		return a->ktls_why;
	if (!engine_uses_ktls(a))
		return a->opts.engine == ENGINE_SOCKMAP ? "--engine sockmap" : "--engine userspace";
	return NULL;
}

void engine_hbone_new(struct agent *a, struct h2conn *h)
{
	if (engine_uses_ktls(a))
		h2conn_want_ktls(h);
}

void engine_hbone_ready(struct agent *a, struct h2conn *h)
{
	const char *why = NULL, *reason = h2conn_ktls_fallback(h, &why);
	if (!reason)
		return;
	struct metric_labels l = {0};
	metric_label(&l, "reason", reason);
	metrics_counter_add(a->metrics, "moat_ktls_fallbacks_total", &l, 1);
	uint64_t now = now_ms();
	struct proxy_state *ps = a->proxy;
	if (ps->ktls_fallback_log_ms && now - ps->ktls_fallback_log_ms < KTLS_FALLBACK_LOG_MS)
		return;
	ps->ktls_fallback_log_ms = now;
	log_warn("HBONE %s: stays on OpenSSL in user space, kTLS not taken (%s): %s "
		 "(logged at most once a minute; moat_ktls_fallbacks_total counts each)",
		 h2conn_desc(h), reason, why);
}

void engine_hbone_closed(struct agent *a, struct h2conn *h)
{
	struct h2_ktls_stats st;
	h2conn_ktls_stats(h, &st);
	struct metric_labels l = {0};
	if (st.tickets_ignored) {
		metric_label(&l, "type", "session_ticket");
		metrics_counter_add(a->metrics, "moat_ktls_control_records_total", &l,
				    st.tickets_ignored);
	}
	if (st.key_updates) {
		l = (struct metric_labels){0};
		metric_label(&l, "type", "key_update");
		metrics_counter_add(a->metrics, "moat_ktls_control_records_total", &l,
				    st.key_updates);
	}
	if (st.rekey_failed) {
		l = (struct metric_labels){0};
		metrics_counter_add(a->metrics, "moat_ktls_rekey_failures_total", &l,
				    st.rekey_failed);
	}
}
