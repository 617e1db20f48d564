#!/usr/bin/env bash
# The access log never stalls the data plane, and loses nothing when its sink keeps up:
#  - fast sink (a file): N proxied connections give exactly N outbound and N inbound
#    connection records after moatd stops (SIGTERM drains what is queued);
#  - slow sink (a FIFO whose reader never reads): connections keep flowing long after the
#    pipe and moatd's ring (--access-log-buffer 16384) are full; the lines that did not fit
#    are counted in moat_access_log_dropped_total and reported by a warning; moatd still
#    answers and stops within its bound.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=al
LOADER=${LOADER:-$BUILD/tests/moat-load}
FAST=200 # connections with a file sink
SLOW=600 # with a FIFO nobody reads: ~800 B of records each, far beyond 64 KiB + 16 KiB
# moatd arguments for the slow sink (E2E_SLOW_SINK_ARGS= tries a build without the option)
SLOW_ARGS=${E2E_SLOW_SINK_ARGS---access-log-buffer 16384}
for bin in "$MOATD" "$MOATCTL" "$LOADER"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
lab_up <<LAB
lab al$E2E_RUN_ID
underlay 192.168.97.0/24
node node1 192.168.97.11 10.244.1.0/24
pod node1 $NS/client 10.244.1.10
pod node1 $NS/server 10.244.1.11
LAB
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{ mesh_yaml $NS; workload_yaml $NS client 10.244.1.10; workload_yaml $NS server 10.244.1.11; } \
	>"$E2E_CONFIG/mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"
"$LAB_TOOL" exec "$E2E_LAB" server -- "$LOADER" serve --port 8080 >"$E2E_TMP/serve.log" 2>&1 &
E2E_BG_PIDS+=("$!")
disown "$!"
wait_for "the echo server listens" 5 grep -q listening "$E2E_TMP/serve.log" || e2e_abort "echo server"
metric() { node_exec node1 curl -sf -m 2 http://127.0.0.1:15020/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
records() { # DIRECTION: opened connection records of that direction to the server
	access_log_select node1 ".type == \"connection\" and .direction == \"$1\" and .dst_workload == \"$NS/server\" and .opened" | wc -l
}

# ---- fast sink: a file
E2E_LOG_LEVEL=info start_agent node1
check "moatd is ready (access log: a file)" wait_ready node1 30 || e2e_abort "moatd starts"
check "enroll client" enroll client
check "enroll server" enroll server
out=$(lab_exec client "$LOADER" cycle 10.244.1.11:8080 --count $FAST --parallel 8 --max-s 60)
check_json "$FAST proxied echo cycles succeed" "$out" ".ok == $FAST"
stop_agent node1
check_eq "moatd stops cleanly (SIGTERM drains the access log)" 0 "$?"
check_eq "no line lost on a fast sink: $FAST outbound connection records" "$FAST" "$(records outbound)"
check_eq "... and $FAST inbound ones" "$FAST" "$(records inbound)"

# ---- slow sink: a FIFO with a reader that never reads
fifo=$E2E_TMP/access.fifo
mkfifo "$fifo" || e2e_abort "mkfifo $fifo"
sleep 100000 <>"$fifo" & # holds a read end open (moatd's open returns), never reads
E2E_BG_PIDS+=("$!")
disown "$!"
# shellcheck disable=SC2086
E2E_LOG_LEVEL=info start_agent node1 --access-log "$fifo" $SLOW_ARGS
check "moatd is ready (access log: a FIFO nobody reads)" wait_ready node1 30 || e2e_abort "moatd starts"
two_pods() { moatctl_on node1 status --output json | jq -e '.pods == 2' >/dev/null; }
check_wait "it took both pods back from the first agent" 15 two_pods
out=$(lab_exec client "$LOADER" cycle 10.244.1.11:8080 --count $SLOW --parallel 8 --max-s 60)
info "cycles with a stalled sink: $out"
check_json "$SLOW proxied echo cycles succeed while the access-log sink takes nothing" "$out" ".ok == $SLOW" '.failed == 0'
check "moatd still answers its control socket" moatctl_on node1 status
dropped=$(metric moat_access_log_dropped_total)
info "moat_access_log_dropped_total ${dropped:-absent}"
check "the lines that did not fit are counted (moat_access_log_dropped_total > 0)" test "${dropped:-0}" -gt 0
check_match "... and reported by a warning" 'access log .*: the sink is not keeping up: [0-9]+ lines dropped' "$(agent_log node1)"
stop_agent node1
check_eq "moatd stops within its bound and cleanly, the sink still stalled" 0 "$?"
e2e_finish
