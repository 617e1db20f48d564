#!/usr/bin/env bash
# Under load moatd holds what it is given and gives it all back: 5,000 concurrent proxied
# connections (each proven by an echo through HBONE), then 50,000 open/echo/close cycles;
# afterwards moatd's descriptors and BPF map occupancy are back at their baseline, its RSS
# returns near the baseline and has not grown with the cycles. The figures are printed (# lines) for the report.
#   LOAD_CONNS=5000 LOAD_CYCLES=50000 LOAD_PARALLEL=64   (smaller for a quick look)
source "$(dirname "$0")/lib.sh"
e2e_init

NS=ld
LOADER=${LOADER:-$BUILD/tests/moat-load}
CONNS=${LOAD_CONNS:-5000}
CYCLES=${LOAD_CYCLES:-50000}
PARALLEL=${LOAD_PARALLEL:-64}
for bin in "$MOATD" "$MOATCTL" "$LOADER"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
# moatd needs two descriptors per held connection (the app's, the upstream's) and more.
need=$((CONNS * 2 + 2048))
ulimit -n "$(ulimit -Hn)" 2>/dev/null
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
	skip "load test" "the descriptor limit ($(ulimit -Hn)) is below the $need moatd needs"
	e2e_finish
fi
lab_up <<EOF
lab ld$E2E_RUN_ID
underlay 192.168.96.0/24
node node1 192.168.96.11 10.244.1.0/24
pod node1 $NS/client 10.244.1.10
pod node1 $NS/server 10.244.1.11
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{ mesh_yaml $NS; workload_yaml $NS client 10.244.1.10; workload_yaml $NS server 10.244.1.11; } \
	>"$E2E_CONFIG/mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"
# 50,000 connections in about a minute from one client address: every port of the range, and
# TIME_WAIT ports reused (inside the test's own pod netns only).
for pod in client server; do
	lab_exec $pod sysctl -qw net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1 ||
		e2e_abort "port range in $pod"
done
# --pool-idle 2: idle HBONE connections go after 2 s, so the baseline can be met again.
E2E_LOG_LEVEL=warn start_agent node1 --pool-idle 2
check "moatd is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check "enroll client" enroll client
check "enroll server" enroll server
"$LAB_TOOL" exec "$E2E_LAB" server -- "$LOADER" serve --port 8080 >"$E2E_TMP/serve.log" 2>&1 &
E2E_BG_PIDS+=("$!")
disown "$!"
wait_for "the echo server listens" 5 grep -q listening "$E2E_TMP/serve.log" || e2e_abort "echo server"

pid=$(agent_pid node1)
bpf=$(agent_bpf_dir node1)
fds() { ls "/proc/$pid/fd" | wc -l; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
live_conns() { moatctl_on node1 status --output json | jq -r .connections; }
# Quiet: no proxied connection and no pooled HBONE connection left (idle ones go after 2 s).
quiet() { moatctl_on node1 status --output json | jq -e '.connections == 0 and .hbone_pool.connections == 0'; }
# Entries of every hash-like map moatd pinned (arrays, ring buffers and program maps have a
# fixed size, so their occupancy says nothing).
map_occupancy() {
	local m t
	for m in $(find "$bpf" -maxdepth 2 -type f 2>/dev/null | sort); do
		t=$(bpftool -j map show pinned "$m" 2>/dev/null | jq -r '.type // empty')
		case $t in hash | lru_hash | lru_percpu_hash | percpu_hash | sockhash | lpm_trie)
			echo "$(basename "$m")=$(bpftool -j map dump pinned "$m" 2>/dev/null | jq length)" ;;
		esac
	done | paste -sd' '
}

# Warm up (first HBONE connection, first allocations), then the baseline.
out=$(lab_exec client "$LOADER" cycle 10.244.1.11:8080 --count 200 --parallel 16 --max-s 60)
check_json "warm-up: 200 proxied echo cycles" "$out" '.ok == 200'
wait_for "moatd is quiet" 30 quiet
base_fds=$(fds)
base_rss=$(rss_kib)
base_maps=$(map_occupancy)
info "baseline: moatd fds $base_fds, RSS ${base_rss} KiB, maps: $base_maps"

