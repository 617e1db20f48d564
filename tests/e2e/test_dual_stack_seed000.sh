#!/usr/bin/env bash
# Seed 000, Diagram 8, across three nodes on dual-stack pods (IPv4 + IPv6, declared with the
# WorkloadEntry annotation moat.dev/addresses), every node with its own moatd and one CA:
#  - every allowed path carries data intact (sha256) over IPv6 and over IPv4, through HBONE
#    to the destination's 15008 of the family dialed (CONNECT authority [v6]:port), logged on
#    both ends with the verified identities and the app sees the client's own address;
#  - every blocked path is denied at connect() with EPERM over both families, logged;
#  - the underlay carries pod-to-pod traffic only on 15008, over IPv6 too, never in clear;
#  - STRICT drops plaintext over IPv6 per packet at TC (counted, logged);
#  - a policy that depends on the address family (ipBlocks) is decided right for each
#    family (no cached verdict may stand for both);
#  - an entry that drops an address of an enrolled pod opens nothing (the pod keeps its
#    enrolled addresses until enrolled again).
source "$(dirname "$0")/lib.sh"
e2e_init

NS=agensys-demo-1
MIB=1048576
e2e_require_agent tcpdump

agensys_matrix # ADDR, ADDR6, PORT, NODE, SPOKES (lib.sh)
lab_up <<EOF
lab ds$E2E_RUN_ID
underlay 192.168.81.0/24
underlay6 fd00:81::/64
cluster6 fd00:10:244::/48
node node1 192.168.81.11 10.244.1.0/24 fd00:81::11 fd00:10:244:1::/64
node node2 192.168.81.12 10.244.2.0/24 fd00:81::12 fd00:10:244:2::/64
node node3 192.168.81.13 10.244.3.0/24 fd00:81::13 fd00:10:244:3::/64
$(agensys_pod_lines $NS 6)
pod node2 default/outsider 10.244.2.50 fd00:10:244:2::50
EOF

# target FAMILY POD: "ip:port" (4) or "[ip6]:port" (6) of a pod's app port
target() { if [ "$1" = 6 ]; then echo "[${ADDR6[$2]}]:${PORT[$2]}"; else echo "${ADDR[$2]}:${PORT[$2]}"; fi; }

# ---------------------------------------------------------------- configuration
workloads() {
	for w in orchestrator-agent "${SPOKES[@]}"; do dual_workload_yaml "$NS" "$w" "${ADDR[$w]}" "${ADDR6[$w]}"; done
}
agensys_strict_config $NS workloads
check "the dual-stack configuration passes moatctl lint" "$MOATCTL" lint "$E2E_CONFIG"

agensys_start $MIB --bind :: # one socket on :: serves both families
check "the enroll log names both addresses of a pod" \
	grep -q "enrolled pod $NS/summary-agent: address 10.244.2.10,fd00:10:244:2::10" <(agent_log node2)
check_match "summary-agent's agent listens on 15008 over IPv6 in the pod" '\[::\]:15008|\*:15008' \
	"$(nsenter --net=/run/netns/moatlab-$E2E_LAB-pod-${NS}_summary-agent ss -Hltn6 'sport = :15008')"

# ---------------------------------------------------------------- capture the underlay
PCAP=$E2E_TMP/underlay.pcap
underlay_capture_start "$PCAP"

# ---------------------------------------------------------------- allowed: hub and spoke
orch_id="spiffe://cluster.local/ns/$NS/sa/orchestrator-agent"
for fam in 6 4; do
	for w in "${SPOKES[@]}"; do
		dst=$(target $fam "$w")
		check_connect_ok "IPv$fam: orchestrator-agent -> $dst (${NODE[$w]}) carries 1 MiB each way intact" \
			orchestrator-agent "$dst" $MIB $MIB
		# src_addr is the verified connection's source: the orchestrator's address of the
		# family dialed (the port is the tunnel's, never the forwarded header's claim).
		src=$(target $fam orchestrator-agent)
		src=${src%:*}:
		# Same node: joined in the kernel (path and security same_node) unless the
		# engine is forced to userspace; across nodes HBONE over mutual TLS.
		path=$(expected_path node1 "${NODE[$w]}") sec=$(expected_security node1 "${NODE[$w]}")
		check "... ${NODE[$w]} logs it inbound ($sec) from the orchestrator's verified identity and ${src}port" \
			access_log_has "${NODE[$w]}" '.type == "connection" and .direction == "inbound" and .dst_addr == $d and (.src_addr | startswith($s)) and .security == $sec and .src_identity == $i and .bytes_sent >= '$MIB \
			--arg d "$dst" --arg s "$src" --arg i "$orch_id" --arg sec "$sec"
		check "... node1 logs it outbound ($path)" \
			access_log_has node1 '.type == "connection" and .direction == "outbound" and .path == $p and .dst_addr == $d and .dst_workload == $w and .bytes_received >= '$MIB \
			--arg d "$dst" --arg w "$NS/$w" --arg p "$path"
	done
done
check "the app sees the orchestrator's own IPv6 address across nodes" \
	grep -q '"peer":"\[fd00:10:244:1::10\]:' "$(probe_log_path summary-agent 8080)"
check "... and its own IPv4 address over IPv4" \
	grep -q '"peer":"10.244.1.10:' "$(probe_log_path summary-agent 8080)"
check "node1 logs the IPv6 source address of its pod for an IPv6 connection" \
	access_log_has node1 '.type == "connection" and .direction == "outbound" and (.src_addr | startswith("[fd00:10:244:1::10]:"))'

