//! A library loaded with dlopen() after tracing started
//! (tests/fixtures/src/dlopen_main.c + plugin.c): its leak is symbolized
//! with the plugin's functions, file, lines and module, with exact bytes.

use crate::common::*;

#[test]
fn dlopen_plugin_leak_symbolized() {
    dlopen_plugin_leak(false);
}

/// The same with `--verify-unwind`: the kernel's and user space's unwinding
/// of every allocation agree, also in a library loaded after tracing started.
/// The program pauses after the plugin's first block, so that the kernel
/// walks the later ones.
#[test]
fn dlopen_plugin_leak_verify_unwind() {
    dlopen_plugin_leak(true);
}

/// Blocks the plugin leaks (`dlopen_main PLUGIN COUNT`).
const COUNT: u64 = 6;

fn dlopen_plugin_leak(verify_unwind: bool) {
    let plugin = fixtures::plugin();
    let bin = fixtures::dlopen_main();
    let plugin_src = fixture_src("plugin.c");
    let main_src = fixture_src("dlopen_main.c");
    let plugin_arg = plugin.to_str().expect("UTF-8 path");
    let count = COUNT.to_string();
    let pause = verify_pause_arg();
    let mut args = vec![plugin_arg, count.as_str()];
    if verify_unwind {
        args.push(&pause);
    }
    let run = memleak_json(&with_verify_unwind(&[], verify_unwind), &bin, &args);
    let report = checked_final_report(&run, verify_unwind);
    let expect = run.expect();
    let site = expect.site("plugin_alloc");
    assert_eq!(
        (site.allocations, site.size),
        (COUNT, 88),
        "unexpected ground truth\n{}",
        run.describe()
    );

    let chain = [
        at(
            "plugin_alloc",
            "plugin.c",
            call_line(&plugin_src, "malloc@plugin_alloc"),
        ),
        at(
            "plugin_leak",
            "plugin.c",
            call_line(&plugin_src, "plugin_alloc@plugin_leak"),
        ),
        at(
            "main",
            "dlopen_main.c",
            call_line(&main_src, "plugin_leak@main"),
        ),
    ];
    let stacks = report.stacks_with_function("plugin_alloc");
    assert!(
        !stacks.is_empty(),
        "no stack through plugin_alloc:\n{}",
        report.render()
    );
    for stack in &stacks {
        if let Some(why) = chain_mismatch(stack, 1, &chain) {
            panic!(
                "the plugin's leak is not malloc <- plugin_alloc <- plugin_leak <- main with the marked lines: {why}\n{}",
                report.render()
            );
        }
        assert_allocator_frame(stack, "malloc", Frame::in_libc, &report);
        for i in [1, 2] {
            let f = &stack.frames[i];
            assert!(
                f.module().ends_with("libplugin.so") && f.in_module(&plugin),
                "frame #{i} should be in {}:\n{}",
                plugin.display(),
                stack.render()
            );
        }
        assert!(
            stack.frames[3].in_module(&bin),
            "frame #3 should be in {}:\n{}",
            bin.display(),
            stack.render()
        );
    }
    let (bytes, allocations) = report.totals_where(|s| s.has_function("plugin_alloc"));
    assert_eq!(
        (bytes, allocations),
        (site.bytes, site.allocations),
        "wrong bytes/allocations for the plugin's leak:\n{}",
        report.render()
    );
    assert_eq!(
        report.lost_events,
        0,
        "events were lost:\n{}",
        report.render()
    );
    if verify_unwind {
        // Blocks 2..COUNT come VERIFY_PAUSE_MS after the first, on the
        // plugin's cached chain. dlopen allocates too, so the run's counter
        // cannot be split by path: its bound is the number of those blocks.
        assert_unwind_verified_at_least(&report, COUNT - 1, "the plugin's blocks 2 and later");
    }
}

/// Levels of plugin_nest with `close` (NEST_DEPTH in dlopen_main.c).
const NEST_DEPTH: u64 = 5;

/// The plugin is dlclose()d (unmapped) right after its leaks, before
/// memleak may have read a single record of them, and plugin_nest's
/// deeper levels are walked by the kernel with cached rules, so their
/// stacks are first seen in the final report. Every frame in the plugin
/// must still be placed in it: function, file and line, down to main.
#[test]
fn dlclosed_plugin_frames_symbolized() {
    let plugin = fixtures::plugin();
    let bin = fixtures::dlopen_main();
    let plugin_src = fixture_src("plugin.c");
    let main_src = fixture_src("dlopen_main.c");
    let count = COUNT.to_string();
    let args = [path_str(&plugin), count.as_str(), "0", "close"];
    let run = memleak_json(&[], &bin, &args);
    let report = run.final_report();
    assert_no_lost_events(&report);
    let site = run.expect().site("plugin_alloc").clone();
    assert_eq!(
        (site.allocations, site.size),
        (COUNT + NEST_DEPTH, 88),
        "unexpected ground truth\n{}",
        run.describe()
    );
    assert_eq!(
        report.losses.get("unwind_stopped").copied(),
        Some(0),
        "a stack stopped:\n{}",
        report.render()
    );
    let in_plugin = |f: &Frame| f.in_module(&plugin);
    let nest_call = call_line(&plugin_src, "plugin_nest@plugin_nest");
    let nest_alloc = call_line(&plugin_src, "plugin_alloc@plugin_nest");
    let mut depths = Vec::new();
    for stack in report.stacks_with_function("plugin_alloc") {
        for f in &stack.frames[1..] {
            if in_plugin(f) {
                assert!(
                    f.function.is_some() && f.line.is_some(),
                    "a frame in the unloaded plugin without function or line:\n{}",
                    stack.render()
                );
            }
        }
        let main = stack
            .frames
            .iter()
            .position(|f| f.function() == "main")
            .unwrap_or_else(|| panic!("the stack does not reach main:\n{}", stack.render()));
        assert!(stack.frames[main].in_module(&bin));
        if stack.has_function("plugin_nest") {
            // plugin_alloc <- plugin_nest (the allocating level) <- the
            // recursive calls <- main.
            let levels = &stack.frames[2..main];
            assert_eq!(levels[0].line, Some(nest_alloc), "{}", stack.render());
            for f in &levels[1..] {
                assert_eq!(
                    (f.function(), f.line),
                    ("plugin_nest", Some(nest_call)),
                    "{}",
                    stack.render()
                );
            }
            assert_eq!(
                stack.frames[main].line,
                Some(call_line(&main_src, "plugin_nest@main"))
            );
            depths.push(levels.len() as u64);
        }
    }
    depths.sort();
    assert_eq!(
        depths,
        (1..=NEST_DEPTH).collect::<Vec<_>>(),
        "one stack per level of plugin_nest:\n{}",
        report.render()
    );
    let (bytes, allocations) = report.totals_where(|s| s.has_function("plugin_alloc"));
    assert_eq!((bytes, allocations), (site.bytes, site.allocations));
    assert_outstanding_matches_valgrind(&report, &bin, &args);
}
