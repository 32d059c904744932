#!/usr/bin/env bash
# Builds the big-endian MIPS (Malta, MIPS32r2) kernel of the QEMU test matrix
# from Debian's linux-source-6.1: Debian ships no big-endian MIPS kernel.
# scripts/qemu/run uses the prebuilt ../shared/kernels/vmlinux-<ver>-malta-be.gz
# (targets/mips.toml `kernel`) when it is there, and this script otherwise.
#
# Usage: scripts/qemu/build-mips-be-kernel.sh [--config-only] [OUT_DIR]
#   OUT_DIR defaults to $HOME/.cache/memleak/qemu/kernels (MEMLEAK_QEMU_CACHE).
#   Writes OUT_DIR/vmlinux-<version>-malta-be.gz (gzip'd, stripped ELF vmlinux,
#   for `qemu-system-mips -M malta -kernel`) and OUT_DIR/config-<version>-malta-be.
#   --config-only stops after writing the config (seconds instead of ~20 min).
#
# The recipe: malta_defconfig, big endian, no modules (in 6.1 the MIPS BPF JIT
# needs MODULES, so BPF runs in the interpreter, as on many boards), BPF
# syscall and events, uprobes and uprobe events, kprobes, perf events,
# ftrace/tracefs, debugfs, initramfs (gzip), devtmpfs, 8250 serial console;
# without debug info, netfilter, wireless, sound, DRM, USB and media.
set -euo pipefail
cache=${MEMLEAK_QEMU_CACHE:-$HOME/.cache/memleak/qemu}
config_only=0
if [ "${1:-}" = --config-only ]; then
    config_only=1
    shift
fi
out=${1:-$cache/kernels}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
cross=mips-linux-gnu-

pkgs=(linux-source-6.1 gcc-mips-linux-gnu make bc flex bison xz-utils gzip python3 libssl-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "build-mips-be-kernel: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

tarball=$(find /usr/src -maxdepth 1 -name 'linux-source-6.1.tar.*' | head -1)
[ -n "$tarball" ] || { echo "build-mips-be-kernel: no /usr/src/linux-source-6.1.tar.* (linux-source-6.1)" >&2; exit 1; }
# Keyed by the source package's version: a new one extracts afresh.
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
build=$cache/build/mips-be-kernel/$srcver
src=$build/linux-source-6.1
if [ ! -f "$build/.extracted" ]; then
    echo "build-mips-be-kernel: extracting $tarball ($srcver)" >&2
    rm -rf "$build"
    mkdir -p "$build"
    tar -xf "$tarball" -C "$build"
    touch "$build/.extracted"
fi

make_k() { make -C "$src" ARCH=mips CROSS_COMPILE=$cross "$@"; }
make_k -s malta_defconfig
cfg=(scripts/config --file "$src/.config")
(cd "$src" && "${cfg[@]}" \
    --disable CPU_LITTLE_ENDIAN --enable CPU_BIG_ENDIAN \
    --disable MODULES \
    --enable BPF_SYSCALL --enable BPF_EVENTS \
    --enable UPROBES --enable UPROBE_EVENTS --enable KPROBES --enable KPROBE_EVENTS \
    --enable PERF_EVENTS --enable FTRACE --enable DEBUG_FS \
    --enable BLK_DEV_INITRD --enable RD_GZIP \
    --enable DEVTMPFS --enable DEVTMPFS_MOUNT \
    --enable SERIAL_8250 --enable SERIAL_8250_CONSOLE \
    --disable DEBUG_INFO --enable DEBUG_INFO_NONE \
    --disable NETFILTER --disable WIRELESS --disable WLAN --disable CFG80211 --disable MAC80211 \
    --disable SOUND --disable DRM --disable USB --disable USB_SUPPORT \
    --disable MEDIA_SUPPORT)
make_k -s olddefconfig

# olddefconfig drops what has unmet dependencies: check what the tests need.
need=(CPU_BIG_ENDIAN BPF_SYSCALL BPF_EVENTS UPROBES UPROBE_EVENTS PERF_EVENTS FTRACE DEBUG_FS
      BLK_DEV_INITRD RD_GZIP DEVTMPFS SERIAL_8250_CONSOLE)
bad=()
for o in "${need[@]}"; do grep -qx "CONFIG_$o=y" "$src/.config" || bad+=("$o"); done
if grep -qx 'CONFIG_MODULES=y' "$src/.config"; then bad+=("MODULES (should be off)"); fi
if [ ${#bad[@]} -gt 0 ]; then
    echo "build-mips-be-kernel: the config lacks: ${bad[*]}" >&2
    exit 1
fi
for o in KPROBES KPROBE_EVENTS; do
    grep -qx "CONFIG_$o=y" "$src/.config" || echo "build-mips-be-kernel: note: CONFIG_$o is not set (not needed)" >&2
done

version=$(make_k -s kernelversion)
mkdir -p "$out"
cp "$src/.config" "$out/config-$version-malta-be"
if [ $config_only -eq 1 ]; then
    echo "$out/config-$version-malta-be"
    exit 0
fi

start=$SECONDS
echo "build-mips-be-kernel: building $version (make -j$(nproc) vmlinux)" >&2
make_k -s -j"$(nproc)" vmlinux
"${cross}strip" -o "$build/vmlinux.stripped" "$src/vmlinux"
gzip -9 -c "$build/vmlinux.stripped" >"$out/vmlinux-$version-malta-be.gz.tmp"
mv "$out/vmlinux-$version-malta-be.gz.tmp" "$out/vmlinux-$version-malta-be.gz"
echo "build-mips-be-kernel: built in $((SECONDS - start)) s" >&2
echo "$out/vmlinux-$version-malta-be.gz"
