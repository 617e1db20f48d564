#!/usr/bin/env bash
# seed 002 (bookstore) on two nodes, with deploy/examples/bookstore.
#   node1: infra/bookstore-gateway-istio, ecom/ui-service, ecom/ecom-service, default/test-pod
#          (service account default), default/outsider (NOT enrolled: a plaintext client)
#   node2: inventory/inventory-service, inventory/inventory-db, ecom/ecom-db,
#          identity/keycloak, identity/keycloak-db
# PeerAuthentication STRICT in ecom and inventory.
#  - the seed's summary table, with real connections: who reaches inventory-service:8000,
#    ecom-service:8080, ecom-db, inventory-db, keycloak-db; every denial is EPERM at
#    connect() on the source node and logged;
#  - a plaintext client that is not enrolled is dropped by a STRICT workload (connect times
#    out), moatd logs the STRICT drop and `moatctl status` counts it; a PERMISSIVE workload
#    still answers it;
#  - service-account mismatch (deploy/examples/bookstore-sa-mismatch): ecom-service running as
#    `default` is denied by inventory-service-policy; `moatctl explain` (offline and live)
#    names the principal actually presented and exits 1; `-o json` says DENY; restoring the
#    service account allows again.
source "$(dirname "$0")/lib.sh"
e2e_init

TD=cluster.local
EX=$E2E_ROOT/deploy/examples/bookstore
EX_SA=$E2E_ROOT/deploy/examples/bookstore-sa-mismatch
GW=infra/bookstore-gateway-istio
UI=ecom/ui-service
ECOM=ecom/ecom-service
TEST=default/test-pod
OUTSIDER=default/outsider
INV=inventory/inventory-service
INVDB=inventory/inventory-db
ECOMDB=ecom/ecom-db
KC=identity/keycloak
KCDB=identity/keycloak-db
declare -A ADDR=([$GW]=10.244.1.20 [$UI]=10.244.1.21 [$ECOM]=10.244.1.22 [$TEST]=10.244.1.23
	[$OUTSIDER]=10.244.1.30 [$INV]=10.244.2.20 [$INVDB]=10.244.2.21 [$ECOMDB]=10.244.2.22
	[$KC]=10.244.2.23 [$KCDB]=10.244.2.24)
declare -A PORT=([$GW]=80 [$UI]=80 [$ECOM]=8080 [$TEST]=80 [$INV]=8000 [$INVDB]=5432
	[$ECOMDB]=5432 [$KC]=8080 [$KCDB]=5432)
declare -A SA=([$GW]=bookstore-gateway-istio [$UI]=ui-service [$ECOM]=ecom-service [$TEST]=default
	[$INV]=inventory-service [$INVDB]=inventory-db [$ECOMDB]=ecom-db [$KC]=keycloak
	[$KCDB]=keycloak-db)
NODE1=("$GW" "$UI" "$ECOM" "$TEST")
NODE2=("$INV" "$INVDB" "$ECOMDB" "$KC" "$KCDB")
ENROLLED=("${NODE1[@]}" "${NODE2[@]}")
node_of() { case ${ADDR[$1]} in 10.244.1.*) echo node1 ;; *) echo node2 ;; esac; }
target() { echo "${ADDR[$1]}:${PORT[$1]}"; }

for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin (make build; BUILD=dir to use another build)"
done
if [ ! -d "$EX" ] || [ ! -d "$EX_SA" ]; then
	e2e_abort "deploy/examples/bookstore{,-sa-mismatch} exist" "missing $EX or $EX_SA"
fi

