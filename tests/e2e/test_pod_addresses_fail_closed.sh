#!/usr/bin/env bash
# What a pod receives is judged by the pod, not by the address it was dialed on, and moat
# fails closed on every address a pod has:
#  (a) a second IPv4 address added to a STRICT pod after enroll (+ a node route) is learned:
#      an enrolled pod's connect to it is captured and denied as for the declared address,
#      and plaintext from a pod on a node without moat is dropped at TC (counter moves);
#  (b) the same for an IPv6 address;
#  (c) a pod with NET_ADMIN sending from an address that is not its own (a second address
#      inside the pod, a raw-socket SYN with a forged source) is dropped on the node's end of
#      its veth (counter + deny record), and `tc` inside the pod does not lift it;
#  (d) moatd SIGKILLed: plaintext to a PERMISSIVE pod from outside the mesh is dropped
#      (counter), and after the restart it flows through 15006 again.
source "$(dirname "$0")/lib.sh"
e2e_init

NS=pa
for bin in "$MOATD" "$MOATCTL"; do
	[ -x "$bin" ] || e2e_abort "$(basename "$bin") is built" "missing $bin"
done
command -v python3 >/dev/null || e2e_abort "python3 is installed" "apt-get install python3"
lab_up <<EOF
lab pa$E2E_RUN_ID
underlay 192.168.86.0/24
node node1 192.168.86.11 10.244.1.0/24
node node2 192.168.86.12 10.244.2.0/24
pod node1 $NS/a 10.244.1.10
pod node1 $NS/b 10.244.1.11
pod node1 $NS/p 10.244.1.12
pod node1 default/neighbour 10.244.1.50
pod node2 default/outsider 10.244.2.50
EOF
E2E_CONFIG=$E2E_TMP/config
mkdir -p "$E2E_CONFIG"
{ mesh_yaml $NS; workload_yaml $NS a 10.244.1.10; workload_yaml $NS b 10.244.1.11
	workload_yaml $NS p 10.244.1.12; peer_auth_yaml $NS strict STRICT
	peer_auth_yaml $NS p-permissive PERMISSIVE p
	authz_yaml $NS deny-a-to-b app=b DENY principals=cluster.local/ns/$NS/sa/a
	authz_yaml $NS p-only-8080 app=p ALLOW "" 8080; } >"$E2E_CONFIG/mesh.yaml"
make_ca >/dev/null || e2e_abort "moatctl ca init"

# Summed per-CPU counter of the pinned stats map (the one the attached programs use, also
# while no moatd runs).
bpf_stat() { # FIELD
	bpftool map dump pinned "$(agent_bpf_dir node1)/stats" 2>/dev/null |
		jq "[.[0].values[].value.$1] | add // 0"
}
# check_counted DESC FIELD CMD...: a check that CMD succeeds and moves the counter.
check_counted() {
	local desc=$1 field=$2 before after
	shift 2
	before=$(bpf_stat "$field")
	check "$desc" "$@"
	after=$(bpf_stat "$field")
	check "... counted in $field ($before -> $after)" test "${after:-0}" -gt "${before:-0}"
}
connect_result_is() { # POD TARGET ERRNO
	local out
	out=$(probe_connect "$1" "$2" --send-bytes 1024 --timeout 2 2>&1)
	[ "$(jq -r .connect <<<"$out" 2>/dev/null)" = "$3" ] || { echo "$out"; return 1; }
}
deny_logged() { # JQ-CONDITION [jq args]
	access_log_has node1 ".type == \"deny\" and ($1)" "${@:2}"
}
pod_ns() { echo "moatlab-$E2E_LAB-pod-$1"; }
node_ns() { echo "moatlab-$E2E_LAB-node-$1"; }

start_agent node1
check "moatd is ready" wait_ready node1 30 || e2e_abort "moatd starts"
for pod in a b p; do check "enroll $pod" enroll $pod; done
probe_serve b 8080 || e2e_abort "server in b"
probe_serve p 8080 || e2e_abort "server in p on 8080"
probe_serve p 9090 || e2e_abort "server in p on 9090"
probe_serve outsider 7000 || e2e_abort "server in outsider"
B_IF=$(pod_info b host_if)
check_match "b's enforcement sits on the node's end of its veth ($B_IF)" "host end $B_IF" "$(agent_log node1)"
check "... a to_pod filter on $B_IF egress" \
	sh -c "ip -n $(node_ns node1) -d link show $B_IF >/dev/null && tc -n $(node_ns node1) filter show dev $B_IF egress | grep -q to_pod"
check "... a from_pod filter on $B_IF ingress" \
	sh -c "tc -n $(node_ns node1) filter show dev $B_IF ingress | grep -q from_pod"

