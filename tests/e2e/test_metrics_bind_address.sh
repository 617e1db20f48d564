#!/usr/bin/env bash
# `moatd --metrics-addr IP` binds the Prometheus port (15020) to one address, so operators can
# keep metrics off the networks they do not trust; a bad address is refused at start.
source "$(dirname "$0")/lib.sh"
e2e_init

for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
lab_up <<EOF
lab mb$E2E_RUN_ID
underlay 192.168.95.0/24
node node1 192.168.95.11 10.244.1.0/24
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
mesh_yaml >"$E2E_CONFIG/mesh.yaml"
node_ip=$(node_info node1 underlay_ip)
metrics_at() { node_exec node1 curl -sf -o /dev/null -m 2 "http://$1:15020/metrics"; }

out=$(node_exec node1 "$MOATD" --config "$E2E_CONFIG" --state-dir "$E2E_TMP/state" --bpf-dir /sys/fs/bpf/moat-mb-$E2E_RUN_ID --metrics-addr not-an-ip 2>&1)
check_eq "moatd --metrics-addr not-an-ip refuses to start (exit 2)" 2 "$?"
check_match "... naming the flag and what it expects" '--metrics-addr "not-an-ip": expected an IPv4 or IPv6 address' "$out"
check_match "moatd --help documents --metrics-addr" '--metrics-addr IP' "$("$MOATD" --help)"

start_agent node1 --metrics-addr 127.0.0.1
check "moatd with --metrics-addr 127.0.0.1 is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check "metrics answer on 127.0.0.1:15020" metrics_at 127.0.0.1
check_fails "... and not on the node's address $node_ip:15020" metrics_at "$node_ip"
stop_agent_checked node1 "moatd stops cleanly"

start_agent node1
check "moatd without the flag is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check "metrics answer on the node's address (default 0.0.0.0)" metrics_at "$node_ip"
stop_agent node1
e2e_finish
