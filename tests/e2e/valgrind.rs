//! Cross-check with valgrind: the bytes and blocks valgrind finds "in use at
//! exit" must equal memleak's outstanding totals for the same program and
//! arguments.

use std::path::Path;

use crate::common::*;

fn cross_check(program: &Path, args: &[&str]) {
    let run = memleak_json(&[], program, args);
    let report = run.final_report();
    assert_outstanding_matches_valgrind(&report, program, args);
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
