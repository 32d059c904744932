#!/bin/busybox sh
# shellcheck shell=dash
# /init of the guests that have a static busybox (scripts/qemu/run builds the
# initramfs). Runs the leak checks and prints each result on the console
# between marker lines that scripts/qemu/check.py parses:
#   ==MLQ== BEGIN <step> <stream>  ...  ==MLQ== END <step> <stream>
#   ==MLQ== RC <step> <exit code>
#   ==MLQ== T <step> <seconds since boot>
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
echo "opts=$*"
echo "$M END info"

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

run dyn "$@" --format json -- /leaky-dyn 6 0
again_verbose dyn "$@" --format json -- /leaky-dyn 6 0
run static "$@" --format json -- /leaky-static 6 0
again_verbose static "$@" --format json -- /leaky-static 6 0

/leaky-dyn 40 100 2>/tmp/leaky-err &
pid=$!
wait_exec "$pid" /leaky-dyn
echo "$M PID attach $pid"
# With -v -v: its log names the event transport, and has the verifier's
# statistics of each BPF program and the load time.
run attach -v -v "$@" --format json -p "$pid" 1 2
wait "$pid"
echo "$M RC attach.target $?"
show attach target-stderr /tmp/leaky-err
if [ "$rc" -ne 0 ]; then
    /leaky-dyn 40 100 2>/tmp/leaky-err &
    pid=$!
    wait_exec "$pid" /leaky-dyn
    run attach.verbose -v -v "$@" --format json -p "$pid" 1 2
    wait "$pid"
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

dmesg >/tmp/dmesg
show kernel dmesg /tmp/dmesg
stamp "done"
echo "$M DONE"
sync
poweroff -f
sleep 5
echo o >/proc/sysrq-trigger
