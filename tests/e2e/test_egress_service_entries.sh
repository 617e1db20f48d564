#!/usr/bin/env bash
# seed 000 (agensys-demo-1), the external part, on three nodes with an
# "internet" that serves the four external APIs over real TLS (openssl s_server, a lab CA,
# certificates for the host names) and a dnsmasq that knows their names.
#  - MeshConfig REGISTRY_ONLY; the five WorkloadEntries; default deny + the orchestrator's
#    policies; ServiceEntries (resolution DNS, no `addresses`: moatd resolves the hosts with
#    the lab's DNS) and AuthorizationPolicies with targetRefs to them (seed policies 3-6);
#  - pr-agent reaches only api.openai.com, summary-agent only api.anthropic.com,
#    mcp-code-scanning only semgrep.dev, github-mcp-server only api.github.com (curl
#    --cacert LABCA gets that server's page); every other pairing, the orchestrator's too,
#    fails at connect() with EPERM, fast (curl exit 7 at once, moat-probe EPERM), and the
#    deny is logged with its reason and the ServiceEntry's policy;
#  - an unregistered host (evil.example.com) is denied at connect() with UNREGISTERED;
#  - ServiceEntry present, its egress policy removed: the namespace's default deny blocks it
#    (Diagram 11), putting it back allows again;
#  - DNS: api.openai.com moves to another address in dnsmasq; moatd follows it after the TTL
#    (moatctl workloads), the pod reaches the server at the new address, the old address is
#    no longer registered.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=agensys-demo-1
TD=cluster.local
declare -A ADDR=([orchestrator-agent]=10.244.1.10 [pr-agent]=10.244.1.11 [summary-agent]=10.244.2.10
	[mcp-code-scanning]=10.244.2.11 [github-mcp-server]=10.244.3.10)
declare -A NODE=([orchestrator-agent]=node1 [pr-agent]=node1 [summary-agent]=node2
	[mcp-code-scanning]=node2 [github-mcp-server]=node3)
declare -A PORT=([orchestrator-agent]=8080 [pr-agent]=8080 [summary-agent]=8080
	[mcp-code-scanning]=3000 [github-mcp-server]=3000)
SPOKES=(pr-agent summary-agent mcp-code-scanning github-mcp-server)
ALL=(orchestrator-agent "${SPOKES[@]}")
NODES=(node1 node2 node3)
# The external APIs: host, address in the lab's internet, ServiceEntry, the one spoke allowed.
HOSTS=(api.openai.com api.anthropic.com semgrep.dev api.github.com)
declare -A HOST_IP=([api.openai.com]=203.0.113.10 [api.anthropic.com]=203.0.113.11
	[semgrep.dev]=203.0.113.12 [api.github.com]=203.0.113.13 [evil.example.com]=203.0.113.99)
declare -A HOST_SE=([api.openai.com]=openai-api [api.anthropic.com]=anthropic-api
	[semgrep.dev]=semgrep-api [api.github.com]=github-api)
declare -A HOST_OWNER=([api.openai.com]=pr-agent [api.anthropic.com]=summary-agent
	[semgrep.dev]=mcp-code-scanning [api.github.com]=github-mcp-server)
MOVED_IP=203.0.113.20 # where api.openai.com moves to in the DNS part

for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin (make build; BUILD=dir to use another build)"
done
command -v openssl >/dev/null || e2e_abort "openssl is installed" "no openssl in PATH"

# ---------------------------------------------------------------- configuration
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
examples=$E2E_ROOT/deploy/examples/agensys
for f in 00-mesh.yaml 00-workloads.yaml 01-default-deny.yaml 02-orchestrator-policies.yaml; do
	[ -f "$examples/$f" ] || e2e_abort "deploy/examples/agensys/$f exists" "missing $examples/$f"
	cp "$examples/$f" "$E2E_CONFIG/"
done
grep -q 'mode: REGISTRY_ONLY' "$E2E_CONFIG/00-mesh.yaml" ||
	e2e_abort "deploy/examples/agensys/00-mesh.yaml sets REGISTRY_ONLY" "$(cat "$E2E_CONFIG/00-mesh.yaml")"
