#!/usr/bin/env bash
# Live policy changes and atomic reloads on two nodes with a small shop:
#   node1: shop/client-a, shop/client-b, other/client-c     node2: shop/server, shop/api,
#   shop/client-d (a client on the server's own node)
# C. Live re-check: long-lived inbound connections (socat, kept open) to server:9000; a
#    policy change that denies some of them closes exactly those (cross-node and same-node),
#    each logged on the server's node as a deny with reason_code LATE_REJECTION naming the
#    policy; the still-allowed one stays open and keeps echoing. Both kinds of change: a new
#    DENY policy, and an ALLOW policy that stops allowing.
# D. Hot reload is atomic: one directory change with a valid new policy and a malformed file
#    changes nothing (the valid policy is not applied), the error names file and line
#    (moatd's log, moatctl status); fixing the bad file applies both. Also the way a mounted
#    ConfigMap changes (the `..data` link swapped) is picked up.
# E. `moatctl lint` on a directory with an ALLOW rule carrying methods/paths prints
#    `file:line: policy ns/name rule N: field: consequence`; loaded live, the policy makes
#    its target unreachable (EPERM) and moatd logs the lint warning at load.
source "$(dirname "$0")/lib.sh"
e2e_init
trap '' PIPE # writing to a long-lived connection that was closed must not kill the test

TD=cluster.local
A=shop/client-a B=shop/client-b C=other/client-c D=shop/client-d
SRV=shop/server API=shop/api
declare -A ADDR=([$A]=10.244.1.10 [$B]=10.244.1.11 [$C]=10.244.1.12
	[$SRV]=10.244.2.10 [$API]=10.244.2.11 [$D]=10.244.2.12)
NODE1=("$A" "$B" "$C")
NODE2=("$SRV" "$API" "$D")
node_of() { case ${ADDR[$1]} in 10.244.1.*) echo node1 ;; *) echo node2 ;; esac; }
sa_of() { echo "${1#*/}"; }
spiffe() { echo "spiffe://$TD/ns/${1%%/*}/sa/${1#*/}"; }
ECHO_PORT=9000

for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin (make build; BUILD=dir to use another build)"
done

# ---------------------------------------------------------------- configuration
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
mesh_yaml shop other >"$E2E_CONFIG/00-mesh.yaml" # trust domain $TD
for w in "${NODE1[@]}" "${NODE2[@]}"; do
	workload_yaml "${w%%/*}" "${w#*/}" "${ADDR[$w]}"
done | sed '1d' >"$E2E_CONFIG/01-workloads.yaml"
allow_server() { # NAMESPACES...: the ALLOW policy of shop/server
	authz_yaml shop allow-server app=server ALLOW "namespaces=$(IFS=,; echo "$*")"
}
allow_server shop other >"$E2E_CONFIG/10-allow-server.yaml"
check "moatctl lint accepts the configuration" "$MOATCTL" lint "$E2E_CONFIG"
E2E_CA=$E2E_TMP/ca
check "moatctl ca init makes a CA" "$MOATCTL" ca init --trust-domain "$TD" --out "$E2E_CA"

# ---------------------------------------------------------------- lab, apps, moatd
{
	echo "lab i4lv$E2E_RUN_ID"
	echo "underlay 192.168.81.0/24"
	echo "node node1 192.168.81.11 10.244.1.0/24"
	echo "node node2 192.168.81.12 10.244.2.0/24"
	for p in "${NODE1[@]}"; do echo "pod node1 $p ${ADDR[$p]}"; done
	for p in "${NODE2[@]}"; do echo "pod node2 $p ${ADDR[$p]}"; done
} >"$E2E_TMP/lab.conf"
lab_up "$E2E_TMP/lab.conf"

for port in 8080 8081; do
	probe_serve "$SRV" "$port" || e2e_abort "moat-probe serves in $SRV on $port"
done
probe_serve "$API" 8080 || e2e_abort "moat-probe serves in $API on 8080"
# An echo server for the long-lived connections.
"$LAB_TOOL" exec "$E2E_LAB" "$SRV" -- socat "TCP-LISTEN:$ECHO_PORT,reuseaddr,fork" EXEC:cat \
	</dev/null >"$E2E_TMP/echo-server.log" 2>&1 &
