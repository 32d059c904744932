//! `memleak record`: the reports of a run kept as a recording (see
//! `memleak_unwind_arch::record` for the format) instead of rendered, for
//! `memleak report` on a host that has the files the device lacks.
//!
//! The device keeps what it knows and nothing it would have to guess:
//! stacks as it unwound them, each frame's module and address in the
//! module's file, the symbol its own (maybe stripped) file names there, and
//! the registers and stack bytes of walks it could not finish.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use memleak_unwind_arch::record::{
    self, Block, Counter, FrameRecord, Interval, MappedRange, Module, Process, Record, Stack,
    StackTotal,
};
use memleak_unwind_arch::{ElfFile, Method};

use crate::cli::Options;
use crate::procs::Proc;
use crate::report::{self, Losses};
use crate::tracker::{Alloc, Tracker};

/// Where each process's stacks and modules are in the recording.
#[derive(Default)]
struct Index {
    /// Tracker stack index -> recording stack index.
    stacks: HashMap<u32, u32>,
    /// File id -> 1 + module index.
    modules: HashMap<usize, u32>,
}

pub struct Recorder {
    path: PathBuf,
    record: Record,
    index: HashMap<i32, Index>,
}

fn uname() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.nodename().to_string_lossy().into_owned(),
        ),
        Err(_) => (String::new(), String::new()),
    }
}

impl Recorder {
    /// Starts a recording at `path`, written now (empty) so that a path
    /// that cannot be written fails before tracing starts.
    pub fn create(path: &Path, opts: &Options, machine: u16, big_endian: bool) -> Result<Recorder> {
        let (kernel, hostname) = uname();
        let command = match &opts.target {
            crate::cli::Target::Command(c) => {
                c.iter().map(|a| a.to_string_lossy().into_owned()).collect()
            }
            crate::cli::Target::Pid(_) => Vec::new(),
        };
        let r = Recorder {
            path: path.to_path_buf(),
            record: Record {
                memleak_version: env!("CARGO_PKG_VERSION").to_string(),
                machine: u32::from(machine),
                big_endian,
                kernel,
                hostname,
                command,
                finished: false,
                older_ms: opts.older_ms,
                mmap: opts.mmap,
                processes: Vec::new(),
                max_frames: opts.max_frames as u32,
                start_unix_ms: report::unix_ms(),
                unwind: opts.unwind.name().to_string(),
                sample_bytes: u64::from(opts.sample_bytes),
            },
            index: HashMap::new(),
        };
        r.write()?;
        Ok(r)
    }

    /// Adds a report of process `p` (its tracker's last snapshot).
    pub fn add(&mut self, p: &Proc, losses: &Losses, is_final: bool, unfollowed: Option<u64>) {
        let slot = match self.record.processes.iter().position(|r| r.pid == p.pid) {
            Some(i) => i,
            None => {
                self.record.processes.push(Process {
                    pid: p.pid,
                    ..Default::default()
                });
                self.record.processes.len() - 1
            }
        };
        let index = self.index.entry(p.pid).or_default();
        let rp = &mut self.record.processes[slot];
        rp.ns_pid = p.ns_pid.unwrap_or(0);
        rp.parent = p.parent.unwrap_or(0);
        rp.exe = crate::procfs::shown(&p.exe.to_string_lossy());
        rp.exit = p.exit.map(|e| e.to_string()).unwrap_or_default();
        rp.unfollowed = unfollowed.unwrap_or(0);
        let t = &p.tracker;
        let now = report::monotonic_ns();
        let mut totals: HashMap<(u32, u32), StackTotal> = HashMap::new();
        let mut blocks = Vec::with_capacity(t.outstanding.len() + t.mmaps.len());
        let lists: [(&[(u64, Alloc)], u32); 2] =
            [(&t.outstanding, record::HEAP), (&t.mmaps, record::MMAP)];
        for (list, category) in lists {
            for (address, a) in list {
                let stack = stack_index(rp, index, t, a.stack);
                let age_ns = now.saturating_sub(a.ts_ns);
                let total = totals.entry((stack, category)).or_insert(StackTotal {
                    stack,
                    category,
                    ..Default::default()
                });
                total.bytes += a.size;
                total.blocks += 1;
                total.oldest_ns = total.oldest_ns.max(age_ns);
                blocks.push(Block {
                    address: *address,
                    size: a.size,
                    stack,
                    category,
                    age_ns,
                });
            }
        }
        let mut totals: Vec<StackTotal> = totals.into_values().collect();
        totals.sort_by_key(|t| (t.category, t.stack));
        // Blocks are kept for the latest interval only.
        for old in &mut rp.intervals {
            old.blocks = Vec::new();
        }
        rp.intervals.push(Interval {
            unix_ms: report::unix_ms(),
            is_final,
            totals,
            blocks,
            counters: losses
                .named
                .iter()
                .map(|(name, value)| Counter {
                    name: name.clone(),
                    value: *value,
                })
                .collect(),
            lost_events: losses.lost_events,
            truncated_stacks: losses.truncated_stacks,
        });
    }

