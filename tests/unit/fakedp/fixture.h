/* An agent for the fake-dataplane tests: the real state/ and proxy/ code, a configuration
 * directory loaded through the agent's own reload (agent_config_reload), pods enrolled by
 * hand (no netns, no cgroup: what enrollment would record for them) and the in-memory
 * dataplane of tests/unit/fake_dataplane.c. No root needed. */
#ifndef MOAT_TEST_FAKEDP_FIXTURE_H
#define MOAT_TEST_FAKEDP_FIXTURE_H

#include "../fake_dataplane.h"
#include "state/agent.h"

struct fx {
	struct agent *a;
	char dir[128];
	uint64_t next_cookie;
};

/* A loaded agent; NULL when the configuration does not load. */
struct fx *fx_new(const char *yaml);
void fx_free(struct fx *f);
/* Replace the configuration file and reload; returns agent_config_reload's result. */
int fx_reload(struct fx *f, const char *yaml);
/* Enroll ns/name from its WorkloadEntry (NULL when it has none) and resync the maps. */
struct pod *fx_pod(struct fx *f, const char *ns, const char *name);
/* The stable workload id of "ns/name" (pods and WorkloadEntries share them). */
uint32_t fx_wl_id(struct fx *f, const char *ns, const char *name);

/* YAML of one ambient WorkloadEntry. */
void fx_yaml_workload(struct sbuf *b, const char *ns, const char *name, const char *addr,
		      const char *sa, const char *labels);

#endif