E2E_BG_PIDS+=("$!")
disown "$!"
echo_listening() { lab_exec "$SRV" ss -Hltn | grep -q ":$ECHO_PORT "; }
wait_for "socat echo server on $SRV:$ECHO_PORT" 5 echo_listening || e2e_abort "socat echo server listens in $SRV"

start_agent node1
start_agent node2
for n in node1 node2; do
	wait_ready "$n" 30 || e2e_abort "moatd on $n becomes ready (/healthz/ready)"
	_ok "moatd on $n is ready"
done
for p in "${NODE1[@]}" "${NODE2[@]}"; do
	check "enroll $p on $(node_of "$p")" enroll "$p"
done

digest() { moatctl_on "$1" status -o json | jq -r .config_digest; }
reloads_failed() { moatctl_on "$1" status -o json | jq -r .reloads_failed; }
# digest_changed NODE OLD: the node loaded a configuration other than OLD
digest_changed() { local d; d=$(digest "$1"); [ -n "$d" ] && [ "$d" != "$2" ]; }

# ---------------------------------------------------------------- C. live re-check
# Long-lived connections: socat in the client pod, its stdin a FIFO this shell holds open,
# its stdout a file. A closed connection ends the socat process.
declare -A LL_FD LL_PID
ll_open() { # NAME POD
	local name=$1 pod=$2 fifo=$E2E_TMP/ll-$1.in fd
	mkfifo "$fifo"
	"$LAB_TOOL" exec "$E2E_LAB" "$pod" -- socat - "TCP:${ADDR[$SRV]}:$ECHO_PORT" \
		<"$fifo" >"$E2E_TMP/ll-$name.out" 2>"$E2E_TMP/ll-$name.err" &
	LL_PID[$name]=$!
	E2E_BG_PIDS+=("$!")
	disown "$!"
	exec {fd}>"$fifo"
	LL_FD[$name]=$fd
}
ll_send() { (echo "$2" >&"${LL_FD[$1]}") 2>/dev/null; }
ll_alive() { # NAME: its socat still runs (not a zombie)
	local pid=${LL_PID[$1]}
	[ -e "/proc/$pid" ] && [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}
ll_dead() { ! ll_alive "$1"; }
ll_echoed() { grep -qx "$2" "$E2E_TMP/ll-$1.out"; }
# ll_roundtrip NAME TEXT: TEXT comes back through the connection within 5 s
ll_roundtrip() { ll_send "$1" "$2" && wait_for "echo of $2 on $1" 5 ll_echoed "$1" "$2"; }
ll_check_open() { # DESC NAME TEXT
	if ll_alive "$2" && ll_roundtrip "$2" "$3"; then
		_ok "$1"
	else
		_fail "$1" "alive: $(ll_alive "$2" && echo yes || echo no)" \
			"output: $(cat "$E2E_TMP/ll-$2.out")" "socat: $(cat "$E2E_TMP/ll-$2.err")"
	fi
}
late_rejected() { # SRC POLICY-SUBSTRING: a LATE_REJECTION deny line on node2 for SRC's connection
	access_log_has node2 '.type == "deny" and .reason_code == "LATE_REJECTION"
		and .src_identity == $sid and .dst_addr == $dst and .dst_workload == "shop/server"
		and (((.policy // "") + " " + (.reason // "")) | contains($pol))' \
		--arg sid "$(spiffe "$1")" --arg dst "${ADDR[$SRV]}:$ECHO_PORT" --arg pol "$2"
}
late_rejected_any() { # SRC
	access_log_has node2 '.type == "deny" and .reason_code == "LATE_REJECTION" and .src_identity == $sid' \
		--arg sid "$(spiffe "$1")"
}

for p in "$A" "$B" "$C" "$D"; do
	name=$(sa_of "$p")
	ll_open "$name" "$p"
	ll_check_open "$p -> server:$ECHO_PORT: a long-lived connection is open and echoes" "$name" "hello from $name"
done
srv_conns() { moatctl_on node2 connections -o json | jq '[.. | objects | select(.direction? == "inbound")] | length'; }
info "inbound connections on node2: $(srv_conns 2>&1)"

# C1: a new DENY policy for client-b (other node) and client-d (the server's node).
authz_yaml shop deny-b-d app=server DENY "principals=$TD/ns/shop/sa/client-b,$TD/ns/shop/sa/client-d" \
	>"$E2E_CONFIG/20-deny-b-d.yaml"
check_wait "C1: a new DENY policy closes client-b's established connection (other node)" 15 ll_dead client-b
check_wait "... and client-d's (same node as the server)" 10 ll_dead client-d
check_wait "... logged on node2 as LATE_REJECTION naming shop/deny-b-d (client-b)" 5 \
	late_rejected "$B" shop/deny-b-d
check_wait "... and for client-d" 5 late_rejected "$D" shop/deny-b-d
check "... the record's policy field is shop/deny-b-d" access_log_has node2 \
	'.reason_code == "LATE_REJECTION" and .policy == "shop/deny-b-d" and .phase == "inbound"'
ll_check_open "... client-a's connection, still allowed, stays open and echoes" client-a "after C1 a"
ll_check_open "... client-c's too" client-c "after C1 c"
check_fails "... and is not logged as a late rejection" late_rejected_any "$A"
check_connect_denied "... a new connect from client-b is EPERM" "$B" "${ADDR[$SRV]}:$ECHO_PORT" 500
info "a late rejection: $(access_log_select node2 '.reason_code == "LATE_REJECTION"' | head -n 1)"

# C2: the ALLOW policy stops allowing namespace other.
allow_server shop >"$E2E_CONFIG/10-allow-server.yaml"
check_wait "C2: the ALLOW policy no longer allows namespace other: client-c's connection is closed" 15 \
	ll_dead client-c
check_wait "... logged as LATE_REJECTION naming shop/allow-server" 5 late_rejected "$C" shop/allow-server
ll_check_open "... client-a's connection stays open and echoes" client-a "after C2 a"
check_fails "... and is still not logged as a late rejection" late_rejected_any "$A"

# ---------------------------------------------------------------- D. atomic hot reload
check_connect_ok "D: before: client-a -> server:8080 works" "$A" "${ADDR[$SRV]}:8080" 4096 1048576
check_connect_ok "D: before: client-a -> server:8081 works" "$A" "${ADDR[$SRV]}:8081" 4096 1048576
deny_a_port() { # NAME PORT [BROKEN]: a DENY policy for client-a on PORT (BROKEN: line 10 mis-indented)
	local ind="  "
	[ -n "${3:-}" ] && ind="   "
	cat <<EOF
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: $1
  namespace: shop
spec:
  selector:
    matchLabels:
      app: server
${ind}action: DENY
  rules:
    - from:
        - source:
            principals: ["$TD/ns/shop/sa/client-a"]
      to:
        - operation:
            ports: ["$2"]
EOF
}
d1=$(digest node1) d2=$(digest node2)
f1=$(reloads_failed node1) f2=$(reloads_failed node2)
# One change: the malformed file and the valid new policy land together (the malformed one
# first, so that no moment of the directory ever holds the valid policy alone).
deny_a_port deny-a-8081 8081 broken >"$E2E_TMP/31-deny-a-8081.yaml"
deny_a_port deny-a-8080 8080 >"$E2E_TMP/30-deny-a-8080.yaml"
mv "$E2E_TMP/31-deny-a-8081.yaml" "$E2E_TMP/30-deny-a-8080.yaml" "$E2E_CONFIG/"
refused() { [ "$(reloads_failed "$1")" -gt "$2" ]; }
check_wait "D: moatd on node1 refuses the directory" 10 refused node1 "$f1"
check_wait "D: moatd on node2 refuses it too" 10 refused node2 "$f2"
check_match "... moatd's log names the bad file and line (31-deny-a-8081.yaml:10)" \
	'31-deny-a-8081\.yaml:10: malformed YAML' "$(agent_log node1)"
check_match "... moatctl status shows the refusal with file and line" \
	'last refusal +.*31-deny-a-8081\.yaml:10' "$(moatctl_on node2 status)"
check_match "... moatctl lint names it too" '31-deny-a-8081\.yaml:10' "$("$MOATCTL" lint "$E2E_CONFIG" 2>&1)"
check_eq "... node1 keeps the configuration in force (digest)" "$d1" "$(digest node1)"
check_eq "... node2 too" "$d2" "$(digest node2)"
check_connect_ok "... the valid new policy is NOT applied: client-a -> server:8080 still works" \
	"$A" "${ADDR[$SRV]}:8080" 4096 1048576
check_json "... live explain agrees (client-a -> server:8080 ALLOW)" \
	"$(moatctl_on node2 explain --from "$(spiffe "$A")" --to "${ADDR[$SRV]}:8080" -o json)" '.verdict == "ALLOW"'
deny_a_port deny-a-8081 8081 >"$E2E_CONFIG/31-deny-a-8081.yaml"
check_wait "D: fixing the bad file: moatd on node1 loads a new configuration" 10 digest_changed node1 "$d1"
check_wait "... node2 too" 10 digest_changed node2 "$d2"
check_wait "... the valid policy is applied now: client-a -> server:8080 is denied" 10 \
	connect_is_denied "$A" "${ADDR[$SRV]}:8080"
check_connect_denied "... EPERM at connect(), fast" "$A" "${ADDR[$SRV]}:8080" 500
check_connect_denied "... and the fixed one too: client-a -> server:8081 is denied" "$A" "${ADDR[$SRV]}:8081" 500
check_match "... moatctl status no longer shows a refusal" '^$' "$(moatctl_on node2 status | grep 'last refusal')"
ll_check_open "... client-a's long-lived connection (port $ECHO_PORT) is still open" client-a "after D a"

# ---------------------------------------------------------------- E. L7 fields in an ALLOW rule
check_connect_ok "E: before: client-a -> api:8080 works (no policy selects api)" "$A" "${ADDR[$API]}:8080" 4096 1048576
cat >"$E2E_TMP/60-allow-get-api.yaml" <<EOF
# The seed-002 mistake: methods and paths in an ALLOW rule.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-get-api
  namespace: shop
spec:
  selector:
    matchLabels:
      app: api
  action: ALLOW
  rules:
    - from:
        - source:
            namespaces: ["shop"]
      to:
        - operation:
            methods: ["GET"]
            paths: ["/inven/*"]
            ports: ["8080"]
EOF
methods_line=$(grep -n 'methods:' "$E2E_TMP/60-allow-get-api.yaml" | cut -d: -f1)
LINTDIR=$E2E_TMP/lintdir
mkdir -p "$LINTDIR"
cp "$E2E_CONFIG"/*.yaml "$E2E_TMP/60-allow-get-api.yaml" "$LINTDIR/"
lint_out=$("$MOATCTL" lint "$LINTDIR" 2>&1)
check_eq "E: moatctl lint exits 0 (warnings are not errors)" 0 "$?"
check_match "... prints file:line: policy ns/name rule N: field: consequence for the methods/paths rule" \
	"^warning: [^ ]*60-allow-get-api\.yaml:$methods_line: policy shop/allow-get-api rule 1: spec\.rules\[0\]\.to\[0\]\.operation\.methods: allow rule dropped: methods, paths cannot be enforced at L4.*matches nothing" \
	"$lint_out"
check_match "... and what the policy now means (denies all traffic to app=api)" \
	"^warning: [^ ]*60-allow-get-api\.yaml:[0-9]+: policy shop/allow-get-api: [^:]+: .*denies all traffic to app=api" \
	"$lint_out"
d1=$(digest node1)
cp "$E2E_TMP/60-allow-get-api.yaml" "$E2E_CONFIG/"
check_wait "E: loaded live, the policy makes api unreachable: client-a -> api:8080 is denied" 15 \
	connect_is_denied "$A" "${ADDR[$API]}:8080"
check_connect_denied "... EPERM at connect(), fast" "$A" "${ADDR[$API]}:8080" 500
api_deny_logged() {
	access_log_has node1 '.type == "deny" and .src_workload == $src and .dst_addr == $dst
		and .reason_code == "NO_ALLOW"
		and (((.policy // "") + " " + (.reason // "")) | contains("shop/allow-get-api"))' \
		--arg src "$A" --arg dst "${ADDR[$API]}:8080"
}
check_wait "... logged, naming shop/allow-get-api" 5 api_deny_logged
lint_logged() { # NODE
	agent_log "$1" | grep -Eq "60-allow-get-api\.yaml:$methods_line: policy shop/allow-get-api rule 1: .*methods.*matches nothing"
}
check_wait "... moatd on node1 logs the lint warning at load (file:line, policy, rule, field)" 5 lint_logged node1
check_wait "... moatd on node2 too" 5 lint_logged node2
check_connect_denied "... client-d (same node as api) is denied too" "$D" "${ADDR[$API]}:8080" 500

# ---------------------------------------------------------------- D'. a mounted ConfigMap
# The kubelet updates a ConfigMap volume atomically: the new files go to a fresh hidden
# directory, the `..data` link is swapped to it with one rename, and the visible names are
# links through `..data`. A change of an existing key touches no visible name.
to_configmap() {
	local f
	mkdir "$E2E_CONFIG/..2025_v1" && cp "$E2E_CONFIG"/*.yaml "$E2E_CONFIG/..2025_v1/" &&
		ln -s "..2025_v1" "$E2E_CONFIG/..data" || return 1
	for f in "$E2E_CONFIG"/*.yaml; do
		ln -s "..data/$(basename "$f")" "$E2E_CONFIG/.tmp-link" &&
			mv -T "$E2E_CONFIG/.tmp-link" "$f" || return 1
	done
}
check "D': the configuration directory becomes a ConfigMap-style volume (same content)" to_configmap
check "... moatctl lint reads it" "$MOATCTL" lint "$E2E_CONFIG"
sleep 1
d1=$(digest node1)
cm_update() { # the kubelet's atomic writer: new dir, ..data_tmp link, rename over ..data
	mkdir "$E2E_CONFIG/..2025_v2" &&
		cp -L "$E2E_CONFIG"/*.yaml "$E2E_CONFIG/..2025_v2/" &&
		sed -i '/methods: \["GET"\]/d; /paths: \["\/inven\/\*"\]/d' \
			"$E2E_CONFIG/..2025_v2/60-allow-get-api.yaml" &&
		ln -s "..2025_v2" "$E2E_CONFIG/..data_tmp" &&
		mv -T "$E2E_CONFIG/..data_tmp" "$E2E_CONFIG/..data" &&
		rm -rf "$E2E_CONFIG/..2025_v1"
}
check "D': a ConfigMap update of an existing key (60-allow-get-api.yaml: L4 only now)" cm_update
lint_clean_l4() { local out; out=$("$MOATCTL" lint "$E2E_CONFIG" 2>&1) && ! grep -q methods <<<"$out"; }
check "... the new content is valid and L4 only (moatctl lint: no error, no methods)" lint_clean_l4
cm_ok=0
check_wait "... moatd on node1 loads it (the ..data swap is a configuration change)" 15 \
	digest_changed node1 "$d1" || cm_ok=1
check_wait "... moatd on node2 too" 5 digest_changed node2 "$d1" || cm_ok=1
check_wait "... client-a -> api:8080 works again" 10 connect_is_ok "$A" "${ADDR[$API]}:8080" || cm_ok=1
if [ $cm_ok != 0 ]; then
	for n in node1 node2; do
		info "diagnosis: moatctl reload on $n says: $(moatctl_on "$n" reload 2>&1)"
	done
	wait_for "client-a -> api:8080 after moatctl reload" 10 connect_is_ok "$A" "${ADDR[$API]}:8080" &&
		info "diagnosis: after moatctl reload client-a reaches api: only the directory watch missed the change"
fi

# ---------------------------------------------------------------- shutdown
for n in node1 node2; do stop_agent_checked "$n"; done
for name in "${!LL_FD[@]}"; do
	fd=${LL_FD[$name]}
	exec {fd}>&-
done
lab_down_checked --counted

e2e_finish
