//! A flame graph of the outstanding bytes (SVG, by inferno): each box a
//! frame (`function (file:line)`, see `folded`), as wide as the bytes its
//! stacks hold; its title (the tooltip) gives the bytes and share.

use super::{folded, Snapshot};

pub fn render(snaps: &[Snapshot]) -> Vec<u8> {
    let lines = folded::lines(snaps);
    let mut opts = inferno::flamegraph::Options::default();
    let Some(s) = snaps.first() else {
        return Vec::new();
    };
    let (bytes, allocations) = snaps.iter().fold((0, 0), |(b, n), s| {
        (
            b + s.heap.bytes + s.mmap.bytes,
            n + s.heap.allocations + s.mmap.allocations,
        )
    });
    opts.title = format!(
        "memleak: outstanding bytes of {} (pid {}{}){}",
        s.exe,
        s.pid,
        if snaps.len() > 1 {
            " and its children"
        } else {
            ""
        },
        if s.is_final { ", final" } else { "" }
    );
    opts.subtitle = Some(format!(
        "{bytes} bytes in {allocations} blocks (heap and mmap) at {}",
        s.time
    ));
    opts.count_name = "bytes".to_string();
    opts.name_type = "Frame:".to_string();
    let mut out = Vec::new();
    if lines.is_empty() {
        // inferno refuses an empty profile: one box says so.
        let none = ["[no outstanding allocations] 1".to_string()];
        let _ =
            inferno::flamegraph::from_lines(&mut opts, none.iter().map(String::as_str), &mut out);
        return out;
    }
    if let Err(e) =
        inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut out)
    {
        log::warn!("flame graph: {e}");
    }
    out
}
