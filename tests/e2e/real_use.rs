//! memleak under real use: the traced command's exit status, signals and
//! job control, where the reports go (stderr with a command, `--output`),
//! and bad input that used to panic or mislead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::errors::assert_clean_error;

/// Iterations of `leaky` in the short runs: 4 leaked blocks of 16 bytes.
const ITERATIONS: &str = "8";

fn leaky() -> String {
    fixtures::leaky().to_str().expect("UTF-8 path").to_string()
}

fn memleak_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(memleak_bin());
    cmd.args(args);
    cmd
}

/// Writes `text` as a C source in the scratch directory and compiles it
/// with `flags` into `output` (once per test process).
fn build_c(output: &str, text: &str, flags: &[&str]) -> PathBuf {
    let src = scratch_dir().join(format!("{output}.c"));
    let tmp = unique_scratch_path(&format!(".{output}.c"));
    std::fs::write(&tmp, text).expect("writing a C source");
    std::fs::rename(&tmp, &src).expect("moving a C source into place");
    let mut args = flags.to_vec();
    args.push(src.to_str().expect("UTF-8 path"));
    compile(output, "gcc", &args)
}

/// A program that allocates 100 bytes, then dereferences a null pointer.
fn segfaulting() -> PathBuf {
    build_c(
        "segfault",
        "#include <stdlib.h>\n\
         void *volatile sink;\n\
         int *volatile bad;\n\
         int main(void) {\n\
             sink = malloc(100);\n\
             *bad = 1;\n\
             return 0;\n\
         }\n",
        &["-O0", "-g"],
    )
}

/// A shared library that defines `malloc` and `free` and that no program
/// links with.
fn unused_allocator() -> PathBuf {
    build_c(
        "libunused_malloc.so",
        "#include <stddef.h>\n\
         void *malloc(size_t n) { (void)n; return NULL; }\n\
         void free(void *p) { (void)p; }\n",
        &["-O2", "-g", "-fPIC", "-shared"],
    )
}

/// Waits until `pid` has installed its handlers for SIGINT, SIGTERM and
/// SIGHUP (memleak does so once its probes are attached).
pub(crate) fn wait_until_catching(pid: u32) {
    let want =
        (1u64 << (libc::SIGINT - 1)) | (1u64 << (libc::SIGTERM - 1)) | (1u64 << (libc::SIGHUP - 1));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        if caught & want == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "memleak (pid {pid}) did not install its signal handlers within 120 s: {status}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn send(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a process this test started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// The exit code of a run that must have exited normally.
fn exit_code(run: &Run) -> i32 {
    run.status.code().unwrap_or_else(|| {
        panic!(
            "memleak was killed by a signal instead of exiting\n{}",
            run.describe()
        )
    })
}

/// Exactly one report, final, on stderr (a command was traced): nothing on
/// stdout.
fn only_final_report_on_stderr(run: &Run) -> Report {
    assert!(
        run.stdout.is_empty(),
        "with a command, nothing may be written to its stdout\n{}",
        run.describe()
    );
    let reports = run.reports();
    assert_eq!(
        reports.len(),
        1,
        "expected exactly one report on stderr\n{}",
        run.describe()
    );
    assert!(
        reports[0].is_final,
        "the report is not final\n{}",
        run.describe()
    );
    reports[0].clone()
}

// ---------------------------------------------------------------------------
// Exit status
// ---------------------------------------------------------------------------

#[test]
fn exit_status_of_the_command() {
    let run = memleak(&["--format", "json", "--", "sh", "-c", "exit 42"]);
    assert_eq!(exit_code(&run), 42, "\n{}", run.describe());
    only_final_report_on_stderr(&run);
}

#[test]
fn exit_status_of_a_segfault_is_139() {
    let bin = segfaulting();
    let run = memleak(&["--format", "json", "--", bin.to_str().unwrap()]);
    assert_eq!(exit_code(&run), 139, "\n{}", run.describe());
    let report = only_final_report_on_stderr(&run);
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (100, 1),
        "the block allocated before the crash\n{}",
        run.describe()
    );
}

