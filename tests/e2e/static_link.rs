//! A statically linked program (tests/fixtures/src/static_leak.c): the
//! allocator is inside the executable, not in libc.so.6.

use crate::common::*;

/// Calls of static_outer in `static_leak COUNT` (one leaked block each).
const COUNT: u64 = 5;

fn check_static_report(run: &Run, verify_unwind: bool) {
    let bin = fixtures::static_leak();
    let src = fixture_src("static_leak.c");
    let report = checked_final_report(run, verify_unwind);
    let expect = run.expect();
    let site = expect.site("static_inner");
    assert_eq!(
        (site.allocations, site.size),
        (COUNT, 104),
        "unexpected ground truth\n{}",
        run.describe()
    );

    let chain = [
        at(
            "static_inner",
            "static_leak.c",
            call_line(&src, "malloc@static_inner"),
        ),
        at(
            "static_outer",
            "static_leak.c",
            call_line(&src, "static_inner@static_outer"),
        ),
        at(
            "main",
            "static_leak.c",
            call_line(&src, "static_outer@main"),
        ),
    ];
    let stacks = report.stacks_with_function("static_inner");
    assert!(
        !stacks.is_empty(),
        "no stack through static_inner:\n{}",
        report.render()
    );
    for stack in &stacks {
        if let Some(why) = chain_mismatch(stack, 1, &chain) {
            panic!(
                "the leak is not malloc <- static_inner <- static_outer <- main with the marked lines: {why}\n{}",
                report.render()
            );
        }
        assert_allocator_frame(stack, "malloc", |f| f.in_module(&bin), &report);
        for (i, f) in stack.frames[..=3].iter().enumerate() {
            assert!(
                f.in_module(&bin),
                "frame #{i} should be in {}:\n{}",
                bin.display(),
                stack.render()
            );
        }
        for (i, f) in stack.frames[2..=3].iter().enumerate() {
            assert_eq!(
                f.method,
                "cfi",
                "frame #{} should be unwound with CFI:\n{}",
                i + 2,
                stack.render()
            );
        }
    }
    let (bytes, allocations) = report.totals_where(|s| s.has_function("static_inner"));
    assert_eq!(
        (bytes, allocations),
        (site.bytes, site.allocations),
        "wrong bytes/allocations for static_inner:\n{}",
        report.render()
    );
    assert!(
        report.stacks_with_function("static_scratch").is_empty(),
        "static_scratch frees what it allocates, yet it is reported outstanding:\n{}",
        report.render()
    );
    assert!(
        report.outstanding_bytes >= expect.leaked_bytes,
        "outstanding bytes below the program's own leaks:\n{}",
        report.render()
    );
    assert_eq!(
        report.lost_events,
        0,
        "events were lost:\n{}",
        report.render()
    );
    // glibc's libc.a has CFI for all its code, as the program has.
    assert_no_code_fallbacks(&report);
    if verify_unwind {
        // Calls 2..COUNT of static_outer come VERIFY_PAUSE_MS after the
        // first, each with one malloc in static_scratch and one in
        // static_inner on cached paths. The static C library allocates too,
        // so the run's counter cannot be split by path: its bound is the
        // number of those mallocs.
        assert_unwind_verified_at_least(
            &report,
            2 * (COUNT - 1),
            "the mallocs of static_scratch and static_inner in calls 2 and later",
        );
    }
}

/// Without options: memleak has to find the allocator in the executable.
#[test]
fn static_binary_found_automatically() {
    let bin = fixtures::static_leak();
    assert_static_executable(&bin);
    let run = memleak_json(&[], &bin, &[&COUNT.to_string()]);
    check_static_report(&run, false);
}

/// Without options, with `--verify-unwind`: the kernel's and user space's
/// unwinding agree where the allocator is in the executable. The program
/// pauses after its first call of static_outer, so that the kernel walks
/// the later ones.
#[test]
fn static_binary_verify_unwind() {
    let bin = fixtures::static_leak();
    assert_static_executable(&bin);
    let run = memleak_json(
        &[VERIFY_UNWIND],
        &bin,
        &[&COUNT.to_string(), &verify_pause_arg()],
    );
    check_static_report(&run, true);
}

/// With the executable named as the allocator's object (-O).
#[test]
fn static_binary_with_obj_option() {
    let bin = fixtures::static_leak();
    assert_static_executable(&bin);
    let obj = bin.to_str().expect("UTF-8 path");
    let run = memleak_json(&["-O", obj], &bin, &[&COUNT.to_string()]);
    check_static_report(&run, false);
}
