//! `memleak record` on the device, `memleak report` on the host: the
//! recording reported here gives the live run's report (the two paths
//! compared stack by stack); stripped firmware gets its whole chain back
//! from a sysroot of the unstripped build, matched by build ID; a walk the
//! device could not finish (no CFI there) is finished from the host's
//! `.debug_frame`; bad recordings and sysroots get one clear line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// `memleak record --output FILE EXTRA... -- PROGRAM ARGS...`; returns the
/// run (its stderr holds the program's EXPECT lines) and the file.
pub fn record(extra: &[&str], program: &Path, args: &[&str]) -> (Run, PathBuf) {
    let file = unique_scratch_path("recording");
    let mut argv = vec!["record", "--output", path_str(&file)];
    argv.extend_from_slice(extra);
    argv.push("--");
    argv.push(path_str(program));
    argv.extend_from_slice(args);
    let run = memleak(&argv);
    assert!(run.status.success(), "{}", run.describe());
    assert!(
        run.stderr.contains("recorded 1 process"),
        "no summary line\n{}",
        run.describe()
    );
    (run, file)
}

/// `memleak report FILE --format json -T 1000 EXTRA...`, run as a user
/// would on the host (no root needed, nothing traced), without the
/// debuginfod servers the environment may name.
pub fn report(file: &Path, extra: &[&str]) -> Run {
    report_with(file, extra, &[])
}

