#!/usr/bin/env bash
# Cross-node HBONE through moat, run inside the vm layer's guest (Debian's 6.1 kernel with
# tls.ko) by tests/vm/guest.sh; it also runs on any host (there every tunnel is user space):
#   bash tests/vm/cross_node.sh [MODE...]     MODE: default (moatd's own choice) | userspace
# One two-node lab (tests/lab/lab, tests/e2e/lib.sh), pod a on node1 and pod b on node2; per
# MODE (default: "default userspace", in that order) both moatds are (re)started with that
# engine and, with check names prefixed "[MODE]":
#  - XNODE_BYTES (16 MiB) each way a -> b arrive intact (sha256 both ways);
#  - both moatds report the engine that carried it: the access-log `engine` field of the
#    outbound (node1) and inbound (node2) records, and `moatctl connections` on both nodes
#    while a long-lived connection is open;
#  - the kernel's TLS counters (/proc/net/tls_stat, per network namespace) grow in TX and RX
#    for each end's tunnel socket when the engine is kTLS, and stay put in user space. moatd
#    opens both ends inside the pods' namespaces (outbound from a's, 15008 in b's): node1's
#    tunnel is counted in pod a's namespace, node2's in pod b's;
#  - moat_relay_payload_copied_bytes_total{direction="to_tunnel"}: the payload each node read
#    into user space on its TX path: 0 with ktls-splice, the whole transfer otherwise.
# Each phase also prints one "# figure {JSON}" line: bytes moved, milliseconds, and the CPU
# seconds both moatds spent during the transfer (utime + stime from /proc/PID/stat), which
# bench/vm turns into its kTLS / user-space figures (measured, never asserted here); with
# XNODE_IPERF_SECS=N also one for an N-second iperf3 stream a -> b (no hashing in the apps:
# the cleaner throughput figure).
# The expected engine: `userspace` when forced, when the kernel has no kTLS, or when this
# moatd has no kTLS engine (its --help names none; the kTLS checks are then skipped, naming
# why); otherwise its best kTLS engine: `ktls-splice` when --help names it, else `ktls`
# (XNODE_KTLS_ENGINE overrides).
# Under emulation every process start is slow: the helpers below enter the nodes' network
# namespaces with nsenter directly rather than through the lab tool where they can.
source "$(dirname "$0")/../e2e/lib.sh"
e2e_name() { echo cross_node; }
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(default userspace)
for m in "${MODES[@]}"; do
	case $m in default | userspace) ;; *) echo "usage: cross_node.sh [default|userspace]..." >&2; exit 2 ;; esac
done
e2e_init

NS=xn
BYTES=${XNODE_BYTES:-16777216}
export E2E_SERVE_BYTES=$BYTES
# The request crosses the tunnel after the client wrote it: under emulation the response can
# take longer than the probe's usual 10 s wait for progress.
export E2E_PROBE_TIMEOUT=${E2E_PROBE_TIMEOUT:-90}
export E2E_START_WAIT=${E2E_START_WAIT:-60} # every process start is slow under emulation
A=$NS/a B=$NS/b
PORT=8080 ECHO_PORT=9000
E2E_LOG_LEVEL=${E2E_LOG_LEVEL:-info}
T0=$SECONDS
stamp() { info "[$((SECONDS - T0)) s] $*"; }

e2e_require socat

E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{
	mesh_yaml "$NS"
	workload_yaml "$NS" a 10.244.1.10
	workload_yaml "$NS" b 10.244.2.10
} >"$E2E_CONFIG/00-mesh.yaml"
lab_up <<EOF
lab xnode${E2E_RUN_ID}
underlay 192.168.83.0/24
node node1 192.168.83.11 10.244.1.0/24
node node2 192.168.83.12 10.244.2.0/24
pod node1 $A 10.244.1.10
pod node2 $B 10.244.2.10
EOF
stamp "lab up"
nsx() { local node=$1; shift; nsenter --net="/run/netns/moatlab-$E2E_LAB-node-$node" -- "$@"; }
declare -A TUNNEL_NS=([node1]=$(pod_info "$A" netns) [node2]=$(pod_info "$B" netns))

probe_serve "$B" "$PORT" --timeout 60 || e2e_abort "moat-probe serves in $B"
"$LAB_TOOL" exec "$E2E_LAB" "$B" -- socat "TCP-LISTEN:$ECHO_PORT,reuseaddr,fork" EXEC:cat \
	</dev/null >/dev/null 2>&1 &
E2E_BG_PIDS+=("$!")
disown "$!"
make_ca >/dev/null || e2e_abort "moatctl ca init"
IPERF_SECS=${XNODE_IPERF_SECS:-0}
if [ "$IPERF_SECS" -gt 0 ]; then
	"$LAB_TOOL" exec "$E2E_LAB" "$B" -- iperf3 -s -p 5201 </dev/null >/dev/null 2>&1 &
	E2E_BG_PIDS+=("$!")
	disown "$!"
