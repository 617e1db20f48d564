# shellcheck shell=bash
# The e2e framework: sourced by every tests/e2e/test_*.sh.
#
# A test file:
#   source "$(dirname "$0")/lib.sh"
#   e2e_init                        # temp dir, traps: the lab is torn down on any exit
#   lab_up <<'EOF' ... EOF          # build the lab from a description on stdin (or a file)
#   check "what it proves" cmd ...  # one "ok"/"FAIL" line per check
#   e2e_finish                      # "N passed, N failed, N skipped", exit status
#
# Every wait is bounded; every helper names what it did when it fails. The lab and every agent
# a test started are removed by the EXIT trap, also after a failure, a timeout (SIGTERM from
# the runner) or Ctrl-C.
set -u

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_ROOT=$(cd "$E2E_DIR/../.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$E2E_ROOT/$BUILD ;; esac
LAB_TOOL=${LAB_TOOL:-$E2E_ROOT/tests/lab/lab}
MOATD=${MOATD:-$BUILD/moatd}
MOATCTL=${MOATCTL:-$BUILD/moatctl}
PROBE=${PROBE:-$BUILD/tests/moat-probe}
LAB_RUN=${LAB_RUN:-/run/moatlab}

E2E_PASSED=0
E2E_FAILED=0
E2E_SKIPPED=0
E2E_LAB=""        # the lab this test built (torn down at exit)
E2E_TMP=""        # scratch directory of this test (config dirs, outputs)
E2E_CONFIG=""     # the config directory start_agent passes to moatd (--config)
E2E_CA=""         # the CA directory start_agent passes to moatd (--ca), when set
E2E_AGENTS=()     # nodes with an agent started by this test
E2E_BG_PIDS=()    # background processes started by this test
E2E_VERBOSE=${E2E_VERBOSE:-0}
# Appended to lab names so that two runs at once (two engineers, CI) never share a lab.
E2E_RUN_ID=${E2E_RUN_ID:-$$}

# ---------------------------------------------------------------- reporting
e2e_name() { basename "${BASH_SOURCE[-1]}" .sh; }

_ok() { E2E_PASSED=$((E2E_PASSED + 1)); echo "ok   $1"; }
_fail() { # DESC [DETAIL...]
	E2E_FAILED=$((E2E_FAILED + 1))
	echo "FAIL $1"
	shift
	local d
	for d in "$@"; do
		[ -n "$d" ] && sed -e 's/^/    /' <<<"$d" | tail -n 25
	done
	return 0
}
skip() { # DESC REASON
	E2E_SKIPPED=$((E2E_SKIPPED + 1))
	echo "skip $1: $2"
}
info() { echo "# $*"; }

# check DESC CMD...: passes when CMD exits 0; on failure shows its output and exit code.
check() {
	local desc=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		_ok "$desc"
		[ "$E2E_VERBOSE" = 1 ] && [ -n "$out" ] && sed -e 's/^/    /' <<<"$out"
		return 0
	fi
	_fail "$desc" "command: $*" "exit $rc" "$out"
	return 1
}

# check_fails DESC CMD...: passes when CMD exits non-zero.
check_fails() {
	local desc=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc -ne 0 ]; then
		_ok "$desc"
		return 0
	fi
	_fail "$desc" "command: $* (expected to fail, exited 0)" "$out"
	return 1
}

# check_eq DESC EXPECTED ACTUAL
check_eq() {
	if [ "$2" = "$3" ]; then
		_ok "$1"
		return 0
	fi
	_fail "$1" "expected: $2" "actual:   $3"
	return 1
}

# check_match DESC ERE TEXT: TEXT matches the extended regular expression.
check_match() {
	if grep -Eq -- "$2" <<<"$3"; then
		_ok "$1"
		return 0
	fi
	_fail "$1" "no match for /$2/ in:" "$3"
	return 1
}

