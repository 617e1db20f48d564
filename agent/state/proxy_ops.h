/* What state/ asks of the proxy room. proxy/ implements these (proxy/state_ops.c) and owns
 * what lies behind them: the listeners of each pod, the connection records and the accepted
 * HBONE connections (agent->proxy, a type private to proxy/) and the HBONE pool. state/ includes
 * this header and never one of proxy/'s, so the rooms depend one way only: proxy -> state
 * (tests/unit/test_rooms.c fails if a cycle between rooms comes back). */
#ifndef MOAT_STATE_PROXY_OPS_H
#define MOAT_STATE_PROXY_OPS_H

struct agent;
struct pod;
struct err;

/* Open the pod's listeners inside its netns: 15001, 15008 and 15006, IPv4 always, IPv6 where
 * the pod has an IPv6 address (required then) or its netns has IPv6 (optional). */
int proxy_pod_listen(struct agent *a, struct pod *p, struct err *e);
/* Close them (nothing happens for listeners never opened). */
void proxy_pod_unlisten(struct agent *a, struct pod *p);
/* The pod leaves (unenroll, agent stop): its pooled tunnels, the HBONE connections accepted
 * for it and every connection record that involves it end. */
void proxy_pod_drop(struct agent *a, struct pod *p);
/* The configuration in force changed: re-evaluate established inbound connections and close
 * those the policy now denies (late rejections). */
void proxy_policy_changed(struct agent *a);

#endif