fi

ready() { nsx "$1" curl -sf -o /dev/null -m 2 http://127.0.0.1:15021/healthz/ready; }
start_both() { # MODE: both moatds with that engine, ready
	local n
	E2E_MOATD_ARGS=""
	[ "$1" = userspace ] && E2E_MOATD_ARGS="--engine userspace"
	for n in node1 node2; do start_agent "$n" >/dev/null; done
	for n in node1 node2; do
		check_wait "[$1] moatd on $n is ready" 90 ready "$n" ||
			e2e_abort "[$1] moatd on $n starts" "$(agent_log "$n" | tail -n 20)"
	done
}
metric() { # NODE PREFIX: the sum of the matching samples (0 when none)
	nsx "$1" curl -s -m 5 http://127.0.0.1:15020/metrics |
		awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { printf "%d\n", s + 0 }'
}
copied_tx() { metric "$1" 'moat_relay_payload_copied_bytes_total{direction="to_tunnel"'; }
tls_stat() { # NODE FIELD: /proc/net/tls_stat's FIELD where NODE's tunnel end lives (0 without kTLS)
	nsenter --net="${TUNNEL_NS[$1]}" -- cat /proc/net/tls_stat 2>/dev/null |
		awk -v f="$2" '$1 == f { v = $2 } END { print v + 0 }'
}
moatd_cpu_ticks() { # utime + stime of both moatds, in clock ticks
	local n sum=0 t
	for n in node1 node2; do
		t=$(awk '{ print $14 + $15 }' "/proc/$(agent_pid $n)/stat" 2>/dev/null)
		sum=$((sum + ${t:-0}))
	done
	echo "$sum"
}
iperf_figure() { # MODE ENGINE: one iperf3 stream a -> b, as a "# figure" line (not a check)
	local cpu0 out
	cpu0=$(moatd_cpu_ticks)
	out=$("$LAB_TOOL" exec "$E2E_LAB" "$A" -- iperf3 -c 10.244.2.10 -p 5201 -t "$IPERF_SECS" -J 2>&1)
	if ! jq -e '.end.sum_received.bytes > 0' >/dev/null 2>&1 <<<"$out"; then
		info "iperf3 a -> b failed: $(jq -r '.error // empty' <<<"$out" 2>/dev/null || tail -c 200 <<<"$out")"
		return 0
	fi
	info "figure $(jq -c --arg m "$1" --arg e "$2" --argjson t "$(($(moatd_cpu_ticks) - cpu0))" \
		--argjson hz "$(getconf CLK_TCK)" --arg k "$(uname -r)" \
		'{mode: $m, engine: $e, tool: "iperf3", bytes: .end.sum_received.bytes,
		  ms: (.end.sum_received.seconds * 1000 | round), moatd_cpu_s: ($t / $hz), kernel: $k}' <<<"$out")"
}
moatd_has_ktls=no KTLS_ENGINE=ktls
"$MOATD" --help 2>&1 | grep -qi 'ktls' && moatd_has_ktls=yes
"$MOATD" --help 2>&1 | grep -q 'ktls-splice' && KTLS_ENGINE=ktls-splice
KTLS_ENGINE=${XNODE_KTLS_ENGINE:-$KTLS_ENGINE}
target=10.244.2.10:$PORT
rec_cond='.type == "connection" and .direction == $d and .dst_addr == $dst and .path == "hbone"
	and .engine == $e and .security == "mutual_tls" and .bytes_received == ($n | tonumber)
	and .bytes_sent >= ($n | tonumber) and .error == null' # the answer leads with a status line
fifo=$E2E_TMP/ll.in
mkfifo "$fifo"

