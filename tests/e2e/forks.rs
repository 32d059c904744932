//! `-f`: a command's children (and theirs) are traced too, each with its
//! own books and its own report section; without `-f` they are not, and
//! the report says how many were left alone.
//! tests/fixtures/src/forker.c prints each process's ground truth.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::*;

/// `EXPECT_PROC pid=P parent=PP leaked_bytes=B leaked_allocations=N` lines:
/// pid -> (parent, bytes, allocations).
fn expected(run: &Run) -> BTreeMap<u64, (u64, u64, u64)> {
    let mut m = BTreeMap::new();
    for line in run.stderr.lines().filter(|l| l.starts_with("EXPECT_PROC ")) {
        let kv: BTreeMap<&str, u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k, v.parse().expect("a number")))
            .collect();
        m.insert(
            kv["pid"],
            (kv["parent"], kv["leaked_bytes"], kv["leaked_allocations"]),
        );
    }
    assert_eq!(m.len(), 4, "forker's four processes\n{}", run.describe());
    m
}

/// The JSON report objects, as parsed values (for the fields the common
/// parser leaves out).
fn raw_reports(run: &Run) -> Vec<Value> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with(REPORT_PREFIX))
        .map(|l| serde_json::from_str(l).expect("a JSON report"))
        .collect()
}

/// Every process's final report holds exactly its own leaks: the parent's
/// block that child 1 frees stays the parent's, the grandchild is followed
/// through its parent, and child 2's blocks from before its exec are gone.
#[test]
fn follow_forks_reports_each_process_exactly() {
    let bin = fixtures::forker();
    let run = memleak_json(&["-f"], &bin, &[]);
    assert!(run.status.success(), "{}", run.describe());
    let truth = expected(&run);
    let reports = run.reports();
    let raw = raw_reports(&run);
    assert_eq!(
        reports.len(),
        truth.len(),
        "one final report object per process\n{}",
        run.describe()
    );
    let root = *truth
        .iter()
        .find(|(_, (parent, _, _))| *parent == 0)
        .expect("the parent's line")
        .0;
    for (report, raw) in reports.iter().zip(&raw) {
        assert!(report.is_final);
        assert_no_lost_events(report);
        let (parent, bytes, allocations) = truth.get(&report.pid).unwrap_or_else(|| {
            panic!(
                "a report for unknown process {}\n{}",
                report.pid,
                run.describe()
            )
        });
        assert_totals(
            report,
            (*bytes, *allocations),
            &format!("its EXPECT_PROC line (child of {parent})"),
        );
        let reported_parent = raw["parent"].as_u64().unwrap_or(0);
        assert_eq!(
            reported_parent,
            if report.pid == root { 0 } else { *parent },
            "the parent of process {}",
            report.pid
        );
        assert_eq!(raw["exit"].as_str(), Some("exited with status 0"));
        assert_eq!(raw["exe"].as_str(), Some(path_str(&bin)));
        for stack in &report.stacks {
            assert!(
                stack.frames.iter().any(|f| f.function() == "leak"),
                "process {}: a stack that does not go through leak():\n{}",
                report.pid,
                stack.render()
            );
        }
    }
    // The target comes first.
    assert_eq!(reports[0].pid, root);
    // The grandchild's blocks come through grandchild(), child 2's through
    // main() of the new image.
    let by_pid = |pid: u64| reports.iter().find(|r| r.pid == pid).unwrap();
    let grandchild = truth.iter().find(|(_, v)| v.1 == 77).unwrap().0;
    assert!(by_pid(*grandchild)
        .stacks
        .iter()
        .all(|s| s.has_function("grandchild")));
    let child1 = truth.iter().find(|(_, v)| v.1 == 400).unwrap().0;
    assert!(by_pid(*child1)
        .stacks
        .iter()
        .all(|s| s.has_function("child1")));
}

/// Without `-f`: the parent's leaks alone, and the report says that two
/// children were not followed (text and JSON).
#[test]
fn without_follow_forks_children_are_counted_not_traced() {
    let bin = fixtures::forker();
    let run = memleak_json(&[], &bin, &[]);
    let report = run.final_report();
    assert_no_lost_events(&report);
    let truth = expected(&run);
    let (_, bytes, allocations) = truth[&report.pid];
    assert_totals(&report, (bytes, allocations), "its EXPECT_PROC line");
    assert_eq!((bytes, allocations), (300, 3));
    let raw = raw_reports(&run);
    assert_eq!(raw[0]["children_not_followed"].as_u64(), Some(2));

    let text = memleak(&["--", path_str(&bin)]);
    assert!(text.status.success(), "{}", text.describe());
    assert!(
        text.stderr
            .contains("2 child processes forked and not followed (-f follows them)"),
        "{}",
        text.describe()
    );
}

/// `-f -p`: a running shell that execs forker; its children are followed
/// from their birth, each reported exactly.
#[test]
fn follow_forks_of_a_running_process() {
    use crate::real_use::{wait_until_catching, waiting_shell};
    let bin = fixtures::forker();
    let go = unique_scratch_path("go-forker");
    let errors = unique_scratch_path("forker-stderr");
    let t = waiting_shell(
        &go,
        &format!("exec '{}' 2>'{}'", path_str(&bin), errors.display()),
    );
    let pid = t.0.id().to_string();
    let mut cmd = std::process::Command::new(memleak_bin());
    cmd.args(["--format", "json", "-f", "-p", &pid]);
    let run = memleak_command(cmd, |memleak| {
        wait_until_catching(memleak);
        std::fs::write(&go, b"").unwrap();
    });
    let _ = std::fs::remove_file(&go);
    let truth_text = std::fs::read_to_string(&errors).unwrap_or_default();
    let _ = std::fs::remove_file(&errors);
    assert!(run.status.success(), "{}", run.describe());
    let truth_run = Run {
        command: "forker".into(),
        status: run.status,
        stdout: String::new(),
        stderr: truth_text,
    };
    let truth = expected(&truth_run);
    let reports = run.reports();
    assert_eq!(reports.len(), 4, "{}", run.describe());
    for r in &reports {
        assert_no_lost_events(r);
        let (_, bytes, allocations) = truth
            .get(&r.pid)
            .unwrap_or_else(|| panic!("a report for unknown process {}", r.pid));
        assert_totals(r, (*bytes, *allocations), "its EXPECT_PROC line");
    }
}
