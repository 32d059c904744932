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
        Some(libc::EACCES) | Some(libc::EPERM) => denied(pid),
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

/// Why the kernel refused to show `/proc/PID/exe`: reading it takes the
/// kernel's ptrace access check. Without CAP_SYS_PTRACE, a process of
/// another user, or one holding capabilities memleak lacks, is refused:
/// root (or CAP_SYS_PTRACE) is the answer. CAP_SYS_PTRACE counts only in
/// memleak's user namespace: from a container's, processes outside it stay
/// out of reach. Otherwise the capability checks pass, and the refusal came
/// from a security module (Landlock, SELinux, AppArmor, Yama, a BPF LSM)
/// that protects the process from memleak, e.g. a sandbox memleak runs in
/// and the process is outside of: running as root does not help there.
fn denied(pid: i32) -> anyhow::Error {
    // CapEff bit 19: CAP_SYS_PTRACE.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let has_ptrace = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 19) != 0);
    // The initial user namespace maps all 2^32 - 1 IDs from 0.
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let initial_ns = uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    if !has_ptrace {
        anyhow!(
            "cannot inspect process {pid}: permission denied (it belongs to another user or holds more privileges: run memleak as root)"
        )
    } else if !initial_ns {
        anyhow!(
            "cannot inspect process {pid}: memleak runs in a user namespace (a container) and the process is outside of it; run memleak outside the container"
        )
    } else {
        anyhow!(
            "cannot inspect process {pid}: a security module (Landlock, SELinux, AppArmor, Yama or a BPF LSM) denies it although memleak has CAP_SYS_PTRACE, so root does not help (is memleak in a sandbox the process is outside of?)"
        )
    }
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
            let status = wait(child, None).context("waiting for the command to start")?;
            let mut buf = [0u8; 4];
            let n = loop {
                match nix::unistd::read(&rd, &mut buf) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r.unwrap_or(0),
                }
            };
            if n == 4 {
                let errno = i32::from_ne_bytes(buf);
                let _ = wait(child, None);
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

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signal(Signal),
}

impl ChildExit {
    /// The status a shell would give: the exit code, or 128 + the signal.
    pub fn status(self) -> u8 {
        match self {
            ChildExit::Code(c) => (c & 0xff) as u8,
            ChildExit::Signal(s) => 128u8.wrapping_add(s as i32 as u8),
        }
    }
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildExit::Code(c) => write!(f, "exited with status {c}"),
            ChildExit::Signal(s) => write!(f, "killed by {s}"),
        }
    }
}

/// What the command did since the last look.
pub enum ChildState {
    Running,
    /// Stopped at its exit: memory still mapped. Continue with `resume`.
    Exiting,
    /// Stopped right after an exec: the new image is mapped (its shared
    /// libraries not yet), nothing of it ran. Continue with `resume`.
    Exec,
    Exited(ChildExit),
}

/// `waitpid`, retried when a signal interrupts it.
fn wait(pid: Pid, flags: Option<WaitPidFlag>) -> nix::Result<WaitStatus> {
    loop {
        match waitpid(pid, flags) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// Polls the traced command without blocking; forwards its signals.
pub fn poll_child(pid: Pid) -> Result<ChildState> {
    loop {
        match wait(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) => return Ok(ChildState::Running),
            Ok(WaitStatus::PtraceEvent(_, _, ev)) if ev == libc::PTRACE_EVENT_EXIT => {
                return Ok(ChildState::Exiting)
            }
            Ok(WaitStatus::PtraceEvent(_, _, ev)) if ev == libc::PTRACE_EVENT_EXEC => {
                return Ok(ChildState::Exec)
            }
            Ok(WaitStatus::PtraceEvent(p, _, _)) => {
                let _ = ptrace::cont(p, None);
            }
            Ok(WaitStatus::Stopped(p, sig)) => {
                // A signal for the command: deliver it.
                let _ = ptrace::cont(p, Some(sig));
            }
            Ok(WaitStatus::Exited(_, code)) => {
                return Ok(ChildState::Exited(ChildExit::Code(code)))
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Ok(ChildState::Exited(ChildExit::Signal(sig)))
            }
            Ok(_) => continue,
            Err(e) => bail!("waiting for the command (pid {pid}): {e}"),
        }
    }
}

/// Kills the command (SIGKILL) and waits for it to be gone.
pub fn kill(pid: Pid) -> Result<ChildExit> {
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    loop {
        match poll_child(pid)? {
            ChildState::Exited(how) => return Ok(how),
            ChildState::Exiting | ChildState::Exec => resume(pid),
            ChildState::Running => std::thread::sleep(std::time::Duration::from_millis(5)),
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
