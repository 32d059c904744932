//! Shared helpers of the end-to-end tests: building the C fixtures, running
//! `memleak`, parsing its JSON reports and the fixtures' ground truth, and
//! matching stack frames against the `/* CALL:... */` markers in the
//! fixtures' sources.
//!
//! Every helper panics with a message that says what was expected and shows
//! what was seen; nothing is skipped silently.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one run of `memleak` (or valgrind) may take before the test
/// kills it and fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Paths and privileges
// ---------------------------------------------------------------------------

/// The repository root (`crates/loader/../..`).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize()
        .unwrap_or_else(|e| panic!("cannot resolve the repository root {}: {e}", root.display()))
}

/// A fixture source in `tests/fixtures/src`.
pub fn fixture_src(name: &str) -> PathBuf {
    let p = repo_root().join("tests/fixtures/src").join(name);
    assert!(p.is_file(), "fixture source {} is missing", p.display());
    p
}

/// A source in `examples/`.
pub fn example_src(name: &str) -> PathBuf {
    let p = repo_root().join("examples").join(name);
    assert!(p.is_file(), "example source {} is missing", p.display());
    p
}

/// Scratch directory for built fixtures and generated files.
pub fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create scratch dir {}: {e}", dir.display()));
    dir
}

/// The `memleak` binary under test.
pub fn memleak_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_memleak"))
}

/// Fails the test unless it runs as root: memleak loads BPF programs and
/// attaches uprobes, which needs root. These tests are never skipped.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("cannot read /proc/self/status: {e}"));
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no effective uid in /proc/self/status"));
    assert_eq!(
        euid, 0,
        "the end-to-end tests of memleak need root (BPF programs and uprobes); \
         run them as root, e.g. `sudo -E cargo test -p memleak-loader --test e2e` \
         (effective uid is {euid})"
    );
}

/// Removes the files and directories it names when the test ends, unless
/// it failed (they are kept to look at).
pub struct Cleanup(Vec<PathBuf>);

impl Cleanup {
    pub fn of(paths: &[&Path]) -> Cleanup {
        Cleanup(paths.iter().map(|p| p.to_path_buf()).collect())
    }

