#!/usr/bin/env bash
# Runs the whole test suite (installs what it needs first): formatting,
# clippy, unit tests, the end-to-end tests that load BPF and attach to real
# processes (root), and the fully static musl build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/memleak/target}
cd "$root"

echo "== cargo fmt" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --locked --workspace --all-targets -- -D warnings

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -E env PATH=$PATH"
echo "== cargo test (the e2e tests load BPF: root)" >&2
$sudo cargo test --locked --workspace

echo "== the e2e tests once more with the fallbacks for older kernels forced (perf buffer, bpf_probe_read, a link per probe)" >&2
$sudo env MEMLEAK_EVENTS=perfbuf MEMLEAK_READ_HELPER=legacy MEMLEAK_ATTACH=single cargo test --locked -p memleak-loader --test e2e

echo "== fuzz targets: the recording reader, the ELF/CFI reader, the MIPS prologue analyzer (20 s each)" >&2
"$root/scripts/fuzz.sh" 20

echo "== static builds (all targets)" >&2
# build-static.sh prints `<triple> <path> <size>` per target and checks each
# binary: static, stripped, right machine and byte order, and the embedded
# BPF object's byte order.
"$root/scripts/build-static.sh" all | tee "$CARGO_TARGET_DIR/static-sizes.txt"
bin=$(awk '$1 == "x86_64-unknown-linux-musl" {print $2}' "$CARGO_TARGET_DIR/static-sizes.txt")
# The static binary runs the demo too.
gcc -O2 -g -fomit-frame-pointer -fno-inline -o "$CARGO_TARGET_DIR/leaky-static-check" examples/leaky.c
$sudo "$bin" --format json --output - -- "$CARGO_TARGET_DIR/leaky-static-check" 4 2>/dev/null \
    | grep -q '"function":"alloc_v3"' || { echo "static memleak did not report alloc_v3" >&2; exit 1; }
echo "static memleak (x86_64): demo report OK"

echo "== unwinder suite on every target under qemu-user" >&2
"$root/scripts/test-cross.sh"

echo "== the static binary on real kernels: QEMU-booted x86_64, arm64, mipsel, mips" >&2
"$root/scripts/qemu/run" all
