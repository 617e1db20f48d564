#!/usr/bin/env bash
# The lab's self-test, without moatd: a dual-stack 2-node lab with 3 pods, an internet and
# DNS. Proves the topology (pod to pod on one node and across nodes over IPv4 and IPv6, names
# through the lab's dnsmasq, no default route anywhere), the exec helpers (netns + cgroup, exit
# codes, stdin), the probe (1 MiB both ways with sha256, failure classes), and cleanup
# (normal, after a crash, stale). The other description files here are IPv4-only: the IPv6
# fields are optional.
source "$(dirname "$0")/lib.sh"
e2e_init

LAB_NAME=e2elab$E2E_RUN_ID      # unique per run: parallel runs do not collide
STALE=e2estale$E2E_RUN_ID
BAD=e2ebad$E2E_RUN_ID
MIB=1048576
desc=$E2E_TMP/lab.conf
cat >"$desc" <<EOF
# lab self-test: two dual-stack nodes, three pods (b IPv4 only), an internet with one named
# host and a DNS server, two Services (ClusterIPs the DNS answers for)
lab $LAB_NAME
underlay 192.168.77.0/24
underlay6 fd00:77::/64
cluster6 fd00:10:244::/48
node node1 192.168.77.11 10.244.1.0/24 fd00:77::11 fd00:10:244:1::/64
node node2 192.168.77.12 10.244.2.0/24 fd00:77::12 fd00:10:244:2::/64
pod node1 ns1/a 10.244.1.10 fd00:10:244:1::10
pod node1 ns1/b 10.244.1.11
pod node1 ns1/d 10.244.1.12 fd00:10:244:1::12
pod node2 ns2/c 10.244.2.10 fd00:10:244:2::10
internet 203.0.113.0/24 203.0.113.1
host svc.example.test 203.0.113.10
host other.example.test 203.0.113.11
dns 203.0.113.53
services 10.96.0.0/16 fd00:96::/112
service ns1/reviews 10.96.0.20 fd00:96::20
service ns2/ratings 10.96.0.21
EOF
lab_up "$desc"

# ---------------------------------------------------------------- topology
expected_netns="moatlab-$LAB_NAME-internet moatlab-$LAB_NAME-node-node1 moatlab-$LAB_NAME-node-node2 moatlab-$LAB_NAME-pod-ns1_a moatlab-$LAB_NAME-pod-ns1_b moatlab-$LAB_NAME-pod-ns1_d moatlab-$LAB_NAME-pod-ns2_c moatlab-$LAB_NAME-underlay"
lab_ns=$(ls /run/netns | grep "^moatlab-$LAB_NAME-" | sort | tr '\n' ' ' | sed 's/ $//')
check_eq "lab up creates exactly the underlay, 2 nodes, 4 pods and the internet" "$expected_netns" "$lab_ns"
check "lab status reports everything up" lab status "$LAB_NAME"

no_default_route() {
	local ns bad=""
	for ns in $lab_ns; do
		[ -n "$(ip -n "$ns" -4 route show default)" ] && bad+=" $ns(v4)"
		[ -n "$(ip -n "$ns" -6 route show default 2>/dev/null)" ] && bad+=" $ns(v6)"
	done
	[ -z "$bad" ] || { echo "default route in:$bad"; return 1; }
}
check "no default route (IPv4 or IPv6) in any lab namespace" no_default_route

lo_up_everywhere() {
	local ns bad=""
	for ns in $lab_ns; do
		ip -n "$ns" link show lo | grep -q '[<,]UP[,>]' || bad+=" $ns"
	done
	[ -z "$bad" ] || { echo "lo down in:$bad"; return 1; }
}
check "lo is up in every lab namespace" lo_up_everywhere

