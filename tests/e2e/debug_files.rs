//! Separate debug files for stripped programs, as Buildroot and Yocto keep
//! them: found under `--debug-dir` by build ID or by `.gnu_debuglink` (its
//! CRC checked); a debug file of another build is refused with a warning,
//! never used to name frames wrongly. MiniDebugInfo (`.gnu_debugdata`)
//! names the local functions of a stripped program.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn run_tool(tool: &str, args: &[&str]) {
    let status = Command::new(tool)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(status.success(), "{tool} {args:?}");
}

/// leaky built `opt` -g into `dir/bin/leaky`, its debug info moved to a
/// file of its own (objcopy --only-keep-debug), the program stripped;
/// `debuglink`: linked to it by name (and without a build ID), else found
/// by build ID. Returns the program and its debug file.
fn stripped_with_debug_file(dir: &Path, debuglink: bool, opt: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let bin = dir.join("bin/leaky");
    let debug = dir.join("leaky.debug");
    run_tool(
        "gcc",
        &[
            opt,
            "-g",
            "-fomit-frame-pointer",
            "-o",
            path_str(&bin),
            path_str(&example_src("leaky.c")),
        ],
    );
    run_tool(
        "objcopy",
        &["--only-keep-debug", path_str(&bin), path_str(&debug)],
    );
    run_tool("strip", &[path_str(&bin)]);
    if debuglink {
        run_tool(
            "objcopy",
            &["--remove-section", ".note.gnu.build-id", path_str(&bin)],
        );
        run_tool(
            "objcopy",
            &[
                &format!("--add-gnu-debuglink={}", path_str(&debug)),
                path_str(&bin),
            ],
        );
    }
    (bin, debug)
}

/// The stack of leaky's leak has alloc_v3 <- alloc_v2 <- alloc_v1 <- main
/// with leaky.c's lines (`named`), or only addresses in leaky.
fn assert_named(report: &Report, bin: &Path, named: bool) {
    let stacks: Vec<&Stack> = report.heap_stacks().collect();
    assert_eq!(stacks.len(), 1, "{}", report.render());
    let frames: Vec<&Frame> = stacks[0]
        .frames
        .iter()
        .filter(|f| f.in_module(bin))
        .collect();
    assert!(frames.len() >= 4, "{}", report.render());
    for (f, name) in frames
        .iter()
        .zip(["alloc_v3", "alloc_v2", "alloc_v1", "main"])
    {
        if named {
            assert_eq!(f.function(), name, "{}", report.render());
            assert!(
                f.file.as_deref().is_some_and(|p| p.ends_with("leaky.c")) && f.line.is_some(),
                "{}",
                report.render()
            );
        } else {
            assert_eq!(
                f.function,
                None,
                "a frame named from the wrong debug file:\n{}",
                report.render()
            );
        }
    }
}