#[test]
fn exit_status_of_sigkill_is_137() {
    let run = memleak(&["--format", "json", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(exit_code(&run), 137, "\n{}", run.describe());
    only_final_report_on_stderr(&run);
}

// ---------------------------------------------------------------------------
// Signals and job control
// ---------------------------------------------------------------------------

/// The PID of the command memleak `pid` traces.
fn traced_command(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_else(|e| panic!("children of memleak {pid}: {e}"));
    let pids: Vec<u32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "memleak {pid} has children {pids:?}");
    pids[0]
}

/// memleak stopped and continued twice while the program runs, then the
/// program stopped and continued: the run goes on, and the final report has
/// the exact totals.
#[test]
fn stop_and_continue_keeps_the_run() {
    let leaky = leaky();
    let cmd = memleak_cmd(&["--format", "json", "-T", "1000", "--", &leaky, "40", "100"]);
    let run = memleak_command(cmd, |pid| {
        wait_until_catching(pid);
        let command = traced_command(pid);
        for target in [pid, pid, command] {
            thread::sleep(Duration::from_millis(300));
            send(target, libc::SIGSTOP);
            thread::sleep(Duration::from_millis(700));
            send(target, libc::SIGCONT);
        }
    });
    assert_eq!(exit_code(&run), 0, "\n{}", run.describe());
    let report = only_final_report_on_stderr(&run);
    let expect = run.expect();
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "totals after SIGSTOP/SIGCONT\n{}",
        run.describe()
    );
    assert_no_lost_events(&report);
}

/// SIGINT, SIGTERM or SIGHUP while the command runs: the final report, the
/// command is killed, memleak exits with 128 + the signal.
#[test]
fn interrupted_while_the_command_runs() {
    let leaky = leaky();
    for (sig, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ] {
        let cmd = memleak_cmd(&["--format", "json", "--", &leaky, "1000", "100"]);
        // The run only ends once leaky is gone too (it holds the pipes).
        let run = memleak_command(cmd, |pid| {
            wait_until_catching(pid);
            thread::sleep(Duration::from_millis(300));
            send(pid, sig);
        });
        assert_eq!(exit_code(&run), code, "signal {sig}\n{}", run.describe());
        only_final_report_on_stderr(&run);
        assert!(
            !run.stderr.contains("EXPECT "),
            "leaky ran to its end although memleak was interrupted\n{}",
            run.describe()
        );
    }
}

/// Kills the process when dropped.
pub(crate) struct Target(pub(crate) Child);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process to attach to, running for a minute.
pub(crate) fn target(program: &str, args: &[&str]) -> Target {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    // Attachable once it has exec'd.
    let exe = std::fs::canonicalize(program).unwrap_or_else(|_| PathBuf::from(program));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{}/exe", child.id())).ok() != Some(exe.clone()) {
        assert!(Instant::now() < deadline, "{program} did not start");
        thread::sleep(Duration::from_millis(10));
    }
    Target(child)
}

/// SIGHUP with -p: the final report on stdout, exit 0.
#[test]
fn sighup_with_pid_gives_the_final_report() {
    let leaky = leaky();
    let t = target(&leaky, &["1000", "50"]);
    let pid = t.0.id().to_string();
    let cmd = memleak_cmd(&["--format", "json", "-p", &pid]);
    let run = memleak_command(cmd, |pid| {
        wait_until_catching(pid);
        thread::sleep(Duration::from_millis(300));
        send(pid, libc::SIGHUP);
    });
    assert_eq!(exit_code(&run), 0, "\n{}", run.describe());
    // -p: stdout, as BCC's memleak.
    assert!(
        !run.stderr.contains(REPORT_PREFIX),
        "with -p the reports go to stdout\n{}",
        run.describe()
    );
    run.final_report();
}

// ---------------------------------------------------------------------------
// Where the reports go
// ---------------------------------------------------------------------------

