#!/usr/bin/env bash
# A pod with no WorkloadEntry: `moatctl enroll --service-account SA --label k=v ...` supplies its
# facts and moatd reads its address from the pod's netns. Its identity and labels then work in
# policies exactly like a WorkloadEntry's, and survive an agent restart. Bad enroll requests
# are refused with a clear reason.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=shop
for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
lab_up <<EOF
lab nwe$E2E_RUN_ID
underlay 192.168.84.0/24
node node1 192.168.84.11 10.244.1.0/24
pod node1 $NS/web 10.244.1.10
pod node1 $NS/cart 10.244.1.12
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{ mesh_yaml $NS; workload_yaml $NS web 10.244.1.10; } >"$E2E_CONFIG/mesh.yaml"
# cart has no WorkloadEntry: its labels come from the enroll request.
{ authz_yaml $NS cart-from-web app=cart,tier=backend ALLOW principals=cluster.local/ns/$NS/sa/web 8080
	authz_yaml $NS web-from-cart app=web ALLOW principals=cluster.local/ns/$NS/sa/cart-sa 8080
} >>"$E2E_CONFIG/mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"
start_agent node1
check "moatd is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check "enroll web (WorkloadEntry)" enroll web

netns=$(pod_info cart netns)
cg=$(pod_info cart cgroup)
out=$(moatctl_on node1 enroll --netns "$netns" --cgroup "$cg" --namespace $NS --name cart 2>&1)
check_eq "without a WorkloadEntry and without --service-account, enroll is refused (exit 2)" 2 "$?"
check_match "... saying what to do" 'no WorkloadEntry.*--service-account' "$out"
out=$(moatctl_on node1 enroll --netns "$netns" --cgroup "$cg" --namespace $NS --name cart \
	--service-account cart-sa --label oops 2>&1)
check_eq "a label without '=' is refused (exit 2)" 2 "$?"
check_match "... naming it" 'label oops: expected key=value' "$out"
out=$(moatctl_on node1 enroll --netns "$netns" --cgroup "$cg" --namespace $NS --name cart \
	--service-account cart-sa --label app=cart --label tier=backend 2>&1)
check_eq "enroll cart with --service-account and --label" 0 "$?"
check_match "... its address is read from its netns, its identity from the service account" \
	'enrolled shop/cart address 10.244.1.12 identity spiffe://cluster.local/ns/shop/sa/cart-sa' "$out"
check_match "moatctl workloads lists it as local with that identity" \
	'10\.244\.1\.12 +shop/cart +local .*spiffe://cluster.local/ns/shop/sa/cart-sa' "$(moatctl_on node1 workloads)"

probe_serve cart 8080 || e2e_abort "server in cart"
probe_serve web 8080 || e2e_abort "server in web"
probe_serve cart 9090 || e2e_abort "server in cart on 9090"
check_connect_ok "web -> cart:8080 allowed by a policy that selects cart by its enroll labels" web 10.244.1.12:8080
check_connect_denied "web -> cart:9090 denied (the policy names port 8080 only)" web 10.244.1.12:9090
check_connect_ok "cart -> web:8080 allowed for cart's enrolled identity (sa/cart-sa)" cart 10.244.1.10:8080
check "... and web's agent saw that identity" access_log_has node1 \
	'.type == "connection" and .direction == "inbound" and .dst_workload == "shop/web" and .src_identity == "spiffe://cluster.local/ns/shop/sa/cart-sa"'

# The facts survive a restart (the enrollment record carries them).
stop_agent_checked node1 "moatd stops"
start_agent node1
check "moatd restarts" wait_ready node1 30
check_connect_ok "after the restart web -> cart:8080 still works (labels restored)" web 10.244.1.12:8080
check_connect_denied "... and web -> cart:9090 is still denied" web 10.244.1.12:9090

stop_agent node1
lab_down_checked
e2e_finish
