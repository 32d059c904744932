//! The demo program (examples/leaky.c) built without frame pointers: the
//! leak's full stack must come out of CFI unwinding, with exact totals.

use crate::common::*;

#[test]
fn demo_full_chain_exact_totals() {
    demo_full_chain(false);
}

/// The same with `--verify-unwind`: the kernel's and user space's unwinding
/// of every allocation agree. The program sleeps after each iteration, so
/// that the later ones allocate on a chain whose rules are cached and the
/// kernel walks them.
#[test]
fn demo_full_chain_verify_unwind() {
    demo_full_chain(true);
}

/// `leaky ITERATIONS`: 20 allocations through the chain, every other one
/// freed again.
const ITERATIONS: u64 = 20;

/// leaky's SLEEP_MS (after each iteration) in the `--verify-unwind` twin.
const VERIFY_SLEEP_MS: u64 = VERIFY_PAUSE_MS / 10;

fn demo_full_chain(verify_unwind: bool) {
    let bin = fixtures::leaky();
    let src = example_src("leaky.c");
    let iterations = ITERATIONS.to_string();
    let sleep = VERIFY_SLEEP_MS.to_string();
    let mut args = vec![iterations.as_str()];
    if verify_unwind {
        args.push(&sleep);
    }
    let run = memleak_json(&with_verify_unwind(&[], verify_unwind), &bin, &args);
    let report = checked_final_report(&run, verify_unwind);
    let expect = run.expect();
    assert_eq!(
        (expect.leaked_bytes, expect.leaked_allocations),
        (160, 10),
        "leaky 20 should leak 10 blocks of 16 bytes\n{}",
        run.describe()
    );

    let chain = [
        at("alloc_v3", "leaky.c", call_line(&src, "malloc")),
        at("alloc_v2", "leaky.c", call_line(&src, "alloc_v3")),
        at("alloc_v1", "leaky.c", call_line(&src, "alloc_v2")),
        at("main", "leaky.c", call_line(&src, "alloc_v1")),
    ];

    let leak_stacks = report.stacks_with_function("alloc_v3");
    assert!(
        !leak_stacks.is_empty(),
        "no stack contains alloc_v3:\n{}",
        report.render()
    );
    for stack in &leak_stacks {
        if let Some(why) = chain_mismatch(stack, 1, &chain) {
            panic!(
                "the leak's stack is not malloc <- alloc_v3 <- alloc_v2 <- alloc_v1 <- main \
                 with the marked lines: {why}\n{}",
                report.render()
            );
        }
        assert_allocator_frame(stack, "malloc", Frame::in_libc, &report);
        for (i, f) in stack.frames[1..=4].iter().enumerate() {
            assert!(
                f.in_module(&bin),
                "frame #{} is not in {}:\n{}",
                i + 1,
                bin.display(),
                stack.render()
            );
            assert!(
                !f.inlined,
                "frame #{} is marked inlined:\n{}",
                i + 1,
                stack.render()
            );
        }
        // The binary has no frame pointers: the callers above the first
        // frame can only have been found through CFI.
        for (i, f) in stack.frames[2..=4].iter().enumerate() {
            assert_eq!(
                f.method,
                "cfi",
                "frame #{} ({}) should be unwound with CFI:\n{}",
                i + 2,
                f.function(),
                stack.render()
            );
        }
        // libc6-dbg (installed by scripts/deps.sh) keeps libc's .symtab and
        // its DWARF, compressed (SHF_COMPRESSED), in its separate debug
        // file: main's caller is named, with its file and line.
        assert!(
            libc_debug_file_installed(),
            "scripts/deps.sh installs libc6-dbg"
        );
        let caller = &stack.frames[5];
        assert_eq!(
            caller.function(),
            "__libc_start_call_main",
            "main's caller should be symbolized from libc's separate debug info:\n{}",
            stack.render()
        );
        assert!(
            caller
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("libc_start_call_main.h"))
                && caller.line.is_some(),
            "libc's compressed DWARF gives main's caller its file and line:\n{}",
            stack.render()
        );
    }

    let (bytes, allocs) = report.totals_where(|s| s.has_function("alloc_v3"));
    assert_eq!(
        (bytes, allocs),
        (expect.leaked_bytes, expect.leaked_allocations),
        "the alloc_v3 stacks do not hold exactly the leaked blocks:\n{}",
        report.render()
    );
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "outstanding totals differ from the program's own count:\n{}",
        report.render()
    );
    report.assert_stacks_cover_totals();
    assert_eq!(
        report.lost_events,
        0,
        "events were lost:\n{}",
        report.render()
    );
    assert_eq!(
        report.truncated_stacks,
        0,
        "stacks were truncated:\n{}",
        report.render()
    );
    if verify_unwind {
        // leaky.c allocates nothing but its ITERATIONS blocks, all through
        // the chain, iteration i at least i * VERIFY_SLEEP_MS after the
        // first: those from VERIFY_PAUSE_MS on must have been verified (the
        // bound is taken on the chain's share of the run's counter).
        let late = ITERATIONS - VERIFY_PAUSE_MS.div_ceil(VERIFY_SLEEP_MS);
        assert_path_verified_at_least(
            &report,
            ITERATIONS,
            late,
            &format!("the last {late} of the {ITERATIONS} blocks through alloc_v3"),
        );
    }
}

/// True when libc's separate debug file (by build ID) is installed.
fn libc_debug_file_installed() -> bool {
    let out = std::process::Command::new("readelf")
        .args(["-n", "/lib/x86_64-linux-gnu/libc.so.6"])
        .output()
        .expect("readelf runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(id) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
    else {
        return false;
    };
    std::path::Path::new(&format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ))
    .exists()
}