/// `report`, with `env` set.
pub fn report_with(file: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new(memleak_bin());
    cmd.args(["report", path_str(file), "--format", "json", "-T", "1000"])
        .args(extra)
        .env_remove("DEBUGINFOD_URLS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, Duration::from_secs(120))
}

/// A frame as both paths must give it (addresses differ between runs).
fn shape(s: &Stack) -> (String, u64, u64, Vec<String>) {
    let frames = s
        .frames
        .iter()
        .map(|f| {
            format!(
                "{} {:?}+{:?} {:?}:{:?} [{}+{:?}] <{}>{}",
                f.function(),
                f.function,
                f.offset,
                f.file,
                f.line,
                f.module_file_name(),
                f.module_address,
                f.method,
                if f.inlined { " inlined" } else { "" }
            )
        })
        .collect();
    (s.category.clone(), s.bytes, s.allocations, frames)
}

fn shapes(r: &Report) -> Vec<(String, u64, u64, Vec<String>)> {
    let mut v: Vec<_> = r.stacks.iter().map(shape).collect();
    v.sort();
    v
}

#[test]
fn recorded_run_reports_as_the_live_run() {
    let bin = fixtures::leaky();
    let live = memleak_json(&[], &bin, &["12"]);
    let live_report = live.final_report();
    live.assert_totals_are_the_programs(&live_report);
    let (rec, file) = record(&[], &bin, &["12"]);
    let out = report(&file, &[]);
    let recorded = out.final_report();
    rec.assert_totals_are_the_programs(&recorded);
    assert_no_lost_events(&recorded);
    assert_eq!(
        shapes(&recorded),
        shapes(&live_report),
        "the recording reported here differs from the live run\nlive:\n{}\nrecorded:\n{}",
        live_report.render(),
        recorded.render()
    );
    let stack = recorded.stacks_with_function("alloc_v1");
    assert!(
        stack.len() == 1 && stack[0].has_function("__libc_start_call_main"),
        "{}",
        recorded.render()
    );
    let _ = std::fs::remove_file(file);
}

/// The stack goes on into libc's start code (the walk did not stop early).
fn assert_reaches_libc_start(stack: &Stack) {
    assert!(
        stack
            .frames
            .iter()
            .any(|f| f.function() == "__libc_start_call_main"),
        "{}",
        stack.render()
    );
}

/// `dir/<path of each file>`: the unstripped build laid out as the device
/// names its files (a Buildroot staging tree, say).
fn sysroot_of(files: &[(&Path, &Path)], name: &str) -> PathBuf {
    let root = unique_scratch_path(name);
    for (device_path, build) in files {
        let to = root.join(device_path.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(build, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir_all(&root).unwrap();
    root
}

pub fn warnings(run: &Run) -> Vec<&str> {
    run.stderr.lines().filter(|l| l.contains("WARN")).collect()
}

#[test]
fn stripped_firmware_recorded_then_reported_with_its_sysroot() {
    let (bin, lib) = crate::sstrip::sstripped();
    let (rec, file) = record(&[], &bin, &["4"]);
    let src = fixture_src("sstrip_main.c");
    let main_line = call_line(&src, "plugin_leak@main");

    // Without the files: the device's names (.dynsym), the rest an
    // address in its module, and one warning naming what was missing.
    let empty = unique_scratch_path("empty-sysroot");
    std::fs::create_dir_all(&empty).unwrap();
    let bare = report(&file, &["--sysroot", path_str(&empty)]);
    let r = bare.final_report();
    rec.assert_totals_are_the_programs(&r);
    let w = warnings(&bare);
    assert!(
        w.len() == 1 && w[0].contains("not found under") && w[0].contains("sstrip_main"),
        "one warning about the missing files:\n{}",
        bare.describe()
    );
    let stacks = r.stacks_with_function("plugin_alloc");
    assert_eq!(stacks.len(), 1, "{}", r.render());
    let stack = stacks[0];
    let names: Vec<&str> = stack.frames[..3].iter().map(|f| f.function()).collect();
    assert_eq!(
        names,
        ["malloc", "plugin_alloc", "plugin_leak"],
        "{}",
        stack.render()
    );
    assert!(stack.frames[1].in_module(&lib), "{}", stack.render());
    let main = &stack.frames[3];
    assert_eq!(main.function, None, "{}", stack.render());
    assert!(
        main.in_module(&bin) && main.module_address.is_some(),
        "{}",
        stack.render()
    );

    // With the unstripped build under a sysroot (and this machine's libc
    // under the second): function, file and line everywhere.
    let unstripped_main = scratch_dir().join("sstrip_main");
    let unstripped_lib = fixtures::plugin();
    let tree = sysroot_of(
        &[(&bin, &unstripped_main), (&lib, &unstripped_lib)],
        "sysroot",
    );
    let full = report(&file, &["--sysroot", path_str(&tree), "--sysroot", "/"]);
    let r = full.final_report();
    rec.assert_totals_are_the_programs(&r);
    assert!(warnings(&full).is_empty(), "{}", full.describe());
    let stack = r.stacks_with_function("plugin_alloc")[0];
    let chain: Vec<&str> = stack.frames[..4].iter().map(|f| f.function()).collect();
    assert_eq!(
        chain,
        ["malloc", "plugin_alloc", "plugin_leak", "main"],
        "{}",
        stack.render()
    );
    for f in &stack.frames[..4] {
        assert!(f.file.is_some() && f.line.is_some(), "{}", stack.render());
    }
    assert_eq!(stack.frames[3].line, Some(main_line), "{}", stack.render());
    assert_reaches_libc_start(stack);

    // Another build of the program at the same path: refused by its build
    // ID, with a warning, never used to name frames.
    let other = compile(
        "sstrip_main_other_build",
        "gcc",
        &[
            "-O0",
            "-g",
            &format!("-I{}", path_str(&repo_root().join("tests/fixtures/src"))),
            path_str(&src),
            &format!("-L{}", path_str(&scratch_dir())),
            "-l:libplugin.so",
        ],
    );
    let wrong = sysroot_of(&[(&bin, &other), (&lib, &unstripped_lib)], "sysroot-wrong");
    let refused = report(&file, &["--sysroot", path_str(&wrong), "--sysroot", "/"]);
    let r = refused.final_report();
    assert!(
        warnings(&refused)
            .iter()
            .any(|w| w.contains("another build, not used") && w.contains("sstrip_main")),
        "{}",
        refused.describe()
    );
    let stack = r.stacks_with_function("plugin_alloc")[0];
    assert_eq!(stack.frames[3].function, None, "{}", stack.render());
    for dir in [empty, tree, wrong] {
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_file(file);
}

#[test]
fn walk_the_device_could_not_finish_is_finished_on_the_host() {
    // The device's copy has no CFI for the program's own code (built
    // without unwind tables, debug info stripped); the host's has
    // .debug_frame. CFI-only unwinding stops on the device at alloc_v3.
    let src = example_src("leaky.c");
    let built = compile(
        "leaky_debug_frame_only",
        "gcc",
        &[
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-fno-inline",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
            path_str(&src),
        ],
    );
    let device_dir = unique_scratch_path("device");
    std::fs::create_dir_all(&device_dir).unwrap();
    let device = device_dir.join("leaky");
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&built)
        .arg(&device)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!tool_output("readelf", &["-SW"], &device).contains(".debug_frame"));
    let (rec, file) = record(&["--unwind", "cfi"], &device, &["6"]);

    // With the device's own files only, the walk stays stopped: counted.
    let own = report(&file, &[]);
    let r = own.final_report();
    rec.assert_totals_are_the_programs(&r);
    assert_eq!(loss(&r, "unwind_stopped"), 3, "{}", r.render());
    assert_eq!(loss(&r, "finished_on_host"), 0, "{}", r.render());

    let tree = sysroot_of(&[(&device, &built)], "sysroot-debug-frame");
    let run = report(&file, &["--sysroot", path_str(&tree), "--sysroot", "/"]);
    let r = run.final_report();
    rec.assert_totals_are_the_programs(&r);
    assert_eq!(loss(&r, "unwind_stopped"), 0, "{}", r.render());
    assert_eq!(loss(&r, "finished_on_host"), 1, "{}", r.render());
    let stack = r.stacks_with_function("alloc_v3")[0];
    let chain: Vec<&str> = stack.frames[..5].iter().map(|f| f.function()).collect();
    assert_eq!(
        chain,
        ["malloc", "alloc_v3", "alloc_v2", "alloc_v1", "main"],
        "{}",
        stack.render()
    );
    for (f, callee) in stack.frames[1..5]
        .iter()
        .zip(["malloc", "alloc_v3", "alloc_v2", "alloc_v1"])
    {
        assert_eq!(
            f.line,
            Some(marker_line(&src, &format!("CALL:{callee}"))),
            "{}",
            stack.render()
        );
    }
    assert_reaches_libc_start(stack);
    let _ = std::fs::remove_dir_all(tree);
    let _ = std::fs::remove_dir_all(device_dir);
    let _ = std::fs::remove_file(file);
}

/// The one `error:` line of a failed run, checked to be the only line.
fn single_error(run: &Run) -> String {
    assert!(!run.status.success(), "{}", run.describe());
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: "),
        "one `error:` line:\n{}",
        run.describe()
    );
    lines[0].to_string()
}

#[test]
fn bad_recordings_get_one_clear_line() {
    let (_, file) = record(&[], &fixtures::leaky(), &["3"]);
    let good = std::fs::read(&file).unwrap();
    let case = |name: &str, bytes: &[u8], want: &str| {
        let path = unique_scratch_path(name);
        std::fs::write(&path, bytes).unwrap();
        let run = report(&path, &[]);
        let line = single_error(&run);
        assert!(line.contains(want), "{name}: {line:?} lacks {want:?}");
        let _ = std::fs::remove_file(path);
    };
    case("truncated", &good[..good.len() / 2], "truncated");
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 10] ^= 0x10;
    case("corrupted", &flipped, "corrupted (checksum mismatch)");
    let mut v9 = good.clone();
    v9[8] = 9;
    case(
        "version",
        &v9,
        "format version 9; this memleak reads version 1",
    );
    case("text", b"hello, world\n", "not a memleak recording");
    case("empty", b"", "not a memleak recording");
    let missing = report(Path::new("/nonexistent/recording"), &[]);
    assert!(single_error(&missing).contains("No such file"));
    let mut cmd = Command::new(memleak_bin());
    cmd.args(["report", path_str(&file), "--sysroot", "/nonexistent"]);
    let run = run_with_timeout(cmd, Duration::from_secs(30));
    assert_eq!(run.status.code(), Some(2), "{}", run.describe());
    assert!(single_error(&run).contains("--sysroot /nonexistent: not a directory"));
    let mut cmd = Command::new(memleak_bin());
    cmd.args(["record", "--", "true"]);
    let run = run_with_timeout(cmd, Duration::from_secs(30));
    assert_eq!(run.status.code(), Some(2), "{}", run.describe());
    assert!(single_error(&run).contains("memleak record needs --output FILE"));
    let _ = std::fs::remove_file(file);
}

#[test]
fn killed_recorder_leaves_its_last_complete_interval() {
    // leaky: 40 iterations, 100 ms each (4 s); a report every second.
    let bin = fixtures::leaky();
    let file = unique_scratch_path("killed-recording");
    let mut cmd = Command::new(memleak_bin());
    cmd.args(["record", "--output", path_str(&file), "1", "--"])
        .arg(&bin)
        .args(["40", "100"]);
    let run = memleak_command(cmd, |pid| {
        // Two intervals written, then SIGKILL: no final report.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let intervals = Command::new(memleak_bin())
                .args(["report", path_str(&file), "--format", "json"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .filter(|s| {
                    s.contains("\"outstanding_allocations\":")
                        && !s.contains("\"outstanding_allocations\":0,")
                });
            if intervals.is_some() || Instant::now() > deadline {
                break;
            }
        }
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    assert_eq!(run.status.code(), None, "killed\n{}", run.describe());
    let out = report(&file, &["--format", "text"]);
    assert!(out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("the recorder did not finish"),
        "{}",
        out.describe()
    );
    assert!(
        !out.stdout.contains("Final report") && out.stdout.contains("alloc_v1"),
        "{}",
        out.describe()
    );
    let _ = std::fs::remove_file(file);
}
