#!/usr/bin/env bash
# Seed 004, section 10: a canary rollout without client changes, through a Kubernetes Service.
# A `reviews` Service (ClusterIP 10.96.0.20:9080, resolved by the lab DNS) selects reviews-v1
# (WorkloadEntry weight 90) on node 1 and reviews-v2 (weight 10) on node 2; a client pod on
# node 3 dials the Service name. The apps are real servers that answer with their version and
# count the connections they serve: the split is measured at the apps, not in moat's logs.
#  - 1,000 connections from one client process split 90 +- 4 % / 10 +- 4 %, every one over
#    HBONE (mutual TLS, logged on both ends), a sample of them carrying 64 KiB sha256-intact
#    both ways;
#  - the weights changed to 50/50 in the config (no restart) move the next 1,000 to 50 +- 5 %;
#  - a DENY policy on v2 for the client sends all its connections to v1 (moat chooses among
#    the endpoints that allow the client, never one that would refuse);
#  - a DENY on both: connect() fails with EPERM at once (errno seen by a real client), and
#    the deny line names the service and the deciding policy.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=bookinfo
VIP=10.96.0.20
SVC=reviews.$NS.svc.cluster.local
APP=$E2E_DIR/versioned_app.py
BATCH=1000
e2e_require_agent python3

lab_up <<EOF
lab cny$E2E_RUN_ID
underlay 192.168.84.0/24
node node1 192.168.84.11 10.244.1.0/24
node node2 192.168.84.12 10.244.2.0/24
node node3 192.168.84.13 10.244.3.0/24
pod node1 $NS/reviews-v1 10.244.1.20
pod node2 $NS/reviews-v2 10.244.2.20
pod node3 $NS/client 10.244.3.30
internet 203.0.113.0/24 203.0.113.1
dns 203.0.113.53
services 10.96.0.0/16
service $NS/reviews $VIP
EOF

# ---------------------------------------------------------------- configuration
# reviews_entry NAME ADDRESS VERSION WEIGHT: a WorkloadEntry of the reviews app.
reviews_entry() {
	printf -- '---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: %s, namespace: %s}\nspec: {address: %s, serviceAccount: reviews, weight: %s, labels: {app: reviews, version: %s}}\n' \
		"$1" "$NS" "$2" "$4" "$3"
}
# write_endpoints W1 W2: the reviews endpoints with those weights (one atomic rename).
write_endpoints() {
	{
		reviews_entry reviews-v1 10.244.1.20 v1 "$1"
		reviews_entry reviews-v2 10.244.2.20 v2 "$2"
	} >"$E2E_TMP/10-reviews.yaml.tmp"
	mv "$E2E_TMP/10-reviews.yaml.tmp" "$E2E_CONFIG/10-reviews.yaml"
}
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{
	mesh_yaml $NS
	peer_auth_yaml $NS strict STRICT
	workload_yaml $NS client 10.244.3.30
	service_yaml $NS reviews $VIP 9080
} >"$E2E_CONFIG/00-mesh.yaml"
write_endpoints 90 10
check "the canary configuration passes moatctl lint" "$MOATCTL" lint "$E2E_CONFIG"

start_agents_with_ca node1 node2 node3
check "enroll reviews-v1 on node1" enroll reviews-v1 --service-account reviews
check "enroll reviews-v2 on node2" enroll reviews-v2 --service-account reviews
check "enroll client on node3" enroll client

# app_serve POD VERSION: the versioned app on 9080; its log has one line per connection.
app_log() { echo "$E2E_TMP/app-$1.log"; }
app_serve() {
	lab_exec "$NS/$1" python3 "$APP" serve --port 9080 --version "$2" </dev/null >"$(app_log "$1")" 2>&1 &
	E2E_BG_PIDS+=("$!")
	disown "$!"
	wait_for "$1 listening" 10 grep -q '"event": "listening"' "$(app_log "$1")" ||
		e2e_abort "the $1 app starts" "$(cat "$(app_log "$1")")"
}
app_serve reviews-v1 v1
app_serve reviews-v2 v2
served() { grep -c '"event": "conn"' "$(app_log "$1")"; } # connections the app served

