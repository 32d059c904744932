//! The JSON report: one object per line and report (fields in README),
//! written by serde_json from a view of the snapshot.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::{ReportFrame, Snapshot, StackEntry};

/// `0x...` strings for addresses and ids (JSON numbers lose 64-bit values).
fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

fn opt_hex<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => hex(v, s),
        None => s.serialize_none(),
    }
}

/// The counters as an object, in their order.
struct Counters<'a>(&'a [(String, u64)]);

impl Serialize for Counters<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct Report<'a> {
    #[serde(rename = "final")]
    is_final: bool,
    pid: i32,
    time: &'a str,
    arch: &'a str,
    outstanding_bytes: u64,
    outstanding_allocations: u64,
    mmap_bytes: u64,
    mmap_regions: u64,
    lost_events: u64,
    truncated_stacks: u64,
    losses: Counters<'a>,
    exe: &'a str,
    ns_pid: Option<i32>,
    parent: Option<i32>,
    exit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    children_not_followed: Option<u64>,
    stacks: Vec<Stack<'a>>,
    /// Stacks whose bytes grew in most reports and never went back,
    /// strongest first.
    suspects: Vec<Suspect<'a>>,
    /// `--sample-bytes` (null: off): bytes and allocations are estimates.
    sample_bytes: Option<u64>,
}

#[derive(Serialize)]
struct Sampled {
    bytes: u64,
    allocations: u64,
}

#[derive(Serialize)]
struct Suspect<'a> {
    #[serde(serialize_with = "hex")]
    stack_id: u64,
    category: &'a str,
}

#[derive(Serialize)]
struct Growth {
    since_previous: i64,
    since_start: i64,
    reports: u32,
    grew: u32,
    shrank: u32,
    suspect_rank: Option<u32>,
}

#[derive(Serialize)]
struct Stack<'a> {
    #[serde(serialize_with = "hex")]
    stack_id: u64,
    category: &'a str,
    bytes: u64,
    allocations: u64,
    oldest_ms: u64,
    end: &'a str,
    growth: Option<Growth>,
    /// With `--sample-bytes`: what was sampled (bytes and allocations are
    /// the estimate).
    #[serde(skip_serializing_if = "Option::is_none")]
    sampled: Option<Sampled>,
    frames: Vec<Frame<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allocs: Option<Vec<Alloc>>,
}

#[derive(Serialize)]
struct Frame<'a> {
    #[serde(serialize_with = "hex")]
    address: u64,
    function: Option<&'a str>,
    offset: Option<u64>,
    file: Option<&'a str>,
    line: Option<u32>,
    module: Option<&'a str>,
    #[serde(serialize_with = "opt_hex")]
    module_address: Option<u64>,
    method: &'a str,
    inlined: bool,
}

#[derive(Serialize)]
struct Alloc {
    #[serde(serialize_with = "hex")]
    address: u64,
    size: u64,
    age_ms: u64,
}

fn frame(f: &ReportFrame) -> Frame<'_> {
    Frame {
        address: f.address,
        function: f.function.as_deref(),
        offset: f.offset,
        file: f.file.as_deref(),
        line: f.line,
        module: f.module.as_deref(),
        module_address: f.module_address,
        method: f.method,
        inlined: f.inlined,
    }
}

fn stack(st: &StackEntry, show_allocs: bool) -> Stack<'_> {
    Stack {
        stack_id: st.id,
        category: st.category,
        bytes: st.bytes,
        allocations: st.allocations,
        oldest_ms: st.oldest_ns / 1_000_000,
        end: &st.end,
        growth: st.trend.map(|t| Growth {
            since_previous: t.since_previous,
            since_start: t.since_start,
            reports: t.reports,
            grew: t.grew,
            shrank: t.shrank,
            suspect_rank: t.suspect_rank,
        }),
        sampled: st
            .sampled
            .map(|(bytes, allocations)| Sampled { bytes, allocations }),
        frames: st.frames.iter().map(frame).collect(),
        allocs: show_allocs.then(|| {
            st.allocs
                .iter()
                .map(|&(address, size, age)| Alloc {
                    address,
                    size,
                    age_ms: age / 1_000_000,
                })
                .collect()
        }),
    }
}

pub fn render(s: &Snapshot) -> String {
    let report = Report {
        is_final: s.is_final,
        pid: s.pid,
        time: &s.time,
        arch: &s.arch,
        outstanding_bytes: s.heap.bytes,
        outstanding_allocations: s.heap.allocations,
        mmap_bytes: s.mmap.bytes,
        mmap_regions: s.mmap.allocations,
        lost_events: s.losses.lost_events,
        truncated_stacks: s.losses.truncated_stacks,
        losses: Counters(&s.losses.named),
        exe: &s.exe,
        ns_pid: s.ns_pid,
        parent: s.parent,
        exit: s.exit.as_deref(),
        children_not_followed: s.unfollowed,
        stacks: s
            .heap
            .stacks
            .iter()
            .chain(&s.mmap.stacks)
            .map(|st| stack(st, s.show_allocs))
            .collect(),
        suspects: s
            .suspects
            .iter()
            .map(|&(stack_id, category)| Suspect { stack_id, category })
            .collect(),
        sample_bytes: (s.sample_bytes > 0).then_some(s.sample_bytes),
    };
    let mut out = serde_json::to_string(&report).expect("a report serializes");
    out.push('\n');
    out
}
