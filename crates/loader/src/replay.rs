//! `memleak report FILE`: a recording (see `recording`) printed on this
//! machine. The device's files are found under the sysroots by their
//! recorded paths and checked by build ID; walks the device could not
//! finish are unwound again here from their registers and stack bytes (the
//! files here may have `.debug_frame`, which the device's lack); frames are
//! symbolized from the files here, else named as the device named them.

use std::path::Path;
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};
use log::warn;
use memleak_unwind_arch::record::{self, FrameRecord, Interval, Process, Record};
use memleak_unwind_arch::{
    AnyUnwinder, ElfFile, Frame, Mapping, Method, ModuleMap, StackEnd, UnwindMode,
};

use crate::cli::ReportOptions;
use crate::output::Output;
use crate::report::growth::Growth;
use crate::report::{
    self, BlockRef, Group, Losses, MappingInfo, Place, ReportFrame, Shown, Snapshot, Symbolizer,
};
use crate::sources::debuginfod::{self, Debuginfod};
use crate::sources::sysroot::Files;

/// The method a recorded frame names.
fn method(code: u32) -> Method {
    Method::ALL
        .get(code as usize)
        .copied()
        .unwrap_or(Method::Cfi)
}

/// A stack as reported: the device's frames, or those of the walk
/// finished here.
enum Walk {
    Device,
    Here { frames: Vec<Frame>, end: StackEnd },
}

/// One process of the recording, with its files found here.
struct Replay<'a> {
    process: &'a Process,
    files: Vec<Option<Rc<ElfFile>>>,
    modules: ModuleMap,
    walks: Vec<Walk>,
    finished_here: u64,
    symbolizer: Symbolizer,
}

impl<'a> Replay<'a> {
    fn new(rec: &Record, process: &'a Process, found: &mut Files) -> Replay<'a> {
        let files: Vec<Option<Rc<ElfFile>>> =
            process.modules.iter().map(|m| found.get(m)).collect();
        let mut modules = ModuleMap::new();
        let mut retired = Vec::new();
        for (m, f) in process.modules.iter().zip(&files) {
            let Some(elf) = f else { continue };
            for r in &m.mappings {
                let mapping = Mapping {
                    start_avma: r.start,
                    end_avma: r.end,
                    file_offset: r.file_offset,
                    elf: elf.clone(),
                };
                if r.retired {
                    retired.push(mapping);
                } else {
                    modules.insert(mapping);
                }
            }
        }
        for m in retired {
            modules.retire(m);
        }
        let max_frames = (rec.max_frames as usize).clamp(2, 1024);
        let mode = UnwindMode::from_name(&rec.unwind).expect("checked when decoded");
        let mut unwinder = AnyUnwinder::for_machine(rec.machine as u16, mode, max_frames)
            .expect("checked when decoded");
        let mut finished_here = 0;
        let walks = process
            .stacks
            .iter()
            .map(|s| {
                let Some(copy) = &s.copy else {
                    return Walk::Device;
                };
                let regs = [copy.regs[0], copy.regs[1], copy.regs[2], copy.regs[3]];
                let mut frames = Vec::new();
                let end = unwinder.unwind_at_entry(
                    regs,
                    &copy.bytes,
                    rec.big_endian,
                    copy.reached_end,
                    &modules,
                    &mut frames,
                );
                // Better here: it reached the outermost frame, or went on
                // further than the device did.
                let device_done = s.end == "outermost";
                if (end == StackEnd::Outermost && !device_done) || frames.len() > s.frames.len() {
                    finished_here += 1;
                    Walk::Here { frames, end }
                } else {
                    Walk::Device
                }
            })
            .collect();
        Replay {
            process,
            files,
            modules,
            walks,
            finished_here,
            symbolizer: Symbolizer::default(),
        }
    }

    /// How stack `i`'s walk ended, and whether a frame was found by a scan.
    fn end_of(&self, i: u32) -> (&str, bool) {
        match &self.walks[i as usize] {
            Walk::Here { frames, end } => (
                crate::tracker::end_name(*end),
                frames.iter().any(|f| f.method == Method::Scan),
            ),
            Walk::Device => {
                let s = &self.process.stacks[i as usize];
                let scan = s.frames.iter().any(|f| method(f.method) == Method::Scan);
                (&s.end, scan)
            }
        }
    }

    /// Why stack `i`'s walk ended, and its frames, symbolized.
    fn describe(&mut self, i: u32) -> (String, Vec<ReportFrame>) {
        let s = &self.process.stacks[i as usize];
        let mut out = Vec::new();
        match &self.walks[i as usize] {
            Walk::Here { frames, end } => {
                for (j, f) in frames.iter().enumerate() {
                    let at = f.address.saturating_sub(u64::from(j > 0));
                    let here = self
                        .modules
                        .find(at)
                        .and_then(|m| Some((m, m.avma_to_svma(at)?)));
                    let place = match here {
                        Some((m, svma)) => Place::File { elf: &m.elf, svma },
                        // Not a file here: as the device placed it (the
                        // frames it had), else by the recorded mappings.
                        None => match s.frames.get(j).filter(|d| d.address == f.address) {
                            Some(d) => device_place(self.process, &self.files, d),
                            None => mapped_place(self.process, at),
                        },
                    };
                    self.symbolizer.frame(&mut out, f, j, place);
                }
                (crate::tracker::end_name(*end).to_string(), out)
            }
            Walk::Device => {
                for (j, d) in s.frames.iter().enumerate() {
                    let f = Frame {
                        address: d.address,
                        method: method(d.method),
                    };
                    let place = device_place(self.process, &self.files, d);
                    self.symbolizer.frame(&mut out, &f, j, place);
                }
                (s.end.clone(), out)
            }
        }
    }
}

/// Where the device placed frame `d`: in its module's file here if found,
/// else named as the device named it.
fn device_place<'a>(
    process: &'a Process,
    files: &'a [Option<Rc<ElfFile>>],
    d: &'a FrameRecord,
) -> Place<'a> {
    let Some(m) = d.module.checked_sub(1).map(|m| m as usize) else {
        return Place::Nowhere;
    };
    match &files[m] {
        Some(elf) => Place::File {
            elf,
            svma: d.module_address,
        },
        None => Place::Named {
            module: &process.modules[m].path,
            svma: Some(d.module_address),
            symbol: (!d.symbol.is_empty()).then_some((d.symbol.as_str(), d.symbol_offset)),
        },
    }
}