phase() { # MODE
	local mode=$1 want n tx rx cp ms t0 ll_pid
	start_both "$mode"
	stamp "[$mode] agents ready"
	if [ "$mode" = default ]; then # enrollment persists across the restart of the next phase
		for n in "$A" "$B"; do check "enroll $n" enroll "$n"; done
	fi
	local ktls_kernel
	ktls_kernel=$(moatctl_on node1 status -o json 2>/dev/null | jq -r '.ktls_available // false')
	want=$KTLS_ENGINE
	[ "$mode" = userspace ] || [ "$ktls_kernel" != true ] || [ "$moatd_has_ktls" = no ] && want=userspace
	info "[$mode] kernel $(uname -r), kTLS available to moatd: $ktls_kernel, moatd has kTLS engines: $moatd_has_ktls: expecting engine $want"
	declare -A tx0 rx0 cp0
	for n in node1 node2; do
		tx0[$n]=$(tls_stat $n TlsTxSw) rx0[$n]=$(tls_stat $n TlsRxSw) cp0[$n]=$(copied_tx $n)
	done

	local cpu0
	cpu0=$(moatd_cpu_ticks)
	t0=$(date +%s%N)
	check_connect_ok "[$mode] a -> b:$PORT across nodes carries $BYTES bytes each way intact (sha256)" \
		"$A" "$target" "$BYTES" "$BYTES"
	ms=$((($(date +%s%N) - t0) / 1000000))
	stamp "[$mode] transfer: $((2 * BYTES)) bytes in $ms ms"
	info "figure $(jq -cn --arg m "$mode" --arg e "$want" --argjson b $((2 * BYTES)) --argjson ms "$ms" \
		--argjson t "$(($(moatd_cpu_ticks) - cpu0))" --argjson hz "$(getconf CLK_TCK)" --arg k "$(uname -r)" \
		'{mode: $m, engine: $e, tool: "moat-probe", bytes: $b, ms: $ms, moatd_cpu_s: ($t / $hz), kernel: $k}')"
	[ "$IPERF_SECS" -gt 0 ] && iperf_figure "$mode" "$want"
	check_wait "[$mode] node1's moatd logs the outbound record with engine $want and the bytes" 15 \
		access_log_has node1 "$rec_cond" --arg d outbound --arg dst "$target" --arg e "$want" --arg n "$BYTES"
	check_wait "[$mode] node2's moatd logs the inbound record with engine $want and the bytes" 15 \
		access_log_has node2 "$rec_cond" --arg d inbound --arg dst "$target" --arg e "$want" --arg n "$BYTES"

	for n in node1 node2; do
		tx=$(tls_stat $n TlsTxSw) rx=$(tls_stat $n TlsRxSw)
		local delta="TlsTxSw ${tx0[$n]} -> $tx, TlsRxSw ${rx0[$n]} -> $rx"
		if [ "$want" = userspace ]; then
			check "[$mode] $n: no kTLS socket with the user-space engine ($delta)" \
				test "$tx" -eq "${tx0[$n]}" -a "$rx" -eq "${rx0[$n]}"
		else
			check "[$mode] $n: its tunnel's kTLS TX and RX were installed (in ${TUNNEL_NS[$n]##*/}: $delta)" \
				test "$tx" -gt "${tx0[$n]}" -a "$rx" -gt "${rx0[$n]}"
		fi
	done
	if [ "$mode" = default ] && [ "$want" = userspace ]; then
		if [ "$ktls_kernel" != true ]; then
			skip "[$mode] kTLS engine checks" "this kernel has no kTLS (moatctl status: ktls_available $ktls_kernel)"
		else
			skip "[$mode] kTLS engine checks" "the kernel has kTLS but this moatd has no kTLS relay engine: expecting userspace"
		fi
	fi
	for n in node1 node2; do # node1 sends the request into its tunnel, node2 the response
		cp=$(copied_tx $n)
		if [ "$want" = ktls-splice ]; then
			check_eq "[$mode] $n: zero payload bytes copied through user space on the TX path (moat_relay_payload_copied_bytes_total{direction=\"to_tunnel\"})" \
				"${cp0[$n]}" "$cp"
		else
			check "[$mode] $n: its TX path copied the $BYTES bytes it sent through user space (${cp0[$n]} -> $cp)" \
				test "$((cp - cp0[$n]))" -ge "$BYTES"
		fi
	done

	"$LAB_TOOL" exec "$E2E_LAB" "$A" -- socat - "TCP:10.244.2.10:$ECHO_PORT" <"$fifo" \
		>"$E2E_TMP/ll-$mode.out" 2>"$E2E_TMP/ll-$mode.err" &
	ll_pid=$!
	E2E_BG_PIDS+=("$ll_pid")
	disown "$ll_pid"
	exec {LL_FD}>"$fifo"
	echo "hello across nodes" >&"$LL_FD"
	check_wait "[$mode] a long-lived a -> b:$ECHO_PORT connection echoes" 20 \
		grep -qx "hello across nodes" "$E2E_TMP/ll-$mode.out"
	for n in node1 node2; do
		check_match "[$mode] moatctl connections on $n shows it with path hbone, engine $want" \
			"hbone +$want" "$(moatctl_on $n connections)"
	done
	exec {LL_FD}>&-
	ll_gone() { [ ! -e "/proc/$1" ] || [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
	check_wait "[$mode] closing the client ends the connection" 10 ll_gone "$ll_pid"
	for n in node1 node2; do
		stop_agent "$n"
		check_eq "[$mode] moatd on $n exits 0 on SIGTERM" 0 "$?"
	done
	stamp "[$mode] done"
}

for m in "${MODES[@]}"; do phase "$m"; done
lab=$E2E_LAB
"$LAB_TOOL" down "$lab" >/dev/null 2>&1
E2E_LAB=""
check_eq "no namespace, cgroup, pin, state or process left" "" "$(lab_traces "$lab")"
e2e_finish
