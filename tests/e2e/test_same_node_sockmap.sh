#!/usr/bin/env bash
# Same node, joined in the kernel (moatd's default engine, sockmap): two pods of one node talk through
# the two sockets moatd joins in the `joined` sockhash, not over HBONE on loopback.
#  - 10 MiB each way arrive intact (sha256), half-close respected;
#  - the connection is logged as on the cross-node path (an outbound and an inbound record,
#    identities, policy, exact bytes) with path same_node and engine sockmap, and counted in
#    istio_tcp_* with connection_security_policy="same_node";
#  - zero payload bytes through user space: moat_engine_bytes_total{engine="userspace"} stays
#    put while the sockmap engine carried every byte, and the kernel's own counter (BPF
#    stats join_redirected) moved;
#  - a denied pair still fails at connect() with EPERM;
#  - a policy change that denies a joined pair closes the open connection (LATE_REJECTION);
#  - closing the client closes the server's side too;
#  - `--engine userspace` forces HBONE for the same pair (diagnosis).
# The seed-000 matrix with every pod on one node (single_node) runs joined too; with
# E2E_MOATD_ARGS="--engine userspace" every e2e file runs the HBONE path instead.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=shop
TD=cluster.local
MIB10=10485760
export E2E_SERVE_BYTES=$MIB10
CLI=$NS/client OTHER=$NS/other SRV=$NS/server
declare -A ADDR=([$CLI]=10.244.7.10 [$OTHER]=10.244.7.11 [$SRV]=10.244.7.12)
PORT=8080
ECHO_PORT=9000

e2e_require socat

E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{
	mesh_yaml "$NS"
	for p in "$CLI" "$OTHER" "$SRV"; do workload_yaml "$NS" "${p#*/}" "${ADDR[$p]}"; done
} >"$E2E_CONFIG/00-mesh.yaml"
authz_yaml "$NS" allow-client app=server ALLOW "principals=$TD/ns/$NS/sa/client" \
	>"$E2E_CONFIG/10-allow-client.yaml"
check "moatctl lint accepts the configuration" "$MOATCTL" lint "$E2E_CONFIG"
make_ca "$TD" >/dev/null || e2e_abort "moatctl ca init"

{
	echo "lab samenode$E2E_RUN_ID"
	echo "underlay 192.168.79.0/24"
	echo "node node1 192.168.79.11 10.244.7.0/24"
	for p in "$CLI" "$OTHER" "$SRV"; do echo "pod node1 $p ${ADDR[$p]}"; done
} >"$E2E_TMP/lab.conf"
lab_up "$E2E_TMP/lab.conf"

probe_serve "$SRV" "$PORT" || e2e_abort "moat-probe serves in $SRV"
"$LAB_TOOL" exec "$E2E_LAB" "$SRV" -- socat "TCP-LISTEN:$ECHO_PORT,reuseaddr,fork" EXEC:cat \
	</dev/null >/dev/null 2>&1 &
E2E_BG_PIDS+=("$!")
disown "$!"
echo_listening() { lab_exec "$SRV" ss -Hltn | grep -q ":$ECHO_PORT "; }
wait_for "socat echo server on $SRV:$ECHO_PORT" 5 echo_listening || e2e_abort "socat echo server listens"

start_agent node1 --engine sockmap
wait_ready node1 30 || e2e_abort "moatd on node1 becomes ready"
_ok "moatd --engine sockmap on node1 is ready"
for p in "$CLI" "$OTHER" "$SRV"; do check "enroll $p" enroll "$p"; done

metric() { # PREFIX (name and first labels): the sum of the matching samples (0 when none)
	node_exec node1 curl -s -m 2 http://127.0.0.1:15020/metrics |
		awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { printf "%d\n", s + 0 }'
}
bpf_stat() { # FIELD of moat_stats summed over the CPUs, from the pinned map
	bpftool -j map dump pinned "$(agent_bpf_dir node1)/stats" |
		jq "[.[0].formatted.values[].value.$1] | add // 0"
}
spiffe() { echo "spiffe://$TD/ns/$NS/sa/$1"; }

