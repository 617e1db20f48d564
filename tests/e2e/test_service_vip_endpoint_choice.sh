#!/usr/bin/env bash
# Endpoint choice behind a Service VIP, beyond the canary split (issue 9, svc-data):
#  - an endpoint that cannot be reached (its node runs no agent: the HBONE connect to it is
#    refused) is not the end of the connection: moatd tries another endpoint (bounded),
#    counts it in moat_service_endpoint_retries_total and logs it; every connection succeeds;
#  - the endpoint is reached at its targetPort (service port 80 -> 8080), and the outbound
#    record, the istio_tcp_* labels and `moatctl connections` name the service and the
#    endpoint chosen;
#  - an endpoint leaving the Service does not cut an established connection to it; a policy
#    change that denies the client -> endpoint pair does (late rejection, as for a direct
#    connection).
source "$(dirname "$0")/lib.sh"
e2e_init

NS=shop
VIP=10.96.0.30
SVC=web.$NS.svc.cluster.local
N=30
e2e_require_agent python3

lab_up <<EOF
lab sve$E2E_RUN_ID
underlay 192.168.85.0/24
node node1 192.168.85.11 10.244.1.0/24
node node2 192.168.85.12 10.244.2.0/24
node node3 192.168.85.13 10.244.3.0/24
pod node1 $NS/web-a 10.244.1.20
pod node3 $NS/web-b 10.244.3.21
pod node2 $NS/client 10.244.2.30
EOF

# web_entry NAME ADDRESS WEIGHT: a WorkloadEntry labelled app=web, version=NAME.
web_entry() {
	printf -- '---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: %s, namespace: %s}\nspec: {address: %s, serviceAccount: web, weight: %s, labels: {app: web, version: %s}}\n' \
		"$1" "$NS" "$2" "$3" "$1"
}
# write_service SELECTOR-APP: the web Service (port 80 -> targetPort 8080).
write_service() {
	service_yaml $NS web $VIP 80 8080 "$1" >"$E2E_TMP/svc.tmp"
	mv "$E2E_TMP/svc.tmp" "$E2E_CONFIG/10-service.yaml"
}
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{
	mesh_yaml $NS
	peer_auth_yaml $NS strict STRICT
	workload_yaml $NS client 10.244.2.30
	web_entry web-a 10.244.1.20 1
	web_entry web-b 10.244.3.21 9 # most first picks land here: node3 runs no agent
} >"$E2E_CONFIG/00-mesh.yaml"
write_service web

start_agents_with_ca node1 node2 # not node3: web-b's HBONE port refuses
check "enroll web-a" enroll $NS/web-a --service-account web
check "enroll client" enroll $NS/client
check "web-a serves on 8080" probe_serve $NS/web-a 8080 --send-bytes 1024

metric_sum() { # NODE PATTERN: the sum of the series whose line contains PATTERN
	node_exec "$1" curl -s -m 2 http://127.0.0.1:15020/metrics |
		awk -v m="$2" 'index($0, m) && $1 !~ /^#/ { s += $NF } END { print s + 0 }'
}

# ---------------------------------------------------------------- retry on a dead endpoint
ok=0
for i in $(seq 1 $N); do
	out=$(probe_connect $NS/client "$VIP:80" --send-bytes 512 --expect-bytes 1024 --timeout 10 2>&1)
	[ "$(jq -r '.connect == "ok" and .received_ok == true and .server_sha256 == .sent_sha256' <<<"$out" 2>/dev/null)" = true ] &&
		ok=$((ok + 1))
done
check_eq "all $N connections to $VIP:80 succeed although web-b (weight 9 of 10) cannot be reached" "$N" "$ok"
check_eq "... web-a served every one" "$N" "$(probe_log $NS/web-a 8080 | grep -c '"event":"conn"')"
retries=$(metric_sum node2 'moat_service_endpoint_retries_total{destination_service="'"$SVC"'"}')
check "... node2 counted the retries in moat_service_endpoint_retries_total ($retries)" test "$retries" -ge 1 -a "$retries" -le "$N"
check "... and logged them naming the service and the endpoint" \
	grep -q "service $SVC: pod $NS/client could not reach endpoint $NS/web-b" "$(agent_dir node2)/moatd.log"