    /// One more path to remove.
    pub fn add(&mut self, p: &Path) {
        self.0.push(p.to_path_buf());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if thread::panicking() {
            return;
        }
        for p in &self.0 {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Returns a fresh, unique path in the scratch dir (file not created).
pub fn unique_scratch_path(stem: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    scratch_dir().join(format!("{stem}.{}.{n}", std::process::id()))
}

// ---------------------------------------------------------------------------
// Building fixtures
// ---------------------------------------------------------------------------

type BuildCell = Arc<OnceLock<PathBuf>>;

fn build_cells() -> &'static Mutex<HashMap<String, BuildCell>> {
    static CELLS: OnceLock<Mutex<HashMap<String, BuildCell>>> = OnceLock::new();
    CELLS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Compiles `args` (sources and flags; `-o` is added) with `compiler` into
/// `<scratch>/<output_name>`, once per test process. Safe under parallel test
/// threads (one build per name, others wait for it) and across processes
/// (built under a unique name, then renamed into place).
pub fn compile(output_name: &str, compiler: &str, args: &[&str]) -> PathBuf {
    let cell = {
        let mut cells = lock(build_cells());
        cells.entry(output_name.to_string()).or_default().clone()
    };
    cell.get_or_init(|| {
        let out = scratch_dir().join(output_name);
        let tmp = unique_scratch_path(&format!(".{output_name}.tmp"));
        let mut cmd = Command::new(compiler);
        cmd.args(args).arg("-o").arg(&tmp);
        let rendered = format!("{cmd:?}");
        let output = cmd.output().unwrap_or_else(|e| {
            panic!("cannot run the compiler `{compiler}` ({e}); it is needed to build the test fixtures: {rendered}")
        });
        if !output.status.success() {
            let _ = std::fs::remove_file(&tmp);
            panic!(
                "building fixture {output_name} failed ({}):\n{rendered}\n--- compiler stderr ---\n{}\n--- compiler stdout ---\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::fs::rename(&tmp, &out).unwrap_or_else(|e| {
            panic!("cannot move {} to {}: {e}", tmp.display(), out.display())
        });
        out
    })
    .clone()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

/// The fixtures, each built once per process: a table of builds.
pub mod fixtures {
    use super::*;

    /// One fixture: compiled from `sources` (paths from the repository
    /// root) by `compiler` with `flags` before them and `libs` after, into
    /// `<scratch>/<output>`.
    pub struct Build {
        pub output: &'static str,
        pub compiler: &'static str,
        pub flags: &'static [&'static str],
        pub sources: &'static [&'static str],
        pub libs: &'static [&'static str],
    }

    /// Builds `b` (once per test process; see `compile`).
    pub fn build(b: &Build) -> PathBuf {
        let sources: Vec<PathBuf> = b
            .sources
            .iter()
            .map(|s| {
                let p = repo_root().join(s);
                assert!(p.is_file(), "fixture source {} is missing", p.display());
                p
            })
            .collect();
        let mut args: Vec<&str> = b.flags.to_vec();
        args.extend(sources.iter().map(|p| path_str(p)));
        args.extend_from_slice(b.libs);
        compile(b.output, b.compiler, &args)
    }

    /// Optimized, with debug information, without frame pointers.
    const NOFP: &[&str] = &["-O2", "-g", "-fomit-frame-pointer"];
    const NOFP_PTHREAD: &[&str] = &["-O2", "-g", "-fomit-frame-pointer", "-pthread"];
    const NOFP_STATIC: &[&str] = &["-static", "-O2", "-g", "-fomit-frame-pointer"];

    const fn fixture(
        output: &'static str,
        compiler: &'static str,
        flags: &'static [&'static str],
        sources: &'static [&'static str],
    ) -> Build {
        Build {
            output,
            compiler,
            flags,
            sources,
            libs: &[],
        }
    }

    /// examples/leaky.c without frame pointers: `-O2 -g -fomit-frame-pointer -fno-inline`.
    pub const LEAKY: Build = fixture(
        "leaky",
        "gcc",
        &["-O2", "-g", "-fomit-frame-pointer", "-fno-inline"],
        &["examples/leaky.c"],
    );
    /// tests/fixtures/src/deep.c: recursion 512 bytes a level deep.
    pub const DEEP: Build = fixture("deep", "gcc", NOFP, &["tests/fixtures/src/deep.c"]);
    pub const ACCOUNTING: Build = fixture(
        "accounting",
        "gcc",
        NOFP,
        &["tests/fixtures/src/accounting.c"],
    );
    pub const THREADS: Build = fixture(
        "threads",
        "gcc",
        NOFP_PTHREAD,
        &["tests/fixtures/src/threads.c"],
    );
    /// tests/fixtures/src/burst.c: `burst NTHREADS ITERATIONS`, threads
    /// allocating, reallocating and freeing in a tight loop.
    pub const BURST: Build = fixture(
        "burst",
        "gcc",
        NOFP_PTHREAD,
        &["tests/fixtures/src/burst.c"],
    );
    /// tests/fixtures/src/cxx_startup.cc: 600 operator new calls at
    /// start-up, 400 of them from a static initializer.
    pub const CXX_STARTUP: Build = fixture(
        "cxx_startup",
        "g++",
        NOFP,
        &["tests/fixtures/src/cxx_startup.cc"],
    );
    pub const CXX_LEAK: Build =
        fixture("cxx_leak", "g++", NOFP, &["tests/fixtures/src/cxx_leak.cc"]);
    /// `libplugin.so`, loaded at run time by `dlopen_main`.
    pub const PLUGIN: Build = fixture(
        "libplugin.so",
        "gcc",
        &["-O2", "-g", "-fomit-frame-pointer", "-fPIC", "-shared"],
        &["tests/fixtures/src/plugin.c"],
    );
    pub const DLOPEN_MAIN: Build = Build {
        libs: &["-ldl"],
        ..fixture(
            "dlopen_main",
            "gcc",
            NOFP,
            &["tests/fixtures/src/dlopen_main.c"],
        )
    };
    pub const STATIC_LEAK: Build = fixture(
        "static_leak",
        "gcc",
        NOFP_STATIC,
        &["tests/fixtures/src/static_leak.c"],
    );
    /// tests/fixtures/src/forker.c: a parent, two children, a grandchild
    /// and an exec, each leaking its own amount.
    pub const FORKER: Build = fixture(
        "forker",
        "gcc",
        &["-O2", "-g", "-fno-omit-frame-pointer"],
        &["tests/fixtures/src/forker.c"],
    );
    /// tests/fixtures/src/musl_leak.c, static, with Debian's musl (libc.a:
    /// no unwind tables, no frame pointers).
    pub const MUSL_LEAK_STATIC: Build = fixture(
        "musl_leak_static",
        "musl-gcc",
        NOFP_STATIC,
        &["tests/fixtures/src/musl_leak.c"],
    );
    /// tests/fixtures/src/musl_leak.c, dynamic, with Debian's musl (runs
    /// with /lib/ld-musl-x86_64.so.1, a stripped libc.so without unwind
    /// tables).
    pub const MUSL_LEAK_DYNAMIC: Build = fixture(
        "musl_leak_dynamic",
        "musl-gcc",
        NOFP,
        &["tests/fixtures/src/musl_leak.c"],
    );
    /// tests/fixtures/src/chain.c, static, with Debian's musl: a program
    /// that allocates and never frees, so musl's `free` is not linked in.
    pub const CHAIN_MUSL_STATIC: Build = fixture(
        "chain_musl_static",
        "musl-gcc",
        NOFP_STATIC,
        &["tests/fixtures/src/chain.c"],
    );

    pub fn leaky() -> PathBuf {
        build(&LEAKY)
    }

    pub fn deep() -> PathBuf {
        build(&DEEP)
    }

    pub fn accounting() -> PathBuf {
        build(&ACCOUNTING)
    }

    pub fn threads() -> PathBuf {
        build(&THREADS)
    }

    pub fn burst() -> PathBuf {
        build(&BURST)
    }

    pub fn cxx_startup() -> PathBuf {
        build(&CXX_STARTUP)
    }

    pub fn cxx_leak() -> PathBuf {
        build(&CXX_LEAK)
    }

    pub fn plugin() -> PathBuf {
        build(&PLUGIN)
    }

    pub fn dlopen_main() -> PathBuf {
        build(&DLOPEN_MAIN)
    }

    pub fn forker() -> PathBuf {
        build(&FORKER)
    }

    /// tests/fixtures/src/growth.c: a leak growing for 3 s next to a
    /// cache filled once.
    pub const GROWTH: Build = fixture("growth", "gcc", NOFP, &["tests/fixtures/src/growth.c"]);

    pub fn growth() -> PathBuf {
        build(&GROWTH)
    }

    /// tests/fixtures/src/sampled.c: 200,000 allocations of 256 to 4095
    /// bytes, three in four leaked.
    pub const SAMPLED: Build = fixture("sampled", "gcc", NOFP, &["tests/fixtures/src/sampled.c"]);

    pub fn sampled() -> PathBuf {
        build(&SAMPLED)
    }

    pub fn static_leak() -> PathBuf {
        build(&STATIC_LEAK)
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ChainVariant {
        /// `-fno-omit-frame-pointer`: every function keeps an rbp frame.
        FramePointers,
        /// `-fomit-frame-pointer`: only CFI in .eh_frame describes the frames.
        NoFramePointers,
        /// No unwind tables in .eh_frame for the program's own code; the CFI
        /// is only in .debug_frame.
        DebugFrameOnly,
    }

    pub const CHAIN_FP: Build = fixture(
        "chain_fp",
        "gcc",
        &["-O2", "-g", "-fno-omit-frame-pointer"],
        &["tests/fixtures/src/chain.c"],
    );
    pub const CHAIN_NOFP: Build =
        fixture("chain_nofp", "gcc", NOFP, &["tests/fixtures/src/chain.c"]);
    pub const CHAIN_DEBUG_FRAME: Build = fixture(
        "chain_debug_frame",
        "gcc",
        &[
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ],
        &["tests/fixtures/src/chain.c"],
    );

    pub fn chain(variant: ChainVariant) -> PathBuf {
        build(match variant {
            ChainVariant::FramePointers => &CHAIN_FP,
            ChainVariant::NoFramePointers => &CHAIN_NOFP,
            ChainVariant::DebugFrameOnly => &CHAIN_DEBUG_FRAME,
        })
    }
}

