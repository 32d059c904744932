//! Command-line options, mirroring BCC's and libbpf-tools' memleak where they
//! make sense.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use memleak_bpf::{Transport, UserRead};
use memleak_unwind_arch::UnwindMode;

use crate::features::Choice;

pub const HELP: &str = "\
memleak: find memory leaks in a running process or a command, with full
DWARF-unwound, symbolized stacks (also for code built without frame pointers).

USAGE:
    memleak [OPTIONS] -p PID [INTERVAL [COUNT]]
    memleak [OPTIONS] [INTERVAL [COUNT]] -- CMD [ARGS...]
    memleak [OPTIONS] -c 'CMD ARGS' [INTERVAL [COUNT]]
    memleak record --output FILE [OPTIONS] (-p PID | -- CMD [ARGS...])
    memleak report FILE [REPORT OPTIONS]

With -p, memleak attaches to a running process, prints the top stacks with
outstanding allocations every INTERVAL seconds (default 5) and a final
report on Ctrl-C or when the process exits. With a command, it traces the
command from its first allocation and prints the final report (what is still
allocated) when the command exits; INTERVAL adds periodic reports. COUNT
stops after that many reports. INTERVAL is 1 to 4294967295 seconds, COUNT
at least 1.

An exec replaces the traced program's image: its blocks are dropped and the
new image's allocator is probed before it runs (with -p too: memleak holds
the process with ptrace, which it releases at the end; job control works).

Reports go to stdout with -p, to stderr with a command (never into the
command's own stdout), or to the file --output names.

Exit status: with a command, memleak exits with the command's status (128 +
the signal number when a signal killed it, as shells do); 1 when memleak
itself fails, 2 for bad options. SIGINT, SIGTERM and SIGHUP end tracing with
the final report: with -p memleak detaches and exits 0; with a command that
still runs, memleak kills it (SIGKILL) after the report and exits with 128 +
the number of the signal memleak received (130 for Ctrl-C); after COUNT
reports, a command still running is killed and memleak exits 0. Stopping
and continuing memleak (Ctrl-Z, fg, strace) never ends the run.

`memleak record` traces as above but writes each report into FILE, a
recording (rewritten whole at each INTERVAL: a killed recorder leaves the
last complete one), instead of printing it. It holds the stacks as the
device unwound them, the build ID of every file they pass through, and
the registers and stack bytes of the walks the device could not finish.
`memleak report FILE` prints it on any machine, for any architecture,
with the files and debug info found there (see REPORT OPTIONS).

