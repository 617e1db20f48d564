#!/usr/bin/env bash
# Build the vm layer's initramfs: busybox-static, tests/vm/init, and the kernel modules the
# guest needs before its root exists (virtio-pci + 9p for the host root, tls and the
# AES-GCM implementations kTLS uses), each after its dependencies (modinfo -F depends).
# Everything else (veth, sch_ingress, cls_bpf, ...) the guest kernel loads on demand with
# the host's modprobe from /lib/modules on the 9p root.
#   tests/vm/initramfs.sh KVER OUTPUT
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KVER=$1
OUT=$2
MODULES="virtio_pci 9pnet_virtio 9p tls aesni_intel ghash_clmulni_intel gcm"
MODDIR=/lib/modules/$KVER

[ -f "$MODDIR/modules.dep" ] || { echo "initramfs: no $MODDIR/modules.dep (package linux-image-$KVER)" >&2; exit 1; }
BUSYBOX=$(command -v busybox) || { echo "initramfs: busybox not installed (package busybox-static)" >&2; exit 1; }

declare -A seen=()
order=()
add_module() { # depth first: a module's dependencies land in the list before it
	local name=${1//-/_} file dep
	[ -n "${seen[$name]:-}" ] && return 0
	seen[$name]=1
	file=$(modinfo -k "$KVER" -F filename "$name" 2>/dev/null) ||
		{ echo "initramfs: module $name not found for $KVER" >&2; return 1; }
	case "$file" in "" | builtin*) return 0 ;; esac
	for dep in $(modinfo -k "$KVER" -F depends "$name" | tr ',' ' '); do
		add_module "$dep"
	done
	order+=("$file")
}
for m in $MODULES; do add_module "$m"; done

stage=$(mktemp -d "${OUT%/*}/initramfs-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,newroot,lib/modules/"$KVER"}
cp "$BUSYBOX" "$stage/bin/busybox"
for applet in $("$BUSYBOX" --list); do
	[ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
done
ln -s bin "$stage/sbin"
: >"$stage/modules.order"
for f in "${order[@]}"; do
	rel=${f#"$MODDIR"/}
	mkdir -p "$stage/lib/modules/$KVER/$(dirname "$rel")"
	cp "$f" "$stage/lib/modules/$KVER/$rel"
	echo "/lib/modules/$KVER/$rel" >>"$stage/modules.order"
done
install -m 755 "$HERE/init" "$stage/init"
# Device nodes for the console in case devtmpfs cannot be mounted.
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "initramfs: built $OUT ($(stat -c %s "$OUT") bytes) for $KVER, modules:$(sed 's|.*/| |; s|\.ko.*||' "$stage/modules.order" | tr -d '\n')"
