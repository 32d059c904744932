//! Unwinding variants of tests/fixtures/src/chain.c
//! (main -> level1 -> level2 -> level3 -> malloc): with frame pointers,
//! without, and with CFI only in .debug_frame; and proof that the chain
//! checks can fail (frame-pointer unwinding of code without frame pointers).
//! CFI covers every frame there: none may come from prologue analysis or a
//! stack scan.

use std::path::Path;

use crate::common::fixtures::ChainVariant;
use crate::common::*;

const COUNT: u64 = 4;
const BLOCK: u64 = 48;

fn has_section(bin: &Path, name: &str) -> bool {
    tool_output("readelf", &["-SW"], bin)
        .lines()
        .any(|l| l.split_whitespace().any(|w| w == name))
}

/// Whether `function` sets up an rbp frame (`mov %rsp,%rbp`).
fn sets_up_frame_pointer(bin: &Path, function: &str) -> bool {
    let dis = tool_output(
        "objdump",
        &["-d", &format!("--disassemble={function}")],
        bin,
    );
    dis.contains("mov    %rsp,%rbp")
}

/// Builds the variant and checks that the build really is what it claims.
fn build(variant: ChainVariant) -> std::path::PathBuf {
    let bin = fixtures::chain(variant);
    let level2 = symbol_address(&bin, "level2");
    match variant {
        ChainVariant::FramePointers => {
            assert!(
                sets_up_frame_pointer(&bin, "level2"),
                "{}: level2 has no frame pointer",
                bin.display()
            );
            assert!(
                fde_covers(&bin, ".eh_frame", level2),
                "{}: no .eh_frame FDE for level2",
                bin.display()
            );
        }
        ChainVariant::NoFramePointers => {
            assert!(
                !sets_up_frame_pointer(&bin, "level2"),
                "{}: level2 sets up a frame pointer",
                bin.display()
            );
            assert!(
                fde_covers(&bin, ".eh_frame", level2),
                "{}: no .eh_frame FDE for level2",
                bin.display()
            );
            assert!(
                !has_section(&bin, ".debug_frame"),
                "{}: unexpected .debug_frame",
                bin.display()
            );
        }
        ChainVariant::DebugFrameOnly => {
            assert!(
                !sets_up_frame_pointer(&bin, "level2"),
                "{}: level2 sets up a frame pointer",
                bin.display()
            );
            assert!(
                has_section(&bin, ".debug_frame"),
                "{}: no .debug_frame section",
                bin.display()
            );
            assert!(
                fde_covers(&bin, ".debug_frame", level2),
                "{}: no .debug_frame FDE for level2",
                bin.display()
            );
            assert!(
                !fde_covers(&bin, ".eh_frame", level2),
                "{}: .eh_frame covers level2",
                bin.display()
            );
        }
    }
    bin
}

fn expected_chain(src: &Path) -> Vec<At<'static>> {
    vec![
        at("level3", "chain.c", call_line(src, "malloc@level3")),
        at("level2", "chain.c", call_line(src, "level3@level2")),
        at("level1", "chain.c", call_line(src, "level2@level1")),
        at("main", "chain.c", call_line(src, "level1@main")),
    ]
}

