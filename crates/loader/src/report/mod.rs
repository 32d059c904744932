//! Reports: outstanding allocations grouped by stack, largest first, as text
//! or one JSON object per report.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use memleak_bpf::Counter;

use crate::cli::{Format, Options};
use crate::process::ChildExit;
use crate::tracker::{Alloc, ReportFrame, Tracker};

pub struct StackReport<'a> {
    pub id: u64,
    pub category: &'static str,
    pub bytes: u64,
    pub allocations: u64,
    pub oldest_ns: u64,
    /// Index of the stack in the tracker (symbolized only when shown).
    pub index: u32,
    pub tracker: &'a Tracker,
    pub end: &'static str,
    pub allocs: Vec<(u64, u64, u64)>, // address, size, age ns
}

impl StackReport<'_> {
    fn frames(&self) -> &[ReportFrame] {
        self.tracker.symbolized(self.index)
    }
}

/// Every loss counter, by name, and their sum.
pub struct Losses {
    pub named: Vec<(&'static str, u64)>,
    pub lost_events: u64,
    pub truncated_stacks: u64,
}

pub fn losses(tracker: &Tracker, bpf: &[u64], prog_misses: u64, buffer_lost: u64) -> Losses {
    let mut named = Vec::new();
    let mut lost = 0;
    for c in Counter::ALL {
        let v = bpf[c as usize];
        named.push((c.name(), v));
        if c.is_loss() {
            lost += v;
        }
    }
    let u = tracker.counts;
    named.push(("bpf_prog_misses", prog_misses));
    named.push(("perf_buffer_lost", buffer_lost));
    named.push(("bad_records", u.bad_records));
    named.push(("unresolved_stacks", u.unresolved));
    named.push(("truncated_stacks", u.truncated_stacks));
    named.push(("unwind_stopped", u.unwind_stopped));
    named.push(("scanned_stacks", u.scanned_stacks));
    named.push(("misses_resolved", u.misses_resolved));
    named.push(("rules_cached", u.rules_cached));
    named.push(("rule_cache_failures", u.rule_failures));
    named.push(("unwind_verified", u.verified));
    named.push(("unwind_disagreements", u.disagreements));
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

fn wall_clock() -> String {
    // SAFETY: time/localtime_r write only into the structs passed.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    }
}

fn group<'a>(
    tracker: &'a Tracker,
    allocs: impl Iterator<Item = (u64, &'a Alloc)>,
    category: &'static str,
    now: u64,
    older_ns: u64,
    list_allocs: bool,
) -> Vec<StackReport<'a>> {
    let mut by_stack: HashMap<u32, StackReport<'a>> = HashMap::new();
    for (addr, a) in allocs {
        let age = now.saturating_sub(a.ts_ns);
        if age < older_ns {
            continue;
        }
        let s = &tracker.stacks[a.stack as usize];
        let r = by_stack.entry(a.stack).or_insert_with(|| StackReport {
            id: s.id,
            category,
            bytes: 0,
            allocations: 0,
            oldest_ns: 0,
            index: a.stack,
            tracker,
            end: s.end,
            allocs: Vec::new(),
        });
        r.bytes += a.size;
        r.allocations += 1;
        r.oldest_ns = r.oldest_ns.max(age);
        if list_allocs {
            r.allocs.push((addr, a.size, age));
        }
    }
    let mut v: Vec<StackReport<'a>> = by_stack.into_values().collect();
    v.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.allocations.cmp(&a.allocations))
            .then(a.id.cmp(&b.id))
    });
    for r in &mut v {
        r.allocs.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    }
    v
}

fn basename(p: &str) -> &str {
    Path::new(p)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(p)
}

