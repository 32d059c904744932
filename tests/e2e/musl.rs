//! Leaks made inside the helpers of musl, a C library built without unwind
//! tables and without frame pointers (tests/fixtures/src/musl_leak.c with
//! Debian's musl-gcc, static and dynamic): strdup, fopen, and a qsort
//! comparator. Every leak's stack must reach main, the program's frames on
//! the marked lines; a frame whose callee is in musl (no CFI) is found by
//! prologue analysis or a stack scan. With `--unwind cfi-fp` (CFI and frame
//! pointers alone) the stacks stop at the helper. And a static musl program
//! that never frees (no `free` linked in) is traced with exact totals.
//!
//! The totals are checked against the program's own ground truth, not
//! valgrind: valgrind 3.19 intercepts no allocation of a musl program
//! (dynamic: its preloaded allocator is not used, "0 allocs"; static: there
//! is nothing to preload into). The size of the FILE fopen allocates is
//! musl's (`sizeof(FILE) + UNGET + BUFSIZ`, FILE being opaque to programs):
//! the program measures it with malloc_usable_size, which musl's allocator
//! answers with the size asked for, as the program checks on every block
//! whose size it knows.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Static,
    Dynamic,
}

/// Debian's musl dynamic loader, which is also its libc.so.
const MUSL_LDSO: &str = "/lib/ld-musl-x86_64.so.1";

/// musl's helpers that musl_leak.c calls (by their exported names): none
/// may have an FDE, in any section.
const HELPERS: &[&str] = &["strdup", "fopen", "fdopen", "qsort", "qsort_r"];

/// musl_leak.c's own functions on the leak paths: each has an FDE.
const PROGRAM: &[&str] = &[
    "keep_name",
    "load_names",
    "open_log",
    "cmp_names",
    "sort_names",
    "main",
];

/// musl's qsort (src/stdlib/qsort.c, qsort_nr.c): qsort -> __qsort_r ->
/// sift / trinkle -> wrapper_cmp -> the comparator, as far as the compiler
/// kept these calls; static functions of the stripped libc.so have no name.
const QSORT_INNER: &[&str] = &[
    "wrapper_cmp",
    "sift",
    "trinkle",
    "__qsort_r",
    "qsort_r",
    "qsort",
    "",
];
/// The frame of musl's qsort that sort_names called.
const QSORT_LAST: &[&str] = &["__qsort_r", "qsort_r", "qsort"];

/// The build of `link`, checked: linked as claimed, and no FDE covering
/// musl's helpers while the program's functions have theirs.
fn build(link: Link) -> PathBuf {
    let bin = fixtures::build(match link {
        Link::Static => &fixtures::MUSL_LEAK_STATIC,
        Link::Dynamic => &fixtures::MUSL_LEAK_DYNAMIC,
    });
    let headers = tool_output("readelf", &["-lW"], &bin);
    match link {
        Link::Static => assert_static_executable(&bin),
        Link::Dynamic => assert!(
            headers.contains(&format!("[Requesting program interpreter: {MUSL_LDSO}]")),
            "{} does not run with {MUSL_LDSO}:\n{headers}",
            bin.display()
        ),
    }
    let libc = libc_file(link, &bin);
    for helper in HELPERS {
        let at = symbol_address(&libc, helper);
        for section in [".eh_frame", ".debug_frame"] {
            assert!(
                !fde_covers(&libc, section, at),
                "{}: {helper} has an FDE in {section}: the C library does not test unwinding \
                 without CFI",
                libc.display()
            );
        }
    }
    for function in PROGRAM {
        assert!(
            fde_covers(&bin, ".eh_frame", symbol_address(&bin, function)),
            "{}: {function} has no FDE in .eh_frame",
            bin.display()
        );
    }
    bin
}

/// The file holding musl's code in the process.
fn libc_file(link: Link, bin: &Path) -> PathBuf {
    match link {
        Link::Static => bin.to_path_buf(),
        Link::Dynamic => Path::new(MUSL_LDSO)
            .canonicalize()
            .unwrap_or_else(|e| panic!("{MUSL_LDSO} (Debian's musl package): {e}")),
    }
}