/// Runs the variant and checks the full chain with the marked lines, exact
/// totals, and that frames #2..#4 were found with one of `methods`. With
/// `--verify-unwind` in `extra`, the program pauses after its first block,
/// and the kernel must have walked (and user space verified) the stacks of
/// the blocks after the pause.
fn full_chain(variant: ChainVariant, extra: &[&str], methods: &[&str]) {
    let bin = build(variant);
    let src = fixture_src("chain.c");
    let verify_unwind = extra.contains(&VERIFY_UNWIND);
    let count = COUNT.to_string();
    let pause = verify_pause_arg();
    let mut args = vec![count.as_str()];
    if verify_unwind {
        args.push(&pause);
    }
    let run = memleak_json(extra, &bin, &args);
    let report = checked_final_report(&run, verify_unwind);
    let expect = run.expect();
    assert_eq!(
        (expect.leaked_bytes, expect.leaked_allocations),
        (COUNT * BLOCK, COUNT),
        "unexpected ground truth\n{}",
        run.describe()
    );
    let chain = expected_chain(&src);
    let stacks = report.stacks_with_function("level3");
    assert!(
        !stacks.is_empty(),
        "{variant:?} {extra:?}: no stack through level3:\n{}",
        report.render()
    );
    for stack in &stacks {
        if let Some(why) = chain_mismatch(stack, 1, &chain) {
            panic!(
                "{variant:?} {extra:?}: the stack is not malloc <- level3 <- level2 <- level1 <- main \
                 with the marked lines: {why}\n{}",
                report.render()
            );
        }
        assert_allocator_frame(stack, "malloc", Frame::in_libc, &report);
        for (i, f) in stack.frames[2..=4].iter().enumerate() {
            assert!(
                methods.contains(&f.method.as_str()),
                "{variant:?} {extra:?}: frame #{} was unwound with {:?}, expected one of {methods:?}:\n{}",
                i + 2,
                f.method,
                stack.render()
            );
        }
    }
    let (bytes, allocations) = report.totals_where(|s| s.has_function("level3"));
    assert_eq!(
        (bytes, allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "{variant:?} {extra:?}: wrong bytes/allocations:\n{}",
        report.render()
    );
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "{variant:?} {extra:?}: wrong outstanding totals:\n{}",
        report.render()
    );
    assert_eq!(
        report.lost_events,
        0,
        "events were lost:\n{}",
        report.render()
    );
    // glibc and the chain have CFI everywhere (.eh_frame or .debug_frame).
    assert_no_code_fallbacks(&report);
    if verify_unwind {
        // chain.c allocates nothing but its COUNT blocks, all on the chain:
        // the first misses the rule cache; the other COUNT - 1 come
        // VERIFY_PAUSE_MS later, on the cached chain, and must all have been
        // verified. The counter is per run, so the bound is taken on the
        // chain's share (anything else walked is subtracted).
        assert_path_verified_at_least(
            &report,
            COUNT,
            COUNT - 1,
            &format!("{variant:?}: the chain's blocks 2..{COUNT}"),
        );
    }
}

#[test]
fn chain_frame_pointers_auto() {
    full_chain(ChainVariant::FramePointers, &[], &["cfi", "fp"]);
}

#[test]
fn chain_frame_pointers_fp() {
    full_chain(ChainVariant::FramePointers, &["--unwind", "fp"], &["fp"]);
}

#[test]
fn chain_no_frame_pointers_auto() {
    full_chain(ChainVariant::NoFramePointers, &[], &["cfi"]);
}

#[test]
fn chain_no_frame_pointers_cfi() {
    full_chain(
        ChainVariant::NoFramePointers,
        &["--unwind", "cfi"],
        &["cfi"],
    );
}

#[test]
fn chain_debug_frame_only_auto() {
    full_chain(ChainVariant::DebugFrameOnly, &[], &["cfi"]);
}

#[test]
fn chain_debug_frame_only_cfi() {
    full_chain(ChainVariant::DebugFrameOnly, &["--unwind", "cfi"], &["cfi"]);
}

// With --verify-unwind, each build variant: the kernel's and user space's
// unwinding of every allocation agree, and the kernel walked the chain.

#[test]
fn chain_frame_pointers_verify_unwind() {
    full_chain(
        ChainVariant::FramePointers,
        &[VERIFY_UNWIND],
        &["cfi", "fp"],
    );
}

#[test]
fn chain_no_frame_pointers_verify_unwind() {
    full_chain(ChainVariant::NoFramePointers, &[VERIFY_UNWIND], &["cfi"]);
}

#[test]
fn chain_debug_frame_only_verify_unwind() {
    full_chain(ChainVariant::DebugFrameOnly, &[VERIFY_UNWIND], &["cfi"]);
}

/// Frame-pointer unwinding cannot walk code built without frame pointers:
/// the full chain must not appear. This proves the chain checks above can
/// fail. The accounting does not depend on the unwinder.
#[test]
fn chain_no_frame_pointers_fp_is_incomplete() {
    let bin = build(ChainVariant::NoFramePointers);
    let src = fixture_src("chain.c");
    let count = COUNT.to_string();
    let run = memleak_json(&["--unwind", "fp"], &bin, &[&count]);
    let report = run.final_report();
    let chain = expected_chain(&src);
    for stack in &report.stacks {
        assert!(
            chain_mismatch(stack, 1, &chain).is_some(),
            "frame-pointer unwinding of a binary without frame pointers produced the full chain:\n{}",
            report.render()
        );
        assert!(
            !(stack.has_function("level2") && stack.has_function("level1")),
            "frame-pointer unwinding found level2 and level1 without frame pointers:\n{}",
            stack.render()
        );
    }
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (COUNT * BLOCK, COUNT),
        "the accounting must not depend on the unwinder:\n{}",
        report.render()
    );
}
