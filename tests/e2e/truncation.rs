//! Stacks deeper than the stack copy: counted as truncated, never hidden,
//! and complete again with a bigger `--stack-bytes`.

use crate::common::*;

#[test]
fn deep_stacks_are_counted_as_truncated() {
    let bin = fixtures::deep();
    // 40 levels x ~530 bytes is far more than the default 8 KiB copy.
    let run = memleak_json(&[], &bin, &["40"]);
    let report = run.final_report();
    run.assert_totals_are_the_programs(&report);
    assert_eq!(
        report.truncated_stacks,
        3,
        "each of the 3 leaks has a truncated stack:\n{}",
        report.render()
    );
    assert_eq!(report.lost_events, 0, "{}", report.render());
    for s in report.heap_stacks() {
        assert!(
            !s.has_function("main"),
            "a truncated stack cannot reach main:\n{}",
            report.render()
        );
        assert!(s.has_function("deep"), "{}", report.render());
    }

    // A copy that holds the whole stack reaches main.
    let run = memleak_json(
        &["--stack-bytes", "65536", "--max-frames", "100"],
        &bin,
        &["40"],
    );
    let report = run.final_report();
    assert_eq!(report.truncated_stacks, 0, "{}", report.render());
    let src = fixture_src("deep.c");
    let main_line = call_line(&src, "deep@main");
    for s in report.heap_stacks() {
        let main = s
            .frames
            .iter()
            .find(|f| f.function() == "main")
            .unwrap_or_else(|| panic!("the full copy must reach main:\n{}", report.render()));
        assert_eq!(main.line, Some(main_line), "{}", report.render());
        assert_eq!(
            s.frames.iter().filter(|f| f.function() == "deep").count(),
            41,
            "{}",
            report.render()
        );
    }
}
