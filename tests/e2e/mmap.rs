//! `--mmap`: mmap regions are a category of their own, and munmap takes them
//! away whole, from the head (applied in the kernel), from the tail or from
//! the middle (applied by user space, which splits the region):
//! tests/fixtures/src/mmap_leak.c prints what must remain.

use serde_json::Value;

use crate::common::*;

/// `key=value` fields of the fixture's lines starting with `prefix `.
fn expect_lines(stderr: &str, prefix: &str) -> Vec<std::collections::HashMap<String, String>> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn num(m: &std::collections::HashMap<String, String>, k: &str) -> u64 {
    m.get(k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {k} in {m:?}"))
}

#[test]
fn munmap_whole_head_tail_middle() {
    require_root();
    let src = fixture_src("mmap_leak.c");
    let src = src.to_str().expect("a UTF-8 path");
    let bin = compile(
        "mmap_leak",
        "gcc",
        &["-O2", "-g", "-fomit-frame-pointer", src],
    );
    let run = memleak_json(&["--mmap"], &bin, &[]);
    let total = expect_lines(&run.stderr, "EXPECT_MMAP");
    assert_eq!(total.len(), 1, "no EXPECT_MMAP line\n{}", run.describe());
    let sites = expect_lines(&run.stderr, "EXPECT_MMAP_SITE");
    assert_eq!(sites.len(), 4, "expected 4 sites\n{}", run.describe());

    // With a command, the reports are on stderr.
    let last: Value = run
        .stderr
        .lines()
        .rev()
        .filter(|l| l.starts_with(REPORT_PREFIX))
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON report\n{}", run.describe()));
    let get = |k: &str| {
        last[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in the report\n{}", run.describe()))
    };
    assert_eq!(
        get("lost_events"),
        0,
        "events were lost\n{}",
        run.describe()
    );
    assert_eq!(
        (get("mmap_bytes"), get("mmap_regions")),
        (num(&total[0], "bytes"), num(&total[0], "regions")),
        "mmap totals differ from the program's\n{}",
        run.describe()
    );
    assert!(
        last["losses"]["partial_munmaps"].as_u64() >= Some(2),
        "the tail and middle munmaps should have gone to user space\n{}",
        run.describe()
    );
    let stacks = last["stacks"].as_array().expect("stacks");
    for site in &sites {
        let f = &site["function"];
        let (mut bytes, mut regions) = (0, 0);
        for s in stacks.iter().filter(|s| s["category"] == "mmap") {
            let frames = s["frames"].as_array().expect("frames");
            if frames.iter().any(|fr| fr["function"].as_str() == Some(f)) {
                bytes += s["bytes"].as_u64().unwrap();
                regions += s["allocations"].as_u64().unwrap();
            }
        }
        assert_eq!(
            (bytes, regions),
            (num(site, "bytes"), num(site, "regions")),
            "{f}: wrong bytes/regions\n{}",
            run.describe()
        );
    }
    assert!(
        !stacks.iter().any(|s| s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|fr| fr["function"] == "map_whole")),
        "the region unmapped whole is still reported\n{}",
        run.describe()
    );
}
