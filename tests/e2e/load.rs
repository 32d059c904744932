//! Exactness under load: no event may be lost, whatever the rate.
//!
//! tests/fixtures/src/burst.c runs threads that allocate, reallocate and
//! free in a tight loop with no pause, leaking one block every 10th
//! iteration from four sites; tests/fixtures/src/cxx_startup.cc makes 600
//! operator new calls at start-up, 400 of them from a static initializer
//! before main. For each: no lost event, outstanding totals equal to
//! valgrind's "in use at exit", and every leak site with exactly the bytes
//! and allocations the program counted, on a stack with the marked lines.
//! Each runs once more with `--verify-unwind`, where in addition the
//! kernel's and user space's unwinding of every allocation must agree.

use crate::common::*;

// ---------------------------------------------------------------------------
// burst
// ---------------------------------------------------------------------------

/// The leak sites of burst.c in the order the program picks them
/// ((i / 10) % 4 on every 10th iteration i), with their allocator.
const BURST_SITES: [(&str, &str); 4] = [
    ("burst_leak_malloc", "malloc"),
    ("burst_leak_calloc", "calloc"),
    ("burst_leak_realloc_grow", "realloc"),
    ("burst_leak_realloc_shrink", "realloc"),
];

/// Short-lived blocks of burst.c: their functions free all they allocate.
const BURST_FREED_FUNCTIONS: [&str; 2] = ["burst_churn", "burst_drain"];

/// How many blocks each site of `burst THREADS ITERATIONS` leaks: every
/// thread leaks on iterations 9, 19, 29, ..., the k-th of them (from 0)
/// from site k % 4.
fn burst_site_allocations(threads: u64, iterations: u64) -> [u64; 4] {
    let leaks = iterations / 10;
    let mut per_site = [0; 4];
    for (k, n) in per_site.iter_mut().enumerate() {
        *n = threads * leaks.saturating_sub(k as u64).div_ceil(4);
    }
    per_site
}

/// Runs `memleak [--verify-unwind] -- burst THREADS ITERATIONS` and checks
/// the report: no lost event; with `verify_unwind`, no disagreement between
/// the unwinders; each site exact on its marked chain; no short-lived block
/// outstanding; totals equal to valgrind's.
fn burst(threads: u64, iterations: u64, verify_unwind: bool) {
    let bin = fixtures::burst();
    let src = fixture_src("burst.c");
    let threads_arg = threads.to_string();
    let iterations_arg = iterations.to_string();
    let args = [threads_arg.as_str(), iterations_arg.as_str()];
    let run = memleak_json(&with_verify_unwind(&[], verify_unwind), &bin, &args);
    let report = checked_final_report(&run, verify_unwind);
    assert_no_lost_events(&report);

    // The program's own count, checked against the loop's arithmetic.
    let expect = run.expect();
    let per_site = burst_site_allocations(threads, iterations);
    assert_eq!(
        expect.sites.len(),
        BURST_SITES.len(),
        "burst should report {} leak sites\n{}",
        BURST_SITES.len(),
        run.describe()
    );
    for ((function, allocator), allocations) in BURST_SITES.iter().zip(per_site) {
        let site = expect.site(function);
        assert_eq!(
            (site.allocator.as_str(), site.allocations),
            (*allocator, allocations),
            "unexpected ground truth for {function} (burst {threads} {iterations})\n{}",
            run.describe()
        );
    }
    assert_eq!(
        expect.leaked_allocations,
        threads * (iterations / 10),
        "unexpected ground truth (burst {threads} {iterations})\n{}",
        run.describe()
    );

    let leak_line = call_line(&src, "burst_leak@burst_thread");
    for site in &expect.sites {
        let f = site.function.as_str();
        let chain = [
            at(
                f,
                "burst.c",
                call_line(&src, &format!("{}@{f}", site.allocator)),
            ),
            at(
                "burst_leak",
                "burst.c",
                call_line(&src, &format!("{f}@burst_leak")),
            ),
            at("burst_thread", "burst.c", leak_line),
        ];
        let stacks = report.stacks_with_function(f);
        assert!(
            !stacks.is_empty(),
            "no stack through {f}:\n{}",
            report.render_summary(SUMMARY_STACKS)
        );
        for stack in &stacks {
            if let Some(why) = chain_mismatch(stack, 1, &chain) {
                panic!(
                    "{f}'s stack is not {} <- {f} <- burst_leak <- burst_thread with the marked lines: {why}\n{}\n{}",
                    site.allocator,
                    stack.render(),
                    report.render_summary(SUMMARY_STACKS)
                );
            }
            assert_allocator_frame(stack, &site.allocator, Frame::in_libc, &report);
        }
        let (bytes, allocations) = report.totals_where(|s| s.has_function(f));
        assert_eq!(
            (bytes, allocations),
            (site.bytes, site.allocations),
            "{f}: wrong bytes/allocations (blocks of {} bytes from {}):\n{}",
            site.size,
            site.allocator,
            report.render_summary(SUMMARY_STACKS)
        );
    }

    for gone in BURST_FREED_FUNCTIONS {
        let stacks = report.stacks_with_function(gone);
        assert!(
            stacks.is_empty(),
            "{gone} frees every block it allocates, yet {} stacks through it hold {:?} (bytes, allocations):\n{}",
            stacks.len(),
            report.totals_where(|s| s.has_function(gone)),
            report.render_summary(SUMMARY_STACKS)
        );
    }
    // The blocks the realloc sites allocate first are released by realloc.
    for freed in ["burst_leak_realloc_grow", "burst_leak_realloc_shrink"] {
        let line = marker_line(&src, &format!("FREED:{freed}"));
        let (bytes, allocations) = report.totals_where(|s| {
            s.frames.iter().any(|f| {
                f.line == Some(line) && f.file.as_deref().is_some_and(|p| p.ends_with("burst.c"))
            })
        });
        assert_eq!(
            (bytes, allocations),
            (0, 0),
            "the blocks allocated at burst.c:{line} ({freed}) were released by realloc \
             but are reported outstanding:\n{}",
            report.render_summary(SUMMARY_STACKS)
        );
    }

    report.assert_stacks_cover_totals();
    assert_outstanding_matches_valgrind(&report, &bin, &args);
}

