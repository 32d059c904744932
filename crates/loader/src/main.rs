//! `memleak`: attaches uprobes to the allocator of a process or command,
//! keeps its outstanding allocations with DWARF-unwound stacks, and prints
//! the leaking call stacks.
//!
//! `main.rs` wires the pieces: [`cli`] parses options, [`allocator`] finds
//! what to probe, [`probes`] loads and attaches the BPF programs,
//! [`process`] starts or checks the target, [`events`] brings the kernel's
//! few records (stacks it could not finish), [`tracker`] resolves them and
//! keeps the stack table, [`books`] reads the outstanding blocks the kernel
//! keeps, and [`report`] prints them.

mod allocator;
mod books;
mod cli;
mod events;
mod features;
mod linker;
mod output;
mod probes;
mod process;
mod procfs;
mod procs;
mod progress;
mod recording;
mod replay;
mod report;
mod rules;
mod sources;
mod tracker;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::MapCore;
use log::{info, warn};
use memleak_unwind_arch::{AnyUnwinder, ElfFile};

use crate::books::Books;
use crate::cli::{Options, Parsed, Target};
use crate::events::{EventSource, PerfBufferSource, RingBufferSource};
use crate::linker::Linker;
use crate::output::{Output, Written};
use crate::process::{ChildExit, Tracees};
use crate::procs::{Proc, Procs};
use crate::tracker::Tracker;

/// The signal that asked memleak to stop (0: none yet).
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    STOP.store(sig, Ordering::SeqCst);
}

fn install_signal_handlers() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SIGHUP too: a closed terminal or ssh session ends the run with its
    // report, like Ctrl-C. Stop signals (SIGTSTP, SIGSTOP) keep their
    // default: the run goes on after SIGCONT.
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &act) }.context("installing signal handlers")?;
    }
    Ok(())
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(level)
        .format_timestamp(None)
        .target(env_logger::Target::Stderr);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    let _ = b.try_init();
}

/// Handles every record available now (none waited for beyond `timeout`).
fn pump(
    source: &mut dyn EventSource,
    procs: &mut Procs,
    books: &Books,
    timeout: Duration,
) -> Result<()> {
    let mut wait = timeout;
    while let Some(rec) = source.recv(wait)? {
        procs.handle(&rec, books);
        wait = Duration::ZERO;
    }
    Ok(())
}

/// Everything the kernel sent so far, handled: the books are then complete.
fn settle(source: &mut dyn EventSource, procs: &mut Procs, books: &Books) -> Result<()> {
    source.sync()?;
    pump(source, procs, books, Duration::ZERO)
}

/// Why tracing ended.
#[derive(Clone, Copy)]
enum End {
    /// The command ended (with -- CMD), and every child followed with -f.
    Exited(ChildExit),
    /// The process of -p ended.
    PidExited,
    /// SIGINT, SIGTERM or SIGHUP.
    Interrupted(i32),
    /// COUNT reports were written, or the reader of the reports went away.
    Done,
}

/// What finds and probes a process's allocator, and builds its unwinder.
struct Prober<'a> {
    opts: &'a Options,
    machine: u16,
}

impl Prober<'_> {
    fn unwinder(&self) -> AnyUnwinder {
        AnyUnwinder::for_machine(self.machine, self.opts.unwind, self.opts.max_frames)
            .expect("checked at start")
    }

    /// Finds the allocator of `exe` (not started yet, or just exec'd: its
    /// shared libraries are not mapped) and probes it for `pid`. Probes of
    /// another allocator (before an exec) are detached first; those of the
    /// same one stay.
    fn probe_image(&self, probes: &mut probes::Probes, pid: i32, exe: &Path) -> Result<()> {
        let elf = ElfFile::open(&exe.to_string_lossy())?;
        if elf.machine() != self.machine {
            bail!(
                "process {pid} executed {}, a program for another machine ({}): memleak cannot follow it",
                exe.display(),
                elf.machine()
            );
        }
        let alloc = allocator::find(
            exe,
            None,
            None,
            procfs::own_root(pid).as_deref(),
            self.opts.obj.as_deref(),
            &self.opts.symbol_prefix,
            self.opts.mmap,
        )?;
        if !probes.has(&alloc, pid) {
            probes.detach_pid(pid);
        }
        let n = probes.attach(&alloc, pid)?;
        info!(
            "process {pid}: {} ({n} probes on {})",
            exe.display(),
            alloc.path.display()
        );
        Ok(())
    }
}

