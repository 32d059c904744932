//! Four threads allocating concurrently (tests/fixtures/src/threads.c): each
//! thread's leak site has exactly its own bytes and allocations, with the
//! thread function and its callers on the stack, and none of the
//! short-lived blocks stays outstanding.

use crate::common::*;

/// Checks every leak site of the threads fixture: chain with the marked
/// lines, exact bytes/allocations; and that no churn block is outstanding.
fn assert_thread_sites_exact(run: &Run, report: &Report) {
    let src = fixture_src("threads.c");
    let expect = run.expect();
    assert_eq!(
        expect.sites.len(),
        4,
        "the fixture should report 4 leak sites\n{}",
        run.describe()
    );
    let worker_line = call_line(&src, "thread_worker@thread_main");
    for site in &expect.sites {
        let f = site.function.as_str();
        let chain = [
            at(f, "threads.c", call_line(&src, &format!("malloc@{f}"))),
            at(
                "thread_worker",
                "threads.c",
                call_line(&src, &format!("{f}@thread_worker")),
            ),
            at("thread_main", "threads.c", worker_line),
        ];
        let stacks = report.stacks_with_function(f);
        assert!(!stacks.is_empty(), "no stack for {f}:\n{}", report.render());
        for stack in &stacks {
            if let Some(why) = chain_mismatch(stack, 1, &chain) {
                panic!(
                    "{f}'s stack is not malloc <- {f} <- thread_worker <- thread_main with the marked lines: {why}\n{}",
                    report.render()
                );
            }
            assert_allocator_frame(stack, "malloc", Frame::in_libc, report);
            // Each thread leaks from its own function only.
            for other in expect.sites.iter().filter(|o| o.function != f) {
                assert!(
                    !stack.has_function(&other.function),
                    "a stack mixes {f} and {}:\n{}",
                    other.function,
                    stack.render()
                );
            }
        }
        let (bytes, allocations) = report.totals_where(|s| s.has_function(f));
        assert_eq!(
            (bytes, allocations),
            (site.bytes, site.allocations),
            "{f}: wrong bytes/allocations (blocks of {} bytes expected):\n{}",
            site.size,
            report.render()
        );
    }

    assert!(
        report.stacks_with_function("churn").is_empty(),
        "short-lived blocks (allocated and freed in churn) are reported outstanding:\n{}",
        report.render()
    );
    // glibc keeps a little of its own (per-thread TLS bookkeeping) on top of
    // the program's leaks.
    assert!(
        report.outstanding_bytes >= expect.leaked_bytes
            && report.outstanding_allocations >= expect.leaked_allocations,
        "outstanding totals are below the program's own leaks:\n{}",
        report.render()
    );
}

/// 4 threads x 400 short-lived blocks, paced (1 ms pause every 2), so that
/// the threads overlap in time; every number must be exact.
#[test]
fn threads_per_site_exact() {
    let bin = fixtures::threads();
    let run = memleak_json(&[], &bin, &["400", "2"]);
    let report = run.final_report();
    assert_no_lost_events(&report);
    assert_thread_sites_exact(&run, &report);
}

/// The same with `--verify-unwind`: the kernel's and user space's unwinding
/// of every allocation agree.
#[test]
fn threads_per_site_verify_unwind() {
    let bin = fixtures::threads();
    let run = memleak_json(&[VERIFY_UNWIND], &bin, &["400", "2"]);
    let report = checked_final_report(&run, true);
    assert_thread_sites_exact(&run, &report);
}

/// 4 threads x 3000 short-lived blocks as fast as they go: still no event
/// may be lost, and every number must be exact.
#[test]
fn threads_unpaced_exact() {
    let bin = fixtures::threads();
    let run = memleak_json(&[], &bin, &["3000", "0"]);
    let report = run.final_report();
    assert_no_lost_events(&report);
    assert_thread_sites_exact(&run, &report);
}
