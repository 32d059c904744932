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

echo "== static build" >&2
bin=$("$root/scripts/build-static.sh" x86_64-unknown-linux-musl)
echo "static memleak for x86_64: $(stat -c %s "$bin") bytes ($bin)"
# The static binary runs the demo too.
gcc -O2 -g -fomit-frame-pointer -fno-inline -o "$CARGO_TARGET_DIR/leaky-static-check" examples/leaky.c
$sudo "$bin" --format json -- "$CARGO_TARGET_DIR/leaky-static-check" 4 2>/dev/null \
    | grep -q '"function":"alloc_v3"' || { echo "static memleak did not report alloc_v3" >&2; exit 1; }
echo "static memleak: demo report OK"
