//! The JSON report: one object per line and report (see README).

use std::fmt::Write as _;

use super::Snapshot;

fn string(out: &mut String, s: Option<&str>) {
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

fn number(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"final\":{},\"pid\":{},\"time\":\"{}\",\"arch\":\"{}\",\"outstanding_bytes\":{},\"outstanding_allocations\":{},\"mmap_bytes\":{},\"mmap_regions\":{},\"lost_events\":{},\"truncated_stacks\":{},\"losses\":{{",
        s.is_final,
        s.pid,
        s.time,
        s.arch,
        s.heap.bytes,
        s.heap.allocations,
        s.mmap.bytes,
        s.mmap.allocations,
        s.losses.lost_events,
        s.losses.truncated_stacks
    );
    for (i, (name, v)) in s.losses.named.iter().enumerate() {
        let _ = write!(out, "{}\"{name}\":{v}", if i > 0 { "," } else { "" });
    }
    out.push_str("},\"exe\":");
    string(&mut out, Some(&s.exe));
    out.push_str(",\"ns_pid\":");
    number(&mut out, s.ns_pid.map(|p| p as u64));
    out.push_str(",\"parent\":");
    number(&mut out, s.parent.map(|p| p as u64));
    out.push_str(",\"exit\":");
    string(&mut out, s.exit.as_deref());
    if let Some(n) = s.unfollowed {
        let _ = write!(out, ",\"children_not_followed\":{n}");
    }
    out.push_str(",\"stacks\":[");
    for (i, st) in s.heap.stacks.iter().chain(&s.mmap.stacks).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"stack_id\":\"{:#x}\",\"category\":\"{}\",\"bytes\":{},\"allocations\":{},\"oldest_ms\":{},\"end\":\"{}\",\"frames\":[",
            st.id,
            st.category,
            st.bytes,
            st.allocations,
            st.oldest_ns / 1_000_000,
            st.end
        );
        for (j, f) in st.frames.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"address\":\"{:#x}\",\"function\":", f.address);
            string(&mut out, f.function.as_deref());
            out.push_str(",\"offset\":");
            number(&mut out, f.offset);
            out.push_str(",\"file\":");
            string(&mut out, f.file.as_deref());
            out.push_str(",\"line\":");
            number(&mut out, f.line.map(u64::from));
            out.push_str(",\"module\":");
            string(&mut out, f.module.as_deref());
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
        if s.show_allocs {
            out.push_str(",\"allocs\":[");
            for (j, (addr, size, age)) in st.allocs.iter().enumerate() {
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
    out
}
