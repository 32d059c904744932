#!/usr/bin/env bash
# Installs what the QEMU kernel test matrix (scripts/qemu/run) needs on the
# host, Debian 12 (idempotent; no network when nothing is missing):
# - qemu-system-{x86,arm,mips} 10 from bookworm-backports: it matches the
#   qemu-utils 10 that may be preinstalled (bookworm's own 7.2 conflicts);
# - cpio, gzip, python3 (check.py), the C cross compilers of the targets.
# Kernels and busybox for the guests are not host packages: scripts/qemu/run
# downloads them for the guest's architecture into its cache.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

backports=bookworm-backports
list=/etc/apt/sources.list.d/memleak-$backports.list
have_backports() {
    grep -rqsE "^[^#]*deb(\.debian\.org)?.*$backports|^Suites:.*$backports" \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# Major version of an installed package (1:10.0.2+ds-... -> 10).
major() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null | sed -E 's/^[0-9]+://; s/[.+~-].*//'; }

qemu_pkgs=(qemu-system-x86 qemu-system-arm qemu-system-mips)
plain_pkgs=(cpio gzip python3 file binutils gcc-aarch64-linux-gnu libc6-dev-arm64-cross
            gcc-mipsel-linux-gnu libc6-dev-mipsel-cross gcc-mips-linux-gnu libc6-dev-mips-cross)

missing_qemu=()
for p in "${qemu_pkgs[@]}"; do
    if ! installed "$p" || [ "$(major "$p")" -lt 10 ]; then missing_qemu+=("$p"); fi
done
missing=()
for p in "${plain_pkgs[@]}"; do installed "$p" || missing+=("$p"); done

if [ ${#missing_qemu[@]} -gt 0 ] && ! have_backports; then
    echo "deps: adding $backports to $list" >&2
    echo "deb http://deb.debian.org/debian $backports main" | $sudo tee "$list" >/dev/null
fi
if [ ${#missing_qemu[@]} -gt 0 ] || [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]} ${missing_qemu[*]}" >&2
    $sudo apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ${#missing_qemu[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -t "$backports" \
        --no-install-recommends "${missing_qemu[@]}" >/dev/null
fi
for b in qemu-system-x86_64 qemu-system-aarch64 qemu-system-mipsel qemu-system-mips cpio python3; do
    command -v "$b" >/dev/null || { echo "deps: $b not found after install" >&2; exit 1; }
done
