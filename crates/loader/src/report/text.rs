//! The text report, as BCC's memleak prints it, with file:line and how
//! each frame was found.

use std::fmt::Write as _;
use std::path::Path;

use super::{Snapshot, StackEntry};

/// Counters that are work done, not losses: left out of the text's list.
const NOT_LOSSES: &[&str] = &[
    "nested_calls",
    "sampled_out",
    "size_filtered",
    "truncated_stacks",
    "kernel_stacks",
    "rule_misses",
    "rule_hits",
    "ringbuf_bytes",
    "misses_resolved",
    "rules_cached",
    "unwind_verified",
    "partial_munmaps",
    "finished_on_host",
];

fn basename(p: &str) -> &str {
    Path::new(p)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(p)
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    if s.section {
        let _ = write!(out, "== process {} ({})", s.pid, s.exe);
        if let Some(n) = s.ns_pid {
            let _ = write!(out, ", pid {n} in its namespace");
        }
        if let Some(p) = s.parent {
            let _ = write!(out, ", child of {p}");
        }
        if let Some(e) = &s.exit {
            let _ = write!(out, ", {e}");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "[{}] {}Top {} stacks with outstanding allocations (total {}{} bytes in {} allocations{}):",
        s.time,
        if s.is_final { "Final report. " } else { "" },
        s.heap.stacks.len(),
        if s.sample_bytes > 0 { "~" } else { "" },
        s.heap.bytes,
        s.heap.allocations,
        if s.sample_bytes > 0 {
            format!(
                ", estimated from allocations sampled by bytes, 1 in {}",
                s.sample_bytes
            )
        } else {
            String::new()
        }
    );
    for st in &s.heap.stacks {
        stack(&mut out, st, "allocations", s.show_allocs);
    }
    suspects(&mut out, s);
    if s.show_mmap {
        let _ = writeln!(
            out,
            "mmap: {} bytes in {} regions",
            s.mmap.bytes, s.mmap.allocations
        );
        for st in &s.mmap.stacks {
            stack(&mut out, st, "mmap regions", s.show_allocs);
        }
    }
    let _ = writeln!(
        out,
        "lost events: {}, truncated stacks: {}",
        s.losses.lost_events, s.losses.truncated_stacks
    );
    let detail: Vec<String> = s
        .losses
        .named
        .iter()
        .filter(|(n, v)| *v > 0 && !NOT_LOSSES.contains(&n.as_str()))
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    if !detail.is_empty() {
        let _ = writeln!(out, "  ({})", detail.join(", "));
    }
    if let Some(n) = s.unfollowed.filter(|&n| n > 0) {
        let _ = writeln!(
            out,
            "{n} child process{} forked and not followed (-f follows them)",
            if n == 1 { "" } else { "es" }
        );
    }
    out
}

/// `+16 B` / `-8 B` / `0 B`.
fn signed(v: i64) -> String {
    if v > 0 {
        format!("+{v} B")
    } else {
        format!("{v} B")
    }
}

/// The trend column: the change since the last report and since the first,
/// the reports it grew in, its rank among the suspects.
fn trend(t: &super::growth::Trend) -> String {
    let mut s = format!(
        " [{} since last, {} since first, grew {}/{}",
        signed(t.since_previous),
        signed(t.since_start),
        t.grew,
        t.reports
    );
    if let Some(r) = t.suspect_rank {
        let _ = write!(s, ", suspect #{r}");
    }
    s.push(']');
    s
}

/// The suspects, strongest first, with the innermost frames of their own.
fn suspects(out: &mut String, s: &Snapshot) {
    let all: Vec<&StackEntry> = s.heap.stacks.iter().chain(&s.mmap.stacks).collect();
    let shown: Vec<&StackEntry> = s
        .suspects
        .iter()
        .filter_map(|(id, cat)| {
            all.iter()
                .find(|e| e.id == *id && e.category == *cat)
                .copied()
        })
        .collect();
    if shown.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "Suspects (outstanding bytes grew in most reports and never went back):"
    );
    for e in shown {
        let t = e.trend.expect("a suspect has a trend");
        let path: Vec<&str> = e
            .frames
            .iter()
            .filter_map(|f| f.function.as_deref())
            .skip(1)
            .take(3)
            .collect();
        let _ =
            writeln!(
            out,
            "  #{} stack {:#x}: {} bytes in {} {}, {} since first, grew in {} of {} reports: {}",
            t.suspect_rank.unwrap_or(0),
            e.id,
            e.bytes,
            e.allocations,
            if e.category == "mmap" { "regions" } else { "allocations" },
            signed(t.since_start),
            t.grew,
            t.reports,
            path.join(" <- ")
        );
    }
}

fn stack(out: &mut String, s: &StackEntry, what: &str, show_allocs: bool) {
    let _ = writeln!(
        out,
        "{}{} bytes in {} {what} from stack {:#x} (oldest {:.1} s){}",
        if s.sampled.is_some() { "~" } else { "" },
        s.bytes,
        s.allocations,
        s.id,
        s.oldest_ns as f64 / 1e9,
        s.trend
            .filter(|t| t.reports >= 2)
            .map(|t| trend(&t))
            .unwrap_or_default()
    );
    for (i, f) in s.frames.iter().enumerate() {
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