check_eq "pod routes: gateway link route, services, cluster, underlay and internet via 169.254.1.1, nothing else" \
	"10.244.0.0/16 via 169.254.1.1 dev eth0|10.96.0.0/16 via 169.254.1.1 dev eth0|169.254.1.1 dev eth0 scope link|192.168.77.0/24 via 169.254.1.1 dev eth0|203.0.113.0/24 via 169.254.1.1 dev eth0" \
	"$(ip -n moatlab-$LAB_NAME-pod-ns1_a route show | sed 's/ *$//' | sort | paste -sd'|')"
check_eq "pod address is a /32 on eth0" "10.244.1.10/32" \
	"$(ip -n moatlab-$LAB_NAME-pod-ns1_a -4 -o addr show dev eth0 | awk '{ print $4 }')"
hostif=$(pod_info ns1/a host_if)
check_eq "node side: proxy_arp on the pod's veth ($hostif)" 1 \
	"$(nsenter --net=/run/netns/moatlab-$LAB_NAME-node-node1 cat "/proc/sys/net/ipv4/conf/$hostif/proxy_arp")"
check_eq "node side: ip_forward on" 1 \
	"$(nsenter --net=/run/netns/moatlab-$LAB_NAME-node-node1 cat /proc/sys/net/ipv4/ip_forward)"
check_match "node1 routes node2's pod CIDR via node2's underlay address" \
	'^10\.244\.2\.0/24 via 192\.168\.77\.12 dev eth0' "$(ip -n moatlab-$LAB_NAME-node-node1 route show)"
check_match "interface names fit in 15 characters" '^mp[0-9a-f]{10}$' "$hostif"

# IPv6 (dual stack)
check_eq "pod IPv6 address is a /128 on eth0" "fd00:10:244:1::10/128" \
	"$(ip -n moatlab-$LAB_NAME-pod-ns1_a -6 -o addr show dev eth0 scope global | awk '{ print $4 }')"
check_eq "pod IPv6 routes: cluster6 and underlay6 via fe80::1, nothing else (besides the kernel's own address routes)" \
	"fd00:10:244::/48 via fe80::1 dev eth0|fd00:77::/64 via fe80::1 dev eth0|fd00:96::/112 via fe80::1 dev eth0" \
	"$(ip -n moatlab-$LAB_NAME-pod-ns1_a -6 route show | grep -v ' proto kernel' | sed -E 's/ metric [0-9]+//; s/ pref medium//; s/ *$//' | sort | paste -sd'|')"
check_eq "an IPv4-only pod has no global IPv6 address" "" \
	"$(ip -n moatlab-$LAB_NAME-pod-ns1_b -6 -o addr show scope global)"
check_match "node side: fe80::1 is the node's end of the pod's veth" 'inet6 fe80::1/64' \
	"$(ip -n moatlab-$LAB_NAME-node-node1 -6 addr show dev "$hostif")"
check_eq "node side: IPv6 forwarding on" 1 \
	"$(nsenter --net=/run/netns/moatlab-$LAB_NAME-node-node1 cat /proc/sys/net/ipv6/conf/all/forwarding)"
check_match "node1 routes the pod's /128 to its veth" "^fd00:10:244:1::10 dev $hostif" \
	"$(ip -n moatlab-$LAB_NAME-node-node1 -6 route show)"
check_match "node1 routes node2's IPv6 pod CIDR via node2's underlay6 address" \
	'^fd00:10:244:2::/64 via fd00:77::12 dev eth0' "$(ip -n moatlab-$LAB_NAME-node-node1 -6 route show)"
check_json "pod-info --json has the IPv6 address" "$(lab pod-info "$LAB_NAME" ns1/a --json)" \
	'.address6 == "fd00:10:244:1::10"'
check_json "node-info --json has the IPv6 underlay address and pod CIDR" "$(lab node-info "$LAB_NAME" node2 --json)" \
	'.underlay_ip6 == "fd00:77::12"' '.pod_cidr6 == "fd00:10:244:2::/64"'