/// `seq 1 100000 | memleak -- sort -rn`: sort's output is what it is
/// without memleak, byte for byte; the report is on stderr.
#[test]
fn piped_sort_output_is_untouched() {
    let script = |sort: &str| format!("seq 1 100000 | {sort} -rn");
    let plain = run_with_timeout(
        {
            let mut c = Command::new("sh");
            c.args(["-c", &script("sort")]);
            c
        },
        RUN_TIMEOUT,
    );
    assert!(plain.status.success(), "{}", plain.describe());
    assert_eq!(plain.stdout.len(), 588_895, "seq | sort output size");
    let traced = format!("'{}' -- sort", memleak_bin().display());
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script(&traced)]);
    let run = memleak_command(cmd, |_| {});
    assert_eq!(exit_code(&run), 0, "\n{}", run.describe());
    assert!(
        run.stdout == plain.stdout,
        "sort's output under memleak differs from its output without it ({} vs {} bytes)\n--- stderr ---\n{}",
        run.stdout.len(),
        plain.stdout.len(),
        run.stderr
    );
    let finals = run
        .stderr
        .lines()
        .filter(|l| l.contains("Final report."))
        .count();
    assert_eq!(finals, 1, "one final text report on stderr\n{}", run.stderr);
}

/// No `<name>.memleak-*.tmp` is left beside an --output file.
fn assert_no_temporary_files(file: &Path) {
    let name = file.file_name().unwrap().to_str().unwrap();
    let left: Vec<String> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{name}.memleak-")))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn output_file_text() {
    let leaky = leaky();
    let file = unique_scratch_path("report").with_extension("txt");
    let _cleanup = Cleanup::of(&[&file]);
    let out = file.to_str().unwrap();
    let run = memleak(&["--output", out, "--", &leaky, ITERATIONS]);
    assert_eq!(exit_code(&run), 0, "\n{}", run.describe());
    assert!(
        run.stdout.is_empty() && !run.stderr.contains("Final report"),
        "with --output, no report on stdout or stderr\n{}",
        run.describe()
    );
    let text = std::fs::read_to_string(&file).expect("the --output file");
    let finals: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Final report."))
        .collect();
    assert_eq!(finals.len(), 1, "one final report in the file:\n{text}");
    assert!(
        finals[0].ends_with("(total 64 bytes in 4 allocations):"),
        "4 blocks of 16 bytes leaked:\n{text}"
    );
    assert!(text.contains(" alloc_v3+"), "the leaking stack:\n{text}");
    assert!(
        text.trim_end()
            .ends_with("lost events: 0, truncated stacks: 0"),
        "the report is complete:\n{text}"
    );
    assert_no_temporary_files(&file);
}

/// Parses every line of `text` as a report.
fn json_reports(text: &str) -> Vec<Report> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a complete JSON report ({e}): {l:?}"));
            Report::from_json(&v).unwrap_or_else(|e| panic!("bad report: {e}\n{l}"))
        })
        .collect()
}

#[test]
fn output_file_json() {
    let leaky = leaky();
    let file = unique_scratch_path("report").with_extension("json");
    let _cleanup = Cleanup::of(&[&file]);
    let out = file.to_str().unwrap();
    let run = memleak(&[
        "--format", "json", "-T", "1000", "--output", out, "--", &leaky, ITERATIONS,
    ]);
    assert_eq!(exit_code(&run), 0, "\n{}", run.describe());
    assert!(
        run.stdout.is_empty() && !run.stderr.contains(REPORT_PREFIX),
        "with --output, no report on stdout or stderr\n{}",
        run.describe()
    );
    let reports = json_reports(&std::fs::read_to_string(&file).expect("the --output file"));
    assert_eq!(reports.len(), 1, "one report in the file");
    let expect = run.expect();
    assert!(reports[0].is_final);
    assert_eq!(
        (
            reports[0].outstanding_bytes,
            reports[0].outstanding_allocations
        ),
        (expect.leaked_bytes, expect.leaked_allocations),
        "{}",
        reports[0].render()
    );
    assert_no_temporary_files(&file);
}

/// Periodic reports (INTERVAL 1, COUNT 2) go to the file in order, each a
/// complete line; after COUNT reports the command still running is killed
/// and memleak exits 0.
#[test]
fn output_file_periodic_reports_in_order() {
    let leaky = leaky();
    let file = unique_scratch_path("periodic").with_extension("json");
    let _cleanup = Cleanup::of(&[&file]);
    let out = file.to_str().unwrap();
    let run = memleak(&[
        "--format", "json", "--output", out, "1", "2", "--", &leaky, "200", "100",
    ]);
    assert_eq!(exit_code(&run), 0, "\n{}", run.describe());
    let reports = json_reports(&std::fs::read_to_string(&file).expect("the --output file"));
    let finals: Vec<bool> = reports.iter().map(|r| r.is_final).collect();
    assert_eq!(finals, [false, true], "two reports, the last one final");
    assert!(
        !run.stderr.contains("EXPECT "),
        "leaky should have been killed after COUNT reports\n{}",
        run.describe()
    );
    assert_no_temporary_files(&file);
}

