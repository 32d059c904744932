//! Folded stacks (Brendan Gregg's collapsed format, as flamegraph.pl,
//! inferno and speedscope read it): one line per stack, its frames from
//! the outermost to the allocator joined by `;`, then its outstanding
//! bytes. A frame is `function (file:line)`, or `function`, or
//! `?? [module+0xaddress]`; inlined frames end in `_[i]` (inferno colours
//! them so); mmap regions sit under a root frame `[mmap]`; with several
//! processes (`-f`), each under a root frame `[pid PID exe]`.

use std::fmt::Write as _;
use std::path::Path;

use super::{ReportFrame, Snapshot};

/// The name of a frame in a folded stack.
pub fn frame_name(f: &ReportFrame) -> String {
    let base = |p: &str| {
        Path::new(p)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(p)
            .to_string()
    };
    let mut name = match (&f.function, &f.file, f.line) {
        (Some(func), Some(file), Some(line)) => format!("{func} ({}:{line})", base(file)),
        (Some(func), _, _) => func.clone(),
        (None, _, _) => match (&f.module, f.module_address) {
            (Some(m), Some(a)) => format!("?? [{}+{a:#x}]", base(m)),
            (Some(m), None) => format!("?? [{}]", base(m)),
            (None, _) => format!("?? [{:#x}]", f.address),
        },
    };
    // `;` separates frames.
    name = name.replace(';', ":");
    if f.inlined {
        name.push_str("_[i]");
    }
    name
}

/// The root frame of process `s` among several.
pub fn process_root(s: &Snapshot) -> String {
    format!("[pid {} {}]", s.pid, s.exe).replace(';', ":")
}

/// The folded lines of a report, largest stacks first.
pub fn lines(snaps: &[Snapshot]) -> Vec<String> {
    let mut out = Vec::new();
    for s in snaps {
        let process = (snaps.len() > 1).then(|| process_root(s));
        process_lines(s, process.as_deref(), &mut out);
    }
    out
}

fn process_lines(s: &Snapshot, process: Option<&str>, out: &mut Vec<String>) {
    for (root, group) in [(None, &s.heap), (Some("[mmap]"), &s.mmap)] {
        for st in &group.stacks {
            let mut line = String::new();
            for r in [process, root].into_iter().flatten() {
                if !line.is_empty() {
                    line.push(';');
                }
                line.push_str(r);
            }
            for f in st.frames.iter().rev() {
                if !line.is_empty() {
                    line.push(';');
                }
                line.push_str(&frame_name(f));
            }
            if line.is_empty() {
                line.push_str("[unknown stack]");
            }
            let _ = write!(line, " {}", st.bytes);
            out.push(line);
        }
    }
}

pub fn render(snaps: &[Snapshot]) -> String {
    let mut out = String::new();
    for l in lines(snaps) {
        out.push_str(&l);
        out.push('\n');
    }
    out
}