# ---------------------------------------------------------------- what the records say
rec() { access_log_select node2 '.type == "connection" and .direction == "outbound" and .service == $s and .opened' --arg s "$SVC"; }
check_eq "node2's outbound records name the service, the VIP dialed and the endpoint chosen" "$N" \
	"$(rec | jq -s '[.[] | select(.service_addr == "'"$VIP"':80" and .endpoint == "'"$NS"'/web-a" and .dst_addr == "10.244.1.20:8080" and .path == "hbone")] | length')"
opened_with() { # LABEL="VALUE": istio_tcp_connections_opened_total series on node2 with it
	node_exec node2 curl -s -m 2 http://127.0.0.1:15020/metrics |
		grep '^istio_tcp_connections_opened_total{' | grep 'reporter="source"' | grep -F "$1" |
		awk '{ s += $NF } END { print s + 0 }'
}
check_eq "istio_tcp_connections_opened_total (source) carries destination_service=$SVC" "$N" \
	"$(opened_with "destination_service=\"$SVC\"")"
check_eq "... destination_service_name=web, destination_service_namespace=$NS" "$N $N" \
	"$(opened_with 'destination_service_name="web"') $(opened_with "destination_service_namespace=\"$NS\"")"

# ---------------------------------------------------------------- a held connection
# hold: connect to the VIP, say "connected", send a byte every 200 ms (the server answers
# only after our EOF, which never comes; the bytes keep its idle timeout away) for at most
# 120 s, and say how the connection ended.
HOLD_LOG=$E2E_TMP/hold.log
lab_exec $NS/client python3 -c '
import select, socket, time
s = socket.create_connection(("'"$VIP"'", 80), timeout=5)
print("connected", flush=True)
end = time.time() + 120
try:
    while time.time() < end:
        s.send(b"x")
        if select.select([s], [], [], 0.2)[0]:
            print("closed: " + ("eof" if not s.recv(1) else "data"), flush=True)
            break
except OSError as e:
    print("closed: %s" % type(e).__name__, flush=True)
' >"$HOLD_LOG" 2>&1 &
E2E_BG_PIDS+=("$!")
disown "$!"
check_wait "a held connection to $VIP:80 is established" 10 grep -q connected "$HOLD_LOG"
check_wait "moatctl connections on node2 shows the choice (service, VIP -> endpoint)" 10 \
	sh -c "'$MOATCTL' --socket '$(agent_socket node2)' connections | grep -q '$SVC ($VIP:80) -> $NS/web-a'"
check "... and -o json has it too" sh -c "'$MOATCTL' --socket '$(agent_socket node2)' connections -o json |
	jq -e '[.[] | select(.service == \"$SVC\" and .endpoint == \"$NS/web-a\")] | length >= 1' >/dev/null"

reloads() { moatctl_on node2 status -o json | jq -r .reloads_ok; }
reloaded_since() { [ "$(reloads)" -gt "$1" ]; }
r0=$(reloads)
write_service nothing-selected # web-a leaves the Service (and every other endpoint too)
check_wait "the Service without endpoints is loaded on node2" 20 reloaded_since "$r0"
sleep 1 # a cut would come at the swap; give it a moment to show
check "an endpoint leaving the Service does not cut the established connection to it" \
	sh -c "! grep -q closed '$HOLD_LOG'"

deny='apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: '$NS'}
spec:
  selector: {matchLabels: {version: web-a}}
  action: DENY
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/'$NS'/sa/client"]}'
echo "$deny" >"$E2E_CONFIG/20-deny.yaml"
check_wait "a DENY for client -> web-a closes the held connection (as for a direct one)" 20 \
	grep -q closed "$HOLD_LOG"
check_wait "... node1 logs it as a late rejection naming the policy" 10 \
	access_log_has node1 '.type == "deny" and .reason_code == "LATE_REJECTION" and .policy == $p' --arg p "$NS/deny-client"

finish_lab_checked node1 node2
e2e_finish
