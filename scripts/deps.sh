#!/usr/bin/env bash
# shellcheck disable=SC2154 # t_* variables are set by target_load (scripts/targets.sh)
# Installs what building and testing memleak needs on Debian 12 (idempotent;
# no network when nothing is missing): apt packages, rustup targets and
# components, and for the cross targets in targets/*.toml their C cross
# compilers and libc headers, musl built from Debian's source (the musl test
# fixtures), cargo-zigbuild with zig (PyPI, into the user's Python) and the
# nightly toolchain with rust-src (tier-3 targets, -Zbuild-std).
#
# Usage: scripts/deps.sh [demo|host|all|TARGET...]
#   demo    what building memleak and running the demo need (scripts/demo.sh)
#   host    what the host build and tests need (x86_64, musl)
#   all     host + every target in targets/ (the default)
#   TARGET  host + that target (name as in targets/, or its Rust triple)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/targets.sh
. "$root/scripts/targets.sh"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Versions that build the cross targets together (cargo-zigbuild drives zig cc).
ZIGLANG_VERSION=0.15.2
CARGO_ZIGBUILD_VERSION=0.24.0

[ $# -gt 0 ] || set -- all
specs=()
demo=0
for a in "$@"; do
    case $a in
    host) ;;
    demo) demo=1 ;;
    *) specs+=("$a") ;;
    esac