# ---- 5,000 held at once
"$LAB_TOOL" exec "$E2E_LAB" client -- "$LOADER" hold 10.244.1.11:8080 --conns "$CONNS" --max-s 150 \
	>"$E2E_TMP/hold.log" 2>&1 &
hold_pid=$!
E2E_BG_PIDS+=("$hold_pid")
wait_for "$CONNS connections held" 120 grep -q '"event":"held"' "$E2E_TMP/hold.log"
held=$(grep '"event":"held"' "$E2E_TMP/hold.log")
info "hold: $held"
check_json "$CONNS concurrent proxied connections are established, each echoing through HBONE" \
	"$held" ".ok == $CONNS" '.failed == 0'
peak_fds=$(fds)
peak_rss=$(rss_kib)
peak_conns=$(live_conns)
peak_maps=$(map_occupancy)
info "while held: moatd fds $peak_fds, RSS ${peak_rss} KiB ($(( (peak_rss - base_rss) * 1024 / CONNS )) B per connection), live $peak_conns, maps: $peak_maps"
# One node: moatd keeps the outbound and the inbound half of each connection.
check_eq "moatd counts them all live (outbound and inbound half of each)" "$((CONNS * 2))" "$peak_conns"
kill -TERM "$hold_pid" 2>/dev/null
wait_for "the held connections are released" 30 grep -q '"event":"released"' "$E2E_TMP/hold.log"
check_json "... none dropped while held, all closed by the client" \
	"$(grep '"event":"released"' "$E2E_TMP/hold.log")" ".closed == $CONNS" '.dropped_while_held == 0'
check_wait "moatd lets go of every one of them (and of the idle HBONE connections)" 60 quiet
info "after the hold: moatd fds $(fds), RSS $(rss_kib) KiB, maps: $(map_occupancy)"
check_eq "... its descriptors are back at the baseline" "$base_fds" "$(fds)"
# With nothing left to proxy moatd hands the heap of the burst back (malloc_trim a second
# after the last connection): RSS comes back within a quarter of the peak's growth.
rss_near_base() { [ "$(rss_kib)" -le $((base_rss + (peak_rss - base_rss) / 4)) ]; }
check_wait "... and its RSS returns near the baseline (<= ${base_rss} + a quarter of $((peak_rss - base_rss)) KiB)" 15 rss_near_base
info "RSS after the hold, trimmed: $(rss_kib) KiB"
mid_rss=$(rss_kib)

# ---- 50,000 open/close cycles
out=$(lab_exec client "$LOADER" cycle 10.244.1.11:8080 --count "$CYCLES" --parallel "$PARALLEL" --max-s 200)
info "cycles: $out"
check_json "$CYCLES open / echo / close cycles through moatd all succeed" "$out" ".ok == $CYCLES" '.failed == 0'
check_wait "moatd has no live connection left (nor an idle HBONE connection)" 60 quiet
end_fds=$(fds)
end_rss=$(rss_kib)
end_maps=$(map_occupancy)
info "after the cycles: moatd fds $end_fds, RSS ${end_rss} KiB, maps: $end_maps"
check_eq "moatd's descriptors are back at the baseline" "$base_fds" "$end_fds"
check_eq "the BPF maps hold what they held at the baseline" "$base_maps" "$end_maps"
# Freed memory stays with the allocator (glibc keeps it for reuse), so the peak of the hold
# may stay in RSS; what must not happen is growth with the number of connections served.
check "RSS after $CYCLES cycles has not grown past the level after the hold (+4 MiB): ${end_rss} vs ${mid_rss} KiB" \
	test "$end_rss" -le $((mid_rss + 4096))
check "moatd is alive" agent_alive node1

stop_agent_checked node1 "moatd stops cleanly"
e2e_finish
