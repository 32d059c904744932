//! A process in a container: its own mount and PID namespaces and a root on
//! a filesystem mounted only there, where its program lives at another path
//! than anything on the host (`/app/leaky`, its C library a copy). memleak
//! attaches with -p, follows the exec into the program, and reports it with
//! full symbols, its files named as the process names them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::real_use::wait_until_catching;

/// Kills the container (its init ignores SIGTERM) when dropped.
struct Container(std::process::Child, Option<u32>);

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(pid) = self.1 {
            // SAFETY: kill(2) on a PID this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The container's first process: a shell, as PID 1 of its namespace, on a
/// tmpfs root holding copies of the shell, the C library, the dynamic
/// linker and leaky at /app/leaky; it waits for a line on /go, then execs
/// `/app/leaky 8`. Its stderr goes to `stderr`.
fn start(stderr: &Path) -> (Container, u32) {
    let mnt = unique_scratch_path("container-root");
    std::fs::create_dir_all(&mnt).unwrap();
    let _cleanup = Cleanup::of(&[&mnt]);
    let script = format!(
        "set -e\n\
         mount -t tmpfs none '{m}'\n\
         mkdir -p '{m}/app' '{m}/bin' '{m}/lib64' '{m}/lib/x86_64-linux-gnu'\n\
         cp '{leaky}' '{m}/app/leaky'\n\
         cp \"$(readlink -f /bin/sh)\" '{m}/bin/sh'\n\
         cp /lib/x86_64-linux-gnu/libc.so.6 '{m}/lib/x86_64-linux-gnu/'\n\
         cp /lib64/ld-linux-x86-64.so.2 '{m}/lib64/'\n\
         mkfifo '{m}/go'\n\
         exec chroot '{m}' /bin/sh -c 'read x < /go; exec /app/leaky 8'\n",
        m = mnt.display(),
        leaky = fixtures::leaky().display()
    );
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("unshare (util-linux)");
    let mut c = Container(child, None);
    // unshare's child, once it waits on /go in its own root.
    let unshare = c.0.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok())
        {
            c.1 = Some(pid);
            if Path::new(&format!("/proc/{pid}/root/go")).exists()
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| e.ends_with("bin/sh"))
            {
                return (c, pid);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the container did not start:\n{}",
            std::fs::read_to_string(stderr).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn process_in_a_container_is_traced_with_full_symbols() {
    require_root();
    let stderr = unique_scratch_path("container-stderr");
    let (_container, pid) = start(&stderr);
    let mut cmd = Command::new(memleak_bin());
    cmd.args([
        "--format",
        "json",
        "-T",
        "100",
        "-v",
        "-p",
        &pid.to_string(),
    ]);
    let run = memleak_command(cmd, |memleak| {
        wait_until_catching(memleak);
        // Let the shell exec leaky.
        std::fs::write(format!("/proc/{pid}/root/go"), b"go\n").unwrap();
    });
    let program_err = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    assert!(
        run.status.success(),
        "{}\n--- the container ---\n{program_err}",
        run.describe()
    );
    let report = run.final_report();
    assert_no_lost_events(&report);
    let truth = Expect::parse(&program_err).unwrap_or_else(|e| panic!("{e}: {program_err}"));
    assert_totals(
        &report,
        (truth.leaked_bytes, truth.leaked_allocations),
        "the program's own count",
    );
    assert_eq!((truth.leaked_bytes, truth.leaked_allocations), (64, 4));
    // PID 1 in its namespace (the shell it replaced was).
    let raw: serde_json::Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(raw["ns_pid"].as_u64(), Some(1), "{}", run.describe());
    assert!(
        run.stderr
            .contains(&format!("Attaching to pid {pid} (pid 1 in its namespace)")),
        "{}",
        run.describe()
    );
    for stack in &report.stacks {
        let app: Vec<_> = stack
            .frames
            .iter()
            .filter(|f| f.module() == "/app/leaky")
            .collect();
        assert!(
            !app.is_empty() && app.iter().all(|f| f.function.is_some()),
            "frames of /app/leaky, each with its function:\n{}",
            stack.render()
        );
        for name in ["alloc_v3", "alloc_v2", "alloc_v1", "main"] {
            assert!(
                app.iter().any(|f| f.function() == name && f.line.is_some()),
                "{name} with its line:\n{}",
                stack.render()
            );
        }
        assert!(
            stack.has_function("main")
                && stack
                    .frames
                    .iter()
                    .any(|f| f.file.as_deref().is_some_and(|p| p.ends_with("leaky.c"))),
            "{}",
            stack.render()
        );
        let libc: Vec<_> = stack.frames.iter().filter(|f| f.in_libc()).collect();
        assert!(!libc.is_empty(), "{}", stack.render());
        for f in libc {
            assert_eq!(
                f.module(),
                "/lib/x86_64-linux-gnu/libc.so.6",
                "the container's C library, named as the container names it:\n{}",
                stack.render()
            );
        }
    }
}