fn json_str(out: &mut String, s: Option<&str>) {
    let Some(s) = s else {
        out.push_str("null");
        return;
    };
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt_num(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

/// Renders one report.
/// Which process a report is about.
pub struct Header<'a> {
    pub pid: i32,
    /// Its program, as the process names it.
    pub exe: &'a str,
    /// The traced process that forked it.
    pub parent: Option<i32>,
    /// How it ended, if it did.
    pub exit: Option<ChildExit>,
    /// One section among several (`-f`): the text names the process.
    pub section: bool,
    /// Children it forked that memleak did not follow (without `-f`).
    pub unfollowed: Option<u64>,
    /// Its PID in its own PID namespace (a container), if it has one.
    pub ns_pid: Option<i32>,
}

pub fn render(
    tracker: &Tracker,
    opts: &Options,
    losses: &Losses,
    is_final: bool,
    header: &Header<'_>,
) -> String {
    let pid = header.pid;
    let now = monotonic_ns();
    let older_ns = opts.older_ms.saturating_mul(1_000_000);
    let heap = group(
        tracker,
        tracker.outstanding.iter().map(|(a, r)| (*a, r)),
        "heap",
        now,
        older_ns,
        opts.show_allocs,
    );
    let mmap = group(
        tracker,
        tracker.mmaps.iter().map(|(a, r)| (*a, r)),
        "mmap",
        now,
        older_ns,
        opts.show_allocs,
    );
    let total_bytes: u64 = heap.iter().map(|s| s.bytes).sum();
    let total_allocs: u64 = heap.iter().map(|s| s.allocations).sum();
    let mmap_bytes: u64 = mmap.iter().map(|s| s.bytes).sum();
    let mmap_regions: u64 = mmap.iter().map(|s| s.allocations).sum();
    let mut out = String::new();
    match opts.format {
        Format::Json => {
            let _ = write!(
                out,
                "{{\"final\":{is_final},\"pid\":{pid},\"time\":\"{}\",\"arch\":\"{}\",\"outstanding_bytes\":{total_bytes},\"outstanding_allocations\":{total_allocs},\"mmap_bytes\":{mmap_bytes},\"mmap_regions\":{mmap_regions},\"lost_events\":{},\"truncated_stacks\":{},\"losses\":{{",
                wall_clock(),
                tracker.arch_name(),
                losses.lost_events,
                losses.truncated_stacks
            );
            for (i, (name, v)) in losses.named.iter().enumerate() {
                let _ = write!(out, "{}\"{name}\":{v}", if i > 0 { "," } else { "" });
            }
            out.push_str("},\"exe\":");
            json_str(&mut out, Some(header.exe));
            out.push_str(",\"ns_pid\":");
            json_opt_num(&mut out, header.ns_pid.map(|p| p as u64));
            out.push_str(",\"parent\":");
            json_opt_num(&mut out, header.parent.map(|p| p as u64));
            out.push_str(",\"exit\":");
            json_str(&mut out, header.exit.map(|e| e.to_string()).as_deref());
            if let Some(n) = header.unfollowed {
                let _ = write!(out, ",\"children_not_followed\":{n}");
            }
            out.push_str(",\"stacks\":[");
            let shown = heap.iter().take(opts.top).chain(mmap.iter().take(opts.top));
            for (i, s) in shown.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    "{{\"stack_id\":\"{:#x}\",\"category\":\"{}\",\"bytes\":{},\"allocations\":{},\"oldest_ms\":{},\"end\":\"{}\",\"frames\":[",
                    s.id,
                    s.category,
                    s.bytes,
                    s.allocations,
                    s.oldest_ns / 1_000_000,
                    s.end
                );
                for (j, f) in s.frames().iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{{\"address\":\"{:#x}\",\"function\":", f.address);
                    json_str(&mut out, f.function.as_deref());
                    out.push_str(",\"offset\":");
                    json_opt_num(&mut out, f.offset);
                    out.push_str(",\"file\":");
                    json_str(&mut out, f.file.as_deref());
                    out.push_str(",\"line\":");
                    json_opt_num(&mut out, f.line.map(u64::from));
                    out.push_str(",\"module\":");
                    json_str(&mut out, f.module.as_deref());
                    out.push_str(",\"module_address\":");
                    match f.module_address {
                        Some(a) => {
                            let _ = write!(out, "\"{a:#x}\"");
                        }
                        None => out.push_str("null"),
                    }
                    let _ = write!(
                        out,
                        ",\"method\":\"{}\",\"inlined\":{}}}",
                        f.method, f.inlined
                    );
                }
                out.push(']');
                if opts.show_allocs {
                    out.push_str(",\"allocs\":[");
                    for (j, (addr, size, age)) in s.allocs.iter().enumerate() {
                        let _ = write!(
                            out,
                            "{}{{\"address\":\"{addr:#x}\",\"size\":{size},\"age_ms\":{}}}",
                            if j > 0 { "," } else { "" },
                            age / 1_000_000
                        );
                    }
                    out.push(']');
                }
                out.push('}');
            }
            out.push_str("]}\n");
        }
        Format::Text => {
            if header.section {
                let _ = write!(out, "== process {pid} ({})", header.exe);
                if let Some(n) = header.ns_pid {
                    let _ = write!(out, ", pid {n} in its namespace");
                }
                if let Some(p) = header.parent {
                    let _ = write!(out, ", child of {p}");
                }
                if let Some(e) = header.exit {
                    let _ = write!(out, ", {e}");
                }
                out.push('\n');
            }
            let _ = writeln!(
                out,
                "[{}] {}Top {} stacks with outstanding allocations (total {total_bytes} bytes in {total_allocs} allocations):",
                wall_clock(),
                if is_final { "Final report. " } else { "" },
                opts.top.min(heap.len()),
            );
            for s in heap.iter().take(opts.top) {
                text_stack(&mut out, s, "allocations", opts.show_allocs);
            }
            if opts.mmap {
                let _ = writeln!(out, "mmap: {mmap_bytes} bytes in {mmap_regions} regions");
                for s in mmap.iter().take(opts.top) {
                    text_stack(&mut out, s, "mmap regions", opts.show_allocs);
                }
            }
            let _ = writeln!(
                out,
                "lost events: {}, truncated stacks: {}",
                losses.lost_events, losses.truncated_stacks
            );
            let detail: Vec<String> = losses
                .named
                .iter()
                .filter(|(n, v)| {
                    *v > 0
                        && !matches!(
                            *n,
                            "nested_calls"
                                | "sampled_out"
                                | "size_filtered"
                                | "truncated_stacks"
                                | "kernel_stacks"
                                | "rule_misses"
                                | "rule_hits"
                                | "ringbuf_bytes"
                                | "misses_resolved"
                                | "rules_cached"
                                | "unwind_verified"
                                | "partial_munmaps"
                        )
                })
                .map(|(n, v)| format!("{n} {v}"))
                .collect();
            if !detail.is_empty() {
                let _ = writeln!(out, "  ({})", detail.join(", "));
            }
            if let Some(n) = header.unfollowed.filter(|&n| n > 0) {
                let _ = writeln!(
                    out,
                    "{n} child process{} forked and not followed (-f follows them)",
                    if n == 1 { "" } else { "es" }
                );
            }
        }
    }
    out
}