// No lost event is not enough: a block that realloc frees inside the
// allocator can be handed to another thread before the realloc returns, and
// books that apply the two in the wrong order lose a leak silently. The
// per-site counts and the valgrind totals catch that.

/// 8 threads x 20,000 iterations (about 330,000 probe hits in a few seconds).
#[test]
fn burst_8_threads_x_20000_exact() {
    burst(8, 20_000, false);
}

/// 32 threads x 2,000 iterations: more threads than CPUs, all at once.
#[test]
fn burst_32_threads_x_2000_exact() {
    burst(32, 2_000, false);
}

#[test]
fn burst_8_threads_x_20000_verify_unwind() {
    burst(8, 20_000, true);
}

#[test]
fn burst_32_threads_x_2000_verify_unwind() {
    burst(32, 2_000, true);
}

/// burst_site_allocations agrees with a literal walk of the loop.
#[test]
fn burst_ground_truth_arithmetic() {
    for (threads, iterations) in [(1, 10), (1, 39), (3, 41), (8, 20_000), (32, 2_000)] {
        let mut per_site = [0u64; 4];
        for i in 0..iterations {
            if i % 10 == 9 {
                per_site[((i / 10) % 4) as usize] += threads;
            }
        }
        assert_eq!(
            burst_site_allocations(threads, iterations),
            per_site,
            "burst {threads} {iterations}"
        );
    }
}

// ---------------------------------------------------------------------------
// cxx_startup
// ---------------------------------------------------------------------------

/// Who calls each leak site of cxx_startup.cc: the static initializer's
/// constructor (before main) or main.
const CXX_STARTUP_SITES: [(&str, &str); 5] = [
    ("new_small", "Registry::Registry"),
    ("new_medium", "Registry::Registry"),
    ("new_large", "Registry::Registry"),
    ("new_node", "main"),
    ("new_buffer", "main"),
];

