#!/usr/bin/env bash
# Install the Debian packages moat needs to build, test and demo, when any is missing.
# Idempotent and quick when everything is present (one dpkg-query).
set -euo pipefail

BUILD_PKGS=(make gcc clang llvm pkg-config bpftool libbpf-dev libelf-dev zlib1g-dev
            libssl-dev libyaml-dev libnghttp2-dev)
# make fuzz and the fuzz test layer: clang with the libFuzzer runtime (libclang_rt.fuzzer).
BUILD_PKGS+=(libclang-rt-14-dev)
RUN_PKGS=(iproute2 procps psmisc util-linux openssl curl socat netcat-openbsd iperf3
          tcpdump dnsmasq-base nodejs nghttp2-client ca-certificates jq bc python3)
# The kernel layer (tests/vm/run) boots Debian's own kernel under QEMU: qemu, the kernel
# image and its modules, busybox-static and cpio for the guest's initramfs. linux-image-amd64
# puts a kernel into the host's /boot and /lib/modules; that is harmless here (these machines
# boot their own kernel, not from /boot): the layer only reads those files.
RUN_PKGS+=(qemu-system-x86 linux-image-amd64 busybox-static cpio)
# `deps.sh bench` (bench/run): also the peers `make bench` measures moat against and the
# profiler; `make test` does not need them.
BENCH_PKGS=(haproxy stunnel4 linux-perf)
[ "${1:-}" = bench ] && RUN_PKGS+=("${BENCH_PKGS[@]}")

missing=()
for p in "${BUILD_PKGS[@]}" "${RUN_PKGS[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing Debian packages: ${missing[*]}" >&2
	echo "deps: run 'make deps' as root (apt-get install) or install them yourself" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/moat-deps.log 2>&1; then
	apt-get update >>/tmp/moat-deps.log 2>&1 || true
	if ! apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/moat-deps.log 2>&1; then
		echo "deps: apt-get install failed; see /tmp/moat-deps.log:" >&2
		tail -20 /tmp/moat-deps.log >&2
		exit 1
	fi
fi
echo "deps: installed"
