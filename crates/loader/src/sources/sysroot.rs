//! The files of a recording's modules on this machine: the first file at
//! the module's path under each sysroot (in order) that is ELF for the
//! recorded machine and has the recorded build ID; else, with debuginfod
//! servers, the executable they have for that build ID. A file without
//! debug info gets its debug file from the servers too.

use super::hex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use log::{debug, info, warn};
use memleak_unwind_arch::record::Module;
use memleak_unwind_arch::ElfFile;

use super::debuginfod::{Debuginfod, Kind};

pub struct Files {
    /// The sysroots, in order; `/` alone when none was given.
    pub roots: Vec<PathBuf>,
    /// No sysroot was given.
    pub implicit_root: bool,
    machine: u16,
    debuginfod: Option<Debuginfod>,
    found: HashMap<(String, Vec<u8>), Option<Rc<ElfFile>>>,
    /// Modules without a file here.
    pub missing: Vec<String>,
}

impl Files {
    pub fn new(sysroots: &[PathBuf], machine: u16, debuginfod: Option<Debuginfod>) -> Files {
        Files {
            implicit_root: sysroots.is_empty(),
            roots: if sysroots.is_empty() {
                vec![PathBuf::from("/")]
            } else {
                sysroots.to_vec()
            },
            machine,
            debuginfod,
            found: HashMap::new(),
            missing: Vec::new(),
        }
    }

    /// The file of module `m`, or `None` (then its frames keep the
    /// device's names).
    pub fn get(&mut self, m: &Module) -> Option<Rc<ElfFile>> {
        let key = (m.path.clone(), m.build_id.clone());
        if let Some(f) = self.found.get(&key) {
            return f.clone();
        }
        let f = self.find(m).map(Rc::new);
        if f.is_none() {
            self.missing.push(m.path.clone());
        }
        self.found.insert(key, f.clone());
        f
    }

    fn find(&self, m: &Module) -> Option<ElfFile> {
        let local = self.under_sysroots(m);
        let Some(servers) = &self.debuginfod else {
            return local.map(|(_, f)| f);
        };
        if let Some((_, f)) = local.as_ref().filter(|(_, f)| f.has_debug_info()) {
            debug!("{}: has debug info", f.path());
            return local.map(|(_, f)| f);
        }
        let debug = servers.fetch(&m.build_id, Kind::DebugInfo);
        let exe = match &local {
            Some((path, _)) => Some(path.clone()),
            None => servers.fetch(&m.build_id, Kind::Executable),
        };
        match (exe, debug) {
            (Some(exe), Some(debug)) => {
                match ElfFile::open_with_debug(&exe.to_string_lossy(), &debug.to_string_lossy()) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        warn!("{}: {e}: not used for {}", exe.display(), m.path);
                        local.map(|(_, f)| f)
                    }
                }
            }
            (Some(exe), None) if local.is_none() => self.checked(&exe, m),
            _ => local.map(|(_, f)| f),
        }
    }

    /// The first file at `m`'s path under the sysroots that is for the
    /// recorded machine and has the recorded build ID.
    fn under_sysroots(&self, m: &Module) -> Option<(PathBuf, ElfFile)> {
        for root in &self.roots {
            // A file deleted on the device since it was mapped has its
            // name there.
            let path = m.path.strip_suffix(" (deleted)").unwrap_or(&m.path);
            let candidate = root.join(path.trim_start_matches('/'));
            if !candidate.is_file() {
                continue;
            }
            if let Some(f) = self.checked(&candidate, m) {
                info!("{}: {}", m.path, candidate.display());
                return Some((candidate, f));
            }
        }
        None
    }

    /// The ELF file at `path` if it can stand for module `m`.
    fn checked(&self, path: &Path, m: &Module) -> Option<ElfFile> {
        let shown = path.display();
        let elf = match ElfFile::open(&path.to_string_lossy()) {
            Ok(f) => f,
            Err(e) => {
                warn!("{shown}: {e}: not used for {}", m.path);
                return None;
            }
        };
        if elf.machine() != self.machine {
            // The host's own file of that name, for another machine.
            let say = format!(
                "{shown} is for machine {}, the recording's is {}: not used",
                elf.machine(),
                self.machine
            );
            if self.implicit_root {
                debug!("{say}");
            } else {
                warn!("{say}");
            }
            return None;
        }
        if !m.build_id.is_empty() && elf.build_id() != Some(&m.build_id[..]) {
            let theirs = elf.build_id().map_or("none".into(), hex);
            warn!(
                "{shown}: build ID {theirs}, the recording's {} is {}: another build, not used",
                m.path,
                hex(&m.build_id)
            );
            return None;
        }
        Some(elf)
    }
}
