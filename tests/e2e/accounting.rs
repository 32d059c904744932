//! Exact accounting of every glibc allocator entry point
//! (tests/fixtures/src/accounting.c): totals, and per leak site its bytes,
//! allocations and the source line of the allocating call.

use crate::common::*;

/// The stack's first frame in the program itself (the frames before it are
/// the allocator in libc).
fn site_frame_index(stack: &Stack, bin: &std::path::Path) -> Option<usize> {
    stack.frames.iter().position(|f| f.in_module(bin))
}

#[test]
fn accounting_exact_totals_and_sites() {
    accounting_exact(false);
}

/// The same with `--verify-unwind`: the kernel's and user space's unwinding
/// of every allocation agree. The program first runs every site once as a
/// warm-up that frees all it allocates, pauses, then runs them for real, so
/// that the kernel walks the real run's allocations.
#[test]
fn accounting_verify_unwind() {
    accounting_exact(true);
}

fn accounting_exact(verify_unwind: bool) {
    let bin = fixtures::accounting();
    let src = fixture_src("accounting.c");
    let pause = verify_pause_arg();
    let args: &[&str] = if verify_unwind { &[&pause] } else { &[] };
    let run = memleak_json(&with_verify_unwind(&[], verify_unwind), &bin, args);
    let report = checked_final_report(&run, verify_unwind);
    let expect = run.expect();
    assert_eq!(
        expect.sites.len(),
        13,
        "the fixture should report 13 leak sites\n{}",
        run.describe()
    );

    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "outstanding totals differ from the program's own count \
         (realloc/reallocarray/memalign/failed-allocation accounting):\n{}",
        report.render()
    );
    report.assert_stacks_cover_totals();
    assert_eq!(
        report.lost_events,
        0,
        "events were lost:\n{}",
        report.render()
    );

    for site in &expect.sites {
        let marker = format!("{}@{}", site.allocator, site.function);
        let line = call_line(&src, &marker);
        let caller_line = call_line(&src, &format!("{}@main", site.function));
        let stacks: Vec<&Stack> = report
            .stacks
            .iter()
            .filter(|s| {
                site_frame_index(s, &bin).is_some_and(|i| s.frames[i].function() == site.function)
            })
            .collect();
        assert!(
            !stacks.is_empty(),
            "no stack for leak site {} ({} of {} bytes):\n{}",
            site.function,
            site.allocator,
            site.size,
            report.render()
        );
        for stack in &stacks {
            let i = site_frame_index(stack, &bin).unwrap();
            let chain = [
                at(&site.function, "accounting.c", line),
                at("main", "accounting.c", caller_line),
            ];
            if let Some(why) = chain_mismatch(stack, i, &chain) {
                panic!("leak site {}: {why}\n{}", site.function, report.render());
            }
            assert!(
                stack.frames[..i].iter().all(Frame::in_libc),
                "leak site {}: frames before the program's own are not all in libc:\n{}",
                site.function,
                stack.render()
            );
            assert_allocator_frame(stack, &site.allocator, Frame::in_libc, &report);
        }
        let bytes: u64 = stacks.iter().map(|s| s.bytes).sum();
        let allocations: u64 = stacks.iter().map(|s| s.allocations).sum();
        assert_eq!(
            (bytes, allocations),
            (site.bytes, site.allocations),
            "leak site {} ({}): wrong bytes/allocations:\n{}",
            site.function,
            site.allocator,
            report.render()
        );
    }

    // Blocks released by realloc / realloc(p, 0) and the no_leaks pairs must
    // not be outstanding.
    for freed in [
        "leak_realloc_grow",
        "leak_realloc_shrink",
        "realloc_zero",
        "leak_reallocarray_grow",
    ] {
        let line = marker_line(&src, &format!("FREED:{freed}"));
        let hit = report.stacks.iter().find(|s| {
            s.frames.iter().any(|f| {
                f.line == Some(line)
                    && f.file
                        .as_deref()
                        .is_some_and(|p| p.ends_with("accounting.c"))
            })
        });
        assert!(
            hit.is_none(),
            "the block allocated at accounting.c:{line} ({freed}) was released by realloc \
             but is reported outstanding:\n{}",
            report.render()
        );
    }
    for gone in ["no_leaks", "realloc_zero"] {
        assert!(
            report.stacks_with_function(gone).is_empty(),
            "{gone} frees everything it allocates, yet a stack through it is outstanding:\n{}",
            report.render()
        );
    }

    if verify_unwind {
        // The real run comes VERIFY_PAUSE_MS after the warm-up, which took
        // every one of its call paths: each leaked block's allocation (and
        // every other call of the real run) was walked by the kernel. The
        // run's counter cannot be split by path; its bound is the leaked
        // blocks.
        assert_unwind_verified_at_least(
            &report,
            expect.leaked_allocations,
            "the allocations of the real run's leaked blocks",
        );
    }
}