// ---------------------------------------------------------------------------
// Inspecting the fixtures' binaries (binutils)
// ---------------------------------------------------------------------------

/// The stdout of a binutils tool run on `file` (which must succeed).
pub fn tool_output(tool: &str, args: &[&str], file: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (binutils): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} {} failed:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Address of a symbol: from the static symbol table, else (a stripped
/// shared object) from the dynamic one.
pub fn symbol_address(bin: &Path, name: &str) -> u64 {
    try_symbol_address(bin, name).unwrap_or_else(|| panic!("no symbol {name} in {}", bin.display()))
}

/// `symbol_address`, or None where `bin` has no such symbol.
pub fn try_symbol_address(bin: &Path, name: &str) -> Option<u64> {
    let find = |args: &[&str]| {
        tool_output("nm", args, bin).lines().find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 3 && w[2] == name).then(|| u64::from_str_radix(w[0], 16).unwrap())
        })
    };
    find(&[]).or_else(|| find(&["-D"]))
}

/// Fails unless `bin` is statically linked (no INTERP, no DYNAMIC).
pub fn assert_static_executable(bin: &Path) {
    let text = tool_output("readelf", &["-lW"], bin);
    assert!(
        !text.contains("INTERP") && !text.contains("DYNAMIC"),
        "{} is not statically linked:\n{text}",
        bin.display()
    );
}

/// Whether an FDE of `section` (".eh_frame" or ".debug_frame") covers `addr`.
pub fn fde_covers(bin: &Path, section: &str, addr: u64) -> bool {
    let dump = tool_output("readelf", &["--debug-dump=frames"], bin);
    let mut in_section = false;
    for line in dump.lines() {
        if let Some(rest) = line.strip_prefix("Contents of the ") {
            in_section = rest.starts_with(&format!("{section} section"));
            continue;
        }
        if !in_section || !line.contains(" FDE ") {
            continue;
        }
        // "... FDE cie=00000000 pc=0000000000001170..0000000000001190"
        if let Some(range) = line.split("pc=").nth(1) {
            let mut ends = range.trim().split("..");
            let lo = u64::from_str_radix(ends.next().unwrap_or(""), 16);
            let hi = u64::from_str_radix(ends.next().unwrap_or(""), 16);
            if let (Ok(lo), Ok(hi)) = (lo, hi) {
                if (lo..hi).contains(&addr) {
                    return true;
                }
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------

/// What a finished (or killed) process left behind.
pub struct Run {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Everything about the run, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }

    /// All JSON reports: on stdout with `-p` (every non-empty stdout line
    /// must be one JSON object), on stderr with a command (the lines that
    /// start with `{"final":`, among the program's own output).
    pub fn reports(&self) -> Vec<Report> {
        let mut reports = Vec::new();
        let on_stderr = self.stderr.lines().filter(|l| l.starts_with(REPORT_PREFIX));
        for (i, line) in self.stdout.lines().chain(on_stderr).enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "report line {} is not a JSON object ({e}): {line:?}\n{}",
                    i + 1,
                    self.describe()
                )
            });
            reports.push(
                Report::from_json(&value)
                    .unwrap_or_else(|e| panic!("bad report on line {}: {e}\n{line}", i + 1)),
            );
        }
        for r in &reports {
            r.check_invariants();
        }
        reports
    }

    /// The final report: there must be exactly one report with `"final": true`,
    /// and it must be the last one.
    pub fn final_report(&self) -> Report {
        assert!(
            self.status.success(),
            "memleak did not exit successfully\n{}",
            self.describe()
        );
        let mut reports = self.reports();
        let finals = reports.iter().filter(|r| r.is_final).count();
        assert_eq!(
            finals,
            1,
            "expected exactly one final report\n{}",
            self.describe()
        );
        let last = reports.pop().unwrap();
        assert!(
            last.is_final,
            "the final report is not the last one\n{}",
            self.describe()
        );
        last
    }

    /// The fixture's ground truth, which `report`'s outstanding totals must
    /// equal exactly (its bytes and blocks); returned for further checks.
    pub fn assert_totals_are_the_programs(&self, report: &Report) -> Expect {
        let expect = self.expect();
        assert_totals(
            report,
            (expect.leaked_bytes, expect.leaked_allocations),
            &format!("the program's own count\n{}", self.describe()),
        );
        expect
    }

    /// The fixture's ground truth (its EXPECT lines, passed through on stderr).
    pub fn expect(&self) -> Expect {
        Expect::parse(&self.stderr).unwrap_or_else(|e| {
            panic!("no ground truth from the fixture: {e}\n{}", self.describe())
        })
    }
}

/// How every JSON report begins.
pub const REPORT_PREFIX: &str = "{\"final\":";

fn spawn_reader<R: Read + Send + 'static>(
    mut r: R,
) -> (Arc<Mutex<Vec<u8>>>, thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let handle = thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => lock(&b).extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buf, handle)
}

/// Runs `cmd` to completion with piped stdout/stderr; kills it and fails the
/// test if it takes longer than `timeout`.
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> Run {
    run_with_timeout_during(cmd, timeout, |_| {})
}

/// `run_with_timeout`, calling `during` with the PID of `cmd` once it has
/// started (to send it signals while it runs).
pub fn run_with_timeout_during(
    mut cmd: Command,
    timeout: Duration,
    during: impl FnOnce(u32),
) -> Run {
    let command = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child: Child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    let (out, out_thread) = spawn_reader(child.stdout.take().unwrap());
    let (err, err_thread) = spawn_reader(child.stderr.take().unwrap());
    during(child.id());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                // Something it started may still hold the pipes: do not wait for EOF.
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "timed out after {timeout:?}: {command}\n--- stdout so far ---\n{}\n--- stderr so far ---\n{}",
                    String::from_utf8_lossy(&lock(&out)),
                    String::from_utf8_lossy(&lock(&err))
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {command}: {e}"),
        }
    };
    // The pipes close when the process and everything it started are gone;
    // give stragglers a bounded time.
    let join_deadline = Instant::now() + Duration::from_secs(30);
    while !(out_thread.is_finished() && err_thread.is_finished()) {
        assert!(
            Instant::now() < join_deadline,
            "{command} exited but its output pipes stayed open for 30 s (a leftover child?)"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let _ = out_thread.join();
    let _ = err_thread.join();
    let stdout = String::from_utf8_lossy(&lock(&out)).into_owned();
    let stderr = String::from_utf8_lossy(&lock(&err)).into_owned();
    Run {
        command,
        status,
        stdout,
        stderr,
    }
}

/// memleak runs are serialized within the test process, so that concurrent
/// tracers do not compete for the two CPUs of the test machine and timing
/// stays predictable.
fn memleak_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    lock(&LOCK)
}

