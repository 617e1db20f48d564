#!/usr/bin/env bash
# Loading a big configuration never stalls proxied traffic: moatd parses, validates and
# indexes a new configuration on a worker thread; the loop thread that carries the bytes only
# swaps the snapshot in. An interactive connection (client on node1, echo server on node2,
# over HBONE through both agents) sends one byte every 100 ms and reads it back while 10,000
# AuthorizationPolicies are moved into the configuration directory of both agents. Echoes
# must keep arriving while the load runs: no gap of a second or more between two echoes.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=shop
N_POLICIES=10000
for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
command -v socat >/dev/null || e2e_abort "socat is installed" "apt-get install socat"
command -v python3 >/dev/null || e2e_abort "python3 is installed" "apt-get install python3"
lab_up <<EOF
lab cot$E2E_RUN_ID
underlay 192.168.87.0/24
node node1 192.168.87.11 10.244.1.0/24
node node2 192.168.87.12 10.244.2.0/24
pod node1 $NS/client 10.244.1.10
pod node2 $NS/server 10.244.2.10
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{
	mesh_yaml $NS
	workload_yaml $NS client 10.244.1.10
	workload_yaml $NS server 10.244.2.10
} >"$E2E_CONFIG/00-mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"
start_agent node1
start_agent node2
check "moatd on node1 is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check "moatd on node2 is ready" wait_ready node2 30 || e2e_abort "moatd starts"
check "enroll client" enroll client
check "enroll server" enroll server

# ---- the interactive connection
lab_exec server socat TCP-LISTEN:7000,reuseaddr,fork EXEC:cat </dev/null >/dev/null 2>&1 &
E2E_BG_PIDS+=("$!")
disown "$!"
cat >"$E2E_TMP/echo_client.py" <<'EOF'
# One byte every 100 ms, each echo's arrival time (ms since the epoch) on its own line.
# Bounded: stops after 600 echoes, at the stop file, or when the connection fails.
import os, socket, sys, time
addr, port, out, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((addr, port), timeout=5)
s.settimeout(5)
with open(out, "w", buffering=1) as f:
    for i in range(600):
        if os.path.exists(stop):
            break
        s.sendall(b"x")
        if s.recv(1) != b"x":
            f.write("error: connection closed\n")
            break
        f.write("%d\n" % int(time.time() * 1000))
        time.sleep(0.1)
EOF
ECHOES=$E2E_TMP/echoes
STOP=$E2E_TMP/stop
listening() { lab_exec server ss -Hltn 'sport = :7000' | grep -q 7000; }
wait_for "socat listens in server" 10 listening || e2e_abort "echo server" "socat did not listen"
lab_exec client python3 "$E2E_TMP/echo_client.py" 10.244.2.10 7000 "$ECHOES" "$STOP" </dev/null >"$E2E_TMP/echo_client.log" 2>&1 &
cpid=$!
E2E_BG_PIDS+=("$cpid")
ready=0
wait_for "echoes arrive" 15 bash -c "[ \$(grep -c '^[0-9]' '$ECHOES' 2>/dev/null) -ge 5 ]" && ready=1
check_eq "an interactive connection client -> server:7000 runs over HBONE" 1 "$ready" ||
	e2e_abort "echo connection" "$(cat "$E2E_TMP/echo_client.log")"

