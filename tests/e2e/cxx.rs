//! C++ new/delete (tests/fixtures/src/cxx_leak.cc): the leak shows operator
//! new and the demangled method name, with exact bytes.

use crate::common::*;

#[test]
fn cxx_new_leak_demangled() {
    cxx_new_leak(false);
}

/// The same with `--verify-unwind`: the kernel's and user space's unwinding
/// of every allocation agree. The program pauses after its first round, so
/// that the kernel walks the later ones.
#[test]
fn cxx_new_leak_verify_unwind() {
    cxx_new_leak(true);
}

/// Rounds of `cxx_leak COUNT` (one churn and one leak each).
const COUNT: u64 = 8;

fn cxx_new_leak(verify_unwind: bool) {
    let bin = fixtures::cxx_leak();
    let src = fixture_src("cxx_leak.cc");
    let count = COUNT.to_string();
    let pause = verify_pause_arg();
    let mut args = vec![count.as_str()];
    if verify_unwind {
        args.push(&pause);
    }
    let run = memleak_json(&with_verify_unwind(&[], verify_unwind), &bin, &args);
    let report = checked_final_report(&run, verify_unwind);
    let expect = run.expect();
    let site = expect.site("memleak_fixture::Leaker::leak");
    assert_eq!(
        (site.allocations, site.size),
        (COUNT, 40),
        "unexpected ground truth\n{}",
        run.describe()
    );

    let leak_line = call_line(&src, "operator_new@Leaker::leak");
    let main_line = call_line(&src, "Leaker::leak@main");
    let stacks: Vec<&Stack> = report
        .stacks
        .iter()
        .filter(|s| s.has_function_containing("Leaker::leak"))
        .collect();
    assert!(
        !stacks.is_empty(),
        "no stack with a frame named like memleak_fixture::Leaker::leak (demangled):\n{}",
        report.render()
    );
    for stack in &stacks {
        let i = stack
            .frames
            .iter()
            .position(|f| f.function().contains("Leaker::leak"))
            .unwrap();
        let name = stack.frames[i].function();
        assert!(
            name.contains("memleak_fixture::Leaker::leak") && !name.starts_with("_Z"),
            "the method's name should be demangled with its namespace, got {name:?}:\n{}",
            stack.render()
        );
        let chain = [
            at_containing("Leaker::leak", "cxx_leak.cc", leak_line),
            at("main", "cxx_leak.cc", main_line),
        ];
        if let Some(why) = chain_mismatch(stack, i, &chain) {
            panic!("the leak's stack is wrong: {why}\n{}", report.render());
        }
        assert!(
            i >= 1,
            "nothing below the leaking method:\n{}",
            stack.render()
        );
        let new_frame = &stack.frames[i - 1];
        assert!(
            new_frame.function().contains("operator new"),
            "the frame below Leaker::leak should be operator new (demangled), got {:?}:\n{}",
            new_frame.function,
            stack.render()
        );
        assert!(
            new_frame.module_file_name().starts_with("libstdc++.so"),
            "operator new should be in libstdc++:\n{}",
            stack.render()
        );
    }
    let (bytes, allocations) = report.totals_where(|s| s.has_function_containing("Leaker::leak"));
    assert_eq!(
        (bytes, allocations),
        (site.bytes, site.allocations),
        "wrong bytes/allocations for Leaker::leak:\n{}",
        report.render()
    );
    assert!(
        !report
            .stacks
            .iter()
            .any(|s| s.has_function_containing("Leaker::churn")),
        "Leaker::churn deletes what it allocates, yet a stack through it is outstanding:\n{}",
        report.render()
    );
    assert_eq!(
        report.lost_events,
        0,
        "events were lost:\n{}",
        report.render()
    );
    if verify_unwind {
        // Rounds 2..COUNT come VERIFY_PAUSE_MS after the first, each with
        // one new in Leaker::churn and one in Leaker::leak on cached paths.
        // The C++ runtime allocates too, so the run's counter cannot be
        // split by path: its bound is the number of those news.
        assert_unwind_verified_at_least(
            &report,
            2 * (COUNT - 1),
            "the news of Leaker::churn and Leaker::leak in rounds 2 and later",
        );
    }
}
