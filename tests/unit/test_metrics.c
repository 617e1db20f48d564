/* Prometheus metrics store: exact exposition text, accumulation, ordering, scale. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "obs/metrics.h"
#include "test.h"

static char *render(struct metrics *m)
{
	struct sbuf b;
	sbuf_init(&b);
	metrics_render(m, &b);
	return sbuf_take(&b);
}

static size_t count_lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

TEST(metrics_render_exact)
{
	struct metrics *m = metrics_new();
	metrics_describe(m, "istio_tcp_connections_opened_total", "counter",
			 "The total number of TCP connections opened");
	metrics_describe(m, "moat_workloads", "gauge", "Enrolled workloads.\nPer node \\ agent");
	struct metric_labels l = {0};
	metric_label(&l, "reporter", "destination");
	metric_label(&l, "source_workload", "web");
	metrics_counter_add(m, "istio_tcp_connections_opened_total", &l, 2);
	metrics_counter_add(m, "istio_tcp_connections_opened_total", &l, 3);
	metrics_gauge_set(m, "moat_workloads", NULL, 4);
	char *out = render(m);
	CHECK_STR(out, "# HELP istio_tcp_connections_opened_total The total number of TCP "
		       "connections opened\n"
		       "# TYPE istio_tcp_connections_opened_total counter\n"
		       "istio_tcp_connections_opened_total{reporter=\"destination\","
		       "source_workload=\"web\"} 5\n"
		       "# HELP moat_workloads Enrolled workloads.\\nPer node \\\\ agent\n"
		       "# TYPE moat_workloads gauge\n"
		       "moat_workloads 4\n");
	free(out);
	metrics_free(m);
}

TEST(metrics_label_value_escaping)
{
	struct metrics *m = metrics_new();
	struct metric_labels l = {0};
	metric_label(&l, "v", "a\"b\\c\nd");
	metrics_counter_add(m, "x_total", &l, 1);
	char *out = render(m);
	CHECK_CONTAINS(out, "x_total{v=\"a\\\"b\\\\c\\nd\"} 1\n");
	/* The stored value is the raw one: the same raw labels find the series. */
	CHECK(metrics_value(m, "x_total", &l) == 1);
	free(out);
	metrics_free(m);
}

TEST(metrics_family_and_series_order)
{
	struct metrics *m = metrics_new();
	/* undescribed families first in time, described later: described still come first */
	metrics_counter_add(m, "zzz_total", NULL, 1);
	metrics_counter_add(m, "yyy_total", NULL, 1);
	metrics_describe(m, "bbb_total", "counter", "b");
	metrics_describe(m, "aaa", "gauge", "a");
	const char *names[] = {"web", "api", "db"};
	for (size_t i = 0; i < 3; i++) {
		struct metric_labels l = {0};
		metric_label(&l, "app", names[i]);
		metrics_counter_add(m, "bbb_total", &l, i + 1);
	}
	metrics_gauge_set(m, "aaa", NULL, 1);
	char *out = render(m);
	CHECK_STR(out, "# HELP bbb_total b\n"
		       "# TYPE bbb_total counter\n"
		       "bbb_total{app=\"api\"} 2\n"
		       "bbb_total{app=\"db\"} 3\n"
		       "bbb_total{app=\"web\"} 1\n"
		       "# HELP aaa a\n"
		       "# TYPE aaa gauge\n"
		       "aaa 1\n"
		       "# TYPE yyy_total untyped\n"
		       "yyy_total 1\n"
		       "# TYPE zzz_total untyped\n"
		       "zzz_total 1\n");
	free(out);
	/* a new series after a render is placed in order too */
	struct metric_labels l = {0};
	metric_label(&l, "app", "cache");
	metrics_counter_add(m, "bbb_total", &l, 9);
	out = render(m);
	CHECK_CONTAINS(out, "bbb_total{app=\"api\"} 2\nbbb_total{app=\"cache\"} 9\n"
			    "bbb_total{app=\"db\"} 3\n");
	free(out);
	metrics_free(m);
}

TEST(metrics_counters_accumulate_any_label_order)
{
	struct metrics *m = metrics_new();
	struct metric_labels a = {0}, b = {0}, other = {0};
	metric_label(&a, "src", "x");
	metric_label(&a, "dst", "y");
	metric_label(&b, "dst", "y"); /* same set, other order */
	metric_label(&b, "src", "x");
	metric_label(&other, "src", "x");
	metric_label(&other, "dst", "z");
	metrics_counter_add(m, "c_total", &a, 10);
	metrics_counter_add(m, "c_total", &b, 5);
	metrics_counter_add(m, "c_total", &other, 1);
	CHECK(metrics_value(m, "c_total", &a) == 15);
	CHECK(metrics_value(m, "c_total", &b) == 15);
	CHECK(metrics_value(m, "c_total", &other) == 1);
	/* large counters stay exact integers */
	metrics_counter_add(m, "big_total", NULL, 18000000000000000000ull);
	metrics_counter_add(m, "big_total", NULL, 7);
	char *out = render(m);
	CHECK_CONTAINS(out, "c_total{src=\"x\",dst=\"y\"} 15\n");
	CHECK_CONTAINS(out, "big_total 18000000000000000007\n");
	CHECK_INT(count_lines(out), 5); /* 2 TYPE lines + 3 series */
	free(out);
	metrics_free(m);
}

