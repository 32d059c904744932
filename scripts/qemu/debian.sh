# shellcheck shell=bash
# shellcheck disable=SC2154 # cache is set by the script that sources this file
# Debian packages of any architecture and suite, fetched with a private apt
# state under $cache/apt/<arch>-<suite>/ (the host's apt configuration is not
# touched). Sourced by run and build-mips-be-kernel.sh, which set `cache` and
# define `log MESSAGE...`.
#
#   apt_setup ARCH SUITE      selects the state (sets apt_opts); SUITE is a
#                             release (bookworm: with its -updates and
#                             -security) or a backports suite (alone), of
#                             deb.debian.org; or ubuntu:RELEASE (ubuntu:focal,
#                             with its -updates and -security), of
#                             archive.ubuntu.com (amd64, i386) or
#                             ports.ubuntu.com, checked with Ubuntu's archive
#                             key from Debian's ubuntu-keyring package
#                             (ubuntu_keyring fetches it first)
#   apt_update                downloads the package lists of that state (once
#                             in 10 minutes)
#   pkg_version PKG           the candidate version of PKG ("" if none)
#   matching_pkgs PATTERN     "PKG VERSION" of the packages whose name matches
#                             PATTERN (`*` stands for one field without `-`)
#                             and that have a candidate, newest first
#   fetch_deb PKG VER DEST MEMBER...
#                             extracts MEMBERs (tar patterns) of PKG=VER into
#                             DEST, once (DEST/.complete marks it done)
#   get_pkg ARCH SUITE PATTERN DIR MEMBER...
#                             the newest package matching PATTERN that
#                             downloads (a mirror may lack the newest file),
#                             extracted into DIR/<pkg>_<version>; sets pkg,
#                             pkg_ver and pkg_dir. The choice is kept in
#                             $cache/resolved/: later calls need no network
#                             (MEMLEAK_QEMU_REFRESH=1 picks again)

apt_opts=()
ubuntu_key=""
# Ubuntu's archive key (sets ubuntu_key), from bookworm-backports'
# ubuntu-keyring (Debian's copy of it), fetched once.
ubuntu_keyring() {
    [ -z "$ubuntu_key" ] || return 0
    get_pkg all bookworm-backports ubuntu-keyring "$cache/keyrings" \
        ./usr/share/keyrings/ubuntu-archive-keyring.gpg || return 1
    ubuntu_key=$pkg_dir/usr/share/keyrings/ubuntu-archive-keyring.gpg
}

apt_setup() { # ARCH SUITE
    local d=$cache/apt/$1-${2//:/-} key=/usr/share/keyrings/debian-archive-keyring.gpg
    local mirror=http://deb.debian.org/debian security
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/sources.list.d" "$d/preferences.d"
    [ -f "$d/status" ] || : >"$d/status"
    case "$2" in
    ubuntu:*)
        [ -n "$ubuntu_key" ] || { log "apt_setup $2: no Ubuntu key (call ubuntu_keyring)"; return 1; }
        case "$1" in
        amd64 | i386) mirror=http://archive.ubuntu.com/ubuntu security=http://security.ubuntu.com/ubuntu ;;
        *) mirror=http://ports.ubuntu.com/ubuntu-ports security=$mirror ;;
        esac
        cat >"$d/sources.list" <<EOF
