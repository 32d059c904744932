#!/usr/bin/env bash
# Benchmark: a malloc/free loop alone, under memleak, under the reference
# libbpf-tools memleak and under bpftrace with empty malloc/free uprobes;
# then how long memleak takes to detach its 20 probes after its final report.
# See bench/README.md for what the figures mean.
#
# Usage: bench/run.sh [PAIRS]        (as root; PAIRS defaults to 200000)
#
# Environment:
#   PAIRS                  malloc/free pairs per run (default 200000; argv[1] wins)
#   KEEP                   blocks the program allocates before the loop and never
#                          frees, so that every tool holds that many outstanding
#                          blocks while it is measured (default 100000; 0: none)
#   TOOLS                  runs to do, in order (default "alone memleak libbpf-tools
#                          bpftrace detach"; "detach" is memleak's exit after its final
#                          report, see DETACH_*)
#   MEMLEAK                memleak binary (default: target/release/memleak in the repo,
#                          else $CARGO_TARGET_DIR/release/memleak,
#                          else ~/.cache/memleak/target/release/memleak)
#   MEMLEAK_ARGS           extra arguments for memleak (default none)
#   LIBBPF_TOOLS_MEMLEAK   reference tool (default ../shared/anchors/libbpf-tools-memleak
#                          relative to the repo root)
#   BPFTRACE               bpftrace binary (default: bpftrace from PATH)
#   ALONE_RUNS             runs of the program alone; the fastest counts (default 3)
#   ATTACH_TIMEOUT         seconds to wait for a tool to attach (default 60)
#   EXIT_GRACE             seconds memleak gets to exit by itself after the program
#                          has exited, before SIGINT (default 5)
#   STOP_TIMEOUT           seconds a tool gets to exit after SIGINT (default 60)
#   BENCH_TIMEOUT          seconds the loop may take under a tool (default 600)
#   BENCH_OUT              directory for the build and the logs (default bench/out)
#   DETACH_PAIRS           pairs of the program traced by the detach runs (default 1000)
#   DETACH_RUNS            detach runs per attach mode; the median counts (default 3)
#   NO_INSTALL=1           never call apt-get
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

PAIRS=${1:-${PAIRS:-200000}}
KEEP=${KEEP:-100000}
TOOLS=${TOOLS:-"alone memleak libbpf-tools bpftrace detach"}
DETACH_PAIRS=${DETACH_PAIRS:-1000}
DETACH_RUNS=${DETACH_RUNS:-3}
ALONE_RUNS=${ALONE_RUNS:-3}
ATTACH_TIMEOUT=${ATTACH_TIMEOUT:-60}
EXIT_GRACE=${EXIT_GRACE:-5}
STOP_TIMEOUT=${STOP_TIMEOUT:-60}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}
OUT=${BENCH_OUT:-$HERE/out}
LIBBPF_TOOLS_MEMLEAK=${LIBBPF_TOOLS_MEMLEAK:-$REPO/../shared/anchors/libbpf-tools-memleak}
if [[ -d $(dirname "$LIBBPF_TOOLS_MEMLEAK") ]]; then
    LIBBPF_TOOLS_MEMLEAK=$(cd "$(dirname "$LIBBPF_TOOLS_MEMLEAK")" && pwd)/$(basename "$LIBBPF_TOOLS_MEMLEAK")
fi
BPFTRACE=${BPFTRACE:-bpftrace}
MEMLEAK_ARGS=${MEMLEAK_ARGS:-}