# ---------------------------------------------------------------- A. bytes, records, engine
us_before=$(metric 'moat_engine_bytes_total{engine="userspace"')
redir_before=$(bpf_stat join_redirected)
target=${ADDR[$SRV]}:$PORT
check_connect_ok "client -> server:$PORT carries 10 MiB each way intact (same node, joined)" \
	"$CLI" "$target" $MIB10 $MIB10
check "... the server sees the client's own address (source preserved)" \
	grep -q "\"peer\":\"${ADDR[$CLI]}:[0-9]*\"" "$(probe_log_path "$SRV" "$PORT")"
for dir in outbound inbound; do
	cond='.type == "connection" and .direction == $d and .src_workload == $src and .dst_addr == $dst
		and .src_identity == $sid and .dst_identity == $did and .policy == "shop/allow-client"
		and .path == "same_node" and .engine == "sockmap" and .security == "same_node"
		and .bytes_received == 10485760 and .bytes_sent >= 10485760 and .error == null'
	check_wait "... logged as a $dir connection: identities, policy, path same_node, engine sockmap, bytes" 10 \
		access_log_has node1 "$cond" --arg d "$dir" --arg src "$CLI" --arg dst "$target" \
		--arg sid "$(spiffe client)" --arg did "$(spiffe server)"
done
info "record: $(access_log_select node1 '.type == "connection" and .engine == "sockmap"' | head -n 1)"
check_eq "... zero payload bytes through user space (moat_engine_bytes_total{engine=\"userspace\"})" \
	"$us_before" "$(metric 'moat_engine_bytes_total{engine="userspace"')"
sm=$(metric 'moat_engine_bytes_total{engine="sockmap"')
check "... the sockmap engine carried them ($sm bytes over both records)" test "$sm" -ge $((4 * MIB10))
redir_after=$(bpf_stat join_redirected)
check "... and the kernel redirected them (BPF join_redirected $redir_before -> $redir_after)" \
	test "$redir_after" -gt "$redir_before"
check_match "... istio_tcp_connections_opened_total says connection_security_policy=\"same_node\"" \
	'connection_security_policy="same_node"' \
	"$(node_exec node1 curl -s -m 2 http://127.0.0.1:15020/metrics | grep '^istio_tcp_connections_opened_total')"
check_connect_ok "a second connection: 1 MiB up, 10 MiB down, intact" "$CLI" "$target" 1048576 $MIB10

# ---------------------------------------------------------------- B. deny unchanged
check_connect_denied "other -> server:$PORT (no ALLOW matches it) fails at connect() with EPERM" \
	"$OTHER" "$target" 500

# ---------------------------------------------------------------- C. live re-check, close
fifo=$E2E_TMP/ll.in
mkfifo "$fifo"
ll_open() { # OUT-FILE: socat client -> server echo port, stdin the FIFO this shell holds
	"$LAB_TOOL" exec "$E2E_LAB" "$CLI" -- socat - "TCP:${ADDR[$SRV]}:$ECHO_PORT" \
		<"$fifo" >"$1" 2>>"$E2E_TMP/ll.err" &
	LL_PID=$!
	E2E_BG_PIDS+=("$!")
	disown "$!"
	exec {LL_FD}>"$fifo"
}
ll_alive() { [ -e "/proc/$LL_PID" ] && [ "$(awk '{ print $3 }' "/proc/$LL_PID/stat" 2>/dev/null)" != Z ]; }
ll_dead() { ! ll_alive; }

ll_open "$E2E_TMP/ll.out"
echo "hello joined" >&"$LL_FD"
check_wait "a long-lived client -> server:$ECHO_PORT connection echoes through the join" 5 \
	grep -qx "hello joined" "$E2E_TMP/ll.out"
check_match "moatctl connections shows it with path same_node, engine sockmap" 'same_node +sockmap' \
	"$(moatctl_on node1 connections)"
authz_yaml "$NS" deny-client app=server DENY "principals=$TD/ns/$NS/sa/client" \
	>"$E2E_CONFIG/20-deny-client.yaml"