deb [signed-by=$ubuntu_key] $mirror ${2#ubuntu:} main
deb [signed-by=$ubuntu_key] $mirror ${2#ubuntu:}-updates main
deb [signed-by=$ubuntu_key] $security ${2#ubuntu:}-security main
EOF
        ;;
    *-backports) echo "deb [signed-by=$key] $mirror $2 main" >"$d/sources.list" ;;
    *)
        cat >"$d/sources.list" <<EOF
deb [signed-by=$key] $mirror $2 main
deb [signed-by=$key] $mirror $2-updates main
deb [signed-by=$key] $mirror-security $2-security main
EOF
        ;;
    esac
    apt_opts=(-o "APT::Architecture=$1" -o "APT::Architectures=$1"
              -o "Dir::State::Lists=$d/lists" -o "Dir::State::status=$d/status"
              -o "Dir::Cache=$d/cache" -o "Dir::Etc::SourceList=$d/sources.list"
              -o "Dir::Etc::SourceParts=$d/sources.list.d" -o "Dir::Etc::Preferences=$d/preferences"
              -o "Dir::Etc::PreferencesParts=$d/preferences.d" -o "Acquire::Languages=none"
              -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false")
    [ "$(id -u)" -ne 0 ] || apt_opts+=(-o "APT::Sandbox::User=root")
    apt_desc="$2, $1"
    apt_dir=$d
}

apt_update() {
    local stamp=$apt_dir/lists/.updated
    if [ -n "$(find "$stamp" -mmin -10 2>/dev/null)" ]; then return 0; fi
    log "apt-get update ($apt_desc)"
    apt-get "${apt_opts[@]}" update -qq </dev/null >/dev/null && touch "$stamp"
}

pkg_version() { # PKG
    apt-cache "${apt_opts[@]}" show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -1
}

matching_pkgs() { # PATTERN
    local re pkg ver prefix=${1%%\**}
    # Escape the regex characters of a package name, then `*` -> one field.
    re=$(printf '%s' "$1" | sed -e 's/[.+]/\\&/g' -e 's/\*/[^-]+/g')
    for pkg in $(apt-cache "${apt_opts[@]}" pkgnames "$prefix" | { grep -E "^$re\$" || true; } | sort -rV); do
        ver=$(pkg_version "$pkg")
        [ -z "$ver" ] || echo "$pkg $ver"
    done
}

get_pkg() { # ARCH SUITE PATTERN DIR MEMBER...
    local arch=$1 suite=$2 pattern=$3 dir=$4 f found
    shift 4
    f=$cache/resolved/$arch-${suite//:/-}-${pattern//\*/N}.env
    case "$suite" in
    ubuntu:*) ubuntu_keyring || return 1 ;;
    esac
    apt_setup "$arch" "$suite" || return 1
    if [ -f "$f" ] && [ "${MEMLEAK_QEMU_REFRESH:-0}" != 1 ]; then
        # shellcheck disable=SC1090
        . "$f"
        pkg_dir=$dir/${pkg}_$pkg_ver
        if fetch_deb "$pkg" "$pkg_ver" "$pkg_dir" "$@"; then return 0; fi
        log "picking $pattern again"
    fi
    apt_update || return 1
    # Read as matching_pkgs finds them (newest first): a pattern may match a
    # hundred kernels (Ubuntu's), and the first one usually downloads.
    found=0
    while read -r pkg pkg_ver; do
        found=1
        pkg_dir=$dir/${pkg}_$pkg_ver
        if fetch_deb "$pkg" "$pkg_ver" "$pkg_dir" "$@"; then
            mkdir -p "$(dirname "$f")"
            printf 'pkg=%q\npkg_ver=%q\n' "$pkg" "$pkg_ver" >"$f"
            return 0
        fi
        log "trying the next older package"
    done < <(matching_pkgs "$pattern")
    if [ $found -eq 0 ]; then
        local archs
        archs=$(sed -n 's/^Architectures: //p' "$apt_dir/lists/"*"_dists_${suite#ubuntu:}_InRelease" 2>/dev/null | head -1)
        # shellcheck disable=SC2086 # a list of words
        if [ -n "$archs" ] && ! in_words "$arch" $archs; then
            log "no package $pattern: $suite has no $arch on the mirror (it has: $archs)"
        else
            log "no package $pattern for $arch in $suite"
        fi
        return 1
    fi
    log "no package $pattern for $arch in $suite could be downloaded"
    return 1
}

in_words() { # WORD WORD...: is the first one among the others?
    local w=$1 x
    shift
    for x; do [ "$x" != "$w" ] || return 0; done
    return 1
}

fetch_deb() { # PKG VERSION DEST MEMBER...
    local pkg=$1 ver=$2 dest=$3 tmp
    shift 3
    [ -f "$dest/.complete" ] && return 0
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/dl.XXXXXX")
    log "downloading $pkg $ver ($apt_desc)"
    if ! (cd "$tmp" && apt-get "${apt_opts[@]}" download -qq "$pkg=$ver" </dev/null >/dev/null 2>&1); then
        if ! apt_update || ! (cd "$tmp" && apt-get "${apt_opts[@]}" download -qq "$pkg=$ver" </dev/null >/dev/null); then
            log "cannot download $pkg $ver ($apt_desc)"
            rm -rf "$tmp"
            return 1
        fi
    fi
    rm -rf "$dest"
    mkdir -p "$dest"
    if ! dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$dest" --wildcards "$@"; then
        rm -rf "$tmp"
        return 1
    fi
    rm -rf "$tmp"
    touch "$dest/.complete"
}
