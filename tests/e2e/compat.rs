//! The fallbacks for older kernels, on this kernel: the perf-buffer
//! transport (`--events perfbuf`, kernels before 5.8) and `bpf_probe_read`
//! (`--read-helper legacy`, before 5.5) must be as exact as the defaults, so
//! every run of the suite proves them.

use crate::common::*;

const FALLBACKS: [&str; 4] = ["--events", "perfbuf", "--read-helper", "legacy"];

/// The demo's chain with the fallbacks, unwinding verified both ways.
#[test]
fn fallbacks_demo_chain_verified() {
    require_root();
    let bin = fixtures::leaky();
    let mut args = FALLBACKS.to_vec();
    args.push(VERIFY_UNWIND);
    // 30 ms between iterations: later allocations run the cached rules.
    let run = memleak_json(&args, &bin, &["20", "30"]);
    let report = checked_final_report(&run, true);
    let expect = run.expect();
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "wrong totals with the fallbacks:\n{}",
        report.render()
    );
    let stacks = report.stacks_with_function("alloc_v3");
    assert_eq!(
        stacks.len(),
        1,
        "one stack through alloc_v3:\n{}",
        report.render()
    );
    for f in ["alloc_v2", "alloc_v1", "main"] {
        assert!(
            stacks[0].has_function(f),
            "the stack misses {f}:\n{}",
            report.render()
        );
    }
}

/// 8 threads x 20,000 mixed calls through the perf buffer and
/// bpf_probe_read: no event lost, totals equal to valgrind's, every site
/// equal to the program's own count.
#[test]
fn fallbacks_burst_8_threads_exact() {
    require_root();
    let bin = fixtures::burst();
    let args = ["8", "20000"];
    let run = memleak_json(&FALLBACKS, &bin, &args);
    let report = run.final_report();
    assert_no_lost_events(&report);
    assert_outstanding_matches_valgrind(&report, &bin, &args);
    let expect = run.expect();
    assert!(
        !expect.sites.is_empty(),
        "no EXPECT_SITE lines\n{}",
        run.describe()
    );
    for site in &expect.sites {
        let (bytes, allocations) = report.totals_where(|s| s.has_function(&site.function));
        assert_eq!(
            (bytes, allocations),
            (site.bytes, site.allocations),
            "{}: wrong bytes/allocations with the fallbacks:\n{}",
            site.function,
            report.render_summary(SUMMARY_STACKS)
        );
    }
}
