#!/usr/bin/env bash
# Builds a big-endian MIPS (Malta, MIPS32r2) kernel: build-malta-kernel.sh be,
# kept under this name for the commands and notes that use it.
#
# Usage: scripts/qemu/build-mips-be-kernel.sh [--config-only] [VERSION] [OUT_DIR]
#   the same as scripts/qemu/build-malta-kernel.sh [--config-only] be [VERSION] [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
opts=()
if [ "${1:-}" = --config-only ]; then
    opts+=(--config-only)
    shift
fi
exec "$here/build-malta-kernel.sh" "${opts[@]}" be "$@"
