#!/usr/bin/env bash
# Builds a 32-bit MIPS Malta kernel (MIPS32r2, big or little endian) of the
# QEMU test matrix from Debian's kernel sources: Debian ships no big-endian
# MIPS kernel at all, and deb.debian.org no longer carries bullseye's mipsel
# (so no 5.10 4kc-malta kernel). scripts/qemu/run calls it for the kernel
# entries `VERSION build malta` (targets/mipsel.toml) and for a missing
# `VERSION file PATH` on a Malta target (targets/mips.toml); the endianness
# is the target's.
#
# Usage: scripts/qemu/build-malta-kernel.sh [--config-only] [--flavour FLAVOUR] be|le [VERSION] [OUT_DIR]
#   be|le: big endian (qemu-system-mips) or little endian (qemu-system-mipsel).
#   VERSION: 6.1 (bookworm's linux-source-6.1, the default) or 5.10
#   (bullseye's linux-source-5.10, the kernel of many routers in the field).
#   The source package is downloaded with a private apt state into the cache
#   (scripts/qemu/debian.sh); the host's apt sources are not changed.
#   OUT_DIR defaults to $HOME/.cache/memleak/qemu/kernels (MEMLEAK_QEMU_CACHE).
#   Writes OUT_DIR/vmlinux-<version>-malta-<be|le>.gz (gzip'd, stripped ELF
#   vmlinux, for `qemu-system-mips[el] -M malta -kernel`) and
#   OUT_DIR/config-<version>-malta-<be|le>, prints the vmlinux path last and
#   logs the build time.
#   --config-only stops after writing the config (seconds instead of minutes).
#   --flavour no-bpf-events: the same recipe without uprobe and kprobe events
#   (UPROBE_EVENTS, KPROBE_EVENTS, KPROBES off), so without BPF_EVENTS
#   (which has no prompt: it is on whenever BPF_SYSCALL, PERF_EVENTS and
#   kprobe or uprobe events are), as in OpenWrt's stock images; BPF syscall,
#   perf events and debugfs stay (FTRACE too, but with no tracer or probe
#   events left TRACING goes, and tracefs with it). For the matrix's
#   expected-error row (`VERSION build malta no-bpf-events`). Its files and
#   build tree carry the flavour: vmlinux-<version>-malta-<be|le>-no-bpf-events.gz.
#
# The recipe (lean, for a cold cache in CI): malta_defconfig without any of
# its modular drivers (with MODULES off, every `=m` would be built in: file
# systems, SCSI, network drivers...), no modules (in 6.1 the MIPS BPF JIT
# needs MODULES; 5.10 has none for 32-bit MIPS; so BPF runs in the
# interpreter, as on many boards), BPF syscall and events, uprobes and uprobe
# events, kprobes, perf events, ftrace/tracefs, debugfs, initramfs (gzip),
# devtmpfs, 8250 serial console; without debug info, netfilter, wireless,
# sound, DRM, USB, media, network and block drivers, MTD and the disk file
# systems. `make -j$(nproc) vmlinux` only.
#
# Deterministic: the same source package and cross compiler give the same
# vmlinux wherever the cache is (in-tree build, so relative paths; the build
# directory mapped out of the vDSO's debug info; fixed KBUILD_BUILD_TIMESTAMP
# (the source tarball's date), _USER, _HOST and _VERSION; no local version;
# gzip -n). The log ends with the build time and the stripped vmlinux's hash.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${MEMLEAK_QEMU_CACHE:-$HOME/.cache/memleak/qemu}
log() { echo "build-malta-kernel: $*" >&2; }
# shellcheck source=scripts/qemu/debian.sh
. "$here/debian.sh"
usage() { log "usage: build-malta-kernel.sh [--config-only] [--flavour no-bpf-events] be|le [6.1|5.10] [OUT_DIR]"; exit 2; }
config_only=0
flavour=""
while [ $# -gt 0 ]; do
    case "$1" in
    --config-only) config_only=1; shift ;;
    --flavour)
        [ $# -ge 2 ] || usage
        flavour=$2
        shift 2
        ;;
    *) break ;;
    esac
done
case "$flavour" in
"" | no-bpf-events) ;;
*) log "unknown flavour '$flavour' (no-bpf-events)"; exit 2 ;;
esac
case "${1:-}" in
be) endian=be cross=mips-linux-gnu- ;;
le) endian=le cross=mipsel-linux-gnu- ;;
*) usage ;;
esac
shift
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

pkgs=("gcc-${cross%-}" make bc flex bison xz-utils gzip python3 libssl-dev)
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
# One tree per byte order and flavour: switching the config in one tree
# rebuilds it all.
build=$cache/build/malta-kernel/$srcver-$endian${flavour:+-$flavour}
src=$build/linux-source-$series
if [ ! -f "$build/.extracted" ]; then
    log "extracting $tarball ($srcver)"
    rm -rf "$build"
    mkdir -p "$build"
    tar -xf "$tarball" -C "$build"
    touch "$build/.extracted"
fi

