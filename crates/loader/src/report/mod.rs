//! Reports: one model of a report ([`Snapshot`]: outstanding blocks grouped
//! by stack, largest first, symbolized, with every counter), built from a
//! live run's books or from a recording, and one writer per format
//! ([`text`], [`json`]).

pub mod folded;
pub mod growth;
pub mod json;
pub mod pprof;
mod profile;
#[cfg(feature = "flamegraph")]
pub mod svg;
pub mod text;

use std::collections::HashMap;
use std::rc::Rc;

use memleak_bpf::Counter;
use memleak_unwind_arch::{ElfFile, Frame, SymbolizedFrame};

use crate::cli::Format;
use crate::tracker::Tracker;

/// A frame of a report, symbolized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFrame {
    pub address: u64,
    pub function: Option<String>,
    pub offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    pub method: &'static str,
    pub inlined: bool,
    /// The address as stated in the module's file (for a frame no symbol
    /// names: `module+0x...`, what addr2line on the host takes).
    pub module_address: Option<u64>,
    /// The index of the stack's physical frame it belongs to (a frame
    /// with inlined functions gives several lines).
    pub depth: u32,
}

/// A file mapping of the process, for formats that place addresses.
#[derive(Debug, Clone)]
pub struct MappingInfo {
    pub start: u64,
    pub limit: u64,
    pub file_offset: u64,
    /// As the process names it.
    pub path: String,
    pub build_id: Vec<u8>,
}

/// The outstanding blocks of one stack.
pub struct StackEntry {
    pub id: u64,
    pub category: &'static str,
    pub bytes: u64,
    pub allocations: u64,
    pub oldest_ns: u64,
    /// Why the walk ended (`outermost`, `truncated`, ...).
    pub end: String,
    pub frames: Vec<ReportFrame>,
    /// address, size, age in ns (with `--show-allocs`).
    pub allocs: Vec<(u64, u64, u64)>,
    /// How its bytes changed over the reports.
    pub trend: Option<growth::Trend>,
    /// With `--sample-bytes`: the bytes and blocks sampled, of which
    /// `bytes` and `allocations` are the estimate.
    pub sampled: Option<(u64, u64)>,
}

/// Blocks of one category (heap or mmap): totals, and the top stacks.
#[derive(Default)]
pub struct Group {
    pub bytes: u64,
    pub allocations: u64,
    /// The largest stacks, largest first (at most `--top`).
    pub stacks: Vec<StackEntry>,
}

/// Every loss counter, by name, and their sum.
pub struct Losses {
    pub named: Vec<(String, u64)>,
    pub lost_events: u64,
    pub truncated_stacks: u64,
}

/// One report of one process.
pub struct Snapshot {
    pub is_final: bool,
    pub pid: i32,
    /// Its program, as the process names it.
    pub exe: String,
    /// The traced process that forked it.
    pub parent: Option<i32>,
    /// How it ended, if it did.
    pub exit: Option<String>,
    /// One section among several (`-f`): the text names the process.
    pub section: bool,
    /// Children it forked that memleak did not follow (without `-f`).
    pub unfollowed: Option<u64>,
    /// Its PID in its own PID namespace (a container), if it has one.
    pub ns_pid: Option<i32>,
    pub arch: String,
    /// Wall-clock time of the report, `HH:MM:SS` local time.
    pub time: String,
    /// The same, in ms since the Unix epoch.
    pub unix_ms: u64,
    /// The process's file mappings (for pprof).
    pub mappings: Vec<MappingInfo>,
    pub losses: Losses,
    pub heap: Group,
    pub mmap: Group,
    /// mmap regions were tracked (`--mmap`).
    pub show_mmap: bool,
    /// Blocks are listed (`--show-allocs`).
    pub show_allocs: bool,
    /// Stacks whose bytes grew in most reports and never went back,
    /// strongest first.
    pub suspects: Vec<growth::Key>,
    /// `--sample-bytes` of the run (0: off): the figures are estimates.
    pub sample_bytes: u64,
}