/// One expected frame after frame 0 (the allocator).
enum Want<'a> {
    /// A frame of the program, on a marked line.
    Prog(At<'a>),
    /// One frame in musl, in one of these functions (aliases).
    Libc(&'static [&'static str]),
    /// One or more frames in musl, each in one of `inner`, the last in one
    /// of `last`.
    LibcRun {
        inner: &'static [&'static str],
        last: &'static [&'static str],
    },
}

/// The frames after the allocator of the leaks of `site`.
fn chain(src: &Path, site: &str) -> Vec<Want<'static>> {
    let prog = |function: &'static str, marker: &str| {
        Want::Prog(at(function, "musl_leak.c", call_line(src, marker)))
    };
    match site {
        "keep_name" => vec![
            Want::Libc(&["strdup"]),
            prog("keep_name", "strdup@keep_name"),
            prog("load_names", "keep_name@load_names"),
            prog("main", "load_names@main"),
        ],
        "open_log" => vec![
            Want::Libc(&["fdopen", "__fdopen"]),
            Want::Libc(&["fopen", "fopen64"]),
            prog("open_log", "fopen@open_log"),
            prog("main", "open_log@main"),
        ],
        "cmp_names" => vec![
            prog("cmp_names", "malloc@cmp_names"),
            Want::LibcRun {
                inner: QSORT_INNER,
                last: QSORT_LAST,
            },
            prog("sort_names", "qsort@sort_names"),
            prog("main", "sort_names@main"),
        ],
        other => panic!("no chain for {other}"),
    }
}