TEST(metrics_gauges_set_add_and_format)
{
	struct metrics *m = metrics_new();
	metrics_describe(m, "g", "gauge", NULL);
	struct metric_labels l = {0};
	metric_label(&l, "k", "v");
	metrics_gauge_set(m, "g", &l, 2.5);
	metrics_gauge_add(m, "g", &l, 1);
	CHECK(metrics_value(m, "g", &l) == 3.5);
	metrics_gauge_add(m, "g", &l, -10);
	CHECK(metrics_value(m, "g", &l) == -6.5);
	const struct {
		double v;
		const char *text;
	} cases[] = {{0.1, "0.1"},     {1e-7, "1e-07"},        {-3, "-3"},
		     {1e20, "1e+20"},  {123456789, "123456789"}, {0.3333333333333333, "0.3333333333333333"},
		     {-0.0, "0"}};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		metrics_gauge_set(m, "g", &l, cases[i].v);
		char *out = render(m);
		char want[128];
		snprintf(want, sizeof(want), "g{k=\"v\"} %s\n", cases[i].text);
		CHECK_CONTAINS(out, want);
		free(out);
	}
	/* no HELP line without help text */
	char *out = render(m);
	CHECK(strncmp(out, "# TYPE g gauge\n", 15) == 0);
	free(out);
	metrics_free(m);
}

TEST(metrics_value_absent_is_zero)
{
	struct metrics *m = metrics_new();
	struct metric_labels l = {0};
	metric_label(&l, "a", "1");
	CHECK(metrics_value(m, "nothing", &l) == 0);
	metrics_counter_add(m, "n_total", &l, 1);
	struct metric_labels l2 = {0};
	metric_label(&l2, "a", "2");
	CHECK(metrics_value(m, "n_total", &l2) == 0);
	CHECK(metrics_value(m, "n_total", NULL) == 0);
	CHECK(metrics_value(m, "n_total", &l) == 1);
	metrics_free(m);
}

TEST(metrics_labels_duplicates_and_limit)
{
	struct metric_labels l = {0};
	metric_label(&l, "a", "1");
	metric_label(&l, "a", "2");
	CHECK_INT(l.n, 1);
	CHECK_STR(l.value[0], "2");
	char keys[30][16]; /* labels hold pointers: the strings must outlive l */
	for (int i = 0; i < 30; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		metric_label(&l, keys[i], "v");
		if (i >= METRIC_MAX_LABELS - 1)
			CHECK_INT(l.n, METRIC_MAX_LABELS);
	}
	CHECK_INT(l.n, METRIC_MAX_LABELS);
}

TEST(metrics_invalid_names_ignored)
{
	struct metrics *m = metrics_new();
	struct metric_labels bad = {0};
	metric_label(&bad, "bad-key", "v");
	metrics_counter_add(m, "ok_total", &bad, 1);
	metrics_counter_add(m, "9bad", NULL, 1);
	metrics_counter_add(m, "bad name", NULL, 1);
	char *out = render(m);
	CHECK_STR(out, "");
	free(out);
	metrics_free(m);
}

/* ztunnel's label set: 19 labels on every connection series. */
static const char *zt_keys[] = {
	"reporter", "source_workload", "source_workload_namespace", "source_principal",
	"source_app", "source_version", "source_cluster", "destination_service",
	"destination_service_namespace", "destination_service_name", "destination_workload",
	"destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_cluster", "request_protocol", "response_flags",
	"connection_security_policy",
};

static void zt_labels(struct metric_labels *l, char vals[][64], int i)
{
	memset(l, 0, sizeof(*l));
	for (size_t k = 0; k < ARRAY_SIZE(zt_keys); k++) {
		if (k == 1)
			snprintf(vals[k], 64, "web-%d", i % 100);
		else if (k == 10)
			snprintf(vals[k], 64, "api-%d", i / 100);
		else if (k == 3)
			snprintf(vals[k], 64, "spiffe://cluster.local/ns/ns%d/sa/web", i % 100);
		else
			snprintf(vals[k], 64, "v%zu", k);
		metric_label(l, zt_keys[k], vals[k]);
	}
}

TEST(metrics_10k_series_with_ztunnel_labels)
{
	struct metrics *m = metrics_new();
	metrics_describe(m, "istio_tcp_sent_bytes_total", "counter", "bytes");
	char vals[ARRAY_SIZE(zt_keys)][64];
	struct metric_labels l;
	uint64_t t0 = now_ms();
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 10000; i++) {
			zt_labels(&l, vals, i);
			metrics_counter_add(m, "istio_tcp_sent_bytes_total", &l, (uint64_t)i);
		}
	}
	uint64_t t_update = now_ms() - t0;
	t0 = now_ms();
	char *out = render(m);
	uint64_t t_render = now_ms() - t0;
	CHECK_INT(count_lines(out), 10002);
	zt_labels(&l, vals, 4321);
	CHECK(metrics_value(m, "istio_tcp_sent_bytes_total", &l) == 3 * 4321);
	/* Times are printed, never asserted (a loaded machine is not a regression); make bench
	 * is where speed is measured. */
	printf("    30000 updates x 19 labels: %llu ms, render 10000 series: %llu ms (%zu bytes)\n",
	       (unsigned long long)t_update, (unsigned long long)t_render, strlen(out));
	free(out);
	metrics_free(m);
}

TEST(metrics_kind_follows_declared_type)
{
	struct metrics *m = metrics_new();
	metrics_describe(m, "c_total", "counter", "c");
	metrics_gauge_set(m, "c_total", NULL, 7.9); /* a counter stays an integer */
	metrics_counter_add(m, "c_total", NULL, 1);
	metrics_describe(m, "g", "gauge", "g");
	metrics_counter_add(m, "g", NULL, 2); /* a gauge keeps float semantics */
	metrics_gauge_add(m, "g", NULL, 0.5);
	char *out = render(m);
	CHECK_CONTAINS(out, "\nc_total 8\n");
	CHECK_CONTAINS(out, "\ng 2.5\n");
	free(out);
	metrics_free(m);
}