# Reproducible: nothing of the build host or the build time in the image.
export KBUILD_BUILD_TIMESTAMP KBUILD_BUILD_USER=memleak KBUILD_BUILD_HOST=qemu-matrix KBUILD_BUILD_VERSION=1
KBUILD_BUILD_TIMESTAMP=$(date -u -d "@$(stat -c %Y "$tarball")" '+%Y-%m-%d %H:%M:%S UTC')
# The vDSO is compiled with -g and linked with a build ID, so the build
# directory would reach the image through its debug info: map it away (the
# vDSO's flags do not take KCFLAGS, hence CC).
make_k() {
    make -C "$src" ARCH=mips CROSS_COMPILE=$cross CC="${cross}gcc -fdebug-prefix-map=$src=." \
        LOCALVERSION= "$@"
}
make_k -s malta_defconfig
# Drop the modular part of the defconfig before MODULES goes off.
sed -i -e 's/^\(CONFIG_[A-Za-z0-9_]*\)=m$/# \1 is not set/' "$src/.config"
if [ $endian = be ]; then
    order=(--disable CPU_LITTLE_ENDIAN --enable CPU_BIG_ENDIAN)
else
    order=(--disable CPU_BIG_ENDIAN --enable CPU_LITTLE_ENDIAN)
fi
cfg=(scripts/config --file "$src/.config")
(cd "$src" && "${cfg[@]}" "${order[@]}" \
    --disable MODULES --disable LOCALVERSION_AUTO \
    --enable BPF_SYSCALL --enable BPF_EVENTS \
    --enable UPROBES --enable UPROBE_EVENTS --enable KPROBES --enable KPROBE_EVENTS \
    --enable PERF_EVENTS --enable FTRACE --enable DEBUG_FS \
    --enable BLK_DEV_INITRD --enable RD_GZIP \
    --enable DEVTMPFS --enable DEVTMPFS_MOUNT --enable TMPFS \
    --enable SERIAL_8250 --enable SERIAL_8250_CONSOLE \
    --disable DEBUG_INFO --enable DEBUG_INFO_NONE \
    --disable NETFILTER --disable WIRELESS --disable WLAN --disable CFG80211 --disable MAC80211 \
    --disable SOUND --disable DRM --disable USB --disable USB_SUPPORT \
    --disable MEDIA_SUPPORT \
    --disable NETDEVICES --disable NET_SCHED --disable IPV6 --disable NET_KEY --disable XFRM_USER \
    --disable MTD --disable SCSI --disable ATA --disable MD --disable BLK_DEV_FD \
    --disable EXT4_FS --disable EXT3_FS --disable EXT2_FS --disable XFS_FS --disable REISERFS_FS \
    --disable JFS_FS --disable BTRFS_FS --disable NFS_FS --disable NFSD --disable CIFS \
    --disable FB --disable VT --disable INPUT_KEYBOARD --disable INPUT_MOUSE)
if [ "$flavour" = no-bpf-events ]; then
    # BPF_EVENTS follows (no prompt of its own).
    (cd "$src" && "${cfg[@]}" --disable UPROBE_EVENTS --disable KPROBE_EVENTS --disable KPROBES \
        --disable BPF_EVENTS)
fi
make_k -s olddefconfig

# olddefconfig drops what has unmet dependencies: check what the tests need.
# (NET stays: libbpf probes features with socket-filter programs, and
# net.core.bpf_jit_enable lives under it.)
if [ $endian = be ]; then need=(CPU_BIG_ENDIAN); else need=(CPU_LITTLE_ENDIAN); fi
need+=(NET BPF_SYSCALL PERF_EVENTS FTRACE DEBUG_FS
       BLK_DEV_INITRD RD_GZIP DEVTMPFS TMPFS SERIAL_8250_CONSOLE)
off=(MODULES)
if [ "$flavour" = no-bpf-events ]; then
    off+=(BPF_EVENTS UPROBE_EVENTS KPROBE_EVENTS)
else
    need+=(BPF_EVENTS UPROBES UPROBE_EVENTS)
fi
bad=()
for o in "${need[@]}"; do grep -qx "CONFIG_$o=y" "$src/.config" || bad+=("$o"); done
for o in "${off[@]}"; do
    if grep -qx "CONFIG_$o=y" "$src/.config"; then bad+=("$o (should be off)"); fi
done
if [ ${#bad[@]} -gt 0 ]; then
    log "the config is wrong: ${bad[*]}"
    exit 1
fi
if [ -z "$flavour" ]; then
    for o in KPROBES KPROBE_EVENTS; do
        grep -qx "CONFIG_$o=y" "$src/.config" || log "note: CONFIG_$o is not set (not needed)"
    done
fi

version=$(make_k -s kernelversion)
name=$version-malta-$endian${flavour:+-$flavour}
mkdir -p "$out"
cp "$src/.config" "$out/config-$name"
if [ $config_only -eq 1 ]; then
    echo "$out/config-$name"
    exit 0
fi

start=$SECONDS
log "building $name from linux-source-$series $srcver (make -j$(nproc) vmlinux)"
make_k -s -j"$(nproc)" vmlinux
"${cross}strip" -o "$build/vmlinux.stripped" "$src/vmlinux"
gzip -9 -n -c "$build/vmlinux.stripped" >"$out/vmlinux-$name.gz.tmp"
mv "$out/vmlinux-$name.gz.tmp" "$out/vmlinux-$name.gz"
log "built $name in $((SECONDS - start)) s, $SECONDS s with the download, extraction and config" \
    "($(sha256sum <"$build/vmlinux.stripped" | cut -c1-16) stripped vmlinux)"
echo "$out/vmlinux-$name.gz"
