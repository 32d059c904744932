//! The report formats other tools read: pprof profiles (read here by `go
//! tool pprof` itself), folded stacks and SVG flame graphs (inferno), each
//! checked against the fixture's own count of what it leaked, site by site.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// `go tool pprof ARGS... FILE`'s output (Debian's golang-go; scripts/deps.sh
/// installs it).
fn pprof(args: &[&str], file: &Path) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", scratch_dir())
        .output()
        .expect("running go tool pprof (golang-go)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `memleak --format FORMAT --output FILE -- PROGRAM`, which must succeed.
fn written(format: &str, file: &Path, program: &Path) -> Run {
    let run = memleak(&[
        "--format",
        format,
        "--output",
        path_str(file),
        "--",
        path_str(program),
    ]);
    assert!(run.status.success(), "{}", run.describe());
    run
}

/// The accounting fixture's sites that leak bytes.
fn sites(expect: &Expect) -> Vec<&ExpectSite> {
    expect.sites.iter().filter(|s| s.bytes > 0).collect()
}

#[test]
fn pprof_profile_as_go_tool_pprof_reads_it() {
    let bin = fixtures::accounting();
    let file = unique_scratch_path("profile.pb.gz");
    let run = written("pprof", &file, &bin);
    let expect = run.expect();

    // -top: every leaking function with exactly its bytes (cumulative:
    // the site's frame holds what its allocator call leaked).
    let top = pprof(
        &[
            "-top",
            "-cum",
            "-unit=B",
            "-nodecount=1000",
            "-sample_index=inuse_space",
        ],
        &file,
    );
    assert!(
        top.contains(&format!(
            "Showing nodes accounting for {0}B, 100% of {0}B total",
            expect.leaked_bytes
        )),
        "{top}"
    );
    let cum: BTreeMap<&str, &str> = top
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 6).then(|| (w[5], w[3]))
        })
        .collect();
    for s in sites(&expect) {
        assert_eq!(
            cum.get(s.function.as_str()).copied(),
            Some(format!("{}B", s.bytes).as_str()),
            "{}: {top}",
            s.function
        );
    }
    let objects = pprof(
        &[
            "-top",
            "-cum",
            "-nodecount=1000",
            "-sample_index=inuse_objects",
        ],
        &file,
    );
    assert!(
        objects.contains(&format!(
            "Showing nodes accounting for {0}, 100% of {0} total",
            expect.leaked_allocations
        )),
        "{objects}"
    );

    // -traces -lines: the whole chain, each site on its call's line.
    let traces = pprof(&["-traces", "-lines", "-sample_index=inuse_space"], &file);
    let src = fixture_src("accounting.c");
    for s in sites(&expect) {
        let marker = format!("CALL:{}@{}", s.allocator, s.function);
        let line = format!(
            "{} {}:{}",
            s.function,
            path_str(&src),
            marker_line(&src, &marker)
        );
        let trace = traces
            .split("-----------+")
            .find(|t| t.contains(&line))
            .unwrap_or_else(|| panic!("no trace has `{line}`:\n{traces}"));
        assert!(
            trace.contains(&format!("{}B ", s.bytes)) || trace.contains(&format!(" {}B", s.bytes)),
            "{}: {trace}",
            s.function
        );
        for outer in ["main ", "__libc_start_call_main "] {
            assert!(trace.contains(outer), "{trace}");
        }
    }

    // -raw: the mappings carry the build IDs.
    let raw = pprof(&["-raw"], &file);
    let id = tool_output("readelf", &["-n"], &bin)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .expect("a build ID");
    assert!(
        raw.lines()
            .any(|l| l.contains(path_str(&bin)) && l.contains(&id)),
        "no mapping of {} with build ID {id}:\n{raw}",
        bin.display()
    );
    let _ = std::fs::remove_file(file);
}

/// The bytes a folded line ends with, by its leaf-most site.
fn folded_by_site(text: &str, expect: &Expect) -> BTreeMap<String, u64> {
    let mut by_site = BTreeMap::new();
    for line in text.lines() {
        let (stack, n) = line.rsplit_once(' ').expect("`stack count`");
        let n: u64 = n.parse().expect("a count");
        for s in &expect.sites {
            if stack
                .split(';')
                .any(|f| f.starts_with(&format!("{} (", s.function)))
            {
                *by_site.entry(s.function.clone()).or_insert(0) += n;
            }
        }
    }
    by_site
}