# ---------------------------------------------------------------- exec helpers
check_match "lab exec runs in the pod's cgroup" "^0::/moatlab-$LAB_NAME/pods/ns1_a\$" \
	"$(lab_exec ns1/a cat /proc/self/cgroup | grep '^0::')"
check_eq "lab exec runs in the pod's netns (its address is on eth0)" "10.244.2.10/32" \
	"$(lab_exec c ip -4 -o addr show dev eth0 | awk '{ print $4 }')"
check_match "lab node-exec runs in the node's cgroup" "^0::/moatlab-$LAB_NAME/nodes/node2\$" \
	"$(node_exec node2 cat /proc/self/cgroup | grep '^0::')"
check_match "lab internet-exec runs in the internet's cgroup" "^0::/moatlab-$LAB_NAME/internet\$" \
	"$(internet_exec cat /proc/self/cgroup | grep '^0::')"
check_eq "lab node-exec sees the host's bpffs (moatd pins maps there)" "bpf_fs" \
	"$(node_exec node1 stat -f -c %T /sys/fs/bpf)"
lab_exec ns1/a sh -c 'exit 42'
check_eq "lab exec preserves the exit code" 42 "$?"
check_eq "lab exec passes stdin and stdout through" "hello lab" "$(echo 'hello lab' | lab_exec b cat)"
lab exec "$LAB_NAME" nosuchpod -- true 2>/dev/null
check_eq "lab exec of an unknown pod fails with 125" 125 "$?"
check_eq "pod-info names the pod's netns" "/run/netns/moatlab-$LAB_NAME-pod-ns2_c" "$(pod_info c netns)"
check "pod-info names an existing cgroup" test -d "$(pod_info ns2/c cgroup)"
check_json "pod-info --json is JSON with the address and node" "$(lab pod-info "$LAB_NAME" ns1/b --json)" \
	'.address == "10.244.1.11"' '.node == "node1"' '.namespace == "ns1"'

# ---------------------------------------------------------------- traffic
probe_serve ns1/a 8080 --send-bytes $MIB
probe_serve ns1/b 8080 --send-bytes $MIB
probe_serve ns2/c 8080 --send-bytes $MIB
probe_internet_serve 203.0.113.10 443 --send-bytes $MIB
check_connect_ok "same node: a -> b carries 1 MiB each way intact" ns1/a 10.244.1.11:8080 $MIB $MIB
check_connect_ok "across nodes: a -> c carries 1 MiB each way intact" ns1/a 10.244.2.10:8080 $MIB $MIB
check_connect_ok "across nodes: c -> b carries 1 MiB each way intact" ns2/c 10.244.1.11:8080 $MIB $MIB
check_json "a node reaches a pod on another node (node2 -> a)" \
	"$(node_exec node2 "$PROBE" connect 10.244.1.10:8080 --send-bytes 1000 --expect-bytes $MIB --json)" \
	'.exit == 0' '.local | startswith("192.168.77.12:")'
check "the server sees the client's own address (no NAT in the lab)" \
	grep -q '"peer":"10.244.1.10:[0-9]*","local":"10.244.2.10:8080"' "$(probe_log_path ns2/c 8080)"
probe_serve ns2/c 8086 --send-bytes $MIB --bind ::
probe_serve ns1/d 8086 --send-bytes $MIB --bind ::
check_connect_ok "IPv6 across nodes: a -> [c]:8086 carries 1 MiB each way intact" ns1/a "[fd00:10:244:2::10]:8086" $MIB $MIB
check_connect_ok "IPv6 across nodes: c -> [d]:8086 carries 1 MiB each way intact" ns2/c "[fd00:10:244:1::12]:8086" $MIB $MIB
check_connect_ok "IPv6 same node: a -> [d]:8086 carries 1 MiB each way intact" ns1/a "[fd00:10:244:1::12]:8086" $MIB $MIB
check_connect_ok "IPv4 to the same dual-stack server (bound to ::) works too" ns1/b 10.244.2.10:8086 $MIB $MIB
check "the IPv6 server sees the client's own IPv6 address" \
	grep -q '"peer":"\[fd00:10:244:1::10\]:[0-9]*","local":"\[fd00:10:244:2::10\]:8086"' "$(probe_log_path ns2/c 8086)"