/// The module a recorded mapping places `avma` in (its file not here).
fn mapped_place(process: &Process, avma: u64) -> Place<'_> {
    let module = process
        .modules
        .iter()
        .find(|m| m.mappings.iter().any(|r| (r.start..r.end).contains(&avma)));
    match module {
        Some(m) => Place::Named {
            module: &m.path,
            svma: None,
            symbol: None,
        },
        None => Place::Nowhere,
    }
}

/// The report of `interval` of a process.
fn snapshot(
    rec: &Record,
    replay: &mut Replay<'_>,
    interval: &Interval,
    opts: &ReportOptions,
    section: bool,
) -> Snapshot {
    let p = replay.process;
    let shown = Shown {
        sample_bytes: rec.sample_bytes,
        older_ns: opts
            .older_ms
            .unwrap_or(rec.older_ms)
            .saturating_mul(1_000_000),
        top: opts.top,
        allocs: opts.show_allocs,
    };
    let blocks = |category| {
        interval
            .blocks
            .iter()
            .filter(move |b| b.category == category)
            .map(|b| BlockRef {
                address: b.address,
                size: b.size,
                stack: b.stack,
                age_ns: b.age_ns,
            })
    };
    // The trends: every interval's totals, in order.
    let mut growth = Growth::default();
    for iv in &p.intervals {
        growth.update(iv.totals.iter().map(|t| {
            let category = if t.category == record::MMAP {
                "mmap"
            } else {
                "heap"
            };
            // Estimated with --sample-bytes (the totals are of the
            // sampled blocks: weight them by their mean size).
            let bytes = if rec.sample_bytes > 0 && t.blocks > 0 {
                let size = t.bytes / t.blocks;
                (t.bytes as f64 * report::weight(size, rec.sample_bytes)).round() as u64
            } else {
                t.bytes
            };
            ((p.stacks[t.stack as usize].id, category), bytes)
        }));
    }
    let id = |i: u32| p.stacks[i as usize].id;
    let heap = Group::of(
        blocks(record::HEAP),
        "heap",
        shown,
        id,
        |i| growth.trend((id(i), "heap")),
        |i| replay.describe(i),
    );
    let mmap = Group::of(
        blocks(record::MMAP),
        "mmap",
        shown,
        id,
        |i| growth.trend((id(i), "mmap")),
        |i| replay.describe(i),
    );
    // The counts of blocks by how their walk ended, as the stacks end now
    // (a walk finished here no longer stopped).
    let (mut truncated, mut stopped, mut scanned) = (0, 0, 0);
    for b in &interval.blocks {
        let (end, scan) = replay.end_of(b.stack);
        if scan {
            scanned += 1;
        }
        if crate::tracker::is_truncated(end) {
            truncated += 1;
        } else if end != "outermost" && end != "unknown_stack" {
            stopped += 1;
        }
    }
    let mut named: Vec<(String, u64)> = interval
        .counters
        .iter()
        .map(|c| {
            let v = match c.name.as_str() {
                "truncated_stacks" => truncated,
                "unwind_stopped" => stopped,
                "scanned_stacks" => scanned,
                _ => c.value,
            };
            (c.name.clone(), v)
        })
        .collect();
    named.push(("finished_on_host".into(), replay.finished_here));
    let arch = AnyUnwinder::for_machine(rec.machine as u16, UnwindMode::Auto, 2)
        .map_or("?", |u| u.arch_name());
    Snapshot {
        is_final: interval.is_final,
        pid: p.pid,
        exe: p.exe.clone(),
        parent: (p.parent != 0).then_some(p.parent),
        exit: (!p.exit.is_empty()).then(|| p.exit.clone()),
        section,
        unfollowed: (p.parent == 0 && !section).then_some(p.unfollowed),
        ns_pid: (p.ns_pid != 0).then_some(p.ns_pid),
        arch: arch.to_string(),
        time: report::wall_clock(interval.unix_ms),
        unix_ms: interval.unix_ms,
        mappings: p
            .modules
            .iter()
            .flat_map(|m| {
                m.mappings.iter().map(|r| MappingInfo {
                    start: r.start,
                    limit: r.end,
                    file_offset: r.file_offset,
                    path: m.path.clone(),
                    build_id: m.build_id.clone(),
                })
            })
            .collect(),
        losses: Losses {
            named,
            lost_events: interval.lost_events,
            truncated_stacks: truncated,
        },
        heap,
        mmap,
        show_mmap: opts.mmap || rec.mmap,
        show_allocs: opts.show_allocs,
        suspects: growth.suspects(),
        sample_bytes: rec.sample_bytes,
    }
}