# ---- 10,000 policies moved in (written elsewhere first: the atomic-rename convention)
python3 - "$E2E_TMP/big" "$N_POLICIES" "$NS" <<'EOF'
import os, sys
out, n, ns = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.makedirs(out, exist_ok=True)
per = 1000
for fi in range(n // per):
    with open(os.path.join(out, "big-%02d.yaml" % fi), "w") as f:
        for i in range(fi * per, (fi + 1) * per):
            f.write(f"""---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p{i}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: unused-{i}}}}}
  rules:
  - from:
    - source: {{principals: ["cluster.local/ns/{ns}/sa/s{i}"], ipBlocks: ["10.{i % 250}.0.0/16"]}}
    to:
    - operation: {{ports: ["{8000 + i % 1000}"]}}
""")
EOF
TOTAL=$((N_POLICIES + 5))
loaded() { grep -q "configuration loaded from .* $TOTAL authorization policies" "$(agent_dir "$1")/moatd.log"; }
loads() { grep -c "debug moatd: configuration .* read in" "$(agent_dir "$1")/moatd.log"; }
l0=$(loads node1)
s0=$(grep -c 'load started on the worker thread' "$(agent_dir node1)/moatd.log")
t0=$(($(date +%s%N) / 1000000))
mv "$E2E_TMP"/big/*.yaml "$E2E_CONFIG"/
# Five more changes while that load runs (one every 200 ms, each past the 150 ms debounce):
# a change that finds a load running queues one more load after it; a change that finds one
# already queued shares it (moatd logs both, so the test knows how many shared), and none is
# lost.
started() { [ "$(grep -c 'load started on the worker thread' "$(agent_dir node1)/moatd.log")" -gt "$s0" ]; }
shared() { grep -c 'changed again during a load: shares the load already queued' "$(agent_dir node1)/moatd.log"; }
sh0=$(shared)
wait_for "node1 starts loading" 10 started
for i in 1 2 3 4 5; do
	printf 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: late-%s, namespace: %s}\nspec: {selector: {matchLabels: {app: late}}}\n' \
		"$i" "$NS" >"$E2E_TMP/late-$i.yaml"
	mv "$E2E_TMP/late-$i.yaml" "$E2E_CONFIG/"
	sleep 0.2
done
check_wait "node1 loads the $N_POLICIES policies and the 5 written during the load" 120 loaded node1
check_wait "node2 loads them too" 120 loaded node2
t1=$(($(date +%s%N) / 1000000))
sleep 1
touch "$STOP"
wait "$cpid" 2>/dev/null
for n in node1 node2; do
	info "$n: $(grep -o 'configuration .* read in [0-9]* ms' "$(agent_dir "$n")/moatd.log" | tail -n 1)"
done
info "the load took $((t1 - t0)) ms from the move to both agents reporting it"

# Echo arrival times from the move to 1 s after both agents loaded, with both ends of that
# window as fixed points: a stall at the start or the end counts, and so does an echo client
# that died (a stalled recv times out after 5 s).
mapfile -t times < <({
	echo "$t0"
	awk -v a="$t0" -v b=$((t1 + 1000)) '/^[0-9]+$/ && $1 >= a && $1 <= b' "$ECHOES"
	echo $((t1 + 1000))
} | sort -n)
during=$(awk -v a="$t0" -v b="$t1" '/^[0-9]+$/ && $1 >= a && $1 <= b' "$ECHOES" | wc -l)
maxgap=0
for ((i = 1; i < ${#times[@]}; i++)); do
	g=$((times[i] - times[i - 1]))
	[ "$g" -gt "$maxgap" ] && maxgap=$g
done
info "echoes while loading: $during; longest gap between echoes: $maxgap ms"
check "echoes kept arriving while the configuration loaded" test "$during" -ge 1
check "no gap of a second or more between two echoes from the move to 1 s after the load (longest: $maxgap ms)" \
	test "$maxgap" -lt 1000
check "the connection was never broken" bash -c "! grep -q error '$ECHOES' && ! grep -q Traceback '$E2E_TMP/echo_client.log'"
n_loads=$(($(loads node1) - l0))
info "node1: $n_loads loads for 6 changes"
k=$(($(shared) - sh0))
info "node1: $k changes shared a load already queued"
# Every change gets a load unless it shared one already queued: at most 6 - k loads.
if [ "$k" -ge 1 ]; then
	check "the changes made while a load ran coalesced: at most $((6 - k)) loads for 6 changes ($n_loads)" \
		test "$n_loads" -le $((6 - k))
else
	skip "changes made while a load ran coalesce" \
		"no change met a load already queued on this run (the 10,000-policy load, now incremental, was faster than two changes)"
fi
check_eq "both agents run the new configuration" 2 \
	"$( (loaded node1 && echo x; loaded node2 && echo x) | wc -l)"

stop_agent node1
stop_agent node2
e2e_finish