done
files=()
if [ ${#specs[@]} -gt 0 ]; then
    target_files "${specs[@]}" >/dev/null || exit 2
    mapfile -t files < <(target_files "${specs[@]}")
fi

pkgs=(clang llvm libelf-dev zlib1g-dev autoconf automake autopoint libtool flex bison gawk
      gettext pkg-config make gcc g++ musl-tools file libc6-dbg dpkg-dev)
# The tests alone: valgrind (ground truth), debuginfod (a local server),
# golang-go (go tool pprof reads the profiles), chromium (the flame graph's
# screenshot).
[ $demo -eq 1 ] || pkgs+=(valgrind debuginfod golang-go chromium)
need_zig=0
musl_targets=()   # "name gnu_triple" of the cross targets: musl is built for them
rust_targets=()   # "toolchain triple" for targets with a prebuilt std
build_std_toolchains=()
for f in "${files[@]}"; do
    target_load "$f"
    if [ "$t_sysroot" != / ]; then
        # <gnu_triple>-gcc builds the test fixtures; its libc headers feed bindgen.
        pkgs+=("gcc-$t_gnu_triple" "libc6-dev-$t_debian_arch-cross")
        # qemu-<arch>-static runs the target's test binaries and fixtures.
        pkgs+=(qemu-user-static)
        musl_targets+=("$t_name $t_gnu_triple")
    fi
    [ "$t_builder" = zigbuild ] && need_zig=1
    if [ "$t_build_std" = true ]; then
        build_std_toolchains+=("$t_toolchain")
    else
        rust_targets+=("$t_toolchain $t_triple")
    fi
done
[ $need_zig -eq 0 ] || pkgs+=(python3)

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

# Rust toolchains and targets. "stable" means the default toolchain, which
# builds the host (see build-static.sh).
have_toolchain() {
    [ "$1" = stable ] || rustup toolchain list | grep -q "^$1-"
}
add_toolchain() {
    have_toolchain "$1" || rustup toolchain install "$1" --profile minimal >&2
}
tc_arg() {
    [ "$1" = stable ] || echo "--toolchain=$1"
}
for tt in "${rust_targets[@]}"; do
    tc=${tt% *} triple=${tt#* }
    add_toolchain "$tc"
    # shellcheck disable=SC2046
    rustup target list --installed $(tc_arg "$tc") | grep -qx "$triple" ||
        rustup target add $(tc_arg "$tc") "$triple" >&2
done
for tc in "${build_std_toolchains[@]}"; do
    add_toolchain "$tc"
    # shellcheck disable=SC2046
    rustup component list --installed $(tc_arg "$tc") | grep -q '^rust-src' ||
        rustup component add rust-src $(tc_arg "$tc") >&2
done

# cargo-zigbuild and zig from PyPI, into the user's Python (~/.local/bin on PATH
# is set up by build-static.sh).
if [ $need_zig -eq 1 ]; then
    pyver() {
        python3 -c 'import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1"
    }
    if [ "$(pyver ziglang)" != "$ZIGLANG_VERSION" ] || [ "$(pyver cargo-zigbuild)" != "$CARGO_ZIGBUILD_VERSION" ]; then
        echo "deps: installing ziglang $ZIGLANG_VERSION, cargo-zigbuild $CARGO_ZIGBUILD_VERSION (pip)" >&2
        if ! python3 -m pip --version >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-pip >/dev/null
        fi
        pipargs=(--user)
        # Inside a virtualenv there is no user site: install into the venv.
        python3 -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' && pipargs=()
        # Debian's own python3 refuses user installs without this (PEP 668).
        if python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
            pipargs+=(--break-system-packages)
        fi
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${pipargs[@]}" \
            "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" >&2
    fi
    PATH="$(python3 -m site --user-base)/bin:$PATH"
    if ! cargo-zigbuild --version >/dev/null 2>&1 || ! cargo zigbuild --help >/dev/null 2>&1; then
        echo "deps: cargo-zigbuild does not run (is $(python3 -m site --user-base)/bin on PATH?)" >&2
        exit 1
    fi
    if [ "$(python3 -m ziglang version 2>/dev/null)" != "$ZIGLANG_VERSION" ]; then
        echo "deps: python3 -m ziglang does not run zig $ZIGLANG_VERSION" >&2
        exit 1
    fi
fi

# musl for the cross targets, built from Debian's source package of the
# host's musl (the one musl-tools links x86_64 programs with) by musl's own
# build system (its default flags: -Os, no unwind tables, no frame pointers)
# with the target's Debian cross gcc, as Debian builds its musl. Installed
# under $cache/musl/<target>/: bin/musl-gcc (the gcc wrapper: static and
# dynamic builds), include/, lib/ (libc.a, libc.so, ld-musl-<arch>.so.1,
# so the directory serves as qemu-user's -L prefix). The fixtures of
# crates/unwind-arch/tests/fixtures.rs link against it dynamically.
cache=${MEMLEAK_CACHE:-$HOME/.cache/memleak}
musl_src() { # prints the unpacked source tree of the host's musl version
    local ver d src key=/usr/share/keyrings/debian-archive-keyring.gpg
    ver=$(dpkg-query -W -f='${Version}' musl-dev)
    src=$cache/musl/src/musl-$ver
    if [ ! -f "$src/.complete" ]; then
        d=$cache/apt/source-bookworm
        mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/sources.list.d" "$d/preferences.d" "$cache/musl/src"
        [ -f "$d/status" ] || : >"$d/status"
        echo "deb-src [signed-by=$key] http://deb.debian.org/debian bookworm main" >"$d/sources.list"
        local opts=(-o "Dir::State::Lists=$d/lists" -o "Dir::State::status=$d/status"
                    -o "Dir::Cache=$d/cache" -o "Dir::Etc::SourceList=$d/sources.list"
                    -o "Dir::Etc::SourceParts=$d/sources.list.d" -o "Dir::Etc::Preferences=$d/preferences"
                    -o "Dir::Etc::PreferencesParts=$d/preferences.d" -o "Acquire::Languages=none")
        [ "$(id -u)" -ne 0 ] || opts+=(-o "APT::Sandbox::User=root")
        echo "deps: downloading the source of musl $ver (Debian)" >&2
        local tmp
        tmp=$(mktemp -d "$cache/musl/src/dl.XXXXXX")
        apt-get "${opts[@]}" update -qq </dev/null >/dev/null
        (cd "$tmp" && apt-get "${opts[@]}" source -qq --download-only "musl=$ver" </dev/null >/dev/null)
        rm -rf "$src"
        # apt checked the files against the signed Sources index; dpkg-source
        # has no keyring for the uploader's signature (its gpgv warning is noise).
        dpkg-source -x "$tmp"/musl_*.dsc "$src" >/dev/null 2>"$tmp/dpkg-source.log" ||
            { cat "$tmp/dpkg-source.log" >&2; exit 1; }
        rm -rf "$tmp"
        touch "$src/.complete"
    fi
    echo "$src"
}
for nt in "${musl_targets[@]}"; do
    name=${nt% *} gnu=${nt#* }
    prefix=$cache/musl/$name
    ver=$(dpkg-query -W -f='${Version}' musl-dev)
    [ "$(cat "$prefix/.complete" 2>/dev/null)" = "$ver" ] && continue
    src=$(musl_src)
    echo "deps: building musl $ver for $name with $gnu-gcc (into $prefix)" >&2
    build=$(mktemp -d "$cache/musl/build-$name.XXXXXX")
    cp -a "$src/." "$build/"
    rm -rf "$prefix"
    (
        cd "$build"
        ./configure --target="$gnu" CC="$gnu-gcc" --prefix="$prefix" --syslibdir="$prefix/lib" \
            --enable-wrapper=gcc >configure.log 2>&1 || { cat configure.log >&2; exit 1; }
        make -j"$(nproc)" >make.log 2>&1 || { tail -30 make.log >&2; exit 1; }
        make install >install.log 2>&1 || { tail -30 install.log >&2; exit 1; }
    )
    rm -rf "$build"
    # The loader's link points into $prefix: make it relative, so that
    # qemu-<arch> -L $prefix finds /lib/ld-musl-<arch>.so.1 there.
    for l in "$prefix"/lib/ld-musl-*.so.1; do ln -sfn libc.so "$l"; done
    echo "$ver" >"$prefix/.complete"
done

# BPF and uprobes need tracefs/debugfs on some kernels.
mountpoint -q /sys/kernel/tracing 2>/dev/null || $sudo mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mountpoint -q /sys/kernel/debug 2>/dev/null || $sudo mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
