#!/usr/bin/env bash
# Benchmark: a malloc/free loop alone, under memleak, under the reference
# libbpf-tools memleak and under bpftrace with empty malloc/free uprobes.
# See bench/README.md for what the figures mean.
#
# Usage: bench/run.sh [PAIRS]        (as root; PAIRS defaults to 200000)
#
# Environment:
#   PAIRS                  malloc/free pairs per run (default 200000; argv[1] wins)
#   TOOLS                  runs to do, in order (default "alone memleak libbpf-tools bpftrace")
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
#   NO_INSTALL=1           never call apt-get
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

PAIRS=${1:-${PAIRS:-200000}}
TOOLS=${TOOLS:-"alone memleak libbpf-tools bpftrace"}
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
say "built $BIN ($PAIRS pairs per run; logs in $OUT)"

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
    "$BIN" --wait --go-file "$GO_FILE" "$PAIRS" 2>"$BENCH_ERR" &
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

# new_ids BEFORE PID: ids of the programs loaded since BEFORE, less those
# that another process has attached
new_ids() {
    comm -23 <(comm -13 <(printf '%s\n' "$1" | sort) <(prog_ids | sort)) <(foreign_ids "$2" | sort) |
        sed '/^$/d' | sort -n
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
declare -A R_SECS R_RATIO R_NS R_PERPAIR R_WALL R_LOST R_RSS R_NOTE
ALONE_SECS=""

fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "n/a" }'; }

run_alone() {
    local i s best=""
    say ""
    say "== alone (fastest of $ALONE_RUNS)"
    for ((i = 1; i <= ALONE_RUNS; i++)); do
        start_bench "alone-$i" || return 1
        go_bench
        TOOL_PID=""
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
    R_SECS[alone]=$best
    R_RATIO[alone]=1.0x
    R_NS[alone]=-
    R_PERPAIR[alone]=-
    R_WALL[alone]=-
    R_LOST[alone]=-
    R_RSS[alone]=-
    R_NOTE[alone]=""
    say "   loop seconds: $best"
}

run_tool() {
    local name=$1 why
    TOOL_NAME=$name
    say ""
    say "== $name"
    R_SECS[$name]=-; R_RATIO[$name]=-; R_NS[$name]=-; R_PERPAIR[$name]=-; R_WALL[$name]=-
    R_LOST[$name]=-; R_RSS[$name]=-; R_NOTE[$name]=""
    if ! why=$(tool_check "$name"); then
        say "   skipped: $why"
        R_NOTE[$name]="skipped"
        return 0
    fi

    local tag=$name
    local tout=$OUT/$tag.out terr=$OUT/$tag.err trss=$OUT/$tag.time
    local base=$OUT/$tag.progs-before.json final=$OUT/$tag.progs-after.json
    rm -f "$tout" "$terr" "$trss"

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
    say "   attached: ${#NEW_IDS[@]} BPF programs (ids ${NEW_IDS[*]}), $(attachments "$TOOL_PID" "${NEW_IDS[@]}") attachments"

    # Baseline statistics, then go; nothing is forked until the program exits.
    bpftool prog show --json >"$base"
    go_bench
    wait_bench
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
        say "   all programs: $tot_cnt calls, ${R_NS[$name]} ns/call, ${R_PERPAIR[$name]} calls per malloc/free pair"
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

    # Lost events.
    case $name in
        memleak)
            local lost
            lost=$(grep '"final"' "$tout" 2>/dev/null | jq -r 'select(.final == true) | .lost_events // empty' 2>/dev/null | tail -n1 || true)
            if [[ -z $lost ]]; then
                lost=$(grep '"final": *true' "$tout" 2>/dev/null | sed -n 's/.*"lost_events": *\([0-9]*\).*/\1/p' | tail -n1 || true)
            fi
            if [[ -n $lost ]]; then
                R_LOST[$name]=$lost
            else
                R_LOST[$name]="no final report"
                warn "memleak: no JSON line with \"final\": true in $tout"
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
    TOOL_PID=""
}

# --- main ----------------------------------------------------------------
ORDER=()
for t in $TOOLS; do
    case $t in
        alone) run_alone || { echo "run.sh: the program does not run alone" >&2; exit 1; } ;;
        memleak | libbpf-tools | bpftrace) run_tool "$t" || true ;;
        *) warn "unknown run '$t' (alone, memleak, libbpf-tools, bpftrace)"; continue ;;
    esac
    ORDER+=("$t")
done

say ""
say "== summary ($PAIRS malloc/free pairs; BPF figures are for the loop only)"
printf '%-13s %10s %9s %12s %11s %12s %12s %10s  %s\n' \
    run loop_s slowdown bpf_ns/call calls/pair us/call_wall lost_events rss_MiB note
for t in "${ORDER[@]}"; do
    printf '%-13s %10s %9s %12s %11s %12s %12s %10s  %s\n' "$t" "${R_SECS[$t]}" "${R_RATIO[$t]}" \
        "${R_NS[$t]}" "${R_PERPAIR[$t]}" "${R_WALL[$t]}" "${R_LOST[$t]}" "${R_RSS[$t]}" "${R_NOTE[$t]}"
done