/// Matches `stack.frames[1..]` against `want`; returns, for frames 0 up to
/// main, whether each is in musl, or why the stack does not match.
fn match_chain(
    stack: &Stack,
    want: &[Want<'_>],
    bin: &Path,
    libc: &Path,
) -> Result<Vec<bool>, String> {
    let in_libc = |f: &Frame, names: &[&str]| {
        f.module
            .as_deref()
            .is_some_and(|m| same_file(Path::new(m), libc))
            && !PROGRAM.contains(&f.function())
            && names.contains(&f.function())
    };
    let mut libc_frames = vec![true];
    let mut i = 1;
    for w in want {
        let frame = |i: usize| {
            stack
                .frames
                .get(i)
                .ok_or_else(|| format!("frame #{i} is missing"))
        };
        match w {
            Want::Prog(at) => {
                let f = frame(i)?;
                if let Some(why) = at.mismatch(f) {
                    return Err(format!("frame #{i}: {why}"));
                }
                if !f.in_module(bin) {
                    return Err(format!("frame #{i} is not in {}", bin.display()));
                }
                libc_frames.push(false);
                i += 1;
            }
            Want::Libc(names) => {
                if !in_libc(frame(i)?, names) {
                    return Err(format!(
                        "frame #{i} is not one of {names:?} in {}",
                        libc.display()
                    ));
                }
                libc_frames.push(true);
                i += 1;
            }
            Want::LibcRun { inner, last } => {
                let start = i;
                while i < stack.frames.len() && in_libc(&stack.frames[i], inner) {
                    libc_frames.push(true);
                    i += 1;
                }
                if i == start || !in_libc(&stack.frames[i - 1], last) {
                    return Err(format!(
                        "frames #{start}.. are not musl's qsort ({inner:?}), ending in one of \
                         {last:?}"
                    ));
                }
            }
        }
    }
    Ok(libc_frames)
}

/// strdup calls of musl_leak (load_names), one leaked block each.
const NAMES: u64 = 4;

/// `memleak -- musl_leak`: exact totals, and every leak's stack through the
/// helper to main. With `--verify-unwind`, the program pauses after its
/// first strdup, and the kernel must have walked (and user space verified)
/// the later ones, over the rules cached for musl's code.
fn full_stacks(link: Link, verify_unwind: bool) {
    let bin = build(link);
    let libc = libc_file(link, &bin);
    let src = fixture_src("musl_leak.c");
    let pause = verify_pause_arg();
    let run = if verify_unwind {
        memleak_json(&[VERIFY_UNWIND], &bin, &[&pause])
    } else {
        memleak_json(&[], &bin, &[])
    };
    let report = checked_final_report(&run, verify_unwind);
    let expect = run.expect();
    assert_eq!(
        expect.site("keep_name").allocations,
        NAMES,
        "unexpected ground truth\n{}",
        run.describe()
    );
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "{link:?}: outstanding totals differ from the program's ground truth:\n{}",
        report.render()
    );
    report.assert_stacks_cover_totals();
    assert_no_lost_events(&report);
    for site in ["keep_name", "open_log", "cmp_names"] {
        let want = expect.site(site);
        let stacks = report.stacks_with_function(site);
        assert!(
            !stacks.is_empty(),
            "{link:?}: no stack through {site}:\n{}",
            report.render()
        );
        let chain = chain(&src, site);
        for stack in &stacks {
            assert_allocator_frame(stack, "malloc", |f| f.in_module(&libc), &report);
            let in_libc = match_chain(stack, &chain, &bin, &libc).unwrap_or_else(|why| {
                panic!(
                    "{link:?}: the leak of {site} ({}) does not reach main through musl: \
                     {why}\n{}",
                    want.allocator,
                    report.render()
                )
            });
            assert_eq!(
                stack.frames[1].method,
                "entry",
                "{link:?}: frame #1 method:\n{}",
                stack.render()
            );
            for i in 2..in_libc.len() {
                let method = stack.frames[i].method.as_str();
                if in_libc[i - 1] {
                    assert!(
                        ["prologue", "scan"].contains(&method),
                        "{link:?}: frame #{i}: its callee #{} is in musl, which has no CFI: \
                         found by {method:?}, not by prologue analysis or a scan:\n{}",
                        i - 1,
                        stack.render()
                    );
                } else {
                    assert_eq!(
                        method,
                        "cfi",
                        "{link:?}: frame #{i} method:\n{}",
                        stack.render()
                    );
                }
            }
        }
        assert_eq!(
            report.totals_where(|s| s.has_function(site)),
            (want.bytes, want.allocations),
            "{link:?}: wrong bytes/allocations for {site} ({}):\n{}",
            want.allocator,
            report.render()
        );
    }
    if verify_unwind {
        // The strdup calls 2..NAMES come VERIFY_PAUSE_MS after the first,
        // on its cached path. musl_leak allocates elsewhere too (fopen, the
        // comparator, a scratch block), so the run's counter cannot be split
        // by path: its bound is the number of those calls.
        assert_unwind_verified_at_least(
            &report,
            NAMES - 1,
            "strdup's allocations 2..4 in load_names",
        );
    }
}

#[test]
fn musl_static_full_stacks() {
    full_stacks(Link::Static, false);
}

#[test]
fn musl_dynamic_full_stacks() {
    full_stacks(Link::Dynamic, false);
}

#[test]
fn musl_static_verify_unwind() {
    full_stacks(Link::Static, true);
}

#[test]
fn musl_dynamic_verify_unwind() {
    full_stacks(Link::Dynamic, true);
}

/// With CFI and frame pointers alone, the stacks of strdup's leaks end at
/// strdup (musl has neither): this proves the chain checks above can fail.
/// The accounting does not depend on the unwinder.
fn cfi_fp_stops_at_strdup(link: Link) {
    let bin = build(link);
    let libc = libc_file(link, &bin);
    let run = memleak_json(&["--unwind", "cfi-fp"], &bin, &[]);
    let report = run.final_report();
    let expect = run.expect();
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "{link:?}: outstanding totals differ from the program's ground truth:\n{}",
        report.render()
    );
    assert_no_lost_events(&report);
    let site = expect.site("keep_name");
    let through_strdup: Vec<&Stack> = report
        .stacks
        .iter()
        .filter(|s| s.frames.get(1).is_some_and(|f| f.function() == "strdup"))
        .collect();
    for stack in &through_strdup {
        assert_allocator_frame(stack, "malloc", |f| f.in_module(&libc), &report);
        assert_eq!(
            stack.frames.len(),
            2,
            "{link:?}: --unwind cfi-fp went on past strdup, which has neither CFI nor frame \
             pointers:\n{}",
            report.render()
        );
    }
    assert_eq!(
        report.totals_where(|s| through_strdup.iter().any(|t| t.stack_id == s.stack_id)),
        (site.bytes, site.allocations),
        "{link:?}: the blocks of strdup are not all on stacks ending at strdup:\n{}",
        report.render()
    );
    assert!(
        report.stacks_with_function("keep_name").is_empty(),
        "{link:?}: --unwind cfi-fp found keep_name, strdup's caller:\n{}",
        report.render()
    );
}