# Seed policies 3-6, ServiceEntry and AuthorizationPolicy in separate files (the DNS-less
# stand-in `addresses` of the examples left out: moatd resolves the hosts itself).
i=3
for h in "${HOSTS[@]}"; do
	se=${HOST_SE[$h]} owner=${HOST_OWNER[$h]}
	cat >"$E2E_CONFIG/0$i-se-$se.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: $se
  namespace: $NS
spec:
  hosts: ["$h"]
  ports:
    - number: 443
      name: https
      protocol: TLS
  location: MESH_EXTERNAL
  resolution: DNS
EOF
	cat >"$E2E_CONFIG/0$i-policy-$se.yaml" <<EOF
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-$owner-to-$se
  namespace: $NS
spec:
  targetRefs:
    - group: networking.istio.io
      kind: ServiceEntry
      name: $se
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["$TD/ns/$NS/sa/$owner"]
      to:
        - operation:
            ports: ["443"]
EOF
	i=$((i + 1))
done
policy_of() { echo "$NS/allow-${HOST_OWNER[$1]}-to-${HOST_SE[$1]}"; }
check "moatctl lint accepts the configuration" "$MOATCTL" lint "$E2E_CONFIG"

# ---------------------------------------------------------------- lab CA and server certificates
PKI=$E2E_TMP/pki
mkdir -p "$PKI"
LABCA=$PKI/labca.pem
make_pki() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj "/CN=moat e2e lab CA" -keyout "$PKI/labca.key" -out "$LABCA" 2>&1 || return 1
	local h
	for h in "${HOSTS[@]}" evil.example.com; do
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$h" \
			-keyout "$PKI/$h.key" -out "$PKI/$h.csr" 2>&1 || return 1
		printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$h" >"$PKI/$h.ext"
		openssl x509 -req -in "$PKI/$h.csr" -CA "$LABCA" -CAkey "$PKI/labca.key" \
			-CAcreateserial -days 2 -extfile "$PKI/$h.ext" -out "$PKI/$h.pem" 2>&1 || return 1
	done
}
check "a lab CA and a certificate per external host (SAN = host name)" make_pki
E2E_CA=$E2E_TMP/ca
check "moatctl ca init makes the mesh CA" "$MOATCTL" ca init --trust-domain "$TD" --out "$E2E_CA"

# ---------------------------------------------------------------- lab
{
	echo "lab i4eg$E2E_RUN_ID"
	echo "underlay 192.168.79.0/24"
	echo "node node1 192.168.79.11 10.244.1.0/24"
	echo "node node2 192.168.79.12 10.244.2.0/24"
	echo "node node3 192.168.79.13 10.244.3.0/24"
	for w in "${ALL[@]}"; do echo "pod ${NODE[$w]} $NS/$w ${ADDR[$w]}"; done
	echo "internet 203.0.113.0/24 203.0.113.1"
	for h in "${HOSTS[@]}" evil.example.com; do echo "host $h ${HOST_IP[$h]}"; done
	# Only an address in the internet (the DNS part moves api.openai.com here).
	echo "host moved.lab $MOVED_IP"
	echo "dns 203.0.113.53"
} >"$E2E_TMP/lab.conf"
lab_up "$E2E_TMP/lab.conf"

tls_listening() { internet_exec ss -Hltn | grep -qF "$1:443"; }
# tls_serve NAME ADDR: openssl s_server on ADDR:443 with NAME's certificate; GET /who answers
# "NAME@ADDR" (-WWW serves files of the current directory), so a client sees which server
# it reached.
tls_serve() {
	local name=$1 addr=$2 dir=$E2E_TMP/www-$1-$2 log
	mkdir -p "$dir"
	echo "$name@$addr" >"$dir/who"
	log=$E2E_TMP/tls-$name-$addr.log
	"$LAB_TOOL" internet-exec "$E2E_LAB" -- bash -c 'cd "$1" && exec openssl s_server -quiet \
		-accept "$2:443" -cert "$3" -key "$4" -WWW' _ "$dir" "$addr" "$PKI/$name.pem" "$PKI/$name.key" \
		</dev/null >"$log" 2>&1 &
	E2E_BG_PIDS+=("$!")
	disown "$!"
	wait_for "openssl s_server listening on $addr:443" 5 tls_listening "$addr"
}
for h in "${HOSTS[@]}" evil.example.com; do
	tls_serve "$h" "${HOST_IP[$h]}" || e2e_abort "TLS server for $h on ${HOST_IP[$h]}:443"