/// Runs `memleak ARGS...` to completion.
pub fn memleak(args: &[&str]) -> Run {
    require_root();
    let _guard = memleak_lock();
    let mut cmd = Command::new(memleak_bin());
    cmd.args(args);
    run_with_timeout(cmd, RUN_TIMEOUT)
}

/// Runs `cmd`, which starts memleak (itself, or through a shell for a
/// pipeline), as `memleak` does (as root, one memleak run at a time);
/// `during` gets the PID of `cmd` once it has started.
pub fn memleak_command(cmd: Command, during: impl FnOnce(u32)) -> Run {
    require_root();
    let _guard = memleak_lock();
    run_with_timeout_during(cmd, RUN_TIMEOUT, during)
}

/// Runs `memleak --format json -T 1000 EXTRA... -- PROGRAM PROGRAM_ARGS...`.
pub fn memleak_json(extra: &[&str], program: &Path, program_args: &[&str]) -> Run {
    let mut args: Vec<&str> = vec!["--format", "json", "-T", "1000"];
    args.extend_from_slice(extra);
    args.push("--");
    args.push(path_str(program));
    args.extend_from_slice(program_args);
    memleak(&args)
}

/// The option that unwinds every allocation both in the kernel and in user
/// space and counts the stacks on which they disagree
/// (`losses.unwind_disagreements`).
pub const VERIFY_UNWIND: &str = "--verify-unwind";

/// `extra`, plus `--verify-unwind` if `verify_unwind`.
pub fn with_verify_unwind<'a>(extra: &[&'a str], verify_unwind: bool) -> Vec<&'a str> {
    let mut args = extra.to_vec();
    if verify_unwind {
        args.push(VERIFY_UNWIND);
    }
    args
}

/// The final report of `run`; for a run with `--verify-unwind`
/// (`verify_unwind`), also checks that the two unwinders agreed on every
/// stack and that no event was lost.
pub fn checked_final_report(run: &Run, verify_unwind: bool) -> Report {
    let report = run.final_report();
    if verify_unwind {
        // Shown with --nocapture (and with a failing test's output).
        eprintln!(
            "{}: unwind_verified={} unwind_disagreements={} kernel_stacks={} rule_misses={} \
             verify_copies_skipped={}",
            run.command,
            loss(&report, "unwind_verified"),
            loss(&report, "unwind_disagreements"),
            loss(&report, "kernel_stacks"),
            loss(&report, "rule_misses"),
            loss(&report, "verify_copies_skipped")
        );
        assert_no_lost_events(&report);
        assert_no_unwind_disagreements(&report);
    }
    report
}

/// `lost_events` is 0; otherwise fails showing the loss counters and the
/// largest stacks.
pub fn assert_no_lost_events(report: &Report) {
    assert_eq!(
        report.lost_events,
        0,
        "events were lost:\n{}",
        report.render_summary(SUMMARY_STACKS)
    );
}

/// `losses.unwind_disagreements` is present and 0: with `--verify-unwind`,
/// the kernel's and user space's unwinding of every allocation gave the same
/// stack. A report without the counter fails.
pub fn assert_no_unwind_disagreements(report: &Report) {
    let Some(&disagreements) = report.losses.get("unwind_disagreements") else {
        panic!(
            "the report has no losses.unwind_disagreements counter (losses: {:?}); \
             a run with {VERIFY_UNWIND} must report it:\n{}",
            report.losses,
            report.render_summary(SUMMARY_STACKS)
        );
    };
    assert_eq!(
        disagreements,
        0,
        "the kernel and user-space unwinders disagreed on {disagreements} stacks:\n{}",
        report.render_summary(SUMMARY_STACKS)
    );
    // A run in which the kernel finished no stack compared nothing.
    let verified = report.losses.get("unwind_verified").copied().unwrap_or(0);
    assert!(
        verified > 0,
        "{VERIFY_UNWIND} compared no stack the kernel walked (unwind_verified = {verified}): \
         every allocation missed the rule cache, so nothing was verified:\n{}",
        report.render_summary(SUMMARY_STACKS)
    );
}

/// Stacks shown by `Report::render_summary` in failure messages of the
/// load tests (a report with lost frees can list a thousand stacks).
pub const SUMMARY_STACKS: usize = 16;

/// The pause, in ms, that the `--verify-unwind` twins ask their fixture for
/// (its PAUSE_MS argument) between the first allocation on each checked call
/// path and the later ones.
///
/// The first allocation on a path misses the kernel's rule cache and is
/// unwound in user space from its stack copy; only once memleak has cached
/// the path's rules (a few ms later; tens of ms for a debug build on a busy
/// machine) does the kernel walk the allocations on that path, and only
/// those are compared with user space's unwinding (`unwind_verified`). A
/// fixture that makes all its allocations at once has them all miss and
/// verifies nothing. The twins count every allocation made at least this
/// long after the first on its path as one the kernel walked.
pub const VERIFY_PAUSE_MS: u64 = 300;

/// `VERIFY_PAUSE_MS` as a fixture argument.
pub fn verify_pause_arg() -> String {
    VERIFY_PAUSE_MS.to_string()
}

/// The loss counter `name` of the report (0 when absent).
pub fn loss(report: &Report, name: &str) -> u64 {
    report.losses.get(name).copied().unwrap_or(0)
}