CANARY="MOAT-CLEARTEXT-CANARY6-$RANDOM$RANDOM"
check "a text payload crosses node1 -> node2 over IPv6" \
	lab_exec orchestrator-agent sh -c "printf '%s\n' '$CANARY$CANARY' | nc -N -w 5 ${ADDR6[summary-agent]} 8080 >/dev/null"

# ---------------------------------------------------------------- blocked: Diagram 8
for fam in 6 4; do
	check_agensys_denied $NS "IPv$fam: " "target $fam" "target $fam"
done

# ---------------------------------------------------------------- what crossed the underlay
underlay_capture_stop "$E2E_TMP/underlay.txt"
check "the capture saw HBONE over IPv6 between pod addresses (to [v6]:15008)" \
	grep -qE 'IP6 fd00:10:244:1::10\.[0-9]+ > fd00:10:244:2::10\.15008:' "$E2E_TMP/underlay.txt"
check "... and over IPv4" grep -qE 'IP 10\.244\.1\.10\.[0-9]+ > 10\.244\.2\.10\.15008:' "$E2E_TMP/underlay.txt"
check_eq "pod-to-pod traffic on the underlay (IPv4 and IPv6) uses only port 15008" "" \
	"$(underlay_pod_flows_off_15008 "$E2E_TMP/underlay.txt" | head -5)"
check_fails "the IPv6 text canary never crossed the underlay in clear" grep -aq "$CANARY" "$PCAP"
check_fails "neither did the app's response header" grep -aq "sha256=" "$PCAP"

# ---------------------------------------------------------------- STRICT over IPv6
out=$(probe_connect outsider "[${ADDR6[summary-agent]}]:8080" --send-bytes 1024 --timeout 2 2>&1)
check_json "IPv6 plaintext outsider -> STRICT summary-agent:8080 never connects (SYN dropped)" "$out" \
	'.connect == "ETIMEDOUT"'
check_wait "... node2 logs the STRICT plaintext drop for the IPv6 address" 5 \
	access_log_has node2 '.type == "deny" and .reason_code == "STRICT_PLAINTEXT" and .dst_addr == $d' \
	--arg d "[${ADDR6[summary-agent]}]:8080"
check_match "... and counts it (moatctl status)" '[1-9][0-9]* plaintext SYNs dropped' "$(moatctl_on node2 status)"
check_eq "... nothing reached the app" 0 "$(probe_log summary-agent 8080 | grep -c '"peer":"\[fd00:10:244:2::50\]')"

# ---------------------------------------------------------------- a policy that depends on the family
# pr-agent may reach github-mcp-server:3000 from its IPv6 address only. One cached verdict for
# the workload pair would be wrong for one family: the IPv6 connect must go through, the IPv4
# one must still be denied (by moatd, which sees the real source address).
cat >"$E2E_CONFIG/03-pr-agent-v6-only.yaml" <<EOF
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: pr-agent-over-ipv6-only
  namespace: $NS
spec:
  selector:
    matchLabels:
      app: github-mcp-server
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/$NS/sa/pr-agent"]
        ipBlocks: ["${ADDR6[pr-agent]}/128"]
    to:
    - operation:
        ports: ["3000"]
EOF
check_wait "an ipBlocks ALLOW on pr-agent's IPv6 address lets it in over IPv6" 10 \
	connect_is_ok pr-agent "$(target 6 github-mcp-server)"
check_connect_ok "... carrying 1 MiB each way intact" pr-agent "$(target 6 github-mcp-server)" $MIB $MIB
v4_denies() {
	access_log_select node1 '.type == "deny" and .src_workload == $s and .dst_addr == $d' \
		--arg s "$NS/pr-agent" --arg d "$(target 4 github-mcp-server)" | wc -l
}
before=$(v4_denies)
out=$(probe_connect pr-agent "$(target 4 github-mcp-server)" --send-bytes 1024 --timeout 5 2>&1)
check_json "... while the same pair over IPv4 is still refused" "$out" '.exit != 0' '.received == 0'
check_wait "... and logged as a new deny for the IPv4 destination" 5 test "$(v4_denies)" -gt "$before"

# ---------------------------------------------------------------- an entry that drops an address
# summary-agent's WorkloadEntry loses its IPv6 address while the pod is enrolled: its agent
# keeps the enrolled addresses (listeners, STRICT at TC) until it is enrolled again; the other
# nodes no longer know the IPv6 address as a workload. Nothing opens: fail closed.
sed -i 's/moat.dev\/addresses: "10.244.2.10,fd00:10:244:2::10"/moat.dev\/addresses: "10.244.2.10"/' \
	"$E2E_CONFIG/00-workloads.yaml"
entry_change_warned() { agent_log node2 | grep -q "pod $NS/summary-agent: its WorkloadEntry (.*) now lists other addresses"; }
check_wait "node2 warns that summary-agent's entry now lists other addresses and keeps the enrolled ones" 10 \
	entry_change_warned
check_connect_ok "IPv4 orchestrator-agent -> summary-agent still carries 1 MiB each way intact" \
	orchestrator-agent "$(target 4 summary-agent)" $MIB $MIB
out=$(probe_connect orchestrator-agent "$(target 6 summary-agent)" --send-bytes 1024 --timeout 2 2>&1)
check_json "IPv6 to the dropped address carries nothing (plaintext from node1, dropped by STRICT at node2)" \
	"$out" '.exit != 0' '.received == 0'
out=$(probe_connect outsider "$(target 6 summary-agent)" --send-bytes 1024 --timeout 2 2>&1)
check_json "... and plaintext from the outsider to it is still dropped (SYN never answered)" "$out" \
	'.connect == "ETIMEDOUT"'

# ---------------------------------------------------------------- teardown
finish_lab_checked node1 node2 node3

e2e_finish