OPTIONS:
    -p, --pid PID            Trace the running process PID
    -c, --command CMD        Run CMD (split on whitespace) under tracing
    -f, --follow-forks       Also trace the processes the target forks, and
                             theirs: each with its own books and its own
                             section of the report (JSON: an object per
                             process); the run ends when all have exited.
                             Without -f, the report says how many were not
                             followed
    -T, --top N              Stacks to show per report [default: 10]
    -z, --min-size BYTES     Ignore allocations smaller than BYTES
    -Z, --max-size BYTES     Ignore allocations larger than BYTES
    -o, --older MS           Only report allocations older than MS milliseconds
    -s, --sample-rate N      Trace every Nth allocation of each thread (exactly)
        --sample-bytes N     Sample by bytes, as tcmalloc and heapprofd do: an
                             allocation of S bytes is traced with probability
                             1 - exp(-S/N) (decided in the kernel: the others
                             cost no stack walk); reports scale each sampled
                             block by 1/p and say they are estimates
    -a, --show-allocs        List the individual outstanding allocations
    -t, --trace              Print every allocation and free on stderr
    -O, --obj PATH           The allocator library (default: the one the program
                             resolves malloc to: libc, jemalloc, or the program)
    -S, --symbol-prefix P    Allocator symbol prefix, e.g. je_ for je_malloc
        --mmap               Also track mmap/munmap, as a separate category
        --debug-dir DIR      Look for separate debug files in DIR too (by build
                             ID, DIR/.build-id/xx/yyyy.debug, and by
                             .gnu_debuglink, CRC checked), before
                             /usr/lib/debug; repeatable
        --format FORMAT      text, json (one JSON object per line and report),
                             folded (collapsed stacks: frames from the
                             outermost, `;`-joined, then the bytes), svg (a
                             flame graph of the outstanding bytes) or pprof
                             (a gzip'd pprof heap profile, for go tool pprof,
                             Pyroscope, Parca, Grafana). folded, svg and
                             pprof write each periodic report to FILE.1,
                             FILE.2, ... and the final one to FILE; svg and
                             pprof need --output
        --output FILE        Write the reports to FILE (created or truncated;
                             `-` is stdout). Each report replaces FILE whole
                             (written beside it, then renamed), so a reader
                             sees every report before it complete, never half
                             of one; a FIFO or device gets each report with
                             one write
        --stack-bytes N      User stack bytes copied per allocation [default: 8192]
        --max-frames N       Deepest stack unwound [default: 64]
        --unwind MODE        auto (CFI; else the function's code: prologue
                             analysis, frame pointers, each checked; else a
                             scan of the stack for return addresses), cfi,
                             cfi-fp (CFI, else frame pointers unchecked), or
                             fp (frame pointers only, as BCC) [default: auto]
        --ringbuf-mb N       Ring buffer size in MiB (stack copies of misses);
                             memleak keeps a queue of twice that in memory
                             [default: 2; 8 with --verify-unwind]
        --max-allocs N       Outstanding blocks the kernel's books hold
                             [default: 131072]
        --max-stacks N       Unique stacks the kernel stores (and N/8 more of
                             over 16 frames) [default: 4096]
        --max-rules N        Unwind rules the kernel caches [default: 8192]
        --verify-unwind      Unwind every allocation both in the kernel and in
                             user space and count disagreements (testing)
        --events KIND        auto, ringbuf (Linux 5.8+) or perfbuf (older
                             kernels) [default: auto, or $MEMLEAK_EVENTS]
        --read-helper KIND   auto, user (bpf_probe_read_user, Linux 5.5+) or
                             legacy (bpf_probe_read) [default: auto, or
                             $MEMLEAK_READ_HELPER]
        --attach KIND        auto, multi (two multi-uprobe links, Linux 6.6+:
                             detaching takes 0.1 s) or single (a link per
                             probe, 0.1 s each) [default: auto, or
                             $MEMLEAK_ATTACH]
    -v, --verbose            More logging on stderr (-v info, -vv debug,
                             -vvv trace); RUST_LOG overrides
    -h, --help               Print this help
    -V, --version            Print the version

REPORT OPTIONS (memleak report FILE):
        --sysroot DIR        Read the device's files under DIR (its root file
                             system with debug info, e.g. Buildroot's staging
                             or Yocto's rootfs-dbg); repeatable, tried in
                             order; without it, the files at their own paths.
                             A file whose build ID is not the recorded one is
                             refused for its module, with a warning
        --debug-dir DIR      Separate debug files (as above); repeatable
        --debuginfod URL     A debuginfod server to fetch debug files (and
                             files no sysroot has) from, by build ID;
                             repeatable, before those of $DEBUGINFOD_URLS.
                             Fetched files are kept in elfutils' cache
                             ($DEBUGINFOD_CACHE_PATH, else
                             ~/.cache/debuginfod_client)
        --format, --output, -T/--top, -o/--older, -a/--show-allocs, --mmap
                             As for a live run (--older defaults to the
                             recorded one)
    -v, --verbose            More logging

The books are kept in the kernel: outstanding blocks, and stacks walked with
unwind rules that memleak caches the first time a call path allocates. Lost
events (a full table or ring buffer, unpaired calls) and truncated stacks are
always counted and printed with each report.
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    /// Brendan Gregg's collapsed stacks.
    Folded,
    /// A flame graph.
    Svg,
    /// A gzip'd pprof profile.
    Pprof,
}

impl Format {
    /// Each report is a document of its own (a file per report), not a
    /// part of a stream.
    pub fn is_document(self) -> bool {
        matches!(self, Format::Folded | Format::Svg | Format::Pprof)
    }

    /// Bytes for a file, not text for a terminal.
    pub fn is_binary(self) -> bool {
        matches!(self, Format::Svg | Format::Pprof)
    }
}