# ---------------------------------------------------------------- (a) a second IPv4 address
check_connect_denied "a -> b's declared address is denied at connect()" a 10.244.1.11:8080
check_counted "outsider (node without moat) -> b:8080 plaintext is dropped" plaintext_dropped \
	connect_result_is outsider 10.244.1.11:8080 ETIMEDOUT
check "add 10.244.1.21 to b's interface after enroll" ip -n "$(pod_ns ${NS}_b)" addr add 10.244.1.21/32 dev eth0
check "... and a node route to it" node_exec node1 ip route add 10.244.1.21/32 dev "$B_IF"
check_wait "moatd learns it as b's" 10 grep -q "pod $NS/b: learned address 10.244.1.21" "$(agent_dir node1)/moatd.log"
check_connect_denied "a -> b's second address is captured and denied as for the declared one" a 10.244.1.21:8080
check_wait "... with a deny record naming b and the policy" 5 deny_logged \
	'.src_workload == "pa/a" and .dst_addr == "10.244.1.21:8080" and .dst_workload == "pa/b" and ((.policy // "") | test("deny-a-to-b"))'
check_counted "outsider -> b's second address: plaintext to STRICT b is dropped" plaintext_dropped \
	connect_result_is outsider 10.244.1.21:8080 ETIMEDOUT
check_eq "... b's app saw none of it" 0 "$(probe_log b 8080 | grep -c '"event":"conn"')"
check "... while HBONE to it connects (the route works: the drop is STRICT's)" \
	connect_result_is outsider 10.244.1.21:15008 ok

# ---------------------------------------------------------------- (b) an IPv6 address
# IPv6 on node1 for b and the neighbour (a pod outside the mesh): fe80::1 on the node's
# ends, /128 routes, forwarding; no default route anywhere.
N_IF=$(pod_info neighbour host_if)
check "node1 routes IPv6 to b and the neighbour" sh -c "
	ip netns exec $(node_ns node1) sysctl -qw net.ipv6.conf.all.forwarding=1 &&
	ip -n $(node_ns node1) addr add fe80::1/64 dev $B_IF nodad &&
	ip -n $(node_ns node1) addr add fe80::1/64 dev $N_IF nodad &&
	ip -n $(node_ns node1) -6 route add fd00:1::50/128 dev $N_IF &&
	ip -n $(node_ns node1) -6 route add fd00:1::11/128 dev $B_IF &&
	ip -n $(pod_ns default_neighbour) addr add fd00:1::50/128 dev eth0 nodad &&
	ip -n $(pod_ns default_neighbour) -6 route add fd00:1::/64 via fe80::1 dev eth0"
check "add fd00:1::11 to b's interface" sh -c "
	ip -n $(pod_ns ${NS}_b) addr add fd00:1::11/128 dev eth0 nodad &&
	ip -n $(pod_ns ${NS}_b) -6 route add fd00:1::/64 via fe80::1 dev eth0"
check_wait "moatd learns it as b's" 10 grep -q "pod $NS/b: learned address fd00:1::11" "$(agent_dir node1)/moatd.log"
check_connect_denied "a -> [fd00:1::11]:8080 is captured and denied as for the declared address" a "[fd00:1::11]:8080"
check_wait "... with a deny record naming b" 5 deny_logged \
	'.src_workload == "pa/a" and .dst_addr == "[fd00:1::11]:8080" and .dst_workload == "pa/b"'
check_counted "neighbour -> [fd00:1::11]:8080 plaintext to STRICT b is dropped" plaintext_dropped \
	connect_result_is neighbour "[fd00:1::11]:8080" ETIMEDOUT
check "... while HBONE to it connects (the IPv6 path works: the drop is STRICT's)" \
	connect_result_is neighbour "[fd00:1::11]:15008" ok

# ---------------------------------------------------------------- (c) forged sources
check_connect_ok "a -> outsider:7000 (outside the mesh) from a's own address works" a 10.244.2.50:7000 1024
# a tiny sender: bind to a source, connect, report connected or the errno name
SEND=$E2E_TMP/send_from.py
cat >"$SEND" <<'PY'
import errno, socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(2)
s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: the address need not be ours
s.bind((src, 0))
try:
    s.connect((dst, port))
    print("connected")
except OSError as e:
    print(errno.errorcode.get(e.errno, "timeout") if e.errno else "timeout")
PY
forged_from() { # POD SRC: a connect from SRC to outsider:7000 does not get through
	local out
	out=$(lab_exec "$1" python3 "$SEND" "$2" 10.244.2.50 7000 2>&1)
	[ "$out" = timeout ] || { echo "$out"; return 1; }
}
check "a adds 10.244.1.99 on its lo (moat learns only the interface)" \
	ip -n "$(pod_ns ${NS}_a)" addr add 10.244.1.99/32 dev lo
check_counted "a sending from 10.244.1.99 is dropped on the node's end" spoofed_dropped \
	forged_from a 10.244.1.99
