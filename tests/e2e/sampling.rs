//! -s/--sample-rate N: every N-th allocation is tracked. chain.c with COUNT
//! makes COUNT allocations in a row from one stack and frees none, so the
//! number tracked is exactly ceil(COUNT / N) whichever allocation the
//! sampling starts with, and the reported counts are the raw sampled ones
//! (not scaled up by N).

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
