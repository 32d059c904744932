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
            "cannot inspect process {pid}: permission denied (it belongs to another user or holds more privileges: run memleak as root, or give it CAP_SYS_PTRACE)"
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

/// What a traced process did since the last look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Stopped at its exit: memory still mapped. Continue with `resume`.
    Exiting(Pid),
    /// Stopped right after an exec: the new image is mapped (its shared
    /// libraries not yet), nothing of it ran. Continue with `resume`.
    Exec(Pid),
    /// Stopped at a fork (or vfork) that made `child`, which is held
    /// stopped until [`Tracees::adopt`] says whether to follow it. Continue
    /// the parent with `resume`.
    Forked { parent: Pid, child: Pid },
    /// Gone.
    Exited(Pid, ChildExit),
}

/// The processes memleak started or followed, under ptrace: it sees their
/// exec, fork and exit, and forwards every other signal.
#[derive(Default)]
pub struct Tracees {
    /// Processes traced and running (or stopped by their own signals).
    known: std::collections::HashSet<Pid>,
    /// New children whose first stop came before their parent's fork event.
    stopped_unannounced: std::collections::HashSet<Pid>,
    /// New children announced and decided on, whose first stop has not come
    /// yet: true to follow, false to let go.
    awaited: std::collections::HashMap<Pid, bool>,
}

impl Tracees {
    /// Traces the command `spawn_stopped` started; `forks`: report its forks.
    pub fn new(command: Pid, forks: bool) -> Result<Tracees> {
        let mut options = ptrace::Options::PTRACE_O_TRACEEXIT
            | ptrace::Options::PTRACE_O_EXITKILL
            | ptrace::Options::PTRACE_O_TRACEEXEC;
        if forks {
            options |= ptrace::Options::PTRACE_O_TRACEFORK | ptrace::Options::PTRACE_O_TRACEVFORK;
        }
        ptrace::setoptions(command, options).context("ptrace options")?;
        let mut t = Tracees::default();
        t.known.insert(command);
        Ok(t)
    }

    /// Decides on a child announced by [`Event::Forked`]: follow it (it
    /// stays traced, its forks and exit reported) or let it go. It runs
    /// from here on.
    pub fn adopt(&mut self, child: Pid, follow: bool) {
        if self.stopped_unannounced.remove(&child) {
            self.start(child, follow);
        } else {
            self.awaited.insert(child, follow);
        }
    }

    /// A new child at its first stop, decided on: continued without the
    /// SIGSTOP that stopped it.
    fn start(&mut self, child: Pid, follow: bool) {
        if follow {
            self.known.insert(child);
            let _ = ptrace::cont(child, None);
        } else {
            let _ = ptrace::detach(child, None);
        }
    }

    /// Processes traced now.
    pub fn count(&self) -> usize {
        self.known.len()
    }

    /// The next event of any traced process, without blocking.
    pub fn poll(&mut self) -> Result<Option<Event>> {
        loop {
            let status = match wait(
                Pid::from_raw(-1),
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return Ok(None),
                Ok(s) => s,
                Err(e) => bail!("waiting for the traced processes: {e}"),
            };
            match status {
                WaitStatus::PtraceEvent(p, _, libc::PTRACE_EVENT_EXIT) => {
                    return Ok(Some(Event::Exiting(p)))
                }
                WaitStatus::PtraceEvent(p, _, libc::PTRACE_EVENT_EXEC) => {
                    return Ok(Some(Event::Exec(p)))
                }
                WaitStatus::PtraceEvent(p, _, ev)
                    if ev == libc::PTRACE_EVENT_FORK || ev == libc::PTRACE_EVENT_VFORK =>
                {
                    match ptrace::getevent(p) {
                        Ok(child) => {
                            return Ok(Some(Event::Forked {
                                parent: p,
                                child: Pid::from_raw(child as i32),
                            }))
                        }
                        Err(_) => {
                            let _ = ptrace::cont(p, None);
                        }
                    }
                }
                WaitStatus::PtraceEvent(p, _, _) => {
                    let _ = ptrace::cont(p, None);
                }
                WaitStatus::Stopped(p, Signal::SIGSTOP) if !self.known.contains(&p) => {
                    // A new child's first stop.
                    match self.awaited.remove(&p) {
                        Some(follow) => self.start(p, follow),
                        None => {
                            self.stopped_unannounced.insert(p);
                        }
                    }
                }
                WaitStatus::Stopped(p, sig) => {
                    // A signal for the process: deliver it.
                    let _ = ptrace::cont(p, Some(sig));
                }
                WaitStatus::Exited(p, code) => {
                    self.known.remove(&p);
                    return Ok(Some(Event::Exited(p, ChildExit::Code(code))));
                }
                WaitStatus::Signaled(p, sig, _) => {
                    self.known.remove(&p);
                    return Ok(Some(Event::Exited(p, ChildExit::Signal(sig))));
                }
                _ => {}
            }
        }
    }

    /// Kills every traced process (SIGKILL) and waits until they are gone;
    /// returns how `command` ended.
    pub fn kill_all(&mut self, command: Pid) -> Result<Option<ChildExit>> {
        for p in &self.known {
            let _ = nix::sys::signal::kill(*p, Signal::SIGKILL);
        }
        let mut how = None;
        while !self.known.is_empty() {
            match self.poll()? {
                Some(Event::Exited(p, h)) if p == command => how = Some(h),
                Some(Event::Exited(..)) => {}
                Some(Event::Exiting(p) | Event::Exec(p)) => resume(p),
                Some(Event::Forked { parent, child }) => {
                    self.adopt(child, false);
                    resume(parent);
                }
                None => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        Ok(how)
    }
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

/// Lets a traced process go on (after its exec, fork or exit stop).
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
