# shellcheck shell=bash
# Reads the target descriptions in targets/*.toml (sourced by deps.sh,
# build-static.sh, qemu/run...). The files use a flat subset of TOML: `key = "string"`,
# `key = true|false|NUMBER` and arrays of strings `key = ["a", "b"]` (on one
# line, or one item a line up to a line holding the closing `]`), with
# comments on lines of their own.
#
#   target_files SPEC...   prints the file of each SPEC: a target's name
#                          (x86_64), its triple, or "all" (every file)
#   target_load FILE       sets t_<key> for each key of FILE (arrays as bash
#                          arrays), after clearing the previous target's t_*

targets_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../targets" && pwd)

target_files() {
    local spec f found
    for spec in "$@"; do
        if [ "$spec" = all ]; then
            # x86_64 (the host) first, then the others by name.
            [ -f "$targets_dir/x86_64.toml" ] && echo "$targets_dir/x86_64.toml"
            for f in "$targets_dir"/*.toml; do
                [ "$f" = "$targets_dir/x86_64.toml" ] || echo "$f"
            done
            continue
        fi
        found=""
        for f in "$targets_dir"/*.toml; do
            if [ "$(basename "$f" .toml)" = "$spec" ] || grep -qx "triple = \"$spec\"" "$f"; then
                found=$f
                break
            fi
        done
        if [ -z "$found" ]; then
            local known=()
            for f in "$targets_dir"/*.toml; do known+=("$(basename "$f" .toml)"); done
            echo "unknown target '$spec' (known: ${known[*]}, their triples, or all)" >&2
            return 2
        fi
        echo "$found"
    done
}

target_load() {
    local file=$1 line k v rest var more
    local -a items
    for var in $(compgen -v t_); do unset "$var"; done
    while IFS= read -r line || [ -n "$line" ]; do
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        # An array over several lines: join them up to the closing `]`.
        if [[ $line =~ =[[:space:]]*\[ ]] && ! [[ $line =~ \][[:space:]]*$ ]]; then
            while IFS= read -r more; do
                [[ $more =~ ^[[:space:]]*(#|$) ]] && continue
                line+=" $more"
                [[ $more =~ \][[:space:]]*$ ]] && break
            done
        fi
        if ! [[ $line =~ ^[[:space:]]*([A-Za-z0-9_]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]]; then
            echo "$file: cannot parse: $line" >&2
            return 1
        fi
        k=${BASH_REMATCH[1]}
        v=${BASH_REMATCH[2]}
        if [[ $v =~ ^\"(.*)\"$ ]]; then
            printf -v "t_$k" '%s' "${BASH_REMATCH[1]}"
        elif [[ $v == \[* ]]; then
            items=()
            rest=$v
            while [[ $rest =~ \"([^\"]*)\"(.*) ]]; do
                items+=("${BASH_REMATCH[1]}")
                rest=${BASH_REMATCH[2]}
            done
            declare -ga "t_$k"
            eval "t_$k=(\"\${items[@]}\")"
        else
            printf -v "t_$k" '%s' "$v"
        fi
    done <"$file"
    local required=(name triple toolchain build_std builder cc gnu_triple sysroot debian_arch bpf_target
                    endian elf_machine pointer_width)
    for k in "${required[@]}"; do
        var=t_$k
        if [ -z "${!var-}" ]; then
            echo "$file: missing field $k" >&2
            return 1
        fi
    done
}