#[derive(Debug, Clone)]
pub enum Target {
    Pid(i32),
    Command(Vec<OsString>),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub interval: Option<u64>,
    pub count: Option<u64>,
    pub top: usize,
    pub min_size: u64,
    pub max_size: u64,
    pub older_ms: u64,
    pub sample_rate: u32,
    /// `--sample-bytes N`: each byte sampled with probability 1/N (0: off).
    pub sample_bytes: u32,
    pub show_allocs: bool,
    /// -f: trace the command's children too.
    pub follow_forks: bool,
    /// --debug-dir, in order.
    pub debug_dirs: Vec<PathBuf>,
    pub trace: bool,
    pub obj: Option<PathBuf>,
    pub symbol_prefix: String,
    pub mmap: bool,
    pub format: Format,
    /// `--output`: None for the default stream, `-` for stdout.
    pub output: Option<PathBuf>,
    pub stack_bytes: u32,
    pub max_frames: usize,
    pub unwind: UnwindMode,
    pub ringbuf_mb: u32,
    pub max_allocs: u32,
    pub max_stacks: u32,
    pub max_rules: u32,
    pub verify_unwind: bool,
    pub events: Choice<Transport>,
    pub read_helper: Choice<UserRead>,
    /// Multi-uprobe links (`Forced(true)`), one link per probe (`Forced(false)`).
    pub attach_multi: Choice<bool>,
    pub verbose: u8,
    /// `memleak record`: the recording to write instead of reports.
    pub record: Option<PathBuf>,
}

/// `memleak report FILE`.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub file: PathBuf,
    pub sysroots: Vec<PathBuf>,
    pub debug_dirs: Vec<PathBuf>,
    /// `--debuginfod` servers (`$DEBUGINFOD_URLS` is added to them).
    pub debuginfod: Vec<String>,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub top: usize,
    pub older_ms: Option<u64>,
    pub show_allocs: bool,
    pub mmap: bool,
    pub verbose: u8,
}

pub enum Parsed {
    Run(Box<Options>),
    Report(Box<ReportOptions>),
    Help,
    Version,
}

fn number<T: std::str::FromStr>(v: OsString, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let s = v.to_string_lossy().into_owned();
    s.parse::<T>()
        .map_err(|e| anyhow::anyhow!("invalid {what} `{s}`: {e}"))
}

fn events(v: &str) -> Result<Choice<Transport>> {
    Ok(match v {
        "auto" => Choice::Auto,
        "ringbuf" => Choice::Forced(Transport::RingBuffer),
        "perfbuf" => Choice::Forced(Transport::PerfBuffer),
        other => bail!("invalid --events `{other}`: use auto, ringbuf or perfbuf"),
    })
}

fn read_helper(v: &str) -> Result<Choice<UserRead>> {
    Ok(match v {
        "auto" => Choice::Auto,
        "user" => Choice::Forced(UserRead::ProbeReadUser),
        "legacy" => Choice::Forced(UserRead::ProbeRead),
        other => bail!("invalid --read-helper `{other}`: use auto, user or legacy"),
    })
}

fn attach(v: &str) -> Result<Choice<bool>> {
    Ok(match v {
        "auto" => Choice::Auto,
        "multi" => Choice::Forced(true),
        "single" => Choice::Forced(false),
        other => bail!("invalid --attach `{other}`: use auto, multi or single"),
    })
}

/// The longest INTERVAL, in seconds.
pub const MAX_INTERVAL: u64 = u32::MAX as u64;

/// A BPF map size: at least 16 entries, at most 2^26.
fn table_size(v: OsString, what: &str) -> Result<u32> {
    let n: u32 = number(v, what)?;
    if !(16..=1 << 26).contains(&n) {
        bail!("{what} must be between 16 and {}", 1u32 << 26);
    }
    Ok(n)
}

fn format(v: OsString) -> Result<Format> {
    Ok(match v.to_string_lossy().as_ref() {
        "text" => Format::Text,
        "json" => Format::Json,
        "folded" => Format::Folded,
        "svg" if cfg!(feature = "flamegraph") => Format::Svg,
        "svg" => bail!(
            "this memleak was built without flame graphs (the `flamegraph` feature): \
             use --format folded (for inferno or flamegraph.pl), or `memleak record` \
             here and `memleak report --format svg` on a host"
        ),
        "pprof" => Format::Pprof,
        other => bail!("invalid --format `{other}`: use text, json, folded, svg or pprof"),
    })
}

/// svg and pprof are files, not text for a terminal.
fn needs_output(format: Format, output: Option<&std::path::Path>) -> Result<()> {
    if format.is_binary() && output.is_none() {
        bail!(
            "--format {} writes a file: give --output FILE (or --output - for stdout)",
            if format == Format::Svg {
                "svg"
            } else {
                "pprof"
            }
        );
    }
    Ok(())
}

fn directory(v: OsString, what: &str) -> Result<PathBuf> {
    let dir = PathBuf::from(v);
    if !dir.is_dir() {
        bail!("{what} {}: not a directory", dir.display());
    }
    Ok(dir)
}

