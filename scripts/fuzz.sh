#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for SECONDS (default 10) on nightly,
# from the committed seed corpus fuzz/corpus/TARGET. Installs cargo-fuzz
# (cached under ~/.cache/memleak/cargo-fuzz) and the nightly toolchain when
# missing. New corpus entries go to a scratch directory, so the committed
# corpus never grows (set MEMLEAK_FUZZ_WORK=DIR to keep them in DIR/TARGET
# across runs). Exits non-zero when a target crashes, naming the input that
# did it (under fuzz/artifacts/TARGET/).
#
# Targets are built without a sanitizer (safe Rust: panics and overflow
# checks are what is looked for) unless FUZZ_SANITIZER=address.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-10}
shift || true
case $seconds in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

cache=$HOME/.cache/memleak
fuzz_root=$cache/cargo-fuzz
export PATH=$fuzz_root/bin:$PATH
export CARGO_TARGET_DIR=$cache/fuzz-target
sanitizer=${FUZZ_SANITIZER:-none}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "== installing the nightly toolchain" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz into $fuzz_root" >&2
    start=$SECONDS
    cargo install cargo-fuzz --locked --root "$fuzz_root"
    echo "cargo-fuzz installed in $((SECONDS - start)) s" >&2
fi

cd "$root"
# Longest input each target is given: a few times its largest seed.
max_len() {
    case $1 in
    record_decode) echo 16384 ;;
    elf_parse) echo 131072 ;;
    mips_prologue) echo 4096 ;;
    *) echo 65536 ;;
    esac
}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== building ${targets[*]} (sanitizer: $sanitizer)" >&2
start=$SECONDS
for t in "${targets[@]}"; do
    cargo +nightly fuzz build -s "$sanitizer" "$t"
done
echo "fuzz targets built in $((SECONDS - start)) s" >&2

if [ -n "${MEMLEAK_FUZZ_WORK:-}" ]; then
    work=$MEMLEAK_FUZZ_WORK
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi

failed=()
for t in "${targets[@]}"; do
    seeds=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    mkdir -p "$work/$t" "$artifacts"
    echo "== fuzzing $t for $seconds s" >&2
    stamp=$work/$t.start
    touch "$stamp"
    # libFuzzer writes new inputs to the first corpus directory only.
    status=0
    cargo +nightly fuzz run -s "$sanitizer" "$t" "$work/$t" "$seeds" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 || status=$?
    crashes=$(find "$artifacts" -type f -newer "$stamp")
    echo "$t: corpus $(find "$seeds" -type f | wc -l) seeds + $(find "$work/$t" -type f | wc -l) new inputs" >&2
    if [ "$status" -ne 0 ] || [ -n "$crashes" ]; then
        echo "FUZZ FAILURE in $t (exit $status); crash inputs:" >&2
        echo "${crashes:-  (none written)}" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets that crashed: ${failed[*]} (reproduce: cargo +nightly fuzz run -s $sanitizer TARGET FILE)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran $seconds s each without a crash"