/// With `--verify-unwind`: at least `at_least` allocations were walked by
/// the kernel and compared with user space's unwinding
/// (`losses.unwind_verified`), less those whose verification copy yielded to
/// misses (`verify_copies_skipped`: counted, never lost). `at_least` is the
/// number of allocations the program made on its checked call paths at least
/// `VERIFY_PAUSE_MS` after the first on each path, described by `what`.
///
/// The counter is per run, not per stack: for a program that also allocates
/// elsewhere (a language runtime, the dynamic loader) this cannot tell which
/// paths the verified stacks are on; see `assert_path_verified_at_least` for
/// programs that allocate nothing else.
pub fn assert_unwind_verified_at_least(report: &Report, at_least: u64, what: &str) {
    let verified = loss(report, "unwind_verified");
    let skipped = loss(report, "verify_copies_skipped");
    assert!(
        verified >= at_least.saturating_sub(skipped),
        "{VERIFY_UNWIND}: unwind_verified = {verified} (verify_copies_skipped = {skipped}), \
         expected at least {at_least}: {what}, made at least {VERIFY_PAUSE_MS} ms after the \
         first allocation on their call path, should all have been walked by the kernel \
         and verified:\n{}",
        report.render_summary(SUMMARY_STACKS)
    );
}

/// With `--verify-unwind`, for a program whose only allocations the tracer
/// can see are `path_allocations` on its checked call paths: at least
/// `at_least` of the stacks the kernel walked and user space verified are on
/// those paths (less skipped verification copies, as in
/// `assert_unwind_verified_at_least`).
///
/// The run's other allocations (`kernel_stacks + rule_misses`, all the
/// allocations walked, minus `path_allocations`: none for such a program)
/// could all be among the verified ones; the rest of `unwind_verified` is
/// on the checked paths. So this holds only if the checked paths themselves
/// were verified, not merely some unrelated allocation.
pub fn assert_path_verified_at_least(
    report: &Report,
    path_allocations: u64,
    at_least: u64,
    what: &str,
) {
    let verified = loss(report, "unwind_verified");
    let skipped = loss(report, "verify_copies_skipped");
    let walked = loss(report, "kernel_stacks") + loss(report, "rule_misses");
    assert!(
        walked >= path_allocations,
        "{VERIFY_UNWIND}: the kernel walked {walked} stacks (kernel_stacks + rule_misses), \
         fewer than the {path_allocations} allocations of {what}:\n{}",
        report.render_summary(SUMMARY_STACKS)
    );
    let elsewhere = walked - path_allocations;
    let on_paths = verified.saturating_sub(elsewhere);
    assert!(
        on_paths >= at_least.saturating_sub(skipped),
        "{VERIFY_UNWIND}: at most {on_paths} of the unwind_verified = {verified} stacks are on \
         the checked call paths ({elsewhere} of the {walked} allocations walked were elsewhere; \
         verify_copies_skipped = {skipped}), expected at least {at_least}: {what}, made at \
         least {VERIFY_PAUSE_MS} ms after the first allocation on their call path, should all \
         have been walked by the kernel and verified:\n{}",
        report.render_summary(SUMMARY_STACKS)
    );
}

// ---------------------------------------------------------------------------
// valgrind
// ---------------------------------------------------------------------------

/// Runs PROGRAM under valgrind (no leak check, no freeres) and returns
/// (bytes, blocks) in use at exit.
pub fn valgrind_in_use(program: &Path, args: &[&str]) -> (u64, u64) {
    if let Err(e) = Command::new("valgrind").arg("--version").output() {
        panic!("valgrind is needed for this cross-check but cannot be run ({e}); install it (`apt-get install valgrind`)");
    }
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--run-libc-freeres=no",
        "--run-cxx-freeres=no",
        "--leak-check=no",
    ])
    .arg(program)
    .args(args);
    let run = run_with_timeout(cmd, RUN_TIMEOUT);
    assert!(
        run.status.success(),
        "valgrind failed (is it installed? `apt-get install valgrind`)\n{}",
        run.describe()
    );
    // ==123==     in use at exit: 3,184 bytes in 15 blocks
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("in use at exit:"))
        .unwrap_or_else(|| {
            panic!(
                "no 'in use at exit' in valgrind's output\n{}",
                run.describe()
            )
        });
    let rest = line.split("in use at exit:").nth(1).unwrap();
    let words: Vec<&str> = rest.split_whitespace().collect();
    let parse = |w: &str| -> u64 {
        w.replace(',', "")
            .parse()
            .unwrap_or_else(|e| panic!("cannot parse {w:?} in {line:?}: {e}"))
    };
    assert!(
        words.len() >= 5
            && words[1] == "bytes"
            && words[2] == "in"
            && words[4].starts_with("block"),
        "unexpected valgrind summary line {line:?}"
    );
    (parse(words[0]), parse(words[3]))
}

type ValgrindCell = Arc<OnceLock<(u64, u64)>>;

/// `valgrind_in_use`, run once per process for each program and argument
/// list (tests that trace the same program the same way share it).
pub fn valgrind_in_use_once(program: &Path, args: &[&str]) -> (u64, u64) {
    static CELLS: OnceLock<Mutex<HashMap<String, ValgrindCell>>> = OnceLock::new();
    let key = format!("{} {args:?}", program.display());
    let cell = {
        let mut cells = lock(CELLS.get_or_init(|| Mutex::new(HashMap::new())));
        cells.entry(key).or_default().clone()
    };
    *cell.get_or_init(|| valgrind_in_use(program, args))
}

/// memleak's outstanding totals equal the bytes and blocks valgrind finds in
/// use at exit for the same program and arguments.
pub fn assert_outstanding_matches_valgrind(report: &Report, program: &Path, args: &[&str]) {
    let valgrind = valgrind_in_use_once(program, args);
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        valgrind,
        "memleak's outstanding (bytes, allocations) differ from valgrind's (bytes, blocks) \
         in use at exit for {} {args:?}:\n{}",
        program.display(),
        report.render_summary(SUMMARY_STACKS)
    );
}

/// `report`'s outstanding (bytes, blocks) are `want`; `against` says what
/// `want` is, for the failure message.
pub fn assert_totals(report: &Report, want: (u64, u64), against: &str) {
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        want,
        "process {}: outstanding (bytes, blocks) differ from {against}:\n{}",
        report.pid,
        report.render()
    );
}