// ---------------------------------------------------------------------------
// Bad input: one accurate `error:` line
// ---------------------------------------------------------------------------

/// Puts the calling process in a new Landlock domain (which only forbids
/// creating block devices): it may no longer inspect processes outside the
/// domain, whatever its capabilities.
fn enter_landlock_domain() -> std::io::Result<()> {
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
    }
    // LANDLOCK_ACCESS_FS_MAKE_BLOCK
    let attr = RulesetAttr {
        handled_access_fs: 1 << 11,
    };
    // SAFETY: plain system calls with a valid attribute struct.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let rc = libc::syscall(libc::SYS_landlock_restrict_self, fd as libc::c_int, 0u32);
        let err = std::io::Error::last_os_error();
        libc::close(fd as libc::c_int);
        if rc != 0 {
            return Err(err);
        }
    }
    Ok(())
}

struct Case<'a> {
    what: &'a str,
    args: Vec<String>,
    /// memleak runs in a Landlock domain of its own.
    landlock: bool,
    /// What the error line must say.
    says: &'a [&'a str],
}

#[test]
fn bad_input_gives_one_accurate_error_line() {
    use std::os::unix::process::CommandExt;
    let leaky = leaky();
    let other_malloc = unused_allocator();
    let other_malloc = other_malloc.to_str().unwrap();
    let dir = scratch_dir();
    let dir = dir.to_str().unwrap();
    let sleeper = target("/bin/sleep", &["60"]);
    let sleeper_pid = sleeper.0.id().to_string();
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let cases = [
        Case {
            what: "an interval that overflows",
            args: s(&["9223372036854775807", "--", &leaky, "1"]),
            landlock: false,
            says: &["9223372036854775807", "between 1 and 4294967295 seconds"],
        },
        Case {
            what: "COUNT 0",
            args: s(&["1", "0", "--", &leaky, "1"]),
            landlock: false,
            says: &["COUNT must be at least 1"],
        },
        Case {
            what: "-O naming a directory",
            args: s(&["-O", dir, "--", &leaky, "1"]),
            landlock: false,
            says: &[dir, "is a directory"],
        },
        Case {
            what: "-O naming a library the command does not load",
            args: s(&["-O", other_malloc, "--", &leaky, "1"]),
            landlock: false,
            says: &[other_malloc, "does not load it at start"],
        },
        Case {
            what: "-O naming a library the process has not loaded",
            args: s(&["-O", other_malloc, "-p", &sleeper_pid, "1", "1"]),
            landlock: false,
            says: &[other_malloc, "has not loaded it"],
        },
        Case {
            what: "--debug-dir naming nothing",
            args: s(&["--debug-dir", "/nonexistent/debug", "--", &leaky, "1"]),
            landlock: false,
            says: &["--debug-dir /nonexistent/debug: not a directory"],
        },
        Case {
            what: "--output naming a directory",
            args: s(&["--output", dir, "--", &leaky, "1"]),
            landlock: false,
            says: &[dir, "is a directory"],
        },
        Case {
            what: "-p of a process a security module protects (root is not the answer)",
            args: s(&["-p", &sleeper_pid, "1", "1"]),
            landlock: true,
            says: &[
                &sleeper_pid,
                "although memleak has CAP_SYS_PTRACE",
                "security module",
            ],
        },
    ];
    for case in &cases {
        let mut cmd = memleak_cmd(&[]);
        cmd.args(&case.args);
        if case.landlock {
            // SAFETY: only system calls between fork and exec.
            unsafe {
                cmd.pre_exec(enter_landlock_domain);
            }
        }
        let run = memleak_command(cmd, |_| {});
        let line = assert_clean_error(&run, case.says);
        assert!(
            line.matches("(os error").count() <= 1,
            "{}: an OS error is repeated: {line}",
            case.what
        );
        assert!(
            !line.contains("run as root"),
            "{}: memleak runs as root: {line}",
            case.what
        );
    }
}

