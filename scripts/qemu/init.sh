#!/bin/busybox sh
# shellcheck shell=dash
# /init of the guests that have a static busybox (scripts/qemu/run builds the
# initramfs). Runs the leak checks and prints each result on the console
# between marker lines that scripts/qemu/check.py parses:
#   ==MLQ== BEGIN <step> <stream>  ...  ==MLQ== END <step> <stream>
#   ==MLQ== RC <step> <exit code>
#   ==MLQ== T <step> <seconds since boot>
# With `mlq.expect=error` on the kernel command line (a kernel that must
# refuse memleak, e.g. one without CONFIG_BPF_EVENTS), it runs memleak as
# usual, once on a command and once on a PID, and check.py wants the error.
# mini-init.c does the same steps (the guest without busybox); keep the two
# in step.
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tmpfs tmpfs /tmp

M="==MLQ=="
# MEMLEAK_QEMU_JIT on the host: 1 or 0 for net.core.bpf_jit_enable.
if [ -s /bpf-jit ]; then
    cat /bpf-jit >/proc/sys/net/core/bpf_jit_enable 2>/dev/null ||
        echo "init: cannot set bpf_jit_enable to $(cat /bpf-jit)"
fi
# Extra memleak options (MEMLEAK_OPTS on the host), split on blanks.
set -f
# shellcheck disable=SC2046
set -- $(cat /memleak-opts 2>/dev/null)
set +f

stamp() { echo "$M T $1 $(cut -d' ' -f1 /proc/uptime)"; }
show() { # STEP STREAM FILE
    echo "$M BEGIN $1 $2"
    cat "$3"
    echo
    echo "$M END $1 $2"
}

echo "$M BEGIN info"
echo "kernel=$(uname -r)"
echo "machine=$(uname -m)"
if [ -e /sys/kernel/btf/vmlinux ]; then echo "btf=yes"; else echo "btf=no"; fi
# net.core.bpf_jit_enable; "absent" without a JIT in the kernel.
if [ -e /proc/sys/net/core/bpf_jit_enable ]; then
    echo "bpf_jit_enable=$(cat /proc/sys/net/core/bpf_jit_enable)"
else
    echo "bpf_jit_enable=absent"
fi
echo "cpus=$(grep -c ^processor /proc/cpuinfo)"
# What a uprobe needs: the perf PMU, or uprobe_events in tracefs.
if [ -e /sys/bus/event_source/devices/uprobe/type ]; then echo "uprobe_pmu=yes"; else echo "uprobe_pmu=no"; fi
if [ -e /sys/kernel/tracing/uprobe_events ]; then
    echo "uprobe_events=yes"
elif [ -d /sys/kernel/tracing ] && grep -qw tracefs /proc/mounts; then
    echo "uprobe_events=no (tracefs mounted)"
else
    echo "uprobe_events=no (no tracefs)"
fi
echo "opts=$*"
mode=leaks
case " $(cat /proc/cmdline) " in
*" mlq.expect=error "*) mode=expect-error ;;
esac
echo "mode=$mode"
echo "$M END info"

# A binary file for the host: its size, then base64.
show_file() { # STEP STREAM FILE
    echo "$M BEGIN $1 $2"
    if [ -f "$3" ]; then
        echo "bytes=$(wc -c <"$3")"
        base64 "$3"
    else
        echo "missing"
    fi
    echo "$M END $1 $2"
}

# run STEP ARGS...: memleak ARGS with stdout and stderr kept apart.
run() {
    step=$1
    shift
    stamp "$step"
    /memleak "$@" >/tmp/out 2>/tmp/err
    rc=$?
    stamp "$step.done"
    show "$step" stdout /tmp/out
    show "$step" stderr /tmp/err
    echo "$M RC $step $rc"
}
# A failed run again with -v, for the log.
again_verbose() { # STEP ARGS...
    step=$1
    shift
    [ "$rc" -eq 0 ] || run "$step.verbose" -v "$@"
}

# A background child is attachable once it has exec'd its program (before
# that, /proc/PID/exe is this shell): wait for it, up to 5 s.
wait_exec() {
    i=0
    while [ "$(readlink "/proc/$1/exe")" != "$2" ] && [ "$i" -lt 50 ]; do
        usleep 100000
        i=$((i + 1))
    done
}

