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
mod output;
mod probes;
mod process;
mod report;
mod rules;
mod tracker;

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
use crate::output::{Output, Written};
use crate::process::{ChildExit, ChildState};
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
    tracker: &mut Tracker,
    books: &Books,
    timeout: Duration,
) -> Result<()> {
    let mut wait = timeout;
    while let Some(rec) = source.recv(wait)? {
        tracker.handle(&rec, books);
        wait = Duration::ZERO;
    }
    Ok(())
}

/// Everything the kernel sent so far, handled: the books are then complete.
fn settle(source: &mut dyn EventSource, tracker: &mut Tracker, books: &Books) -> Result<()> {
    source.sync()?;
    pump(source, tracker, books, Duration::ZERO)
}

/// Why tracing ended.
#[derive(Clone, Copy)]
enum End {
    /// The command ended (with -- CMD).
    Exited(ChildExit),
    /// The process of -p ended.
    PidExited,
    /// SIGINT, SIGTERM or SIGHUP.
    Interrupted(i32),
    /// COUNT reports were written, or the reader of the reports went away.
    Done,
}

/// Traces as `opts` says and returns memleak's exit status: with a command,
/// the command's (see `--help`: "Exit status").
fn run(opts: Options) -> Result<u8> {
    probes::preflight()?;
    let mut output = Output::open(
        opts.output.as_deref(),
        matches!(opts.target, Target::Command(_)),
    )?;
    let (pid, mut exe, child) = match &opts.target {
        Target::Pid(pid) => (*pid, process::check_pid(*pid)?, None),
        Target::Command(cmd) => {
            let (child, exe) = process::spawn_stopped(cmd)?;
            (child.as_raw(), exe, Some(child))
        }
    };
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok();
    let alloc = allocator::find(
        &exe,
        maps.as_deref(),
        match opts.target {
            Target::Pid(p) => Some(p),
            Target::Command(_) => None,
        },
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
    let features = features::Features::probe();
    let variant = features.choose(opts.events, opts.read_helper)?;
    let params = probes::LoadParams {
        variant,
        pc_mask: unwinder.code_address_mask(),
        multi: features.choose_multi(opts.attach_multi)?,
    };
    let big_endian = exe_elf.endian() == gimli::RunTimeEndian::Big;
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
    tracker.refresh_modules();

    match &opts.target {
        Target::Pid(_) => eprintln!(
            "Attaching to pid {pid} ({} probes on {}), Ctrl-C to quit.",
            probe_count,
            alloc.path.display()
        ),
        Target::Command(_) => info!(
            "tracing {} ({} probes on {})",
            exe.display(),
            probe_count,
            alloc.path.display()
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
    let mut report = |tracker: &mut Tracker,
                      source: &mut dyn EventSource,
                      probes: &probes::Probes,
                      is_final: bool|
     -> Result<Written> {
        settle(source, tracker, &books)?;
        tracker.snapshot(&books, opts.mmap)?;
        let losses = report::losses(
            tracker,
            &probes.counters(),
            probes.prog_misses(),
            source.lost(),
        );
        if losses.lost_events > 0 {
            warn!(
                "{} events lost: the report may be incomplete",
                losses.lost_events
            );
        }
        output.write(&report::render(tracker, &opts, &losses, is_final, pid))
    };
    let end = loop {
        pump(
            source.as_mut(),
            &mut tracker,
            &books,
            Duration::from_millis(50),
        )?;
        let sig = STOP.load(Ordering::SeqCst);
        if sig != 0 {
            info!("interrupted by signal {sig}: final report");
            break End::Interrupted(sig);
        }
        match child {
            Some(c) => match process::poll_child(c)? {
                ChildState::Running => {}
                ChildState::Exec => {
                    // Everything of the old image first; then its books go
                    // (its memory went with it) and the new one is probed.
                    settle(source.as_mut(), &mut tracker, &books)?;
                    let new_exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                        .with_context(|| format!("process {pid} after its exec"))?;
                    let new_elf = ElfFile::open(&new_exe.to_string_lossy())?;
                    if new_elf.machine() != exe_elf.machine() {
                        bail!(
                            "{} executed {}, a program for another machine ({}): memleak cannot follow it",
                            exe.display(),
                            new_exe.display(),
                            new_elf.machine()
                        );
                    }
                    probes.detach_pid(pid);
                    let (bytes, blocks) = books.forget_process(pid as u32)?;
                    tracker.exec(&books);
                    let alloc = allocator::find(
                        &new_exe,
                        None,
                        None,
                        opts.obj.as_deref(),
                        &opts.symbol_prefix,
                        opts.mmap,
                    )?;
                    let n = probes.attach(&alloc, pid)?;
                    info!(
                        "{} executed {}: {bytes} bytes in {blocks} blocks of the old image dropped; \
                         {n} probes on {}",
                        exe.display(),
                        new_exe.display(),
                        alloc.path.display()
                    );
                    exe = new_exe;
                    process::resume(c);
                }
                ChildState::Exiting => {
                    // Memory is still mapped: take in what is pending and
                    // look at the maps once more.
                    settle(source.as_mut(), &mut tracker, &books)?;
                    tracker.refresh_modules();
                    process::resume(c);
                }
                ChildState::Exited(how) => {
                    tracker.process_exited();
                    info!("{} {how}", exe.display());
                    break End::Exited(how);
                }
            },
            None => {
                if !process::alive(pid) {
                    tracker.process_exited();
                    info!("process {pid} exited");
                    break End::PidExited;
                }
            }
        }
        if let (Some(at), Some(iv)) = (next_report, interval) {
            if Instant::now() >= at {
                reports += 1;
                let last = opts.count.is_some_and(|c| reports >= c);
                tracker.refresh_modules();
                tracker.forget_unmapped_rules(&books);
                let written = report(&mut tracker, source.as_mut(), &probes, last)?;
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
    log::debug!("rule cache: {:?}", tracker.cache_stats());
    if !matches!(end, End::Done) {
        report(&mut tracker, source.as_mut(), &probes, true)?;
    }
    drop(probes);
    // With a command: its status. One that still runs (memleak was
    // interrupted, or wrote its COUNT reports) is killed: memleak started it
    // and does not leave it running untraced.
    let killed = match (end, child) {
        (End::Interrupted(_) | End::Done, Some(c)) => Some(process::kill(c)?),
        _ => None,
    };
    if let Some(how) = killed {
        info!("{} {how} (by memleak)", exe.display());
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