check_eq "the client resolves $SVC to the ClusterIP through the lab DNS" "$VIP" \
	"$(lab_exec $NS/client getent hosts "$SVC" | awk '{ print $1 }')"

# batch N [ARGS]: N sequential connections from one client process to the Service name;
# prints the client's JSON summary. Bounded by --max-s.
batch() {
	local n=$1
	shift
	lab_exec $NS/client python3 "$APP" connect "$SVC:9080" --count "$n" --max-s 170 "$@" 2>&1 | tail -n 1
}
# outbound_records: the client's outbound connection records on node3, by path/security.
outbound_records() {
	access_log_select node3 '.type == "connection" and .direction == "outbound" and .src_workload == $s' \
		--arg s "$NS/client"
}
inbound_from_client() { # NODE: inbound records over mutual TLS with the client's verified identity
	access_log_select "$1" '.type == "connection" and .direction == "inbound" and .security == "mutual_tls" and .src_identity == $i' \
		--arg i "spiffe://cluster.local/ns/$NS/sa/client" | wc -l
}
# check_split DESC V1-BEFORE V2-BEFORE V1-PERCENT V2-PERCENT TOLERANCE: the apps' counts since
# the BEFORE values add up to the batch and split as asked.
check_split() {
	local desc=$1 d1 d2
	d1=$(($(served reviews-v1) - $2)) d2=$(($(served reviews-v2) - $3))
	check_eq "$desc: the apps served every connection of the batch" "$BATCH" "$((d1 + d2))"
	check "$desc: v1 served $d1 of $BATCH (want $4 +- $6 %)" \
		test $((d1 * 100)) -ge $((($4 - $6) * BATCH)) -a $((d1 * 100)) -le $((($4 + $6) * BATCH))
	check "$desc: v2 served $d2 of $BATCH (want $5 +- $6 %)" \
		test $((d2 * 100)) -ge $((($5 - $6) * BATCH)) -a $((d2 * 100)) -le $((($5 + $6) * BATCH))
}

# ---------------------------------------------------------------- 90/10
info "batch 1: $BATCH connections at weights 90/10"
out=$(batch $BATCH --sample-every 50 --sample-bytes 65536)
info "client: $out"
check_json "1,000 connections to $SVC:9080 from one client process all succeed" "$out" \
	".ok == $BATCH" '.errors == {}' ".target == \"$VIP:9080\""
check_json "... the 20 sampled transfers (64 KiB each way) are sha256-intact" "$out" \
	'.samples == 20' '.samples_intact == 20'
