#!/bin/sh
# Stage 2 of the vm layer's guest: PID 1 after switch_root (tests/vm/init), root = the host's
# / read-only over 9p, the repo read-write at its own path, the run share on /run/vm.
# Runs every check of the layer in this one boot and leaves the raw results in /run/vm/out
# for tests/vm/run to judge (it prints the ok/FAIL lines); the console gets progress only.
# Always powers off: PID 1 must never exit.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb LANG=C.UTF-8 SHELL=/bin/sh
. /run/vm/env # VM_REPO VM_BUILD VM_KTLS_BYTES VM_KTLS_TIMEOUT VM_BPF_TIMEOUT VM_HBONE_BYTES
# VM_SKIP_BPF VM_SKIP VM_XNODE_* XNODE_IPERF_SECS
out=/run/vm/out
mkdir -p $out
cut -d' ' -f1 /proc/uptime >$out/stage2-uptime
say() { echo "moat-vm guest: $*"; }

ip link set lo up 2>/dev/null || busybox ip link set lo up
hostname moat-vm 2>/dev/null

# What the tests rely on, as "<name> <yes|no> <detail>" lines.
env_line() { # NAME DETAIL-IF-YES DETAIL-IF-NO COMMAND...
	name=$1 yes=$2 no=$3
	shift 3
	if "$@" >/dev/null 2>&1; then echo "$name yes $yes"; else echo "$name no $no"; fi >>$out/env
}
env_probe() {
	uname -r >$out/uname
	env_line bpffs /sys/fs/bpf "/sys/fs/bpf is not a bpf filesystem" \
		test "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" = bpf_fs
	cg=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
	env_line cgroup2 "$cg" "no cgroup2 in /proc/mounts" test -n "$cg"
	env_line btf /sys/kernel/btf/vmlinux "no /sys/kernel/btf/vmlinux" test -r /sys/kernel/btf/vmlinux
	env_line tls-module "tls.ko loaded" "tls.ko not loaded (see the console for insmod errors)" \
		test -d /sys/module/tls
	env_line iproute2 "$(command -v ip)" "no ip on the host root" command -v ip
}
env_probe

cd "$VM_REPO" || say "cannot cd to $VM_REPO"
# VM_SKIP: checks left out of this boot (bench/vm runs only the cross-node one).
skipped() { case " ${VM_SKIP:-} " in *" $1 "*) return 0 ;; esac; return 1; }

if ! skipped ktls; then
	say "kernel $(uname -r), stage 2 at $(cat $out/stage2-uptime) s; running ktls-check"
	timeout -k 5 "$VM_KTLS_TIMEOUT" "$VM_BUILD/tests/ktls-check" --bytes "$VM_KTLS_BYTES" \
		>$out/ktls.json 2>$out/ktls.err
	echo $? >$out/ktls.rc
	cat /proc/net/tls_stat >$out/tls_stat 2>&1
fi

# Cross-node HBONE through two moatds in one two-node lab (tests/vm/cross_node.sh), with the
# default engines and then with --engine userspace.
say "running the cross-node e2e ($VM_XNODE_MODES; $VM_XNODE_BYTES bytes each way)"
t0=$(cut -d' ' -f1 /proc/uptime)
# shellcheck disable=SC2086 # the modes are words
BUILD=$VM_BUILD XNODE_BYTES=$VM_XNODE_BYTES XNODE_IPERF_SECS=${XNODE_IPERF_SECS:-0} timeout -k 10 "$VM_XNODE_TIMEOUT" \
	bash tests/vm/cross_node.sh $VM_XNODE_MODES >$out/xnode.out 2>&1
echo $? >$out/xnode.rc
echo "$t0 $(cut -d' ' -f1 /proc/uptime)" >$out/xnode.time

# moat's own HBONE code on kTLS (tests/tools/hbone-ktls.c): a moat pair, moat's client
# against Node's http2 server (session tickets), and a peer KeyUpdate mid-stream.
hbone_ktls() { # NAME ARGS...
	name=$1
	shift
	say "running hbone-ktls $name"
	timeout -k 5 "$VM_KTLS_TIMEOUT" "$VM_BUILD/tests/hbone-ktls" "$@" --bytes "$VM_HBONE_BYTES" \
		--timeout $((VM_KTLS_TIMEOUT - 10)) >$out/hbone-$name.json 2>$out/hbone-$name.err
	echo $? >$out/hbone-$name.rc
}
if ! skipped hbone; then
	hbone_ktls pair pair
	hbone_ktls node node --script tests/interop/h2_server.js
	hbone_ktls node-client node-client --script tests/interop/h2_client.js # Node client -> moat server
	hbone_ktls keyupdate pair --key-update
	hbone_ktls pair-userspace pair --no-ktls # a figure only: the same pair on OpenSSL
fi

if [ -z "${VM_SKIP_BPF:-}" ] && ! skipped bpf; then
	say "running the BPF layer (tests/bpf/run, $VM_BUILD/tests/bpf_tests)"
	t0=$(cut -d' ' -f1 /proc/uptime)
	MOAT_BUILD=$VM_BUILD timeout -k 5 "$VM_BPF_TIMEOUT" bash tests/bpf/run >$out/bpf.out 2>&1
	echo $? >$out/bpf.rc
	echo "$t0 $(cut -d' ' -f1 /proc/uptime)" >$out/bpf.time
fi

say "done at $(cut -d' ' -f1 /proc/uptime) s"
echo ok >$out/done
sync
busybox poweroff -f 2>/dev/null || poweroff -f 2>/dev/null
echo o >/proc/sysrq-trigger
sleep 10
