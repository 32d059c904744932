//! The kernel's tables at their limits: a rule cache that evicts, and books
//! or a stack table that overflow. Evicted rules come back through misses
//! (exact); an overflow is a loss counted by its reason, never silent.

use crate::common::*;

/// A rule cache far smaller than the paths: the LRU evicts, the kernel
/// misses again, memleak caches the rule again — and stays exact.
#[test]
fn evicted_rules_come_back() {
    require_root();
    // 4 threads on 7 call paths: more hot PCs than 16 rules.
    let bin = fixtures::burst();
    let run = memleak_json(&["--max-rules", "16"], &bin, &["4", "5000"]);
    let report = run.final_report();
    assert_no_lost_events(&report);
    let cached = report.losses.get("rules_cached").copied().unwrap_or(0);
    assert!(
        cached > 16,
        "more rules than the cache holds must have been cached (and evicted):\n{}",
        report.render_summary(SUMMARY_STACKS)
    );
    let expect = run.expect();
    for site in &expect.sites {
        let (bytes, allocations) = report.totals_where(|s| s.has_function(&site.function));
        assert_eq!(
            (bytes, allocations),
            (site.bytes, site.allocations),
            "{} with 16 cached rules:\n{}",
            site.function,
            report.render_summary(SUMMARY_STACKS)
        );
    }
    let misses = report.losses.get("rule_misses").copied().unwrap_or(0);
    let resolved = report.losses.get("misses_resolved").copied().unwrap_or(0);
    let kernel = report.losses.get("kernel_stacks").copied().unwrap_or(0);
    // An evicted rule is cached again where the kernel missed it, so most
    // allocations still stay in the kernel.
    assert!(
        kernel > misses,
        "the kernel walked {kernel} stacks and missed {misses}:\n{}",
        report.render_summary(SUMMARY_STACKS)
    );
    assert_eq!(
        misses,
        resolved,
        "every miss is resolved:\n{}",
        report.render_summary(SUMMARY_STACKS)
    );
}

/// Books of 16 blocks for a program that leaks 46: the blocks that found no
/// room are counted (allocs_map_full) and make lost_events non-zero.
#[test]
fn full_books_are_counted() {
    require_root();
    let bin = fixtures::threads();
    let run = memleak_json(&["--max-allocs", "16"], &bin, &["400", "2"]);
    let report = run.final_report();
    let full = report.losses.get("allocs_map_full").copied();
    assert!(
        full.is_some_and(|n| n > 0),
        "a full table must be counted as allocs_map_full:\n{}",
        report.render()
    );
    assert!(report.lost_events >= full.unwrap(), "{}", report.render());
    assert!(report.outstanding_allocations <= 16, "{}", report.render());
}

/// A stack table of 16 for more stacks than that: the stacks that found no
/// room are counted (stacks_map_full), and their blocks still count in the
/// totals.
#[test]
fn full_stack_table_is_counted() {
    require_root();
    let bin = fixtures::accounting();
    let run = memleak_json(&["--max-stacks", "16"], &bin, &["300"]);
    let report = run.final_report();
    let expect = run.expect();
    assert!(
        report.losses.get("stacks_map_full").is_some_and(|&n| n > 0),
        "a full stack table must be counted as stacks_map_full:\n{}",
        report.render()
    );
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "blocks whose stack was not stored still count:\n{}",
        report.render()
    );
}
