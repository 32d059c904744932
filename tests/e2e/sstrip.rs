//! Firmware stripped as OpenWrt strips it (`scripts/sstrip.py`: no section
//! headers at all, only what the loader maps): memleak still finds the
//! allocator (`DT_NEEDED` through PT_DYNAMIC), unwinds with the `.eh_frame`
//! that PT_GNU_EH_FRAME leads to, and names the functions `.dynsym`
//! exports; the others are an address in their module.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// Blocks `sstrip_main COUNT` leaks through libplugin.so.
const COUNT: u64 = 4;

/// libplugin.so and sstrip_main (linked with it, run path `$ORIGIN`),
/// copied into a directory of their own and stripped of their section
/// headers. Returns the program and the library.
pub fn sstripped() -> (PathBuf, PathBuf) {
    let plugin = fixtures::plugin();
    let scratch = scratch_dir();
    let main = compile(
        "sstrip_main",
        "gcc",
        &[
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            &format!("-I{}", path_str(&repo_root().join("tests/fixtures/src"))),
            path_str(&fixture_src("sstrip_main.c")),
            &format!("-L{}", path_str(&scratch)),
            "-l:libplugin.so",
            "-Wl,-rpath,$ORIGIN",
        ],
    );
    let dir = scratch.join(format!("sstripped.{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = Vec::new();
    for (from, name) in [(&main, "sstrip_main"), (&plugin, "libplugin.so")] {
        let to = dir.join(name);
        if !to.exists() {
            let tmp = dir.join(format!(".{name}.tmp"));
            let status = Command::new("python3")
                .arg(repo_root().join("scripts/sstrip.py"))
                .arg(from)
                .arg(&tmp)
                .status()
                .expect("running scripts/sstrip.py");
            assert!(status.success(), "sstrip.py {}", from.display());
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &to).unwrap();
        }
        let headers = tool_output("readelf", &["-hW"], &to);
        assert!(
            headers.contains("Number of section headers:         0"),
            "{} still has section headers:\n{headers}",
            to.display()
        );
        out.push(to);
    }
    (out[0].clone(), out[1].clone())
}

#[test]
fn sstripped_program_and_library_live() {
    let (bin, lib) = sstripped();
    let count = COUNT.to_string();
    let run = memleak_json(&[], &bin, &[&count]);
    let report = run.final_report();
    assert_no_lost_events(&report);
    let expect = run.assert_totals_are_the_programs(&report);
    assert_eq!(
        (expect.leaked_bytes, expect.leaked_allocations),
        (COUNT * 88, COUNT)
    );
    assert_outstanding_matches_valgrind(&report, &bin, &[&count]);
    assert_eq!(
        report.losses.get("unwind_stopped").copied(),
        Some(0),
        "{}",
        report.render()
    );
    let stacks = report.stacks_with_function("plugin_alloc");
    assert_eq!(stacks.len(), 1, "{}", report.render());
    let stack = stacks[0];
    // malloc <- plugin_alloc <- plugin_leak (named by the stripped
    // library's .dynsym) <- main (not exported: an address in the program)
    // <- libc's start code.
    assert_allocator_frame(stack, "malloc", Frame::in_libc, &report);
    let names: Vec<&str> = stack.frames[1..3].iter().map(|f| f.function()).collect();
    assert_eq!(names, ["plugin_alloc", "plugin_leak"], "{}", stack.render());
    for f in &stack.frames[1..3] {
        assert!(f.in_module(&lib), "{}", stack.render());
        assert!(
            f.offset.is_some(),
            "offset into the .dynsym function: {}",
            stack.render()
        );
    }
    let main = &stack.frames[3];
    assert!(
        main.in_module(&bin),
        "frame #3 is main's, in {}:\n{}",
        bin.display(),
        stack.render()
    );
    // Not exported: no name, but where it is in the file, which the
    // unstripped build's symbols place in main, on the marked line.
    assert_eq!(main.function, None, "{}", stack.render());
    let at = main.module_address.expect("an address in the module");
    let unstripped = scratch_dir().join("sstrip_main");
    let out = Command::new("addr2line")
        .args(["-f", "-e", path_str(&unstripped), &format!("{:#x}", at - 1)])
        .output()
        .expect("running addr2line");
    let located = String::from_utf8_lossy(&out.stdout).into_owned();
    let src = fixture_src("sstrip_main.c");
    assert!(
        located.starts_with("main\n")
            && located.contains(&format!(
                "sstrip_main.c:{}",
                call_line(&src, "plugin_leak@main")
            )),
        "addr2line puts {at:#x} at {located:?}"
    );
    assert!(
        stack.frames[4..].iter().any(|f| f.in_libc()),
        "the stack goes on into libc's start code:\n{}",
        stack.render()
    );
    for f in &stack.frames {
        assert_ne!(f.method, "scan", "{}", stack.render());
    }
}
