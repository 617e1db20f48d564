#!/usr/bin/env bash
# A connection to a pod port where nothing listens ends at once, as it would without a mesh:
# the pod's kernel answers the agent's upstream SYN with a reset, the agent reports the
# refusal (HBONE: 503 at once, logged "ECONNREFUSED") and resets the client. Never the 10 s
# upstream connect timeout. Over IPv4 and IPv6, for each path that connects to an app:
#  - HBONE across nodes (client on node1 -> server on node2);
#  - same node, joined in the kernel (client -> neighbour on node1);
#  - plaintext from a pod without an agent into a PERMISSIVE workload (15006);
# first with transparent upstream connects (the agent connects from the client's address:
# the pod's reset must be routed back to the agent, see docs/architecture.md "Inbound"), then
# with --no-transparent. A pod outside the mesh answers its own reset (passthrough).
source "$(dirname "$0")/lib.sh"
e2e_init

NS=shop
TD=cluster.local
CLOSED=8081 # no listener on this port in any pod
LIMIT_MS=5000 # well under the agent's 10 s upstream connect timeout
declare -A ADDR=([client]=10.244.1.10 [neighbour]=10.244.1.11 [server]=10.244.2.10 [outsider]=10.244.2.50)
declare -A ADDR6=([client]=fd00:10:244:1::10 [neighbour]=fd00:10:244:1::11
	[server]=fd00:10:244:2::10 [outsider]=fd00:10:244:2::50)
declare -A NODE=([client]=node1 [neighbour]=node1 [server]=node2 [outsider]=node2)
MESH=(client neighbour server)

target() { if [ "$1" = 6 ]; then echo "[${ADDR6[$2]}]:$CLOSED"; else echo "${ADDR[$2]}:$CLOSED"; fi; }

E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{
	mesh_yaml "$NS"
	for w in "${MESH[@]}"; do dual_workload_yaml "$NS" "$w" "${ADDR[$w]}" "${ADDR6[$w]}"; done
	peer_auth_yaml "$NS" permissive PERMISSIVE
} >"$E2E_CONFIG/00-mesh.yaml"
check "moatctl lint accepts the configuration" "$MOATCTL" lint "$E2E_CONFIG"

lab_up <<EOF
lab refused$E2E_RUN_ID
underlay 192.168.83.0/24
underlay6 fd00:83::/64
cluster6 fd00:10:244::/48
node node1 192.168.83.11 10.244.1.0/24 fd00:83::11 fd00:10:244:1::/64
node node2 192.168.83.12 10.244.2.0/24 fd00:83::12 fd00:10:244:2::/64
$(for w in "${MESH[@]}" outsider; do echo "pod ${NODE[$w]} $NS/$w ${ADDR[$w]} ${ADDR6[$w]}"; done)
EOF

# refused_fast DESC POD TARGET: the client's connection ends with a reset or a refusal, within
# LIMIT_MS, having received nothing. (Its connect() to the agent's 15001 usually succeeds and
# the reset follows; on loopback the reset can also beat connect()'s return.)
refused_fast() {
	local desc=$1 pod=$2 to=$3 out
	out=$(probe_connect "$pod" "$to" --send-bytes 16 --timeout 12 2>&1)
	check_json "$desc" "$out" '.received == 0' '.exit == 4 or .exit == 6' \
		'(.connect | test("^(ECONNREFUSED|ECONNRESET)$")) or (.connect == "ok" and (.error // "" | test("ECONNRESET|closed")))' \
		".duration_ms < $LIMIT_MS" ".connect_ms < $LIMIT_MS"
}

# inbound_refused NODE TARGET: the node's access log has an inbound record for TARGET whose
# error says the app refused the connection (not a timeout).
inbound_refused() {
	access_log_has "$1" '.type == "connection" and .direction == "inbound" and .dst_addr == $d and (.error // "" | test("ECONNREFUSED"))' \
		--arg d "$2"
}

run_paths() { # LABEL
	local label=$1 fam to
	for fam in 4 6; do
		to=$(target $fam server)
		refused_fast "$label IPv$fam: HBONE client -> server $to (nothing listens) is reset within ${LIMIT_MS} ms" client "$to"
		check_wait "... node2 logs the inbound connection as refused by the app" 3 inbound_refused node2 "$to"
		check_wait "... node1 logs the outbound connection as answered 503" 3 access_log_has node1 \
			'.type == "connection" and .direction == "outbound" and .dst_addr == $d and (.error // "" | test("CONNECT answered 503"))' --arg d "$to"
		to=$(target $fam neighbour)
		refused_fast "$label IPv$fam: same node client -> neighbour $to is reset within ${LIMIT_MS} ms" client "$to"
		check_wait "... node1 logs the inbound connection as refused by the app" 3 inbound_refused node1 "$to"
		to=$(target $fam server)
		refused_fast "$label IPv$fam: plaintext outsider -> PERMISSIVE server $to is reset within ${LIMIT_MS} ms" outsider "$to"
		check_wait "... node2 logs the plaintext connection as refused by the app" 3 access_log_has node2 \
			'.type == "connection" and .path == "inbound_plaintext" and .dst_addr == $d and (.error // "" | test("ECONNREFUSED"))' --arg d "$to"
		to=$(target $fam outsider)
		refused_fast "$label IPv$fam: client -> outsider $to (no agent, not in the mesh) is refused within ${LIMIT_MS} ms" client "$to"
	done
}

make_ca "$TD" >/dev/null || e2e_abort "moatctl ca init"
for mode in transparent no-transparent; do
	args=()
	[ "$mode" = no-transparent ] && args=(--no-transparent)
	for n in node1 node2; do start_agent "$n" "${args[@]}"; done
	for n in node1 node2; do wait_ready "$n" 30 || e2e_abort "moatd on $n is ready ($mode)" "$(agent_log "$n" | tail -20)"; done
	for w in "${MESH[@]}"; do check "$mode: enroll $w" enroll "$w"; done
	run_paths "$mode"
	for w in "${MESH[@]}"; do check "$mode: unenroll $w" unenroll "$w"; done
	for n in node1 node2; do
		stop_agent_checked "$n"
		: >"$(agent_dir "$n")/access.log" # the next mode's checks see only their own records
	done
done

lab_down_checked
e2e_finish
