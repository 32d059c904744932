//! Size filters (-z/--min-size, -Z/--max-size) and the number of stacks
//! shown (-T/--top), checked against accounting.c's ground truth. The
//! thresholds never equal a block size of the fixture, so whether the bounds
//! are inclusive does not matter.

use crate::common::*;

/// Expected (bytes, allocations) of the sites whose block size is in range.
fn expected_in_range(expect: &Expect, min: Option<u64>, max: Option<u64>) -> (u64, u64) {
    for s in &expect.sites {
        assert!(
            Some(s.size) != min && Some(s.size) != max,
            "threshold equals the block size of {}: pick another",
            s.function
        );
    }
    expect
        .sites
        .iter()
        .filter(|s| min.is_none_or(|m| s.size >= m) && max.is_none_or(|m| s.size <= m))
        .fold((0, 0), |(b, a), s| (b + s.bytes, a + s.allocations))
}

fn filtered(min: Option<u64>, max: Option<u64>, expected: (u64, u64)) {
    let bin = fixtures::accounting();
    let min_arg = min.map(|m| m.to_string());
    let max_arg = max.map(|m| m.to_string());
    let mut extra: Vec<&str> = Vec::new();
    if let Some(m) = &min_arg {
        extra.extend(["-z", m.as_str()]);
    }
    if let Some(m) = &max_arg {
        extra.extend(["-Z", m.as_str()]);
    }
    let run = memleak_json(&extra, &bin, &[]);
    let report = run.final_report();
    let expect = run.expect();
    assert_eq!(
        expected_in_range(&expect, min, max),
        expected,
        "the fixture's ground truth changed; update this test\n{}",
        run.describe()
    );
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        expected,
        "{extra:?}: outstanding totals should count only blocks in the size range:\n{}",
        report.render()
    );
    report.assert_stacks_cover_totals();
    for site in &expect.sites {
        let in_range = min.is_none_or(|m| site.size >= m) && max.is_none_or(|m| site.size <= m);
        let (bytes, allocations) = report.totals_where(|s| s.has_function(&site.function));
        let want = if in_range {
            (site.bytes, site.allocations)
        } else {
            (0, 0)
        };
        assert_eq!(
            (bytes, allocations),
            want,
            "{extra:?}: site {} (blocks of {} bytes) should {}be reported:\n{}",
            site.function,
            site.size,
            if in_range { "" } else { "not " },
            report.render()
        );
    }
}

#[test]
fn min_size_filter() {
    // 300 + 555 + 333 + 444 + 666
    filtered(Some(299), None, (2298, 5));
}

#[test]
fn max_size_filter() {
    // 3 * 50 + 0 + 55 + 39
    filtered(None, Some(60), (244, 6));
}

#[test]
fn min_and_max_size_filter() {
    // 300 + 333 + 256 + 444
    filtered(Some(201), Some(499), (1333, 4));
}

/// -T 3 lists the three largest stacks, largest first; the totals still
/// cover every outstanding block.
#[test]
fn top_limits_stacks() {
    let bin = fixtures::accounting();
    let run = memleak(&["--format", "json", "-T", "3", "--", bin.to_str().unwrap()]);
    let report = run.final_report();
    let expect = run.expect();
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "-T must not change the outstanding totals:\n{}",
        report.render()
    );
    assert_eq!(
        report.stacks.len(),
        3,
        "-T 3 should list 3 stacks:\n{}",
        report.render()
    );
    let want = ["leak_valloc", "leak_realloc_fail", "leak_memalign"];
    for (stack, function) in report.stacks.iter().zip(want) {
        let site = expect.site(function);
        assert!(
            stack.has_function(function) && stack.bytes == site.bytes,
            "-T 3 should list {want:?} ({} bytes first):\n{}",
            expect.site(want[0]).bytes,
            report.render()
        );
    }
}
