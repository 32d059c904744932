//! Cross-check with valgrind: the bytes and blocks valgrind finds "in use at
//! exit" must equal memleak's outstanding totals for the same program and
//! arguments.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Runs PROGRAM under valgrind (no leak check, no freeres) and returns
/// (bytes, blocks) in use at exit.
fn valgrind_in_use(program: &Path, args: &[&str]) -> (u64, u64) {
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--run-libc-freeres=no",
        "--run-cxx-freeres=no",
        "--leak-check=no",
    ])
    .arg(program)
    .args(args);
    if let Err(e) = Command::new("valgrind").arg("--version").output() {
        panic!("valgrind is needed for this cross-check but cannot be run ({e}); install it (`apt-get install valgrind`)");
    }
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

fn cross_check(program: &Path, args: &[&str]) {
    let valgrind = valgrind_in_use(program, args);
    let run = memleak_json(&[], program, args);
    let report = run.final_report();
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        valgrind,
        "memleak's outstanding (bytes, allocations) differ from valgrind's (bytes, blocks) in use at exit:\n{}",
        report.render()
    );
    assert_eq!(
        report.lost_events,
        0,
        "events were lost:\n{}",
        report.render()
    );
}

#[test]
fn valgrind_agrees_on_accounting() {
    let bin = fixtures::accounting();
    cross_check(&bin, &[]);
}

#[test]
fn valgrind_agrees_on_demo() {
    let bin = fixtures::leaky();
    cross_check(&bin, &["25"]);
}

/// Includes what the C++ runtime allocates for itself at start-up
/// (libstdc++'s emergency exception pool), which both must see.
#[test]
fn valgrind_agrees_on_cxx() {
    let bin = fixtures::cxx_leak();
    cross_check(&bin, &["8"]);
}

/// Includes glibc's own per-thread bookkeeping (TLS vectors of the joined
/// threads), allocated through calloc by the dynamic loader.
#[test]
fn valgrind_agrees_on_threads() {
    let bin = fixtures::threads();
    cross_check(&bin, &["400", "2"]);
}

/// Includes what dlopen allocates for the plugin (link map, search paths).
#[test]
fn valgrind_agrees_on_dlopen() {
    let plugin = fixtures::plugin();
    let bin = fixtures::dlopen_main();
    cross_check(&bin, &[plugin.to_str().expect("UTF-8 path"), "6"]);
}