fn text_stack(out: &mut String, s: &StackReport<'_>, what: &str, show_allocs: bool) {
    let _ = writeln!(
        out,
        "{} bytes in {} {what} from stack {:#x} (oldest {:.1} s)",
        s.bytes,
        s.allocations,
        s.id,
        s.oldest_ns as f64 / 1e9
    );
    for (i, f) in s.frames().iter().enumerate() {
        let mut line = format!("    #{i} {:#018x} ", f.address);
        match &f.function {
            Some(name) => {
                line.push_str(name);
                if let Some(off) = f.offset.filter(|&o| o > 0) {
                    let _ = write!(line, "+{off:#x}");
                }
            }
            None => line.push_str("??"),
        }
        if let (Some(file), Some(l)) = (&f.file, f.line) {
            let _ = write!(line, " ({}:{l})", basename(file));
        }
        match (
            &f.module,
            f.function.is_none().then_some(f.module_address).flatten(),
        ) {
            // No symbol: where in the file, for addr2line on the host.
            (Some(m), Some(a)) => {
                let _ = write!(line, " [{}+{a:#x}]", basename(m));
            }
            (Some(m), None) => {
                let _ = write!(line, " [{}]", basename(m));
            }
            (None, _) => {}
        }
        if f.inlined {
            line.push_str(" (inlined)");
        }
        let _ = write!(line, " <{}>", f.method);
        let _ = writeln!(out, "{line}");
    }
    if s.end != "outermost" {
        let _ = writeln!(out, "    (stack walk stopped: {})", s.end.replace('_', " "));
    }
    if show_allocs {
        for (addr, size, age) in &s.allocs {
            let _ = writeln!(
                out,
                "      addr = {addr:#x} size = {size} age = {:.1} s",
                *age as f64 / 1e9
            );
        }
    }
}
