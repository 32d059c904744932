#!/usr/bin/env bash
# shellcheck disable=SC2154 # t_* variables are set by target_load (scripts/targets.sh)
# Builds the fully static, stripped `memleak` for musl targets described in
# targets/*.toml: libbpf, libelf and zlib are vendored and linked in.
#
# Usage: scripts/build-static.sh [TARGET...|all]    (default: x86_64)
#   TARGET is a name from targets/ (x86_64, aarch64, mipsel, mips) or its
#   Rust triple (x86_64-unknown-linux-musl, ...).
# Prints one line per target on stdout: `<triple> <path> <size-in-bytes>`.
# Installs what is missing through scripts/deps.sh; every download and build
# goes under $HOME/.cache/memleak (MEMLEAK_CACHE), cargo's output under
# $CARGO_TARGET_DIR (default $HOME/.cache/memleak/target).
#
# How each kind of target is built:
# - x86_64 (builder "cargo", cc "musl-gcc"): the stable musl target, musl-gcc
#   for the C code with the host's kernel headers next to musl's.
# - aarch64 (builder "zigbuild"): cargo-zigbuild, zig cc compiles and links.
# - mipsel, mips (tier 3): nightly with -Zbuild-std, zigbuild, +crt-static;
#   libbpf-sys generates its bindings for the 32-bit target (bindgen against
#   the Debian cross libc headers, see crates/loader/Cargo.toml).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/targets.sh
. "$root/scripts/targets.sh"
cache=${MEMLEAK_CACHE:-$HOME/.cache/memleak}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}

