//! Commands that exec: wrappers (`sh -c 'exec …'`, `env`) replace their
//! image with the program of interest. The report must hold exactly the
//! last image's blocks: the wrapper's went with its memory, and a static
//! program brings its own allocator, which must be found and probed.

use std::path::Path;

use crate::common::*;

/// `memleak --format json -T 1000 -v -- WRAPPER... PROGRAM ARGS...`.
fn run_through(wrapper: &[&str], program: &Path, args: &[&str]) -> Run {
    let mut cmd = vec!["--format", "json", "-T", "1000", "-v", "--"];
    cmd.extend_from_slice(wrapper);
    cmd.push(path_str(program));
    cmd.extend_from_slice(args);
    memleak(&cmd)
}

/// `sh -c 'exec "$0" "$@"'`: the shell execs its first argument.
const SH_EXEC: [&str; 3] = ["sh", "-c", "exec \"$0\" \"$@\""];

/// The totals of `direct`, the program traced without a wrapper.
fn direct_totals(direct: &Report) -> (u64, u64) {
    (direct.outstanding_bytes, direct.outstanding_allocations)
}

/// What `direct` is, for a failure message.
fn direct_run(direct: &Report) -> String {
    format!("a direct run of the program:\n{}", direct.render())
}

/// No frame of any stack lies in a wrapper's image or in the old images.
fn assert_no_frames_of(report: &Report, modules: &[&str]) {
    for stack in &report.stacks {
        for f in &stack.frames {
            assert!(
                !modules.contains(&f.module_file_name()),
                "a frame in {} (an image exec replaced) is still reported:\n{}",
                f.module(),
                report.render()
            );
        }
    }
}

/// `-v` names each image, with what its books held when it was replaced.
fn assert_images_logged(run: &Run, from: &str, to: &Path) {
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains(" executed ") && l.contains(path_str(to)))
        .unwrap_or_else(|| {
            panic!(
                "-v does not say that {from} executed {}\n{}",
                to.display(),
                run.describe()
            )
        });
    assert!(
        line.contains(from) && line.contains("of the old image dropped"),
        "unexpected exec line {line:?}"
    );
}

/// A dynamic program behind `sh -c 'exec …'`: exactly its leaks, as
/// valgrind counts them, and nothing of the shell's.
#[test]
fn exec_into_a_dynamic_program() {
    let bin = fixtures::leaky();
    let args = ["8"];
    let run = run_through(&SH_EXEC, &bin, &args);
    let report = run.final_report();
    assert_no_lost_events(&report);
    run.assert_totals_are_the_programs(&report);
    assert_outstanding_matches_valgrind(&report, &bin, &args);
    assert_no_frames_of(&report, &["dash", "bash", "sh"]);
    for stack in &report.stacks {
        assert!(
            stack.frames.iter().any(|f| f.in_module(&bin)),
            "a stack without a frame of {}:\n{}",
            bin.display(),
            stack.render()
        );
    }
    assert_images_logged(&run, "sh", &bin);
}

/// A static program behind `sh -c 'exec …'`: the new image has its own
/// allocator (the shell's was libc.so.6). The report equals that of the
/// program traced directly, stack by stack, and the program's leak site is
/// exact.
#[test]
fn exec_into_a_static_program() {
    let bin = fixtures::static_leak();
    assert_static_executable(&bin);
    let args = ["5"];
    let direct = memleak_json(&[], &bin, &args).final_report();
    let run = run_through(&SH_EXEC, &bin, &args);
    let report = run.final_report();
    assert_no_lost_events(&report);
    assert_totals(&report, direct_totals(&direct), &direct_run(&direct));
    let site = |r: &Report| r.totals_where(|s| s.has_function("static_inner"));
    assert_eq!(
        site(&report),
        (520, 5),
        "static_inner's leak:\n{}",
        report.render()
    );
    assert_eq!(site(&report), site(&direct));
    let functions = |r: &Report| {
        let mut v: Vec<(u64, u64, String)> = r
            .stacks
            .iter()
            .map(|s| {
                let names: Vec<&str> = s.frames.iter().map(|f| f.function()).collect();
                (s.bytes, s.allocations, names.join(" <- "))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        functions(&report),
        functions(&direct),
        "stacks differ from a direct run"
    );
    assert_no_frames_of(&report, &["dash", "bash", "sh", "libc.so.6"]);
    assert_images_logged(&run, "sh", &bin);
}

/// Two execs in a row (`sh` execs `env`, which execs the program), into a
/// static musl program: only the last image counts.
#[test]
fn exec_twice_into_a_static_musl_program() {
    let bin = fixtures::build(&fixtures::MUSL_LEAK_STATIC);
    assert_static_executable(&bin);
    let direct = memleak_json(&[], &bin, &[]).final_report();
    let mut wrapper = SH_EXEC.to_vec();
    wrapper.push("env");
    let run = run_through(&wrapper, &bin, &[]);
    let report = run.final_report();
    assert_no_lost_events(&report);
    assert_totals(&report, direct_totals(&direct), &direct_run(&direct));
    assert_no_frames_of(&report, &["dash", "bash", "sh", "env", "libc.so.6"]);
    assert_images_logged(&run, "env", &bin);
}
