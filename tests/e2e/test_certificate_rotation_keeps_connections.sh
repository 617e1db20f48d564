#!/usr/bin/env bash
# Certificate rotation with a 60 s SVID lifetime (renewal at half-life, 30 s): a connection
# open across two rotations keeps working, and new connections present the new serial (the
# destination agent logs the serial of the client certificate it verified, the source agent
# the serial of the server certificate). `moatctl certs` lists identity, serial and validity.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=rot
for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done

lab_up <<EOF
lab rot$E2E_RUN_ID
underlay 192.168.80.0/24
node node1 192.168.80.11 10.244.1.0/24
node node2 192.168.80.12 10.244.2.0/24
pod node1 $NS/client 10.244.1.10
pod node2 $NS/server 10.244.2.10
EOF

E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{ mesh_yaml $NS; workload_yaml $NS client 10.244.1.10; workload_yaml $NS server 10.244.2.10; } >"$E2E_CONFIG/mesh.yaml"

make_ca >/dev/null || e2e_abort "moatctl ca init"
start_agent node1 --svid-ttl 60
start_agent node2 --svid-ttl 60
for n in node1 node2; do
	check "moatd on $n is ready" wait_ready "$n" 30 || e2e_abort "agents start"
done
check "enroll client" enroll client
check "enroll server" enroll server

# An echo server that logs each connection.
lab_exec server socat -d -d TCP-LISTEN:8080,fork,reuseaddr EXEC:cat </dev/null >"$E2E_TMP/echo.log" 2>&1 &
E2E_BG_PIDS+=("$!")
disown "$!"
wait_for "echo server listening" 5 lab_exec server sh -c 'ss -ltn | grep -q ":8080 "'

serial_of() { # NODE IDENTITY-SUFFIX -> current serial from moatctl certs -o json
	moatctl_on "$1" certs -o json | jq -r --arg s "$2" '.[] | select(.identity | endswith($s)) | .serial'
}
certs_text=$(moatctl_on node2 certs)
check_match "moatctl certs lists identity, serial, not-before, not-after" \
	'IDENTITY +SERIAL +NOT-BEFORE +NOT-AFTER' "$certs_text"
check_match "... with the server's SVID" 'spiffe://cluster.local/ns/rot/sa/server +[0-9A-F]+ +20' "$certs_text"
S0=$(serial_of node2 /sa/server)
C0=$(serial_of node1 /sa/client)
info "initial serials: server $S0, client $C0"
nb=$(moatctl_on node2 certs -o json | jq -r '.[] | select(.identity | endswith("/sa/server")) | .not_before')
na=$(moatctl_on node2 certs -o json | jq -r '.[] | select(.identity | endswith("/sa/server")) | .not_after')
life=$(( $(date -d "$na" +%s) - $(date -d "$nb" +%s) ))
check "the SVID lives 60 s (+60 s backdating)" test "$life" -ge 60 -a "$life" -le 121

# A long-lived connection: one line a second for 70 s, echoed back.
LINES=70
lab_exec client sh -c "for i in \$(seq 1 $LINES); do echo \"line \$i of a long connection\"; sleep 1; done | socat -t 5 - TCP:10.244.2.10:8080" \
	>"$E2E_TMP/long.out" 2>"$E2E_TMP/long.err" &
LONG=$!
E2E_BG_PIDS+=("$LONG")

renewals() { # NODE IDENTITY-SUFFIX -> how many renewals the agent logged
	grep -c "identity spiffe://cluster.local/ns/$NS$2: renewed certificate" "$(agent_dir "$1")/moatd.log"
}
renewed_twice() { [ "$(renewals "$1" "$2")" -ge 2 ]; }
check_wait "the server's certificate is renewed twice (half-life 30 s)" 75 renewed_twice node2 /sa/server
check_wait "the client's certificate is renewed twice" 15 renewed_twice node1 /sa/client
check_match "... each renewal logged with the new and the old serial" \
	"renewed certificate: serial [0-9A-F]+ \\(was $S0\\)" "$(agent_log node2)"

wait "$LONG"
rc=$?
check_eq "the connection open across two rotations kept working (client exit 0)" 0 "$rc"
check_eq "... every one of its $LINES lines came back" "$LINES" "$(grep -c 'of a long connection' "$E2E_TMP/long.out")"
check "... in order" sh -c "seq 1 $LINES | sed 's/.*/line & of a long connection/' | diff -q - '$E2E_TMP/long.out'"

# New connections present the new serials.
S2=$(serial_of node2 /sa/server)
C2=$(serial_of node1 /sa/client)
check "a new connection after the rotations works" \
	sh -c "echo after-rotation | '$LAB_TOOL' exec '$E2E_LAB' client -- socat -t 3 - TCP:10.244.2.10:8080 | grep -q after-rotation"
check_wait "... the server agent verified the client's current certificate (serial $C2)" 5 \
	grep -q "peer spiffe://cluster.local/ns/$NS/sa/client verified (certificate serial $C2)" "$(agent_dir node2)/moatd.log"
check_wait "... the client agent saw the server's current certificate (serial $S2)" 5 \
	grep -q "peer spiffe://cluster.local/ns/$NS/sa/server (certificate serial $S2)" "$(agent_dir node1)/moatd.log"
check "... and neither is the first one" test "$S2" != "$S0" -a "$C2" != "$C0"

finish_lab_checked node1 node2
e2e_finish