[ $# -gt 0 ] || set -- x86_64
target_files "$@" >/dev/null || exit 2
files=()
mapfile -t files < <(target_files "$@")
names=()
for f in "${files[@]}"; do names+=("$(basename "$f" .toml)"); done
"$root/scripts/deps.sh" "${names[@]}"

# elfutils includes argp.h (color.c, printversion.c), which musl lacks; the
# library part that libbpf needs never calls it.
write_argp_stub() {
    cat > "$1/argp.h" <<'ARGP'
/* The part of glibc's argp.h that elfutils' lib/color.c and printversion.c
 * compile against; libelf never calls into it. */
#ifndef MEMLEAK_ARGP_STUB_H
#define MEMLEAK_ARGP_STUB_H
#include <errno.h>
#include <stdio.h>
typedef int error_t;
struct argp_state;
struct argp_child;
struct argp_option {
    const char *name;
    int key;
    const char *arg;
    int flags;
    const char *doc;
    int group;
};
typedef error_t (*argp_parser_t)(int key, char *arg, struct argp_state *state);
struct argp {
    const struct argp_option *options;
    argp_parser_t parser;
    const char *args_doc;
    const char *doc;
    const struct argp_child *children;
    char *(*help_filter)(int key, const char *text, void *input);
    const char *argp_domain;
};
struct argp_child {
    const struct argp *argp;
    int flags;
    const char *header;
    int group;
};
struct argp_state {
    const struct argp *root_argp;
    int argc;
    char **argv;
    int next;
    unsigned flags;
    unsigned arg_num;
    int quoted;
    void *input;
    void **child_inputs;
    void *hook;
    char *name;
    FILE *err_stream;
    FILE *out_stream;
    void *pstate;
};
#define OPTION_ARG_OPTIONAL 0x1
#define OPTION_HIDDEN 0x2
#define OPTION_ALIAS 0x4
#define OPTION_DOC 0x8
#define ARGP_ERR_UNKNOWN E2BIG
#define ARGP_KEY_ARG 0
#define ARGP_KEY_END 0x1000001
#define ARGP_KEY_INIT 0x1000003
#define ARGP_HELP_SEE 0x04
static inline void argp_help(const struct argp *a, FILE *s, unsigned f, char *n)
{
    (void)a; (void)s; (void)f; (void)n;
}
#endif
ARGP
}

# ELF header field: elf_field FILE OFFSET SIZE ENDIAN -> unsigned value
elf_field() {
    local bytes v=0 b
    read -r -a bytes < <(od -An -tu1 -j"$2" -N"$3" "$1")
    local i n=${#bytes[@]}
    for ((i = 0; i < n; i++)); do
        if [ "$4" = big ]; then b=${bytes[i]}; else b=${bytes[n - 1 - i]}; fi
        v=$((v * 256 + b))
    done
    echo "$v"
}

# The ELF's byte order and e_machine must be the target's.
check_elf() { # FILE ENDIAN MACHINE WHAT
    local data want_data=1 machine
    [ "$2" = big ] && want_data=2
    data=$(od -An -tu1 -j5 -N1 "$1" | tr -d ' ')
    machine=$(elf_field "$1" 18 2 "$2")
    if [ "$data" != "$want_data" ] || [ "$machine" != "$3" ]; then
        echo "build-static.sh: $4 $1 is not a $2-endian ELF for machine $3 (EI_DATA $data, e_machine $machine)" >&2
        return 1
    fi
}

build_one() { # target file; runs in a subshell (exports stay per target)
    target_load "$1"
    local triple=$t_triple u inc
    u=${triple//-/_}
    inc=$cache/musl-include/$t_name
    mkdir -p "$inc"
    write_argp_stub "$inc"
    export "CFLAGS_$u=-I$inc"
    case "$t_cc" in
    musl-gcc)
        # musl-gcc sees only musl's headers: give it the kernel's (linux/, asm/, asm-generic/).
        local usr=/usr/include asm=/usr/include/$t_gnu_triple/asm
        [ "$t_sysroot" = / ] || { usr=$t_sysroot/include; asm=$usr/asm; }
        ln -sfn "$usr/linux" "$inc/linux"
        ln -sfn "$asm" "$inc/asm"
        ln -sfn "$usr/asm-generic" "$inc/asm-generic"
        export "CC_$u=musl-gcc"
        ;;
    zig) ;; # cargo-zigbuild sets CC_<triple>; zig brings musl and kernel headers.
    *)
        echo "build-static.sh: $1: unknown cc '$t_cc'" >&2
        return 1
        ;;
    esac
    # elfutils' configure looks for libargp/libfts/libobstack, absent on musl.
    export ac_cv_search_argp_parse="none required"
    export ac_cv_search_fts_close="none required"
    export ac_cv_search__obstack_free="none required"
    local kv
    for kv in ${t_c_env[@]+"${t_c_env[@]}"}; do export "${kv?}"; done
    if [ -n "${t_rustflags-}" ]; then
        export "CARGO_TARGET_${u^^}_RUSTFLAGS=$t_rustflags"
    fi
    if [ "$t_pointer_width" = 32 ]; then
        # libbpf-sys' bindgen: the target's C types (32-bit long and pointers).
        export "BINDGEN_EXTRA_CLANG_ARGS_$u=--sysroot=$t_sysroot -I$t_sysroot/include"
    fi

    local cargo=(cargo) cmd
    [ "$t_toolchain" = stable ] || cargo+=("+$t_toolchain")
    case "$t_builder" in
    cargo) cmd=build ;;
    zigbuild)
        cmd=zigbuild
        PATH="$(python3 -m site --user-base)/bin:$PATH"
        # The pinned zig from deps.sh, and its caches under ours.
        CARGO_ZIGBUILD_ZIG_PATH=$(python3 -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
        export CARGO_ZIGBUILD_ZIG_PATH
        export CARGO_ZIGBUILD_CACHE_DIR=$cache/cargo-zigbuild
        export ZIG_GLOBAL_CACHE_DIR=$cache/zig
        export ZIG_LOCAL_CACHE_DIR=$cache/zig
        ;;
    *)
        echo "build-static.sh: $1: unknown builder '$t_builder'" >&2
        return 1
        ;;
    esac
    # The device's binary leaves out what only a host needs (debuginfod: HTTP
    # and TLS); compressed DWARF and MiniDebugInfo stay (sizes in README).
    # MEMLEAK_STATIC_FEATURES overrides the features (to measure them).
    local args=(--release --locked --target "$triple" -p memleak-loader
        --no-default-features --features "${MEMLEAK_STATIC_FEATURES:-compressed-debug,minidebuginfo}")
    [ "$t_build_std" != true ] || args+=("-Zbuild-std=std,panic_abort")

    cd "$root"
    local start=$SECONDS
    echo "build-static.sh: $triple: ${cargo[*]} $cmd ${args[*]}" >&2
    if ! "${cargo[@]}" "$cmd" "${args[@]}" >&2; then
        echo "build-static.sh: $triple: build failed. If libbpf-sys failed in its configure or make" \
            "step, the source tree it builds in may be left dirty: remove" \
            "\${CARGO_HOME:-\$HOME/.cargo}/registry/src/*/libbpf-sys-* (cargo extracts it again) and retry." >&2
        return 1
    fi
    echo "build-static.sh: $triple: built in $((SECONDS - start)) s" >&2
    # libbpf-sys 1.7.0 with `bindgen` asks to rerun its build script when the
    # bindings.rs it writes into OUT_DIR changes; written during that run, it is
    # always newer than the run's start that cargo compares with, so every build
    # would redo libelf and libbpf (over a minute). Its content follows from
    # inputs cargo tracks anyway: date it back to before the run.
    local b ref
    for b in "$CARGO_TARGET_DIR/$triple"/release/build/libbpf-sys-*/out/bindings.rs; do
        ref=${b%/out/bindings.rs}/output
        if [ -f "$b" ] && [ -f "$ref" ] && [ "$b" -nt "$ref" ]; then
            touch -d "@$(($(stat -c %Y "$ref") - 1))" "$b"
        fi
    done

    local bin=$CARGO_TARGET_DIR/$triple/release/memleak desc
    desc=$(file -b "$bin")
    if ! grep -qE 'static(-pie)? linked|statically linked' <<<"$desc"; then
        echo "build-static.sh: $bin is not statically linked: $desc" >&2
        return 1
    fi
    if grep -q 'not stripped' <<<"$desc"; then
        echo "build-static.sh: $bin is not stripped: $desc" >&2
        return 1
    fi
    check_elf "$bin" "$t_endian" "$t_elf_machine" binary
    local size
    size=$(stat -c %s "$bin")
    if [ -n "${t_max_bytes-}" ] && [ "$size" -gt "$t_max_bytes" ]; then
        echo "build-static.sh: $bin is $size bytes, over the target's max_bytes ($t_max_bytes)" >&2
        return 1
    fi
    # The BPF object memleak-bpf built for this target (EM_BPF = 247) has the
    # target's byte order, and it is the one embedded in the binary.
    local obj
    # shellcheck disable=SC2012 # cargo's paths have no blanks
    obj=$(ls -t "$CARGO_TARGET_DIR/$triple"/release/build/memleak-bpf-*/out/memleak.bpf.o 2>/dev/null | head -1)
    if [ -z "$obj" ]; then
        echo "build-static.sh: $triple: no memleak.bpf.o under $CARGO_TARGET_DIR/$triple/release/build" >&2
        return 1
    fi
    check_elf "$obj" "$t_endian" 247 "BPF object"
    if command -v python3 >/dev/null &&
        ! python3 -c 'import sys; sys.exit(open(sys.argv[2], "rb").read() not in open(sys.argv[1], "rb").read())' "$bin" "$obj"; then
        echo "build-static.sh: $bin does not embed $obj" >&2
        return 1
    fi
    echo "$triple $bin $(stat -c %s "$bin")"
}

failed=()
for f in "${files[@]}"; do
    # A subshell per target, with errexit in force inside it.
    set +e
    (
        set -e
        build_one "$f"
    )
    rc=$?
    set -e
    [ $rc -eq 0 ] || failed+=("$(basename "$f" .toml)")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "build-static.sh: failed: ${failed[*]}" >&2
    exit 1
fi