// ---------------------------------------------------------------------------
// Ground truth printed by the fixtures
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct ExpectSite {
    /// The function whose call is the leak site.
    pub function: String,
    /// The allocator it calls (`operator_new` for C++ new).
    pub allocator: String,
    /// Bytes of each block of the site.
    pub size: u64,
    pub allocations: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug)]
pub struct Expect {
    pub leaked_bytes: u64,
    pub leaked_allocations: u64,
    pub sites: Vec<ExpectSite>,
}

fn key_values(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

fn num(kv: &BTreeMap<&str, &str>, key: &str, line: &str) -> Result<u64, String> {
    kv.get(key)
        .ok_or_else(|| format!("no {key}= in {line:?}"))?
        .parse()
        .map_err(|e| format!("bad {key}= in {line:?}: {e}"))
}

impl Expect {
    /// Parses `EXPECT leaked_bytes=N leaked_allocations=M` (exactly one) and
    /// any `EXPECT_SITE function=F allocator=A size=S allocations=N bytes=B` lines.
    pub fn parse(stderr: &str) -> Result<Expect, String> {
        let mut totals = None;
        let mut sites = Vec::new();
        for line in stderr.lines() {
            let line = line.trim();
            if line.starts_with("EXPECT ") {
                if totals.is_some() {
                    return Err("more than one EXPECT line".into());
                }
                let kv = key_values(line);
                totals = Some((
                    num(&kv, "leaked_bytes", line)?,
                    num(&kv, "leaked_allocations", line)?,
                ));
            } else if line.starts_with("EXPECT_SITE ") {
                let kv = key_values(line);
                let site = ExpectSite {
                    function: kv
                        .get("function")
                        .ok_or("EXPECT_SITE without function=")?
                        .to_string(),
                    allocator: kv
                        .get("allocator")
                        .ok_or("EXPECT_SITE without allocator=")?
                        .to_string(),
                    size: num(&kv, "size", line)?,
                    allocations: num(&kv, "allocations", line)?,
                    bytes: num(&kv, "bytes", line)?,
                };
                if site.size * site.allocations != site.bytes {
                    return Err(format!("inconsistent EXPECT_SITE line {line:?}"));
                }
                sites.push(site);
            }
        }
        let (leaked_bytes, leaked_allocations) = totals.ok_or("no EXPECT line on stderr")?;
        Ok(Expect {
            leaked_bytes,
            leaked_allocations,
            sites,
        })
    }

    pub fn site(&self, function: &str) -> &ExpectSite {
        self.sites
            .iter()
            .find(|s| s.function == function)
            .unwrap_or_else(|| panic!("no EXPECT_SITE for {function} in {:?}", self.sites))
    }
}

// ---------------------------------------------------------------------------
// Source markers
// ---------------------------------------------------------------------------

/// The 1-based line of the unique `/* MARKER */` comment in `src`, e.g.
/// `marker_line(src, "CALL:malloc@level3")`.
pub fn marker_line(src: &Path, marker: &str) -> u64 {
    let text = std::fs::read_to_string(src)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
    let needle = format!("/* {marker} */");
    let hits: Vec<u64> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&needle))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "marker {needle} must occur exactly once in {}, found at lines {hits:?}",
        src.display()
    );
    hits[0]
}

/// Line of `/* CALL:<marker> */`.
pub fn call_line(src: &Path, marker: &str) -> u64 {
    marker_line(src, &format!("CALL:{marker}"))
}

// ---------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Frame {
    pub address: u64,
    pub function: Option<String>,
    pub offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u64>,
    /// Path of the ELF file; null only for an address in no known mapping.
    pub module: Option<String>,
    /// The address in the module's file (`module_address`).
    pub module_address: Option<u64>,
    pub method: String,
    pub inlined: bool,
}

#[derive(Clone, Debug)]
pub struct Stack {
    pub stack_id: String,
    /// "heap" (the default when absent) or "mmap" (with --mmap).
    pub category: String,
    pub bytes: u64,
    pub allocations: u64,
    pub oldest_ms: f64,
    pub frames: Vec<Frame>,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub is_final: bool,
    pub pid: u64,
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub lost_events: u64,
    pub truncated_stacks: u64,
    pub losses: BTreeMap<String, u64>,
    pub stacks: Vec<Stack>,
}

fn field<'a>(obj: &'a Value, key: &str) -> Result<&'a Value, String> {
    obj.get(key)
        .ok_or_else(|| format!("missing field {key:?} in {obj}"))
}

fn u64_field(obj: &Value, key: &str) -> Result<u64, String> {
    field(obj, key)?
        .as_u64()
        .ok_or_else(|| format!("field {key:?} is not a non-negative integer in {obj}"))
}

fn opt_u64_field(obj: &Value, key: &str) -> Result<Option<u64>, String> {
    match field(obj, key)? {
        Value::Null => Ok(None),
        v => v.as_u64().map(Some).ok_or_else(|| {
            format!("field {key:?} is neither null nor a non-negative integer in {obj}")
        }),
    }
}

fn str_field(obj: &Value, key: &str) -> Result<String, String> {
    field(obj, key)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("field {key:?} is not a string in {obj}"))
}

fn opt_str_field(obj: &Value, key: &str) -> Result<Option<String>, String> {
    match field(obj, key)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(format!(
            "field {key:?} is neither null nor a string in {obj}"
        )),
    }
}

fn bool_field(obj: &Value, key: &str) -> Result<bool, String> {
    field(obj, key)?
        .as_bool()
        .ok_or_else(|| format!("field {key:?} is not a boolean in {obj}"))
}

fn hex_field(obj: &Value, key: &str) -> Result<u64, String> {
    let s = str_field(obj, key)?;
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("field {key:?} = {s:?} is not a 0x-prefixed hex string"))?;
    u64::from_str_radix(digits, 16).map_err(|e| format!("field {key:?} = {s:?}: {e}"))
}

