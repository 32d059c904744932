//! The module map: which ELF file backs each address of the traced process.
//!
//! Built from `/proc/PID/maps` on the device, or from a recorded copy of it and
//! a sysroot holding the same files on a host.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use log::debug;

use crate::elf::ElfFile;

/// One file-backed mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// First address (AVMA, as mapped in the process).
    pub start_avma: u64,
    /// One past the last address.
    pub end_avma: u64,
    /// File offset mapped at `start_avma`.
    pub file_offset: u64,
    /// The file.
    pub elf: Rc<ElfFile>,
}

impl Mapping {
    /// Converts an address in the process to the address stated in the file.
    pub fn avma_to_svma(&self, avma: u64) -> Option<u64> {
        let file_offset = avma.checked_sub(self.start_avma)? + self.file_offset;
        self.elf.file_offset_to_svma(file_offset)
    }
}

/// File-backed mappings sorted by address, and those unmapped since they
/// were seen (a library dlclose()d), which still place the frames of stacks
/// taken while they were mapped.
#[derive(Debug, Clone, Default)]
pub struct ModuleMap {
    mappings: Vec<Mapping>,
    /// Unmapped mappings, the latest last (at most [`RETIRED_MAX`]).
    retired: Vec<Mapping>,
}

/// Unmapped mappings kept (the oldest go first).
const RETIRED_MAX: usize = 256;

fn same_mapping(a: &Mapping, b: &Mapping) -> bool {
    a.start_avma == b.start_avma
        && a.end_avma == b.end_avma
        && a.file_offset == b.file_offset
        && Rc::ptr_eq(&a.elf, &b.elf)
}

impl ModuleMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a mapping (replacing any it overlaps).
    pub fn insert(&mut self, m: Mapping) {
        self.mappings
            .retain(|o| o.end_avma <= m.start_avma || o.start_avma >= m.end_avma);
        let i = self
            .mappings
            .partition_point(|o| o.start_avma < m.start_avma);
        self.mappings.insert(i, m);
    }

    /// The mapping containing `avma` now, else the latest unmapped one that
    /// contained it (the frames of a stack taken before a dlclose).
    pub fn find(&self, avma: u64) -> Option<&Mapping> {
        self.find_current(avma).or_else(|| {
            self.retired
                .iter()
                .rev()
                .find(|m| (m.start_avma..m.end_avma).contains(&avma))
        })
    }

    /// The mapping containing `avma` now.
    pub fn find_current(&self, avma: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start_avma <= avma);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        (avma < m.end_avma).then_some(m)
    }

    /// Keeps `m` among the unmapped mappings (a library about to be
    /// unloaded), unless it is mapped now or already kept.
    pub fn retire(&mut self, m: Mapping) {
        let known = |o: &Mapping| same_mapping(o, &m);
        if self.mappings.iter().any(known) || self.retired.iter().any(known) {
            return;
        }
        self.retired.push(m);
        if self.retired.len() > RETIRED_MAX {
            self.retired.remove(0);
        }
    }

    /// Takes the mappings of `now` (a fresh read of the process's maps);
    /// those that are gone are retired, the files staying open.
    pub fn update(&mut self, now: ModuleMap) {
        let old = std::mem::replace(&mut self.mappings, now.mappings);
        for m in old {
            if !self.mappings.iter().any(|n| same_mapping(n, &m)) {
                self.retired.retain(|r| !same_mapping(r, &m));
                self.retired.push(m);
            }
        }
        // A mapping back in place is current again.
        let current = &self.mappings;
        self.retired
            .retain(|r| !current.iter().any(|n| same_mapping(n, r)));
        if self.retired.len() > RETIRED_MAX {
            let extra = self.retired.len() - RETIRED_MAX;
            self.retired.drain(..extra);
        }
    }

    /// All mappings, by address.
    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// The mappings unmapped since they were seen, the latest last.
    pub fn retired(&self) -> &[Mapping] {
        &self.retired
    }

    /// Builds the map from the text of `/proc/PID/maps`, opening each file
    /// through `files`. Mappings of files that are not ELF are left out.
    pub fn from_proc_maps(text: &str, files: &mut ElfCache) -> ModuleMap {
        let mut map = ModuleMap::new();
        for e in parse_proc_maps(text) {
            if let Some(elf) = files.get(&e.path) {
                map.insert(Mapping {
                    start_avma: e.start,
                    end_avma: e.end,
                    file_offset: e.offset,
                    elf,
                });
            }
        }
        map
    }
}

/// A line of `/proc/PID/maps` naming a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    /// Start address.
    pub start: u64,
    /// End address.
    pub end: u64,
    /// Permissions, e.g. `r-xp`.
    pub perms: String,
    /// File offset.
    pub offset: u64,
    /// File path (absolute).
    pub path: String,
}

/// Parses the file-backed lines of `/proc/PID/maps` (`[stack]`, anonymous and
/// deleted files are left out).
pub fn parse_proc_maps(text: &str) -> Vec<MapsEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(_inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let path = it.next().unwrap_or("").trim_start();
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(s, 16),
            u64::from_str_radix(e, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        out.push(MapsEntry {
            start,
            end,
            perms: perms.to_string(),
            offset,
            path: path.to_string(),
        });
    }
    out
}

/// Opens ELF files once, optionally under a sysroot (for offline unwinding
/// of a recording made on another machine). Failures are remembered too.
/// A clone shares the files opened so far (a forked process maps them).
#[derive(Debug, Default, Clone)]
pub struct ElfCache {
    sysroot: Option<PathBuf>,
    files: HashMap<String, Option<Rc<ElfFile>>>,
}

impl ElfCache {
    /// A cache reading files at their own paths.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache reading `/path` as `sysroot/path`.
    pub fn with_sysroot(sysroot: impl Into<PathBuf>) -> Self {
        ElfCache {
            sysroot: Some(sysroot.into()),
            files: HashMap::new(),
        }
    }

    /// The file at `path` (as named in the traced process), or `None` when it
    /// cannot be read or is not ELF.
    pub fn get(&mut self, path: &str) -> Option<Rc<ElfFile>> {
        if let Some(f) = self.files.get(path) {
            return f.clone();
        }
        let real = match &self.sysroot {
            Some(root) => root
                .join(path.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned(),
            None => path.to_string(),
        };
        let f = match ElfFile::open(&real) {
            Ok(f) => Some(Rc::new(f)),
            Err(e) => {
                debug!("not using {path}: {e}");
                None
            }
        };
        self.files.insert(path.to_string(), f.clone());
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 123  /usr/bin/prog
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:01 123  /usr/bin/prog
7ffd1000-7ffd2000 rw-p 00000000 00:00 0  [stack]
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
7f0000002000-7f0000003000 r-xp 00000000 fe:01 9 /tmp/x (deleted)
";
        let e = parse_proc_maps(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].start, 0x55d0c0a01000);
        assert_eq!(e[1].offset, 0x1000);
        assert_eq!(e[1].perms, "r-xp");
        assert_eq!(e[1].path, "/usr/bin/prog");
    }
}