/// Renders one report: a snapshot per process (several with `-f`). Text
/// and JSON give a section (an object) per process; folded stacks, flame
/// graphs and profiles are one document, each process under a root frame
/// of its own when there are several.
pub fn render(snaps: &[Snapshot], format: Format) -> Vec<u8> {
    match format {
        Format::Text => snaps
            .iter()
            .map(text::render)
            .collect::<String>()
            .into_bytes(),
        Format::Json => snaps
            .iter()
            .map(json::render)
            .collect::<String>()
            .into_bytes(),
        Format::Folded => folded::render(snaps).into_bytes(),
        #[cfg(feature = "flamegraph")]
        Format::Svg => svg::render(snaps),
        #[cfg(not(feature = "flamegraph"))]
        Format::Svg => unreachable!("refused by the options"),
        Format::Pprof => pprof::render(snaps),
    }
}

/// An outstanding block, as a report groups it.
pub struct BlockRef {
    pub address: u64,
    pub size: u64,
    /// Index of its stack (in the tracker, or in the recording).
    pub stack: u32,
    pub age_ns: u64,
}

/// The weight of a block of `size` bytes sampled with `--sample-bytes N`:
/// 1 / its probability of being sampled, 1 - exp(-size/N) (1 unsampled).
pub fn weight(size: u64, sample_bytes: u64) -> f64 {
    if sample_bytes == 0 {
        return 1.0;
    }
    let p = -(-(size as f64) / sample_bytes as f64).exp_m1();
    if p > 0.0 {
        1.0 / p
    } else {
        1.0
    }
}

/// What a report shows of the blocks.
#[derive(Clone, Copy)]
pub struct Shown {
    /// `--sample-bytes` of the run (0: every block is there): blocks are
    /// weighted, the figures are estimates.
    pub sample_bytes: u64,
    /// Only blocks at least this old (`--older`).
    pub older_ns: u64,
    /// Stacks shown (`--top`).
    pub top: usize,
    /// List each block (`--show-allocs`).
    pub allocs: bool,
}

impl Group {
    /// Groups `blocks` by stack: `id` names a stack (for the order of equal
    /// ones), `trend` gives its growth, `describe` its end and frames (only
    /// for those shown: the largest, and the suspects among the first
    /// `--top` of them).
    pub fn of(
        blocks: impl Iterator<Item = BlockRef>,
        category: &'static str,
        shown: Shown,
        id: impl Fn(u32) -> u64,
        trend: impl Fn(u32) -> Option<growth::Trend>,
        mut describe: impl FnMut(u32) -> (String, Vec<ReportFrame>),
    ) -> Group {
        let mut by_stack: HashMap<u32, StackEntry> = HashMap::new();
        // With sampling: estimated bytes and blocks, summed unrounded.
        let mut estimates: HashMap<u32, (f64, f64)> = HashMap::new();
        for b in blocks {
            if b.age_ns < shown.older_ns {
                continue;
            }
            if shown.sample_bytes > 0 {
                let w = weight(b.size, shown.sample_bytes);
                let e = estimates.entry(b.stack).or_default();
                e.0 += w * b.size as f64;
                e.1 += w;
            }
            let r = by_stack.entry(b.stack).or_insert_with(|| StackEntry {
                id: id(b.stack),
                category,
                bytes: 0,
                allocations: 0,
                oldest_ns: 0,
                end: String::new(),
                frames: Vec::new(),
                allocs: Vec::new(),
                trend: trend(b.stack),
                sampled: None,
            });
            r.bytes += b.size;
            r.allocations += 1;
            r.oldest_ns = r.oldest_ns.max(b.age_ns);
            if shown.allocs {
                r.allocs.push((b.address, b.size, b.age_ns));
            }
        }
        for (stack, (bytes, blocks)) in estimates {
            if let Some(e) = by_stack.get_mut(&stack) {
                e.sampled = Some((e.bytes, e.allocations));
                e.bytes = bytes.round() as u64;
                e.allocations = blocks.round() as u64;
            }
        }
        let mut v: Vec<(u32, StackEntry)> = by_stack.into_iter().collect();
        v.sort_by(|(_, a), (_, b)| {
            b.bytes
                .cmp(&a.bytes)
                .then(b.allocations.cmp(&a.allocations))
                .then(a.id.cmp(&b.id))
        });
        let mut g = Group {
            bytes: v.iter().map(|(_, s)| s.bytes).sum(),
            allocations: v.iter().map(|(_, s)| s.allocations).sum(),
            stacks: Vec::new(),
        };
        let top = shown.top;
        let suspect = |s: &StackEntry| {
            s.trend
                .and_then(|t| t.suspect_rank)
                .is_some_and(|r| r as usize <= top)
        };
        let picked = v
            .into_iter()
            .enumerate()
            .filter(|(i, (_, s))| *i < top || suspect(s))
            .map(|(_, x)| x);
        for (index, mut s) in picked {
            (s.end, s.frames) = describe(index);
            s.allocs.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            g.stacks.push(s);
        }
        g
    }
}

