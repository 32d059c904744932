//! Growth over time: with periodic reports, each stack carries its change
//! since the last report and since the first, and the stacks whose bytes
//! grew in most reports and never went back are ranked as suspects — a
//! leak is, a cache filled once is not.

use serde_json::Value;

use crate::common::*;
use crate::real_use::{memleak_then_go, target};

#[test]
fn a_growing_leak_is_the_first_suspect_a_cache_is_not() {
    let bin = fixtures::growth();
    let go = unique_scratch_path("go-growth");
    let t = target(path_str(&bin), &[path_str(&go)]);
    let pid = t.0.id().to_string();
    let run = memleak_then_go(&["--format", "json", "-T", "1000", "-p", &pid, "1"], &go);
    assert!(run.status.success(), "{}", run.describe());
    let report = run.final_report();
    // The program's own count (its stderr is not ours: 50 x 1 KiB cache,
    // 30 x 64 B leaks).
    assert_totals(&report, (50 * 1024 + 30 * 64, 80), &run.describe());
    let last: Value = run
        .stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    let stack_of = |function: &str| -> &Value {
        last["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["function"] == function)
            })
            .unwrap_or_else(|| panic!("no stack through {function}:\n{last:#}"))
    };
    let leak = stack_of("leak_a_little");
    let cache = stack_of("fill_cache");
    let reports = run.reports().len() as u64;
    assert!(reports >= 4, "{reports} reports:\n{}", run.describe());
    assert_eq!(leak["growth"]["suspect_rank"], 1, "{last:#}");
    assert_eq!(
        last["suspects"][0]["stack_id"], leak["stack_id"],
        "{last:#}"
    );
    assert_eq!(last["suspects"].as_array().unwrap().len(), 1, "{last:#}");
    assert!(cache["growth"]["suspect_rank"].is_null(), "{last:#}");
    assert_eq!(cache["growth"]["grew"], 1, "filled once: {last:#}");
    assert_eq!(cache["growth"]["shrank"], 0, "{last:#}");
    let g = &leak["growth"];
    assert!(
        g["grew"].as_u64().unwrap() * 2 > g["reports"].as_u64().unwrap(),
        "{last:#}"
    );
    assert_eq!(g["shrank"], 0, "{last:#}");
    assert_eq!(
        g["since_start"].as_i64().unwrap() + first_bytes(&run, "leak_a_little"),
        leak["bytes"].as_i64().unwrap(),
        "since the first report: {last:#}"
    );
}

/// The bytes of the stack through `function` in the first report (0 if
/// none).
fn first_bytes(run: &Run, function: &str) -> i64 {
    let first = &run.reports()[0];
    first
        .stacks_with_function(function)
        .iter()
        .map(|s| s.bytes as i64)
        .sum()
}

#[test]
fn text_shows_the_trend_and_the_suspects() {
    let bin = fixtures::growth();
    let go = unique_scratch_path("go-growth-text");
    let t = target(path_str(&bin), &[path_str(&go)]);
    let pid = t.0.id().to_string();
    let run = memleak_then_go(&["-p", &pid, "1"], &go);
    assert!(run.status.success(), "{}", run.describe());
    let final_report = run
        .stdout
        .split("Final report.")
        .nth(1)
        .unwrap_or_else(|| panic!("{}", run.describe()));
    assert!(
        final_report
            .contains("Suspects (outstanding bytes grew in most reports and never went back):"),
        "{final_report}"
    );
    let suspects: Vec<&str> = final_report
        .lines()
        .skip_while(|l| !l.starts_with("Suspects"))
        .skip(1)
        .take_while(|l| l.starts_with("  #"))
        .collect();
    assert_eq!(suspects.len(), 1, "{final_report}");
    assert!(
        suspects[0].starts_with("  #1 stack ") && suspects[0].contains("leak_a_little"),
        "{final_report}"
    );
    // The cache: filled before the first report, flat since.
    let cache = final_report
        .lines()
        .find(|l| l.starts_with("51200 bytes in 50 allocations from stack"))
        .unwrap_or_else(|| panic!("{final_report}"));
    assert!(
        cache.contains("[0 B since last, 0 B since first, grew 1/") && !cache.contains("suspect"),
        "{cache}"
    );
}