check "... and an IPv4 client as plain IPv4" \
	grep -q '"peer":"10.244.1.11:[0-9]*","local":"10.244.2.10:8086"' "$(probe_log_path ns2/c 8086)"
check_json "a node reaches a pod on another node over IPv6 (node2 -> d)" \
	"$(node_exec node2 "$PROBE" connect "[fd00:10:244:1::12]:8086" --send-bytes 1000 --expect-bytes $MIB --json)" \
	'.exit == 0' '.local | startswith("[fd00:77::12]:")'

check_eq "pods resolve a host line through the lab's dnsmasq" "203.0.113.10" \
	"$(lab_exec ns1/a getent ahostsv4 svc.example.test | awk 'NR == 1 { print $1 }')"
check_eq "the internet resolves too" "203.0.113.11" \
	"$(internet_exec getent ahostsv4 other.example.test | awk 'NR == 1 { print $1 }')"
t0=$(date +%s%N)
lab_exec ns2/c getent hosts no-such-name.example.test >/dev/null
rc=$?
t1=$(date +%s%N)
check_eq "an unknown name does not resolve" 2 "$rc"
check "... and fails fast (dnsmasq answers, no resolver timeout): $(((t1 - t0) / 1000000)) ms" \
	test $(((t1 - t0) / 1000000)) -lt 1500
check_connect_ok "a pod reaches an internet host by name, 1 MiB each way" ns2/c svc.example.test:443 $MIB $MIB

# Services: the lab DNS answers NAME.NAMESPACE.svc.cluster.local with the ClusterIPs.
check_eq "a pod resolves a Service name to its ClusterIP (A)" "10.96.0.20" \
	"$(lab_exec ns1/a getent ahostsv4 reviews.ns1.svc.cluster.local | awk 'NR == 1 { print $1 }')"
check_eq "... and to its IPv6 ClusterIP (AAAA)" "fd00:96::20" \
	"$(lab_exec ns1/a getent ahostsv6 reviews.ns1.svc.cluster.local | awk 'NR == 1 { print $1 }')"
check_eq "a pod on another node resolves another namespace's Service (IPv4 only)" "10.96.0.21" \
	"$(lab_exec ns2/c getent hosts ratings.ns2.svc.cluster.local | awk '{ print $1 }')"
check_eq "a pod asking for any family gets both ClusterIPs of a dual-stack Service" "10.96.0.20 fd00:96::20" \
	"$(lab_exec ns1/a getent ahosts reviews.ns1.svc.cluster.local | awk '{ print $1 }' | sort -u | paste -sd' ')"
check_eq "... and only the IPv4 one of a Service without an IPv6 ClusterIP (no AAAA)" "10.96.0.21" \
	"$(lab_exec ns2/c getent ahosts ratings.ns2.svc.cluster.local | awk '{ print $1 }' | sort -u | paste -sd' ')"