#[test]
fn debug_file_by_debuglink_in_a_debug_dir() {
    let dir = unique_scratch_path("debuglink");
    let (bin, debug) = stripped_with_debug_file(&dir, true, "-O2");
    // Only under the debug dir, at the name the link gives.
    let debug_dir = dir.join("debug");
    std::fs::create_dir_all(&debug_dir).unwrap();
    std::fs::rename(&debug, debug_dir.join("leaky.debug")).unwrap();
    let plain = memleak_json(&[], &bin, &["8"]);
    assert_named(&plain.final_report(), &bin, false);
    let run = memleak_json(&["--debug-dir", path_str(&debug_dir)], &bin, &["8"]);
    let report = run.final_report();
    assert_totals(&report, (64, 4), "leaky 8's 4 blocks of 16 bytes");
    assert_named(&report, &bin, true);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn debug_file_by_build_id_in_a_debug_dir() {
    let dir = unique_scratch_path("buildid");
    let (bin, debug) = stripped_with_debug_file(&dir, false, "-O2");
    let id = tool_output("readelf", &["-n"], &bin);
    let hex = id
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("a build ID")
        .trim()
        .to_string();
    let debug_dir = dir.join("debug");
    let at = debug_dir.join(format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..]));
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::rename(&debug, &at).unwrap();
    let run = memleak_json(&["--debug-dir", path_str(&debug_dir)], &bin, &["8"]);
    assert_named(&run.final_report(), &bin, true);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A debug file of another build under the linked name: refused (its CRC
/// differs) with one warning naming it; the frames stay unnamed and the
/// totals exact.
#[test]
fn debug_file_of_another_build_is_refused() {
    let dir = unique_scratch_path("mismatch");
    let mut _cleanup = Cleanup::of(&[&dir]);
    let (bin, _) = stripped_with_debug_file(&dir, true, "-O2");
    let other_dir = unique_scratch_path("mismatch-other");
    _cleanup.add(&other_dir);
    // Another build: other code, so other debug info.
    let (_, other_debug) = stripped_with_debug_file(&other_dir, true, "-O1");
    let debug_dir = dir.join("debug");
    std::fs::create_dir_all(&debug_dir).unwrap();
    std::fs::remove_file(dir.join("leaky.debug")).unwrap();
    std::fs::copy(&other_debug, debug_dir.join("leaky.debug")).unwrap();
    let run = memleak_json(&["--debug-dir", path_str(&debug_dir)], &bin, &["8"]);
    let report = run.final_report();
    assert_totals(&report, (64, 4), "leaky 8's 4 blocks of 16 bytes");
    assert_named(&report, &bin, false);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("not the debug file of"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.describe());
    assert!(warnings[0].contains("CRC differs"), "{}", warnings[0]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

/// The output of `tool args...`, which must succeed.
fn tool_stdout(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(out.status.success(), "{tool} {args:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn minidebuginfo_names_the_local_functions_of_a_stripped_program() {
    // As Fedora's find-debuginfo builds it: the function symbols .dynsym
    // lacks, in a symbols-only copy of the debug file, xz'd into the
    // stripped program's .gnu_debugdata.
    let dir = unique_scratch_path("minidebuginfo");
    let (bin, debug) = stripped_with_debug_file(&dir, false, "-O2");
    let dynsyms: std::collections::HashSet<String> = tool_stdout(
        "nm",
        &["-D", "--format=posix", "--defined-only", path_str(&bin)],
    )
    .lines()
    .filter_map(|l| l.split_whitespace().next().map(str::to_string))
    .collect();
    let keep: Vec<String> = tool_stdout(
        "nm",
        &["--format=posix", "--defined-only", path_str(&debug)],
    )
    .lines()
    .filter_map(|l| {
        let mut w = l.split_whitespace();
        let (name, kind) = (w.next()?, w.next()?);
        (matches!(kind, "T" | "t" | "D") && !dynsyms.contains(name)).then(|| name.to_string())
    })
    .collect();
    assert!(keep.iter().any(|s| s == "alloc_v3"), "{keep:?}");
    let keep_file = dir.join("keep");
    std::fs::write(&keep_file, keep.join("\n") + "\n").unwrap();
    let mini = dir.join("mini");
    run_tool(
        "objcopy",
        &[
            "-S",
            "--remove-section",
            ".gdb_index",
            "--remove-section",
            ".comment",
            &format!("--keep-symbols={}", path_str(&keep_file)),
            path_str(&debug),
            path_str(&mini),
        ],
    );
    run_tool("xz", &["-f", path_str(&mini)]);
    std::fs::remove_file(&debug).unwrap();
    let plain = memleak_json(&[], &bin, &["8"]);
    assert_named(&plain.final_report(), &bin, false);
    run_tool(
        "objcopy",
        &[
            &format!("--add-section=.gnu_debugdata={}.xz", path_str(&mini)),
            path_str(&bin),
        ],
    );
    assert!(!tool_output("readelf", &["-SW"], &bin).contains(".symtab"));
    let run = memleak_json(&[], &bin, &["8"]);
    let report = run.final_report();
    assert_totals(&report, (64, 4), "leaky 8's 4 blocks of 16 bytes");
    // Named, without file and line (MiniDebugInfo has symbols only).
    let stack = report.heap_stacks().next().unwrap();
    let names: Vec<&str> = stack
        .frames
        .iter()
        .filter(|f| f.in_module(&bin))
        .map(|f| f.function())
        .take(4)
        .collect();
    assert_eq!(
        names,
        ["alloc_v3", "alloc_v2", "alloc_v1", "main"],
        "{}",
        stack.render()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