impl Frame {
    fn from_json(v: &Value) -> Result<Frame, String> {
        let method = str_field(v, "method")?;
        if !["regs", "entry", "cfi", "fp", "prologue", "scan"].contains(&method.as_str()) {
            return Err(format!("unknown unwind method {method:?} in {v}"));
        }
        Ok(Frame {
            address: hex_field(v, "address")?,
            function: opt_str_field(v, "function")?,
            offset: opt_u64_field(v, "offset")?,
            file: opt_str_field(v, "file")?,
            line: opt_u64_field(v, "line")?,
            module: opt_str_field(v, "module")?,
            module_address: match v.get("module_address") {
                None | Some(Value::Null) => None,
                Some(_) => Some(hex_field(v, "module_address")?),
            },
            method,
            inlined: bool_field(v, "inlined")?,
        })
    }

    pub fn function(&self) -> &str {
        self.function.as_deref().unwrap_or("")
    }

    pub fn module(&self) -> &str {
        self.module.as_deref().unwrap_or("")
    }

    pub fn module_file_name(&self) -> &str {
        self.module().rsplit('/').next().unwrap_or("")
    }

    /// True for the C library's shared object (`libc.so.6`).
    pub fn in_libc(&self) -> bool {
        let name = self.module_file_name();
        name.starts_with("libc.so") || name.starts_with("libc-")
    }

    pub fn in_module(&self, path: &Path) -> bool {
        self.module
            .as_deref()
            .is_some_and(|m| same_file(Path::new(m), path))
    }

    pub fn render(&self) -> String {
        format!(
            "0x{:x} {}{} at {}:{} [{}] method={}{}",
            self.address,
            self.function.as_deref().unwrap_or("??"),
            self.offset.map(|o| format!("+0x{o:x}")).unwrap_or_default(),
            self.file.as_deref().unwrap_or("??"),
            self.line
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into()),
            self.module.as_deref().unwrap_or("??"),
            self.method,
            if self.inlined { " (inlined)" } else { "" }
        )
    }
}

/// Whether two paths name the same file (module paths may be spelled
/// differently, e.g. through a symlinked directory).
pub fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

impl Stack {
    fn from_json(v: &Value) -> Result<Stack, String> {
        let stack_id = str_field(v, "stack_id")?;
        if !stack_id.starts_with("0x") || u64::from_str_radix(&stack_id[2..], 16).is_err() {
            return Err(format!(
                "stack_id {stack_id:?} is not a 0x-prefixed hex string"
            ));
        }
        let frames = field(v, "frames")?
            .as_array()
            .ok_or_else(|| format!("frames is not a list in {v}"))?
            .iter()
            .map(Frame::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        let category = match v.get("category") {
            None | Some(Value::Null) => "heap".to_string(),
            Some(Value::String(c)) => c.clone(),
            Some(other) => return Err(format!("category is not a string: {other}")),
        };
        Ok(Stack {
            stack_id,
            category,
            bytes: u64_field(v, "bytes")?,
            allocations: u64_field(v, "allocations")?,
            oldest_ms: field(v, "oldest_ms")?
                .as_f64()
                .ok_or_else(|| format!("oldest_ms is not a number in {v}"))?,
            frames,
        })
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.frames.iter().any(|f| f.function() == name)
    }

    pub fn has_function_containing(&self, needle: &str) -> bool {
        self.frames.iter().any(|f| f.function().contains(needle))
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "stack {} bytes={} allocations={} oldest_ms={}\n",
            self.stack_id, self.bytes, self.allocations, self.oldest_ms
        );
        for (i, f) in self.frames.iter().enumerate() {
            let _ = writeln!(s, "    #{i:<2} {}", f.render());
        }
        s
    }
}

impl Report {
    pub fn from_json(v: &Value) -> Result<Report, String> {
        if !v.is_object() {
            return Err(format!("a report must be a JSON object: {v}"));
        }
        let losses = field(v, "losses")?
            .as_object()
            .ok_or_else(|| format!("losses is not an object in {v}"))?
            .iter()
            .map(|(k, n)| {
                n.as_u64()
                    .map(|n| (k.clone(), n))
                    .ok_or_else(|| format!("losses.{k} is not a non-negative integer"))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let stacks = field(v, "stacks")?
            .as_array()
            .ok_or_else(|| format!("stacks is not a list in {v}"))?
            .iter()
            .map(Stack::from_json)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Report {
            is_final: bool_field(v, "final")?,
            pid: u64_field(v, "pid")?,
            outstanding_bytes: u64_field(v, "outstanding_bytes")?,
            outstanding_allocations: u64_field(v, "outstanding_allocations")?,
            lost_events: u64_field(v, "lost_events")?,
            truncated_stacks: u64_field(v, "truncated_stacks")?,
            losses,
            stacks,
        })
    }

    /// The heap stacks (all of them unless --mmap adds "mmap" ones).
    pub fn heap_stacks(&self) -> impl Iterator<Item = &Stack> {
        self.stacks.iter().filter(|s| s.category == "heap")
    }

    /// Properties every report must have.
    pub fn check_invariants(&self) {
        let heap: Vec<&Stack> = self.heap_stacks().collect();
        for w in heap.windows(2) {
            assert!(
                w[0].bytes >= w[1].bytes,
                "stacks are not sorted largest first:\n{}",
                self.render()
            );
        }
        for s in &self.stacks {
            assert!(
                s.allocations > 0,
                "a stack with no allocations is reported:\n{}",
                s.render()
            );
            assert!(
                !s.frames.is_empty(),
                "a stack without frames is reported:\n{}",
                s.render()
            );
        }
        let listed_bytes: u64 = heap.iter().map(|s| s.bytes).sum();
        let listed_allocs: u64 = heap.iter().map(|s| s.allocations).sum();
        assert!(
            listed_bytes <= self.outstanding_bytes && listed_allocs <= self.outstanding_allocations,
            "the stacks add up to more than the outstanding totals:\n{}",
            self.render()
        );
    }

    pub fn render(&self) -> String {
        self.render_summary(usize::MAX)
    }

    /// Like `render`, with the first `max_stacks` stacks only (and how many
    /// more there are).
    pub fn render_summary(&self, max_stacks: usize) -> String {
        let mut s = format!(
            "report final={} pid={} outstanding_bytes={} outstanding_allocations={} lost_events={} truncated_stacks={} losses={:?}\n",
            self.is_final,
            self.pid,
            self.outstanding_bytes,
            self.outstanding_allocations,
            self.lost_events,
            self.truncated_stacks,
            self.losses
        );
        for st in self.stacks.iter().take(max_stacks) {
            s.push_str("  ");
            s.push_str(&st.render());
        }
        if self.stacks.len() > max_stacks {
            let _ = writeln!(
                s,
                "  ... and {} more stacks",
                self.stacks.len() - max_stacks
            );
        }
        s
    }

    /// Sum of bytes and allocations of the stacks that satisfy `pred`.
    pub fn totals_where(&self, pred: impl Fn(&Stack) -> bool) -> (u64, u64) {
        self.stacks
            .iter()
            .filter(|s| pred(s))
            .fold((0, 0), |(b, a), s| (b + s.bytes, a + s.allocations))
    }

    pub fn stacks_with_function(&self, name: &str) -> Vec<&Stack> {
        self.stacks
            .iter()
            .filter(|s| s.has_function(name))
            .collect()
    }

    /// The listed stacks add up to the outstanding totals (for runs with a
    /// `-T` large enough to list every stack).
    pub fn assert_stacks_cover_totals(&self) {
        let (bytes, allocs) = self.totals_where(|s| s.category == "heap");
        assert_eq!(
            (bytes, allocs),
            (self.outstanding_bytes, self.outstanding_allocations),
            "the listed stacks do not add up to outstanding_bytes/outstanding_allocations:\n{}",
            self.render()
        );
    }
}

// ---------------------------------------------------------------------------
// Frame expectations
// ---------------------------------------------------------------------------

/// One expected frame of the program: function name, source file (suffix)
/// and line.
#[derive(Clone, Debug)]
pub struct At<'a> {
    pub function: &'a str,
    /// If true, `function` only has to be contained in the reported name
    /// (C++ names may carry namespaces and parameter lists).
    pub contains: bool,
    pub file_suffix: &'a str,
    pub line: u64,
}