fn output(v: OsString) -> Result<PathBuf> {
    if v.is_empty() {
        bail!("--output needs a file name (or `-` for stdout)");
    }
    Ok(PathBuf::from(v))
}

/// `memleak report FILE [REPORT OPTIONS]` (the arguments after `report`).
fn parse_report(args: Vec<OsString>) -> Result<Parsed> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_iter(std::iter::once(OsString::from("report")).chain(args));
    let mut file = None;
    let mut o = ReportOptions {
        file: PathBuf::new(),
        sysroots: Vec::new(),
        debug_dirs: Vec::new(),
        debuginfod: Vec::new(),
        format: Format::Text,
        output: None,
        top: 10,
        older_ms: None,
        show_allocs: false,
        mmap: false,
        verbose: 0,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("sysroot") => o.sysroots.push(directory(p.value()?, "--sysroot")?),
            Long("debug-dir") => o.debug_dirs.push(directory(p.value()?, "--debug-dir")?),
            Long("debuginfod") => {
                let url = p.value()?.to_string_lossy().into_owned();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("--debuginfod `{url}`: give an http:// or https:// URL");
                }
                o.debuginfod.push(url);
            }
            Long("format") => o.format = format(p.value()?)?,
            Long("output") => o.output = Some(output(p.value()?)?),
            Short('T') | Long("top") => o.top = number(p.value()?, "--top")?,
            Short('o') | Long("older") => o.older_ms = Some(number(p.value()?, "--older")?),
            Short('a') | Long("show-allocs") => o.show_allocs = true,
            Long("mmap") => o.mmap = true,
            Short('v') | Long("verbose") => o.verbose = o.verbose.saturating_add(1),
            Value(v) if file.is_none() => file = Some(PathBuf::from(v)),
            _ => return Err(arg.unexpected().into()),
        }
    }
    o.file = file.ok_or_else(|| anyhow::anyhow!("memleak report needs the recording's file"))?;
    needs_output(o.format, o.output.as_deref())?;
    Ok(Parsed::Report(Box::new(o)))
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed> {
    use lexopt::prelude::*;
    // Everything after the first `--` is the command, options included.
    let mut args: Vec<OsString> = args.into_iter().collect();
    let sub = args.get(1).and_then(|a| a.to_str()).map(str::to_string);
    let recording = match sub.as_deref() {
        Some("report") => return parse_report(args.split_off(2)),
        Some("record") => {
            args.remove(1);
            true
        }
        _ => false,
    };
    let after_dashes = args.iter().position(|a| a == "--").map(|i| {
        let rest = args.split_off(i);
        rest[1..].to_vec()
    });
    let mut p = lexopt::Parser::from_iter(args);
    let mut pid = None;
    let mut command: Option<Vec<OsString>> = None;
    let mut positional: Vec<u64> = Vec::new();
    let mut ringbuf_given = false;
    let mut o = Options {
        target: Target::Pid(0),
        interval: None,
        count: None,
        top: 10,
        min_size: 0,
        max_size: u64::MAX,
        older_ms: 0,
        sample_rate: 1,
        sample_bytes: 0,
        show_allocs: false,
        follow_forks: false,
        debug_dirs: Vec::new(),
        trace: false,
        obj: None,
        symbol_prefix: String::new(),
        mmap: false,
        format: Format::Text,
        output: None,
        stack_bytes: 8192,
        max_frames: 64,
        unwind: UnwindMode::Auto,
        ringbuf_mb: 2,
        max_allocs: 131072,
        max_stacks: 4096,
        max_rules: 8192,
        verify_unwind: false,
        // The environment sets the defaults (the tests run the whole suite
        // once more with the fallbacks forced this way).
        events: match std::env::var("MEMLEAK_EVENTS") {
            Ok(v) => events(&v).context("MEMLEAK_EVENTS")?,
            Err(_) => Choice::Auto,
        },
        attach_multi: match std::env::var("MEMLEAK_ATTACH") {
            Ok(v) => attach(&v).context("MEMLEAK_ATTACH")?,
            Err(_) => Choice::Auto,
        },
        read_helper: match std::env::var("MEMLEAK_READ_HELPER") {
            Ok(v) => read_helper(&v).context("MEMLEAK_READ_HELPER")?,
            Err(_) => Choice::Auto,
        },
        verbose: 0,
        record: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            Short('p') | Long("pid") => {
                let v: i64 = number(p.value()?, "PID")?;
                if v <= 0 || v > i64::from(i32::MAX) {
                    bail!("invalid PID `{v}`");
                }
                pid = Some(v as i32);
            }
            Short('c') | Long("command") => {
                let v = p.value()?.to_string_lossy().into_owned();
                let words: Vec<OsString> = v.split_whitespace().map(OsString::from).collect();
                if words.is_empty() {
                    bail!("-c needs a command");
                }
                command = Some(words);
            }
            Short('T') | Long("top") => o.top = number(p.value()?, "--top")?,
            Short('z') | Long("min-size") => o.min_size = number(p.value()?, "--min-size")?,
            Short('Z') | Long("max-size") => o.max_size = number(p.value()?, "--max-size")?,
            Short('o') | Long("older") => o.older_ms = number(p.value()?, "--older")?,
            Short('s') | Long("sample-rate") => {
                o.sample_rate = number(p.value()?, "--sample-rate")?;
                if o.sample_rate == 0 {
                    bail!("--sample-rate must be at least 1");
                }
            }
            Long("sample-bytes") => {
                o.sample_bytes = number(p.value()?, "--sample-bytes")?;
                if o.sample_bytes == 0 {
                    bail!("--sample-bytes must be at least 1");
                }
            }
            Short('a') | Long("show-allocs") => o.show_allocs = true,
            Short('t') | Long("trace") => o.trace = true,
            Short('f') | Long("follow-forks") => o.follow_forks = true,
            Long("debug-dir") => o.debug_dirs.push(directory(p.value()?, "--debug-dir")?),
            Short('O') | Long("obj") => o.obj = Some(PathBuf::from(p.value()?)),
            Short('S') | Long("symbol-prefix") => {
                o.symbol_prefix = p.value()?.to_string_lossy().into_owned()
            }
            Long("mmap") => o.mmap = true,
            Long("format") => o.format = format(p.value()?)?,
            Long("output") => o.output = Some(output(p.value()?)?),
            Long("stack-bytes") => {
                let n: u32 = number(p.value()?, "--stack-bytes")?;
                if !(64..=memleak_bpf::MAX_STACK_BYTES).contains(&n) {
                    bail!(
                        "--stack-bytes must be between 64 and {}",
                        memleak_bpf::MAX_STACK_BYTES
                    );
                }
                o.stack_bytes = n & !7;
            }
            Long("max-frames") => {
                o.max_frames = number(p.value()?, "--max-frames")?;
                if !(2..=1024).contains(&o.max_frames) {
                    bail!("--max-frames must be between 2 and 1024");
                }
            }
            Long("unwind") => {
                let v = p.value()?.to_string_lossy().into_owned();
                o.unwind = UnwindMode::from_name(&v).ok_or_else(|| {
                    anyhow::anyhow!("invalid --unwind `{v}`: use auto, cfi, cfi-fp or fp")
                })?;
            }
            Long("ringbuf-mb") => {
                o.ringbuf_mb = number(p.value()?, "--ringbuf-mb")?;
                ringbuf_given = true;
                if !(1..=1024).contains(&o.ringbuf_mb) || !o.ringbuf_mb.is_power_of_two() {
                    bail!("--ringbuf-mb must be a power of two between 1 and 1024");
                }
            }
            Long("max-allocs") => o.max_allocs = table_size(p.value()?, "--max-allocs")?,
            Long("max-stacks") => o.max_stacks = table_size(p.value()?, "--max-stacks")?,
            Long("max-rules") => o.max_rules = table_size(p.value()?, "--max-rules")?,
            Long("verify-unwind") => o.verify_unwind = true,
            Long("events") => o.events = events(&p.value()?.to_string_lossy())?,
            Long("read-helper") => o.read_helper = read_helper(&p.value()?.to_string_lossy())?,
            Long("attach") => o.attach_multi = attach(&p.value()?.to_string_lossy())?,
            Short('v') | Long("verbose") => o.verbose = o.verbose.saturating_add(1),
            Value(v) => {
                if positional.len() >= 2 {
                    bail!("unexpected argument `{}`", v.to_string_lossy());
                }
                positional.push(
                    number(v, "interval/count")
                        .context("positional arguments are [INTERVAL [COUNT]]")?,
                );
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if let Some(rest) = after_dashes {
        if command.is_some() {
            bail!("use either -c CMD or -- CMD ARGS, not both");
        }
        if rest.is_empty() {
            bail!("no command after `--`");
        }
        command = Some(rest);
    }
    // Verification sends a stack copy per allocation: a bigger ring, unless
    // the size was given.
    if o.verify_unwind && !ringbuf_given {
        o.ringbuf_mb = 8;
    }
    o.interval = positional.first().copied();
    o.count = positional.get(1).copied();
    // Validated here, so that no later sum of instants and durations can
    // overflow: 2^32 - 1 seconds (136 years) is beyond every real use.
    if let Some(i) = o.interval {
        if !(1..=MAX_INTERVAL).contains(&i) {
            bail!("INTERVAL `{i}` must be between 1 and {MAX_INTERVAL} seconds");
        }
    }
    if o.count == Some(0) {
        bail!("COUNT must be at least 1");
    }
    if o.min_size > o.max_size {
        bail!("--min-size is larger than --max-size");
    }
    if o.sample_bytes > 0 && o.sample_rate > 1 {
        bail!("use either --sample-bytes or -s/--sample-rate, not both");
    }
    o.target = match (pid, command) {
        (Some(_), Some(_)) => bail!("use either -p PID or a command, not both"),
        (Some(pid), None) => Target::Pid(pid),
        (None, Some(cmd)) => Target::Command(cmd),
        (None, None) => bail!("nothing to trace: give -p PID or -- CMD ARGS"),
    };
    if !recording {
        needs_output(o.format, o.output.as_deref())?;
    }
    if recording {
        match o.output.take() {
            Some(f) if f != std::path::Path::new("-") => o.record = Some(f),
            _ => bail!("memleak record needs --output FILE (a file: the recording)"),
        }
    }
    Ok(Parsed::Run(Box::new(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Options> {
        let argv = std::iter::once("memleak").chain(args.iter().copied());
        match parse(argv.map(OsString::from))? {
            Parsed::Run(o) => Ok(*o),
            _ => panic!("not a run"),
        }
    }

    #[test]
    fn interval_and_count_are_bounded() {
        let err = |args: &[&str]| format!("{:#}", parse_args(args).unwrap_err());
        assert!(err(&["9223372036854775807", "--", "true"]).contains("between 1 and 4294967295"));
        assert!(err(&["4294967296", "--", "true"]).contains("between 1 and 4294967295"));
        assert!(err(&["0", "--", "true"]).contains("between 1 and 4294967295"));
        assert!(err(&["1", "0", "--", "true"]).contains("COUNT must be at least 1"));
        let o = parse_args(&["4294967295", "18446744073709551615", "--", "true"]).unwrap();
        assert_eq!((o.interval, o.count), (Some(MAX_INTERVAL), Some(u64::MAX)));
    }

    #[test]
    fn output_is_long_only() {
        let o = parse_args(&["--output", "r.json", "-o", "5", "--", "true"]).unwrap();
        assert_eq!(o.output, Some(PathBuf::from("r.json")));
        assert_eq!(o.older_ms, 5);
        assert!(parse_args(&["--output", "", "--", "true"]).is_err());
    }

    #[test]
    fn record_and_report_subcommands() {
        let o = parse_args(&["record", "--output", "r.mlr", "-p", "7"]).unwrap();
        assert_eq!(o.record, Some(PathBuf::from("r.mlr")));
        assert_eq!(o.output, None);
        let err = |args: &[&str]| format!("{:#}", parse_args(args).unwrap_err());
        assert!(err(&["record", "-p", "7"]).contains("needs --output FILE"));
        assert!(err(&["record", "--output", "-", "-p", "7"]).contains("needs --output FILE"));
        let argv = [
            "memleak",
            "report",
            "r.mlr",
            "--sysroot",
            "/",
            "-T",
            "3",
            "--format",
            "json",
        ];
        let Ok(Parsed::Report(r)) = parse(argv.map(OsString::from)) else {
            panic!("not a report");
        };
        assert_eq!(r.file, PathBuf::from("r.mlr"));
        assert_eq!(r.sysroots, [PathBuf::from("/")]);
        assert_eq!((r.top, r.format), (3, Format::Json));
        let argv = ["memleak", "report", "a", "b"];
        assert!(parse(argv.map(OsString::from)).is_err());
        let argv = ["memleak", "report"];
        assert!(parse(argv.map(OsString::from)).is_err());
        // A program named `report` is traced with `--`.
        let o = parse_args(&["--", "report"]).unwrap();
        assert!(matches!(o.target, Target::Command(_)));
    }
}