check_fails "a Service name in the wrong namespace does not resolve" lab_exec ns1/a getent hosts reviews.ns2.svc.cluster.local
# Nothing serves a ClusterIP without an agent: curl resolves the name, the pod routes it to its
# node, and the node (no route for the service range, no kube-proxy) answers net unreachable.
out=$(lab_exec ns2/c curl -sv -m 3 http://ratings.ns2.svc.cluster.local:9080/ 2>&1)
check_match "curl resolves a Service name through the lab DNS" 'Trying 10\.96\.0\.21:9080' "$out"
check_connect_error "... and without an agent nothing answers at the ClusterIP (the node has no route)" \
	ns2/c 10.96.0.21:9080 ENETUNREACH
check_connect_error "nothing outside the lab's ranges is routed (no default route)" ns1/a 198.51.100.7:80 ENETUNREACH
check_connect_error "... over IPv6 neither" ns1/a "[2001:db8::7]:80" ENETUNREACH

# ---------------------------------------------------------------- the probe's verdicts
out=$(probe_connect ns1/b 10.244.2.10:9999)
check_json "probe: a closed port is ECONNREFUSED, exit 4, at once" "$out" \
	'.connect == "ECONNREFUSED"' '.exit == 4' '.connect_ms < 1000'
# A server that hashes nothing and answers a wrong digest: the probe must notice.
zeros=$(printf '%064d' 0)
"$LAB_TOOL" exec "$LAB_NAME" ns2/c socat TCP-LISTEN:9001,reuseaddr,fork \
	SYSTEM:"cat >/dev/null; echo sha256=$zeros bytes=5" </dev/null >/dev/null 2>&1 &
E2E_BG_PIDS+=("$!")
disown $!
"$LAB_TOOL" exec "$LAB_NAME" ns2/c socat TCP-LISTEN:9002,reuseaddr,fork SYSTEM:'cat >/dev/null' </dev/null >/dev/null 2>&1 &
E2E_BG_PIDS+=("$!")
disown $!
wait_for "socat listening in c" 5 nsenter --net=/run/netns/moatlab-$LAB_NAME-pod-ns2_c sh -c 'ss -Hlnt | grep -q ":9002 "'
out=$(probe_connect ns1/a 10.244.2.10:9001 --send-bytes 5000)
check_json "probe: a wrong server digest is a mismatch, exit 8" "$out" '.connect == "ok"' '.exit == 8' \
	'(.error | test("request corrupted"))'
out=$(probe_connect ns1/a 10.244.2.10:9002 --send-bytes 5000)
check_json "probe: no header line is a protocol failure, exit 7" "$out" '.exit == 7'
out=$(probe_connect ns1/a 10.244.2.10:8080 --send-bytes 100 --expect-bytes 5)
check_json "probe: a response of another length is a mismatch, exit 8" "$out" '.exit == 8'

# 20 concurrent connections to one server: each response is seeded by its own request.
many_at_once() {
	local i pids=() rc=0
	for ((i = 0; i < 20; i++)); do
		probe_connect ns1/b 10.244.2.10:8080 --send-bytes 262144 --expect-bytes $MIB >/dev/null &
		pids+=("$!")
	done
	for i in "${pids[@]}"; do wait "$i" || rc=1; done
	return $rc
}
check "20 concurrent connections, each verified" many_at_once

# ---------------------------------------------------------------- cleanup
# ("$LAB_TOOL" exec, not the lab_exec function: $! must be the process that becomes sleep)
"$LAB_TOOL" exec "$LAB_NAME" ns1/a sleep 1000 </dev/null >/dev/null 2>&1 &
in_cgroup=$!
disown $!
ip netns exec moatlab-$LAB_NAME-pod-ns1_b sleep 1000 </dev/null >/dev/null 2>&1 &
outside_cgroup=$!
disown $!
check_wait "a process started with lab exec is in the pod's cgroup" 5 \
	grep -qx "$in_cgroup" "$(pod_info ns1/a cgroup)/cgroup.procs"
check "lab down succeeds" lab down "$LAB_NAME"
E2E_LAB=""
check_eq "lab down leaves no netns, cgroup, pin, /etc/netns, state or process" "" "$(lab_traces "$LAB_NAME")"
check_fails "a process in a pod's cgroup is gone" kill -0 "$in_cgroup"
check_fails "a process in a pod's netns outside the lab's cgroups is gone" kill -0 "$outside_cgroup"
check "lab down of a lab that is not there succeeds" lab down "$LAB_NAME"

# A crash: the "agent" killed with SIGKILL, processes left in a pod (in and outside its
# cgroup), a leftover pin directory with a pinned map, and the lab's state directory lost.
lab_up "$desc"
check "lab up again after down" lab status "$LAB_NAME"
lab up --owner $$ "$desc" >/dev/null 2>&1
check_eq "lab up over an existing lab rebuilds it (same namespaces)" "$expected_netns" \
	"$(ls /run/netns | grep "^moatlab-$LAB_NAME-" | sort | tr '\n' ' ' | sed 's/ $//')"
"$LAB_TOOL" node-exec "$LAB_NAME" node1 sleep 1000 </dev/null >/dev/null 2>&1 &
agent=$!
disown $!
"$LAB_TOOL" exec "$LAB_NAME" ns2/c sleep 1000 </dev/null >/dev/null 2>&1 &
left_in_pod=$!
disown $!
ip netns exec moatlab-$LAB_NAME-pod-ns2_c sleep 1000 </dev/null >/dev/null 2>&1 &
left_in_netns=$!
disown $!
pin_dir=/sys/fs/bpf/moatlab-$LAB_NAME-node1
mkdir -p "$pin_dir"
if bpftool map create "$pin_dir/workloads" type hash key 4 value 4 entries 8 name workloads 2>/dev/null; then
	have_pin=1
else
	have_pin=0
	info "bpftool map create failed: the leftover pin dir is empty"
fi
check_wait "the stand-in agent runs in the node's cgroup" 5 \
	grep -qx "$agent" "$(node_info node1 cgroup)/cgroup.procs"
wait_for "the pod process runs" 5 grep -qx "$left_in_pod" "$(pod_info ns2/c cgroup)/cgroup.procs"
kill -9 "$agent"
rm -rf "${LAB_RUN:?}/$LAB_NAME"
check "lab down after a crash (no state, leftovers) succeeds" lab down "$LAB_NAME"
E2E_LAB=""
check_eq "... and leaves nothing behind" "" "$(lab_traces "$LAB_NAME")"
check_fails "... the process left in the pod is gone" kill -0 "$left_in_pod"
check_fails "... the process left in the pod's netns is gone" kill -0 "$left_in_netns"
[ "$have_pin" = 1 ] && check_fails "... the leftover pinned map is gone" test -e "$pin_dir/workloads"

# `lab up` itself killed half way: `lab down` still removes the half-built lab.
"$LAB_TOOL" up --owner $$ "$desc" >/dev/null 2>&1 &
upper=$!
wait_for "lab up has started building" 10 test -e /run/netns/moatlab-$LAB_NAME-node-node2
kill -9 "$upper" 2>/dev/null
wait "$upper" 2>/dev/null
check "lab down after 'lab up' was killed half way" lab down "$LAB_NAME"
check_eq "... leaves nothing behind" "" "$(lab_traces "$LAB_NAME")"

# --stale removes a lab whose owner died, and only then.
stale_desc=$E2E_TMP/stale.conf
printf 'lab %s\nunderlay 192.168.79.0/24\nnode n1 192.168.79.11 10.244.9.0/24\npod n1 x/y 10.244.9.9\n' "$STALE" >"$stale_desc"
sleep 300 &
owner=$!
E2E_BG_PIDS+=("$owner")
if lab up --owner "$owner" "$stale_desc" >/dev/null 2>&1; then
	lab down --stale >/dev/null 2>&1
	check "lab down --stale keeps a lab whose owner lives" test -d /run/moatlab/$STALE
	kill -9 "$owner"
	wait "$owner" 2>/dev/null
	lab down --stale >/dev/null 2>&1
	check_eq "lab down --stale removes it once the owner is gone" "" "$(lab_traces "$STALE")"
else
	_fail "lab up of the $STALE lab"
fi
lab down "$STALE" >/dev/null 2>&1

# ---------------------------------------------------------------- the description file
bad=$E2E_TMP/bad.conf
printf 'lab %s\nunderlay 192.168.80.0/24\nnode n1 192.168.80.11 10.244.1.0/24\npod n1 x/y 10.244.2.9\n' "$BAD" >"$bad"
out=$(lab up "$bad" 2>&1)
rc=$?
check_eq "a pod outside its node's CIDR is refused" 1 "$rc"
check_match "... with file:line and the reason" "bad\.conf:4: pod x/y: 10\.244\.2\.9 is not in n1's pod CIDR" "$out"
check_eq "... and nothing is created" "" "$(lab_traces "$BAD")"
printf 'lab %s\nunderlay 192.168.80.0/24\nnode n1 192.168.80.11 10.244.1.0/24\nbogus line\n' "$BAD" >"$bad"
check_match "an unknown keyword is refused with file:line" "bad\.conf:4: unknown keyword 'bogus'" "$(lab up "$bad" 2>&1)"
printf 'lab %s\nunderlay 192.168.80.0/24\nunderlay6 fd00:80::/64\ncluster6 fd00:10:245::/48\nnode n1 192.168.80.11 10.244.1.0/24 fd00:80::11 fd00:10:245:1::/64\npod n1 x/y 10.244.1.9 fd00:10:245:2::9\n' "$BAD" >"$bad"
check_match "a pod IPv6 address outside its node's IPv6 pod CIDR is refused with file:line" \
	"bad\.conf:6: pod x/y: fd00:10:245:2::9 is not in n1's IPv6 pod CIDR" "$(lab up "$bad" 2>&1)"
printf 'lab %s\nunderlay 192.168.80.0/24\nnode n1 192.168.80.11 10.244.1.0/24 fd00:80::11 fd00:10:245:1::/64\n' "$BAD" >"$bad"
check_match "IPv6 node fields without underlay6/cluster6 are refused with file:line" \
	"bad\.conf:3: node n1 has IPv6 fields" "$(lab up "$bad" 2>&1)"
printf 'lab %s\nunderlay 192.168.80.0/24\nunderlay6 fd00:80::1/64\n' "$BAD" >"$bad"
check_match "a bad underlay6 CIDR is refused with file:line" "bad\.conf:3: 'fd00:80::1/64' is not an IPv6 network CIDR" "$(lab up "$bad" 2>&1)"
check_eq "... and nothing is created" "" "$(lab_traces "$BAD")"
printf 'lab %s\nunderlay 192.168.80.0/24\nnode n1 192.168.80.11 10.244.1.0/24\ninternet 203.0.113.0/24 203.0.113.1\ndns 203.0.113.53\nservices 10.96.0.0/16\nservice x/y 10.97.0.1\n' "$BAD" >"$bad"
check_match "a ClusterIP outside the service range is refused with file:line" \
	"bad\.conf:7: service x/y: 10\.97\.0\.1 is not in the service range 10\.96\.0\.0/16" "$(lab up "$bad" 2>&1)"
printf 'lab %s\nunderlay 192.168.80.0/24\nnode n1 192.168.80.11 10.244.1.0/24\nservices 10.96.0.0/16\nservice x/y 10.96.0.1\n' "$BAD" >"$bad"
check_match "a service without a lab DNS is refused with file:line" "bad\.conf:5: service x/y: needs a 'dns' line" "$(lab up "$bad" 2>&1)"
printf 'lab %s\nunderlay 192.168.80.0/24\nnode n1 192.168.80.11 10.244.1.0/24\nservices 10.240.0.0/12\n' "$BAD" >"$bad"
check_match "a service range overlapping the pods' is refused with file:line" "bad\.conf:4: the service range" "$(lab up "$bad" 2>&1)"
check_eq "... and nothing is created" "" "$(lab_traces "$BAD")"
printf 'lab e2e-bad\n' >"$bad"
check_match "a lab name with '-' is refused (names are prefixes)" "bad\.conf:1: lab name" "$(lab up "$bad" 2>&1)"

e2e_finish
