//! Bad input: exactly one line on stderr starting with `error:`, a non-zero
//! exit code, no panic, no report.

use std::os::unix::process::ExitStatusExt;

use crate::common::*;

/// Checks the error contract and returns the error line.
pub fn assert_clean_error(run: &Run, must_mention: &[&str]) -> String {
    assert!(
        !run.stderr.contains("panicked") && !run.stdout.contains("panicked"),
        "memleak panicked instead of reporting an error\n{}",
        run.describe()
    );
    assert!(
        run.status.signal().is_none(),
        "memleak was killed by a signal instead of exiting with an error\n{}",
        run.describe()
    );
    let code = run.status.code().unwrap();
    assert!(
        code != 0,
        "memleak exited with 0 on bad input\n{}",
        run.describe()
    );
    assert!(
        code != 101,
        "exit code 101 is Rust's panic exit code\n{}",
        run.describe()
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr\n{}",
        run.describe()
    );
    let line = lines[0];
    assert!(
        line.starts_with("error:"),
        "the stderr line does not start with 'error:'\n{}",
        run.describe()
    );
    for needle in must_mention {
        assert!(
            line.contains(needle),
            "the error message should mention {needle:?}\n{}",
            run.describe()
        );
    }
    assert!(
        run.stdout.trim().is_empty(),
        "nothing should be printed on stdout\n{}",
        run.describe()
    );
    line.to_string()
}

#[test]
fn error_no_such_pid() {
    let run = memleak(&["--format", "json", "-p", "999999999"]);
    assert_clean_error(&run, &["999999999"]);
}

#[test]
fn error_command_not_found() {
    let run = memleak(&["--format", "json", "--", "/nonexistent/cmd"]);
    assert_clean_error(&run, &["/nonexistent/cmd"]);
}

/// Deterministic pseudo-random bytes (no ELF magic).
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn error_obj_random_bytes() {
    let leaky = fixtures::leaky();
    let path = unique_scratch_path("corrupt-random").with_extension("so");
    let _cleanup = Cleanup::of(&[&path]);
    std::fs::write(&path, random_bytes(64 * 1024)).unwrap();
    let obj = path.to_str().unwrap();
    let run = memleak(&[
        "--format",
        "json",
        "-O",
        obj,
        "--",
        leaky.to_str().unwrap(),
        "1",
    ]);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert_clean_error(&run, &[name]);
    assert!(
        !run.stderr.contains("EXPECT"),
        "the program ran although -O was unusable\n{}",
        run.describe()
    );
}

#[test]
fn error_obj_text_file() {
    let leaky = fixtures::leaky();
    let path = unique_scratch_path("not-an-elf").with_extension("so");
    let _cleanup = Cleanup::of(&[&path]);
    std::fs::write(
        &path,
        "this is a text file, not an ELF shared object\n".repeat(20),
    )
    .unwrap();
    let obj = path.to_str().unwrap();
    let run = memleak(&[
        "--format",
        "json",
        "-O",
        obj,
        "--",
        leaky.to_str().unwrap(),
        "1",
    ]);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert_clean_error(&run, &[name]);
    assert!(
        !run.stderr.contains("EXPECT"),
        "the program ran although -O was unusable\n{}",
        run.describe()
    );
}

/// An ELF that is truncated in the middle of its headers.
#[test]
fn error_obj_truncated_elf() {
    let leaky = fixtures::leaky();
    let bytes = std::fs::read(&leaky).unwrap();
    let path = unique_scratch_path("truncated").with_extension("so");
    let _cleanup = Cleanup::of(&[&path]);
    std::fs::write(&path, &bytes[..100]).unwrap();
    let obj = path.to_str().unwrap();
    let run = memleak(&[
        "--format",
        "json",
        "-O",
        obj,
        "--",
        leaky.to_str().unwrap(),
        "1",
    ]);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert_clean_error(&run, &[name]);
}

#[test]
fn error_obj_missing_file() {
    let leaky = fixtures::leaky();
    let run = memleak(&[
        "--format",
        "json",
        "-O",
        "/nonexistent/libnothing.so",
        "--",
        leaky.to_str().unwrap(),
        "1",
    ]);
    assert_clean_error(&run, &["/nonexistent/libnothing.so"]);
}

/// No allocator symbol with the prefix exists: the message names the prefix
/// and the library that was searched (libc).
#[test]
fn error_symbol_prefix_not_found() {
    let leaky = fixtures::leaky();
    let run = memleak(&[
        "--format",
        "json",
        "-S",
        "bogus_",
        "--",
        leaky.to_str().unwrap(),
        "1",
    ]);
    assert_clean_error(&run, &["bogus_", "libc.so"]);
    assert!(
        !run.stderr.contains("EXPECT"),
        "the program ran although no allocator was found\n{}",
        run.describe()
    );
}

#[test]
fn error_unknown_option() {
    let run = memleak(&["--no-such-option"]);
    assert_clean_error(&run, &["--no-such-option"]);
}

#[test]
fn error_bad_number() {
    let leaky = fixtures::leaky();
    let run = memleak(&["-T", "lots", "--", leaky.to_str().unwrap(), "1"]);
    assert_clean_error(&run, &["lots"]);
}

#[test]
fn error_bad_unwind_mode() {
    let leaky = fixtures::leaky();
    let run = memleak(&["--unwind", "magic", "--", leaky.to_str().unwrap(), "1"]);
    assert_clean_error(&run, &["magic"]);
}
