#!/usr/bin/env bash
# Seed 000, Diagram 8, with every agent reached through its Kubernetes Service: the lab DNS
# answers NAME.agensys-demo-1.svc.cluster.local with a ClusterIP, moat captures the connect to
# the ClusterIP and reaches the selected pod. Three nodes, one moatd each, one CA, STRICT.
#  - every path is decided exactly as by pod IP: the hub reaches each spoke by name and by
#    address, 1 MiB each way sha256-intact, logged on both ends with the verified identity;
#    every blocked path fails at connect() with EPERM by name and by address, logged;
#  - nothing reaches a pod in plaintext: on the underlay pod-to-pod traffic is HBONE (15008)
#    only, no packet carries a ClusterIP, a text canary sent by name never appears; every
#    inbound record is mutual TLS (or joined in the kernel on one node); the apps saw only
#    the hub; a pod without an agent cannot reach a Service at all.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=agensys-demo-1
MIB=1048576
e2e_require_agent tcpdump

agensys_matrix # ADDR, PORT, NODE, SPOKES (lib.sh)
declare -A VIP=([orchestrator-agent]=10.96.0.10 [pr-agent]=10.96.0.11 [summary-agent]=10.96.0.12
	[mcp-code-scanning]=10.96.0.13 [github-mcp-server]=10.96.0.14)
service_lines() { for w in orchestrator-agent "${SPOKES[@]}"; do echo "service $NS/$w ${VIP[$w]}"; done; }
lab_up <<EOF
lab s0s$E2E_RUN_ID
underlay 192.168.85.0/24
node node1 192.168.85.11 10.244.1.0/24
node node2 192.168.85.12 10.244.2.0/24
node node3 192.168.85.13 10.244.3.0/24
$(agensys_pod_lines $NS)
pod node2 default/outsider 10.244.2.50
internet 203.0.113.0/24 203.0.113.1
dns 203.0.113.53
services 10.96.0.0/16
$(service_lines)
EOF

pod_target() { echo "${ADDR[$1]}:${PORT[$1]}"; }
svc_name() { echo "$1.$NS.svc.cluster.local"; }
svc_target() { echo "$(svc_name "$1"):${PORT[$1]}"; }
vip_target() { echo "${VIP[$1]}:${PORT[$1]}"; }

# ---------------------------------------------------------------- configuration
workloads() { for w in orchestrator-agent "${SPOKES[@]}"; do workload_yaml "$NS" "$w" "${ADDR[$w]}"; done; }
agensys_strict_config $NS workloads
for w in orchestrator-agent "${SPOKES[@]}"; do service_yaml $NS "$w" "${VIP[$w]}" "${PORT[$w]}"; done |
	sed '1d' >"$E2E_CONFIG/00-services.yaml"
check "seed 000 with its Services passes moatctl lint" "$MOATCTL" lint "$E2E_CONFIG"

agensys_start $MIB
for w in "${SPOKES[@]}"; do
	check_eq "the lab DNS resolves $(svc_name "$w") to its ClusterIP" "${VIP[$w]}" \
		"$(lab_exec orchestrator-agent getent hosts "$(svc_name "$w")" | awk '{ print $1 }')"
done

PCAP=$E2E_TMP/underlay.pcap
underlay_capture_start "$PCAP"

