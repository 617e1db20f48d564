#!/usr/bin/env bash
# Seed 000 (agensys-demo-1) on ONE node: the five workloads, the default deny and the
# orchestrator's hub-and-spoke policies, enforced by moatd.
#  - every orchestrator -> agent/MCP path carries 10 MiB each way intact (sha256);
#  - every path between the other four fails at connect() with EPERM, fast, and is logged
#    (source workload and identity, destination and port, policy or reason);
#  - the config directory is live: removing 02-orchestrator-policies.yaml denies, putting it
#    back allows, without a restart; a malformed file changes nothing and is reported with
#    file:line;
#  - the BPF maps read with field names; stopping moatd and the lab leaves nothing behind.
# Addresses differ from the 3-node layout of deploy/examples/agensys (one node here).
source "$(dirname "$0")/lib.sh"
e2e_init

NS=agensys-demo-1
TD=cluster.local
MIB10=10485760
export E2E_SERVE_BYTES=$MIB10
declare -A ADDR=([orchestrator-agent]=10.244.1.10 [pr-agent]=10.244.1.11 [summary-agent]=10.244.1.12
	[mcp-code-scanning]=10.244.1.13 [github-mcp-server]=10.244.1.14)
declare -A PORT=([orchestrator-agent]=8080 [pr-agent]=8080 [summary-agent]=8080
	[mcp-code-scanning]=3000 [github-mcp-server]=3000)
SPOKES=(pr-agent summary-agent mcp-code-scanning github-mcp-server)
ALL=(orchestrator-agent "${SPOKES[@]}")

for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin (make build; BUILD=dir to use another build)"
done

# ---------------------------------------------------------------- configuration
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
cat >"$E2E_CONFIG/00-mesh.yaml" <<EOF
apiVersion: moat.dev/v1
kind: MeshConfig
metadata:
  name: mesh
spec:
  trustDomain: $TD
  rootNamespace: istio-system
  outboundTrafficPolicy:
    mode: ALLOW_ANY
---
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
  labels:
    istio.io/dataplane-mode: ambient
EOF
for w in "${ALL[@]}"; do
	cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: $w
  namespace: $NS
spec:
  address: ${ADDR[$w]}
  serviceAccount: $w
  labels:
    app: $w
  ports:
    app: ${PORT[$w]}
EOF
done | sed '1d' >"$E2E_CONFIG/00-workloads.yaml"

examples=$E2E_ROOT/deploy/examples/agensys
if [ -f "$examples/01-default-deny.yaml" ] && [ -f "$examples/02-orchestrator-policies.yaml" ]; then
	cp "$examples/01-default-deny.yaml" "$examples/02-orchestrator-policies.yaml" "$E2E_CONFIG/"
	info "policies: copies of deploy/examples/agensys/01-default-deny.yaml, 02-orchestrator-policies.yaml"
else
	info "policies: deploy/examples/agensys not found, using the equivalent written here"
	cat >"$E2E_CONFIG/01-default-deny.yaml" <<EOF
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: $NS
spec: {}
EOF
	for w in "${SPOKES[@]}"; do
		cat <<EOF
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-orchestrator-to-$w
  namespace: $NS
spec:
  selector:
    matchLabels:
      app: $w
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["$TD/ns/$NS/sa/orchestrator-agent"]
      to:
        - operation:
            ports: ["${PORT[$w]}"]
EOF
	done | sed '1d' >"$E2E_CONFIG/02-orchestrator-policies.yaml"
fi
cp "$E2E_CONFIG/02-orchestrator-policies.yaml" "$E2E_TMP/02-orchestrator-policies.yaml.saved"

check "moatctl lint accepts the configuration" "$MOATCTL" lint "$E2E_CONFIG"
E2E_CA=$E2E_TMP/ca
check "moatctl ca init makes a CA" "$MOATCTL" ca init --trust-domain "$TD" --out "$E2E_CA"

# ---------------------------------------------------------------- lab, apps, moatd
{
	echo "lab single$E2E_RUN_ID"
	echo "underlay 192.168.78.0/24"
	echo "node node1 192.168.78.11 10.244.1.0/24"
	for w in "${ALL[@]}"; do echo "pod node1 $NS/$w ${ADDR[$w]}"; done
} >"$E2E_TMP/lab.conf"
lab_up "$E2E_TMP/lab.conf"

for w in "${ALL[@]}"; do
	probe_serve "$NS/$w" "${PORT[$w]}" || e2e_abort "moat-probe serves in $w"
done

start_agent node1
wait_ready node1 30 || e2e_abort "moatd on node1 becomes ready (/healthz/ready)"
_ok "moatd on node1 is ready"
for w in "${ALL[@]}"; do
	check "enroll $NS/$w" enroll "$NS/$w"
done
check "moatctl status answers" moatctl_on node1 status

# ---------------------------------------------------------------- the matrix
spiffe() { echo "spiffe://$TD/ns/$NS/sa/$1"; }