check_wait "... with a deny record naming a and the forged source" 5 deny_logged \
	'.reason_code == "SPOOFED_SOURCE" and .src_workload == "pa/a" and (.src_addr | startswith("10.244.1.99:"))'
check "a adds b's address to its own interface" \
	ip -n "$(pod_ns ${NS}_a)" addr add 10.244.1.11/32 dev eth0
check_wait "... moatd refuses to learn it (it is b's)" 10 \
	grep -q "pod $NS/a: address 10.244.1.11 on eth0 belongs to" "$(agent_dir node1)/moatd.log"
check_counted "a sending as b (10.244.1.11) is dropped" spoofed_dropped forged_from a 10.244.1.11
# a raw-socket SYN with a forged source (what a pod with NET_RAW can do without any address)
RAW=$E2E_TMP/raw_syn.py
cat >"$RAW" <<'PY'
import socket, struct, sys
src, dst, dport = sys.argv[1], sys.argv[2], int(sys.argv[3])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
tcp = struct.pack("!HHLLBBHHH", 40404, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3):
    s.sendto(ip + tcp, (dst, 0))
PY
check_counted "a raw-socket SYN from a forged 10.244.1.77 is dropped on the node's end" spoofed_dropped \
	lab_exec a python3 "$RAW" 10.244.1.77 10.244.2.50 7000
check "a (NET_ADMIN) removes every TC filter and qdisc on its own interface" sh -c "
	ip netns exec $(pod_ns ${NS}_a) tc qdisc del dev eth0 clsact 2>/dev/null; true"
check_counted "... and sending from 10.244.1.99 is still dropped" spoofed_dropped forged_from a 10.244.1.99
check "b removes its own TC too" sh -c "ip netns exec $(pod_ns ${NS}_b) tc qdisc del dev eth0 clsact 2>/dev/null; true"
check_counted "... and outsider -> b:8080 plaintext is still dropped" plaintext_dropped \
	connect_result_is outsider 10.244.1.11:8080 ETIMEDOUT

status_json() { moatctl_on node1 status --output json; }
check_json "moatctl status shows the new counters" "$(status_json)" '.bpf.spoofed_dropped > 0' \
	'.bpf.plaintext_dropped > 0' '.bpf.unknown_dst_dropped >= 0' '.bpf.plaintext_no_listener == 0'
check_match "... and the metrics too" 'moat_bpf_spoofed_dropped_total [1-9]' \
	"$(sleep 2.5; node_exec node1 curl -sf -m 2 http://127.0.0.1:15020/metrics)"

# ---------------------------------------------------------------- (d) PERMISSIVE while moatd is down
check_connect_ok "outsider -> PERMISSIVE p:8080 plaintext goes through 15006 (allowed)" outsider 10.244.1.12:8080 1024
probe_connect outsider 10.244.1.12:9090 --send-bytes 1024 --timeout 2 >/dev/null 2>&1
check_wait "outsider -> p:9090 is refused by p's policy at 15006 (deny record)" 5 deny_logged \
	'.dst_addr == "10.244.1.12:9090" and (.src_addr | startswith("10.244.2.50:"))'
accepted_9090() { probe_log p 9090 | grep -c '"event":"conn"'; }
check_eq "... p's app on 9090 saw nothing" 0 "$(accepted_9090)"
pid=$(agent_pid node1)
kill -KILL "$pid"
wait "$pid" 2>/dev/null
check_fails "moatd is gone (SIGKILL)" kill -0 "$pid"
check_counted "while moatd is down, outsider -> p:9090 is refused, not let through" plaintext_no_listener \
	connect_result_is outsider 10.244.1.12:9090 ECONNREFUSED
check_eq "... p's app on 9090 still saw nothing" 0 "$(accepted_9090)"
check_counted "... and outsider -> p:8080 is refused too (fail closed)" plaintext_no_listener \
	connect_result_is outsider 10.244.1.12:8080 ECONNREFUSED
check_counted "... STRICT b still drops plaintext" plaintext_dropped \
	connect_result_is outsider 10.244.1.21:8080 ETIMEDOUT
rm -f "$(agent_dir node1)/moatd.pid"
E2E_AGENTS=()
start_agent node1
check "a new moatd is ready" wait_ready node1 30
check_wait "... it took the pods back" 10 sh -c "[ \$(grep -c 'taken back from the previous agent' $(agent_dir node1)/moatd.log) -ge 3 ]"
check_counted "outsider -> p:8080 flows through 15006 again" plaintext_redirected \
	connect_is_ok outsider 10.244.1.12:8080
check_wait "... b's second address is learned again" 10 sh -c \
	"[ \$(grep -c 'pod $NS/b: learned address 10.244.1.21' $(agent_dir node1)/moatd.log) -ge 2 ]"
check_connect_denied "... and a -> b's second address is denied again" a 10.244.1.21:8080

e2e_finish
