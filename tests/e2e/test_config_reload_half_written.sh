#!/usr/bin/env bash
# A policy written in two chunks with a pause between them is never enforced half-written:
# moatd reloads when a file is closed after writing (IN_CLOSE_WRITE) or renamed in
# (IN_MOVED_TO), not when it appears. The first chunk alone is a complete, valid policy that
# would deny client -> server (an ALLOW policy without rules allows nothing); the whole file
# allows it. While the writer pauses, the old configuration (no policy: allowed) must stay in
# force; once the file is closed, the whole policy is.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=shop
for bin in "$MOATD" "$MOATCTL" "$PROBE"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
lab_up <<EOF
lab hw$E2E_RUN_ID
underlay 192.168.86.0/24
node node1 192.168.86.11 10.244.1.0/24
pod node1 $NS/client 10.244.1.10
pod node1 $NS/server 10.244.1.11
pod node1 $NS/other 10.244.1.12
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{
	mesh_yaml $NS
	workload_yaml $NS client 10.244.1.10
	workload_yaml $NS server 10.244.1.11
	workload_yaml $NS other 10.244.1.12
} >"$E2E_CONFIG/00-mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"
start_agent node1
check "moatd is ready" wait_ready node1 30 || e2e_abort "moatd starts"
for p in client server other; do check "enroll $p" enroll $p; done
probe_serve server 8080 || e2e_abort "server in server"

reloads_ok() { moatctl_on node1 status -o json | jq -r .reloads_ok; }
policies() { moatctl_on node1 status -o json | jq -r .config_digest; }
check_connect_ok "before: no policy, client -> server:8080 allowed" client 10.244.1.11:8080 1024
check_connect_ok "before: other -> server:8080 allowed" other 10.244.1.11:8080 1024
r0=$(reloads_ok)
d0=$(policies)

# ---- chunk 1: a complete policy on its own (deny everything to server), file left open
exec 3>"$E2E_CONFIG/50-server.yaml"
cat >&3 <<EOF
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-policy, namespace: $NS}
spec:
  selector: {matchLabels: {app: server}}
EOF
# The writer pauses ten times the reload debounce (150 ms).
sleep 1.5
check_connect_ok "while the file is half-written, client -> server:8080 is still allowed (the truncated policy is not enforced)" \
	client 10.244.1.11:8080 1024
check_eq "... no reload happened while the file was open" "$r0" "$(reloads_ok)"
check_eq "... the configuration in force is the one from before" "$d0" "$(policies)"

# ---- chunk 2, then close: now the whole policy is read
cat >&3 <<EOF
  rules:
  - from: [{source: {principals: ["cluster.local/ns/$NS/sa/client"]}}]
EOF
exec 3>&-
reloaded() { [ "$(reloads_ok)" -gt "$r0" ]; }
check_wait "closing the file reloads the configuration" 10 reloaded
check_connect_ok "the whole policy is in force: client -> server:8080 allowed" client 10.244.1.11:8080 1024
check_connect_denied "... and other -> server:8080 denied by it" other 10.244.1.11:8080

# ---- the atomic-rename convention: write elsewhere, rename in
r1=$(reloads_ok)
authz_yaml $NS deny-client app=server DENY principals=cluster.local/ns/$NS/sa/client \
	>"$E2E_TMP/60-deny-client.yaml.tmp"
mv "$E2E_TMP/60-deny-client.yaml.tmp" "$E2E_CONFIG/60-deny-client.yaml"
reloaded1() { [ "$(reloads_ok)" -gt "$r1" ]; }
check_wait "a file renamed into the directory (IN_MOVED_TO) reloads the configuration" 10 reloaded1
check_wait "... and its policy is in force: client -> server:8080 denied" 10 connect_is_denied client 10.244.1.11:8080
check "moatd logged no error" bash -c "! grep -E ' error moatd: ' '$(agent_dir node1)/moatd.log'"

stop_agent node1
e2e_finish
