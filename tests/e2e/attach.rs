//! Attaching to a running process with -p PID: periodic reports show the
//! demo's leak with its full stack, growing over time.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Kills and reaps the target when the test ends, also on failure.
struct Target(Child);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the process has its C library mapped (it is past the dynamic
/// loader and running).
fn wait_for_libc(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        if maps.contains("libc.so") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} did not map libc within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn attach_to_running_process() {
    let bin = fixtures::leaky();
    let src = example_src("leaky.c");
    // 300 iterations, 100 ms apart: runs for 30 s unless killed; a leak every 200 ms.
    let child = Command::new(&bin)
        .args(["300", "100"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let target = Target(child);
    let pid = target.0.id();
    wait_for_libc(pid);
    std::thread::sleep(Duration::from_millis(200));

    let pid_arg = pid.to_string();
    let run = memleak(&["--format", "json", "-T", "1000", "-p", &pid_arg, "1", "3"]);
    drop(target);

    assert!(
        run.status.success(),
        "memleak -p failed\n{}",
        run.describe()
    );
    let reports = run.reports();
    assert_eq!(
        reports.len(),
        3,
        "`-p PID 1 3` should print 3 reports\n{}",
        run.describe()
    );

    let chain = [
        at("alloc_v3", "leaky.c", call_line(&src, "malloc")),
        at("alloc_v2", "leaky.c", call_line(&src, "alloc_v3")),
        at("alloc_v1", "leaky.c", call_line(&src, "alloc_v2")),
        at("main", "leaky.c", call_line(&src, "alloc_v1")),
    ];
    let mut counts = Vec::new();
    for report in &reports {
        assert_eq!(
            report.pid,
            u64::from(pid),
            "report for the wrong pid:\n{}",
            report.render()
        );
        for stack in report.stacks_with_function("alloc_v3") {
            if let Some(why) = chain_mismatch(stack, 1, &chain) {
                panic!(
                    "the leak's stack is not malloc <- alloc_v3 <- alloc_v2 <- alloc_v1 <- main \
                     with the marked lines: {why}\n{}",
                    report.render()
                );
            }
            assert_allocator_frame(stack, "malloc", Frame::in_libc, report);
            assert_eq!(
                stack.bytes,
                16 * stack.allocations,
                "blocks of 16 bytes expected:\n{}",
                stack.render()
            );
        }
        let (bytes, allocations) = report.totals_where(|s| s.has_function("alloc_v3"));
        // Nothing but alloc_v3's blocks is allocated by the program.
        assert_eq!(
            (report.outstanding_bytes, report.outstanding_allocations),
            (bytes, allocations),
            "outstanding blocks that are not the demo's leaks:\n{}",
            report.render()
        );
        counts.push(allocations);
    }
    let last = reports.last().unwrap();
    assert!(
        *counts.last().unwrap() >= 1,
        "the last report shows none of the leaks made while attached:\n{}",
        last.render()
    );
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]) && counts[0] < counts[2],
        "the leak should grow from report to report (a leak every 200 ms), got {counts:?}\n{}",
        run.describe()
    );
}