check_split "90/10" 0 0 90 10 4
check_eq "... the client saw the same split as the apps counted" \
	"$(served reviews-v1) $(served reviews-v2)" "$(jq -r '"\(.versions.v1 // 0) \(.versions.v2 // 0)"' <<<"$out")"
check_wait "node3 logs all 1,000 outbound connections" 20 \
	test "$(outbound_records | wc -l)" -ge $BATCH
check_eq "... every one over HBONE with mutual TLS" "$BATCH" \
	"$(outbound_records | jq -s '[.[] | select(.path == "hbone" and .security == "mutual_tls")] | length')"
check_eq "... every one names the Service and its ClusterIP" "$BATCH" \
	"$(outbound_records | jq -s --arg svc "$SVC" --arg vip "$VIP:9080" '[.[] | select(.service == $svc and .service_addr == $vip)] | length')"
check_eq "... and the endpoints it names are where the apps counted them" "$(served reviews-v1) $(served reviews-v2)" \
	"$(outbound_records | jq -rs '"\([.[] | select(.endpoint == "bookinfo/reviews-v1")] | length) \([.[] | select(.endpoint == "bookinfo/reviews-v2")] | length)"')"
check_wait "the endpoints log them inbound over mutual TLS from the client's identity (as many as the apps served)" 20 \
	test "$(inbound_from_client node1) $(inbound_from_client node2)" = "$(served reviews-v1) $(served reviews-v2)"
check "the apps saw the client's own address" grep -q '"peer": "10.244.3.30:' "$(app_log reviews-v1)"

# ---------------------------------------------------------------- 50/50, no restart
reloads() { moatctl_on node3 status -o json | jq -r "$1"; }
reloaded_since() { [ "$(reloads .reloads_ok)" -gt "$1" ]; }
pid3=$(agent_pid node3)
r0=$(reloads .reloads_ok)
write_endpoints 50 50
check_wait "the new weights are loaded on node3 (a reload, no restart)" 20 \
	reloaded_since "$r0"
check_eq "... none refused" 0 "$(reloads .reloads_failed)"
v1=$(served reviews-v1) v2=$(served reviews-v2)
info "batch 2: $BATCH connections at weights 50/50"
out=$(batch $BATCH --sample-every 100)
info "client: $out"
check_json "the next 1,000 connections all succeed, samples intact" "$out" \
	".ok == $BATCH" '.errors == {}' '.samples_intact == .samples'
check_split "50/50" "$v1" "$v2" 50 50 5
check_eq "moatd on node3 was not restarted" "$pid3" "$(agent_pid node3)"
check "... and is still running" agent_alive node3

# ---------------------------------------------------------------- DENY on v2 for the client
deny_yaml() { # NAME SELECTOR-LABELS: DENY the client's principal to the selected workloads
	printf 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: %s}\nspec:\n  selector: {matchLabels: %s}\n  action: DENY\n  rules:\n  - from:\n    - source: {principals: ["cluster.local/ns/%s/sa/client"]}\n' \
		"$1" "$NS" "$2" "$NS"
}
r0=$(reloads .reloads_ok)
deny_yaml deny-client-to-reviews-v2 '{app: reviews, version: v2}' >"$E2E_CONFIG/20-deny-v2.yaml"
check_wait "the DENY on v2 is loaded on node3" 20 \
	reloaded_since "$r0"
v1=$(served reviews-v1) v2=$(served reviews-v2)
out=$(batch 200 --sample-every 50)
info "client: $out"
check_json "with v2 denied to the client, 200 connections all succeed (none chosen to be refused)" "$out" \
	'.ok == 200' '.errors == {}' '.samples_intact == .samples' '.versions == {"v1": 200}'
check_eq "... v1 served all 200" 200 "$(($(served reviews-v1) - v1))"
check_eq "... v2 served none" 0 "$(($(served reviews-v2) - v2))"

# ---------------------------------------------------------------- DENY on both
r0=$(reloads .reloads_ok)
deny_yaml deny-client-to-reviews '{app: reviews}' >"$E2E_CONFIG/21-deny-all.yaml"
check_wait "the DENY on every reviews endpoint is loaded on node3" 20 \
	reloaded_since "$r0"
v1=$(served reviews-v1) v2=$(served reviews-v2)
out=$(lab_exec $NS/client python3 "$APP" errno "$VIP:9080" 2>&1)
check_json "with both endpoints denied, connect() to the ClusterIP fails with EPERM (python3 socket)" "$out" \
	'.connect == "EPERM"' '.errno == 1'
check_connect_denied "... at once, also by name (moat-probe)" $NS/client "$SVC:9080"
check_wait "node3 logs a deny naming the service, each endpoint and its deciding policy" 5 \
	access_log_has node3 '.type == "deny" and .src_workload == $s and .dst_addr == $vip and (.reason | contains($svc) and contains("bookinfo/reviews-v1") and contains("bookinfo/reviews-v2") and contains("bookinfo/deny-client-to-reviews"))' \
	--arg s "$NS/client" --arg svc "$SVC" --arg vip "$VIP:9080"
check_eq "... and no app saw a connection" "$v1 $v2" "$(served reviews-v1) $(served reviews-v2)"

# ---------------------------------------------------------------- teardown
finish_lab_checked node1 node2 node3

e2e_finish
