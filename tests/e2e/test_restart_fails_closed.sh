#!/usr/bin/env bash
# moat fails closed, never open: while no moatd runs (crash or stop), enrolled pods stay
# captured — their connects are refused, plaintext to STRICT pods is still dropped — and the
# next moatd takes the pods back from its state directory without re-enrollment.
# `moatd --cleanup` removes capture, pins and records.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=fc
for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
lab_up <<EOF
lab fc$E2E_RUN_ID
underlay 192.168.82.0/24
node node1 192.168.82.11 10.244.1.0/24
pod node1 $NS/a 10.244.1.10
pod node1 $NS/b 10.244.1.11
pod node1 default/outsider 10.244.1.50
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{ mesh_yaml $NS; workload_yaml $NS a 10.244.1.10; workload_yaml $NS b 10.244.1.11
	peer_auth_yaml $NS strict STRICT
	authz_yaml $NS a-to-b app=b ALLOW principals=cluster.local/ns/$NS/sa/a 8080; } >"$E2E_CONFIG/mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"

# Without privileges moatd refuses to start, and says why.
chmod -R a+rX "$E2E_CONFIG"
out=$(setpriv --reuid nobody --regid nogroup --clear-groups "$MOATD" --config "$E2E_CONFIG" \
	--state-dir "$E2E_TMP/np-state" --bpf-dir /sys/fs/bpf/moat-np-$E2E_RUN_ID 2>&1)
rc=$?
check "unprivileged, moatd refuses to start (exit $rc)" test "$rc" -ne 0
check_match "... naming the missing capabilities and what to do" 'missing capabilities.*run moatd as root' "$out"
check_fails "... and leaves no pin behind" test -e /sys/fs/bpf/moat-np-$E2E_RUN_ID

start_agent node1
check "moatd is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check "enroll a" enroll a
check "enroll b" enroll b
probe_serve b 8080 || e2e_abort "server in b"
check_connect_ok "a -> b:8080 works through moat" a 10.244.1.11:8080
# A timeout alone proves nothing: each drop check also sees TC's own counter move.
drops() { # summed per-CPU plaintext_dropped of the pinned stats map (BTF-formatted dump)
	bpftool map dump pinned "$(agent_bpf_dir node1)/stats" 2>/dev/null |
		jq '[.[0].values[].value.plaintext_dropped] | add // 0'
}
check_strict_drop() { # DESC
	local before after
	before=$(drops)
	check_connect_error "$1" outsider 10.244.1.11:8080 ETIMEDOUT
	after=$(drops)
	check "... counted by the TC program ($before -> $after)" test "${after:-0}" -gt "${before:-0}"
}
check_strict_drop "plaintext outsider -> STRICT b:8080 is dropped"

# ---- crash
pid=$(agent_pid node1)
kill -KILL "$pid"
wait "$pid" 2>/dev/null
check_fails "moatd is gone (SIGKILL)" kill -0 "$pid"
check_connect_error "while no agent runs, a -> b is refused, not let through" a 10.244.1.11:8080 ECONNREFUSED
check_strict_drop "... and plaintext to STRICT b is still dropped"
check "... the capture is still pinned" test -d "$(agent_bpf_dir node1)/links/${NS}_a"

# ---- a new agent takes the pods back
rm -f "$(agent_dir node1)/moatd.pid"
E2E_AGENTS=()
start_agent node1
check "a new moatd is ready" wait_ready node1 30
check_eq "... it took both pods back without re-enrollment" 2 \
	"$(agent_log node1 | grep -c 'taken back from the previous agent')"
check_connect_ok "a -> b:8080 works again" a 10.244.1.11:8080
check_strict_drop "plaintext to STRICT b is dropped by the new agent's filter"

# ---- orderly stop: the same guarantee
stop_agent_checked node1 "moatd exits 0 on SIGTERM"
check_connect_error "after a clean stop, a -> b is refused too" a 10.244.1.11:8080 ECONNREFUSED
start_agent node1
check "moatd starts again" wait_ready node1 30
check_connect_ok "a -> b:8080 works after the restart" a 10.244.1.11:8080

# ---- unenroll and --cleanup
check "unenroll a" unenroll a
check_eq "... its enrollment record is gone" "" "$(ls "$(agent_dir node1)/pods" | grep "^${NS}_a" || true)"
stop_agent_checked node1 "moatd stops"
check "moatd --cleanup removes capture, pins and records" \
	"$LAB_TOOL" node-exec "$E2E_LAB" node1 -- "$MOATD" --cleanup --state-dir "$(agent_dir node1)" \
	--bpf-dir "$(agent_bpf_dir node1)"
check_fails "... the pin directory is gone" test -e "$(agent_bpf_dir node1)"
check_eq "... no enrollment record left" "" "$(ls "$(agent_dir node1)/pods" 2>/dev/null)"
check_connect_ok "... b is a plain pod again: the outsider reaches it directly" outsider 10.244.1.11:8080

lab_down_checked
e2e_finish
