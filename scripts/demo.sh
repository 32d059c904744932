#!/usr/bin/env bash
# The main job: builds memleak and the bundled leaky demo (-O2, no frame
# pointers), then traces the demo and prints its leak report.
# Usage: scripts/demo.sh [memleak options...]   (e.g. --format json)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh" demo   # only what the demo needs: no test tools, no cross toolchains
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/memleak/target}
cd "$root"
cargo build --release --locked -p memleak-loader >&2
out=$CARGO_TARGET_DIR/demo
mkdir -p "$out"
gcc -O2 -g -fomit-frame-pointer -fno-inline -o "$out/leaky" examples/leaky.c
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
exec $sudo "$CARGO_TARGET_DIR/release/memleak" "$@" -- "$out/leaky" 10 50