// ---------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------

/// `memleak ARGS` as user nobody with exactly the capabilities `caps`
/// (setpriv's syntax, e.g. "+bpf,+perfmon"), from copies of memleak and of
/// leaky that nobody may run.
fn as_nobody_with(caps: &str, args: &[&str]) -> Run {
    let dir = std::env::temp_dir()
        .join(format!(
            "memleak-caps-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ))
        .into_os_string()
        .into_string()
        .expect("UTF-8 path")
        .replace(['(', ')'], "");
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = |from: &Path, name: &str| {
        let to = dir.join(name);
        if !to.exists() {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::copy(from, &tmp).expect("copying a binary");
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &to).unwrap();
        }
        to
    };
    let memleak = copy(&memleak_bin(), "memleak");
    let leaky = copy(&fixtures::leaky(), "leaky");
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps=-all,{caps}"),
        &format!("--ambient-caps=-all,{caps}"),
        "--",
    ]);
    cmd.arg(memleak).args(args);
    cmd.arg("--").arg(leaky).arg(ITERATIONS);
    let run = memleak_command(cmd, |_| {});
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// The capabilities the README lists suffice: CAP_BPF and CAP_PERFMON with
/// multi-uprobe links (the report equals root's: leaky's 4 blocks of 16
/// bytes); one alone is refused up front with the sets that work.
#[test]
fn bpf_and_perfmon_suffice_with_multi_uprobe_links() {
    let run = as_nobody_with("+bpf,+perfmon", &["--attach", "multi", "--format", "json"]);
    assert_totals(&run.final_report(), (64, 4), &run.describe());
    let run = as_nobody_with("+perfmon", &["--attach", "multi"]);
    assert_clean_error(
        &run,
        &[
            "CAP_BPF and CAP_PERFMON",
            "CAP_SYS_ADMIN",
            "CAP_SYS_PTRACE for -p",
        ],
    );
}

/// Single uprobes (perf_event_open) want CAP_SYS_ADMIN on this kernel: the
/// error says so (it used to send a user who had CAP_BPF and CAP_PERFMON
/// to get them), and CAP_SYS_ADMIN alone works.
#[test]
fn single_uprobes_need_sys_admin() {
    let run = as_nobody_with("+bpf,+perfmon", &["--attach", "single"]);
    assert_clean_error(
        &run,
        &["attaching uprobe to", "permission denied", "CAP_SYS_ADMIN"],
    );
    let run = as_nobody_with("+sys_admin", &["--attach", "single", "--format", "json"]);
    assert_totals(&run.final_report(), (64, 4), &run.describe());
}

// ---------------------------------------------------------------------------
// -p: exec, job control, detach
// ---------------------------------------------------------------------------

/// `memleak ARGS` on a target that waits for `go` to exist: once memleak
/// is ready (it catches signals after attaching), `go` is made.
pub(crate) fn memleak_then_go(args: &[&str], go: &Path) -> Run {
    let run = memleak_command(memleak_cmd(args), |memleak| {
        wait_until_catching(memleak);
        std::fs::write(go, b"").unwrap();
    });
    let _ = std::fs::remove_file(go);
    run
}

/// A shell that waits for `go` to exist, then runs `then` (e.g. `exec
/// PROGRAM`): a target memleak attaches to before it does anything.
pub(crate) fn waiting_shell(go: &Path, then: &str) -> Target {
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done; {then}",
        go.display()
    );
    target("/bin/sh", &["-c", &script])
}

/// `memleak -p` on a shell that execs leaky: the shell's blocks go with
/// its image, leaky is probed before it runs, and the final report holds
/// exactly leaky's leaks (valgrind's figures), not the shell's.
#[test]
fn pid_target_that_execs_is_followed() {
    let leaky = leaky();
    let go = unique_scratch_path("go-exec");
    let t = waiting_shell(&go, &format!("exec '{leaky}' {ITERATIONS}"));
    let pid = t.0.id().to_string();
    let run = memleak_then_go(&["--format", "json", "-T", "1000", "-v", "-p", &pid], &go);
    assert_eq!(exit_code(&run), 0, "\n{}", run.describe());
    let report = run.final_report();
    assert_no_lost_events(&report);
    assert_totals(&report, (64, 4), &run.describe());
    assert_outstanding_matches_valgrind(&report, Path::new(&leaky), &[ITERATIONS]);
    assert!(
        run.stderr.contains(" executed ") && run.stderr.contains("exited with status 0"),
        "-v names the exec and the exit\n{}",
        run.describe()
    );
    for stack in &report.stacks {
        assert!(
            stack.frames.iter().any(|f| f.in_module(Path::new(&leaky))),
            "a stack outside leaky:\n{}",
            stack.render()
        );
    }
}

