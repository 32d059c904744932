//! The dynamic linker of a traced program (glibc's ld.so): where its
//! `_r_debug` is in a process, and where to probe `_dl_debug_state`, which
//! it calls around every dlopen and dlclose. With both, the kernel sends
//! the list of loaded objects before a dlclose unmaps any (EV_LINKMAP), so
//! that stacks taken inside a library that is unloaded later still place
//! their frames in it. musl's linker never unmaps (its dlclose does
//! nothing) and exports no `_r_debug`; static programs have no linker.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use object::{Object, ObjectSegment, ObjectSymbol};

use memleak_unwind_arch::{parse_proc_maps, ElfFile};

/// A dynamic linker that announces its changes.
#[derive(Debug, Clone)]
pub struct Linker {
    pub path: PathBuf,
    /// File offset of `_dl_debug_state` (the uprobe's place).
    pub debug_state_offset: u64,
    /// Address of `_r_debug` in the file.
    r_debug_svma: u64,
    /// Address of the first loadable segment in the file (0 for ld.so).
    first_vaddr: u64,
}

impl Linker {
    /// The linker `exe` runs with, if it has one that announces dlclose.
    /// The linker named by `exe`, which process `pid` runs; a path its
    /// root does not share with memleak's is read through /proc/PID/root.
    pub fn of(exe: &Path, pid: i32) -> Option<Linker> {
        let interp = ElfFile::open(&exe.to_string_lossy()).ok()?.interpreter()?;
        let interp = Path::new(&interp);
        let path = match crate::procfs::own_root(pid) {
            Some(root) => root.join(interp.strip_prefix("/").unwrap_or(interp)),
            None => interp.to_path_buf(),
        };
        match Linker::open(&path) {
            Ok(l) => Some(l),
            Err(e) => {
                log::debug!(
                    "{}: {e:#}; dlclose'd libraries are placed only if seen mapped",
                    path.display()
                );
                None
            }
        }
    }

    fn open(path: &Path) -> Result<Linker> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file = object::File::parse(&*data).context("parsing the dynamic linker")?;
        let symbol = |name: &str| {
            file.dynamic_symbols()
                .chain(file.symbols())
                .find(|s| s.name() == Ok(name) && !s.is_undefined())
                .map(|s| s.address())
                .ok_or_else(|| anyhow!("no `{name}`"))
        };
        let r_debug_svma = symbol("_r_debug")?;
        let debug_state = symbol("_dl_debug_state")?;
        let segments: Vec<(u64, u64, u64)> = file
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (s.address(), offset, size)
            })
            .collect();
        let first_vaddr = segments
            .iter()
            .map(|s| s.0)
            .min()
            .ok_or_else(|| anyhow!("no loadable segment"))?;
        let debug_state_offset = segments
            .iter()
            .find(|(vaddr, _, size)| (*vaddr..vaddr + size).contains(&debug_state))
            .map(|(vaddr, offset, _)| debug_state - vaddr + offset)
            .ok_or_else(|| anyhow!("`_dl_debug_state` outside the loadable segments"))?;
        Ok(Linker {
            path: path.to_path_buf(),
            debug_state_offset,
            r_debug_svma,
            first_vaddr,
        })
    }

    /// Where `_r_debug` is in process `pid`, which has the linker mapped
    /// (it is, from the exec on).
    pub fn r_debug_in(&self, pid: i32) -> Result<u64> {
        let want = std::fs::metadata(&self.path)?;
        let maps = crate::procfs::maps(pid)
            .with_context(|| format!("reading the mappings of process {pid}"))?;
        for e in parse_proc_maps(&maps) {
            let same = std::fs::metadata(&e.path)
                .is_ok_and(|m| m.dev() == want.dev() && m.ino() == want.ino());
            if same && e.offset == 0 {
                let bias = e.start.wrapping_sub(self.first_vaddr & !0xfff);
                return Ok(bias.wrapping_add(self.r_debug_svma));
            }
        }
        Err(anyhow!(
            "{} is not mapped in process {pid}",
            self.path.display()
        ))
    }
}
