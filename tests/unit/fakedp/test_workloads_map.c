/* The workloads map kept by difference (state/wl_map.c) through the agent's own reload,
 * against the in-memory dataplane: a reload that changes one workload writes that one
 * entry, one removed deletes that one entry, an unchanged reload writes nothing, and after a
 * failed write the next sync reconciles the whole map, which ends up holding exactly the
 * configuration's addresses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "test.h"

#define N_WL 20

/* N_WL workloads in ns "shop"; `changed` (or -1) runs as another service account, `gone`
 * (or -1) is left out, `extra` adds one more. */
static char *wl_yaml(int changed, int gone, bool extra)
{
	struct sbuf b = {0};
	for (int i = 0; i < N_WL + (extra ? 1 : 0); i++) {
		char name[16], addr[32];
		if (i == gone)
			continue;
		snprintf(name, sizeof(name), "w%d", i);
		snprintf(addr, sizeof(addr), "10.7.0.%d", i + 1);
		fx_yaml_workload(&b, "shop", name, addr, i == changed ? "other" : "sa", "app: x");
	}
	return b.s;
}

static int reload(struct fx *f, int changed, int gone, bool extra)
{
	char *y = wl_yaml(changed, gone, extra);
	fake_dp_reset_counts(f->a->dp);
	int rc = fx_reload(f, y);
	free(y);
	return rc;
}

static bool has_addr(struct fx *f, const char *text)
{
	struct moat_addr a;
	struct moat_workload w;
	return addr_parse(text, &a) && fake_dp_workload(f->a->dp, &a, &w);
}

TEST(workloads_map_one_workload_changed_writes_one_entry)
{
	char *y = wl_yaml(-1, -1, false);
	struct fx *f = fx_new(y);
	free(y);
	REQUIRE(f);
	CHECK_INT(fake_dp_entries(f->a->dp, FDP_WORKLOADS), N_WL);

	REQUIRE(reload(f, 3, -1, false) == 0); /* w3's identity changed */
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->writes, 1);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->deletes, 0);
	struct moat_addr a;
	struct moat_workload w;
	REQUIRE(addr_parse("10.7.0.4", &a));
	CHECK(fake_dp_workload(f->a->dp, &a, &w) && w.identity != 0);
	uint32_t other = w.identity;
	REQUIRE(addr_parse("10.7.0.5", &a));
	CHECK(fake_dp_workload(f->a->dp, &a, &w) && w.identity != other);

	REQUIRE(reload(f, 3, 7, false) == 0); /* w7 removed */
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->writes, 0);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->deletes, 1);
	CHECK(!has_addr(f, "10.7.0.8"));

	REQUIRE(reload(f, 3, 7, true) == 0); /* w20 added */
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->writes, 1);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->deletes, 0);
	CHECK(has_addr(f, "10.7.0.21"));
	CHECK_INT(fake_dp_entries(f->a->dp, FDP_WORKLOADS), N_WL);
	fx_free(f);
}

TEST(workloads_map_unchanged_sync_writes_nothing)
{
	char *y = wl_yaml(-1, -1, false);
	struct fx *f = fx_new(y);
	free(y);
	REQUIRE(f);
	fake_dp_reset_counts(f->a->dp);
	agent_sync_dataplane(f->a);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->writes, 0);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->deletes, 0);
	fx_free(f);
}

TEST(workloads_map_after_a_failed_write_the_next_sync_rewrites_it_whole)
{
	char *y = wl_yaml(-1, -1, false);
	struct fx *f = fx_new(y);
	free(y);
	REQUIRE(f);
	fake_dp_fail_next(f->a->dp, FDP_WORKLOADS);
	REQUIRE(reload(f, 3, -1, false) == 0); /* the one write fails (not counted) */
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->writes, 0);
	REQUIRE(reload(f, 3, 5, false) == 0); /* reconcile: every address again, w5 gone */
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->writes, N_WL - 1);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->deletes, 1);
	CHECK_INT(fake_dp_entries(f->a->dp, FDP_WORKLOADS), N_WL - 1);
	CHECK(!has_addr(f, "10.7.0.6"));
	REQUIRE(reload(f, 3, 5, false) == 0);
	CHECK_INT(fake_dp_counts(f->a->dp, FDP_WORKLOADS)->writes, 0);
	fx_free(f);
}