/// `memleak -p` holds the process under ptrace (to see exec and fork):
/// job control still works (SIGSTOP stops it, SIGCONT resumes it), and
/// after its report memleak lets go: the process runs on, untraced.
#[test]
fn pid_target_job_control_and_detach() {
    let leaky = leaky();
    let t = target(&leaky, &["100000", "20"]);
    let pid = t.0.id();
    let state = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap()
        };
        (field("State:"), field("TracerPid:"))
    };
    let stopped = |s: &str| s.starts_with('T') || s.starts_with('t');
    let wait_for = |want_stopped: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while stopped(&state().0) != want_stopped {
            assert!(Instant::now() < deadline, "state {:?}", state());
            thread::sleep(Duration::from_millis(10));
        }
    };
    let cmd = memleak_cmd(&["--format", "json", "-p", &pid.to_string(), "3", "1"]);
    let run = memleak_command(cmd, |memleak| {
        wait_until_catching(memleak);
        assert_eq!(state().1, memleak.to_string(), "memleak traces the process");
        send(pid, libc::SIGSTOP);
        wait_for(true);
        thread::sleep(Duration::from_millis(300));
        assert!(stopped(&state().0), "SIGSTOP holds: {:?}", state());
        send(pid, libc::SIGCONT);
        wait_for(false);
    });
    assert_eq!(exit_code(&run), 0, "\n{}", run.describe());
    run.final_report();
    let (s, tracer) = state();
    assert_eq!(tracer, "0", "memleak let go of the process");
    assert!(!stopped(&s), "the process runs on: {s}");
    thread::sleep(Duration::from_millis(200));
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok(),
        "the process is still alive after memleak detached"
    );
}

/// A daemon whose libc was deleted (upgraded) since it started: its maps
/// say `libc.so.6 (deleted)`. memleak opens it through
/// /proc/PID/map_files, probes it, and names it as the process does; the
/// report is exact (the program allocates only once memleak is attached).
#[test]
fn pid_target_whose_libc_was_deleted() {
    let dir = unique_scratch_path("deleted-libc");
    std::fs::create_dir_all(&dir).unwrap();
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    std::fs::copy(libc, dir.join("libc.so.6")).unwrap();
    // growth: waits for GO, then a cache of 50 x 1 KiB and 30 leaks of
    // 64 B over 3 s.
    let bin = fixtures::growth();
    let go = unique_scratch_path("go-deleted-libc");
    let child = Command::new(&bin)
        .arg(&go)
        .env("LD_LIBRARY_PATH", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Target(child);
    let pid = t.0.id();
    let copy = dir.join("libc.so.6");
    let maps = || std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !maps().contains(path_str(&copy)) {
        assert!(
            Instant::now() < deadline,
            "growth did not map {}",
            copy.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(&copy).unwrap();
    assert!(maps().contains("libc.so.6 (deleted)"), "{}", maps());
    let run = memleak_then_go(&["--format", "json", "-p", &pid.to_string()], &go);
    assert_eq!(exit_code(&run), 0, "\n{}", run.describe());
    let report = run.final_report();
    assert_no_lost_events(&report);
    assert_totals(&report, (50 * 1024 + 30 * 64, 80), &run.describe());
    for stack in &report.stacks {
        assert_eq!(stack.frames[0].function(), "malloc", "{}", stack.render());
        assert_eq!(
            stack.frames[0].module.as_deref(),
            Some(format!("{} (deleted)", copy.display()).as_str()),
            "{}",
            stack.render()
        );
    }
    assert_eq!(report.stacks.len(), 2, "{}", report.render());
    drop(t);
    let _ = std::fs::remove_dir_all(dir);
}
