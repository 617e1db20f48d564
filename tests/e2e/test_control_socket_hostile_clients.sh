#!/usr/bin/env bash
# moatd's control socket is off the data path: clients that connect and send nothing, or a
# byte every 1.5 s, or far more clients than moatd serves at once, never stall proxied
# traffic, and `moatctl status` still answers. Descriptors passed over the socket never pile
# up in moatd: extra ones and those of a truncated control message are closed and refused.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=ctl
ABUSE=${ABUSE:-$BUILD/tests/moat-ctl-abuse}
for bin in "$MOATD" "$MOATCTL" "$ABUSE"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
lab_up <<EOF
lab hc$E2E_RUN_ID
underlay 192.168.93.0/24
node node1 192.168.93.11 10.244.1.0/24
pod node1 $NS/client 10.244.1.10
pod node1 $NS/server 10.244.1.11
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{ mesh_yaml $NS; workload_yaml $NS client 10.244.1.10; workload_yaml $NS server 10.244.1.11; } \
	>"$E2E_CONFIG/mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"
start_agent node1
check "moatd is ready" wait_ready node1 30 || e2e_abort "moatd starts"
check "enroll client" enroll client
check "enroll server" enroll server
E2E_SERVE_BYTES=$((32 * 1024 * 1024)) probe_serve server 8080 || e2e_abort "server in server"
check_connect_ok "a proxied transfer works before any hostile client" client 10.244.1.11:8080 1048576 $((32 * 1024 * 1024))

SOCK=$(agent_socket node1)
pid=$(agent_pid node1)
fd_count() { ls "/proc/$pid/fd" | wc -l; }

# ---- item: stuck clients do not stall the loop
"$ABUSE" trickle "$SOCK" --every-ms 1500 --for 25 >"$E2E_TMP/trickle.json" 2>&1 &
E2E_BG_PIDS+=("$!")
trickle_pid=$!
# 116 idle clients: the 16 moatd serves at once and 100 beyond that cap; each one moatd drops
# comes back 0.5 s later, for 25 s.
"$ABUSE" idle "$SOCK" --conns 116 --hold 25 >"$E2E_TMP/idle.json" 2>&1 &
E2E_BG_PIDS+=("$!")
wait_for "the idle clients are connected" 10 grep -q opened "$E2E_TMP/idle.json"
info "idle clients: $(cat "$E2E_TMP/idle.json")"
# The transfer must not wait for any control client: with no progress for 5 s the probe gives up.
out=$(probe_connect client 10.244.1.11:8080 --send-bytes 1048576 --expect-bytes $((32 * 1024 * 1024)) --timeout 5 2>&1)
check_json "while they sit on moatd.sock, a 32 MiB proxied transfer completes intact" "$out" \
	'.connect == "ok"' '.received_ok == true' '.server_sha256 == .sent_sha256' '.exit == 0'
out=$(timeout 10 "$MOATCTL" --socket "$SOCK" status 2>&1)
check_eq "... and moatctl status answers (exit 0)" 0 "$?"
check_match "... with the agent's status" 'pods +2 enrolled' "$out"
out=$(timeout 10 "$MOATCTL" --socket "$SOCK" status --output json 2>&1)
check_json "... twice in a row" "$out" '.pods == 2'
check "moatd is still alive" agent_alive node1
wait "$trickle_pid" 2>/dev/null
info "trickle: $(cat "$E2E_TMP/trickle.json")"
check_json "the trickling client was dropped again and again (it never completed a request)" \
	"$(cat "$E2E_TMP/trickle.json")" '.dropped >= 2'
check_match "moatd logs why it dropped control clients" \
	'control client \(pid [0-9]+\) dropped: (no complete request within|control socket busy)' "$(agent_log node1)"

# ---- item: descriptors passed with requests never pile up
wait_for "the idle clients are gone" 30 grep -q dropped_by_moatd "$E2E_TMP/idle.json"
info "idle clients: $(tail -n 1 "$E2E_TMP/idle.json")"
check_json "moatd kept dropping the idle clients (deadline or cap) while they lasted" \
	"$(tail -n 1 "$E2E_TMP/idle.json")" '.dropped_by_moatd >= 116'
timeout 10 "$MOATCTL" --socket "$SOCK" status >/dev/null 2>&1
before=$(fd_count)
out=$("$ABUSE" fds "$SOCK" --requests 50 --fds 10 2>&1)
check_json "50 requests carrying 10 descriptors each are refused, each answered with the reason" \
	"$out" '.answered == 50' '.refused == 50' '.last | test("^status 2 \\| more than 1 descriptor")'
out=$("$ABUSE" fds "$SOCK" --requests 20 --fds 200 2>&1)
check_json "20 requests whose 200 descriptors overflow the control buffer (MSG_CTRUNC) are refused" \
	"$out" '.answered == 20' '.refused == 20' '.last | test("control message truncated")'
out=$("$ABUSE" fds "$SOCK" --requests 20 --fds 1 2>&1)
check_json "a request with one descriptor is still served" "$out" '.status0 == 20'
after=$(fd_count)
check_eq "moatd's descriptor count is flat over 90 requests carrying 2,470 descriptors ($before before)" \
	"$before" "$after"
# Alone, a client trickling a byte every 1.5 s is cut at the request's total deadline (a
# timeout per read would never fire).
# Each cycle lasts about 4.5 s (the third byte meets the 3 s deadline, the fourth sees EOF):
# 14 s hold three cycles, so at least two drops are seen even on a loaded machine.
out=$("$ABUSE" trickle "$SOCK" --every-ms 1500 --for 14 2>&1)
check_json "a lone trickling client is dropped at the request deadline, every time" "$out" \
	'.dropped >= 2'
check_match "... and moatd says so" 'dropped: no complete request within 3000 ms' "$(agent_log node1)"
check_connect_ok "proxied traffic still flows afterwards" client 10.244.1.11:8080 1048576 $((32 * 1024 * 1024))

stop_agent_checked node1 "moatd stops cleanly"
e2e_finish