if ! [[ $PAIRS =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: PAIRS must be a positive integer, got '$PAIRS'" >&2
    exit 2
fi
if ! [[ $KEEP =~ ^(0|[1-9][0-9]*)$ ]]; then
    echo "run.sh: KEEP must be a non-negative integer, got '$KEEP'" >&2
    exit 2
fi
if ! [[ $DETACH_PAIRS =~ ^[1-9][0-9]*$ && $DETACH_RUNS =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: DETACH_PAIRS and DETACH_RUNS must be positive integers" >&2
    exit 2
fi

say() { printf '%s\n' "$*"; }
warn() { printf 'run.sh: %s\n' "$*" >&2; }

# --- a sleep that forks nothing -------------------------------------------
# bpftrace probes malloc/free system-wide: every process this script starts
# while it runs adds to its counts, so the waiting loops use builtins only.
exec {SLEEP_FD}<> <(:)
snooze() { read -r -t "$1" -u "$SLEEP_FD" _ || true; }

# alive PID: running and not a zombie (builtins only)
alive() {
    local line
    [[ -r /proc/$1/stat ]] || return 1
    read -r line < "/proc/$1/stat" 2>/dev/null || return 1
    line=${line#*) }
    [[ ${line:0:1} != Z && ${line:0:1} != X ]]
}

# sample_hwm PID: records the peak RSS (KiB) of PID so far in TOOL_HWM
# (builtins only; no subshell)
sample_hwm() {
    local k v _u
    [[ -n $1 && -r /proc/$1/status ]] || return 0
    while read -r k v _u; do
        if [[ $k == VmHWM: ]]; then TOOL_HWM=$v; return 0; fi
    done < "/proc/$1/status" 2>/dev/null || true
}

# sample_cpu PID VAR: sets VAR to the CPU time (user + sys, all threads, in
# clock ticks) PID has used so far, from /proc/PID/stat; empty if it is gone
# (builtins only; no subshell)
sample_cpu() {
    local line f
    printf -v "$2" '%s' ""
    [[ -n $1 && -r /proc/$1/stat ]] || return 0
    read -r line < "/proc/$1/stat" 2>/dev/null || return 0
    line=${line##*) }
    read -r -a f <<<"$line"
    # fields 14 (utime) and 15 (stime) of proc(5); f[0] is field 3 (state)
    [[ ${f[11]:-} =~ ^[0-9]+$ && ${f[12]:-} =~ ^[0-9]+$ ]] || return 0
    printf -v "$2" '%s' "$((f[11] + f[12]))"
}

# kill_tree PID: SIGKILL to PID and all its descendants (processes this
# script started; a tool may have children of its own)
kill_tree() {
    local c
    for c in $(pgrep -P "$1" 2>/dev/null || true); do kill_tree "$c"; done
    kill -KILL "$1" 2>/dev/null || true
}

# --- requirements --------------------------------------------------------
if [[ $(id -u) -ne 0 ]]; then
    echo "run.sh: must run as root (BPF, uprobes, sysctl)" >&2
    exit 1
fi

APT_UPDATED=0
apt_install() {
    [[ ${NO_INSTALL:-0} == 1 ]] && return 1
    command -v apt-get >/dev/null || return 1
    if [[ $APT_UPDATED == 0 ]]; then
        apt-get update -qq >/dev/null 2>&1 || true
        APT_UPDATED=1
    fi
    say "installing (apt): $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

need() { # need CMD PACKAGE
    command -v "$1" >/dev/null 2>&1 || apt_install "$2" || true
    command -v "$1" >/dev/null 2>&1 || { echo "run.sh: '$1' is missing (apt package $2)" >&2; exit 1; }
}
need gcc gcc
need jq jq
need bpftool bpftool
[[ -x /usr/bin/time ]] || apt_install time || true
HAVE_TIME=0
[[ -x /usr/bin/time ]] && HAVE_TIME=1
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
# Background jobs of a non-interactive shell start with SIGINT ignored; the
# tools are stopped with SIGINT, so give them the default disposition back.
SIGDEF=()
if env --default-signal=INT true 2>/dev/null; then
    SIGDEF=(env --default-signal=INT --default-signal=QUIT)
else
    warn "env has no --default-signal: the tools start with SIGINT ignored unless they set a handler"
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Filesystems: bpffs to pin the tools' programs (their run statistics outlive
# the tools that way), tracefs/debugfs for the uprobe tools.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf ||
    warn "cannot mount bpffs on /sys/fs/bpf: a tool that exits by itself may take its statistics with it"
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
ulimit -l unlimited 2>/dev/null || true

# --- cleanup -------------------------------------------------------------
OLD_STATS=$(sysctl -n kernel.bpf_stats_enabled)
PIN_DIR=/sys/fs/bpf/malloc-bench-$$
STARTED_PIDS=()
cleanup() {
    local p
    for p in "${STARTED_PIDS[@]}"; do
        if alive "$p"; then kill_tree "$p"; fi
    done
    rm -rf "$PIN_DIR" 2>/dev/null || true
    sysctl -qw kernel.bpf_stats_enabled="$OLD_STATS" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
sysctl -qw kernel.bpf_stats_enabled=1
mkdir -p "$PIN_DIR" 2>/dev/null || true

# --- build ---------------------------------------------------------------
BIN=$OUT/malloc_bench
gcc -O2 -fomit-frame-pointer -g -Wall -o "$BIN" "$HERE/malloc_bench.c"
say "built $BIN ($PAIRS pairs per run, $KEEP blocks kept live; logs in $OUT)"

# --- tools ---------------------------------------------------------------
find_memleak() {
    local c
    for c in "${MEMLEAK:-}" "$REPO/target/release/memleak" \
        "${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/release/memleak}" \
        "$HOME/.cache/memleak/target/release/memleak"; do
        if [[ -n $c && -x $c ]]; then printf '%s' "$c"; return 0; fi
        # An explicit $MEMLEAK that does not exist is not replaced by a default.
        if [[ -n ${MEMLEAK:-} ]]; then return 1; fi
    done
    return 1
}

# tool_check NAME: prints why the tool cannot run, returns 1 if so
tool_check() {
    case $1 in
        memleak)
            find_memleak >/dev/null || { echo "memleak binary not found (set MEMLEAK, or cargo build --release -p memleak-loader)"; return 1; }
            ;;
        libbpf-tools)
            [[ -x $LIBBPF_TOOLS_MEMLEAK ]] || { echo "not found: $LIBBPF_TOOLS_MEMLEAK (set LIBBPF_TOOLS_MEMLEAK)"; return 1; }
            if ldd "$LIBBPF_TOOLS_MEMLEAK" 2>/dev/null | grep -q 'not found'; then
                apt_install libelf1 zlib1g >&2 || true
            fi
            if ldd "$LIBBPF_TOOLS_MEMLEAK" 2>/dev/null | grep -q 'not found'; then
                echo "missing libraries: $(ldd "$LIBBPF_TOOLS_MEMLEAK" | grep 'not found' | tr -s ' \t\n' ' ')"
                return 1
            fi
            ;;
        bpftrace)
            if ! command -v "$BPFTRACE" >/dev/null 2>&1; then
                if [[ $BPFTRACE == bpftrace ]]; then apt_install bpftrace >&2 || true; fi
            fi
            command -v "$BPFTRACE" >/dev/null 2>&1 || { echo "bpftrace not found"; return 1; }
            ;;
    esac
    return 0
}

# tool_cmd NAME PID: sets CMD
tool_cmd() {
    local libc
    case $1 in
        memleak)
            # shellcheck disable=SC2206
            CMD=("$(find_memleak)" --format json -p "$2" $MEMLEAK_ARGS)
            ;;
        libbpf-tools)
            CMD=("$LIBBPF_TOOLS_MEMLEAK" -p "$2")
            ;;
        bpftrace)
            # The libc the program really mapped (/usr/lib/... on merged-/usr systems).
            libc=$(awk '$6 ~ /\/libc\.so\.6$/ { print $6; exit }' "/proc/$2/maps")
            if [[ -z $libc ]]; then
                libc=$(ldd "$BIN" | awk '$1 == "libc.so.6" { print $3 }')
            fi
            CMD=("$BPFTRACE" -e "uprobe:$libc:malloc {} uprobe:$libc:free {}")
            ;;
    esac
}

# --- the program ---------------------------------------------------------
# start_bench TAG: starts the program waiting; sets BENCH_PID, BENCH_ERR, GO_FILE
start_bench() {
    BENCH_ERR=$OUT/$1.bench.err
    GO_FILE=$OUT/$1.go
    rm -f "$GO_FILE" "$BENCH_ERR"
    "$BIN" --wait --go-file "$GO_FILE" --keep "$KEEP" "$PAIRS" 2>"$BENCH_ERR" &
    BENCH_PID=$!
    STARTED_PIDS+=("$BENCH_PID")
    local i first
    # It prints its PID once its SIGUSR1 handler is in place.
    for ((i = 0; i < 200; i++)); do
        first=""
        if [[ -s $BENCH_ERR ]]; then read -r first _ <"$BENCH_ERR" || true; fi
        [[ $first == "pid=$BENCH_PID" ]] && return 0
        alive "$BENCH_PID" || break
        snooze 0.05
    done
    warn "malloc_bench did not start: $(cat "$BENCH_ERR" 2>/dev/null)"
    return 1
}

go_bench() {
    : >"$GO_FILE"
    kill -USR1 "$BENCH_PID" 2>/dev/null || true
}

# wait_kept: after the first go_bench, with KEEP > 0, waits until the program
# has allocated its KEEP blocks and waits for the second go_bench (which
# starts the loop). Polls the program's stderr with builtins; the loop has
# not started yet.
wait_kept() {
    local line t limit=$((BENCH_TIMEOUT * 20))
    ((KEEP > 0)) || return 0
    for ((t = 0; t < limit; t++)); do
        while read -r line; do
            [[ $line == kept=* ]] && return 0
        done <"$BENCH_ERR"
        alive "$BENCH_PID" || { warn "malloc_bench exited before the loop: $(cat "$BENCH_ERR")"; return 1; }
        snooze 0.05
    done
    warn "malloc_bench did not allocate its $KEEP blocks within ${BENCH_TIMEOUT}s"
    return 1
}

# wait_bench: waits for the program; sets BENCH_RC. A plain `wait` (no
# polling: bash's own mallocs would be traced by bpftrace), with a watchdog
# subshell for BENCH_TIMEOUT.
wait_bench() {
    local wd
    (
        snooze "$BENCH_TIMEOUT"
        warn "malloc_bench took more than ${BENCH_TIMEOUT}s: killed"
        kill -KILL "$BENCH_PID" 2>/dev/null
    ) &
    wd=$!
    STARTED_PIDS+=("$wd")
    BENCH_RC=0
    wait "$BENCH_PID" || BENCH_RC=$?
    kill "$wd" 2>/dev/null || true
    wait "$wd" 2>/dev/null || true
}

loop_seconds() { sed -n 's/.*loop_seconds=\([0-9.]*\).*/\1/p' "$1" | tail -n1; }

# --- BPF programs --------------------------------------------------------
prog_ids() { bpftool prog show --json 2>/dev/null | jq -r '.[].id' | sort -n; }

# descendants PID: PID and all its descendants, one a line
descendants() {
    local c
    echo "$1"
    for c in $(pgrep -P "$1" || true); do descendants "$c"; done
}

# attachments PID IDS...: uprobe perf events held by PID or its descendants,
# plus BPF links of other kinds (e.g. uprobe_multi) whose program is one of IDS
attachments() {
    local pid=$1; shift
    local ids pids
    ids=$(printf '%s\n' "$@" | jq -sc 'map(tonumber)')
    pids=$(descendants "$pid" | jq -sc 'map(tonumber)')
    local a b
    a=$(bpftool perf show --json 2>/dev/null | jq --argjson p "$pids" '[.[] | select(.pid as $x | $p | index($x))] | length' 2>/dev/null || echo 0)
    b=$(bpftool link show --json 2>/dev/null | jq --argjson ids "$ids" \
        '[.[] | select(.type != "perf_event" and (.prog_id as $i | $ids | index($i)))] | length' 2>/dev/null || echo 0)
    echo $((a + b))
}

# foreign_ids PID: programs attached through perf events held by processes
# other than PID and its descendants (another tracer running at the same time)
foreign_ids() {
    local pids
    pids=$(descendants "$1" | jq -sc 'map(tonumber)')
    bpftool perf show --json 2>/dev/null |
        jq -r --argjson p "$pids" '.[] | select(.pid as $x | $p | index($x) | not) | .prog_id' 2>/dev/null |
        sort -u || true
}

# owned_ids PID: programs that PID or its descendants hold a file descriptor
# of (a program fd or a BPF link fd: `prog_id:` in /proc/PID/fdinfo)
owned_ids() {
    local p
    for p in $(descendants "$1"); do
        cat "/proc/$p/fdinfo/"* 2>/dev/null | sed -n 's/^prog_id:[[:space:]]*\([0-9][0-9]*\)$/\1/p'
    done | sort -u
}

# new_ids BEFORE PID: ids of the programs loaded since BEFORE, less those
# that another process has attached; only those PID holds when it can be
# told (another tracer on the machine may load programs at the same time)
new_ids() {
    local ids owned
    ids=$(comm -23 <(comm -13 <(printf '%s\n' "$1" | sort) <(prog_ids | sort)) <(foreign_ids "$2" | sort) |
        sed '/^$/d')
    owned=$(owned_ids "$2")
    if [[ -n $ids && -n $owned ]]; then
        owned=$(comm -12 <(printf '%s\n' "$ids" | sort) <(printf '%s\n' "$owned") | sed '/^$/d')
        # none in common: the tool holds no fd of its programs (links only
        # through perf events); keep them all
        [[ -n $owned ]] && ids=$owned
    fi
    printf '%s\n' "$ids" | sed '/^$/d' | sort -n
}

# wait_attached BEFORE_IDS: waits until the tool's programs are loaded and its
# attachments stop changing; sets NEW_IDS
wait_attached() {
    local before=$1 n state last="" stable=0 t=0 limit=$((ATTACH_TIMEOUT * 5))
    NEW_IDS=()
    while ((t < limit)); do
        alive "$TOOL_PID" || { warn "$TOOL_NAME exited before attaching"; return 1; }
        mapfile -t NEW_IDS < <(new_ids "$before" "$TOOL_PID")
        if ((${#NEW_IDS[@]} > 0)); then
            n=$(attachments "$TOOL_PID" "${NEW_IDS[@]}")
            state="$n:${NEW_IDS[*]}"
            if ((n > 0)) && [[ $state == "$last" ]]; then
                stable=$((stable + 1))
                # programs and attachments unchanged for ~1 s
                ((stable >= 5)) && return 0
            else
                stable=0
            fi
            last=$state
        fi
        snooze 0.2
        t=$((t + 1))
    done
    if ((${#NEW_IDS[@]} > 0)); then
        warn "$TOOL_NAME: no stable uprobe attachment seen after ${ATTACH_TIMEOUT}s; measuring anyway"
        return 0
    fi
    warn "$TOOL_NAME loaded no BPF program within ${ATTACH_TIMEOUT}s"
    return 1
}

# pin_progs: keep the tool's programs (and their run statistics) alive after
# the tool exits, so that the figures are read once it has stopped.
pin_progs() {
    local id
    PINNED=()
    for id in "${NEW_IDS[@]}"; do
        if bpftool prog pin id "$id" "$PIN_DIR/$id" 2>/dev/null; then
            PINNED+=("$id")
        fi
    done
}
unpin_progs() {
    local id
    for id in "${PINNED[@]}"; do rm -f "$PIN_DIR/$id"; done
    PINNED=()
}

# prog_stats BASE.json FINAL.json IDS...: one line per program:
# id name run_cnt run_time_ns (differences FINAL - BASE)
prog_stats() {
    local base=$1 final=$2; shift 2
    local ids
    ids=$(printf '%s\n' "$@" | jq -sc 'map(tonumber)')
    jq -r -n --slurpfile b "$base" --slurpfile f "$final" --argjson ids "$ids" '
        ($b[0] | map({key: (.id | tostring), value: .}) | from_entries) as $bm
        | $f[0][] | select(.id as $i | $ids | index($i))
        | . as $p | ($bm[$p.id | tostring] // {}) as $q
        | [ $p.id, ($p.name // "?"),
            (($p.run_cnt // 0) - ($q.run_cnt // 0)),
            (($p.run_time_ns // 0) - ($q.run_time_ns // 0)) ] | @tsv'
}

# stop_tool GRACE: lets the tool exit by itself for GRACE seconds, then SIGINT,
# then SIGTERM/SIGKILL; sets TOOL_RC and TOOL_STOP
stop_tool() {
    local grace=$1 t
    TOOL_STOP="exited by itself"
    for ((t = 0; t < grace * 10; t++)); do
        alive "$TOOL_PID" || break
        sample_hwm "$TOOL_PID"
        snooze 0.1
    done
    if alive "$TOOL_PID"; then
        TOOL_STOP="SIGINT"
        sample_hwm "$TOOL_PID"
        kill -INT "$TOOL_PID" 2>/dev/null || true
        for ((t = 0; t < STOP_TIMEOUT * 10; t++)); do
            alive "$TOOL_PID" || break
            sample_hwm "$TOOL_PID"
            snooze 0.1
        done
    fi
    if alive "$TOOL_PID"; then
        TOOL_STOP="SIGINT ignored for ${STOP_TIMEOUT}s: SIGTERM"
        kill -TERM "$TOOL_PID" 2>/dev/null || true
        for ((t = 0; t < 50; t++)); do alive "$TOOL_PID" || break; snooze 0.1; done
    fi
    if alive "$TOOL_PID"; then
        TOOL_STOP="SIGKILL"
        kill_tree "$TOOL_PID"
    fi
    TOOL_RC=0
    wait "$TOOL_WRAPPER" || TOOL_RC=$?
}

# --- results -------------------------------------------------------------
# Per run: R_SECS loop seconds, R_RATIO slowdown, R_NS BPF ns per call,
# R_PERPAIR BPF calls per pair, R_NSPAIR BPF ns per pair, R_WALL added wall
# time per call, R_LOST lost events, R_CPU tool CPU seconds (time -v),
# R_CPUPAIR its us per pair, R_CPU100K its ms per 100k allocations,
# R_CPU0 / R_CPUL / R_CPUX its CPU seconds up to the loop (start-up and
# KEEP blocks), during the loop and after it (exit, final report),
# R_LOOPCPU tool CPU us per pair during the loop only, R_RSS peak RSS MiB,
# R_HWML peak RSS MiB when the loop ended (before the final report),
# R_MAPS MiB of the BPF maps its programs use, R_MEM RSS + maps MiB.
declare -A R_SECS R_RATIO R_NS R_PERPAIR R_NSPAIR R_WALL R_LOST R_CPU R_CPUPAIR R_CPU100K \
    R_CPU0 R_CPUL R_CPUX R_LOOPCPU R_RSS R_HWML R_MAPS R_MEM R_NOTE
# memleak's final report: rule cache and ring buffer
M_KSTACKS="" M_MISSES="" M_RULE_HITS="" M_RING="" M_ALLOCS="" M_HITRATE="" M_RINGPER=""
M_OUTSTANDING="" M_RULES_CACHED="" M_WARM_HITRATE="" M_WARM_ALLOCS="" M_WARM_MISSES=""
M_MAPS_JSON="[]"
ALONE_SECS=""
# Reasons for a non-zero exit (memleak did not attach, lost events, ...)
FAILURES=()

fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "n/a" }'; }
is_num() { [[ $1 =~ ^-?[0-9]+([.][0-9]+)?$ ]]; }

clear_results() {
    local n=$1
    R_SECS[$n]=-; R_RATIO[$n]=-; R_NS[$n]=-; R_PERPAIR[$n]=-; R_NSPAIR[$n]=-; R_WALL[$n]=-
    R_LOST[$n]=-; R_CPU[$n]=-; R_CPUPAIR[$n]=-; R_CPU100K[$n]=-; R_CPU0[$n]=-; R_CPUL[$n]=-
    R_CPUX[$n]=-; R_LOOPCPU[$n]=-; R_RSS[$n]=-; R_HWML[$n]=-; R_MAPS[$n]=-; R_MEM[$n]=-
    R_NOTE[$n]=""
}

run_alone() {
    local i s best=""
    say ""
    say "== alone (fastest of $ALONE_RUNS)"
    for ((i = 1; i <= ALONE_RUNS; i++)); do
        start_bench "alone-$i" || return 1
        go_bench
        TOOL_PID=""
        if ((KEEP > 0)); then
            wait_kept || return 1
            go_bench
        fi
        wait_bench
        s=$(loop_seconds "$BENCH_ERR")
        if [[ $BENCH_RC -ne 0 || -z $s ]]; then
            warn "malloc_bench failed (exit $BENCH_RC): $(cat "$BENCH_ERR")"
            return 1
        fi
        say "   run $i: loop_seconds=$s"
        if [[ -z $best ]] || awk -v a="$s" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$s; fi
    done
    ALONE_SECS=$best
    clear_results alone
    R_SECS[alone]=$best
    R_RATIO[alone]=1.0x
    say "   loop seconds: $best"
}

# tool_maps PROGS.json MAPS.json IDS...: one line per BPF map that the
# programs IDS use: id type name max_entries bytes_memlock
tool_maps() {
    local progs=$1 maps=$2; shift 2
    local ids
    ids=$(printf '%s\n' "$@" | jq -sc 'map(tonumber)')
    jq -r -n --slurpfile p "$progs" --slurpfile m "$maps" --argjson ids "$ids" '
        ([$p[0][] | select(.id as $i | $ids | index($i)) | (.map_ids // [])[]] | unique) as $mids
        | $m[0][] | select(.id as $i | $mids | index($i))
        | [.id, .type, (.name // "?"), (.max_entries // 0), (.bytes_memlock // 0)] | @tsv'
}

run_tool() {
    local name=$1 why
    TOOL_NAME=$name
    say ""
    say "== $name"
    clear_results "$name"
    if ! why=$(tool_check "$name"); then
        say "   skipped: $why"
        R_NOTE[$name]="skipped"
        return 0
    fi

    local tag=$name
    local tout=$OUT/$tag.out terr=$OUT/$tag.err trss=$OUT/$tag.time
    local base=$OUT/$tag.progs-before.json final=$OUT/$tag.progs-after.json
    local maps=$OUT/$tag.maps.json
    rm -f "$tout" "$terr" "$trss" "$maps"

    start_bench "$tag" || { R_NOTE[$name]="program did not start"; return 1; }
    tool_cmd "$name" "$BENCH_PID"
    say "   command: ${CMD[*]}"

    local before
    before=$(prog_ids)
    TOOL_HWM=""
    if [[ $HAVE_TIME == 1 ]]; then
        /usr/bin/time -v -o "$trss" "${SIGDEF[@]}" "${CMD[@]}" >"$tout" 2>"$terr" &
        TOOL_WRAPPER=$!
        STARTED_PIDS+=("$TOOL_WRAPPER")
        TOOL_PID=""
        local i
        for ((i = 0; i < 100; i++)); do
            TOOL_PID=$(pgrep -P "$TOOL_WRAPPER" | head -n1 || true)
            [[ -n $TOOL_PID ]] && break
            alive "$TOOL_WRAPPER" || break
            snooze 0.05
        done
        if [[ -z $TOOL_PID ]]; then
            kill -KILL "$BENCH_PID" 2>/dev/null || true
            wait "$BENCH_PID" 2>/dev/null || true
            local rc=0
            wait "$TOOL_WRAPPER" 2>/dev/null || rc=$?
            say "   failed: $name exited at once (status $rc); last lines of its stderr:"
            tail -n 10 "$terr" | sed 's/^/   | /'
            R_NOTE[$name]="failed to start"
            return 1
        fi
    else
        "${SIGDEF[@]}" "${CMD[@]}" >"$tout" 2>"$terr" &
        TOOL_WRAPPER=$!
        TOOL_PID=$!
    fi
    STARTED_PIDS+=("$TOOL_PID")

    if ! wait_attached "$before"; then
        kill -INT "$TOOL_PID" 2>/dev/null || true
        stop_tool 0
        kill -KILL "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
        say "   failed to attach (exit $TOOL_RC); last lines of its stderr:"
        tail -n 10 "$terr" | sed 's/^/   | /'
        dmesg 2>/dev/null | tail -n 3 | grep -i -e uprobe -e bpf | sed 's/^/   dmesg: /' || true
        R_NOTE[$name]="attach failed"
        return 1
    fi
    pin_progs
    local cpu_attach cpu_loop0 cpu_loop1
    sample_cpu "$TOOL_PID" cpu_attach
    say "   attached: ${#NEW_IDS[@]} BPF programs (ids ${NEW_IDS[*]}), $(attachments "$TOOL_PID" "${NEW_IDS[@]}") attachments"

    # With KEEP > 0 the first go makes the program allocate its KEEP blocks
    # (traced, outside the loop's figures); the loop waits for a second go.
    if ((KEEP > 0)); then
        go_bench
        if ! wait_kept; then
            stop_tool 0
            kill -KILL "$BENCH_PID" 2>/dev/null || true
            wait "$BENCH_PID" 2>/dev/null || true
            unpin_progs
            R_NOTE[$name]="program failed"
            return 1
        fi
    fi
    # Baseline statistics, CPU time and maps (attached, KEEP blocks
    # outstanding), then go; nothing is forked until the program exits.
    sample_cpu "$TOOL_PID" cpu_loop0
    bpftool prog show --json >"$base"
    bpftool map show --json >"$maps" 2>/dev/null || echo '[]' >"$maps"
    go_bench
    wait_bench
    sample_cpu "$TOOL_PID" cpu_loop1
    local hwm_loop=""
    TOOL_HWM=""
    sample_hwm "$TOOL_PID"
    hwm_loop=$TOOL_HWM
    # Final statistics right after the program has exited: the pid-filtered
    # tools' programs cannot run any more, and a system-wide tool (bpftrace)
    # has not yet traced its own shutdown. The programs are pinned, so this
    # works even if the tool has already exited by itself.
    bpftool prog show --json >"$final"
    local grace=0
    if [[ $name == memleak ]]; then grace=$EXIT_GRACE; fi
    stop_tool "$grace"
    unpin_progs

    local s
    s=$(loop_seconds "$BENCH_ERR")
    if [[ $BENCH_RC -ne 0 || -z $s ]]; then
        warn "malloc_bench failed under $name (exit $BENCH_RC): $(cat "$BENCH_ERR")"
        R_NOTE[$name]="program failed"
        return 1
    fi
    R_SECS[$name]=$s
    R_RATIO[$name]=$(fmt_ratio "$s" "$ALONE_SECS")

    say "   loop seconds: $s (alone ${ALONE_SECS:-?}) -> slowdown ${R_RATIO[$name]}"
    say "   tool stopped: $TOOL_STOP, exit status $TOOL_RC"

    # Per-program BPF run time.
    local stats
    stats=$(prog_stats "$base" "$final" "${NEW_IDS[@]}")
    local idle=0 tot_cnt=0 tot_ns=0 id pname cnt ns
    say "   BPF programs (counts during the loop; kernel.bpf_stats_enabled=1):"
    printf '   %-8s %-24s %12s %14s %12s\n' id name run_cnt run_time_ns ns/call
    while IFS=$'\t' read -r id pname cnt ns; do
        [[ -z $id ]] && continue
        if ((cnt == 0)); then idle=$((idle + 1)); continue; fi
        tot_cnt=$((tot_cnt + cnt))
        tot_ns=$((tot_ns + ns))
        printf '   %-8s %-24s %12d %14d %12.0f\n' "$id" "$pname" "$cnt" "$ns" \
            "$(awk -v a="$ns" -v b="$cnt" 'BEGIN { print a / b }')"
    done <<<"$stats"
    if ((idle > 0)); then say "   ($idle more programs did not run)"; fi
    if ((tot_cnt > 0)); then
        R_NS[$name]=$(awk -v a="$tot_ns" -v b="$tot_cnt" 'BEGIN { printf "%.0f", a / b }')
        R_PERPAIR[$name]=$(awk -v a="$tot_cnt" -v b="$PAIRS" 'BEGIN { printf "%.2f", a / b }')
        R_NSPAIR[$name]=$(awk -v a="$tot_ns" -v b="$PAIRS" 'BEGIN { printf "%.0f", a / b }')
        say "   all programs: $tot_cnt calls, $tot_ns ns: ${R_NS[$name]} ns/call, ${R_PERPAIR[$name]} calls and ${R_NSPAIR[$name]} ns per malloc/free pair"
        if [[ -n $ALONE_SECS ]]; then
            R_WALL[$name]=$(awk -v t="$s" -v a="$ALONE_SECS" -v n="$tot_cnt" 'BEGIN { printf "%.1f", (t - a) * 1e6 / n }')
            say "   added wall time per BPF call (trap + BPF run): ${R_WALL[$name]} us"
        fi
        if awk -v a="$tot_cnt" -v b="$PAIRS" 'BEGIN { exit !(a < 1.5 * b) }'; then
            warn "$name ran its programs only $tot_cnt times for $PAIRS pairs: was it attached when the loop started?"
            R_NOTE[$name]="few BPF calls"
        fi
    else
        say "   no BPF program ran during the loop"
        R_NOTE[$name]="no BPF calls"
    fi

    # Lost events; memleak's rule cache and ring buffer.
    case $name in
        memleak)
            local rep lost
            rep=$(grep '"final"' "$tout" 2>/dev/null | jq -c 'select(.final == true)' 2>/dev/null | tail -n1 || true)
            lost=""
            [[ -n $rep ]] && lost=$(jq -r '.lost_events // empty' <<<"$rep")
            if [[ -z $lost ]]; then
                lost=$(grep '"final": *true' "$tout" 2>/dev/null | sed -n 's/.*"lost_events": *\([0-9]*\).*/\1/p' | tail -n1 || true)
            fi
            if [[ -n $lost ]]; then
                R_LOST[$name]=$lost
                if ((lost > 0)); then
                    FAILURES+=("memleak lost $lost events")
                    say "   losses: $(jq -r '.losses // {} | to_entries | map(select(.value > 0)) | map("\(.key) \(.value)") | join(", ")' <<<"$rep" 2>/dev/null || true)"
                fi
            else
                R_LOST[$name]="no final report"
                warn "memleak: no JSON line with \"final\": true in $tout"
                FAILURES+=("memleak printed no final report")
            fi
            if [[ -n $rep ]]; then
                local f
                f=$(jq -r '[.losses.kernel_stacks, .losses.rule_misses, .losses.rule_hits,
                            .losses.ringbuf_bytes, .losses.rules_cached, .outstanding_allocations]
                           | map(. // "") | @tsv' <<<"$rep")
                IFS=$'\t' read -r M_KSTACKS M_MISSES M_RULE_HITS M_RING M_RULES_CACHED M_OUTSTANDING <<<"$f"
                if is_num "$M_KSTACKS" && is_num "$M_MISSES" && ((M_KSTACKS + M_MISSES > 0)); then
                    M_ALLOCS=$((M_KSTACKS + M_MISSES))
                    M_HITRATE=$(awk -v k="$M_KSTACKS" -v a="$M_ALLOCS" 'BEGIN { printf "%.3f", 100 * k / a }')
                    say "   rule cache: $M_KSTACKS stacks walked in the kernel, $M_MISSES misses sent to user space: hit rate $M_HITRATE% ($M_RULE_HITS frames stepped with a cached rule, $M_RULES_CACHED rules cached)"
                    # After warm-up: from memleak's first periodic report
                    # (every 5 s by default) that had seen allocations, to
                    # its final report.
                    local w
                    w=$(grep '"final"' "$tout" 2>/dev/null | jq -s -r '
                        (map(select(.final == false and (.losses.kernel_stacks + .losses.rule_misses) > 0)) | first) as $a | (map(select(.final == true)) | last) as $b
                        | if $a == null or $b == null then empty else
                          [($b.losses.kernel_stacks - $a.losses.kernel_stacks), ($b.losses.rule_misses - $a.losses.rule_misses)]
                          | @tsv end' 2>/dev/null || true)
                    if [[ -n $w ]]; then
                        local wk wm
                        IFS=$'\t' read -r wk wm <<<"$w"
                        if is_num "$wk" && is_num "$wm" && ((wk + wm > 0)); then
                            M_WARM_ALLOCS=$((wk + wm)) M_WARM_MISSES=$wm
                            M_WARM_HITRATE=$(awk -v k="$wk" -v a="$M_WARM_ALLOCS" 'BEGIN { printf "%.3f", 100 * k / a }')
                            say "   after warm-up (from its first periodic report with allocations to the final one): $M_WARM_ALLOCS allocations, $wm misses: hit rate $M_WARM_HITRATE%"
                        fi
                    else
                        say "   after warm-up: n/a (no periodic report with allocations before the final one)"
                    fi
                    if is_num "$M_RING"; then
                        M_RINGPER=$(awk -v b="$M_RING" -v a="$M_ALLOCS" 'BEGIN { printf "%.2f", b / a }')
                        say "   ring buffer: $M_RING bytes reserved for $M_ALLOCS allocations: $M_RINGPER bytes per allocation"
                    fi
                else
                    warn "memleak: no kernel_stacks/rule_misses in its final report"
                fi
                if ((KEEP > 0)) && is_num "$M_OUTSTANDING"; then
                    say "   outstanding allocations in the final report: $M_OUTSTANDING (the program kept $KEEP)"
                    if ((M_OUTSTANDING < KEEP)); then
                        warn "memleak reported $M_OUTSTANDING outstanding allocations, fewer than the $KEEP kept"
                        R_NOTE[$name]+="${R_NOTE[$name]:+; }kept blocks missing"
                    fi
                fi
            fi
            ;;
        bpftrace)
            local lost
            lost=$(grep -ohE 'Lost [0-9]+ events' "$tout" "$terr" 2>/dev/null | awk '{ s += $2 } END { if (NR) print s }' || true)
            R_LOST[$name]=${lost:-n/a}
            ;;
        *)
            R_LOST[$name]=n/a
            ;;
    esac
    say "   events lost: ${R_LOST[$name]}"

    # CPU time of the tool (user + sys): /usr/bin/time -v for the whole run,
    # /proc/PID/stat samples for the phases.
    local cpu="" u sy
    if [[ -s $trss ]]; then
        u=$(sed -n 's/.*User time (seconds): *\([0-9.]*\).*/\1/p' "$trss")
        sy=$(sed -n 's/.*System time (seconds): *\([0-9.]*\).*/\1/p' "$trss")
        if [[ -n $u && -n $sy ]]; then cpu=$(awk -v u="$u" -v s="$sy" 'BEGIN { printf "%.2f", u + s }'); fi
    fi
    local phases
    phases=$(awk -v tck="$CLK_TCK" -v a="$cpu_attach" -v l0="$cpu_loop0" -v l1="$cpu_loop1" -v tot="$cpu" '
        BEGIN {
            printf "start-up to attached %s", a == "" ? "?" : sprintf("%.2f s", a / tck)
            if (a != "" && l0 != "") printf ", keep phase %.2f s", (l0 - a) / tck
            if (l0 != "" && l1 != "") printf ", loop %.2f s", (l1 - l0) / tck
            if (l1 != "" && tot != "") printf ", after the loop (exit, final report) %.2f s", tot - l1 / tck
        }')
    if [[ -n $cpu_loop0 ]]; then R_CPU0[$name]=$(awk -v a="$cpu_loop0" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", a / t }'); fi
    if [[ -n $cpu_loop0 && -n $cpu_loop1 ]]; then
        R_CPUL[$name]=$(awk -v a="$cpu_loop0" -v b="$cpu_loop1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
    fi
    if [[ -n $cpu_loop1 && -n $cpu ]]; then
        R_CPUX[$name]=$(awk -v b="$cpu_loop1" -v c="$cpu" -v t="$CLK_TCK" 'BEGIN { x = c - b / t; printf "%.2f", x < 0 ? 0 : x }')
    fi
    if [[ -n $cpu ]]; then
        R_CPU[$name]=$cpu
        R_CPUPAIR[$name]=$(awk -v c="$cpu" -v p="$PAIRS" 'BEGIN { printf "%.2f", c * 1e6 / p }')
        R_CPU100K[$name]=$(awk -v c="$cpu" -v n="$((PAIRS + KEEP))" 'BEGIN { printf "%.1f", c * 1e3 * 1e5 / n }')
        say "   CPU time of the tool (user $u s + sys $sy s): $cpu s: ${R_CPUPAIR[$name]} us per pair, ${R_CPU100K[$name]} ms per 100k allocations"
    fi
    if [[ -n $cpu_loop0 && -n $cpu_loop1 ]]; then
        R_LOOPCPU[$name]=$(awk -v a="$cpu_loop0" -v b="$cpu_loop1" -v t="$CLK_TCK" -v p="$PAIRS" \
            'BEGIN { printf "%.2f", (b - a) / t * 1e6 / p }')
    fi
    say "   CPU by phase (/proc/PID/stat, ${CLK_TCK} ticks/s): $phases"

    # Peak RSS.
    local rss=""
    if [[ -s $trss ]]; then
        rss=$(sed -n 's/.*Maximum resident set size (kbytes): *\([0-9]*\).*/\1/p' "$trss")
    fi
    [[ -z $rss ]] && rss=$TOOL_HWM
    if [[ -n $rss ]]; then
        R_RSS[$name]=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
        say "   peak RSS of the tool: ${R_RSS[$name]} MiB"
    fi
    if [[ -n $hwm_loop ]]; then
        R_HWML[$name]=$(awk -v k="$hwm_loop" 'BEGIN { printf "%.1f", k / 1024 }')
        say "   peak RSS when the loop ended (before the tool's final report): ${R_HWML[$name]} MiB"
    fi

    # Memory of the BPF maps the tool's programs use (bytes_memlock, taken
    # while attached with the KEEP blocks outstanding).
    local mlines mtot=0 mid mtype mname ment mbytes
    mlines=$(tool_maps "$base" "$maps" "${NEW_IDS[@]}" 2>/dev/null || true)
    if [[ -z $mlines ]] && jq -e 'length > 0' "$maps" >/dev/null 2>&1; then
        say "   BPF maps: its programs use none"
        R_MAPS[$name]=0.0
        [[ -n $rss ]] && R_MEM[$name]=${R_RSS[$name]}
    elif [[ -n $mlines ]]; then
        say "   BPF maps used by its programs (bytes_memlock; attached, $KEEP blocks kept):"
        printf '   %-8s %-16s %-20s %12s %12s\n' id type name max_entries KiB
        local mjson="[]"
        while IFS=$'\t' read -r mid mtype mname ment mbytes; do
            [[ -z $mid ]] && continue
            mtot=$((mtot + mbytes))
            printf '   %-8s %-16s %-20s %12s %12.1f\n' "$mid" "$mtype" "$mname" "$ment" \
                "$(awk -v b="$mbytes" 'BEGIN { print b / 1024 }')"
            if [[ $name == memleak ]]; then
                mjson=$(jq -c --arg n "$mname" --arg t "$mtype" --argjson e "$ment" --argjson b "$mbytes" \
                    '. + [{name: $n, type: $t, max_entries: $e, bytes_memlock: $b}]' <<<"$mjson")
            fi
        done <<<"$mlines"
        [[ $name == memleak ]] && M_MAPS_JSON=$mjson
        R_MAPS[$name]=$(awk -v b="$mtot" 'BEGIN { printf "%.1f", b / 1048576 }')
        say "   all maps: $mtot bytes (${R_MAPS[$name]} MiB)"
        if [[ -n $rss ]]; then
            R_MEM[$name]=$(awk -v k="$rss" -v b="$mtot" 'BEGIN { printf "%.1f", (k * 1024 + b) / 1048576 }')
            say "   peak RSS + maps: ${R_MEM[$name]} MiB"
        fi
    else
        say "   BPF maps: none found (bpftool map show failed?)"
    fi
    TOOL_PID=""
}

# --- detach: memleak's exit after its final report -------------------------
# The issue: with 20 probes memleak should exit within 0.3 s of its final
# report. Measured and printed here, never asserted.

# detach_timer LIMIT OUT ERR CMD...: runs CMD (stdout to OUT, stderr to ERR)
# and prints "RC SECONDS": its exit status and the wall time from the moment
# the first stderr line with `Final report` was read to the moment CMD had
# exited ("-" without such a line). CMD is killed after LIMIT seconds
# (RC "killed").
detach_timer() {
    python3 - "$@" <<'PY'
import os, signal, subprocess, sys, threading, time

limit, out, err, cmd = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
killed = []

def kill():
    killed.append(True)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

with open(out, "wb") as o, open(err, "wb") as e:
    # Own process group, so that a timeout (or Ctrl-C of the script) ends
    # memleak and the program it traces together.
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=subprocess.PIPE,
                         start_new_session=True)
    timer = threading.Timer(limit, kill)
    timer.daemon = True
    timer.start()
    t_report = None
    try:
        for line in p.stderr:
            now = time.monotonic()
            e.write(line)
            if t_report is None and b"Final report" in line:
                t_report = now
        rc = p.wait()
        t_exit = time.monotonic()
    except BaseException:
        kill()
        raise
    timer.cancel()
print("killed" if killed else rc, "-" if t_report is None else "%.6f" % (t_exit - t_report))
PY
}

# duration_s TEXT: a Rust Duration as printed by {:?} (48.237012ms,
# 1.738211886s, 950µs, 120ns) in seconds
duration_s() {
    awk -v d="$1" 'BEGIN {
        if (match(d, /^[0-9.]+/) == 0) exit 1
        v = substr(d, 1, RLENGTH); u = substr(d, RLENGTH + 1)
        f = (u == "s") ? 1 : (u == "ms") ? 1e-3 : (u == "µs" || u == "us") ? 1e-6 : (u == "ns") ? 1e-9 : -1
        if (f < 0) exit 1
        printf "%.6f", v * f
    }'
}

# median NUMBERS...: the median (mean of the two middle ones for an even count)
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit 1
        if (NR % 2) printf "%.6f", v[(NR + 1) / 2]; else printf "%.6f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Per attach mode: D_PROBES probes attached, D_LINKS links, D_R2E median
# seconds from the final report to memleak's exit, D_CLOSE median seconds
# memleak logged for closing its links ("detached in"), D_N runs counted,
# D_RUNS_R2E / D_RUNS_CLOSE the figures of each run (space-separated),
# D_NOTE why a mode has no figures.
declare -A D_PROBES D_LINKS D_R2E D_CLOSE D_N D_RUNS_R2E D_RUNS_CLOSE D_NOTE
D_MODES=()

# run_detach: memleak --mmap -vv --attach MODE -- malloc_bench DETACH_PAIRS,
# DETACH_RUNS times per mode (multi, single)
run_detach() {
    local why memleak mode i tag tout terr res rc r2e probes links close c note
    local limit=$((ATTACH_TIMEOUT + STOP_TIMEOUT))
    say ""
    say "== detach (memleak's exit after its final report; runs per attach mode: $DETACH_RUNS, pairs: $DETACH_PAIRS)"
    if ! why=$(tool_check memleak); then
        say "   skipped: $why"
        return 0
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        say "   skipped: python3 not found (it times memleak's stderr)"
        return 0
    fi
    memleak=$(find_memleak)
    for mode in multi single; do
        D_MODES+=("$mode")
        D_PROBES[$mode]="" D_LINKS[$mode]="" D_R2E[$mode]="" D_CLOSE[$mode]="" D_N[$mode]=0
        D_RUNS_R2E[$mode]="" D_RUNS_CLOSE[$mode]="" D_NOTE[$mode]=""
        say "   --attach $mode: ${memleak} --mmap -vv --attach $mode -- $BIN $DETACH_PAIRS"
        for ((i = 1; i <= DETACH_RUNS; i++)); do
            tag=detach-$mode-$i
            tout=$OUT/$tag.out terr=$OUT/$tag.err
            # --attach on the command line; MEMLEAK_ATTACH unset all the same
            res=$(unset MEMLEAK_ATTACH
                detach_timer "$limit" "$tout" "$terr" \
                    "$memleak" --mmap -vv --attach "$mode" -- "$BIN" "$DETACH_PAIRS") || true
            rc="" r2e=""
            read -r rc r2e <<<"$res"
            [[ $rc == killed ]] && rc="killed after ${limit}s"
            if [[ $rc != 0 ]]; then
                if grep -qi '^error:.*multi-uprobe' "$terr" 2>/dev/null; then
                    note="the kernel refuses multi-uprobe links"
                    say "   skipped: $note: $(grep -i -m1 '^error:' "$terr")"
                    D_NOTE[$mode]="skipped: $note"
                elif grep -q "^error: invalid option '--attach'" "$terr" 2>/dev/null; then
                    note="this memleak has no --attach option (an older build? set MEMLEAK)"
                    say "   skipped: $note"
                    D_NOTE[$mode]="skipped: $note"
                else
                    say "   run $i failed (exit ${rc:-?}); last lines of its stderr ($terr):"
                    tail -n 5 "$terr" | sed 's/^/   | /'
                    D_NOTE[$mode]="failed (exit ${rc:-?})"
                    FAILURES+=("memleak (detach, --attach $mode): exit ${rc:-?}")
                fi
                break
            fi
            if [[ $r2e == - ]]; then
                say "   run $i: no \`Final report\` line on memleak's stderr ($terr)"
                D_NOTE[$mode]="no final report"
                FAILURES+=("memleak (detach, --attach $mode) printed no final report")
                break
            fi
            # `attached 20 probes to /lib/.../libc.so.6 for pid N (2 links)`,
            # one line per library probed: the sums
            probes=$(sed -n 's/.*attached \([0-9][0-9]*\) probes to .* (\([0-9][0-9]*\) links\{0,1\})$/\1 \2/p' "$terr" |
                awk '{ p += $1; l += $2 } END { if (NR) print p, l }')
            read -r probes links <<<"$probes"
            # `2 probe links detached in 48.237012ms` (closed by memleak) or
            # `21 probe links handed to a child process to release, in
            # 56.5µs` (released after memleak exited): the sum of such lines
            close=""
            while read -r c; do
                c=$(duration_s "$c") || continue
                close=$(awk -v a="${close:-0}" -v b="$c" 'BEGIN { printf "%.6f", a + b }')
            done < <(sed -n -e 's/.* probe links\{0,1\} detached in \([^ ]*\)$/\1/p' \
                -e 's/.* probe links\{0,1\} handed to a child process to release, in \([^ ]*\)$/\1/p' "$terr")
            if [[ -n ${D_PROBES[$mode]} && "${D_PROBES[$mode]}:${D_LINKS[$mode]}" != "$probes:$links" ]]; then
                warn "detach --attach $mode: run $i attached $probes probes with $links links, an earlier run ${D_PROBES[$mode]} with ${D_LINKS[$mode]}"
            fi
            D_PROBES[$mode]=$probes D_LINKS[$mode]=$links
            D_RUNS_R2E[$mode]+="${D_RUNS_R2E[$mode]:+ }$r2e"
            [[ -n $close ]] && D_RUNS_CLOSE[$mode]+="${D_RUNS_CLOSE[$mode]:+ }$close"
            D_N[$mode]=$((D_N[$mode] + 1))
            say "$(printf '   run %d: %s probes, %s links; final report -> exit %.3f s; links closed in %s' \
                "$i" "${probes:-?}" "${links:-?}" "$r2e" \
                "$([[ -n $close ]] && printf '%.3f s' "$close" || echo '? (no "detached in" line: -vv?)')")"
        done
        if ((D_N[$mode] > 0)); then
            # shellcheck disable=SC2086
            D_R2E[$mode]=$(median ${D_RUNS_R2E[$mode]})
            # shellcheck disable=SC2086
            [[ -n ${D_RUNS_CLOSE[$mode]} ]] && D_CLOSE[$mode]=$(median ${D_RUNS_CLOSE[$mode]})
            say "$(printf '   --attach %s: final report -> exit %.3f s, links closed in %s (median of %d)' \
                "$mode" "${D_R2E[$mode]}" \
                "$([[ -n ${D_CLOSE[$mode]} ]] && printf '%.3f s' "${D_CLOSE[$mode]}" || echo '?')" "${D_N[$mode]}")"
        fi
    done
}

# --- main ----------------------------------------------------------------
ORDER=()
for t in $TOOLS; do
    case $t in
        alone) run_alone || { echo "run.sh: the program does not run alone" >&2; exit 1; } ;;
        memleak | libbpf-tools | bpftrace)
            if ! run_tool "$t" && [[ $t == memleak ]]; then
                FAILURES+=("memleak: ${R_NOTE[$t]:-failed}")
            fi
            ;;
        detach) run_detach; continue ;;
        *) warn "unknown run '$t' (alone, memleak, libbpf-tools, bpftrace, detach)"; continue ;;
    esac
    ORDER+=("$t")
done

# ratio of memleak's BPF time per pair to libbpf-tools'
RATIO=""
if is_num "${R_NSPAIR[memleak]:-}" && is_num "${R_NSPAIR[libbpf-tools]:-}"; then
    RATIO=$(awk -v a="${R_NSPAIR[memleak]}" -v b="${R_NSPAIR[libbpf-tools]}" 'BEGIN { if (b > 0) printf "%.2f", a / b }')
fi

# aim VALUE OP LIMIT: "ok" or "MISSED" ("n/a" without a value)
aim() {
    is_num "$1" || { echo n/a; return; }
    awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = (op == "<=") ? (v <= l) : (v >= l); print ok ? "ok" : "MISSED" }'
}

say ""
# With only a detach run (TOOLS=detach) there are no tables to print.
if ((${#ORDER[@]} > 0)); then
    say "== summary ($PAIRS malloc/free pairs, $KEEP blocks kept live; BPF figures are for the loop only)"
    printf '%-13s %10s %9s %12s %11s %12s %12s %12s  %s\n' \
        run loop_s slowdown bpf_ns/call calls/pair bpf_ns/pair us/call_wall lost_events note
    for t in "${ORDER[@]}"; do
        printf '%-13s %10s %9s %12s %11s %12s %12s %12s  %s\n' "$t" "${R_SECS[$t]}" "${R_RATIO[$t]}" \
            "${R_NS[$t]}" "${R_PERPAIR[$t]}" "${R_NSPAIR[$t]}" "${R_WALL[$t]}" "${R_LOST[$t]}" "${R_NOTE[$t]}"
    done
    say ""
    say "tool cost (CPU: user + sys of the tool process, whole run and by phase; memory with $KEEP blocks outstanding)"
    printf '%-13s %6s %9s %8s %9s %11s %12s %11s %8s %9s %9s %13s\n' \
        run cpu_s cpu_start cpu_loop cpu_after cpu_us/pair loop_us/pair ms/100k_all rss_MiB rss@loop maps_MiB rss+maps_MiB
    for t in "${ORDER[@]}"; do
        [[ $t == alone ]] && continue
        printf '%-13s %6s %9s %8s %9s %11s %12s %11s %8s %9s %9s %13s\n' "$t" "${R_CPU[$t]}" \
            "${R_CPU0[$t]}" "${R_CPUL[$t]}" "${R_CPUX[$t]}" "${R_CPUPAIR[$t]}" "${R_LOOPCPU[$t]}" \
            "${R_CPU100K[$t]}" "${R_RSS[$t]}" "${R_HWML[$t]}" "${R_MAPS[$t]}" "${R_MEM[$t]}"
    done
    say ""
    say "memleak against libbpf-tools"
    RATIO_TXT=n/a HIT_TXT=n/a
    [[ -n $RATIO ]] && RATIO_TXT=${RATIO}x
    [[ -n $M_HITRATE ]] && HIT_TXT=$M_HITRATE%
    printf '  %-44s %-28s %s\n' "BPF ns per pair, memleak / libbpf-tools" \
        "$RATIO_TXT (${R_NSPAIR[memleak]:--} / ${R_NSPAIR[libbpf-tools]:--})" \
        "aim <= 1.5x: $(aim "$RATIO" '<=' 1.5)"
    printf '  %-44s %-28s %s\n' "rule-cache hit rate (whole run)" \
        "$HIT_TXT (${M_KSTACKS:--} / ${M_ALLOCS:--})" \
        "aim >= 99%: $(aim "$M_HITRATE" '>=' 99)"
    WARM_TXT=n/a
    [[ -n $M_WARM_HITRATE ]] && WARM_TXT="$M_WARM_HITRATE% ($M_WARM_MISSES misses in $M_WARM_ALLOCS)"
    printf '  %-44s %-28s %s\n' "rule-cache hit rate after warm-up" "$WARM_TXT" \
        "aim >= 99%: $(aim "$M_WARM_HITRATE" '>=' 99)"
    printf '  %-44s %-28s %s\n' "ring bytes per allocation" \
        "${M_RINGPER:-n/a} (${M_RING:--} / ${M_ALLOCS:--})" ""
    printf '  %-44s %-28s %s\n' "memleak CPU per pair (us, whole run)" \
        "${R_CPUPAIR[memleak]:--} (loop only: ${R_LOOPCPU[memleak]:--})" \
        "aim <= 0.5: $(aim "${R_CPUPAIR[memleak]:-}" '<=' 0.5)"
    printf '  %-44s %-28s %s\n' "memleak peak RSS + maps (MiB)" \
        "${R_MEM[memleak]:--} (${R_RSS[memleak]:--} + ${R_MAPS[memleak]:--})" \
        "aim <= 16: $(aim "${R_MEM[memleak]:-}" '<=' 16)"
else
    say "== summary"
fi

# memleak's exit after its final report (measured, not judged: the issue
# asks for <= 0.3 s with 20 probes)
if ((${#D_MODES[@]} > 0)); then
    say ""
    for m in "${D_MODES[@]}"; do
        if [[ -n ${D_R2E[$m]} ]]; then
            say "$(printf 'detach (%s probes, %s, %s links): report -> exit %.2f s (median of %d; kernel close %s)' \
                "${D_PROBES[$m]:-?}" "$m" "${D_LINKS[$m]:-?}" "${D_R2E[$m]}" "${D_N[$m]}" \
                "$([[ -n ${D_CLOSE[$m]} ]] && printf '%.2f s' "${D_CLOSE[$m]}" || echo '?')")"
        else
            say "detach ($m): ${D_NOTE[$m]:-no figure}"
        fi
    done
fi
DETACH_JSON="{}"
for m in "${D_MODES[@]}"; do
    DETACH_JSON=$(jq -c --arg m "$m" --arg probes "${D_PROBES[$m]}" --arg links "${D_LINKS[$m]}" \
        --arg r2e "${D_R2E[$m]}" --arg close "${D_CLOSE[$m]}" --arg n "${D_N[$m]}" \
        --arg r2es "${D_RUNS_R2E[$m]}" --arg closes "${D_RUNS_CLOSE[$m]}" --arg note "${D_NOTE[$m]}" '
        def num: if test("^-?[0-9]+([.][0-9]+)?$") then tonumber elif . == "" then null else . end;
        def r3: if . == null then null else (. * 1000 | round) / 1000 end;
        def nums: split(" ") | map(select(. != "") | tonumber | r3);
        . + {($m): {probes: ($probes | num), links: ($links | num),
                    report_to_exit_s: ($r2e | num | r3), close_s: ($close | num | r3),
                    runs: ($n | num), report_to_exit_s_runs: ($r2es | nums),
                    close_s_runs: ($closes | nums), note: $note}}' <<<"$DETACH_JSON")
done

# Machine-readable summary
SUMMARY=$OUT/summary.json
{
    for t in "${ORDER[@]}"; do
        jq -n -c --arg run "$t" --arg loop_s "${R_SECS[$t]}" --arg slowdown "${R_RATIO[$t]%x}" \
            --arg bpf_ns_per_call "${R_NS[$t]}" --arg bpf_calls_per_pair "${R_PERPAIR[$t]}" \
            --arg bpf_ns_per_pair "${R_NSPAIR[$t]}" --arg wall_us_per_call "${R_WALL[$t]}" \
            --arg lost_events "${R_LOST[$t]}" --arg cpu_s "${R_CPU[$t]}" \
            --arg cpu_us_per_pair "${R_CPUPAIR[$t]}" --arg cpu_ms_per_100k_allocs "${R_CPU100K[$t]}" \
            --arg loop_cpu_us_per_pair "${R_LOOPCPU[$t]}" --arg rss_mib "${R_RSS[$t]}" \
            --arg cpu_start_s "${R_CPU0[$t]}" --arg cpu_loop_s "${R_CPUL[$t]}" \
            --arg cpu_after_s "${R_CPUX[$t]}" --arg rss_at_loop_end_mib "${R_HWML[$t]}" \
            --arg maps_mib "${R_MAPS[$t]}" --arg rss_plus_maps_mib "${R_MEM[$t]}" --arg note "${R_NOTE[$t]}" '
            def num: if test("^-?[0-9]+([.][0-9]+)?$") then tonumber elif . == "-" or . == "" then null else . end;
            {run: $run, loop_s: ($loop_s | num), slowdown: ($slowdown | num),
             bpf_ns_per_call: ($bpf_ns_per_call | num), bpf_calls_per_pair: ($bpf_calls_per_pair | num),
             bpf_ns_per_pair: ($bpf_ns_per_pair | num), wall_us_per_call: ($wall_us_per_call | num),
             lost_events: ($lost_events | num), cpu_s: ($cpu_s | num),
             cpu_us_per_pair: ($cpu_us_per_pair | num), cpu_ms_per_100k_allocs: ($cpu_ms_per_100k_allocs | num),
             cpu_start_s: ($cpu_start_s | num), cpu_loop_s: ($cpu_loop_s | num),
             cpu_after_s: ($cpu_after_s | num),
             loop_cpu_us_per_pair: ($loop_cpu_us_per_pair | num), rss_mib: ($rss_mib | num),
             rss_at_loop_end_mib: ($rss_at_loop_end_mib | num),
             maps_mib: ($maps_mib | num), rss_plus_maps_mib: ($rss_plus_maps_mib | num), note: $note}'
    done
} | jq -s --argjson pairs "$PAIRS" --argjson keep "$KEEP" --arg ratio "$RATIO" \
    --arg hit "$M_HITRATE" --arg ks "$M_KSTACKS" --arg mi "$M_MISSES" --arg rh "$M_RULE_HITS" \
    --arg ring "$M_RING" --arg allocs "$M_ALLOCS" --arg ringper "$M_RINGPER" \
    --arg outst "$M_OUTSTANDING" --argjson maps "$M_MAPS_JSON" --argjson detach "$DETACH_JSON" \
    --arg whit "$M_WARM_HITRATE" --arg wall "$M_WARM_ALLOCS" --arg wmi "$M_WARM_MISSES" \
    --arg failures "$(printf '%s\n' "${FAILURES[@]}")" '
    def num: if test("^-?[0-9]+([.][0-9]+)?$") then tonumber elif . == "" then null else . end;
    {pairs: $pairs, keep: $keep, runs: .,
     memleak_vs_libbpf_tools_bpf_ns_per_pair: ($ratio | num),
     memleak: {rule_cache_hit_rate_pct: ($hit | num), kernel_stacks: ($ks | num),
               rule_misses: ($mi | num), rule_hits: ($rh | num), ringbuf_bytes: ($ring | num),
               warm_hit_rate_pct: ($whit | num), warm_allocations: ($wall | num),
               warm_rule_misses: ($wmi | num),
               allocations: ($allocs | num), ring_bytes_per_allocation: ($ringper | num),
               final_outstanding_allocations: ($outst | num), maps: $maps},
     detach: $detach,
     failures: ($failures | split("\n") | map(select(. != "")))}' >"$SUMMARY"
say ""
say "summary: $SUMMARY"

if ((${#FAILURES[@]} > 0)); then
    for f in "${FAILURES[@]}"; do warn "FAILED: $f"; done
    exit 1
fi
