#!/usr/bin/env bash
# The live service table: moatd builds it from the configuration and the pods enrolled on its
# node. `moatctl services` lists a Service's endpoints (a WorkloadEntry with its weight and
# named target port, an enrolled pod without a WorkloadEntry selected by its enroll labels,
# and only while it is enrolled); a reload changes weights and adds Services without a
# restart; `moatctl explain --to VIP:PORT` answers for every endpoint from moatd's own
# engine; a Service that selects nothing is logged as a warning (and `moatctl lint` names it
# offline). Control plane only: the connections to VIPs are the data path's tests.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=bookinfo
for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
lab_up <<EOF
lab svt$E2E_RUN_ID
underlay 192.168.87.0/24
node node1 192.168.87.11 10.244.1.0/24
pod node1 $NS/reviews-v1 10.244.1.10
pod node1 $NS/reviews-pod 10.244.1.11
pod node1 $NS/client 10.244.1.12
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"

# write_config V1-WEIGHT [EXTRA-YAML]: the mesh, reviews-v1 (WorkloadEntry, port name http),
# client, the reviews Service, a DENY for client -> reviews-v1, then EXTRA-YAML.
write_config() {
	{
		mesh_yaml $NS
		workload_yaml $NS client 10.244.1.12
		cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: $NS}
spec: {address: 10.244.1.10, serviceAccount: reviews, labels: {app: reviews, version: v1}, weight: $1, ports: {http: 8081}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: $NS}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports:
  - {name: plain, port: 9080, targetPort: 8080}
  - {name: named, port: 80, targetPort: http}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client-v1, namespace: $NS}
spec:
  selector: {matchLabels: {version: v1}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/$NS/sa/client"]}}]
EOF
		printf '%s' "${2:-}"
	} >"$E2E_CONFIG/mesh.yaml.tmp" && mv "$E2E_CONFIG/mesh.yaml.tmp" "$E2E_CONFIG/mesh.yaml"
}
write_config 90
make_ca >/dev/null || e2e_abort "moatctl ca init"
start_agent node1
check "moatd is ready" wait_ready node1 30 || e2e_abort "moatd starts"

out=$(moatctl_on node1 services)
check_match "moatctl services lists the Service with its host and VIP" \
	'Service bookinfo/reviews +id 1 +host reviews.bookinfo.svc.cluster.local +VIPs 10.96.0.20' "$out"
check_match "... reviews-v1 on port 9080 at its targetPort with weight 90" \
	'bookinfo/reviews-v1 +10\.244\.1\.10:8080 +weight 90 +ok' "$out"
check_match "... and on port 80 at the port its WorkloadEntry names http" \
	'bookinfo/reviews-v1 +10\.244\.1\.10:8081 +weight 90' "$out"
check_fails "... no pod endpoint before the pod is enrolled" grep -q reviews-pod <<<"$out"

check "enroll client (WorkloadEntry)" enroll client
check "enroll reviews-pod without a WorkloadEntry, labelled app=reviews" \
	enroll reviews-pod --service-account reviews --label app=reviews
json=$(moatctl_on node1 services -o json)
check_json "moatctl services -o json: the enrolled pod is an endpoint of port 9080 (weight 1)" "$json" \
	'.[0].ports[0].port == 9080' \
	'[.[0].ports[0].endpoints[] | select(.endpoint == "bookinfo/reviews-pod" and .kind == "pod" and .address == "10.244.1.11:8080" and .weight == 1 and .health == "ok")] | length == 1' \
	'[.[0].ports[0].endpoints[] | select(.endpoint == "bookinfo/reviews-v1" and .weight == 90)] | length == 1'
check_json "... but not of port 80: a pod without a WorkloadEntry declares no port names" "$json" \
	'[.[0].ports[1].endpoints[].endpoint] == ["bookinfo/reviews-v1"]'

out=$(moatctl_on node1 explain --from spiffe://cluster.local/ns/$NS/sa/client --to 10.96.0.20:9080)
check_eq "explain --to VIP:PORT (live): exit 0, an endpoint is eligible" 0 "$?"
check_match "... it names the Service and counts the eligible endpoints" \
	'2 endpoints, 1 eligible for the weighted choice' "$out"
check_match "... the pod endpoint is eligible with its whole share" \
	'endpoint bookinfo/reviews-pod 10\.244\.1\.11:8080 weight 1: eligible, share 100\.0%' "$out"
check_match "... reviews-v1 is denied, by its policy" \
	'endpoint bookinfo/reviews-v1 10\.244\.1\.10:8080 weight 90: not eligible: denied' "$out"
check_match "... naming the deciding policy" 'policy: bookinfo/deny-client-v1 rule 1' "$out"
json=$(moatctl_on node1 explain --from spiffe://cluster.local/ns/$NS/sa/client --to 10.96.0.20:9080 -o json)
check_json "explain -o json for the VIP" "$json" '.verdict == "ALLOW"' '.eligible == 1' \
	'.service.host == "reviews.bookinfo.svc.cluster.local"' \
	'[.endpoints[] | select(.endpoint == "bookinfo/reviews-v1") | .decision.policy] == ["bookinfo/deny-client-v1"]'

# A reload: a new weight, and a second Service that selects nothing (a warning in the log).
write_config 50 "---
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: $NS}
spec: {clusterIP: 10.96.0.21, selector: {app: nobody}, ports: [{port: 80}]}
"
check "moatctl reload" moatctl_on node1 reload
out=$(moatctl_on node1 services)
check_match "after the reload reviews-v1 has weight 50, without a restart" \
	'bookinfo/reviews-v1 +10\.244\.1\.10:8080 +weight 50' "$out"
check_match "... the new Service is listed with the next id" 'Service bookinfo/nobody +id 2 ' "$out"
check_match "... and the Service keeps its id" 'Service bookinfo/reviews +id 1 ' "$out"
check "moatd logged that the new Service selects nothing" \
	grep -q 'Service bookinfo/nobody: spec.selector: selects no WorkloadEntry' <(agent_log node1)

# Offline, from the same directory: lint names the Service that selects nothing and the
# summary counts it; explain knows no enrolled pod, so only reviews-v1 (denied) is left.
out=$("$MOATCTL" lint "$E2E_CONFIG")
check_eq "moatctl lint: warnings only (exit 0)" 0 "$?"
check_match "... naming the Service that selects nothing at its file:line" \
	'warning: .*/mesh\.yaml:[0-9]+: Service bookinfo/nobody: spec\.selector: selects no WorkloadEntry' "$out"
out=$("$MOATCTL" explain --config "$E2E_CONFIG" --from spiffe://cluster.local/ns/$NS/sa/client \
	--to 10.96.0.20:9080)
check_eq "offline explain --to VIP:PORT: no enrolled pods, the only endpoint denied (exit 1)" 1 "$?"
check_match "... saying none is eligible" '1 endpoint, 0 eligible for the weighted choice' "$out"

check "unenroll reviews-pod" unenroll reviews-pod
check_fails "after unenroll the pod is no endpoint any more" grep -q reviews-pod <<<"$(moatctl_on node1 services)"

stop_agent node1
lab=$E2E_LAB
"$LAB_TOOL" down "$lab" >/dev/null 2>&1
E2E_LAB=""
check_eq "no namespace, cgroup, pin, state or process left" "" "$(lab_traces "$lab")"
e2e_finish