# check_json DESC JSON FILTER...: every jq FILTER is true of JSON (e.g. '.connect == "ok"').
check_json() {
	local desc=$1 json=$2 f bad=()
	shift 2
	if ! jq -e . >/dev/null 2>&1 <<<"$json"; then
		_fail "$desc" "not JSON:" "$json"
		return 1
	fi
	for f in "$@"; do
		jq -e "$f" >/dev/null 2>&1 <<<"$json" || bad+=("$f")
	done
	if [ ${#bad[@]} -eq 0 ]; then
		_ok "$desc"
		return 0
	fi
	_fail "$desc" "false: ${bad[*]}" "in: $json"
	return 1
}

# wait_for DESC TIMEOUT-S CMD...: poll CMD (every 0.1 s) until it succeeds; not a check.
wait_for() {
	local desc=$1 limit=$2 deadline
	shift 2
	deadline=$(($(date +%s%N) / 1000000 + limit * 1000))
	while :; do
		"$@" >/dev/null 2>&1 && return 0
		[ $(($(date +%s%N) / 1000000)) -ge "$deadline" ] && break
		sleep 0.1
	done
	info "gave up after ${limit}s waiting for: $desc"
	return 1
}

# check_wait DESC TIMEOUT-S CMD...: a check that CMD succeeds within the time limit.
check_wait() {
	local desc=$1 limit=$2
	shift 2
	if wait_for "$desc" "$limit" "$@"; then
		_ok "$desc"
		return 0
	fi
	local out
	out=$("$@" 2>&1)
	_fail "$desc" "not true within ${limit}s: $*" "last output: $out"
	return 1
}

# Stop the test here (missing binary, lab did not come up): the trap still cleans up.
e2e_abort() {
	_fail "$1" "${2:-}"
	echo "# $(e2e_name): aborted: $1"
	e2e_finish
}

# e2e_require_agent [TOOL...]: moatd and moatctl are built and every TOOL is installed (a
# Debian package of scripts/deps.sh), or the test stops here naming what is missing.
e2e_require_agent() {
	local bin tool
	for bin in "$MOATD" "$MOATCTL"; do
		[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
	done
	for tool in "$@"; do
		command -v "$tool" >/dev/null || e2e_abort "$tool is installed" "apt-get install $tool (make deps)"
	done
}

e2e_finish() {
	trap - EXIT
	e2e_teardown
	echo "$E2E_PASSED passed, $E2E_FAILED failed, $E2E_SKIPPED skipped"
	[ "$E2E_FAILED" -eq 0 ]
	exit $?
}

# ---------------------------------------------------------------- setup and teardown
e2e_init() {
	[ "$(id -u)" -eq 0 ] || { echo "# needs root"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }
	E2E_TMP=$(mktemp -d "/tmp/moat-e2e-$(e2e_name).XXXXXX")
	trap 'e2e_on_exit' EXIT
	trap 'echo "# $(e2e_name): interrupted (SIGTERM/SIGINT): tearing down"; exit 124' TERM INT
	[ -x "$PROBE" ] || e2e_abort "moat-probe is built" "missing $PROBE (make build, or BUILD=dir)"
}

e2e_on_exit() { # the script ended without e2e_finish (error, signal): clean up and count it
	local rc=$?
	e2e_teardown
	echo "# $(e2e_name): ended early (exit $rc)"
	echo "$E2E_PASSED passed, $((E2E_FAILED + 1)) failed, $E2E_SKIPPED skipped"
	exit 1
}

e2e_teardown() {
	local node pid
	for node in "${E2E_AGENTS[@]}"; do
		stop_agent "$node" >/dev/null 2>&1 || true
	done
	E2E_AGENTS=()
	for pid in "${E2E_BG_PIDS[@]}"; do
		kill -9 "$pid" 2>/dev/null || true
	done
	E2E_BG_PIDS=()
	if [ -n "$E2E_LAB" ]; then
		if [ "${E2E_KEEP:-0}" = 1 ]; then
			info "E2E_KEEP=1: leaving lab $E2E_LAB up ($LAB_TOOL down $E2E_LAB)"
		else
			"$LAB_TOOL" down "$E2E_LAB" >/dev/null 2>&1 || "$LAB_TOOL" down "$E2E_LAB" || true
		fi
		E2E_LAB=""
	fi
	if [ -n "$E2E_TMP" ] && [ "${E2E_KEEP:-0}" != 1 ]; then
		rm -rf "$E2E_TMP"
	fi
	# Reap what is left of our children (the lab is gone, so they are dead or dying).
	local j
	for j in $(jobs -p); do kill -9 "$j" 2>/dev/null || true; done
	wait 2>/dev/null || true
}

# ---------------------------------------------------------------- the lab
# lab_up [FILE]: build the lab (description from FILE, or stdin); the test owns it.
lab_up() {
	local file=${1:-}
	if [ -z "$file" ]; then
		file=$E2E_TMP/lab.conf
		cat >"$file"
	fi
	E2E_LAB=$(awk '$1 == "lab" { print $2; exit }' "$file")
	local out
	if ! out=$("$LAB_TOOL" up --owner $$ "$file" 2>&1); then
		e2e_abort "lab $E2E_LAB comes up" "$out"
	fi
	info "$out"
}

lab() { "$LAB_TOOL" "$@"; }
lab_exec() { local pod=$1; shift; [ "${1:-}" = "--" ] && shift; "$LAB_TOOL" exec "$E2E_LAB" "$pod" -- "$@"; }
node_exec() { local node=$1; shift; [ "${1:-}" = "--" ] && shift; "$LAB_TOOL" node-exec "$E2E_LAB" "$node" -- "$@"; }
internet_exec() { [ "${1:-}" = "--" ] && shift; "$LAB_TOOL" internet-exec "$E2E_LAB" -- "$@"; }
# pod_info POD KEY: one field of `lab pod-info` (address, netns, cgroup, node, namespace, ...)
pod_info() { "$LAB_TOOL" pod-info "$E2E_LAB" "$1" | sed -n "s/^$2=//p"; }
node_info() { "$LAB_TOOL" node-info "$E2E_LAB" "$1" | sed -n "s/^$2=//p"; }

# Every trace of a lab is gone: netns, cgroups, bpffs pins, state, /etc/netns, processes.
lab_traces() { # LAB -> prints what is left (nothing when clean)
	local lab=$1 cgr
	cgr=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
	ls /run/netns 2>/dev/null | grep "^moatlab-$lab-" | sed 's/^/netns /'
	[ -d "$cgr/moatlab-$lab" ] && echo "cgroup $cgr/moatlab-$lab"
	ls -d /sys/fs/bpf/moatlab-"$lab"-* 2>/dev/null | sed 's/^/pin /'
	ls -d /etc/netns/moatlab-"$lab"-* 2>/dev/null | sed 's/^/etc /'
	[ -e "$LAB_RUN/$lab" ] && echo "state $LAB_RUN/$lab"
	# Processes: a task that is still exiting, or a zombie, keeps showing its cgroup; it holds
	# nothing but its pid. Only a process still alive after 1 s counts.
	local f pid i live=()
	for f in $(grep -l "moatlab-$lab/" /proc/[0-9]*/cgroup 2>/dev/null); do
		pid=${f#/proc/}
		live+=("${pid%/cgroup}")
	done
	for ((i = 0; i < 10 && ${#live[@]} > 0; i++)); do
		local still=()
		for pid in "${live[@]}"; do
			[ -e "/proc/$pid" ] && [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != Z ] && still+=("$pid")
		done
		live=("${still[@]}")
		[ ${#live[@]} -gt 0 ] && sleep 0.1
	done
	for pid in "${live[@]}"; do
		echo "process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null))"
	done
	return 0
}
lab_is_clean() { [ -z "$(lab_traces "$1")" ]; }

# ---------------------------------------------------------------- configuration helpers
# mesh_yaml [NAMESPACE...]: a MeshConfig (trust domain cluster.local) and one Namespace per
# argument labelled istio.io/dataplane-mode: ambient, as YAML documents on stdout.
mesh_yaml() {
	printf 'apiVersion: moat.dev/v1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {trustDomain: cluster.local}\n'
	local ns
	for ns in "$@"; do
		printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {istio.io/dataplane-mode: ambient}}\n' "$ns"
	done
}

# workload_yaml NS NAME ADDRESS [SERVICE-ACCOUNT]: a WorkloadEntry labelled app=NAME.
workload_yaml() {
	printf -- '---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: %s, namespace: %s}\nspec: {address: %s, serviceAccount: %s, labels: {app: %s}}\n' \
		"$2" "$1" "$3" "${4:-$2}" "$2"
}

# agensys_strict_config NS CMD...: E2E_CONFIG = seed 000's mesh (NS ambient, a namespace-wide
# STRICT PeerAuthentication), the WorkloadEntry documents CMD prints ('---' first), and the
# policies 01-default-deny and 02-orchestrator-policies of deploy/examples/agensys.
agensys_strict_config() {
	local ns=$1
	shift
	E2E_CONFIG=$E2E_TMP/config
	mkdir -p "$E2E_CONFIG"
	{
		mesh_yaml "$ns"
		printf -- '---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: %s}\nspec: {mtls: {mode: STRICT}}\n' "$ns"
	} >"$E2E_CONFIG/00-mesh.yaml"
	"$@" | sed '1d' >"$E2E_CONFIG/00-workloads.yaml"
	cp "$E2E_ROOT/deploy/examples/agensys/01-default-deny.yaml" \
		"$E2E_ROOT/deploy/examples/agensys/02-orchestrator-policies.yaml" "$E2E_CONFIG/"
}

# peer_auth_yaml NS NAME MODE [APP]: a PeerAuthentication (namespace-wide, or for app=APP).
peer_auth_yaml() {
	local sel=""
	[ -n "${4:-}" ] && sel="selector: {matchLabels: {app: $4}}, "
	printf -- '---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: %s, namespace: %s}\nspec: {%smtls: {mode: %s}}\n' \
		"$2" "$1" "$sel" "$3"
}

# service_yaml NS NAME CLUSTER-IP PORT [TARGET-PORT [APP]]: a Kubernetes Service (ClusterIP,
# one TCP port) selecting the workloads labelled app=APP (default NAME).
service_yaml() {
	printf -- '---\napiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\nspec:\n  clusterIP: %s\n  selector: {app: %s}\n  ports:\n  - {name: tcp-app, port: %s, targetPort: %s, protocol: TCP}\n' \
		"$2" "$1" "$3" "${6:-$2}" "$4" "${5:-$4}"
}

# ---------------------------------------------------------------- seed 000, Diagram 8
# agensys_matrix: seed 000's agents (deploy/examples/agensys) as the three-node tests place
# them: ADDR (IPv4), ADDR6, PORT (the app's port), NODE, and SPOKES (all but the hub,
# orchestrator-agent). Policies 01 and 02 allow hub -> spoke only.
agensys_matrix() {
	declare -gA ADDR=([orchestrator-agent]=10.244.1.10 [pr-agent]=10.244.1.11 [summary-agent]=10.244.2.10
		[mcp-code-scanning]=10.244.2.11 [github-mcp-server]=10.244.3.10)
	declare -gA ADDR6=([orchestrator-agent]=fd00:10:244:1::10 [pr-agent]=fd00:10:244:1::11
		[summary-agent]=fd00:10:244:2::10 [mcp-code-scanning]=fd00:10:244:2::11
		[github-mcp-server]=fd00:10:244:3::10)
	declare -gA PORT=([orchestrator-agent]=8080 [pr-agent]=8080 [summary-agent]=8080
		[mcp-code-scanning]=3000 [github-mcp-server]=3000)
	declare -gA NODE=([orchestrator-agent]=node1 [pr-agent]=node1 [summary-agent]=node2
		[mcp-code-scanning]=node2 [github-mcp-server]=node3)
	declare -ga SPOKES=(pr-agent summary-agent mcp-code-scanning github-mcp-server)
}

# agensys_pod_lines NS [6]: the lab description's pod lines for the agents (with their IPv6
# addresses when 6); call agensys_matrix first.
agensys_pod_lines() {
	local w
	for w in orchestrator-agent "${SPOKES[@]}"; do
		echo "pod ${NODE[$w]} $1/$w ${ADDR[$w]}${2:+ ${ADDR6[$w]}}"
	done
}

# agensys_start SERVE-BYTES [moat-probe serve args]: moatd on node1-3 (one CA), every agent
# enrolled on its node, a moat-probe server on each spoke's port answering SERVE-BYTES.
agensys_start() {
	local bytes=$1 w
	shift
	start_agents_with_ca node1 node2 node3
	for w in orchestrator-agent "${SPOKES[@]}"; do
		check "enroll $w on ${NODE[$w]}" enroll "$w"
	done
	for w in "${SPOKES[@]}"; do
		E2E_SERVE_BYTES=$bytes probe_serve "$w" "${PORT[$w]}" "$@" || e2e_abort "servers start"
	done
}

# agensys_denied_pairs: "SRC DST" for every path Diagram 8 blocks (a spoke to any other agent).
agensys_denied_pairs() {
	local src dst
	for src in "${SPOKES[@]}"; do
		for dst in orchestrator-agent "${SPOKES[@]}"; do
			[ "$src" = "$dst" ] || echo "$src $dst"
		done
	done
}

# check_agensys_denied NS LABEL DIAL LOGGED: every blocked path fails at connect() with EPERM
# when the source dials `DIAL DST` (a command printing host:port, e.g. "target 6"), and the
# source's node logs the deny with its identity and `LOGGED DST` as the destination.
check_agensys_denied() {
	local ns=$1 label=$2 dial=$3 logged=$4 src dst to
	while read -r src dst <&3; do # fd 3: the probes must not eat the list from stdin
		to=$($dial "$dst")
		check_connect_denied "$label$src -> $to fails at connect() with EPERM" "$src" "$to"
		check "... logged on ${NODE[$src]} with source identity, destination and reason" \
			access_log_has "${NODE[$src]}" '.type == "deny" and .src_workload == $s and .src_identity == $i and .dst_addr == $d and (.reason | length > 0)' \
			--arg s "$ns/$src" --arg i "spiffe://cluster.local/ns/$ns/sa/$src" --arg d "$($logged "$dst")"
	done 3< <(agensys_denied_pairs)
}

# yaml_list A,B,...: "A", "B", ... (the items of a YAML flow sequence, quoted).
yaml_list() {
	local item out="" IFS=,
	for item in $1; do out+="${out:+, }\"$item\""; done
	printf '%s' "$out"
}

# authz_yaml NS NAME SELECTOR ACTION FROM [PORTS]: an AuthorizationPolicy with one rule, '---'
# first (documents concatenate, as workload_yaml's).
#   SELECTOR  k=v[,k=v...]: matchLabels; "" for the whole namespace
#   ACTION    ALLOW or DENY
#   FROM      FIELD=V[,V...]: the rule's source (principals, namespaces, ipBlocks, ...); "" for any
#   PORTS     8080[,9090]: the rule's destination ports; none for every port
authz_yaml() {
	local ns=$1 name=$2 sel=$3 action=$4 from=${5:-} ports=${6:-} kv labels="" rule=""
	printf -- '---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: %s}\nspec:\n' \
		"$name" "$ns"
	if [ -n "$sel" ]; then
		for kv in ${sel//,/ }; do labels+="${labels:+, }${kv%%=*}: ${kv#*=}"; done
		printf '  selector: {matchLabels: {%s}}\n' "$labels"
	fi
	printf '  action: %s\n  rules:\n' "$action"
	[ -n "$from" ] && rule="from: [{source: {${from%%=*}: [$(yaml_list "${from#*=}")]}}]"
	if [ -n "$ports" ]; then
		[ -n "$rule" ] && rule+=$'\n    '
		rule+="to: [{operation: {ports: [$(yaml_list "$ports")]}}]"
	fi
	printf '  - %s\n' "${rule:-{\}}"
}

# ---------------------------------------------------------------- moatd in the lab
agent_dir() { echo "$LAB_RUN/$E2E_LAB/$1"; }
agent_bpf_dir() { echo "/sys/fs/bpf/moatlab-$E2E_LAB-$1"; }
agent_socket() { echo "$(agent_dir "$1")/moatd.sock"; }
agent_log() { cat "$(agent_dir "$1")/moatd.log" 2>/dev/null; }
access_log() { cat "$(agent_dir "$1")/access.log" 2>/dev/null; }
agent_pid() { cat "$(agent_dir "$1")/moatd.pid" 2>/dev/null; }
moatctl_on() { local node=$1; shift; "$MOATCTL" --socket "$(agent_socket "$node")" "$@"; }

# make_ca [TRUST-DOMAIN]: a CA for this test's agents (start_agent passes it with --ca).
# Call it directly, not through check (which runs its command in a subshell).
make_ca() {
	E2E_CA=$E2E_TMP/ca
	"$MOATCTL" ca init --trust-domain "${1:-cluster.local}" --out "$E2E_CA"
}

# start_agent NODE [moatd args...]: moatd in the node's netns (nsenter: the host's bpffs stays
# visible) and the node's lab cgroup (its own sockets are never captured).
start_agent() {
	local node=$1 dir bpf resolv
	shift
	dir=$(agent_dir "$node")
	bpf=$(agent_bpf_dir "$node")
	resolv=$(node_info "$node" resolv_conf)
	mkdir -p "$dir"
	local args=(--config "${E2E_CONFIG:?start_agent: set E2E_CONFIG to the config directory}"
		--state-dir "$dir" --bpf-dir "$bpf" --access-log "$dir/access.log" --node "$node"
		--log-level "${E2E_LOG_LEVEL:-debug}")
	[ -n "$resolv" ] && args+=(--resolv-conf "$resolv")
	[ -n "$E2E_CA" ] && args+=(--ca "$E2E_CA")
	# lab node-exec becomes moatd (exec all the way), so $! is moatd's pid.
	# E2E_MOATD_ARGS: extra moatd arguments for every agent of a run (e.g. --engine
	# userspace); the test's own arguments come last and win.
	# shellcheck disable=SC2086
	"$LAB_TOOL" node-exec "$E2E_LAB" "$node" -- "$MOATD" "${args[@]}" ${E2E_MOATD_ARGS:-} "$@" \
		</dev/null >>"$dir/moatd.stdout" 2>>"$dir/moatd.log" &
	echo $! >"$dir/moatd.pid"
	E2E_AGENTS+=("$node")
	info "started moatd on $node (pid $!): $MOATD ${args[*]} $*"
}

# stop_agent NODE: SIGTERM, wait up to 10 s, then SIGKILL. Returns moatd's exit status
# (137 when it had to be killed).
stop_agent() {
	local node=$1 pid i rc=0
	pid=$(agent_pid "$node")
	[ -n "$pid" ] || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			info "moatd on $node (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null
	rc=$?
	rm -f "$(agent_dir "$node")/moatd.pid"
	local keep=() n
	for n in "${E2E_AGENTS[@]}"; do [ "$n" = "$node" ] || keep+=("$n"); done
	E2E_AGENTS=("${keep[@]}")
	return $rc
}

# start_agents_with_ca NODE...: one CA (make_ca), then moatd on every NODE, each checked
# ready within 30 s; aborts the test (with the log's tail) when one does not come up.
start_agents_with_ca() {
	local n
	make_ca >/dev/null || e2e_abort "moatctl ca init" "$("$MOATCTL" ca init --out "$E2E_TMP/ca2" 2>&1)"
	for n in "$@"; do start_agent "$n"; done
	for n in "$@"; do
		check "moatd on $n is ready" wait_ready "$n" 30 || e2e_abort "agents start" "$(agent_log "$n" | tail -20)"
	done
}

# stop_agent_checked NODE [DESC]: stop NODE's moatd and check that it exits 0 on SIGTERM (the
# check is named DESC, by default "moatd on NODE exits 0 on SIGTERM").
stop_agent_checked() {
	stop_agent "$1"
	check_eq "${2:-moatd on $1 exits 0 on SIGTERM}" 0 "$?"
}

# lab_down_checked [--counted]: take the lab down and check that nothing of it is left; with
# --counted, taking it down is a check of its own ("lab down"). With E2E_KEEP=1 the agents'
# state directories (their logs) are copied into the kept scratch directory first.
lab_down_checked() {
	local lab=$E2E_LAB
	[ "${E2E_KEEP:-0}" = 1 ] && cp -r "$LAB_RUN/$lab" "$E2E_TMP/agents" 2>/dev/null
	if [ "${1:-}" = --counted ]; then
		check "lab down" lab down "$lab"
	else
		"$LAB_TOOL" down "$lab" >/dev/null 2>&1
	fi
	E2E_LAB=""
	check_eq "no namespace, cgroup, pin, state or process left" "" "$(lab_traces "$lab")"
}

# finish_lab_checked [--counted] NODE...: stop every NODE's moatd (stop_agent_checked), then
# lab_down_checked [--counted].
finish_lab_checked() {
	local counted="" n
	[ "${1:-}" = --counted ] && { counted=--counted; shift; }
	for n in "$@"; do stop_agent_checked "$n"; done
	lab_down_checked $counted
}

# underlay_capture_start PCAP / underlay_capture_stop TEXT: tcpdump of every TCP packet on the
# lab's underlay bridge; stop writes the decoded packets (tcpdump -nn) to TEXT.
UNDERLAY_TCPDUMP=""
underlay_capture_start() {
	UNDERLAY_PCAP=$1
	ip netns exec "moatlab-$E2E_LAB-underlay" tcpdump -i br0 -nn -U -s 0 -w "$UNDERLAY_PCAP" tcp \
		>"$E2E_TMP/tcpdump.log" 2>&1 &
	UNDERLAY_TCPDUMP=$!
	E2E_BG_PIDS+=("$UNDERLAY_TCPDUMP")
	wait_for "tcpdump listening" 5 grep -q "listening on" "$E2E_TMP/tcpdump.log" ||
		e2e_abort "tcpdump captures the underlay" "$(cat "$E2E_TMP/tcpdump.log")"
}
underlay_capture_stop() {
	sleep 1
	kill -INT "$UNDERLAY_TCPDUMP" 2>/dev/null
	wait "$UNDERLAY_TCPDUMP" 2>/dev/null
	tcpdump -nn -r "$UNDERLAY_PCAP" 2>/dev/null >"$1"
}

# underlay_pod_flows_off_15008 TEXT: the packets of a decoded capture between pod addresses
# (IPv4 10.244/16 or IPv6 fd00:10:244::/48) where neither port is 15008 (nothing, when every
# pod-to-pod byte went through HBONE).
underlay_pod_flows_off_15008() {
	awk '($2 == "IP" && $3 ~ /^10\.244\./ && $5 ~ /^10\.244\./) ||
	     ($2 == "IP6" && $3 ~ /^fd00:10:244:/ && $5 ~ /^fd00:10:244:/) {
		s = $3; d = $5; sub(":$", "", d);
		sp = s; sub(/.*\./, "", sp); dp = d; sub(/.*\./, "", dp);
		if (sp != "15008" && dp != "15008") print }' "$1"
}

agent_alive() { local pid; pid=$(agent_pid "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

agent_ready() { # NODE: /healthz/ready answers 200 inside the node's netns
	node_exec "$1" curl -sf -o /dev/null -m 1 http://127.0.0.1:15021/healthz/ready
}

# wait_ready NODE [TIMEOUT-S]: fails (with the log tail) if moatd exits or is not ready in time.
wait_ready() {
	local node=$1 limit=${2:-30} deadline
	deadline=$(($(date +%s) + limit))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		if ! agent_alive "$node"; then
			info "moatd on $node exited before it was ready; log tail:"
			agent_log "$node" | tail -n 20 | sed 's/^/#   /'
			return 1
		fi
		agent_ready "$node" && return 0
		sleep 0.2
	done
	info "moatd on $node not ready after ${limit}s; log tail:"
	agent_log "$node" | tail -n 20 | sed 's/^/#   /'
	return 1
}

# enroll POD [moatctl enroll args...]: hand the pod to its node's agent. The service account
# defaults to the pod's name (override with --service-account SA).
enroll() {
	local pod=$1 node ns name netns cg
	shift
	node=$(pod_info "$pod" node)
	ns=$(pod_info "$pod" namespace)
	name=$(pod_info "$pod" name)
	netns=$(pod_info "$pod" netns)
	cg=$(pod_info "$pod" cgroup)
	local sa=(--service-account "$name")
	case " $* " in *" --service-account "*) sa=() ;; esac
	moatctl_on "$node" enroll --netns "$netns" --cgroup "$cg" --namespace "$ns" --name "$name" \
		"${sa[@]}" "$@"
}

unenroll() {
	local pod=$1 node
	node=$(pod_info "$pod" node)
	moatctl_on "$node" unenroll --namespace "$(pod_info "$pod" namespace)" --name "$(pod_info "$pod" name)"
}

# ---------------------------------------------------------------- engines
# The path a connection between pods on SRC-NODE and DST-NODE is logged with: a same-node
# pair is joined in the kernel ("same_node", security "same_node": moatd's default engine),
# unless the run's moatd has --engine userspace or ktls (E2E_MOATD_ARGS): then it takes
# HBONE ("hbone", "mutual_tls").
engine_sockmap() {
	[[ " ${E2E_MOATD_ARGS:-} " != *" --engine userspace "* &&
		" ${E2E_MOATD_ARGS:-} " != *" --engine ktls "* ]]
}
expected_path() { if [ "$1" = "$2" ] && engine_sockmap; then echo same_node; else echo hbone; fi; }
expected_security() {
	if [ "$(expected_path "$1" "$2")" = same_node ]; then echo same_node; else echo mutual_tls; fi
}

# ---------------------------------------------------------------- access-log queries (jq)
# access_log_select NODE JQ-CONDITION [jq args...]: the JSON lines of the node's access log
# for which the condition holds (lines that are not JSON are skipped).
access_log_select() {
	local node=$1 cond=$2
	shift 2
	access_log "$node" | jq -c -R "$@" "fromjson? | select($cond)" 2>/dev/null
}
access_log_has() { [ -n "$(access_log_select "$@")" ]; }


# ---------------------------------------------------------------- the probe
# probe_serve POD PORT [moat-probe serve args]: start a server in the pod (default response
# 1 MiB, --send-bytes to change) and wait until it listens. Its log is probe_log POD PORT.
probe_serve() {
	local pod=$1 port=$2 log
	shift 2
	log=$(probe_log_path "$pod" "$port")
	"$LAB_TOOL" exec "$E2E_LAB" "$pod" -- "$PROBE" serve --port "$port" --send-bytes "${E2E_SERVE_BYTES:-1048576}" "$@" \
		</dev/null >"$log" 2>&1 &
	E2E_BG_PIDS+=("$!")
	disown "$!" # killed by the teardown: no "Killed" notice from bash
	if ! wait_for "moat-probe serving $pod:$port" 5 grep -q '"event":"listening"' "$log"; then
		info "moat-probe serve in $pod on $port did not start: $(cat "$log")"
		return 1
	fi
}
probe_log_path() { echo "$E2E_TMP/serve-${1//\//_}-$2.log"; }
probe_log() { cat "$(probe_log_path "$1" "$2")" 2>/dev/null; }

# probe_internet_serve ADDR PORT [args]: the same in the internet netns, bound to ADDR.
probe_internet_serve() {
	local addr=$1 port=$2 log
	shift 2
	log=$(probe_log_path "internet-$addr" "$port")
	"$LAB_TOOL" internet-exec "$E2E_LAB" -- "$PROBE" serve --port "$port" --bind "$addr" --send-bytes "${E2E_SERVE_BYTES:-1048576}" "$@" \
		</dev/null >"$log" 2>&1 &
	E2E_BG_PIDS+=("$!")
	disown "$!" # killed by the teardown: no "Killed" notice from bash
	wait_for "moat-probe serving $addr:$port" 5 grep -q '"event":"listening"' "$log"
}

# probe_connect POD TARGET [moat-probe connect args]: prints the JSON result, returns its code.
probe_connect() {
	local pod=$1 target=$2
	shift 2
	lab_exec "$pod" "$PROBE" connect "$target" --json "$@"
}

# The check_connect_* helpers leave the probe's JSON in LAST_PROBE for further checks.
# shellcheck disable=SC2034
LAST_PROBE=""

# check_connect_ok DESC POD TARGET [SEND-BYTES [EXPECT-BYTES]]: connect works and the bytes
# arrive intact both ways (sha256 of the request as the server saw it, response stream).
check_connect_ok() {
	local desc=$1 pod=$2 target=$3 send=${4:-1048576} expect=${5:-${E2E_SERVE_BYTES:-1048576}} out
	out=$(probe_connect "$pod" "$target" --send-bytes "$send" --expect-bytes "$expect" 2>&1)
	LAST_PROBE=$out
	check_json "$desc" "$out" '.connect == "ok"' ".sent == $send" '.server_sha256 == .sent_sha256' \
		".received == $expect" '.received_ok == true' '.exit == 0'
}

# check_connect_denied DESC POD TARGET [MAX-MS]: connect() fails with EPERM, fast (not a
# timeout): default limit 500 ms.
check_connect_denied() {
	local desc=$1 pod=$2 target=$3 max=${4:-500} out
	out=$(probe_connect "$pod" "$target" --send-bytes 1024 --timeout 5 2>&1)
	LAST_PROBE=$out
	check_json "$desc" "$out" '.connect == "EPERM"' ".connect_ms < $max" '.exit == 3'
}

# check_connect_error DESC POD TARGET ERRNO-NAME: connect() fails with that errno.
check_connect_error() {
	local desc=$1 pod=$2 target=$3 want=$4 out
	out=$(probe_connect "$pod" "$target" --timeout 5 2>&1)
	LAST_PROBE=$out
	check_json "$desc" "$out" ".connect == \"$want\""
}

# Quiet predicates for wait_for.
connect_is_ok() { probe_connect "$1" "$2" --send-bytes 1024 --timeout 3 >/dev/null 2>&1; }
connect_is_denied() {
	local out
	out=$(probe_connect "$1" "$2" --send-bytes 1024 --timeout 3 2>/dev/null)
	[ "$(jq -r .connect <<<"$out" 2>/dev/null)" = EPERM ]
}
