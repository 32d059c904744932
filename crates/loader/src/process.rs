//! The traced process: checking a PID, or starting a command stopped right
//! after its exec (under ptrace, so memleak can attach before its first
//! allocation and drain its events when it exits).

use std::collections::{HashMap, HashSet};
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
    /// Stopped at a fork (or vfork) that `thread` of `parent` made:
    /// `child` is held stopped until [`Tracees::adopt`] says whether to
    /// follow it. Continue `thread` with `resume`.
    Forked {
        parent: Pid,
        thread: Pid,
        child: Pid,
    },
    /// Gone.
    Exited(Pid, ChildExit),
}

/// The processes memleak started or followed, under ptrace: it sees their
/// exec, fork and exit, and forwards every other signal. Every thread is
/// traced (a thread may exec or fork): new threads and children are
/// attached by the kernel before they run.
///
/// A command memleak starts is traced from its exec (PTRACE_TRACEME); a
/// running process (`-p`) is seized (PTRACE_SEIZE), which leaves it
/// running, reports its group-stops as such (they are kept with
/// PTRACE_LISTEN, so job control works) and lets memleak detach at the end.
#[derive(Default)]
pub struct Tracees {
    /// Traced threads and the process of each.
    threads: HashMap<Pid, Pid>,
    /// New tasks (threads or children) whose first stop came before the
    /// event announcing them.
    stopped_unannounced: HashSet<Pid>,
    /// New children announced and decided on, whose first stop has not come
    /// yet: true to follow, false to let go.
    awaited: HashMap<Pid, bool>,
    /// New threads announced whose first stop has not come yet.
    awaited_threads: HashSet<Pid>,
    /// Attached with PTRACE_SEIZE (memleak detaches at the end).
    seized: bool,
}

/// The signals that stop a process (a group-stop).
fn is_stop_signal(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
    )
}

/// The ptrace options: exit, exec and new threads always; forks when
/// asked.
fn options(forks: bool, command: bool) -> ptrace::Options {
    let mut o = ptrace::Options::PTRACE_O_TRACEEXIT
        | ptrace::Options::PTRACE_O_TRACEEXEC
        | ptrace::Options::PTRACE_O_TRACECLONE;
    if command {
        // memleak started it: it does not outlive memleak.
        o |= ptrace::Options::PTRACE_O_EXITKILL;
    }
    if forks {
        o |= ptrace::Options::PTRACE_O_TRACEFORK | ptrace::Options::PTRACE_O_TRACEVFORK;
    }
    o
}

impl Tracees {
    /// Traces the command `spawn_stopped` started; `forks`: report its forks.
    pub fn new(command: Pid, forks: bool) -> Result<Tracees> {
        ptrace::setoptions(command, options(forks, true)).context("ptrace options")?;
        let mut t = Tracees::default();
        t.threads.insert(command, command);
        Ok(t)
    }

    /// Seizes every thread of the running process `pid` (it keeps
    /// running); `forks`: report its forks.
    pub fn seize(pid: Pid, forks: bool) -> Result<Tracees> {
        let mut t = Tracees {
            seized: true,
            ..Tracees::default()
        };
        // Threads may start meanwhile: seize until none is new (those the
        // seized ones start are attached by the kernel).
        loop {
            let mut new = 0;
            let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
                .with_context(|| format!("listing the threads of process {pid}"))?;
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let tid = Pid::from_raw(tid);
                if t.threads.contains_key(&tid) {
                    continue;
                }
                match ptrace::seize(tid, options(forks, false)) {
                    Ok(()) => {
                        t.threads.insert(tid, pid);
                        new += 1;
                    }
                    // The thread ended meanwhile.
                    Err(nix::errno::Errno::ESRCH) if tid != pid => {}
                    Err(e) => {
                        t.detach_all();
                        return Err(anyhow!(e)).with_context(|| {
                            format!("seizing thread {tid} of process {pid} (is a debugger or strace attached?)")
                        });
                    }
                }
            }
            if new == 0 {
                return Ok(t);
            }
        }
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
    /// signal that stopped it.
    fn start(&mut self, child: Pid, follow: bool) {
        if follow {
            self.threads.insert(child, child);
            let _ = ptrace::cont(child, None);
        } else {
            let _ = ptrace::detach(child, None);
        }
    }

    /// Processes traced now.
    pub fn count(&self) -> usize {
        self.threads.iter().filter(|(t, p)| t == p).count()
    }