# ---------------------------------------------------------------- allowed: hub and spoke
orch_id="spiffe://cluster.local/ns/$NS/sa/orchestrator-agent"
inbound_from_orch() { # NODE DST-ADDR: inbound records of the hub's connections to DST-ADDR
	access_log_select "$1" '.type == "connection" and .direction == "inbound" and .dst_addr == $d and .src_identity == $i and .bytes_sent >= '$MIB \
		--arg d "$2" --arg i "$orch_id" | wc -l
}
for w in "${SPOKES[@]}"; do
	n=${NODE[$w]} path=$(expected_path node1 "${NODE[$w]}") sec=$(expected_security node1 "${NODE[$w]}")
	check_connect_ok "by address: orchestrator-agent -> $(pod_target "$w") carries 1 MiB each way intact" \
		orchestrator-agent "$(pod_target "$w")" $MIB $MIB
	check_wait "... $n logs it inbound" 5 test "$(inbound_from_orch "$n" "$(pod_target "$w")")" -ge 1
	check_connect_ok "by Service: orchestrator-agent -> $(svc_target "$w") carries 1 MiB each way intact" \
		orchestrator-agent "$(svc_target "$w")" $MIB $MIB
	check_wait "... $n logs a second inbound connection to the pod ($sec) from the orchestrator's verified identity" 5 \
		test "$(inbound_from_orch "$n" "$(pod_target "$w")")" -ge 2
	check "... with the same security as by address" \
		access_log_has "$n" '.type == "connection" and .direction == "inbound" and .dst_addr == $d and .security == $sec' \
		--arg d "$(pod_target "$w")" --arg sec "$sec"
	check "... node1 logs it outbound ($path) to the chosen endpoint $NS/$w" \
		access_log_has node1 '.type == "connection" and .direction == "outbound" and .path == $p and .dst_workload == $w and .service == $svc and .endpoint == $w and .bytes_received >= '$MIB \
		--arg p "$path" --arg w "$NS/$w" --arg svc "$(svc_name "$w")"
done

CANARY="MOAT-SVC-CLEARTEXT-CANARY-$RANDOM$RANDOM"
check "a text payload crosses node1 -> node2 by Service name" \
	lab_exec orchestrator-agent sh -c "printf '%s\n' '$CANARY$CANARY' | nc -N -w 5 $(svc_name summary-agent) 8080 >/dev/null"

# ---------------------------------------------------------------- blocked: Diagram 8
check_agensys_denied $NS "by address: " pod_target pod_target
check_agensys_denied $NS "by Service: " svc_target vip_target

# ---------------------------------------------------------------- nothing in plaintext
out=$(probe_connect outsider "$(svc_target summary-agent)" --send-bytes 1024 --timeout 3 2>&1)
check_json "a pod without an agent cannot reach a Service (nothing but moat serves a ClusterIP)" "$out" \
	'.exit != 0' '.received == 0'
out=$(probe_connect outsider "$(pod_target summary-agent)" --send-bytes 1024 --timeout 2 2>&1)
check_json "... and its plaintext to the STRICT pod is dropped (SYN never answered)" "$out" '.connect == "ETIMEDOUT"'

underlay_capture_stop "$E2E_TMP/underlay.txt"
check "the capture saw HBONE traffic between nodes" grep -q '\.15008[ :]' "$E2E_TMP/underlay.txt"
check_eq "pod-to-pod traffic on the underlay uses only port 15008" "" \
	"$(underlay_pod_flows_off_15008 "$E2E_TMP/underlay.txt" | head -5)"
check_eq "no packet on the underlay carries a ClusterIP" "" \
	"$(awk '$3 ~ /^10\.96\./ || $5 ~ /^10\.96\./' "$E2E_TMP/underlay.txt" | head -5)"
check_fails "the text canary sent by name never crossed the underlay in clear" grep -aq "$CANARY" "$PCAP"
check_fails "neither did the app's response header" grep -aq "sha256=" "$PCAP"
plaintext_inbound() {
	local n
	for n in node1 node2 node3; do
		access_log_select "$n" '.type == "connection" and .direction == "inbound" and .security != "mutual_tls" and .security != "same_node"'
	done
}
check_eq "every inbound connection on every node was mutual TLS (or joined in the kernel)" "" "$(plaintext_inbound | head -3)"
foreign_peers() {
	local w
	for w in "${SPOKES[@]}"; do
		probe_log "$w" "${PORT[$w]}" | jq -r 'select(.peer != null) | .peer' | grep -v "^${ADDR[orchestrator-agent]}:"
	done
}
check_eq "the apps saw only the orchestrator (the outsider never reached one)" "" "$(foreign_peers | head -3)"

# ---------------------------------------------------------------- teardown
finish_lab_checked node1 node2 node3

e2e_finish
