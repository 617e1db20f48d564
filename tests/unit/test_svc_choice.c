/* Endpoint choice among allowed endpoints (state/svc_choice.c): only endpoints whose verdict
 * allows the source and whose weight is > 0 are ever chosen, weights split the choice, tried
 * endpoints are excluded for retries, the cached service verdict is DENY exactly when none
 * is allowed, and the deny summary names every endpoint and its deciding policy. */
#include <stdlib.h>
#include <string.h>

#include "moat/abi.h"
#include "state/svc_choice.h"
#include "test.h"

/* A port with endpoints named e0.. and the given weights. */
static struct svc_port make_port(struct svc_endpoint *eps, const uint32_t *w, size_t n)
{
	static char names[8][16];
	for (size_t i = 0; i < n; i++) {
		snprintf(names[i], sizeof(names[i]), "ns/e%u", (unsigned)(i % 8));
		eps[i] = (struct svc_endpoint){.name = names[i], .weight = w[i], .target_port = 8080};
	}
	return (struct svc_port){.port = 9080, .eps = eps, .n_eps = n};
}

/* The "engine" of these tests: endpoint names listed in arg are denied by ns/deny-<name>. */
static void decide_by_list(void *arg, const struct svc_endpoint *ep, struct svc_ep_verdict *out)
{
	const char *const *denied = arg;
	for (; *denied; denied++)
		if (strcmp(*denied, ep->name) == 0) {
			static char pol[8][32];
			size_t k = (size_t)(ep->name[4] - '0') % 8;
			snprintf(pol[k], sizeof(pol[k]), "ns/deny-e%u", (unsigned)k);
			*out = (struct svc_ep_verdict){.action = MOAT_ACTION_DENY,
						       .reason = MOAT_REASON_POLICY_DENY,
						       .policy = pol[k]};
			return;
		}
	*out = (struct svc_ep_verdict){.action = MOAT_ACTION_ALLOW, .reason = MOAT_REASON_ALLOWED};
}

TEST(svc_choice_never_picks_a_denied_endpoint)
{
	struct svc_endpoint eps[3];
	const uint32_t w[] = {90, 10, 5};
	struct svc_port p = make_port(eps, w, 3);
	const char *denied[] = {"ns/e0", NULL};
	struct svc_ep_verdict v[3];
	bool allowed[3];
	CHECK_INT(svc_decide_endpoints(&p, decide_by_list, denied, v, allowed), 2);
	CHECK(!allowed[0] && allowed[1] && allowed[2]);
	int count[3] = {0};
	for (uint64_t r = 0; r < 1500; r++) {
		int i = svc_choose(&p, allowed, NULL, r * 7919);
		REQUIRE(i >= 0 && i < 3);
		count[i]++;
	}
	CHECK_INT(count[0], 0);
	/* 10:5 among the allowed: exactly two thirds of an evenly spread range of draws. */
	CHECK_INT(count[1], 1000);
	CHECK_INT(count[2], 500);
}

TEST(svc_choice_weights_split_among_allowed)
{
	struct svc_endpoint eps[2];
	const uint32_t w[] = {90, 10};
	struct svc_port p = make_port(eps, w, 2);
	bool allowed[2] = {true, true};
	int count[2] = {0};
	for (uint64_t r = 0; r < 1000; r++)
		count[svc_choose(&p, allowed, NULL, r)]++;
	CHECK_INT(count[0], 900);
	CHECK_INT(count[1], 100);
}

TEST(svc_choice_weight_zero_is_listed_never_chosen)
{
	struct svc_endpoint eps[2];
	const uint32_t w[] = {0, 1};
	struct svc_port p = make_port(eps, w, 2);
	const char *none[] = {NULL};
	struct svc_ep_verdict v[2];
	bool allowed[2];
	CHECK_INT(svc_decide_endpoints(&p, decide_by_list, none, v, allowed), 1);
	CHECK(!allowed[0]);
	for (uint64_t r = 0; r < 50; r++)
		CHECK_INT(svc_choose(&p, allowed, NULL, r), 1);
	/* only the weight-0 one left: nothing to choose, and the service verdict is DENY */
	const char *deny1[] = {"ns/e1", NULL};
	CHECK_INT(svc_decide_endpoints(&p, decide_by_list, deny1, v, allowed), 0);
	CHECK_INT(svc_choose(&p, allowed, NULL, 3), -1);
	struct svc_ep_verdict pv = svc_port_verdict(&p, v, 0);
	CHECK_INT(pv.action, MOAT_ACTION_DENY);
	CHECK_INT(pv.reason, MOAT_REASON_NO_ENDPOINT);
	CHECK_STR(pv.policy, "ns/deny-e1");
}

TEST(svc_choice_retry_excludes_tried_endpoints)
{
	struct svc_endpoint eps[3];
	const uint32_t w[] = {1, 1, 1};
	struct svc_port p = make_port(eps, w, 3);
	bool allowed[3] = {true, true, true}, tried[3] = {false, false, false};
	bool seen[3] = {false, false, false};
	for (int attempt = 0; attempt < 3; attempt++) {
		int i = svc_choose(&p, allowed, tried, 12345);
		REQUIRE(i >= 0);
		CHECK(!seen[i]);
		seen[i] = tried[i] = true;
	}
	CHECK_INT(svc_choose(&p, allowed, tried, 12345), -1);
}

TEST(svc_choice_service_verdict_allow_when_any_endpoint_allows)
{
	struct svc_endpoint eps[2];
	const uint32_t w[] = {1, 1};
	struct svc_port p = make_port(eps, w, 2);
	const char *deny0[] = {"ns/e0", NULL};
	struct svc_ep_verdict v[2];
	bool allowed[2];
	size_t n = svc_decide_endpoints(&p, decide_by_list, deny0, v, allowed);
	CHECK_INT(svc_port_verdict(&p, v, n).action, MOAT_ACTION_ALLOW);
	const char *both[] = {"ns/e0", "ns/e1", NULL};
	n = svc_decide_endpoints(&p, decide_by_list, both, v, allowed);
	CHECK_INT(n, 0);
	CHECK_INT(svc_port_verdict(&p, v, n).action, MOAT_ACTION_DENY);
}

TEST(svc_choice_deny_summary_names_each_endpoint_and_policy)
{
	struct svc_endpoint eps[3];
	const uint32_t w[] = {1, 1, 0};
	struct svc_port p = make_port(eps, w, 3);
	const char *deny01[] = {"ns/e0", "ns/e1", NULL};
	struct svc_ep_verdict v[3];
	bool allowed[3];
	CHECK_INT(svc_decide_endpoints(&p, decide_by_list, deny01, v, allowed), 0);
	struct sbuf b;
	sbuf_init(&b);
	svc_deny_summary(&p, v, &b);
	CHECK_STR(b.s, "ns/e0: DENY by ns/deny-e0; ns/e1: DENY by ns/deny-e1; ns/e2: weight 0 "
		       "(never chosen)");
	sbuf_free(&b);
	struct svc_port empty = {.port = 1};
	sbuf_init(&b);
	svc_deny_summary(&empty, v, &b);
	CHECK_STR(b.s, "no endpoints");
	sbuf_free(&b);
	CHECK_INT(svc_choose(&empty, allowed, NULL, 1), -1);
}
