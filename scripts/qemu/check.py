#!/usr/bin/env python3
"""Checks the console log of one guest of scripts/qemu/run.

The guest's init (init.sh / mini-init.c) prints each result between marker
lines:  ==MLQ== BEGIN <step> <stream> ... ==MLQ== END <step> <stream>,
==MLQ== RC <step> <code>, ==MLQ== T <step> <uptime>, ==MLQ== DONE.

Steps: info; dyn and static (memleak --format json -- /leaky-{dyn,static} 6 0);
attach (memleak -v -v --format json -p PID 1 2 on /leaky-dyn 600 100, stopped
after); badpid
(memleak -p 99999); verify (memleak --verify-unwind --format json --
/leaky-dyn 20 30); fallback (memleak -v -v --events perfbuf --read-helper
legacy --format json -- /leaky-dyn 6 0); musl-static and musl-dyn (memleak
--format json --output - -T 1000 -- /musl-leak-{static,dyn}: the musl
fixture, tests/fixtures/src/musl_leak.c; its reports on stdout, its EXPECT
and EXPECT_SITE lines on stderr); musl-verify (the same with
--verify-unwind on /musl-leak-dyn 300); musl-cfifp (the same with --unwind
cfi-fp on /musl-leak-static); record (memleak record --output /tmp/rec.mlr
-- /fw/sstrip_main 4: tests/fixtures/src/sstrip_main.c and its libplugin.so
stripped of their section headers; the recording follows in base64, as
stream `recording`, which this script decodes into rec.mlr beside the log
and reports with --host-memleak, once with the unstripped build's tree
(--sysroot) and once with an empty one); kernel (dmesg). A failed memleak
run is repeated with -v as <step>.verbose (not fallback, which has -v -v),
shown here when a check fails. The -v -v logs of attach and fallback have
the verifier's statistics of each BPF program ("[DEBUG verifier] walk_stack:
processed N insns ...") and the load time, which are printed.

Expected-error mode (--expect-error TEXT; the guest booted with
mlq.expect=error, on a kernel that must refuse memleak): steps errcmd
(memleak -- /leaky-dyn 6 0), errcmd.verbose (the same with -v, for the log)
and errpid (memleak -p PID 1 2 on /leaky-dyn 600 100). Each of errcmd and
errpid must exit non-zero (not by a signal or a Rust panic), with exactly one
`error:` line on stderr that contains TEXT and nothing else there, and no
panic or backtrace; when TEXT is a CONFIG_ option and the kernel's .config
is known, that option must be off in it; when TEXT is a version (a kernel
floor), the guest's kernel must be older.

Usage: check.py --target NAME --source examples/leaky.c
                --musl-source tests/fixtures/src/musl_leak.c [--kernel-config FILE]
                [--fixtures tests/fixtures/src] [--sysroot DIR] [--host-memleak BIN]
                [--expect-error TEXT] [--summary FILE] LOG
Prints one line per check, details for failed ones, and exits 1 if any failed.
--summary writes shell assignments for run's table: release (uname -r), btf,
jit (JIT, interpreter, or no JIT in kernel), events (the event transport
memleak -v names; ringbuf when it names none), checks, reason (why the
first failing step failed), walk_insns, walk_states, load_s (walk_stack's
verifier statistics and the BPF object's load time in the attach run, "-"
when its log has none) and verifier (one line with those of both -v -v
runs); in expected-error mode also mode=expect-error and error (memleak's
`error:` line). --kernel-config (the kernel's .config, when the
host has it) tells a kernel whose JIT is for classic BPF only.
"""

import argparse
import base64
import binascii
import json
import os
import re
import shlex
import subprocess
import sys

MARK = "==MLQ=="
CHAIN = ["malloc", "alloc_v3", "alloc_v2", "alloc_v1", "main"]
# Names the allocator's entry may carry (a static glibc's malloc is an alias).
MALLOC_NAMES = {"malloc", "__libc_malloc"}
# The memleak runs, in the order of the guest's steps.
STEPS = ["dyn", "static", "attach", "badpid", "verify", "fallback",
         "musl-static", "musl-dyn", "musl-verify", "musl-cfifp", "record"]
# Those of the expected-error mode (errcmd.verbose is for the log only).
ERROR_STEPS = ["errcmd", "errpid"]
# What must not appear when memleak refuses a kernel.
CRASH = re.compile(r"panicked at|stack backtrace|RUST_BACKTRACE|Segmentation fault|"
                   r"core dumped|Aborted", re.I)
# The variant the fallback run forces, as memleak -v names it.
FALLBACK_VARIANT = "perf buffer, bpf_probe_read"
# The BPF program whose verifier statistics the table shows.
WALK_PROG = "walk_stack"
# What the verifier or libbpf says when it refuses a program, in a -v log.
REFUSAL_HINTS = re.compile(
    r"uses reserved fields|unknown opcode|invalid func|unknown func|not supported|"
    r"cannot use helper|invalid argument|program too large|unreachable insn|"
    r"back-edge|R\d+ .*invalid|BPF_ATOMIC|atomic", re.I)
# Verifier messages whose cause is known: (pattern, what it means).
KNOWN_REFUSALS = [
    (re.compile(r"BPF_(?:STX|XADD) uses reserved fields"),
     "atomic fetch ops need kernel 5.12"),
]


def parse_log(text):
    """Returns (sections {(step, stream): [lines]}, rcs {step: int},
    times {step: float}, info {k: v}, done bool, pids {step: int})."""
    sections, rcs, times, pids = {}, {}, {}, {}
    info = {}
    done = False
    cur = None
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        # A marker can follow unterminated output on the same console line.
        pos = line.find(MARK + " ")
        if pos >= 0:
            before, marker = line[:pos], line[pos:].split()
            if cur is not None and before:
                sections[cur].append(before)
            kind = marker[1] if len(marker) > 1 else ""
            if kind == "BEGIN" and len(marker) >= 3:
                cur = (marker[2], marker[3] if len(marker) > 3 else "")
                sections[cur] = []
                continue
            if kind == "END":
                cur = None
                continue
            if kind == "RC" and len(marker) == 4:
                try:
                    rcs[marker[2]] = int(marker[3])
                except ValueError:
                    pass
            elif kind == "T" and len(marker) == 4:
                try:
                    times[marker[2]] = float(marker[3])
                except ValueError:
                    pass
            elif kind == "PID" and len(marker) == 4:
                pids[marker[2]] = marker[3]
            elif kind == "DONE":
                done = True
            continue
        if cur is not None:
            sections[cur].append(line)
    for line in sections.get(("info", ""), []):
        if "=" in line:
            k, v = line.split("=", 1)
            info[k.strip()] = v.strip()
    # Drop the empty line the guest adds after each file.
    for k, lines in sections.items():
        while lines and lines[-1] == "":
            lines.pop()
    return sections, rcs, times, info, done, pids