#[test]
fn folded_stacks_and_flame_graph_widths_are_the_bytes() {
    let bin = fixtures::accounting();
    let folded = unique_scratch_path("stacks.folded");
    let run = written("folded", &folded, &bin);
    let expect = run.expect();
    let text = std::fs::read_to_string(&folded).unwrap();
    let total: u64 = text
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, expect.leaked_bytes, "{text}");
    let by_site = folded_by_site(&text, &expect);
    let src = fixture_src("accounting.c");
    for s in sites(&expect) {
        assert_eq!(
            by_site.get(&s.function),
            Some(&s.bytes),
            "{}: {text}",
            s.function
        );
        let frame = format!(
            "{} (accounting.c:{})",
            s.function,
            marker_line(&src, &format!("CALL:{}@{}", s.allocator, s.function))
        );
        assert!(
            text.lines().any(|l| l.starts_with("_start;")
                && l.contains(";main (accounting.c:")
                && l.contains(&frame)),
            "no folded stack from _start through main to `{frame}`:\n{text}"
        );
    }

    let svg = unique_scratch_path("flame.svg");
    written("svg", &svg, &bin);
    let doc = std::fs::read_to_string(&svg).unwrap();
    assert!(
        doc.starts_with("<?xml") && doc.contains("<svg"),
        "not an SVG"
    );
    // Each frame: <title>NAME (N bytes, P%)</title><rect x=".." width="W%"
    let frames: Vec<(String, u64, f64)> = doc
        .split("<title>")
        .skip(1)
        .filter_map(|g| {
            let (title, rest) = g.split_once("</title>")?;
            let (name, count) = title.rsplit_once(" (")?;
            let n: u64 = count.split(' ').next()?.replace(',', "").parse().ok()?;
            let w = rest
                .split("width=\"")
                .nth(1)?
                .split('%')
                .next()?
                .parse()
                .ok()?;
            Some((name.replace("&lt;", "<").replace("&gt;", ">"), n, w))
        })
        .collect();
    let all = frames
        .iter()
        .find(|f| f.0 == "all")
        .expect("the root frame");
    assert_eq!(all.1, expect.leaked_bytes, "the root holds every byte");
    for s in sites(&expect) {
        let f = frames
            .iter()
            .find(|f| f.0.starts_with(&format!("{} (accounting.c:", s.function)))
            .unwrap_or_else(|| panic!("no frame of {} in the flame graph", s.function));
        assert_eq!(f.1, s.bytes, "{}", s.function);
        let want = 100.0 * s.bytes as f64 / expect.leaked_bytes as f64;
        assert!(
            (f.2 - want).abs() < 0.01,
            "{}: width {}% for {} of {} bytes ({want:.4}%)",
            s.function,
            f.2,
            s.bytes,
            expect.leaked_bytes
        );
    }
    let _ = std::fs::remove_file(folded);
    let _ = std::fs::remove_file(svg);
}

#[test]
fn documents_of_periodic_reports_are_numbered_files() {
    // leaky: 30 iterations of 100 ms; a report every second.
    let bin = fixtures::leaky();
    let file = unique_scratch_path("periodic.folded");
    let run = memleak(&[
        "--format",
        "folded",
        "--output",
        path_str(&file),
        "1",
        "--",
        path_str(&bin),
        "30",
        "100",
    ]);
    assert!(run.status.success(), "{}", run.describe());
    let expect = run.expect();
    let numbered = |n: u64| {
        let mut name = file.file_name().unwrap().to_os_string();
        name.push(format!(".{n}"));
        file.with_file_name(name)
    };
    assert!(
        numbered(1).is_file() && numbered(2).is_file(),
        "FILE.1, FILE.2"
    );
    let bytes = |p: &Path| -> u64 {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum()
    };
    // The final report is FILE: the program's leaks.
    assert_eq!(bytes(&file), expect.leaked_bytes);
    assert!(bytes(&numbered(1)) <= bytes(&numbered(2)));
    for n in 1..100 {
        let _ = std::fs::remove_file(numbered(n));
    }
    let _ = std::fs::remove_file(file);
}

