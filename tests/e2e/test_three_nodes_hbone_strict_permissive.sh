#!/usr/bin/env bash
# Seed 000, Diagram 8, internal part, across three nodes (orchestrator-agent and pr-agent on
# node 1; summary-agent and mcp-code-scanning on node 2; github-mcp-server on node 3), every
# node with its own moatd and one shared CA:
#  - every allowed path carries data intact (sha256), over HBONE (mutual TLS, 15008), logged on
#    both ends with the verified identities;
#  - every blocked path is denied at connect() with its reason logged;
#  - a capture on the underlay shows no application payload in clear and pod-to-pod traffic
#    only on 15008;
#  - PeerAuthentication: STRICT drops plaintext per packet at TC (counted, logged); a workload
#    made PERMISSIVE takes plaintext through 15006, authorized as "no identity".
source "$(dirname "$0")/lib.sh"
e2e_init

NS=agensys-demo-1
MIB=1048576
MIB10=10485760
e2e_require_agent tcpdump

agensys_matrix # ADDR, PORT, NODE, SPOKES (lib.sh)
lab_up <<EOF
lab i3n$E2E_RUN_ID
underlay 192.168.79.0/24
node node1 192.168.79.11 10.244.1.0/24
node node2 192.168.79.12 10.244.2.0/24
node node3 192.168.79.13 10.244.3.0/24
$(agensys_pod_lines $NS)
pod node2 default/outsider 10.244.2.50
EOF

# ---------------------------------------------------------------- configuration
workloads() { for w in orchestrator-agent "${SPOKES[@]}"; do workload_yaml "$NS" "$w" "${ADDR[$w]}"; done; }
agensys_strict_config $NS workloads

agensys_start $MIB10

# ---------------------------------------------------------------- capture the underlay
PCAP=$E2E_TMP/underlay.pcap
underlay_capture_start "$PCAP"

# ---------------------------------------------------------------- allowed: hub and spoke
for w in "${SPOKES[@]}"; do
	E2E_SERVE_BYTES=$MIB10 check_connect_ok "orchestrator-agent -> $w:${PORT[$w]} (${NODE[$w]}) carries 10 MiB each way intact" \
		orchestrator-agent "${ADDR[$w]}:${PORT[$w]}" "$MIB10" "$MIB10"
	dst_node=${NODE[$w]}
	sec=$(expected_security node1 "$dst_node") path=$(expected_path node1 "$dst_node")
	check "... $dst_node logs it inbound ($sec) from the orchestrator's verified identity" \
		access_log_has "$dst_node" '.type == "connection" and .direction == "inbound" and .dst_workload == $w and .security == $sec and .src_identity == "spiffe://cluster.local/ns/'$NS'/sa/orchestrator-agent" and .bytes_sent >= '$MIB10 --arg w "$NS/$w" --arg sec "$sec"
	check "... node1 logs it outbound ($path)" \
		access_log_has node1 '.type == "connection" and .direction == "outbound" and .path == $path and .dst_workload == $w and .bytes_received >= '$MIB10 --arg w "$NS/$w" --arg path "$path"
done
check "the app sees the orchestrator's own address across nodes" \
	grep -q '"peer":"10.244.1.10:' "$(probe_log_path summary-agent 8080)"

# A text canary through a cross-node allowed path: it must never appear on the underlay.
CANARY="MOAT-CLEARTEXT-CANARY-$RANDOM$RANDOM"
check "a text payload crosses node1 -> node2" \
	lab_exec orchestrator-agent sh -c "printf '%s\n' '$CANARY$CANARY' | nc -N -w 5 ${ADDR[summary-agent]} 8080 >/dev/null"

# ---------------------------------------------------------------- blocked: Diagram 8
pod_target() { echo "${ADDR[$1]}:${PORT[$1]}"; }
check_agensys_denied $NS "" pod_target pod_target

# ---------------------------------------------------------------- what crossed the underlay
underlay_capture_stop "$E2E_TMP/underlay.txt"
check "the capture saw HBONE traffic between nodes" grep -q '\.15008[ :]' "$E2E_TMP/underlay.txt"
check_eq "pod-to-pod traffic on the underlay uses only port 15008" "" \
	"$(underlay_pod_flows_off_15008 "$E2E_TMP/underlay.txt" | head -5)"
check_fails "the text canary never crossed the underlay in clear" grep -aq "$CANARY" "$PCAP"
check_fails "neither did the app's response header" grep -aq "sha256=" "$PCAP"

# ---------------------------------------------------------------- PeerAuthentication
# STRICT: plaintext from a pod without an agent is dropped per packet at TC.
out=$(probe_connect outsider "${ADDR[summary-agent]}:8080" --send-bytes 1024 --timeout 2 2>&1)
check_json "plaintext outsider -> STRICT summary-agent:8080 never connects (SYN dropped)" "$out" \
	'.connect == "ETIMEDOUT"'
check_wait "... node2 logs the STRICT plaintext drop" 5 \
	access_log_has node2 '.type == "deny" and .reason_code == "STRICT_PLAINTEXT" and .dst_addr == "10.244.2.10:8080"'
check_match "... and counts it (moatctl status)" '[1-9][0-9]* plaintext SYNs dropped' "$(moatctl_on node2 status)"
before=$(probe_log summary-agent 8080 | grep -c '"peer":"10.244.2.50')
check_eq "... nothing reached the app" 0 "$before"

# PERMISSIVE for mcp-code-scanning: plaintext goes through 15006 and is authorized as no identity.
peer_auth_yaml $NS mcp-permissive PERMISSIVE mcp-code-scanning >"$E2E_CONFIG/03-permissive-mcp.yaml"
check_wait "a workload PeerAuthentication PERMISSIVE is applied (no restart)" 10 \
	sh -c "'$MOATCTL' --socket '$(agent_socket node2)' workloads | grep -E '10\.244\.2\.11 .*PERMISSIVE'"
out=$(probe_connect outsider "${ADDR[mcp-code-scanning]}:3000" --send-bytes 1024 --timeout 3 2>&1)
check_json "plaintext outsider -> PERMISSIVE mcp-code-scanning is refused by policy (orchestrator only)" "$out" \
	'.connect == "ok" or .connect == "ECONNRESET"' '.exit != 0' '.received == 0'
check_wait "... logged as an inbound deny for a plaintext peer" 5 \
	access_log_has node2 '.type == "deny" and .phase == "inbound" and .src_identity == null and .dst_addr == "10.244.2.11:3000"'
authz_yaml $NS allow-outsider-by-address app=mcp-code-scanning ALLOW ipBlocks=10.244.2.50/32 3000 \
	>"$E2E_CONFIG/04-allow-outsider-plaintext.yaml"
check_wait "an ipBlocks ALLOW for the outsider lets its plaintext in" 10 \
	connect_is_ok outsider "${ADDR[mcp-code-scanning]}:3000"
E2E_SERVE_BYTES=$MIB10 check_connect_ok "... carrying 1 MiB / 10 MiB intact through 15006" \
	outsider "${ADDR[mcp-code-scanning]}:3000" "$MIB" "$MIB10"
check "... logged as inbound plaintext" access_log_has node2 \
	'.type == "connection" and .path == "inbound_plaintext" and .src_identity == null and .dst_addr == "10.244.2.11:3000"'
check "... and the app saw the outsider's own address" \
	grep -q '"peer":"10.244.2.50:' "$(probe_log_path mcp-code-scanning 3000)"

# ---------------------------------------------------------------- teardown
finish_lab_checked node1 node2 node3

e2e_finish
