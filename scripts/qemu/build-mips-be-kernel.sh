#!/usr/bin/env bash
# Builds a big-endian MIPS (Malta, MIPS32r2) kernel: build-malta-kernel.sh be,
# kept under this name for the commands and notes that use it.
#
# Usage: scripts/qemu/build-mips-be-kernel.sh [--config-only] [--flavour F] [VERSION] [OUT_DIR]
#   the same as scripts/qemu/build-malta-kernel.sh [--config-only] [--flavour F] be [VERSION] [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
opts=()
while [ $# -gt 0 ]; do
    case "$1" in
    --config-only) opts+=("$1"); shift ;;
    --flavour) opts+=("$1" "${2:-}"); shift $(($# >= 2 ? 2 : 1)) ;;
    *) break ;;
    esac
done
exec "$here/build-malta-kernel.sh" "${opts[@]}" be "$@"
