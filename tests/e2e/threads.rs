//! Four threads allocating concurrently (tests/fixtures/src/threads.c): each
//! thread's leak site has exactly its own bytes and allocations, with the
//! thread function and its callers on the stack, and none of the thousands
//! of short-lived blocks stays outstanding.

use crate::common::*;

#[test]
fn threads_per_site_exact() {
    let bin = fixtures::threads();
    let src = fixture_src("threads.c");
    let run = memleak_json(&[], &bin, &[]);
    let report = run.final_report();
    let expect = run.expect();
    assert_eq!(
        expect.sites.len(),
        4,
        "the fixture should report 4 leak sites\n{}",
        run.describe()
    );
    assert_eq!(
        report.lost_events,
        0,
        "events were lost:\n{}",
        report.render()
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
            assert_allocator_frame(stack, "malloc", Frame::in_libc, &report);
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
