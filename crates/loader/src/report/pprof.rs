//! The pprof heap profile (profile.proto, gzip'd; what `go tool pprof`,
//! Pyroscope, Parca and Grafana read): sample types `inuse_objects/count`
//! and `inuse_space/bytes` (the default), one sample per stack with a
//! `kind` label (heap or mmap) and the walk's `end`; each physical frame a
//! location at its address in its mapping (path, build ID, file offset),
//! whose lines are its function and the functions inlined into it,
//! innermost first, with file and line.

use crate::sources::hex;
use std::collections::HashMap;
use std::io::Write as _;

use prost::Message as _;

use super::profile::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use super::{folded, ReportFrame, Snapshot};

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings::default();
        s.get("");
        s
    }

    fn get(&mut self, v: &str) -> i64 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(v.to_string());
        self.index.insert(v.to_string(), i);
        i
    }
}

/// A location by mapping, address and lines (function id, line).
type LocationKey = (u64, u64, Vec<(u64, i64)>);

/// The profile of a report (several processes: a `pid` label on each
/// sample, their mappings together).
pub fn profile(snaps: &[Snapshot]) -> Profile {
    let mut strings = Strings::new();
    let mut p = Profile {
        sample_type: vec![
            ValueType {
                r#type: strings.get("inuse_objects"),
                unit: strings.get("count"),
            },
            ValueType {
                r#type: strings.get("inuse_space"),
                unit: strings.get("bytes"),
            },
        ],
        time_nanos: (snaps.first().map_or(0, |s| s.unix_ms) as i64).saturating_mul(1_000_000),
        // Sampled by bytes: the values are already scaled estimates.
        period: snaps.first().map_or(1, |s| s.sample_bytes.max(1)) as i64,
        ..Default::default()
    };
    p.period_type = Some(ValueType {
        r#type: strings.get("space"),
        unit: strings.get("bytes"),
    });
    p.default_sample_type = 1;
    let mappings: Vec<(i32, &super::MappingInfo)> = snaps
        .iter()
        .flat_map(|s| s.mappings.iter().map(move |m| (s.pid, m)))
        .collect();
    for (i, (_, m)) in mappings.iter().enumerate() {
        p.mapping.push(Mapping {
            id: i as u64 + 1,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.file_offset,
            filename: strings.get(&m.path),
            build_id: strings.get(&hex(&m.build_id)),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
    }
    let mapping_of = |pid: i32, address: u64| {
        mappings
            .iter()
            .position(|(p, m)| *p == pid && (m.start..m.limit).contains(&address))
            .map_or(0, |i| i as u64 + 1)
    };
    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut locations: HashMap<LocationKey, u64> = HashMap::new();
    let kind_key = strings.get("kind");
    let end_key = strings.get("end");
    let pid_key = strings.get("pid");
    let groups = snaps
        .iter()
        .flat_map(|s| [(s.pid, "heap", &s.heap), (s.pid, "mmap", &s.mmap)]);
    for (pid, kind, group) in groups {
        for st in &group.stacks {
            let mut ids = Vec::new();
            // The lines of one physical frame: those of one depth.
            let mut frames: Vec<Vec<&ReportFrame>> = Vec::new();
            for f in &st.frames {
                match frames.last_mut() {
                    Some(last) if last[0].depth == f.depth => last.push(f),
                    _ => frames.push(vec![f]),
                }
            }
            for lines in frames {
                let mut key_lines = Vec::new();
                for f in &lines {
                    let name = match &f.function {
                        Some(n) => n.clone(),
                        None => folded::frame_name(f),
                    };
                    let file = f.file.clone().unwrap_or_default();
                    let next = functions.len() as u64 + 1;
                    let id = *functions
                        .entry((name.clone(), file.clone()))
                        .or_insert_with(|| {
                            p.function.push(Function {
                                id: next,
                                name: strings.get(&name),
                                system_name: strings.get(&name),
                                filename: strings.get(&file),
                                start_line: 0,
                            });
                            next
                        });
                    key_lines.push((id, f.line.map_or(0, i64::from)));
                }
                let address = lines[0].address;
                let mapping_id = mapping_of(pid, address);
                let next = locations.len() as u64 + 1;
                let id = *locations
                    .entry((mapping_id, address, key_lines.clone()))
                    .or_insert_with(|| {
                        p.location.push(Location {
                            id: next,
                            mapping_id,
                            address,
                            line: key_lines
                                .iter()
                                .map(|&(function_id, line)| Line {
                                    function_id,
                                    line,
                                    column: 0,
                                })
                                .collect(),
                            is_folded: false,
                        });
                        next
                    });
                ids.push(id);
            }
            p.sample.push(Sample {
                location_id: ids,
                value: vec![st.allocations as i64, st.bytes as i64],
                label: vec![
                    Label {
                        key: kind_key,
                        str: strings.get(kind),
                        ..Default::default()
                    },
                    Label {
                        key: end_key,
                        str: strings.get(&st.end),
                        ..Default::default()
                    },
                    Label {
                        key: pid_key,
                        num: i64::from(pid),
                        ..Default::default()
                    },
                ],
            });
        }
    }
    p.string_table = strings.table;
    p
}

/// The gzip'd profile.
pub fn render(snaps: &[Snapshot]) -> Vec<u8> {
    let bytes = profile(snaps).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes).expect("writing to memory");
    gz.finish().expect("writing to memory")
}