    /// A new task's first stop, or a thread announced by its creator.
    fn new_task_stopped(&mut self, tid: Pid) {
        if self.awaited_threads.remove(&tid) {
            let _ = ptrace::cont(tid, None);
        } else if let Some(follow) = self.awaited.remove(&tid) {
            self.start(tid, follow);
        } else {
            self.stopped_unannounced.insert(tid);
        }
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
            if let Some(ev) = self.on_status(status) {
                return Ok(Some(ev));
            }
        }
    }

    /// Acts on one wait status; returns what the caller must handle.
    fn on_status(&mut self, status: WaitStatus) -> Option<Event> {
        match status {
            WaitStatus::PtraceEvent(tid, _, libc::PTRACE_EVENT_EXIT) => {
                let pid = self.threads.get(&tid).copied().unwrap_or(tid);
                if tid == pid {
                    return Some(Event::Exiting(pid));
                }
                let _ = ptrace::cont(tid, None);
            }
            WaitStatus::PtraceEvent(pid, _, libc::PTRACE_EVENT_EXEC) => {
                // The other threads are gone; the one that called execve
                // took the process's pid.
                self.threads.retain(|t, p| *p != pid || *t == pid);
                self.threads.insert(pid, pid);
                return Some(Event::Exec(pid));
            }
            WaitStatus::PtraceEvent(tid, _, libc::PTRACE_EVENT_CLONE) => {
                let pid = self.threads.get(&tid).copied().unwrap_or(tid);
                if let Ok(new) = ptrace::getevent(tid) {
                    let new = Pid::from_raw(new as i32);
                    self.threads.insert(new, pid);
                    if self.stopped_unannounced.remove(&new) {
                        let _ = ptrace::cont(new, None);
                    } else {
                        self.awaited_threads.insert(new);
                    }
                }
                let _ = ptrace::cont(tid, None);
            }
            WaitStatus::PtraceEvent(tid, _, ev)
                if ev == libc::PTRACE_EVENT_FORK || ev == libc::PTRACE_EVENT_VFORK =>
            {
                let parent = self.threads.get(&tid).copied().unwrap_or(tid);
                match ptrace::getevent(tid) {
                    Ok(child) => {
                        return Some(Event::Forked {
                            parent,
                            thread: tid,
                            child: Pid::from_raw(child as i32),
                        })
                    }
                    Err(_) => {
                        let _ = ptrace::cont(tid, None);
                    }
                }
            }
            WaitStatus::PtraceEvent(tid, sig, libc::PTRACE_EVENT_STOP) => {
                if !self.threads.contains_key(&tid) || self.awaited_threads.contains(&tid) {
                    // A new task's first stop (seized family).
                    self.new_task_stopped(tid);
                } else if is_stop_signal(sig) {
                    // A group-stop: stay stopped, but let SIGCONT through.
                    // SAFETY: PTRACE_LISTEN takes no address or data.
                    unsafe {
                        libc::ptrace(libc::PTRACE_LISTEN, tid.as_raw(), 0, 0);
                    }
                } else {
                    let _ = ptrace::cont(tid, None);
                }
            }
            WaitStatus::PtraceEvent(tid, _, _) => {
                let _ = ptrace::cont(tid, None);
            }
            WaitStatus::Stopped(tid, Signal::SIGSTOP)
                if !self.threads.contains_key(&tid) || self.awaited_threads.contains(&tid) =>
            {
                // A new task's first stop (a family traced from its exec).
                self.new_task_stopped(tid);
            }
            WaitStatus::Stopped(tid, sig) => {
                // A signal for the process: deliver it.
                let _ = ptrace::cont(tid, Some(sig));
            }
            WaitStatus::Exited(tid, code) => return self.gone(tid, ChildExit::Code(code)),
            WaitStatus::Signaled(tid, sig, _) => return self.gone(tid, ChildExit::Signal(sig)),
            _ => {}
        }
        None
    }

    /// A traced thread is gone; the process, when it was its last.
    fn gone(&mut self, tid: Pid, how: ChildExit) -> Option<Event> {
        let pid = self.threads.remove(&tid).unwrap_or(tid);
        if tid != pid {
            return None;
        }
        self.threads.retain(|_, p| *p != pid);
        Some(Event::Exited(pid, how))
    }

    /// Lets go of every traced thread (`-p`): each is stopped
    /// (PTRACE_INTERRUPT), and detached with the signal it was about to
    /// get, so that none is lost; processes stopped by job control stay
    /// stopped.
    pub fn detach_all(&mut self) {
        if !self.seized {
            return;
        }
        let mut left: HashSet<Pid> = self.threads.keys().copied().collect();
        for tid in &left {
            let _ = ptrace::interrupt(*tid);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !left.is_empty() && std::time::Instant::now() < deadline {
            let status = match wait(
                Pid::from_raw(-1),
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Ok(WaitStatus::StillAlive) => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                Ok(s) => s,
                Err(_) => break,
            };
            let (tid, sig) = match status {
                WaitStatus::Stopped(tid, sig) => (tid, Some(sig)),
                WaitStatus::PtraceEvent(tid, sig, libc::PTRACE_EVENT_STOP)
                    if is_stop_signal(sig) =>
                {
                    // In a group-stop: detached, it stays stopped.
                    (tid, None)
                }
                WaitStatus::PtraceEvent(tid, _, _) => (tid, None),
                WaitStatus::Exited(tid, _) | WaitStatus::Signaled(tid, _, _) => {
                    left.remove(&tid);
                    continue;
                }
                _ => continue,
            };
            let _ = ptrace::detach(tid, sig);
            left.remove(&tid);
        }
        self.threads.clear();
        self.seized = false;
    }

    /// Kills every traced process (SIGKILL) and waits until they are gone;
    /// returns how `command` ended.
    pub fn kill_all(&mut self, command: Pid) -> Result<Option<ChildExit>> {
        for (t, p) in &self.threads {
            if t == p {
                let _ = nix::sys::signal::kill(*p, Signal::SIGKILL);
            }
        }
        let mut how = None;
        while self.count() > 0 {
            match self.poll()? {
                Some(Event::Exited(p, h)) if p == command => how = Some(h),
                Some(Event::Exited(..)) => {}
                Some(Event::Exiting(p) | Event::Exec(p)) => resume(p),
                Some(Event::Forked { thread, child, .. }) => {
                    self.adopt(child, false);
                    resume(thread);
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