# ---------------------------------------------------------------- configuration, lab, moatd
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
cp "$EX"/*.yaml "$E2E_CONFIG/"
check "moatctl lint accepts deploy/examples/bookstore" "$MOATCTL" lint "$E2E_CONFIG"
check_eq "... which has PeerAuthentication STRICT in ecom and inventory" 2 \
	"$(grep -c 'mode: STRICT' "$E2E_CONFIG/30-mtls-strict.yaml")"
E2E_CA=$E2E_TMP/ca
check "moatctl ca init makes a CA" "$MOATCTL" ca init --trust-domain "$TD" --out "$E2E_CA"

{
	echo "lab i4bs$E2E_RUN_ID"
	echo "underlay 192.168.80.0/24"
	echo "node node1 192.168.80.11 10.244.1.0/24"
	echo "node node2 192.168.80.12 10.244.2.0/24"
	for p in "${NODE1[@]}" "$OUTSIDER"; do echo "pod node1 $p ${ADDR[$p]}"; done
	for p in "${NODE2[@]}"; do echo "pod node2 $p ${ADDR[$p]}"; done
} >"$E2E_TMP/lab.conf"
lab_up "$E2E_TMP/lab.conf"

for p in "${ENROLLED[@]}"; do
	probe_serve "$p" "${PORT[$p]}" || e2e_abort "moat-probe serves in $p on ${PORT[$p]}"
done
start_agent node1
start_agent node2
for n in node1 node2; do
	wait_ready "$n" 30 || e2e_abort "moatd on $n becomes ready (/healthz/ready)"
	_ok "moatd on $n is ready"
done
for p in "${ENROLLED[@]}"; do
	check "enroll $p on $(node_of "$p") (service account ${SA[$p]})" enroll "$p" --service-account "${SA[$p]}"
done
check_eq "default/outsider is not enrolled" "" \
	"$(moatctl_on node1 workloads -o json | jq -r '.[] | select(.workload == "default/outsider") | .kind')"

# ---------------------------------------------------------------- the summary table
spiffe() { echo "spiffe://$TD/ns/${1%%/*}/sa/$2"; }
deny_logged() { # SRC DST POLICY: connect deny on SRC's node, naming POLICY (policy or reason)
	local src=$1 dst=$2 pol=$3
	access_log_has "$(node_of "$src")" '.type == "deny" and .phase == "connect"
		and .src_workload == $src and .src_identity == $sid and .dst_addr == $dst
		and .dst_workload == $dw and .verdict == "DENY" and .reason_code == "NO_ALLOW"
		and (((.policy // "") + " " + (.reason // "")) | contains($pol))' \
		--arg src "$src" --arg sid "$(spiffe "$src" "${SA[$src]}")" --arg dst "$(target "$dst")" \
		--arg dw "$dst" --arg pol "$pol"
}
hbone_logged() { # SRC DST: an ALLOWed HBONE connection with the source's identity, on DST's node
	# (same node with --engine sockmap: joined in the kernel, path same_node)
	access_log_has "$(node_of "$2")" '.type == "connection" and .path == $path and .verdict == "ALLOW"
		and .src_identity == $sid and .dst_addr == $dst' \
		--arg sid "$(spiffe "$1" "${SA[$1]}")" --arg dst "$(target "$2")" \
		--arg path "$(expected_path "$(node_of "$1")" "$(node_of "$2")")"
}
allowed() { # SRC DST WHY
	check_connect_ok "$1 -> $2:${PORT[$2]} is allowed ($3)" "$1" "$(target "$2")" 65536 1048576
	check_wait "... over $(expected_path "$(node_of "$1")" "$(node_of "$2")") with $1's identity, logged on $(node_of "$2")" 5 hbone_logged "$1" "$2"
}
denied() { # SRC DST POLICY
	check_connect_denied "$1 -> $2:${PORT[$2]} fails at connect() with EPERM, fast" "$1" "$(target "$2")" 500
	check_wait "... logged on $(node_of "$1") as NO_ALLOW naming $3" 5 deny_logged "$1" "$2" "$3"
}

P_INV=inventory/inventory-service-policy
P_ECOM=ecom/ecom-service-policy
P_ECOMDB=ecom/ecom-db-policy
P_INVDB=inventory/inventory-db-policy
P_KCDB=identity/keycloak-db-policy

# inventory-service-policy: infra (gateway), ecom (ecom-service, ui-service)
denied "$TEST" "$INV" "$P_INV"
allowed "$ECOM" "$INV" "namespace ecom"
allowed "$GW" "$INV" "namespace infra"
allowed "$UI" "$INV" "namespace ecom"
denied "$KC" "$INV" "$P_INV"
denied "$INVDB" "$INV" "$P_INV"
# ecom-service-policy: infra, ecom, observability
allowed "$GW" "$ECOM" "namespace infra"
allowed "$UI" "$ECOM" "namespace ecom (same node)"
denied "$TEST" "$ECOM" "$P_ECOM"
denied "$INV" "$ECOM" "$P_ECOM"
# ecom-db-policy: ecom, infra
allowed "$ECOM" "$ECOMDB" "namespace ecom"
allowed "$UI" "$ECOMDB" "namespace ecom"
allowed "$GW" "$ECOMDB" "namespace infra (Debezium)"
denied "$INV" "$ECOMDB" "$P_ECOMDB"
denied "$KC" "$ECOMDB" "$P_ECOMDB"
denied "$TEST" "$ECOMDB" "$P_ECOMDB"
# inventory-db-policy: inventory, infra
allowed "$INV" "$INVDB" "namespace inventory (same node)"
allowed "$GW" "$INVDB" "namespace infra (Debezium)"
denied "$ECOM" "$INVDB" "$P_INVDB"
denied "$KC" "$INVDB" "$P_INVDB"
denied "$TEST" "$INVDB" "$P_INVDB"
# keycloak-db-policy: identity only
allowed "$KC" "$KCDB" "namespace identity (same node)"
denied "$GW" "$KCDB" "$P_KCDB"
denied "$ECOM" "$KCDB" "$P_KCDB"
denied "$INV" "$KCDB" "$P_KCDB"
denied "$TEST" "$KCDB" "$P_KCDB"
# no policy selects keycloak or ui-service: anyone in the mesh may call them
allowed "$TEST" "$KC" "no policy selects keycloak"
allowed "$INV" "$UI" "no policy selects ui-service"

# ---------------------------------------------------------------- STRICT: a plaintext client
drops() { moatctl_on "$1" status -o json | jq -r '.bpf.plaintext_dropped'; }
drops_before=$(drops node2)
out=$(probe_connect "$OUTSIDER" "$(target "$INV")" --send-bytes 1024 --timeout 3 2>&1)
check_json "outsider (not enrolled, plaintext) -> inventory-service:8000 (STRICT): dropped, connect times out" \
	"$out" '.connect == "ETIMEDOUT"' '.exit == 5'
strict_logged() { # NODE SRC DST
	access_log_has "$1" '.type == "deny" and .phase == "inbound" and (.src_addr | sub(":[0-9]+$"; "")) == $src
		and .dst_addr == $dst and .verdict == "DENY" and (.reason_code | test("STRICT"))
		and (.reason | test("STRICT"))' --arg src "${ADDR[$2]}" --arg dst "$(target "$3")"
}
check_wait "... moatd on node2 logs the STRICT plaintext drop (source, destination)" 5 \
	strict_logged node2 "$OUTSIDER" "$INV"
drops_after=$(drops node2)
check "... moatctl status -o json counts it (bpf.plaintext_dropped $drops_before -> $drops_after)" \
	test "${drops_after:-0}" -gt "${drops_before:-0}"
check_match "... and moatctl status shows the TC drop count" \
	"ingress +[1-9][0-9]* plaintext SYNs dropped \(STRICT\)" "$(moatctl_on node2 status)"
out=$(probe_connect "$OUTSIDER" "$(target "$ECOM")" --send-bytes 1024 --timeout 3 2>&1)
check_json "outsider -> ecom-service:8080 (STRICT, same node): dropped too" "$out" '.connect == "ETIMEDOUT"'
check_wait "... logged on node1" 5 strict_logged node1 "$OUTSIDER" "$ECOM"
check_connect_ok "outsider -> keycloak:8080 (identity: PERMISSIVE, no policy) still works in plaintext" \
	"$OUTSIDER" "$(target "$KC")" 4096 1048576
plain_logged() {
	access_log_has node2 '.type == "connection" and (.path | test("plaintext")) and .security == "none" and (.src_addr | sub(":[0-9]+$"; "")) == $src
		and .dst_addr == $dst' --arg src "${ADDR[$OUTSIDER]}" --arg dst "$(target "$KC")"
}
check_wait "... logged as a plaintext inbound connection" 5 plain_logged ||
	info "node2's records from the outsider: $(access_log node2 | grep -F "${ADDR[$OUTSIDER]}")"

# ---------------------------------------------------------------- service-account mismatch
FROM=spiffe://$TD/ns/ecom/sa/default
out=$("$MOATCTL" explain --config "$EX_SA" --from "$FROM" --to 10.244.2.20:8000 2>&1)
check_eq "offline moatctl explain (bookstore-sa-mismatch) exits 1" 1 "$?"
check_match "... names the principal presented, cluster.local/ns/ecom/sa/default" \
	'principal cluster\.local/ns/ecom/sa/default' "$out"
check_match "... and the policy that expected another one (inventory/inventory-service-policy)" \
	'inventory/inventory-service-policy' "$out"
check_match "... with the hint: the peer presents \"default\"" 'presents "default"' "$out"
out=$("$MOATCTL" explain --config "$EX_SA" --from "$FROM" --to 10.244.2.20:8000 -o json 2>&1)
check_eq "offline explain -o json exits 1" 1 "$?"
check_json "... gives {\"verdict\":\"DENY\",...} naming the principal" "$out" '.verdict == "DENY"' \
	'.reason | contains("cluster.local/ns/ecom/sa/default")'

reenroll() { unenroll "$1" && enroll "$1" --service-account "$2"; }
# The running mesh switches to the mismatch configuration (same file names: overwritten).
cp "$EX_SA"/*.yaml "$E2E_CONFIG/"
sa_config_loaded() { # NODE: the live explain already answers with the mismatch policy
	moatctl_on "$1" explain --from spiffe://$TD/ns/ecom/sa/ecom-service --src-ip 10.244.1.22 \
		--to 10.244.2.20:8000 -o json | jq -e '.policy == "inventory/inventory-service-policy" and .rule == 2' >/dev/null
}
check_wait "moatd on node1 loads bookstore-sa-mismatch" 15 sa_config_loaded node1
check_wait "moatd on node2 loads it" 15 sa_config_loaded node2
# The WorkloadEntries now say `default`: the pods run as what their Deployment says.
for p in "$ECOM" "$INV"; do
	SA[$p]=default
	check "re-enroll $p as service account default" reenroll "$p" default
done
check_match "moatctl certs on node1: ecom-service now presents $FROM" "$FROM" "$(moatctl_on node1 certs)"
check_connect_denied "ecom-service (as default) -> inventory-service:8000: EPERM at connect()" \
	"$ECOM" "$(target "$INV")" 500
sa_deny_logged() {
	access_log_has node1 '.type == "deny" and .src_workload == $src and .src_identity == $sid
		and .dst_addr == $dst and .reason_code == "NO_ALLOW"
		and (((.policy // "") + " " + (.reason // "")) | contains("inventory/inventory-service-policy"))
		and (.reason | contains("cluster.local/ns/ecom/sa/default"))' \
		--arg src "$ECOM" --arg sid "$FROM" --arg dst "$(target "$INV")"
}
check_wait "... logged: identity $FROM, denied by inventory/inventory-service-policy" 5 sa_deny_logged
check_connect_ok "gateway -> inventory-service:8000 still works (rule 1, namespace infra)" \
	"$GW" "$(target "$INV")" 4096 1048576
check_connect_denied "ui-service -> inventory-service:8000 is denied now (rule 2 names one principal)" \
	"$UI" "$(target "$INV")" 500

for n in node1 node2; do
	out=$(moatctl_on "$n" explain --from "$FROM" --to 10.244.2.20:8000 2>&1)
	check_eq "live moatctl explain against moatd on $n (no --config) exits 1" 1 "$?"
	check_match "... names the principal presented, cluster.local/ns/ecom/sa/default" \
		'principal cluster\.local/ns/ecom/sa/default' "$out"
	check_match "... and inventory/inventory-service-policy" 'inventory/inventory-service-policy' "$out"
	out=$(moatctl_on "$n" explain --from "$FROM" --to 10.244.2.20:8000 -o json 2>&1)
	check_eq "... -o json exits 1" 1 "$?"
	check_json "... and gives {\"verdict\":\"DENY\",...}" "$out" '.verdict == "DENY"' \
		'.reason | contains("cluster.local/ns/ecom/sa/default")'
done

# The seed's fix: set serviceAccountName. Back to the bookstore configuration, re-enrolled.
cp "$EX"/*.yaml "$E2E_CONFIG/"
fixed_loaded() {
	moatctl_on "$1" explain --from "spiffe://$TD/ns/ecom/sa/ecom-service" --src-ip 10.244.1.22 \
		--to 10.244.2.20:8000 -o json | jq -e '.verdict == "ALLOW" and .rule == 2' >/dev/null
}
check_wait "moatd on node1 loads the fixed configuration" 15 fixed_loaded node1
check_wait "moatd on node2 loads it" 15 fixed_loaded node2
SA[$ECOM]=ecom-service
SA[$INV]=inventory-service
for p in "$ECOM" "$INV"; do
	check "re-enroll $p as ${SA[$p]}" reenroll "$p" "${SA[$p]}"
done
check_connect_ok "ecom-service (as ecom-service again) -> inventory-service:8000 works" \
	"$ECOM" "$(target "$INV")" 65536 1048576

# ---------------------------------------------------------------- shutdown
finish_lab_checked --counted node1 node2

e2e_finish
