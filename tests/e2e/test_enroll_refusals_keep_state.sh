#!/usr/bin/env bash
# Enrollment validates before it changes anything: a failed re-enroll of a running pod (wrong
# netns, another pod's netns) leaves the pod working; the node's own netns and pods that opt
# out of the mesh (istio.io/dataplane-mode: none, as istio-cni reads it) are refused. Unenroll
# puts back every sysctl, rule and route enroll changed in the pod, also after an agent restart.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=en
for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
lab_up <<EOF
lab er$E2E_RUN_ID
underlay 192.168.94.0/24
node node1 192.168.94.11 10.244.1.0/24
pod node1 $NS/web 10.244.1.10
pod node1 $NS/cart 10.244.1.12
pod node1 $NS/legacy 10.244.1.14
pod node1 $NS/fresh 10.244.1.16
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{
	mesh_yaml $NS
	workload_yaml $NS web 10.244.1.10
	workload_yaml $NS cart 10.244.1.12
	workload_yaml $NS fresh 10.244.1.16
	cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: legacy, namespace: $NS}
spec: {address: 10.244.1.14, serviceAccount: legacy, labels: {app: legacy, istio.io/dataplane-mode: none}}
EOF
} >"$E2E_CONFIG/mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"
start_agent node1
check "moatd is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check "enroll web" enroll web
check "enroll cart" enroll cart
probe_serve web 8080 || e2e_abort "server in web"
check_connect_ok "cart -> web:8080 works" cart 10.244.1.10:8080

# ---- a failed re-enroll leaves the running pod alone
cg=$(pod_info web cgroup)
out=$(moatctl_on node1 enroll --netns "$(pod_info legacy netns)" --cgroup "$cg" --namespace $NS --name web 2>&1)
check_eq "re-enrolling web with a netns that lacks its address is refused (exit 2)" 2 "$?"
check_match "... saying the running pod stays" "keeps running.*does not have" "$out"
check_connect_ok "... and cart -> web:8080 still works" cart 10.244.1.10:8080
check_match "... web is still listed as local" '10\.244\.1\.10 +en/web +local' "$(moatctl_on node1 workloads)"
out=$(moatctl_on node1 enroll --netns "$(pod_info cart netns)" --cgroup "$cg" --namespace $NS --name web 2>&1)
check_eq "re-enrolling web with cart's netns is refused (exit 2)" 2 "$?"
check_match "... naming the pod that netns belongs to" "network namespace is pod en/cart's" "$out"
check_connect_ok "... and cart -> web:8080 still works" cart 10.244.1.10:8080

# ---- the node's own netns, and pods that opted out
out=$(moatctl_on node1 enroll --netns "$(node_info node1 netns)" --cgroup "$(node_info node1 cgroup)" \
	--namespace $NS --name nodeitself --service-account x 2>&1)
check_eq "enrolling the node's own netns is refused (exit 2)" 2 "$?"
check_match "... saying why" "node's own network namespace" "$out"
out=$(enroll legacy 2>&1)
check_eq "enrolling a pod whose WorkloadEntry says istio.io/dataplane-mode: none is refused" 2 "$?"
check_match "... naming the entry and the label" "WorkloadEntry \(.*mesh.yaml:[0-9]+\) opts out of the mesh \(istio.io/dataplane-mode: none\)" "$out"
netns=$(pod_info legacy netns)
out=$(moatctl_on node1 enroll --netns "$netns" --cgroup "$(pod_info legacy cgroup)" --namespace other \
	--name legacy --service-account legacy --label istio.io/dataplane-mode=none 2>&1)
check_eq "... and so is an enroll request labelled istio.io/dataplane-mode=none" 2 "$?"
check_match "moatctl workloads does not list the refused pods as local" '^$' \
	"$(moatctl_on node1 workloads | grep -E 'nodeitself|legacy +local')"

# ---- unenroll puts back what enroll changed
pod_net_state() { # POD: sysctl, rules, routes and TC of the pod's netns
	lab_exec "$1" sh -c 'echo "tcp_fwmark_accept=$(sysctl -n net.ipv4.tcp_fwmark_accept)";
		echo "fwmark_reflect=$(sysctl -n net.ipv4.fwmark_reflect) $(sysctl -n net.ipv6.fwmark_reflect)";
		ip rule; ip -6 rule; ip route show table all; ip -6 route show table all;
		for d in lo eth0; do tc qdisc show dev $d; tc filter show dev $d ingress; tc filter show dev $d egress; done' 2>&1
}
pristine=$(pod_net_state fresh)
check "enroll fresh" enroll fresh
check_match "enroll set tcp_fwmark_accept in the pod" 'tcp_fwmark_accept=1' "$(pod_net_state fresh)"
check_match "... and fwmark_reflect (IPv4 and IPv6: resets come back to the agent)" 'fwmark_reflect=1 1' "$(pod_net_state fresh)"
check "unenroll fresh" unenroll fresh
check_eq "unenroll restored the pod's sysctls, rules, routes and TC exactly" "$pristine" "$(pod_net_state fresh)"
check "enroll fresh again" enroll fresh
stop_agent node1
start_agent node1
check "moatd restarts (and takes fresh back)" wait_ready node1 30
check "unenroll fresh through the new agent" unenroll fresh
# Known limit (BPF room): an agent that took the pod back cannot tell whether the pod's empty
# clsact qdisc was moat's, so it leaves it; its filters are gone. Everything else must match.
check_eq "... which also restored sysctls, rules, routes and TC filters (the original value was recorded)" \
	"$(grep -v 'qdisc clsact' <<<"$pristine")" "$(pod_net_state fresh | grep -v 'qdisc clsact')"
check_connect_ok "cart -> web:8080 still works after the restart" cart 10.244.1.10:8080

stop_agent_checked node1 "moatd stops cleanly"
e2e_finish
