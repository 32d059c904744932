#!/usr/bin/env bash
# Builds the fully static, stripped `memleak` for a musl target (default:
# x86_64-unknown-linux-musl): libbpf, libelf and zlib are vendored and linked in.
# Usage: scripts/build-static.sh [TRIPLE]   -> prints the binary's path
set -euo pipefail
triple=${1:-x86_64-unknown-linux-musl}
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${MEMLEAK_CACHE:-$HOME/.cache/memleak}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}

case "$triple" in
x86_64-unknown-linux-musl)
    # musl-gcc sees only musl's headers: give it the kernel's (linux/, asm/, asm-generic/).
    inc=$cache/musl-include/x86_64
    mkdir -p "$inc"
    ln -sfn /usr/include/linux "$inc/linux"
    ln -sfn /usr/include/x86_64-linux-gnu/asm "$inc/asm"
    ln -sfn /usr/include/asm-generic "$inc/asm-generic"
    # elfutils includes argp.h (color.c, printversion.c), which musl lacks; the
    # library part that libbpf needs never calls it.
    cat > "$inc/argp.h" <<'ARGP'
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
    export CC_x86_64_unknown_linux_musl=musl-gcc
    export CFLAGS_x86_64_unknown_linux_musl="-I$inc"
    ;;
*)
    echo "build-static.sh: unsupported target $triple" >&2
    exit 2
    ;;
esac
# elfutils' configure looks for libargp/libfts/libobstack, absent on musl.
export ac_cv_search_argp_parse="none required"
export ac_cv_search_fts_close="none required"
export ac_cv_search__obstack_free="none required"

cd "$root"
cargo build --release --locked --target "$triple" -p memleak-loader >&2
bin=$CARGO_TARGET_DIR/$triple/release/memleak
if ! file "$bin" | grep -qE 'static(-pie)? linked|statically linked'; then
    echo "build-static.sh: $bin is not statically linked:" >&2
    file "$bin" >&2
    exit 1
fi
echo "$bin"