/// Watches the dynamic linker of process `pid`, running `exe`, where it has
/// one that announces dlclose (see `linker`); a failure only loses that.
fn watch_linker(
    probes: &mut probes::Probes,
    books: &Books,
    tracker: &mut Tracker,
    pid: i32,
    exe: &Path,
) {
    tracker.linker_watched = false;
    let _ = books.set_r_debug(pid as u32, 0);
    let Some(linker) = Linker::of(exe, pid) else {
        return;
    };
    let watched = linker
        .r_debug_in(pid)
        .and_then(|addr| books.set_r_debug(pid as u32, addr))
        .and_then(|()| probes.attach_linker(&linker, pid));
    match watched {
        Ok(()) => tracker.linker_watched = true,
        Err(e) => warn!(
            "process {pid}: {e:#}; frames in libraries it unloads before memleak sees them mapped will be unknown"
        ),
    }
}

/// Traces as `opts` says and returns memleak's exit status: with a command,
/// the command's (see `--help`: "Exit status").
fn run(opts: Options) -> Result<u8> {
    probes::preflight()?;
    memleak_unwind_arch::set_debug_dirs(opts.debug_dirs.clone());
    let mut output = Output::open(
        opts.output.as_deref(),
        matches!(opts.target, Target::Command(_)),
        opts.format.is_document(),
    )?;
    let (pid, exe, child) = match &opts.target {
        Target::Pid(pid) => (*pid, process::check_pid(*pid)?, None),
        Target::Command(cmd) => {
            let (child, exe) = process::spawn_stopped(cmd)?;
            (child.as_raw(), exe, Some(child))
        }
    };
    // A process in a container may name files memleak's root does not
    // reach: they are opened through /proc/PID (see procfs).
    let exe = procfs::exe(pid, &exe);
    // The command is traced from its exec; a running process is seized
    // (it keeps running): memleak sees exec and fork in both.
    let mut tracees = match child {
        Some(c) => Some(Tracees::new(c, true)?),
        None => match Tracees::seize(nix::unistd::Pid::from_raw(pid), true) {
            Ok(t) => Some(t),
            Err(e) if opts.follow_forks => return Err(e.context("-f needs to trace the process")),
            Err(e) => {
                warn!("{e:#}: its execs and forks are not followed");
                None
            }
        },
    };
    let maps = procfs::maps(pid).ok();
    let alloc = allocator::find(
        &exe,
        maps.as_deref(),
        match opts.target {
            Target::Pid(p) => Some(p),
            Target::Command(_) => None,
        },
        procfs::own_root(pid).as_deref(),
        opts.obj.as_deref(),
        &opts.symbol_prefix,
        opts.mmap,
    )?;
    let exe_elf = ElfFile::open(&exe.to_string_lossy())?;
    let unwinder = AnyUnwinder::for_machine(exe_elf.machine(), opts.unwind, opts.max_frames)
        .ok_or_else(|| {
            anyhow!(
                "{}: unsupported machine {} (memleak unwinds x86_64, aarch64 and mips32)",
                exe.display(),
                exe_elf.machine()
            )
        })?;
    let prober = Prober {
        opts: &opts,
        machine: exe_elf.machine(),
    };
    let features = features::Features::probe();
    let variant = features.choose(opts.events, opts.read_helper)?;
    let params = probes::LoadParams {
        variant,
        pc_mask: unwinder.code_address_mask(),
        multi: features.choose_multi(opts.attach_multi)?,
    };
    let big_endian = exe_elf.endian() == gimli::RunTimeEndian::Big;
    let mut recorder = match &opts.record {
        Some(path) => Some(recording::Recorder::create(
            path,
            &opts,
            exe_elf.machine(),
            big_endian,
        )?),
        None => None,
    };
    let obj = probes::load(&opts, &params)?;
    let books = Books::new(&obj)?;
    let events = obj
        .maps()
        .find(|m| m.name() == memleak_bpf::map::EVENTS)
        .ok_or_else(|| anyhow!("BPF map `events` missing"))
        .and_then(|m| libbpf_rs::MapHandle::try_from(&m).context("the event buffer"))?;
    // Records wait in memory for the main thread: twice the kernel's buffer.
    let queue_bytes = (opts.ringbuf_mb as usize) << 21;
    let mut source: Box<dyn EventSource> = match variant.transport {
        memleak_bpf::Transport::RingBuffer => {
            Box::new(RingBufferSource::start(events, queue_bytes)?)
        }
        memleak_bpf::Transport::PerfBuffer => {
            // --ringbuf-mb in all, split over the CPUs, in pages (a power of two).
            let cpus = libbpf_rs::num_possible_cpus().unwrap_or(1).max(1);
            let pages = ((opts.ringbuf_mb as usize) << 20) / 4096 / cpus;
            let pages = pages.next_power_of_two().clamp(8, 1024);
            Box::new(PerfBufferSource::start(events, pages, queue_bytes)?)
        }
    };
    let mut probes = probes::Probes::new(obj, params.multi);
    let probe_count = probes.attach(&alloc, pid)?;
    install_signal_handlers()?;

    // The thread that resolves misses: while it is behind, every allocation
    // on an uncached path sends a stack copy. A traced program with many
    // busy threads must not starve it.
    // SAFETY: setpriority on the calling thread only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } != 0 {
        log::debug!("could not raise the main thread's priority");
    }
    let mut tracker = Tracker::new(pid, unwinder, big_endian, opts.trace);
    tracker.keep_copies = recorder.is_some();
    tracker.refresh_modules();
    watch_linker(&mut probes, &books, &mut tracker, pid, &exe);
    let mut procs = Procs::new(pid, exe.clone(), tracker);
    // Children forked and not followed (without -f).
    let mut unfollowed = 0u64;

    match &opts.target {
        Target::Pid(_) => eprintln!(
            "Attaching to pid {pid}{} ({} probes on {}), Ctrl-C to quit.",
            procs
                .root()
                .ns_pid
                .map(|n| format!(" (pid {n} in its namespace)"))
                .unwrap_or_default(),
            probe_count,
            procfs::shown(&alloc.path.to_string_lossy())
        ),
        Target::Command(_) => info!(
            "tracing {} ({} probes on {}){}",
            exe.display(),
            probe_count,
            alloc.path.display(),
            if opts.follow_forks {
                ", and the processes it forks"
            } else {
                "; processes it forks are not followed (-f follows them)"
            }
        ),
    }
    if let Some(child) = child {
        process::resume(child);
    }

    let interval = match (&opts.target, opts.interval) {
        (_, Some(s)) => Some(Duration::from_secs(s)),
        (Target::Pid(_), None) => Some(Duration::from_secs(5)),
        (Target::Command(_), None) => None,
    };
    // INTERVAL is bounded by the options (136 years): no overflow here.
    let mut next_report = interval.and_then(|i| Instant::now().checked_add(i));
    let mut reports = 0u64;
    let mut progress = progress::Progress::new(opts.verbose, opts.trace);
    let mut report = |procs: &mut Procs,
                      progress: &mut Option<progress::Progress>,
                      source: &mut dyn EventSource,
                      probes: &probes::Probes,
                      unfollowed: u64,
                      is_final: bool,
                      number: u64|
     -> Result<Written> {
        settle(source, procs, &books)?;
        let counters = probes.counters();
        if let Some(p) = progress.as_mut() {
            p.clear();
        }
        let mut snaps = Vec::new();
        let mut lost = 0;
        let many = opts.follow_forks;
        for p in procs.iter_mut() {
            p.tracker.snapshot(&books, opts.mmap)?;
            let losses = report::losses(&p.tracker, &counters, probes.prog_misses(), source.lost());
            lost = lost.max(losses.lost_events);
            let unfollowed = (!opts.follow_forks && p.parent.is_none()).then_some(unfollowed);
            if let Some(r) = recorder.as_mut() {
                r.add(p, &losses, is_final, unfollowed);
                continue;
            }
            p.growth
                .update(p.tracker.totals(u64::from(opts.sample_bytes)));
            let (heap, mmap) = p.tracker.groups(
                &p.growth,
                report::Shown {
                    sample_bytes: u64::from(opts.sample_bytes),
                    older_ns: opts.older_ms.saturating_mul(1_000_000),
                    // Documents (flame graphs, profiles) hold every stack.
                    top: if opts.format.is_document() {
                        usize::MAX
                    } else {
                        opts.top
                    },
                    allocs: opts.show_allocs,
                },
            );
            let unix_ms = report::unix_ms();
            snaps.push(report::Snapshot {
                is_final,
                pid: p.pid,
                exe: procfs::shown(&p.exe.to_string_lossy()),
                parent: p.parent,
                exit: p.exit.map(|e| e.to_string()),
                section: many,
                unfollowed,
                ns_pid: p.ns_pid,
                arch: p.tracker.arch_name().to_string(),
                time: report::wall_clock(unix_ms),
                unix_ms,
                mappings: p.tracker.mapping_infos(),
                losses,
                heap,
                mmap,
                show_mmap: opts.mmap,
                show_allocs: opts.show_allocs,
                suspects: p.growth.suspects(),
                sample_bytes: u64::from(opts.sample_bytes),
            });
        }
        if lost > 0 {
            warn!("{lost} events lost: the report may be incomplete");
        }
        match recorder.as_mut() {
            Some(r) => {
                if is_final {
                    eprintln!("{}", r.finish()?);
                } else {
                    r.write()?;
                }
                Ok(Written::Done)
            }
            None => output.write(
                &report::render(&snaps, opts.format),
                (!is_final).then_some(number),
            ),
        }
    };
    let end = loop {
        pump(
            source.as_mut(),
            &mut procs,
            &books,
            Duration::from_millis(50),
        )?;
        if let Some(p) = progress.as_mut() {
            p.tick(|| {
                let counters = probes.counters();
                let lost = memleak_bpf::Counter::ALL
                    .iter()
                    .filter(|c| c.is_loss())
                    .map(|c| counters[*c as usize])
                    .sum::<u64>()
                    + source.lost();
                progress::Line {
                    counters: counters.to_vec(),
                    misses_resolved: procs.iter().map(|p| p.tracker.counts.misses_resolved).sum(),
                    stacks: procs.iter().map(|p| p.tracker.stacks.len()).sum(),
                    lost,
                }
            });
        }
        let sig = STOP.load(Ordering::SeqCst);
        if sig != 0 {
            info!("interrupted by signal {sig}: final report");
            break End::Interrupted(sig);
        }
        let mut ended = None;
        match tracees.as_mut() {
            Some(t) => {
                while let Some(ev) = t.poll()? {
                    match ev {
                        process::Event::Exec(p) => {
                            // Everything of the old image first; then its
                            // books go (its memory went with it) and the new
                            // one is probed.
                            settle(source.as_mut(), &mut procs, &books)?;
                            let raw = p.as_raw();
                            let new_exe = std::fs::read_link(format!("/proc/{raw}/exe"))
                                .with_context(|| format!("process {raw} after its exec"))?;
                            let new_exe = procfs::exe(raw, &new_exe);
                            let (bytes, blocks) = books.forget_process(raw as u32)?;
                            prober.probe_image(&mut probes, raw, &new_exe)?;
                            if let Some(proc) = procs.get_mut(raw) {
                                info!(
                                    "process {raw}: {} executed {}: {bytes} bytes in {blocks} blocks \
                                     of the old image dropped",
                                    proc.exe.display(),
                                    new_exe.display()
                                );
                                proc.tracker.exec(&books);
                                proc.exe = new_exe.clone();
                                watch_linker(&mut probes, &books, &mut proc.tracker, raw, &new_exe);
                            }
                            process::resume(p);
                        }
                        process::Event::Forked {
                            parent,
                            thread,
                            child,
                        } => {
                            let (praw, craw) = (parent.as_raw(), child.as_raw());
                            if opts.follow_forks {
                                // The child runs its parent's image: the same
                                // allocator, probed for the child before it
                                // runs.
                                let Some(pp) = procs.get(praw) else {
                                    t.adopt(child, false);
                                    process::resume(thread);
                                    continue;
                                };
                                let exe = pp.exe.clone();
                                let mut tracker = pp.tracker.fork(craw, prober.unwinder(), &books);
                                prober.probe_image(&mut probes, craw, &exe)?;
                                watch_linker(&mut probes, &books, &mut tracker, craw, &exe);
                                info!("process {praw} forked {craw}: followed");
                                procs.add(Proc {
                                    pid: craw,
                                    exe,
                                    parent: Some(praw),
                                    tracker,
                                    exit: None,
                                    ns_pid: procfs::ns_pid(craw),
                                    growth: Default::default(),
                                });
                                t.adopt(child, true);
                            } else {
                                unfollowed += 1;
                                info!("process {praw} forked {craw}: not followed (-f follows it)");
                                t.adopt(child, false);
                            }
                            process::resume(thread);
                        }
                        process::Event::Exiting(p) => {
                            // Memory is still mapped: take in what is
                            // pending and look at the maps once more.
                            settle(source.as_mut(), &mut procs, &books)?;
                            if let Some(proc) = procs.get_mut(p.as_raw()) {
                                proc.tracker.refresh_modules();
                            }
                            process::resume(p);
                        }
                        process::Event::Exited(p, how) => {
                            let raw = p.as_raw();
                            if let Some(proc) = procs.get_mut(raw) {
                                proc.tracker.process_exited();
                                proc.exit = Some(how);
                                info!("process {raw}: {} {how}", proc.exe.display());
                            }
                            probes.release_pid(raw);
                            // The run ends with the command and every child
                            // followed.
                            if t.count() == 0 {
                                if let Some(how) = procs.root().exit {
                                    ended = Some(match child {
                                        Some(_) => End::Exited(how),
                                        None => End::PidExited,
                                    });
                                }
                            }
                        }
                    }
                }
            }
            None => {
                if !process::alive(pid) {
                    procs.root_mut().tracker.process_exited();
                    info!("process {pid} exited");
                    ended = Some(End::PidExited);
                }
            }
        }
        if let Some(end) = ended {
            break end;
        }
        if let (Some(at), Some(iv)) = (next_report, interval) {
            if Instant::now() >= at {
                reports += 1;
                let last = opts.count.is_some_and(|c| reports >= c);
                for p in procs.iter_mut() {
                    p.tracker.refresh_modules();
                    p.tracker.forget_unmapped_rules(&books);
                }
                let written = report(
                    &mut procs,
                    &mut progress,
                    source.as_mut(),
                    &probes,
                    unfollowed,
                    last,
                    reports,
                )?;
                if last || written == Written::Closed {
                    break End::Done;
                }
                // A run stopped (SIGSTOP) for longer than the interval
                // catches up with one report, not one per missed interval.
                let mut next = at.checked_add(iv);
                while let Some(n) = next.filter(|n| *n <= Instant::now()) {
                    next = n.checked_add(iv);
                }
                next_report = next;
            }
        }
    };
    for p in procs.iter() {
        log::debug!("rule cache of {}: {:?}", p.pid, p.tracker.cache_stats());
    }
    if !matches!(end, End::Done) {
        report(
            &mut procs,
            &mut progress,
            source.as_mut(),
            &probes,
            unfollowed,
            true,
            reports + 1,
        )?;
    }
    probes.detach_in_background();
    // With a command: its status. Processes that still run (memleak was
    // interrupted, or wrote its COUNT reports) are killed: memleak started
    // them and does not leave them running untraced.
    let killed = match (end, child, tracees.as_mut()) {
        (End::Interrupted(_) | End::Done, Some(c), Some(t)) => t.kill_all(c)?,
        (_, None, Some(t)) => {
            t.detach_all();
            None
        }
        _ => None,
    };
    if let Some(how) = killed {
        info!("{} {how} (by memleak)", procs.root().exe.display());
    }
    Ok(match end {
        End::Exited(how) => how.status(),
        End::Interrupted(sig) if child.is_some() => 128u8.wrapping_add(sig as u8),
        End::Interrupted(_) | End::PidExited | End::Done => 0,
    })
}

/// An error and its causes on one line; a cause that repeats the end of
/// the message before it (an OS error quoted by its wrapper) is left out.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn main() -> ExitCode {
    let parsed = match cli::parse(std::env::args_os()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#} (see memleak --help)");
            return ExitCode::from(2);
        }
    };
    let opts = match parsed {
        Parsed::Help => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Parsed::Version => {
            println!("memleak {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Parsed::Run(o) => *o,
        Parsed::Report(o) => {
            init_logging(o.verbose);
            return match replay::run(&o) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}", error_line(&e));
                    ExitCode::FAILURE
                }
            };
        }
    };
    init_logging(opts.verbose);
    match run(opts) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}