done
tls_serve api.openai.com "$MOVED_IP" || e2e_abort "TLS server for api.openai.com on $MOVED_IP:443"

# curl_pod POD URL [curl args]: curl in the pod with the lab CA; prints "rc=N ms=M" then the
# body or the error; its exit status is curl's.
curl_pod() {
	local pod=$1 url=$2 t0 t1 out rc
	shift 2
	t0=$(date +%s%N)
	out=$(lab_exec "$pod" curl -sS -m 5 --cacert "$LABCA" "$@" "$url" 2>&1)
	rc=$?
	t1=$(date +%s%N)
	echo "rc=$rc ms=$(((t1 - t0) / 1000000))"
	echo "$out"
	return $rc
}
curl_ok() { # POD HOST: the body is the server's "HOST@IP"
	local out
	out=$(curl_pod "$1" "https://$2/who")
	grep -qx "$2@${3:-${HOST_IP[$2]}}" <<<"$out" || { echo "$out"; return 1; }
}
# curl_eperm POD HOST [MAX-MS]: curl exits 7 (could not connect) at once (wall time, curl
# and pod entry included, under MAX-MS; curl's own "after N ms" under 500), and its verbose
# trace shows connect() failed with EPERM ("Operation not permitted").
curl_eperm() {
	local out rc ms max=${3:-2000} after
	out=$(curl_pod "$1" "https://$2/who" -v)
	rc=$(sed -n '1s/^rc=\([0-9]*\) .*/\1/p' <<<"$out")
	ms=$(sed -n '1s/.* ms=\([0-9]*\)$/\1/p' <<<"$out")
	echo "$out"
	after=$(sed -n 's/^curl: (7) .* after \([0-9]*\) ms.*/\1/p' <<<"$out")
	[ "$rc" = 7 ] && [ "$ms" -lt "$max" ] && [ -n "$after" ] && [ "$after" -lt 500 ] &&
		grep -Eq 'connect (to .* failed|fail for .*): Operation not permitted' <<<"$out"
}
check "before moatd: pr-agent reaches https://api.openai.com/who (lab DNS, lab CA, TLS server)" \
	curl_ok "$NS/pr-agent" api.openai.com

for w in "${ALL[@]}"; do
	probe_serve "$NS/$w" "${PORT[$w]}" || e2e_abort "moat-probe serves in $w"
done

# ---------------------------------------------------------------- moatd on three nodes
for n in "${NODES[@]}"; do start_agent "$n"; done
for n in "${NODES[@]}"; do
	wait_ready "$n" 30 || e2e_abort "moatd on $n becomes ready (/healthz/ready)"
	_ok "moatd on $n is ready"
done
for w in "${ALL[@]}"; do
	check "enroll $NS/$w on ${NODE[$w]}" enroll "$NS/$w"
done

# moatd resolved every ServiceEntry host with the lab's DNS (moatctl workloads).
resolved_on() { # NODE SE ADDR: moatctl workloads on NODE lists ADDR for the ServiceEntry
	moatctl_on "$1" workloads -o json |
		jq -e --arg w "$NS/$2" --arg a "$3" 'any(.[]; .workload == $w and .address == $a)' >/dev/null
}
for n in "${NODES[@]}"; do
	for h in "${HOSTS[@]}"; do
		check_wait "moatd on $n resolved $h to ${HOST_IP[$h]} (moatctl workloads: ${HOST_SE[$h]})" 15 \
			resolved_on "$n" "${HOST_SE[$h]}" "${HOST_IP[$h]}"
	done