def call_lines(source, key=r"\w+"):
    """{marker: line} of the /* CALL:marker */ comments in a fixture source:
    leaky.c's markers name the callee; musl_leak.c's (key r"[\w@:]+") are
    callee@caller."""
    lines = {}
    with open(source, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = re.search(r"/\*\s*CALL:(" + key + r")\s*\*/", line)
            if m:
                lines[m.group(1)] = n
    return lines


def reports(lines):
    """The JSON report objects among output lines (one object per line)."""
    out = []
    for line in lines:
        s = line.strip()
        if not s.startswith("{"):
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "stacks" in obj:
            out.append(obj)
    return out


def fn_names(stack):
    return [fr.get("function") for fr in stack.get("frames", [])]


def is_chain(stack):
    names = fn_names(stack)[: len(CHAIN)]
    if len(names) < len(CHAIN):
        return False
    return names[0] in MALLOC_NAMES and names[1:] == CHAIN[1:]


def through_v3(stack):
    return "alloc_v3" in fn_names(stack)


def describe_stack(stack):
    frames = []
    for fr in stack.get("frames", []):
        fn = fr.get("function") or "?"
        loc = ""
        if fr.get("line") is not None:
            loc = "(%s:%s)" % ((fr.get("file") or "?").rsplit("/", 1)[-1], fr["line"])
        frames.append("%s%s<%s>" % (fn, loc, fr.get("method", "?")))
    return "%s B in %s allocs: %s" % (
        stack.get("bytes"),
        stack.get("allocations"),
        " <- ".join(frames) if frames else "(no frames)",
    )


def line_problems(stack, want):
    """Differences between the chain stack's alloc_v*/main frames and the CALL lines."""
    problems = []
    frames = stack.get("frames", [])
    for i in range(1, len(CHAIN)):
        fr = frames[i]
        callee = CHAIN[i - 1]
        exp = want.get(callee)
        f = fr.get("file") or ""
        if fr.get("line") != exp or not f.endswith("leaky.c"):
            problems.append(
                "%s: want leaky.c:%s (CALL:%s), got %s:%s"
                % (CHAIN[i], exp, callee, f or None, fr.get("line"))
            )
    return problems


class Checker:
    def __init__(self, target):
        self.target = target
        self.results = []  # (ok, name, detail lines)
        self.logs = []  # memleak's log of the current step, shown once
        self.notes = {}  # step -> a line that says why it failed
        self.info = []  # lines printed after the checks

    def note(self, step, text):
        self.notes.setdefault(step, text)

    def step_logs(self, logs):
        """Logs to show under the step's first failed check."""
        self.logs = logs

    def check(self, ok, name, detail=None):
        if isinstance(detail, str):
            detail = [detail]
        detail = list(detail or [])
        if not ok and self.logs:
            detail += self.logs
            self.logs = []
        self.results.append((bool(ok), name, detail))
        return ok

    def print(self):
        for ok, name, detail in self.results:
            print("  %s %s: %s" % ("PASS" if ok else "FAIL", self.target, name))
            if not ok:
                for d in detail:
                    print("         " + d)

    @property
    def passed(self):
        return sum(1 for ok, _, _ in self.results if ok)


def tail(lines, n=25, prefix="| "):
    lines = lines[-n:] if len(lines) > n else lines
    return [prefix + line for line in lines]


def memleak_logs(sec, step):
    """memleak's stderr for a step, and that of its -v second attempt."""
    logs = ["memleak stderr:"] + tail(sec.get((step, "stderr"), []))
    verbose_err = sec.get((step + ".verbose", "stderr"), [])
    if verbose_err:
        logs += ["memleak -v stderr (second attempt):"] + tail(verbose_err, 40)
    return logs


def leak_run(c, step, sec, rcs, want):
    out = sec.get((step, "stdout"), [])
    err = sec.get((step, "stderr"), [])
    rc = rcs.get(step)
    logs = memleak_logs(sec, step)

    c.step_logs(logs)
    c.check(rc == 0, "%s: memleak exit code 0" % step, ["exit code %s" % rc])
    # With a command, memleak writes its reports to stdout (older builds)
    # or to stderr (the command's stdout stays its own): read both.
    reps = reports(out + err)
    final = reps[-1] if reps else None
    ok = final is not None and final.get("final") is True
    c.check(ok, "%s: final JSON report" % step,
            ["no final JSON report on stdout or stderr; stdout:"] + tail(out, 10))
    stacks = final.get("stacks", []) if final else []
    chain = [s for s in stacks if is_chain(s)]
    c.check(chain, "%s: stack malloc <- alloc_v3 <- alloc_v2 <- alloc_v1 <- main" % step,
            ["want frames: " + " <- ".join(CHAIN), "got %d stacks:" % len(stacks)]
            + ["  " + describe_stack(s) for s in stacks])
    if chain:
        probs = line_problems(chain[0], want)
        c.check(not probs, "%s: alloc_v*/main lines are the CALL lines" % step,
                probs + ["stack: " + describe_stack(chain[0])])
    else:
        c.check(False, "%s: alloc_v*/main lines are the CALL lines" % step,
                "no stack with the chain")

    expect = None
    for line in err:
        m = re.search(r"EXPECT leaked_bytes=(\d+) leaked_allocations=(\d+)", line)
        if m:
            expect = (int(m.group(1)), int(m.group(2)))
    v3 = [s for s in stacks if through_v3(s)]
    got = (sum(s.get("bytes", 0) for s in v3), sum(s.get("allocations", 0) for s in v3))
    detail = ["EXPECT (leaky's stderr): %s" % (
        "bytes=%d allocations=%d" % expect if expect else "missing"),
        "stacks through alloc_v3: bytes=%d allocations=%d (%d stacks)" % (got + (len(v3),)),
        "report totals: outstanding_bytes=%s outstanding_allocations=%s" % (
            final.get("outstanding_bytes") if final else None,
            final.get("outstanding_allocations") if final else None)]
    c.check(expect is not None and final is not None and got == expect,
            "%s: outstanding through alloc_v3 = EXPECT" % step, detail)
    lost = final.get("lost_events") if final else None
    c.check(lost == 0, "%s: lost_events == 0" % step,
            ["lost_events=%s losses=%s truncated_stacks=%s" % (
                lost, final.get("losses") if final else None,
                final.get("truncated_stacks") if final else None)])
    c.step_logs([])


def attach_run(c, sec, rcs, want):
    step = "attach"
    out = sec.get((step, "stdout"), [])
    rc = rcs.get(step)
    logs = memleak_logs(sec, step)
    logs += ["leaky's stderr:"] + tail(sec.get((step, "target-stderr"), []), 5)
    c.step_logs(logs)
    c.check(rc == 0, "attach: memleak -p exit code 0", ["exit code %s" % rc])
    reps = reports(out)
    good = []
    for r in reps:
        for s in r.get("stacks", []):
            if is_chain(s) and not line_problems(s, want):
                good.append(r)
                break
    detail = ["%d reports; none has the chain with the CALL lines" % len(reps)]
    for i, r in enumerate(reps):
        detail.append("report %d (final=%s, %s B in %s allocs, lost_events=%s):" % (
            i, r.get("final"), r.get("outstanding_bytes"), r.get("outstanding_allocations"),
            r.get("lost_events")))
        detail += ["  " + describe_stack(s) for s in r.get("stacks", [])[:5]]
    c.check(good, "attach: a report has the chain (with lines)", detail)
    c.step_logs([])


def option_rejected(sec, step, option):
    """True when memleak's log for STEP says it does not know OPTION."""
    lines = sec.get((step, "stderr"), []) + sec.get((step, "stdout"), [])
    for line in lines:
        if option in line and re.search(
                r"unexpected|unknown|invalid|unrecognized|not (?:a |an )?(?:valid|known)|"
                r"no such option|wasn't expected", line, re.I):
            return True
    return False


def verify_run(c, sec, rcs, want):
    """Run 5: --verify-unwind on the dynamic demo: run 1's checks, and the
    kernel's and user space's unwinding agree on every allocation."""
    step = "verify"
    if rcs.get(step) not in (None, 0) and option_rejected(sec, step, "--verify-unwind"):
        c.note(step, "--verify-unwind rejected by this memleak")
    leak_run(c, step, sec, rcs, want)
    final = None
    for r in reports(sec.get((step, "stdout"), []) + sec.get((step, "stderr"), [])):
        final = r
    losses = final.get("losses") if isinstance(final, dict) else None
    shown = ["losses=%s" % (json.dumps(losses) if losses is not None else
                            "missing (no final report)" if final is None else "missing")]
    got = losses.get("unwind_disagreements") if isinstance(losses, dict) else None
    c.step_logs(memleak_logs(sec, step))
    c.check(got == 0, "verify: losses.unwind_disagreements == 0", shown)
    # Allocations walked in the kernel and compared: without any, the check
    # above passes vacuously (every allocation a miss, unwound in user space).
    verified = losses.get("unwind_verified") if isinstance(losses, dict) else None
    c.check(isinstance(verified, int) and verified > 0, "verify: losses.unwind_verified > 0",
            ["unwind_verified=%s: no kernel walk was compared" % (
                "missing" if verified is None else verified)] + shown)
    c.step_logs([])
    if isinstance(losses, dict):
        c.info.append("verify: %s kernel walks compared, %s disagreements, %s misses "
                      "resolved, %s verification copies skipped" % (
                          verified, got, losses.get("misses_resolved"),
                          losses.get("verify_copies_skipped", 0)))


def variant_line(sec, step):
    """The variant memleak -v names in STEP's log ("ring buffer,
    bpf_probe_read_user"), from its line "kernel: ...; using VARIANT"."""
    for line in sec.get((step, "stderr"), []):
        m = re.search(r"\bkernel: .*; using (.+)$", line)
        if m:
            return m.group(1).strip()
    return None


def fallback_run(c, sec, rcs, want):
    """Run 6: the fallbacks forced (perf buffer, bpf_probe_read): run 1's
    checks, and memleak -v names that variant."""
    step = "fallback"
    if rcs.get(step) not in (None, 0):
        for opt in ("--events", "--read-helper"):
            if option_rejected(sec, step, opt):
                c.note(step, "%s rejected by this memleak" % opt)
                break
    leak_run(c, step, sec, rcs, want)
    got = variant_line(sec, step)
    c.step_logs(memleak_logs(sec, step))
    c.check(got == FALLBACK_VARIANT, "fallback: memleak -v: using %s" % FALLBACK_VARIANT,
            ["memleak -v names %s" % ("'%s'" % got if got else "no variant")])
    c.step_logs([])


# ---- the musl fixture (tests/fixtures/src/musl_leak.c) ----
# Its functions on the leak paths (each has CFI); musl's code has none.
MUSL_PROGRAM = {"keep_name", "load_names", "open_log", "cmp_names", "sort_names", "main"}
# Frame 0: musl's allocator (mallocng's malloc is default_malloc in a static
# build).
MUSL_MALLOC = {"malloc", "default_malloc"}
# musl's qsort (src/stdlib/qsort.c, qsort_nr.c): qsort -> __qsort_r ->
# sift / trinkle -> wrapper_cmp -> the comparator, as far as the compiler
# kept these calls; static functions of a stripped libc.so have no name ("").
QSORT_INNER = {"wrapper_cmp", "sift", "trinkle", "__qsort_r", "qsort_r", "qsort", ""}
QSORT_LAST = {"__qsort_r", "qsort_r", "qsort"}
# The frames after frame 0 of each site's leaks, as tests/e2e/musl.rs wants
# them: ("prog", function, CALL marker), ("libc", names), ("run", inner, last).
MUSL_CHAINS = {
    "keep_name": [("libc", {"strdup"}),
                  ("prog", "keep_name", "strdup@keep_name"),
                  ("prog", "load_names", "keep_name@load_names"),
                  ("prog", "main", "load_names@main")],
    "open_log": [("libc", {"fdopen", "__fdopen"}),
                 ("libc", {"fopen", "fopen64"}),
                 ("prog", "open_log", "fopen@open_log"),
                 ("prog", "main", "open_log@main")],
    "cmp_names": [("prog", "cmp_names", "malloc@cmp_names"),
                  ("run", QSORT_INNER, QSORT_LAST),
                  ("prog", "sort_names", "qsort@sort_names"),
                  ("prog", "main", "sort_names@main")],
}
MUSL_SITES = ["keep_name", "open_log", "cmp_names"]
# strdup calls of musl_leak (load_names): the kernel must have walked and
# verified at least the three after the first (--verify-unwind).
MUSL_VERIFIED_MIN = 3


def musl_expect(err):
    """(EXPECT (bytes, allocations) or None, {function: (bytes, allocations)})
    from the program's stderr."""
    total, sites = None, {}
    for line in err:
        m = re.search(r"EXPECT leaked_bytes=(\d+) leaked_allocations=(\d+)", line)
        if m:
            total = (int(m.group(1)), int(m.group(2)))
        m = re.search(r"EXPECT_SITE function=(\w+) .*allocations=(\d+) bytes=(\d+)", line)
        if m:
            sites[m.group(1)] = (int(m.group(3)), int(m.group(2)))
    return total, sites


def has_function(stack, name):
    return name in fn_names(stack)


def totals(stacks):
    return (sum(s.get("bytes", 0) for s in stacks), sum(s.get("allocations", 0) for s in stacks))


def musl_libc(bin_path, module):
    """Is MODULE the file holding musl's code: the static program itself, or
    musl's loader (its libc.so) for the dynamic one?"""
    if bin_path.endswith("-static"):
        return module == bin_path
    return re.match(r"/lib/ld-musl-[\w-]+\.so\.1$", module) is not None


def musl_match(stack, chain, bin_path, lines):
    """Matches frames 1.. of STACK against CHAIN; returns (None, [is frame i
    in musl, for frames 0 up to main]) or (why it does not match, None)."""
    frames = stack.get("frames", [])

    def in_libc(fr, names):
        libc = musl_libc(bin_path, fr.get("module") or "")
        fn = fr.get("function") or ""
        return bool(libc) and fn not in MUSL_PROGRAM and fn in names

    libc = [True]
    i = 1
    for w in chain:
        if i >= len(frames):
            return "frame #%d is missing" % i, None
        fr = frames[i]
        if w[0] == "prog":
            want_line = lines.get(w[2])
            if fr.get("function") != w[1] or fr.get("module") != bin_path:
                return "frame #%d is not %s in %s" % (i, w[1], bin_path), None
            if fr.get("line") != want_line or not (fr.get("file") or "").endswith("musl_leak.c"):
                return "frame #%d (%s) is at %s:%s, not musl_leak.c:%s (CALL:%s)" % (
                    i, w[1], fr.get("file"), fr.get("line"), want_line, w[2]), None
            libc.append(False)
            i += 1
        elif w[0] == "libc":
            if not in_libc(fr, w[1]):
                return "frame #%d is not one of %s in musl" % (i, "|".join(sorted(w[1]))), None
            libc.append(True)
            i += 1
        else:
            start = i
            while i < len(frames) and in_libc(frames[i], w[1]):
                libc.append(True)
                i += 1
            if i == start or not in_libc(frames[i - 1], w[2]):
                return "frames #%d.. are not musl's qsort (%s or unnamed), ending in %s" % (
                    start, "|".join(sorted(x for x in w[1] if x)), "|".join(sorted(w[2]))), None
    return None, libc


def musl_final(c, sec, rcs, step):
    """Exit code 0 and a final JSON report; returns (report or None, stderr)."""
    out = sec.get((step, "stdout"), [])
    err = sec.get((step, "stderr"), [])
    rc = rcs.get(step)
    c.step_logs(memleak_logs(sec, step))
    c.check(rc == 0, "%s: memleak exit code 0" % step, ["exit code %s" % rc])
    reps = reports(out)
    final = reps[-1] if reps else None
    ok = final is not None and final.get("final") is True
    c.check(ok, "%s: final JSON report on stdout (--output -)" % step,
            ["no final JSON report on stdout; stdout:"] + tail(out, 10))
    return (final if ok else None), err


def musl_totals(c, step, final, err):
    expect, _ = musl_expect(err)
    got = (final.get("outstanding_bytes"), final.get("outstanding_allocations")) if final else None
    c.check(expect is not None and got == expect, "%s: outstanding totals = EXPECT" % step,
            ["EXPECT (the program's stderr): %s" % (
                "bytes=%d allocations=%d" % expect if expect else "missing"),
             "report: outstanding_bytes=%s outstanding_allocations=%s" % (
                 got if got else (None, None))])


def musl_lost(c, step, final):
    lost = final.get("lost_events") if final else None
    c.check(lost == 0, "%s: lost_events == 0" % step,
            ["lost_events=%s losses=%s" % (lost, final.get("losses") if final else None)])


def musl_leak_run(c, step, sec, rcs, lines, bin_path):
    """musl_leak static or dynamic: exact totals and sites, and every leak's
    stack through musl's helper to main."""
    final, err = musl_final(c, sec, rcs, step)
    stacks = final.get("stacks", []) if final else []
    shown = ["got %d stacks:" % len(stacks)] + ["  " + describe_stack(s) for s in stacks]
    musl_totals(c, step, final, err)
    _, want_sites = musl_expect(err)
    bad = []
    for site in MUSL_SITES:
        got = totals([s for s in stacks if has_function(s, site)])
        if site not in want_sites or got != want_sites[site]:
            bad.append("%s: EXPECT_SITE bytes,allocations=%s, stacks through it: %s" % (
                site, want_sites.get(site, "missing"), got))
    c.check(final is not None and not bad, "%s: bytes and allocations of each site = "
            "EXPECT_SITE" % step, bad + shown)
    methods_bad, frame0_bad = [], []
    for site in MUSL_SITES:
        through = [s for s in stacks if has_function(s, site)]
        why = None if through else "no stack through %s" % site
        for s in through:
            err_, libc = musl_match(s, MUSL_CHAINS[site], bin_path, lines)
            if err_:
                why = "%s: %s" % (err_, describe_stack(s))
                break
            frames = s.get("frames", [])
            if frames[0].get("function") not in MUSL_MALLOC:
                frame0_bad.append(describe_stack(s))
            # A frame whose callee is in musl (no CFI): prologue analysis or a
            # stack scan found it (frame #1's callee is frame 0, at its entry).
            for i in range(2, len(libc)):
                if libc[i - 1] and frames[i].get("method") not in ("prologue", "scan"):
                    methods_bad.append("frame #%d by %s: %s" % (
                        i, frames[i].get("method"), describe_stack(s)))
        want = " <- ".join(
            w[1] if w[0] == "prog" else ("qsort...(%s)" % "|".join(sorted(w[2])) if w[0] == "run"
                                         else "|".join(sorted(w[1])))
            for w in MUSL_CHAINS[site])
        c.check(why is None, "%s: stacks through %s: malloc <- %s (lines)" % (step, site, want),
                ([why] if why else []) + shown)
    c.check(stacks and not frame0_bad, "%s: frame 0 is %s" % (step, "|".join(sorted(MUSL_MALLOC))),
            frame0_bad[:5] or shown)
    c.check(stacks and not methods_bad, "%s: frames whose callee is in musl found by "
            "prologue or scan" % step, methods_bad[:5] or shown)
    musl_lost(c, step, final)
    c.step_logs([])


def musl_verify_run(c, sec, rcs):
    step = "musl-verify"
    final, _ = musl_final(c, sec, rcs, step)
    losses = final.get("losses") if final else None
    shown = ["losses=%s" % json.dumps(losses)]
    got = losses.get("unwind_disagreements") if isinstance(losses, dict) else None
    c.check(got == 0, "%s: losses.unwind_disagreements == 0" % step, shown)
    verified = losses.get("unwind_verified") if isinstance(losses, dict) else None
    c.check(isinstance(verified, int) and verified >= MUSL_VERIFIED_MIN,
            "%s: losses.unwind_verified >= %d" % (step, MUSL_VERIFIED_MIN),
            ["unwind_verified=%s (strdup's allocations 2..4, after the pause)" % verified]
            + shown)
    c.step_logs([])
    if isinstance(losses, dict):
        c.info.append("musl-verify: %s kernel walks compared, %s disagreements" % (verified, got))


def musl_cfifp_run(c, sec, rcs):
    """--unwind cfi-fp on the static build: strdup's leaks stop at strdup."""
    step = "musl-cfifp"
    final, err = musl_final(c, sec, rcs, step)
    stacks = final.get("stacks", []) if final else []
    shown = ["got %d stacks:" % len(stacks)] + ["  " + describe_stack(s) for s in stacks]
    musl_totals(c, step, final, err)
    _, want_sites = musl_expect(err)
    strdup = [s for s in stacks if len(s.get("frames", [])) > 1
              and s["frames"][1].get("function") == "strdup"]
    probs = ["%d frames, not 2: %s" % (len(s["frames"]), describe_stack(s))
             for s in strdup if len(s["frames"]) != 2]
    probs += ["keep_name found: %s" % describe_stack(s) for s in stacks
              if has_function(s, "keep_name")]
    if totals(strdup) != want_sites.get("keep_name"):
        probs.append("stacks ending at strdup: bytes,allocations=%s, EXPECT_SITE keep_name: %s"
                     % (totals(strdup), want_sites.get("keep_name", "missing")))
    c.check(final is not None and not probs,
            "%s: strdup's leaks stop at strdup (malloc <- strdup, no keep_name)" % step,
            probs + shown)
    musl_lost(c, step, final)
    c.step_logs([])


# ---- memleak record on the device, memleak report on the host ----
# The sstripped firmware (tests/fixtures/src/sstrip_main.c and plugin.c, no
# section headers) at these paths in the guest; the unstripped build at the
# same paths under the sysroot tree.
FW_MAIN = "/fw/sstrip_main"
FW_LIB = "/fw/libplugin.so"
REC_CHAIN = ["malloc", "plugin_alloc", "plugin_leak", "main"]
# Frames 1..3 of REC_CHAIN: (function, source file, CALL marker of its line).
REC_LINES = [("plugin_alloc", "plugin.c", "malloc@plugin_alloc"),
             ("plugin_leak", "plugin.c", "plugin_alloc@plugin_leak"),
             ("main", "sstrip_main.c", "plugin_leak@main")]
REC_SUMMARY = re.compile(
    r"recorded 1 process, (\d+) stacks?, (\d+) modules? in (\S+) \((\d+) bytes\)")
REC_PATH = "/tmp/rec.mlr"


def describe_rec_stack(stack):
    """A stack with each frame's module and address in it, for the record
    checks: function (or ?) (file:line) [module+module_address]."""
    frames = []
    for fr in stack.get("frames", []):
        loc = ""
        if fr.get("line") is not None:
            loc = "(%s:%s)" % ((fr.get("file") or "?").rsplit("/", 1)[-1], fr["line"])
        frames.append("%s%s[%s+%s]<%s>" % (
            fr.get("function") or "?", loc, fr.get("module") or "?",
            fr.get("module_address"), fr.get("method", "?")))
    return "%s B in %s allocs: %s" % (
        stack.get("bytes"), stack.get("allocations"),
        " <- ".join(frames) if frames else "(no frames)")


def decode_recording(lines):
    """(bytes, None) from the guest's `bytes=N` line and base64 lines, or
    (None, why not)."""
    if not lines:
        return None, "no recording on the console"
    if lines[0].strip() == "missing":
        return None, "the guest has no %s" % REC_PATH
    m = re.match(r"bytes=\s*(\d+)$", lines[0].strip())
    if not m:
        return None, "the recording's first line is %r, not bytes=N" % lines[0]
    text = "".join(line.strip() for line in lines[1:])
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        return None, "base64 that does not decode (%s)" % e
    if len(data) != int(m.group(1)):
        return None, "%d bytes decoded, the guest says %s" % (len(data), m.group(1))
    return data, None


def host_report(memleak, recording, sysroot):
    """memleak report RECORDING --sysroot SYSROOT --format json -T 100 on
    the host: (exit code or None, stdout lines, stderr lines, final report
    or None)."""
    argv = [memleak, "report", recording, "--sysroot", sysroot, "--format", "json", "-T", "100"]
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, [], ["%s: %s" % (" ".join(argv), e)], None
    out = p.stdout.decode("utf-8", "replace").splitlines()
    err = p.stderr.decode("utf-8", "replace").splitlines()
    reps = reports(out)
    final = reps[-1] if reps and reps[-1].get("final") is True else None
    return p.returncode, out, err, final


def dynsym_functions(path):
    """The names of the functions PATH defines in its .dynsym (readelf), or
    None when it cannot be read. A MIPS executable exports main there (its
    ABI puts every symbol the GOT refers to in .dynsym); others do not."""
    try:
        p = subprocess.run(["readelf", "--dyn-syms", "-W", path], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    names = set()
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        f = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(f) >= 8 and f[3] == "FUNC" and f[6] != "UND":
            names.add(f[7].split("@")[0])
    return names


def plugin_stacks(final):
    return [s for s in (final or {}).get("stacks", []) if has_function(s, "plugin_alloc")]


def record_run(c, sec, rcs, a, work):
    """`memleak record` of the sstripped firmware in the guest; its
    recording, decoded from the console into WORK/rec.mlr, reported by the
    host's memleak with the unstripped build's tree (--sysroot A.SYSROOT)
    and with an empty one."""
    step = "record"
    err = sec.get((step, "stderr"), [])
    rc = rcs.get(step)
    c.step_logs(memleak_logs(sec, step))
    c.check(rc == 0, "record: memleak record exit code 0", ["exit code %s" % rc])
    summary = None
    for line in err:
        m = REC_SUMMARY.search(line)
        if m:
            summary = m
    c.check(summary is not None and summary.group(3) == REC_PATH,
            "record: summary line 'recorded 1 process, N stacks, M modules in %s (B bytes)'"
            % REC_PATH, ["got: %s" % (summary.group(0) if summary else "no such line")])
    c.step_logs([])
    data, why = decode_recording(sec.get((step, "recording"), []))
    if data is not None and summary is not None and len(data) != int(summary.group(4)):
        why = "%d bytes on the console, the summary says %s" % (len(data), summary.group(4))
    rec = os.path.join(work, "rec.mlr")
    if data is not None:
        with open(rec, "wb") as f:
            f.write(data)
    elif os.path.exists(rec):
        os.remove(rec)
    c.check(why is None, "record: the recording copied out whole (%s)" % rec,
            [why or ""] + ["the console's recording section:"]
            + tail(sec.get((step, "recording"), []), 5))
    if why is not None:
        c.note(step, "no recording: %s" % why)
    src = a.fixtures
    expect = None
    for line in err:
        m = re.search(r"EXPECT leaked_bytes=(\d+) leaked_allocations=(\d+)", line)
        if m:
            expect = (int(m.group(1)), int(m.group(2)))
    lines = {}
    for f in ("plugin.c", "sstrip_main.c"):
        lines.update(call_lines(os.path.join(src, f), r"[\w@:]+"))

    def run_report(label, sysroot):
        """The report's checks shared by both runs; returns (final, stderr)."""
        why = None
        if not a.host_memleak:
            why = "no host memleak (check.py --host-memleak BIN)"
        elif not sysroot:
            why = "no sysroot tree (check.py --sysroot DIR)"
        elif data is None:
            why = "no recording"
        code, out, rerr, final = (None, [], [], None) if why else host_report(
            a.host_memleak, rec, sysroot)
        c.step_logs(["memleak report --sysroot %s stderr:" % sysroot] + tail(rerr, 15)
                    + ["stdout (shortened):"] + tail([shorten(x, 160) for x in out], 5))
        c.check(code == 0 and final is not None,
                "record: report %s: exit code 0, a final JSON report" % label,
                [why or "exit code %s, final report: %s" % (code, final is not None)])
        if why is None and (code != 0 or final is None):
            errs = [x for x in rerr if x.startswith("error:")]
            c.note(step, "memleak report %s: %s" % (
                label, shorten(errs[0], 80) if errs else "exit code %s" % code))
        got = (final.get("outstanding_bytes"), final.get("outstanding_allocations")) \
            if final else None
        stacks = plugin_stacks(final)
        through = totals(stacks)
        shown = ["stacks:"] + ["  " + describe_rec_stack(s) for s in (final or {}).get("stacks", [])]
        c.check(expect is not None and got == expect and through == expect,
                "record: report %s: outstanding totals and the stack through plugin_alloc "
                "= EXPECT" % label,
                ["EXPECT (sstrip_main's stderr): %s" % (
                    "bytes=%d allocations=%d" % expect if expect else "missing"),
                 "report: outstanding_bytes,allocations=%s; through plugin_alloc: %s (%d stacks)"
                 % (got, through, len(stacks))] + shown)
        return final, rerr, stacks, shown

    # With the unstripped build: the whole chain, with lines.
    final, rerr, stacks, shown = run_report("--sysroot <tree>", a.sysroot)
    stack = stacks[0] if len(stacks) == 1 else None
    frames = stack.get("frames", []) if stack else []
    main_at = frames[3].get("module_address") if len(frames) > 3 else None
    names = [fr.get("function") for fr in frames[:len(REC_CHAIN)]]
    chain_ok = len(names) == len(REC_CHAIN) and names[0] in MALLOC_NAMES \
        and names[1:] == REC_CHAIN[1:]
    c.check(chain_ok, "record: report --sysroot <tree>: stack %s" % " <- ".join(REC_CHAIN),
            ["want one stack through plugin_alloc with frames " + " <- ".join(REC_CHAIN)
             + ", got %d such stacks" % len(stacks)] + shown)
    for i, (fn, file_, marker) in enumerate(REC_LINES, 1):
        fr = frames[i] if chain_ok else {}
        want = lines.get(marker)
        c.check(chain_ok and fr.get("line") == want and want is not None
                and (fr.get("file") or "").endswith("/" + file_),
                "record: report --sysroot <tree>: %s at %s:%s (CALL:%s)" % (fn, file_, want, marker),
                ["frame #%d: %s:%s" % (i, fr.get("file"), fr.get("line")) if chain_ok
                 else "no stack with the chain"] + shown)
    warns = [x for x in rerr if "WARN" in x]
    c.check(final is not None and not warns,
            "record: report --sysroot <tree>: every recorded file found there (no warning)",
            ["warnings:"] + warns if warns else ["no report"])
    c.step_logs([])
    if final is not None:
        c.info.append("record: %s; report --sysroot <tree>: %s; unwind_stopped=%s "
                      "finished_on_host=%s" % (
                          summary.group(0) if summary else "no summary",
                          describe_rec_stack(stack) if stack else "no stack through plugin_alloc",
                          final.get("losses", {}).get("unwind_stopped"),
                          final.get("losses", {}).get("finished_on_host")))

    # Without the files: the device's .dynsym names, the rest an address in
    # its module, and one warning naming what is missing.
    empty = os.path.join(work, "empty-sysroot")
    os.makedirs(empty, exist_ok=True)
    final, rerr, stacks, shown = run_report("--sysroot <empty>", empty)
    stack = stacks[0] if len(stacks) == 1 else None
    frames = stack.get("frames", []) if stack else []
    named = len(frames) >= 3 and frames[0].get("function") in MALLOC_NAMES and [
        fr.get("function") for fr in frames[1:3]] == ["plugin_alloc", "plugin_leak"] and all(
            fr.get("module") == FW_LIB for fr in frames[1:3])
    c.check(named, "record: report --sysroot <empty>: malloc <- plugin_alloc <- plugin_leak "
            "(.dynsym of %s)" % FW_LIB,
            ["want one stack through plugin_alloc, frames 1 and 2 named in %s; got %d stacks"
             % (FW_LIB, len(stacks))] + shown)
    # main: unnamed unless the device's program exports it (MIPS), at the
    # address in /fw/sstrip_main that the sysroot's report puts in main.
    main = frames[3] if len(frames) > 3 else {}
    exported = dynsym_functions(os.path.join(a.sysroot, FW_MAIN.lstrip("/"))) \
        if a.sysroot else None
    want_name = None if exported is None else "main" if "main" in exported else None
    c.check(stack is not None and exported is not None and "function" in main
            and main.get("function") == want_name and main.get("module") == FW_MAIN
            and main.get("module_address") is not None and main.get("module_address") == main_at,
            "record: report --sysroot <empty>: frame #3 %s, at the address in %s the "
            "sysroot's report puts in main" % (
                "named main (exported in .dynsym)" if want_name else "unnamed (main not in "
                ".dynsym)", FW_MAIN),
            ["frame #3: %s" % (json.dumps(main) if main else "missing"),
             "%s's .dynsym functions: %s" % (FW_MAIN, sorted(exported) if exported is not None
                                             else "unknown (readelf failed)"),
             "main's address in the --sysroot <tree> report: %s" % main_at] + shown)
    warns = [x for x in rerr if "WARN" in x]
    c.check(len(warns) == 1 and "not found under" in warns[0] and FW_MAIN in warns[0]
            and FW_LIB in warns[0],
            "record: report --sysroot <empty>: one warning naming the missing files",
            ["want one WARN line with 'not found under', %s and %s; got %d:" % (
                FW_MAIN, FW_LIB, len(warns))] + warns)
    c.step_logs([])


def badpid_run(c, sec, rcs):
    c.step_logs([])
    lines = sec.get(("badpid", "stdout"), []) + sec.get(("badpid", "stderr"), [])
    errors = [line for line in lines if line.startswith("error:")]
    c.check(len(errors) == 1, "badpid: one 'error:' line",
            ["want exactly one line starting with 'error:', got %d; output:" % len(errors)]
            + tail(lines, 15))
    rc = rcs.get("badpid")
    c.check(rc is not None and rc != 0, "badpid: non-zero exit code", "exit code %s" % rc)


def error_run(c, sec, rcs, step, want):
    """An expected-error step: non-zero exit (not a crash), exactly one
    `error:` line on stderr, naming WANT, and no panic or backtrace."""
    err = sec.get((step, "stderr"), [])
    out = sec.get((step, "stdout"), [])
    rc = rcs.get(step)
    c.step_logs(["memleak stdout:"] + tail(out, 10) + ["memleak stderr:"] + tail(err, 25))
    what = {"errcmd": "memleak -- /leaky-dyn", "errpid": "memleak -p PID"}.get(step, step)
    c.check(rc is not None and rc != 0 and rc < 100, "%s: %s exits non-zero (not a crash)" % (
        step, what), ["exit code %s (101: a Rust panic; 128+N: signal N)" % rc])
    errors = [line for line in err if line.startswith("error:")]
    c.check(len(errors) == 1, "%s: exactly one 'error:' line on stderr" % step,
            ["got %d" % len(errors)])
    line = errors[0] if errors else ""
    c.check(want in line, "%s: the error names %s" % (step, want),
            ["error line: %s" % (line or "(none)")])
    others = [x for x in err if x.strip() and not x.startswith("error:")]
    c.check(not others, "%s: nothing else on stderr" % step,
            ["%d other lines (a libbpf or verifier log without -v?):" % len(others)]
            + tail(others, 12))
    crash = [x for x in err + out if CRASH.search(x)]
    c.check(not crash, "%s: no panic or backtrace" % step, crash[:5])
    c.step_logs([])
    return line


def expect_error_checks(c, sec, rcs, info, want, config_path):
    """The checks of the expected-error mode; returns memleak's error line."""
    if info.get("mode") not in (None, "expect-error"):
        c.check(False, "guest ran the expected-error steps",
                ["the guest ran mode=%s (no mlq.expect=error on its command line?)"
                 % info.get("mode")])
    m = re.match(r"(CONFIG_\w+)$", want)
    cfg = kernel_config(config_path)
    if m and cfg:
        c.check(cfg.get(m.group(1)) not in ("y", "m"), "kernel: %s is off" % m.group(1),
                ["%s=%s in %s" % (m.group(1), cfg.get(m.group(1)), config_path)])
    v = re.match(r"(\d+)\.(\d+)$", want)
    if v:
        # A kernel floor: the guest's kernel must be below it.
        rel = re.match(r"(\d+)\.(\d+)", info.get("kernel", ""))
        c.check(rel and (int(rel.group(1)), int(rel.group(2))) < (int(v.group(1)), int(v.group(2))),
                "kernel: %s is older than %s" % (info.get("kernel", "?"), want),
                ["uname -r: %s" % info.get("kernel")])
    lines = [error_run(c, sec, rcs, step, want) for step in ERROR_STEPS]
    return lines[0] or lines[1]


def kernel_config(path):
    """{CONFIG_X: value} of a kernel .config ({} without one)."""
    cfg = {}
    if not path:
        return cfg
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = re.match(r"(CONFIG_\w+)=(.*)", line.strip())
                if m:
                    cfg[m.group(1)] = m.group(2)
    except OSError:
        pass
    return cfg


def jit_mode(info, config_path):
    """("JIT" | "interpreter" | "no JIT in kernel" | "-", detail) from the
    guest's net.core.bpf_jit_enable (and the kernel's .config if known)."""
    value = info.get("bpf_jit_enable")
    if value is None:  # a log of an older init: jit=yes|no
        old = info.get("jit")
        return {"yes": "JIT", "no": "interpreter"}.get(old, "-"), ""
    if value == "absent":
        return "no JIT in kernel", "no net.core.bpf_jit_enable"
    cfg = kernel_config(config_path)
    if cfg and cfg.get("CONFIG_HAVE_EBPF_JIT") != "y":
        # A JIT for classic BPF only (e.g. 32-bit MIPS before 5.16): eBPF
        # programs run in the interpreter whatever the sysctl says.
        return "no JIT in kernel", "bpf_jit_enable=%s, classic BPF JIT only" % value
    if value in ("1", "2"):
        return "JIT", "bpf_jit_enable=%s" % value
    if value == "0":
        return "interpreter", "bpf_jit_enable=0"
    return "-", "bpf_jit_enable=%s" % value


TRANSPORTS = [
    (re.compile(r"ring ?buf|ring buffer|RINGBUF", re.I), "ringbuf"),
    (re.compile(r"perf ?buf|perf buffer|perf[_ ]event[_ ]array|PERF_EVENT_ARRAY", re.I), "perfbuf"),
]


def transport(sec):
    """(The event transport memleak's -v log names, "ringbuf" if none; the
    log line that names it, or None). memleak -v says e.g. "kernel: ...;
    using ring buffer, bpf_probe_read_user"."""
    order = ["attach", "attach.verbose"] + [
        s for step in STEPS if step != "fallback" for s in (step + ".verbose", step)]
    for step in order:
        v = variant_line(sec, step)
        if v:
            for pat, name in TRANSPORTS:
                if pat.search(v):
                    return name, "using " + v
    for step in order:
        for line in sec.get((step, "stderr"), []):
            if not re.search(r"\busing\b|transport|event source|events (?:via|through|from|over)",
                             line, re.I):
                continue
            for pat, name in TRANSPORTS:
                if pat.search(line):
                    return name, line.strip()
            m = re.search(r"transport\W+(\w[\w-]*)", line, re.I)
            if m:
                return m.group(1), line.strip()
    return "ringbuf", None


VERIFIER_LINE = re.compile(r"\[DEBUG verifier\] (\w+): (processed (\d+) insns.*)$")
LOAD_LINE = re.compile(r"BPF object loaded and verified in (\S+)")


def duration_s(text):
    """Seconds of a Rust Duration's Debug form (1.5s, 250.1ms, 80µs, 900ns)."""
    m = re.match(r"([\d.]+)(s|ms|µs|us|ns)$", text)
    if not m:
        return None
    scale = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}[m.group(2)]
    return float(m.group(1)) * scale


def verifier_stats(sec, step):
    """({program: {"insns", "states", "peak", "line"}}, load seconds or None)
    from the -v -v log of STEP."""
    progs, load = {}, None
    for line in sec.get((step, "stderr"), []):
        m = VERIFIER_LINE.search(line)
        if m:
            stats = m.group(2).strip()
            states = re.search(r"total_states (\d+)", stats)
            peak = re.search(r"peak_states (\d+)", stats)
            progs[m.group(1)] = {
                "insns": int(m.group(3)),
                "states": int(states.group(1)) if states else None,
                "peak": int(peak.group(1)) if peak else None,
                "line": stats,
            }
            continue
        m = LOAD_LINE.search(line)
        if m:
            load = duration_s(m.group(1))
    return progs, load


def describe_verifier(progs, load):
    walk = progs.get(WALK_PROG)
    text = "%s: %s" % (WALK_PROG, walk["line"]) if walk else "%s: no statistics" % WALK_PROG
    return "%s; %d programs, %s insns in all; loaded in %s" % (
        text, len(progs), sum(p["insns"] for p in progs.values()),
        "%.2f s" % load if load is not None else "?")


def error_line(sec, step):
    """memleak's `error:` line of STEP (or of its -v second attempt)."""
    for s in (step, step + ".verbose"):
        for line in sec.get((s, "stderr"), []) + sec.get((s, "stdout"), []):
            if line.startswith("error:"):
                return line[len("error:"):].strip()
    return None


def refusal_hint(sec, step):
    """A line of the -v log that says why the kernel refused the programs."""
    for s in (step + ".verbose", step):
        for line in sec.get((s, "stderr"), []):
            if REFUSAL_HINTS.search(line) and not line.startswith("error:"):
                return line.strip()
    return None


def shorten(text, n):
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def failure_reason(c, sec, rcs, info, done):
    """One line: why the first failing step failed, and which others did."""
    if c.passed == len(c.results):
        return ""
    if not info or not done:
        return "the guest did not run every step (see serial.log)"
    failed = []
    for ok, name, _ in c.results:
        step = name.split(":", 1)[0]
        if not ok and step in STEPS and step not in failed:
            failed.append(step)
    if not failed:
        return "a check failed"
    step = failed[0]
    first = next(name for ok, name, _ in c.results if not ok and name.startswith(step + ":"))
    why = c.notes.get(step)
    if why is None:
        err = error_line(sec, step)
        if err:
            why = shorten(err, 90)
            hint = refusal_hint(sec, step)
            if hint and hint not in err:
                why += "; -v log: %s" % shorten(hint, 70)
                for pat, meaning in KNOWN_REFUSALS:
                    if pat.search(hint):
                        why += " (%s)" % meaning
        else:
            why = "check failed: %s" % first.split(": ", 1)[-1]
    # Name the other failing steps, with a short cause when it differs.
    others = []
    for s in failed[1:]:
        note = c.notes.get(s)
        if note:
            others.append("%s (%s)" % (s, shorten(note, 50)))
        else:
            err = error_line(sec, s)
            others.append(s if err and err == error_line(sec, step) else
                          "%s (%s)" % (s, shorten(err, 50)) if err else s)
    return "%s: %s%s" % (step, why, "; also failed: " + ", ".join(others) if others else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--source", required=True, help="examples/leaky.c")
    ap.add_argument("--musl-source", required=True, help="tests/fixtures/src/musl_leak.c")
    ap.add_argument("--fixtures", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "src"),
        help="tests/fixtures/src (plugin.c, sstrip_main.c: their CALL markers)")
    ap.add_argument("--sysroot", help="the unstripped /fw pair, ld.so and libc.so.6 at "
                    "their guest paths (runs/<target>/sysroot)")
    ap.add_argument("--host-memleak", metavar="BIN",
                    help="the host's memleak, which reports the guest's recording")
    ap.add_argument("--summary", help="write shell assignments for the table here")
    ap.add_argument("--kernel-config", help="the guest kernel's .config, if known")
    ap.add_argument("--expect-error", metavar="TEXT",
                    help="expected-error mode: memleak must refuse the kernel with one "
                    "`error:` line containing TEXT")
    ap.add_argument("log")
    a = ap.parse_args()

    with open(a.log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    sec, rcs, times, info, done, _ = parse_log(text)
    want = call_lines(a.source)
    missing = [c for c in CHAIN[:-1] if c not in want]
    if missing:
        print("check.py: %s has no CALL marker for %s" % (a.source, ", ".join(missing)))
        return 2

    c = Checker(a.target)
    last = [line.rstrip("\r") for line in text.split("\n") if line.strip()][-15:]
    c.check(info and done, "guest booted and ran every step",
            ["info block: %s, DONE marker: %s; last console lines:" % (bool(info), done)]
            + ["| " + x for x in last])
    if a.expect_error is not None:
        return expect_error_main(a, c, sec, rcs, times, info, done)
    leak_run(c, "dyn", sec, rcs, want)
    leak_run(c, "static", sec, rcs, want)
    attach_run(c, sec, rcs, want)
    badpid_run(c, sec, rcs)
    verify_run(c, sec, rcs, want)
    fallback_run(c, sec, rcs, want)
    musl_lines = call_lines(a.musl_source, r"[\w@:]+")
    musl_leak_run(c, "musl-static", sec, rcs, musl_lines, "/musl-leak-static")
    musl_leak_run(c, "musl-dyn", sec, rcs, musl_lines, "/musl-leak-dyn")
    musl_verify_run(c, sec, rcs)
    musl_cfifp_run(c, sec, rcs)
    record_run(c, sec, rcs, a, os.path.dirname(os.path.abspath(a.log)))
    total = len(c.results)
    c.print()

    if c.passed < total:
        # Kernel messages from while the tests ran may explain a failure.
        start = times.get("dyn", 0.0) - 0.5
        kern = []
        for line in sec.get(("kernel", "dmesg"), []):
            m = re.match(r"\[\s*(\d+\.\d+)\]", line)
            if m and float(m.group(1)) >= start:
                kern.append(line)
        if kern:
            print("  kernel log while the tests ran:")
            for line in kern[-20:]:
                print("    | " + line)
    durations = []
    for s in STEPS:
        if s in times and s + ".done" in times:
            durations.append("%s %.1fs" % (s, times[s + ".done"] - times[s]))
    if durations:
        print("  guest time per step: " + ", ".join(durations)
              + ("; done at %.1fs after boot" % times["done"] if "done" in times else ""))
    for line in c.info:
        print("  " + line)
    # The verifier's statistics: the default variant (attach run, or its
    # second attempt) and the fallback variant.
    walk_insns = walk_states = load_s = "-"
    verifier = []
    for label, steps in (("default variant", ("attach", "attach.verbose")),
                         ("fallback variant", ("fallback",))):
        for step in steps:
            progs, load = verifier_stats(sec, step)
            if progs or load is not None:
                print("  verifier, %s (%s run): %s" % (label, step, describe_verifier(progs, load)))
                walk = progs.get(WALK_PROG)
                if label == "default variant":
                    if walk:
                        walk_insns = str(walk["insns"])
                        walk_states = str(walk["states"]) if walk["states"] is not None else "-"
                    if load is not None:
                        load_s = "%.2f" % load
                verifier.append("%s %s insns, %s states%s, load %s" % (
                    "fallback" if label == "fallback variant" else "default",
                    walk["insns"] if walk else "?", walk["states"] if walk else "?",
                    " (peak %s)" % walk["peak"] if walk and walk["peak"] is not None else "",
                    "%.2f s" % load if load is not None else "?"))
                break
    jit, jit_detail = jit_mode(info, a.kernel_config)
    events, events_line = transport(sec)
    reason = failure_reason(c, sec, rcs, info, done)
    print("  BPF: %s%s; event transport: %s (%s)" % (
        jit, " (%s)" % jit_detail if jit_detail else "", events,
        "memleak -v: " + events_line if events_line else "memleak -v names none"))
    print("  %s: %d/%d checks passed" % (a.target, c.passed, total))
    if reason:
        print("  %s: %s" % (a.target, reason))

    if a.summary:
        with open(a.summary, "w", encoding="utf-8") as f:
            for k, v in (("release", info.get("kernel", "-")),
                         ("btf", info.get("btf", "-")),
                         ("jit", jit),
                         ("events", events),
                         ("checks", "%d/%d" % (c.passed, total)),
                         ("reason", reason.replace("|", "/")),
                         ("walk_insns", walk_insns),
                         ("walk_states", walk_states),
                         ("load_s", load_s),
                         ("verifier", "; ".join(verifier) or "-")):
                f.write("%s=%s\n" % (k, shlex.quote(v)))
    return 0 if c.passed == total else 1


def expect_error_main(a, c, sec, rcs, times, info, done):
    """main() of the expected-error mode."""
    line = expect_error_checks(c, sec, rcs, info, a.expect_error, a.kernel_config)
    total = len(c.results)
    c.print()
    verbose = sec.get(("errcmd.verbose", "stderr"), [])
    if verbose:
        print("  memleak -v (errcmd.verbose), stderr:")
        for x in verbose[-15:]:
            print("    | " + x)
    print("  guest: uprobe_pmu=%s, uprobe_events=%s" % (
        info.get("uprobe_pmu", "?"), info.get("uprobe_events", "?")))
    jit, jit_detail = jit_mode(info, a.kernel_config)
    print("  BPF: %s%s" % (jit, " (%s)" % jit_detail if jit_detail else ""))
    print("  %s: %d/%d checks passed (expected error naming %s)" % (
        a.target, c.passed, total, a.expect_error))
    reason = ""
    if c.passed < total:
        if not info or not done:
            reason = "the guest did not run every step (see serial.log)"
        else:
            first = next(name for ok, name, _ in c.results if not ok)
            reason = "expected an error naming %s; %s" % (
                a.expect_error, "got: " + shorten(line[len("error:"):], 110) if line
                else "FAIL " + first)
        print("  %s: %s" % (a.target, reason))
    if a.summary:
        with open(a.summary, "w", encoding="utf-8") as f:
            for k, v in (("release", info.get("kernel", "-")),
                         ("btf", info.get("btf", "-")),
                         ("jit", jit),
                         ("events", "-"),
                         ("checks", "%d/%d" % (c.passed, total)),
                         ("reason", reason.replace("|", "/")),
                         ("walk_insns", "-"),
                         ("walk_states", "-"),
                         ("load_s", "-"),
                         ("verifier", "-"),
                         ("mode", "expect-error"),
                         ("error", line[len("error:"):].strip().replace("|", "/"))):
                f.write("%s=%s\n" % (k, shlex.quote(v)))
    return 0 if c.passed == total else 1


if __name__ == "__main__":
    sys.exit(main())