# The target of the -p runs: leaky allocating every 100 ms for up to a
# minute (memleak may take 10 s to load on an old kernel, e.g. 5.4 under
# TCG), stopped once memleak is done. Sets pid.
start_target() {
    /leaky-dyn 600 100 2>/tmp/leaky-err &
    pid=$!
    wait_exec "$pid" /leaky-dyn
}
stop_target() {
    kill "$pid" 2>/dev/null
    wait "$pid"
}

finish() {
    dmesg >/tmp/dmesg
    show kernel dmesg /tmp/dmesg
    stamp "done"
    echo "$M DONE"
    sync
    poweroff -f
    sleep 5
    echo o >/proc/sysrq-trigger
}

if [ "$mode" = expect-error ]; then
    # memleak must refuse this kernel: on a command, and on a PID.
    run errcmd "$@" -- /leaky-dyn 6 0
    run errcmd.verbose -v "$@" -- /leaky-dyn 6 0
    start_target
    echo "$M PID errpid $pid"
    run errpid "$@" -p "$pid" 1 2
    stop_target
    finish
    exit 0
fi

run dyn "$@" --format json -- /leaky-dyn 6 0
again_verbose dyn "$@" --format json -- /leaky-dyn 6 0
run static "$@" --format json -- /leaky-static 6 0
again_verbose static "$@" --format json -- /leaky-static 6 0

start_target
echo "$M PID attach $pid"
# With -v -v: its log names the event transport, and has the verifier's
# statistics of each BPF program and the load time.
run attach -v -v "$@" --format json -p "$pid" 1 2
stop_target
echo "$M RC attach.target $?"
show attach target-stderr /tmp/leaky-err
if [ "$rc" -ne 0 ]; then
    start_target
    run attach.verbose -v -v "$@" --format json -p "$pid" 1 2
    stop_target
fi

# 99999 is above the default pid_max of a small guest: no such process.
run badpid "$@" -p 99999

# Every allocation's stack unwound both in the kernel and in user space. The
# pauses let memleak cache the chain's rules after the first allocations
# (misses), so that the kernel walks the later ones and they are compared.
run verify "$@" --verify-unwind --format json -- /leaky-dyn 20 30
again_verbose verify "$@" --verify-unwind --format json -- /leaky-dyn 20 30

# The fallbacks for older kernels, forced: perf buffer and bpf_probe_read.
# With -v -v (so not repeated): its log names the variant it loaded, and has
# the verifier's statistics of that variant.
run fallback -v -v "$@" --events perfbuf --read-helper legacy --format json -- /leaky-dyn 6 0

# tests/fixtures/src/musl_leak.c: leaks made inside musl's strdup, fopen and
# qsort (no CFI, no frame pointers), static and dynamic. With a command,
# memleak writes its reports to stderr unless --output - (the program's
# EXPECT lines are on stderr).
run musl-static "$@" --format json --output - -T 1000 -- /musl-leak-static
again_verbose musl-static "$@" --format json --output - -T 1000 -- /musl-leak-static
run musl-dyn "$@" --format json --output - -T 1000 -- /musl-leak-dyn
again_verbose musl-dyn "$@" --format json --output - -T 1000 -- /musl-leak-dyn
# 300: the program pauses 300 ms after its first strdup, so that the kernel
# walks the other three over the rules cached for musl's code.
run musl-verify "$@" --verify-unwind --format json --output - -T 1000 -- /musl-leak-dyn 300
again_verbose musl-verify "$@" --verify-unwind --format json --output - -T 1000 -- /musl-leak-dyn 300
# CFI and frame pointers alone: the stacks through strdup stop there.
run musl-cfifp "$@" --unwind cfi-fp --format json --output - -T 1000 -- /musl-leak-static
again_verbose musl-cfifp "$@" --unwind cfi-fp --format json --output - -T 1000 -- /musl-leak-static

# Firmware stripped as OpenWrt strips it (/fw/sstrip_main and its
# /fw/libplugin.so, without section headers): the run recorded on the device
# (`record` is memleak's first argument, the extra options after it), and
# the recording printed in base64 (76-column lines) for the host, which
# reports it (check.py: memleak report, with and without the unstripped
# build).
run record record "$@" --output /tmp/rec.mlr -- /fw/sstrip_main 4
show_file record recording /tmp/rec.mlr
[ "$rc" -eq 0 ] || run record.verbose record -v "$@" --output /tmp/rec-v.mlr -- /fw/sstrip_main 4

finish