check_wait "a DENY policy for the pair closes the joined connection (the client's socat ends)" 15 ll_dead
check_wait "... logged as LATE_REJECTION naming shop/deny-client" 5 access_log_has node1 \
	'.type == "deny" and .reason_code == "LATE_REJECTION" and .policy == "shop/deny-client"
		and .src_identity == $sid' --arg sid "$(spiffe client)"
check_connect_denied "... and new connections are denied at connect()" "$CLI" "$target" 500
exec {LL_FD}>&-
rm -f "$E2E_CONFIG/20-deny-client.yaml"
check_wait "removing it allows the pair again" 15 connect_is_ok "$CLI" "$target"

ll_open "$E2E_TMP/ll2.out"
echo "second" >&"$LL_FD"
check_wait "a second long-lived connection echoes" 5 grep -qx "second" "$E2E_TMP/ll2.out"
srv_conns() { lab_exec "$SRV" ss -Htn state established "( sport = :$ECHO_PORT )" | wc -l; }
check_eq "... the server has it established" 1 "$(srv_conns)"
exec {LL_FD}>&-
check_wait "closing the client ends it (socat exits)" 5 ll_dead
check_wait "... and the server's side of it is closed too" 5 test "$(srv_conns)" -eq 0
no_conns() { [ "$(moatctl_on node1 connections -o json | jq 'length')" = 0 ]; }
check_wait "... and moatd has no live connection left" 5 no_conns

check "moatd is still alive" agent_alive node1

# ---------------------------------------------------------------- D. --engine userspace
stop_agent node1
start_agent node1 --engine userspace
wait_ready node1 30 || e2e_abort "moatd --engine userspace on node1 becomes ready"
check_match "moatctl status names the same-node engine: userspace" 'same node: userspace' \
	"$(moatctl_on node1 status)"
check_wait "with --engine userspace client -> server:$PORT still carries 1 MiB each way" 15 \
	connect_is_ok "$CLI" "$target"
check_connect_ok "... intact" "$CLI" "$target" 1048576 $MIB10
check_wait "... over HBONE: logged with path hbone, engine userspace, mutual_tls" 10 access_log_has node1 \
	'.type == "connection" and .direction == "inbound" and .path == "hbone"
		and .engine == "userspace" and .security == "mutual_tls" and .src_identity == $sid' \
	--arg sid "$(spiffe client)"
check "moatd is still alive" agent_alive node1

# ---------------------------------------------------------------- E. --engine ktls, no kTLS
# This host's kernel has no TLS ULP: moatd asks for kTLS, every HBONE connection stays on
# OpenSSL, and status says why (the probe's words), never a silent "ktls".
stop_agent node1
start_agent node1 --engine ktls
wait_ready node1 30 || e2e_abort "moatd --engine ktls on node1 becomes ready"
if [ -d /sys/module/tls ]; then
	info "this host has kernel TLS: section E (no kTLS) does not apply"
else
	st=$(moatctl_on node1 status)
	check_match "moatctl status: HBONE userspace, kTLS off with the probe's reason" \
		'HBONE: userspace \(kTLS off: setsockopt\(TCP_ULP, "tls"\)' "$st"
	stj=$(moatctl_on node1 status -o json)
	check_eq "moatctl status --json: engine_flag ktls, relay_engine userspace, ktls_off says TCP_ULP" \
		"ktls userspace true" \
		"$(jq -r '"\(.engine_flag) \(.relay_engine) \(.ktls_off | test("TCP_ULP"))"' <<<"$stj" 2>&1)"
	check_wait "with --engine ktls client -> server:$PORT goes over HBONE (1 MiB each way)" 15 \
		connect_is_ok "$CLI" "$target"
	check_wait "... logged with path hbone, engine userspace" 10 access_log_has node1 \
		'.type == "connection" and .direction == "outbound" and .path == "hbone"
			and .engine == "userspace" and .src_identity == $sid' --arg sid "$(spiffe client)"
fi
check "moatd is still alive" agent_alive node1
e2e_finish
