#!/usr/bin/env bash
# Installs what building and testing memleak needs on Debian 12 (idempotent):
# apt packages, the rustup target for static builds, rustfmt and clippy.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

pkgs=(clang llvm libelf-dev zlib1g-dev autoconf automake autopoint libtool flex bison gawk
      gettext pkg-config make gcc g++ musl-tools valgrind file libc6-dbg)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "deps: cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >&2
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl >&2

# BPF and uprobes need tracefs/debugfs on some kernels.
mountpoint -q /sys/kernel/tracing 2>/dev/null || $sudo mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mountpoint -q /sys/kernel/debug 2>/dev/null || $sudo mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