#[test]
fn musl_static_cfi_fp_stops_at_strdup() {
    cfi_fp_stops_at_strdup(Link::Static);
}

#[test]
fn musl_dynamic_cfi_fp_stops_at_strdup() {
    cfi_fp_stops_at_strdup(Link::Dynamic);
}

/// The FILE fopen allocates is musl's: the static and the dynamic build
/// (Debian's libc.a and libc.so of one musl) measure the same size, and
/// both pass their check that malloc_usable_size is exact (or exit 3).
#[test]
fn musl_file_size_same_static_and_dynamic() {
    let size = |link: Link| {
        let bin = build(link);
        let out = Command::new(&bin)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}: {}\n{stderr}",
            bin.display(),
            out.status
        );
        Expect::parse(&stderr)
            .unwrap_or_else(|e| panic!("{}: {e}\n{stderr}", bin.display()))
            .site("open_log")
            .size
    };
    assert_eq!(size(Link::Static), size(Link::Dynamic));
}

/// Calls of level1 in `chain COUNT` (one 48-byte block each).
const CHAIN_COUNT: u64 = 4;

/// A static musl program that never frees links no `free`: memleak traces
/// it, says once on stderr that `free` was not found (every block counts as
/// outstanding), and the totals are exact.
#[test]
fn musl_static_without_free() {
    let bin = fixtures::build(&fixtures::CHAIN_MUSL_STATIC);
    assert_static_executable(&bin);
    assert!(
        try_symbol_address(&bin, "malloc").is_some() && try_symbol_address(&bin, "free").is_none(),
        "{} should have malloc and no free",
        bin.display()
    );
    let src = fixture_src("chain.c");
    let run = memleak_json(&[], &bin, &[&CHAIN_COUNT.to_string()]);
    let report = run.final_report();
    let expect = run.expect();
    assert_eq!(
        (expect.leaked_bytes, expect.leaked_allocations),
        (CHAIN_COUNT * 48, CHAIN_COUNT),
        "unexpected ground truth\n{}",
        run.describe()
    );
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("free") && l.contains("outstanding"))
        .collect();
    assert_eq!(
        said.len(),
        1,
        "stderr should say once that `free` was not found and every block counts as \
         outstanding:\n{}",
        run.describe()
    );
    assert_eq!(
        (report.outstanding_bytes, report.outstanding_allocations),
        (expect.leaked_bytes, expect.leaked_allocations),
        "wrong outstanding totals:\n{}",
        report.render()
    );
    report.assert_stacks_cover_totals();
    assert_no_lost_events(&report);
    let chain = [
        at("level3", "chain.c", call_line(&src, "malloc@level3")),
        at("level2", "chain.c", call_line(&src, "level3@level2")),
        at("level1", "chain.c", call_line(&src, "level2@level1")),
        at("main", "chain.c", call_line(&src, "level1@main")),
    ];
    for stack in &report.stacks {
        if let Some(why) = chain_mismatch(stack, 1, &chain) {
            panic!(
                "not malloc <- level3 <- level2 <- level1 <- main with the marked lines: {why}\n{}",
                report.render()
            );
        }
        assert_allocator_frame(stack, "malloc", |f| f.in_module(&bin), &report);
    }
}