#[test]
fn binary_formats_need_a_file() {
    for f in ["svg", "pprof"] {
        let mut cmd = Command::new(memleak_bin());
        cmd.args(["--format", f, "--", "true"]);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: --format")
                && err.contains("--output FILE")
                && err.lines().count() == 1,
            "{err}"
        );
    }
}

/// A frame box of an inferno flame graph: its title's name, its rect's
/// x and width (percent of the frames area), y, height and fill colour.
struct FrameBox {
    name: String,
    x: f64,
    width: f64,
    y: f64,
    height: f64,
    fill: [u8; 3],
}

fn frame_boxes(svg: &str) -> Vec<FrameBox> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[start..].split('"').next()?.to_string())
    };
    svg.split("<g><title>")
        .skip(1)
        .filter_map(|g| {
            let (title, rest) = g.split_once("</title>")?;
            let (name, _) = title.rsplit_once(" (")?;
            let rect = rest.split_once("<rect")?.1.split_once("/>")?.0;
            let pct = |v: String| v.trim_end_matches('%').parse::<f64>().ok();
            let fill = attr(rect, "fill")?;
            let rgb: Vec<u8> = fill
                .trim_start_matches("rgb(")
                .trim_end_matches(')')
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect();
            Some(FrameBox {
                name: name.to_string(),
                x: pct(attr(rect, "x")?)?,
                width: pct(attr(rect, "width")?)?,
                y: attr(rect, "y")?.parse().ok()?,
                height: attr(rect, "height")?.parse().ok()?,
                fill: rgb.try_into().ok()?,
            })
        })
        .collect()
}

#[test]
fn flame_graph_of_the_demo_renders_in_headless_chromium() {
    let bin = fixtures::leaky();
    // Chromium goes by the file name's extension.
    let svg = unique_scratch_path("demo").with_extension("svg");
    written("svg", &svg, &bin);
    let doc = std::fs::read_to_string(&svg).unwrap();
    let boxes = frame_boxes(&doc);
    // The frames area: x="10" width="1180" of a 1200-pixel-wide image.
    assert!(
        doc.contains(r#"<svg id="frames" x="10" width="1180""#),
        "layout changed"
    );
    let png = svg.with_extension("png");
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,400",
        ])
        .arg(format!("--screenshot={}", path_str(&png)))
        .arg(format!("file://{}", path_str(&svg)))
        .env("HOME", scratch_dir())
        .output()
        .expect("running chromium (Debian's chromium; scripts/deps.sh installs it)");
    assert!(
        png.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert_eq!((info.width, info.height), (1200, 400));
    let pixel = |x: u32, y: u32| -> [u8; 3] {
        let i = (y as usize * info.width as usize + x as usize) * channels;
        [buf[i], buf[i + 1], buf[i + 2]]
    };
    // Each frame of the chain is drawn: the screenshot has the box's own
    // colour at its centre, and the boxes stack from main up to malloc.
    let src = example_src("leaky.c");
    let mut ys = Vec::new();
    for (function, callee) in [
        ("main", "alloc_v1"),
        ("alloc_v1", "alloc_v2"),
        ("alloc_v2", "alloc_v3"),
        ("alloc_v3", "malloc"),
    ] {
        let name = format!(
            "{function} (leaky.c:{})",
            marker_line(&src, &format!("CALL:{callee}"))
        );
        let b = boxes
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no box `{name}` in the flame graph"));
        let x = 10.0 + (b.x + b.width / 2.0) / 100.0 * 1180.0;
        let y = b.y + b.height / 2.0;
        let got = pixel(x as u32, y as u32);
        assert!(
            got.iter().zip(b.fill).all(|(g, w)| g.abs_diff(w) <= 12),
            "{name}: the screenshot has {got:?} at ({x}, {y}), the box is {:?}",
            b.fill
        );
        ys.push(b.y);
    }
    assert!(
        ys.windows(2).all(|w| w[1] < w[0]),
        "callees above callers: {ys:?}"
    );
    let malloc = boxes.iter().find(|b| b.name.starts_with("malloc")).unwrap();
    assert!(malloc.y < ys[3], "malloc on top of alloc_v3");
    let _ = std::fs::remove_file(svg);
    let _ = std::fs::remove_file(png);
}