pub fn at<'a>(function: &'a str, file_suffix: &'a str, line: u64) -> At<'a> {
    At {
        function,
        contains: false,
        file_suffix,
        line,
    }
}

pub fn at_containing<'a>(function: &'a str, file_suffix: &'a str, line: u64) -> At<'a> {
    At {
        function,
        contains: true,
        file_suffix,
        line,
    }
}

impl At<'_> {
    /// None if `frame` matches, else why not.
    pub fn mismatch(&self, frame: &Frame) -> Option<String> {
        let name = frame.function();
        let name_ok = if self.contains {
            name.contains(self.function)
        } else {
            name == self.function
        };
        if !name_ok {
            return Some(format!(
                "function {:?} is not {:?}",
                frame.function, self.function
            ));
        }
        match &frame.file {
            Some(f) if f.ends_with(self.file_suffix) => {}
            other => {
                return Some(format!(
                    "file {other:?} does not end with {:?}",
                    self.file_suffix
                ))
            }
        }
        if frame.line != Some(self.line) {
            return Some(format!(
                "{}: line {:?} is not the marked line {}",
                self.function, frame.line, self.line
            ));
        }
        None
    }
}

/// None if `stack.frames[start..]` begins with `chain`, else why not.
pub fn chain_mismatch(stack: &Stack, start: usize, chain: &[At<'_>]) -> Option<String> {
    for (k, want) in chain.iter().enumerate() {
        let i = start + k;
        let Some(frame) = stack.frames.get(i) else {
            return Some(format!(
                "stack has only {} frames, frame #{i} ({}) missing",
                stack.frames.len(),
                want.function
            ));
        };
        if let Some(why) = want.mismatch(frame) {
            return Some(format!("frame #{i}: {why}"));
        }
    }
    None
}

/// Names under which an allocator entry point may be symbolized (glibc
/// exports aliases at the same address, e.g. malloc and __libc_malloc;
/// aligned_alloc and memalign share one address).
pub fn allocator_aliases(allocator: &str) -> &'static [&'static str] {
    match allocator {
        // musl: malloc is a weak alias of the static default_malloc.
        "malloc" => &["malloc", "__libc_malloc", "__malloc", "default_malloc"],
        "calloc" => &["calloc", "__libc_calloc", "__calloc"],
        "realloc" => &["realloc", "__libc_realloc", "__realloc"],
        // glibc's reallocarray tail-calls realloc: frame 0 may be either.
        "reallocarray" => &[
            "reallocarray",
            "__libc_reallocarray",
            "realloc",
            "__libc_realloc",
            "__realloc",
        ],
        "posix_memalign" => &["posix_memalign", "__posix_memalign"],
        "aligned_alloc" | "memalign" => {
            &["aligned_alloc", "memalign", "__libc_memalign", "__memalign"]
        }
        "valloc" => &["valloc", "__libc_valloc", "__valloc"],
        other => panic!("no aliases known for allocator {other}"),
    }
}

/// No frame of the report was found from a function's machine code
/// (`prologue`) or by a scan of the stack (`scan`): where CFI covers every
/// function on the stacks (x86_64 glibc and programs built with gcc), the
/// unwinder needs neither.
pub fn assert_no_code_fallbacks(report: &Report) {
    for stack in &report.stacks {
        for (i, f) in stack.frames.iter().enumerate() {
            assert!(
                f.method != "prologue" && f.method != "scan",
                "frame #{i} was found by {:?} although CFI covers it:\n{}",
                f.method,
                stack.render()
            );
        }
    }
}

/// Checks frame 0 of a stack: the allocator itself, captured from the
/// registers at its entry.
pub fn assert_allocator_frame(
    stack: &Stack,
    allocator: &str,
    module_ok: impl Fn(&Frame) -> bool,
    report: &Report,
) {
    let f0 = &stack.frames[0];
    assert!(
        allocator_aliases(allocator).contains(&f0.function()),
        "frame #0 should be the allocator {allocator} (one of {:?}):\n{}",
        allocator_aliases(allocator),
        report.render()
    );
    assert_eq!(
        f0.method,
        "regs",
        "frame #0 should come from the registers:\n{}",
        stack.render()
    );
    assert!(
        module_ok(f0),
        "frame #0 is in an unexpected module:\n{}",
        stack.render()
    );
}