for dst in "${SPOKES[@]}"; do
	target=${ADDR[$dst]}:${PORT[$dst]}
	check_connect_ok "orchestrator-agent -> $dst:${PORT[$dst]} carries 10 MiB each way intact" \
		"$NS/orchestrator-agent" "$target" $MIB10 $MIB10
	check "... $dst sees the orchestrator's own address (source preserved)" \
		grep -q "\"peer\":\"${ADDR[orchestrator-agent]}:[0-9]*\"" "$(probe_log_path "$NS/$dst" "${PORT[$dst]}")"
	cond='.type == "connection" and .src_workload == $src and .dst_addr == $dst and .verdict == "ALLOW"
		and .src_identity == $sid and .bytes_sent >= 10485760 and .bytes_received >= 10485760'
	check_wait "... and is logged as an ALLOWed connection with its bytes" 10 \
		access_log_has node1 "$cond" --arg src "$NS/orchestrator-agent" --arg dst "$target" \
		--arg sid "$(spiffe orchestrator-agent)"
done

deny_logged() { # SRC DST: the access log has the deny record, with identity and policy/reason
	local src=$1 dst=$2
	access_log_has node1 '.type == "deny" and .src_workload == $src and .src_identity == $sid
		and .dst_addr == $dst and ((.policy // "") != "" or (.reason // "") != "")' \
		--arg src "$NS/$src" --arg sid "$(spiffe "$src")" --arg dst "${ADDR[$dst]}:${PORT[$dst]}"
}

for src in "${SPOKES[@]}"; do
	for dst in "${SPOKES[@]}"; do
		[ "$src" = "$dst" ] && continue
		check_connect_denied "$src -> $dst:${PORT[$dst]} fails at connect() with EPERM in < 500 ms" \
			"$NS/$src" "${ADDR[$dst]}:${PORT[$dst]}" 500
		check_wait "... and the deny is logged (workload, identity, destination:port, policy/reason)" 5 \
			deny_logged "$src" "$dst"
	done
done
check_connect_denied "pr-agent -> orchestrator-agent:8080 is denied too (default deny)" \
	"$NS/pr-agent" "${ADDR[orchestrator-agent]}:8080" 500
info "a deny record: $(access_log_select node1 '.type == "deny"' | head -n 1)"

# ---------------------------------------------------------------- live configuration
orch=$NS/orchestrator-agent
pr=${ADDR[pr-agent]}:8080
rm -f "$E2E_CONFIG/02-orchestrator-policies.yaml"
check_wait "removing 02-orchestrator-policies.yaml denies orchestrator -> pr-agent (no restart)" 15 \
	connect_is_denied "$orch" "$pr"
check_connect_denied "... at connect(), with EPERM, fast" "$orch" "$pr" 500
check_wait "... and the deny is logged" 5 deny_logged orchestrator-agent pr-agent
cp "$E2E_TMP/02-orchestrator-policies.yaml.saved" "$E2E_CONFIG/02-orchestrator-policies.yaml"
check_wait "putting it back allows orchestrator -> pr-agent again" 15 connect_is_ok "$orch" "$pr"
check_connect_ok "... with 10 MiB each way intact" "$orch" "$pr" $MIB10 $MIB10

cat >"$E2E_CONFIG/99-broken.yaml" <<EOF
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: broken
  namespace: $NS
spec:
  action: ALLOW
   rules: this line is not valid YAML
EOF
broken_named() { agent_log node1 | grep -Eq '99-broken\.yaml(:| line |, line |:[^0-9]*)8([^0-9]|$)'; }
check_wait "a malformed file is reported in moatd's log with file and line (99-broken.yaml:8)" 10 broken_named
check_match "moatctl lint names it too" '99-broken\.yaml:8' "$("$MOATCTL" lint "$E2E_CONFIG" 2>&1)"
check_connect_ok "... enforcement unchanged: orchestrator -> pr-agent still works" "$orch" "$pr" 1024 $MIB10
check_connect_denied "... enforcement unchanged: pr-agent -> summary-agent still denied" \
	"$NS/pr-agent" "${ADDR[summary-agent]}:8080" 500
check "... moatd is still ready" agent_ready node1
rm -f "$E2E_CONFIG/99-broken.yaml"
check "removing it again: lint is clean" "$MOATCTL" lint "$E2E_CONFIG"
# Proof that moatd applies configurations again after the bad file left: a change takes.
rm -f "$E2E_CONFIG/02-orchestrator-policies.yaml"
check_wait "... and moatd applies changes again (removing 02 denies)" 15 connect_is_denied "$orch" "$pr"
cp "$E2E_TMP/02-orchestrator-policies.yaml.saved" "$E2E_CONFIG/02-orchestrator-policies.yaml"
check_wait "... (putting 02 back allows)" 15 connect_is_ok "$orch" "$pr"

# ---------------------------------------------------------------- the maps
dump=$(bpftool map dump pinned "$(agent_bpf_dir node1)/workloads" 2>&1)
check_match "bpftool map dump of the workloads map shows field names" '"identity": ?[0-9]+' "$dump"
check_match "... and the workloads by name" '"name": ?"agensys-demo-1/pr-agent"' "$dump"

# ---------------------------------------------------------------- shutdown
pid=$(agent_pid node1)
stop_agent_checked node1 "moatd exits 0 on SIGTERM"
check_fails "... and is gone" kill -0 "$pid"
lab=$E2E_LAB
lab_down_checked --counted
check_eq "no moatd process left" "" "$(pgrep -f -- "--bpf-dir /sys/fs/bpf/moatlab-$lab-" || true)"

e2e_finish
