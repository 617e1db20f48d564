#!/usr/bin/env bash
# Nothing grows forever: short-lived pods enrolled and unenrolled over and over (one lab netns
# reused under a new name and service account each cycle, as a node sees pods come and go)
# leave moatd's fd count, RSS and BPF map occupancy where they were, and the interned ids of
# departed pods are recycled (after their quarantine) instead of growing with every pod.
#   CHURN_CYCLES   enroll/unenroll cycles (default 20000)
#   CHURN_SECONDS  time budget of the churn (default 150): the loop stops at whichever comes
#                  first and the test says how many cycles it ran
source "$(dirname "$0")/lib.sh"
e2e_init

NS=churn
CYCLES=${CHURN_CYCLES:-20000}
BUDGET=${CHURN_SECONDS:-150}
for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
lab_up <<EOF
lab chu$E2E_RUN_ID
underlay 192.168.86.0/24
node node1 192.168.86.11 10.244.1.0/24
pod node1 $NS/web 10.244.1.10
pod node1 $NS/eph 10.244.1.20
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{ mesh_yaml $NS; workload_yaml $NS web 10.244.1.10
	authz_yaml $NS web-from-mesh app=web ALLOW namespaces=$NS; } >"$E2E_CONFIG/mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"
E2E_LOG_LEVEL=info start_agent node1
check "moatd is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check "enroll web (stays for the whole test)" enroll web

BPF=$(agent_bpf_dir node1)
PID=$(agent_pid node1)
NETNS=$(pod_info eph netns)
CG=$(pod_info eph cgroup)
MAPS=(workloads pods pod_ifs verdicts orig_dst port_mtls plain_listeners)

map_count() { bpftool map dump pinned "$BPF/$1" -j 2>/dev/null | jq length; }
# "fds=N rss_kib=N workloads=N pods=N ...": moatd's footprint.
footprint() {
	local m out
	out="fds=$(ls /proc/"$PID"/fd | wc -l) rss_kib=$(awk '/^VmRSS/ { print $2 }' /proc/"$PID"/status)"
	for m in "${MAPS[@]}"; do out+=" $m=$(map_count "$m")"; done
	echo "$out"
}
field() { sed -E "s/.*\\<$1=([0-9]+).*/\\1/" <<<"$2"; }

cycle() { # I: enroll eph as churn/p-I (service account sa-I), then unenroll it
	moatctl_on node1 enroll --netns "$NETNS" --cgroup "$CG" --namespace $NS --name "p-$1" \
		--service-account "sa-$1" >/dev/null &&
		moatctl_on node1 unenroll --namespace $NS --name "p-$1" >/dev/null
}
# churn FROM TO: cycles FROM..TO-1, stopping at the time budget; prints the next index.
churn() {
	local i=$1 end=$((SECONDS + BUDGET))
	while [ "$i" -lt "$2" ] && [ $SECONDS -lt $end ]; do
		cycle "$i" || { echo "cycle $i failed" >&2; break; }
		i=$((i + 1))
	done
	echo "$i"
}
# Past the quarantine (docs/architecture.md "Interned ids"): two syncs and 5 s.
settle() { sleep 6; cycle settle-"$1"; sleep 6; cycle settle2-"$1"; }

WARM=200
check_eq "warm-up: $WARM cycles run" "$WARM" "$(churn 0 $WARM)"
settle a
start=$(footprint)
info "start: $start"
t0=$SECONDS
done_to=$(churn $WARM $((WARM + CYCLES)))
n=$((done_to - WARM))
info "churned $n enroll/unenroll cycles in $((SECONDS - t0)) s (asked: $CYCLES, budget ${BUDGET}s)"
check "at least 1000 cycles ran" test "$n" -ge 1000
check "moatd survived the churn" agent_alive node1

# The last pod's workload id: recycled ids stay small, a table that never frees grows with
# every pod enrolled.
moatctl_on node1 enroll --netns "$NETNS" --cgroup "$CG" --namespace $NS --name last \
	--service-account last >/dev/null
wl_id=$(bpftool map dump pinned "$BPF/pods" -j | jq '[.[] | .formatted.value | select(.name == "churn/last") | .workload] | max')
id_id=$(bpftool map dump pinned "$BPF/pods" -j | jq '[.[] | .formatted.value | select(.name == "churn/last") | .identity] | max')
info "with it enrolled: $(footprint)"
info "workload id of the pod enrolled after $((WARM + n)) others: $wl_id, identity id: $id_id"
# Ids in quarantine at once: the pods of the last ~5 s; a table that never frees hands out
# WARM + n + 4 here.
half=$(((WARM + n) / 2))
check "workload ids of departed pods are reused (id $wl_id < $half after $((WARM + n)) pods)" \
	test "${wl_id:-999999999}" -lt $half
check "identity ids of departed service accounts are reused (id $id_id < $half)" \
	test "${id_id:-999999999}" -lt $half
moatctl_on node1 unenroll --namespace $NS --name last >/dev/null

settle b
end=$(footprint)
info "end:   $end"
check_eq "fd count is flat" "$(field fds "$start")" "$(field fds "$end")"
for m in "${MAPS[@]}"; do
	check_eq "BPF map $m holds as many entries as before the churn" \
		"$(field "$m" "$start")" "$(field "$m" "$end")"
done
rss0=$(field rss_kib "$start") rss1=$(field rss_kib "$end")
# Allocator slack (freed heap not yet given back) is allowed; a per-pod leak over thousands of
# pods is not.
check "RSS is flat ($rss0 KiB -> $rss1 KiB, at most +8 MiB)" test "$rss1" -le $((rss0 + 8192))
check "web still enrolled and listed" bash -c "'$MOATCTL' --socket '$(agent_socket node1)' workloads | grep -q 'churn/web'"

finish_lab_checked node1
e2e_finish
