#!/usr/bin/env bash
# Builds a big-endian MIPS (Malta, MIPS32r2) kernel of the QEMU test matrix
# from Debian's kernel sources: Debian ships no big-endian MIPS kernel.
# scripts/qemu/run uses the prebuilt ../shared/kernels/vmlinux-<ver>-malta-be.gz
# (targets/mips.toml `kernels`) when it is there, and this script otherwise.
#
# Usage: scripts/qemu/build-mips-be-kernel.sh [--config-only] [VERSION] [OUT_DIR]
#   VERSION: 6.1 (bookworm's linux-source-6.1, the default) or 5.10
#   (bullseye's linux-source-5.10, the kernel of many routers in the field).
#   The source package is downloaded with a private apt state into the cache
#   (scripts/qemu/debian.sh); the host's apt sources are not changed.
#   OUT_DIR defaults to $HOME/.cache/memleak/qemu/kernels (MEMLEAK_QEMU_CACHE).
#   Writes OUT_DIR/vmlinux-<version>-malta-be.gz (gzip'd, stripped ELF vmlinux,
#   for `qemu-system-mips -M malta -kernel`) and OUT_DIR/config-<version>-malta-be.
#   --config-only stops after writing the config (seconds instead of 10-20 min).
#
# The recipe: malta_defconfig, big endian, no modules (in 6.1 the MIPS BPF JIT
# needs MODULES; 5.10 has none for 32-bit MIPS; so BPF runs in the
# interpreter, as on many boards), BPF
# syscall and events, uprobes and uprobe events, kprobes, perf events,
# ftrace/tracefs, debugfs, initramfs (gzip), devtmpfs, 8250 serial console;
# without debug info, netfilter, wireless, sound, DRM, USB and media.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${MEMLEAK_QEMU_CACHE:-$HOME/.cache/memleak/qemu}
log() { echo "build-mips-be-kernel: $*" >&2; }
# shellcheck source=scripts/qemu/debian.sh
. "$here/debian.sh"
config_only=0
if [ "${1:-}" = --config-only ]; then
    config_only=1
    shift
fi
series=6.1
case "${1:-}" in
6.1) series=6.1; shift ;;
5.10) series=5.10; shift ;;
[0-9]*) log "unknown version '$1' (6.1 or 5.10)"; exit 2 ;;
esac
case "$series" in
6.1) suite=bookworm ;;
5.10) suite=bullseye ;;
esac
out=${1:-$cache/kernels}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
cross=mips-linux-gnu-

pkgs=(gcc-mips-linux-gnu make bc flex bison xz-utils gzip python3 libssl-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# linux-source-<series> (architecture all) of the suite, keyed by its version:
# a new one extracts afresh.
get_pkg "$(dpkg --print-architecture)" "$suite" "linux-source-$series" "$cache/sources" \
    "./usr/src/linux-source-$series.tar.*"
srcver=$pkg_ver
debs=$pkg_dir
tarball=$(find "$debs/usr/src" -maxdepth 1 -name "linux-source-$series.tar.*" | head -1)
[ -n "$tarball" ] || { log "no linux-source-$series.tar.* in linux-source-$series $srcver"; exit 1; }
build=$cache/build/mips-be-kernel/$srcver
src=$build/linux-source-$series
if [ ! -f "$build/.extracted" ]; then
    log "extracting $tarball ($srcver)"
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
    log "the config lacks: ${bad[*]}"
    exit 1
fi
for o in KPROBES KPROBE_EVENTS; do
    grep -qx "CONFIG_$o=y" "$src/.config" || log "note: CONFIG_$o is not set (not needed)"
done

version=$(make_k -s kernelversion)
mkdir -p "$out"
cp "$src/.config" "$out/config-$version-malta-be"
if [ $config_only -eq 1 ]; then
    echo "$out/config-$version-malta-be"
    exit 0
fi

start=$SECONDS
log "building $version (make -j$(nproc) vmlinux)"
make_k -s -j"$(nproc)" vmlinux
"${cross}strip" -o "$build/vmlinux.stripped" "$src/vmlinux"
gzip -9 -c "$build/vmlinux.stripped" >"$out/vmlinux-$version-malta-be.gz.tmp"
mv "$out/vmlinux-$version-malta-be.gz.tmp" "$out/vmlinux-$version-malta-be.gz"
log "built in $((SECONDS - start)) s"
echo "$out/vmlinux-$version-malta-be.gz"