/// The `EXPECT_NEW allocations=N` line of cxx_startup: how many operator
/// new calls the program made.
fn cxx_startup_news(run: &Run) -> u64 {
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("EXPECT_NEW "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one EXPECT_NEW line from cxx_startup\n{}",
        run.describe()
    );
    lines[0]
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("allocations="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad EXPECT_NEW line {:?}", lines[0]))
}

/// Runs `memleak [--verify-unwind] -- cxx_startup [PAUSE_MS]` and checks the
/// report. With `verify_unwind`, each of the program's five allocating loops
/// pauses after its first object, so that the kernel walks the others.
fn cxx_startup(verify_unwind: bool) {
    let bin = fixtures::cxx_startup();
    let src = fixture_src("cxx_startup.cc");
    let pause = verify_pause_arg();
    let args: &[&str] = if verify_unwind { &[&pause] } else { &[] };
    let run = memleak_json(&with_verify_unwind(&[], verify_unwind), &bin, args);
    let report = checked_final_report(&run, verify_unwind);
    assert_no_lost_events(&report);

    let expect = run.expect();
    assert_eq!(
        cxx_startup_news(&run),
        600,
        "cxx_startup should make 600 news\n{}",
        run.describe()
    );
    assert_eq!(
        expect.sites.len(),
        CXX_STARTUP_SITES.len(),
        "cxx_startup should report {} leak sites\n{}",
        CXX_STARTUP_SITES.len(),
        run.describe()
    );

    for (name, caller) in CXX_STARTUP_SITES {
        let function = format!("startup_fixture::{name}");
        let site = expect.site(&function);
        let site_at = at_containing(
            &function,
            "cxx_startup.cc",
            call_line(&src, &format!("operator_new@{name}")),
        );
        let caller_line = call_line(&src, &format!("{name}@{caller}"));
        let caller_at = if caller == "main" {
            at("main", "cxx_startup.cc", caller_line)
        } else {
            at_containing(caller, "cxx_startup.cc", caller_line)
        };
        // `startup_fixture::new_small` or `startup_fixture::new_small(long)`.
        let is_site = |f: &Frame| {
            let name = f.function();
            name == function || name.starts_with(&format!("{function}("))
        };
        let stacks: Vec<&Stack> = report
            .stacks
            .iter()
            .filter(|s| s.frames.iter().any(is_site))
            .collect();
        assert!(
            !stacks.is_empty(),
            "no stack through {function}:\n{}",
            report.render()
        );
        for stack in &stacks {
            let i = stack.frames.iter().position(is_site).unwrap();
            if let Some(why) = chain_mismatch(stack, i, &[site_at.clone(), caller_at.clone()]) {
                panic!(
                    "{function}'s stack is not operator new <- {function} <- {caller} with the marked lines: {why}\n{}",
                    report.render()
                );
            }
            assert!(
                i >= 2,
                "{function}: expected malloc and operator new below it:\n{}",
                stack.render()
            );
            assert_allocator_frame(stack, "malloc", Frame::in_libc, &report);
            for f in &stack.frames[1..i] {
                assert!(
                    f.function().contains("operator new")
                        && f.module_file_name().starts_with("libstdc++.so"),
                    "{function}: the frames between malloc and it should be operator new \
                     (or new[]) in libstdc++:\n{}",
                    stack.render()
                );
            }
        }
        let bytes: u64 = stacks.iter().map(|s| s.bytes).sum();
        let allocations: u64 = stacks.iter().map(|s| s.allocations).sum();
        assert_eq!(
            (bytes, allocations),
            (site.bytes, site.allocations),
            "{function}: wrong bytes/allocations (blocks of {} bytes):\n{}",
            site.size,
            report.render()
        );
    }

    report.assert_stacks_cover_totals();
    assert_outstanding_matches_valgrind(&report, &bin, args);

    if verify_unwind {
        // All news but the first of each of the five loops come
        // VERIFY_PAUSE_MS after that first one, on its cached path. The C++
        // runtime allocates too, so the run's counter cannot be split by
        // path: its bound is the number of those news.
        let news = cxx_startup_news(&run);
        let sites = CXX_STARTUP_SITES.len() as u64;
        assert_unwind_verified_at_least(
            &report,
            news - sites,
            "the news after the first of each of the five loops",
        );
    }
}

/// 600 news within the first moments of the process, 400 of them before
/// main: all seen, none lost.
#[test]
fn cxx_startup_600_news_exact() {
    cxx_startup(false);
}

/// The same with `--verify-unwind` (and a pause after the first object of
/// each loop): the kernel's and user space's unwinding agree.
#[test]
fn cxx_startup_600_news_verify_unwind() {
    cxx_startup(true);
}

// ---------------------------------------------------------------------------
// The --verify-unwind check itself
// ---------------------------------------------------------------------------

/// A final report with the given loss counters and nothing outstanding.
fn report_with_losses(losses: serde_json::Value) -> Report {
    let json = serde_json::json!({
        "final": true,
        "pid": 1,
        "outstanding_bytes": 0,
        "outstanding_allocations": 0,
        "mmap_bytes": 0,
        "mmap_regions": 0,
        "lost_events": 0,
        "truncated_stacks": 0,
        "losses": losses,
        "stacks": [],
    });
    Report::from_json(&json).expect("a valid report")
}

/// A report without the counter fails the check: it cannot pass by omission.
#[test]
#[should_panic(expected = "no losses.unwind_disagreements counter")]
fn unwind_check_fails_without_the_counter() {
    assert_no_unwind_disagreements(&report_with_losses(
        serde_json::json!({ "ringbuf_drops": 0 }),
    ));
}

#[test]
#[should_panic(expected = "disagreed on 3 stacks")]
fn unwind_check_fails_on_disagreements() {
    assert_no_unwind_disagreements(&report_with_losses(
        serde_json::json!({ "unwind_disagreements": 3 }),
    ));
}

#[test]
fn unwind_check_passes_on_zero() {
    assert_no_unwind_disagreements(&report_with_losses(
        serde_json::json!({ "unwind_disagreements": 0, "unwind_verified": 3 }),
    ));
}

#[test]
#[should_panic(expected = "compared no stack")]
fn unwind_check_fails_when_nothing_was_verified() {
    assert_no_unwind_disagreements(&report_with_losses(
        serde_json::json!({ "unwind_disagreements": 0, "unwind_verified": 0 }),
    ));
}