/// Reads the recording at `path`: one clear error for each way it can be
/// unusable.
pub fn read(path: &Path) -> Result<Record> {
    let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    record::decode(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub fn run(opts: &ReportOptions) -> Result<()> {
    let rec = read(&opts.file)?;
    memleak_unwind_arch::set_debug_dirs(opts.debug_dirs.clone());
    let mut output = Output::open(opts.output.as_deref(), false, opts.format.is_document())?;
    let servers = Debuginfod::new(debuginfod::urls(&opts.debuginfod))?;
    let mut files = Files::new(&opts.sysroots, rec.machine as u16, servers);
    let section = rec.processes.len() > 1;
    let mut snaps = Vec::new();
    for p in &rec.processes {
        let Some(interval) = p.intervals.last() else {
            continue;
        };
        let mut replay = Replay::new(&rec, p, &mut files);
        snaps.push(snapshot(&rec, &mut replay, interval, opts, section));
    }
    if snaps.is_empty() {
        bail!(
            "{}: no report recorded yet (the recorder stopped before its first interval)",
            opts.file.display()
        );
    }
    if !files.missing.is_empty() {
        let mut missing = files.missing.clone();
        missing.sort();
        missing.dedup();
        warn!(
            "{} of the recording's files not found{}: {} (their frames show the device's symbols)",
            missing.len(),
            if files.implicit_root {
                " here (give --sysroot)".to_string()
            } else {
                format!(
                    " under {}",
                    files
                        .roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            missing.join(", ")
        );
    }
    if !rec.finished {
        warn!(
            "{}: the recorder did not finish (killed?): this is its last complete interval",
            opts.file.display()
        );
    }
    output.write(&report::render(&snaps, opts.format), None)?;
    Ok(())
}
