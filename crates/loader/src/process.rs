//! The traced process: checking a PID, or starting a command stopped right
//! after its exec (under ptrace, so memleak can attach before its first
//! allocation and drain its events when it exits).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// Checks that `pid` is a live user process and returns its executable.
pub fn check_pid(pid: i32) -> Result<PathBuf> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if !proc.exists() {
        bail!("no such process: {pid}");
    }
    let exe = std::fs::read_link(proc.join("exe")).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => {
            anyhow!("process {pid} has no executable (a kernel thread, or it exited)")
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            anyhow!("cannot inspect process {pid}: permission denied (run as root)")
        }
        _ => anyhow!("cannot inspect process {pid}: {e}"),
    })?;
    let exe_str = exe.to_string_lossy();
    if let Some(stripped) = exe_str.strip_suffix(" (deleted)") {
        log::warn!("the executable of {pid} was deleted: reading it through /proc");
        let _ = stripped;
        return Ok(proc.join("exe"));
    }
    Ok(exe)
}

/// Finds `cmd` like execvp would.
fn resolve_command(cmd: &OsString) -> Result<PathBuf> {
    let p = Path::new(cmd);
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if cmd.as_bytes().contains(&b'/') {
        if !p.exists() {
            bail!("command not found: {}", p.display());
        }
        if !is_exec(p) {
            bail!("{} is not an executable file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let c = dir.join(p);
        if is_exec(&c) {
            return Ok(c);
        }
    }
    bail!("command not found: {}", p.display())
}

/// Starts `cmd` under ptrace, stopped after its exec. Returns its PID and
/// executable path.
pub fn spawn_stopped(cmd: &[OsString]) -> Result<(Pid, PathBuf)> {
    let program = resolve_command(&cmd[0])?;
    let c_program =
        CString::new(program.as_os_str().as_bytes()).context("command contains a NUL byte")?;
    let c_args: Vec<CString> = cmd
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .context("argument contains a NUL byte")?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: the child only calls async-signal-safe functions before exec.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            drop(rd);
            let _ = ptrace::traceme();
            let err = nix::unistd::execv(&c_program, &c_args)
                .err()
                .map_or(0, |e| e as i32);
            let _ = nix::unistd::write(&wr, &err.to_ne_bytes());
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(127) };
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let status = waitpid(child, None).context("waiting for the command to start")?;
            let mut buf = [0u8; 4];
            let n = nix::unistd::read(&rd, &mut buf).unwrap_or(0);
            if n == 4 {
                let errno = i32::from_ne_bytes(buf);
                let _ = waitpid(child, None);
                bail!(
                    "cannot run {}: {}",
                    program.display(),
                    std::io::Error::from_raw_os_error(errno)
                );
            }
            match status {
                WaitStatus::Stopped(_, Signal::SIGTRAP) => {}
                other => bail!("{} did not start: {other:?}", program.display()),
            }
            ptrace::setoptions(
                child,
                ptrace::Options::PTRACE_O_TRACEEXIT
                    | ptrace::Options::PTRACE_O_EXITKILL
                    | ptrace::Options::PTRACE_O_TRACEEXEC,
            )
            .context("ptrace options")?;
            let exe = std::fs::read_link(format!("/proc/{child}/exe")).unwrap_or(program);
            Ok((child, exe))
        }
    }
}

/// What the command did since the last look.
pub enum ChildState {
    Running,
    /// Stopped at its exit: memory still mapped. Continue with `resume`.
    Exiting,
    Exited(String),
}

/// Polls the traced command without blocking; forwards its signals.
pub fn poll_child(pid: Pid) -> ChildState {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) => return ChildState::Running,
            Ok(WaitStatus::PtraceEvent(_, _, ev)) if ev == libc::PTRACE_EVENT_EXIT => {
                return ChildState::Exiting
            }
            Ok(WaitStatus::PtraceEvent(p, _, _)) => {
                let _ = ptrace::cont(p, None);
            }
            Ok(WaitStatus::Stopped(p, sig)) => {
                // A signal for the command: deliver it.
                let _ = ptrace::cont(p, Some(sig));
            }
            Ok(WaitStatus::Exited(_, code)) => {
                return ChildState::Exited(format!("exited with status {code}"))
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return ChildState::Exited(format!("killed by {sig}"))
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::ECHILD) => return ChildState::Exited("gone".to_string()),
            Err(_) => return ChildState::Running,
        }
    }
}

/// Lets the command go on (after its exec stop or exit stop).
pub fn resume(pid: Pid) {
    let _ = ptrace::cont(pid, None);
}

/// True while `pid` exists.
pub fn alive(pid: i32) -> bool {
    // A zombie still exists for kill(0) but has no memory left to trace.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}
