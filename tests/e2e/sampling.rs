//! -s/--sample-rate N: every N-th allocation is tracked. chain.c with COUNT
//! makes COUNT allocations in a row from one stack and frees none, so the
//! number tracked is exactly ceil(COUNT / N) whichever allocation the
//! sampling starts with, and the reported counts are the raw sampled ones
//! (not scaled up by N).
//!
//! --sample-bytes N: each byte is sampled with probability 1/N (decided in
//! the kernel), and reports scale each sampled block up by 1/p: on a
//! workload of 200,000 allocations, the estimate is within 5% of the
//! program's own count in at least 9 runs of 10.

use crate::common::fixtures::ChainVariant;
use crate::common::*;

const COUNT: u64 = 1000;
const BLOCK: u64 = 48;

fn sampled(rate: u64) {
    let bin = fixtures::chain(ChainVariant::NoFramePointers);
    let rate_arg = rate.to_string();
    let count_arg = COUNT.to_string();
    let run = memleak_json(&["-s", &rate_arg], &bin, &[&count_arg]);
    let report = run.final_report();
    let expect = run.expect();
    assert_eq!(
        expect.leaked_allocations,
        COUNT,
        "unexpected ground truth\n{}",
        run.describe()
    );
    let tracked = COUNT.div_ceil(rate);
    assert_eq!(
        (report.outstanding_allocations, report.outstanding_bytes),
        (tracked, tracked * BLOCK),
        "-s {rate}: expected exactly every {rate}th of {COUNT} allocations ({tracked}) to be tracked:\n{}",
        report.render()
    );
    let (bytes, allocations) = report.totals_where(|s| s.has_function("level3"));
    assert_eq!(
        (bytes, allocations),
        (tracked * BLOCK, tracked),
        "-s {rate}: wrong bytes/allocations on the level3 stack:\n{}",
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
fn sample_every_second_allocation() {
    sampled(2);
}

#[test]
fn sample_every_third_allocation() {
    sampled(3);
}

#[test]
fn byte_sampling_estimates_the_leaked_bytes() {
    let bin = fixtures::sampled();
    let runs = 10;
    let mut estimates = Vec::new();
    let mut truth = None;
    for _ in 0..runs {
        let run = memleak_json(&["--sample-bytes", "65536"], &bin, &[]);
        let report = run.final_report();
        let expect = run.expect();
        assert_eq!(report.lost_events, 0, "{}", run.describe());
        // Of 200,000 allocations (150,000 leaked, ~326 MB: the estimate's
        // standard deviation is about sqrt(65536 / 326e6) = 1.4%), about
        // one in 30 (their mean size over 65536) is sampled.
        let sampled = loss(&report, "sampled_out");
        assert!(
            sampled > 180_000,
            "{sampled} sampled out:\n{}",
            run.describe()
        );
        let json: serde_json::Value = serde_json::from_str(
            run.stderr
                .lines()
                .rfind(|l| l.starts_with("{\"final\":"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json["sample_bytes"], 65536);
        truth = Some(expect.leaked_bytes);
        estimates.push(report.outstanding_bytes);
    }
    let truth = truth.unwrap() as f64;
    let errors: Vec<f64> = estimates
        .iter()
        .map(|&e| 100.0 * (e as f64 - truth) / truth)
        .collect();
    println!("--sample-bytes 65536, leaked {truth} bytes; estimates:");
    for (e, err) in estimates.iter().zip(&errors) {
        println!("  {e} ({err:+.2}%)");
    }
    let within = errors.iter().filter(|e| e.abs() < 5.0).count();
    assert!(
        within >= 9,
        "{within} of {runs} estimates within 5% of {truth}: {estimates:?} ({errors:.2?}%)"
    );
}