done

# ---------------------------------------------------------------- sanity: the mesh part works
for dst in "${SPOKES[@]}"; do
	check_connect_ok "orchestrator-agent -> $dst (${NODE[$dst]}) works (policies 1-2)" \
		"$NS/orchestrator-agent" "${ADDR[$dst]}:${PORT[$dst]}" 65536 1048576
done

# ---------------------------------------------------------------- the egress matrix
spiffe() { echo "spiffe://$TD/ns/$NS/sa/$1"; }
egress_deny_logged() { # SRC HOST [REASON-CODE]: the deny line names the SE's policy in its reason
	local src=$1 h=$2 code=${3:-NO_ALLOW}
	access_log_has "${NODE[$src]}" '.type == "deny" and .phase == "connect" and .src_workload == $src
		and .src_identity == $sid and .dst_addr == $dst and .verdict == "DENY"
		and .reason_code == $code and .dst_workload == $se
		and (((.policy // "") + " " + (.reason // "")) | contains($pol))' \
		--arg src "$NS/$src" --arg sid "$(spiffe "$src")" --arg dst "${HOST_IP[$h]}:443" \
		--arg code "$code" --arg se "$NS/${HOST_SE[$h]}" --arg pol "$(policy_of "$h")"
}
egress_allow_logged() { # SRC HOST
	access_log_has "${NODE[$1]}" '.type == "connection" and .path == "egress" and .src_workload == $src
		and .dst_addr == $dst and .verdict == "ALLOW"' \
		--arg src "$NS/$1" --arg dst "${HOST_IP[$2]}:443"
}

for src in "${ALL[@]}"; do
	for h in "${HOSTS[@]}"; do
		if [ "${HOST_OWNER[$h]}" = "$src" ]; then
			check "$src -> https://$h: curl gets that TLS server's page" curl_ok "$NS/$src" "$h"
			check_wait "... logged as an ALLOWed egress connection" 5 egress_allow_logged "$src" "$h"
			continue
		fi
		check "$src -> https://$h: curl fails at once (exit 7, Operation not permitted)" \
			curl_eperm "$NS/$src" "$h"
		check_connect_denied "$src -> $h:443: moat-probe gets EPERM in < 500 ms" \
			"$NS/$src" "$h:443" 500
		check_wait "... logged: connect deny, NO_ALLOW, reason naming $(policy_of "$h")" 5 \
			egress_deny_logged "$src" "$h"
	done
done
info "an egress deny record: $(access_log_select node1 '.type == "deny" and .dst_workload == "'$NS'/anthropic-api"' | head -n 1)"

# ---------------------------------------------------------------- unregistered host
check "before: evil.example.com resolves in the pod (203.0.113.99)" \
	bash -c "'$LAB_TOOL' exec '$E2E_LAB' '$NS/pr-agent' -- getent hosts evil.example.com | grep -q 203.0.113.99"
check "pr-agent -> https://evil.example.com (no ServiceEntry): curl fails at once (EPERM)" \
	curl_eperm "$NS/pr-agent" evil.example.com
check_connect_denied "... moat-probe gets EPERM in < 500 ms" "$NS/pr-agent" evil.example.com:443 500
unregistered_logged() { # SRC ADDR:PORT
	access_log_has "${NODE[$1]}" '.type == "deny" and .phase == "connect" and .src_workload == $src
		and .dst_addr == $dst and .reason_code == "UNREGISTERED" and (.reason // "") != ""' \
		--arg src "$NS/$1" --arg dst "$2"
}
check_wait "... logged at connect with reason_code UNREGISTERED" 5 unregistered_logged pr-agent 203.0.113.99:443
check_connect_denied "github-mcp-server (node3) -> evil.example.com:443: EPERM too" \
	"$NS/github-mcp-server" evil.example.com:443 500
check_wait "... logged on node3 with UNREGISTERED" 5 unregistered_logged github-mcp-server 203.0.113.99:443

# ---------------------------------------------------------------- Diagram 11: ServiceEntry only
mv "$E2E_CONFIG/03-policy-openai-api.yaml" "$E2E_TMP/03-policy-openai-api.yaml.saved"
check_wait "ServiceEntry without its egress policy: pr-agent -> api.openai.com:443 is denied" 15 \
	connect_is_denied "$NS/pr-agent" api.openai.com:443
check "... curl fails at once (EPERM)" curl_eperm "$NS/pr-agent" api.openai.com
check_connect_denied "... moat-probe gets EPERM in < 500 ms" "$NS/pr-agent" api.openai.com:443 500
default_deny_logged() {
	access_log_has node1 '.type == "deny" and .phase == "connect" and .src_workload == $src
		and .dst_addr == $dst and .reason_code == "NO_ALLOW" and .dst_workload == $se
		and (((.policy // "") + " " + (.reason // "")) | contains($pol))' \
		--arg src "$NS/pr-agent" --arg dst "203.0.113.10:443" --arg se "$NS/openai-api" \
		--arg pol "$NS/allow-nothing"
}
check_wait "... logged as NO_ALLOW by the default deny ($NS/allow-nothing), not UNREGISTERED" 5 default_deny_logged
check "... the ServiceEntry is still registered (moatctl workloads)" resolved_on node1 openai-api 203.0.113.10
mv "$E2E_TMP/03-policy-openai-api.yaml.saved" "$E2E_CONFIG/03-policy-openai-api.yaml"
check_wait "putting the policy back: pr-agent reaches api.openai.com again" 15 \
	curl_ok "$NS/pr-agent" api.openai.com

# ---------------------------------------------------------------- DNS: the address changes
hosts_file=$LAB_RUN/$E2E_LAB/hosts
dnsmasq_pid=$(cat "$LAB_RUN/$E2E_LAB/dnsmasq.pid" 2>/dev/null)
move_openai() {
	sed -i "s/^203\.0\.113\.10 api\.openai\.com\$/$MOVED_IP api.openai.com/" "$hosts_file" &&
		grep -qx "$MOVED_IP api.openai.com" "$hosts_file" &&
		kill -HUP "$dnsmasq_pid" # dnsmasq re-reads its hosts file on SIGHUP
}
check "dnsmasq: api.openai.com now $MOVED_IP (hosts file changed, SIGHUP)" move_openai
check_wait "... the pods' resolver sees it" 5 \
	bash -c "'$LAB_TOOL' exec '$E2E_LAB' '$NS/pr-agent' -- getent hosts api.openai.com | grep -q '^$MOVED_IP '"
# dnsmasq answers from its hosts file with TTL 0 (--local-ttl unset); moatd refreshes at its
# floor of 5 s: within 15 s it must have followed.
check_wait "moatd on node1 follows the new address after the TTL (moatctl workloads)" 15 \
	resolved_on node1 openai-api "$MOVED_IP"
check_fails "... and drops the old one" resolved_on node1 openai-api 203.0.113.10
check_wait "moatd on node2 follows too" 15 resolved_on node2 openai-api "$MOVED_IP"
check_match "moatd logs the new resolution" "api\.openai\.com resolves to \[$MOVED_IP\]" "$(agent_log node1)"
check_wait "pr-agent -> https://api.openai.com reaches the server at the new address" 10 \
	curl_ok "$NS/pr-agent" api.openai.com "$MOVED_IP"
check_connect_denied "summary-agent -> api.openai.com (new address) is still denied, EPERM" \
	"$NS/summary-agent" api.openai.com:443 500
check_connect_denied "pr-agent -> the old address 203.0.113.10:443 is no longer registered: EPERM" \
	"$NS/pr-agent" 203.0.113.10:443 500
check_wait "... logged as UNREGISTERED" 5 unregistered_logged pr-agent 203.0.113.10:443

# ---------------------------------------------------------------- shutdown
finish_lab_checked --counted "${NODES[@]}"

e2e_finish