    /// Writes the recording (a temporary file renamed over the last one,
    /// synced: a recorder killed later leaves this one whole).
    pub fn write(&self) -> Result<()> {
        crate::output::replace(&self.path, &record::encode(&self.record), true)
            .with_context(|| format!("writing the recording {}", self.path.display()))
    }

    /// Marks the recording complete and writes it; returns a summary line.
    pub fn finish(&mut self) -> Result<String> {
        self.record.finished = true;
        self.write()?;
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let stacks: usize = self.record.processes.iter().map(|p| p.stacks.len()).sum();
        let modules: usize = self.record.processes.iter().map(|p| p.modules.len()).sum();
        Ok(format!(
            "recorded {} process{}, {stacks} stacks, {modules} modules in {} ({size} bytes); \
             `memleak report {}` prints it",
            self.record.processes.len(),
            if self.record.processes.len() == 1 {
                ""
            } else {
                "es"
            },
            self.path.display(),
            self.path.display(),
        ))
    }
}

/// The recording's index of tracker stack `i`, added if new.
fn stack_index(rp: &mut Process, index: &mut Index, t: &Tracker, i: u32) -> u32 {
    if let Some(&r) = index.stacks.get(&i) {
        return r;
    }
    let s = &t.stacks[i as usize];
    let mut frames = Vec::with_capacity(s.frames.len());
    for (f, loc) in s.frames.iter().zip(&s.located) {
        let mut fr = FrameRecord {
            address: f.address,
            method: Method::ALL.iter().position(|m| *m == f.method).unwrap_or(0) as u32,
            ..Default::default()
        };
        if let Some((elf, svma)) = loc {
            fr.module = module_index(rp, index, t, elf);
            fr.module_address = *svma;
            if let Some((name, start)) = elf.find_symbol(*svma) {
                fr.symbol = name.to_string();
                fr.symbol_offset = svma - start;
            }
        }
        frames.push(fr);
    }
    rp.stacks.push(Stack {
        id: s.id,
        end: s.end.to_string(),
        frames,
        copy: s.copy.as_ref().map(|c| record::StackCopy {
            regs: c.regs.to_vec(),
            bytes: c.bytes.clone(),
            reached_end: c.reached_end,
        }),
    });
    let r = (rp.stacks.len() - 1) as u32;
    index.stacks.insert(i, r);
    r
}

/// 1 + the recording's index of the module of `elf`, added if new; its
/// mappings (current and retired) are added to those it had.
fn module_index(rp: &mut Process, index: &mut Index, t: &Tracker, elf: &ElfFile) -> u32 {
    let n = match index.modules.get(&elf.id()) {
        Some(&n) => n,
        None => {
            rp.modules.push(Module {
                path: crate::procfs::shown(elf.path()),
                build_id: elf.build_id().map(<[u8]>::to_vec).unwrap_or_default(),
                mappings: Vec::new(),
            });
            let n = rp.modules.len() as u32;
            index.modules.insert(elf.id(), n);
            n
        }
    };
    let m = &mut rp.modules[n as usize - 1];
    let current = t.modules.mappings().iter().map(|m| (m, false));
    let retired = t.modules.retired().iter().map(|m| (m, true));
    for (mapping, retired) in current.chain(retired) {
        if mapping.elf.id() != elf.id() {
            continue;
        }
        let range = MappedRange {
            start: mapping.start_avma,
            end: mapping.end_avma,
            file_offset: mapping.file_offset,
            retired,
        };
        match m.mappings.iter_mut().find(|r| {
            (r.start, r.end, r.file_offset) == (range.start, range.end, range.file_offset)
        }) {
            Some(r) => r.retired = retired,
            None => m.mappings.push(range),
        }
    }
    n
}
