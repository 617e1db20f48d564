#!/usr/bin/env bash
# Out of file descriptors, moatd neither spins nor floods its log, and serves again once
# descriptors free up:
#  - at start it raises its soft open-files limit to the hard limit;
#  - under a low hard limit (prlimit), many held connections to a pod's HBONE port (15008;
#    each accepted one holds a descriptor while moatd waits for its TLS ClientHello) exhaust
#    its descriptors, the next ones wait in the listener's queue, accept() fails with EMFILE,
#    and the
#    listener pauses (moat_accept_pauses_total grows) instead of waking the loop for ever; the
#    identical warning is rate-limited (moat_log_lines_suppressed_total grows; the log stays a
#    few lines long where it used to grow by a million lines in seconds);
#  - once the held connections close, a new connection is served.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=shop
HOLD=150
for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
command -v prlimit >/dev/null || e2e_abort "prlimit is installed" "apt-get install util-linux"
command -v python3 >/dev/null || e2e_abort "python3 is installed" "apt-get install python3"
lab_up <<EOF
lab emf$E2E_RUN_ID
underlay 192.168.88.0/24
node node1 192.168.88.11 10.244.1.0/24
pod node1 $NS/client 10.244.1.10
pod node1 $NS/server 10.244.1.11
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{
	mesh_yaml $NS
	workload_yaml $NS client 10.244.1.10
	workload_yaml $NS server 10.244.1.11
} >"$E2E_CONFIG/00-mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"
REAL_MOATD=$MOATD
limited() { # SOFT HARD: MOATD becomes a wrapper that runs moatd under that limit
	MOATD=$E2E_TMP/moatd-$1-$2
	printf '#!/bin/sh\nexec prlimit --nofile=%s:%s %s "$@"\n' "$1" "$2" "$REAL_MOATD" >"$MOATD"
	chmod +x "$MOATD"
}
soft_limit() { awk '/^Max open files/ { print $4 }' "/proc/$(agent_pid node1)/limits"; }
metric() { node_exec node1 curl -s -m 2 http://127.0.0.1:15020/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
fd_count() { ls "/proc/$(agent_pid node1)/fd" | wc -l; }
log_lines() { agent_log node1 | wc -l; }

# ---- the soft limit is raised to the hard limit
limited 64 4096
E2E_LOG_LEVEL=info start_agent node1
check "moatd (soft limit 64, hard 4096) is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check_eq "its soft open-files limit is now the hard limit" 4096 "$(soft_limit)"
check_match "... and it says so" 'open files: soft limit raised from 64 to the hard limit 4096' "$(agent_log node1)"
stop_agent node1

# ---- a low hard limit, exhausted by established connections
limited 128 128
E2E_LOG_LEVEL=info start_agent node1
check "moatd under a hard limit of 128 descriptors is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check "enroll client" enroll client
check "enroll server" enroll server
probe_serve server 8080 --timeout 120 || e2e_abort "server in server"
check_connect_ok "client -> server:8080 works before the limit is reached" client 10.244.1.11:8080 1024
info "moatd holds $(fd_count) descriptors before the flood"
cat >"$E2E_TMP/hold.py" <<'EOF'
# Open N connections and hold them until the stop file appears (at most 120 s).
import os, socket, sys, time
addr, port, n, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
held = []
for i in range(n):
    try:
        held.append(socket.create_connection((addr, port), timeout=2))
    except OSError:
        pass
print("held", len(held), flush=True)
for _ in range(1200):
    if os.path.exists(stop):
        break
    time.sleep(0.1)
EOF
STOP=$E2E_TMP/stop
node_exec node1 python3 "$E2E_TMP/hold.py" 10.244.1.11 15008 $HOLD "$STOP" </dev/null >"$E2E_TMP/hold.log" 2>&1 &
hold_pid=$!
E2E_BG_PIDS+=("$hold_pid")
paused() { grep -q 'Too many open files' "$(agent_dir node1)/moatd.log"; }
check_wait "moatd runs out of descriptors: accept() fails with EMFILE and the listener pauses" 30 paused
l0=$(log_lines)
pid=$(agent_pid node1)
cpu0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
sleep 5
l1=$(log_lines)
cpu1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
info "held: $(cat "$E2E_TMP/hold.log"); moatd: $(fd_count) descriptors; log +$((l1 - l0)) lines and $(((cpu1 - cpu0) * 10)) ms CPU in 5 s at the limit"
check "the log stays short at the limit: at most 100 new lines in 5 s (was: a million)" test $((l1 - l0)) -le 100
check "moatd is still alive" agent_alive node1

# ---- descriptors free up: service resumes
touch "$STOP"
wait "$hold_pid" 2>/dev/null
check_wait "once the held connections close, client -> server:8080 is served again" 30 \
	connect_is_ok client 10.244.1.11:8080
pauses=$(metric moat_accept_pauses_total)
suppressed=$(metric moat_log_lines_suppressed_total)
info "moat_accept_pauses_total $pauses, moat_log_lines_suppressed_total $suppressed"
check "the listener pauses are counted (moat_accept_pauses_total > 0)" test "${pauses:-0}" -gt 0
check "the suppressed log lines are counted (moat_log_lines_suppressed_total > 0)" test "${suppressed:-0}" -gt 0
check_match "a copy that passes the rate limit says how many were dropped" \
	'identical lines suppressed before this|more identical lines within 10 s are counted' "$(agent_log node1)"

stop_agent node1
e2e_finish