/// Every counter of a live run, by name (the BPF side's, then user
/// space's), and the sums a report prints.
pub fn losses(tracker: &Tracker, bpf: &[u64], prog_misses: u64, buffer_lost: u64) -> Losses {
    let mut named = Vec::new();
    let mut lost = 0;
    for c in Counter::ALL {
        let v = bpf[c as usize];
        named.push((c.name().to_string(), v));
        if c.is_loss() {
            lost += v;
        }
    }
    let u = tracker.counts;
    let user = [
        ("bpf_prog_misses", prog_misses),
        ("perf_buffer_lost", buffer_lost),
        ("bad_records", u.bad_records),
        ("unresolved_stacks", u.unresolved),
        ("truncated_stacks", u.truncated_stacks),
        ("unwind_stopped", u.unwind_stopped),
        ("scanned_stacks", u.scanned_stacks),
        ("misses_resolved", u.misses_resolved),
        ("rules_cached", u.rules_cached),
        ("rule_cache_failures", u.rule_failures),
        ("unwind_verified", u.verified),
        ("unwind_disagreements", u.disagreements),
        ("unfinished_copies_dropped", u.copies_dropped),
    ];
    named.extend(user.iter().map(|(n, v)| (n.to_string(), *v)));
    lost += prog_misses + buffer_lost + u.bad_records + u.unresolved;
    Losses {
        named,
        lost_events: lost,
        truncated_stacks: u.truncated_stacks,
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec passed.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `HH:MM:SS` in local time of an instant in ms since the epoch.
pub fn wall_clock(unix_ms: u64) -> String {
    // SAFETY: localtime_r writes only into the struct passed.
    unsafe {
        // (`as _`: libc's time_t alias is deprecated on musl.)
        let t = (unix_ms / 1000) as _;
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    }
}

/// Symbolized lines by (file id, address in the file).
#[derive(Default)]
pub struct Symbolizer {
    cache: HashMap<(usize, u64), Rc<Vec<SymbolizedFrame>>>,
}

/// Where a frame is: its file and the address looked up in it, or only
/// the name of its module and what the device's symbols said.
pub enum Place<'a> {
    /// Not in any known module.
    Nowhere,
    /// In a file at hand.
    File { elf: &'a ElfFile, svma: u64 },
    /// In a module whose file is not at hand (a recording reported
    /// without its sysroot): its name and the device's symbol.
    Named {
        module: &'a str,
        svma: Option<u64>,
        symbol: Option<(&'a str, u64)>,
    },
}

impl Symbolizer {
    /// Appends the lines of frame `index` of a stack (more than one where
    /// functions were inlined into it) to `out`.
    pub fn frame(&mut self, out: &mut Vec<ReportFrame>, f: &Frame, index: usize, place: Place<'_>) {
        // Return addresses point after the call: the call was looked up.
        let back = u64::from(index > 0);
        let blank = |module: Option<String>, module_address: Option<u64>| ReportFrame {
            depth: index as u32,
            address: f.address,
            function: None,
            offset: None,
            file: None,
            line: None,
            module,
            method: f.method.name(),
            inlined: false,
            module_address,
        };
        match place {
            Place::Nowhere => out.push(blank(None, None)),
            Place::Named {
                module,
                svma,
                symbol,
            } => {
                let mut r = blank(Some(module.to_string()), svma.map(|a| a + back));
                if let Some((name, off)) = symbol {
                    r.function = Some(memleak_unwind_arch::demangle(name));
                    r.offset = Some(off + back);
                }
                out.push(r);
            }
            Place::File { elf, svma } => {
                let syms = self
                    .cache
                    .entry((elf.id(), svma))
                    .or_insert_with(|| Rc::new(elf.symbolize(svma)))
                    .clone();
                let module = crate::procfs::shown(elf.path());
                if syms.is_empty() {
                    out.push(blank(Some(module), Some(svma + back)));
                    return;
                }
                for sym in syms.iter() {
                    out.push(ReportFrame {
                        depth: index as u32,
                        address: f.address,
                        function: sym.function.clone(),
                        offset: sym.offset.map(|o| o + back),
                        file: sym.file.clone(),
                        line: sym.line,
                        module: Some(module.clone()),
                        method: f.method.name(),
                        inlined: sym.inlined,
                        module_address: Some(svma + back),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str) -> ReportFrame {
        ReportFrame {
            address: 0x1000,
            function: Some(function.to_string()),
            offset: Some(4),
            file: Some("/src/a.c".into()),
            line: Some(7),
            module: Some("/bin/a".into()),
            method: "cfi",
            inlined: false,
            module_address: Some(0x1000),
            depth: 0,
        }
    }

    #[test]
    fn groups_by_stack_largest_first_and_filters_by_age() {
        let blocks = [
            (0x10, 8, 1, 50),
            (0x20, 8, 1, 500),
            (0x30, 100, 2, 500),
            (0x40, 1, 3, 5),
        ];
        let shown = Shown {
            sample_bytes: 0,
            older_ns: 10,
            top: 2,
            allocs: true,
        };
        let mut described = Vec::new();
        let g = Group::of(
            blocks
                .iter()
                .map(|&(address, size, stack, age_ns)| BlockRef {
                    address,
                    size,
                    stack,
                    age_ns,
                }),
            "heap",
            shown,
            |i| u64::from(i) * 16,
            |_| None,
            |i| {
                described.push(i);
                ("outermost".into(), vec![frame(&format!("f{i}"))])
            },
        );
        // The block of stack 3 is younger than --older: left out.
        assert_eq!((g.bytes, g.allocations), (116, 3));
        assert_eq!(described, [2, 1]);
        assert_eq!(g.stacks[0].bytes, 100);
        assert_eq!((g.stacks[1].bytes, g.stacks[1].allocations), (16, 2));
        assert_eq!(g.stacks[1].oldest_ns, 500);
        // Oldest first.
        assert_eq!(g.stacks[1].allocs, [(0x20, 8, 500), (0x10, 8, 50)]);
    }

    #[test]
    fn text_and_json_render_the_same_snapshot() {
        let stack = StackEntry {
            id: 0xab,
            category: "heap",
            bytes: 24,
            allocations: 3,
            oldest_ns: 1_500_000_000,
            end: "no_unwind_info".into(),
            frames: vec![frame("alloc \"x\"")],
            allocs: Vec::new(),
            trend: None,
            sampled: None,
        };
        let s = Snapshot {
            is_final: true,
            pid: 42,
            exe: "/bin/a".into(),
            parent: None,
            exit: Some("exited with status 0".into()),
            section: false,
            unfollowed: Some(0),
            ns_pid: None,
            arch: "x86_64".into(),
            time: "12:00:00".into(),
            unix_ms: 0,
            mappings: Vec::new(),
            losses: Losses {
                named: vec![("unwind_stopped".into(), 3), ("rule_hits".into(), 9)],
                lost_events: 0,
                truncated_stacks: 0,
            },
            heap: Group {
                bytes: 24,
                allocations: 3,
                stacks: vec![stack],
            },
            mmap: Group::default(),
            show_mmap: false,
            show_allocs: false,
            suspects: Vec::new(),
            sample_bytes: 0,
        };
        let s = [s];
        let text = String::from_utf8(render(&s, Format::Text)).unwrap();
        assert!(text.contains("Final report. Top 1 stacks with outstanding allocations (total 24 bytes in 3 allocations)"));
        assert!(text.contains("24 bytes in 3 allocations from stack 0xab (oldest 1.5 s)"));
        assert!(text.contains(r#"#0 0x0000000000001000 alloc "x"+0x4 (a.c:7) [a] <cfi>"#));
        assert!(text.contains("(stack walk stopped: no unwind info)"));
        // Work counters are not listed among the losses.
        assert!(text.contains("  (unwind_stopped 3)\n"), "{text}");
        let json = String::from_utf8(render(&s, Format::Json)).unwrap();
        assert!(json.starts_with(r#"{"final":true,"pid":42,"#));
        assert!(json.contains(r#""function":"alloc \"x\"""#));
        assert!(json.contains(r#""end":"no_unwind_info""#));
        assert!(
            json.ends_with("\"suspects\":[],\"sample_bytes\":null}\n"),
            "{json}"
        );
    }
}
