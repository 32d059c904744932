#!/usr/bin/env bash
# shellcheck disable=SC2154 # t_* variables are set by target_load (scripts/targets.sh)
# Runs the unwinder's whole test suite (unit tests for every architecture and
# the offline fixture tests for every target) natively on each target in
# targets/*.toml under qemu-user: the test binaries are static musl
# executables linked by zig cc, run through qemu-<arch>(-static). The BPF
# crate's tests run there too: its embedded object must have the target's
# byte order (bpfeb on mips, bpfel elsewhere).
#
# Usage: scripts/test-cross.sh [TARGET...|all]   (default: all but the host)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/targets.sh
. "$root/scripts/targets.sh"
cache=${MEMLEAK_CACHE:-$HOME/.cache/memleak}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
export PATH=$HOME/.local/bin:$PATH

[ $# -gt 0 ] || set -- all
mapfile -t files < <(target_files "$@")
names=()
for f in "${files[@]}"; do names+=("$(basename "$f" .toml)"); done
"$root/scripts/deps.sh" "${names[@]}"

mkdir -p "$cache/zig-linkers"
cd "$root"
for f in "${files[@]}"; do
    target_load "$f"
    if [ "$t_name" = "$(uname -m)" ]; then
        continue # the host runs the suite natively in scripts/test.sh
    fi
    u=$(echo "$t_triple" | tr 'a-z-' 'A-Z_')
    arch=${t_triple%%-*}
    zig_target=$arch-linux-musl
    case $arch in mips*) zig_target=$arch-linux-musleabi ;; esac
    linker=$cache/zig-linkers/$t_name.sh
    printf '#!/bin/sh\nexec cargo-zigbuild zig cc -- -g -fno-sanitize=all -target %s "$@"\n' "$zig_target" >"$linker"
    chmod +x "$linker"
    runner=$t_qemu_user
    command -v "$runner" >/dev/null || runner=$runner-static
    export "CARGO_TARGET_${u}_LINKER=$linker"
    export "CARGO_TARGET_${u}_RUNNER=$runner"
    export "CARGO_TARGET_${u}_RUSTFLAGS=-C target-feature=+crt-static -C link-self-contained=no"
    echo "== unwinder suite on $t_name ($t_triple, under $runner)" >&2
    if [ "$t_build_std" = true ]; then
        cargo +nightly test --locked -Zbuild-std -p memleak-unwind-arch -p memleak-bpf --target "$t_triple"
    else
        cargo +"$t_toolchain" test --locked -p memleak-unwind-arch -p memleak-bpf --target "$t_triple"
    fi
done
