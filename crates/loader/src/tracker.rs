//! Turns ring-buffer records into outstanding allocations: pairs each
//! allocator entry with its return per thread, unwinds each new stack once
//! (symbolized when a report first shows it), and applies frees.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use log::{debug, warn};
use memleak_bpf::{Entry, Event, Kind};
use memleak_unwind_arch::{
    AnyUnwinder, ElfCache, ElfFile, Frame, ModuleMap, StackEnd, SymbolizedFrame,
};

/// Symbolized frames by (file id, address in the file).
type SymbolCache = HashMap<(usize, u64), Rc<Vec<SymbolizedFrame>>>;

/// A frame of a report, symbolized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFrame {
    pub address: u64,
    pub function: Option<String>,
    pub offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    pub method: &'static str,
    pub inlined: bool,
}

/// A unique stack.
pub struct StackInfo {
    pub id: u32,
    frames: Vec<Frame>,
    /// Each frame's file and address in it, when it was in a known module.
    located: Vec<Option<(Rc<ElfFile>, u64)>>,
    symbolized: OnceCell<Vec<ReportFrame>>,
    pub end: StackEnd,
}

/// An outstanding block.
#[derive(Debug, Clone, Copy)]
pub struct Alloc {
    pub size: u64,
    pub stack: u32,
    pub ts_ns: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    kind: Kind,
    size: u64,
    old_ptr: u64,
    ts_ns: u64,
    stack: Option<u32>,
}

/// Losses and stack-quality counts seen in user space.
#[derive(Debug, Default, Clone, Copy)]
pub struct UserCounts {
    /// Return records with no entry on that thread.
    pub unpaired_returns: u64,
    /// Records that did not parse.
    pub bad_records: u64,
    /// Allocations whose stack walk ran out of copied stack (or frames).
    pub truncated_stacks: u64,
    /// Allocations whose stack walk stopped at a frame without unwind info
    /// or at an impossible rule.
    pub unwind_stopped: u64,
    /// Entry records handled.
    pub entries: u64,
    /// Free records handled.
    pub frees: u64,
}

pub struct Tracker {
    pid: i32,
    pub modules: ModuleMap,
    files: ElfCache,
    unwinder: AnyUnwinder,
    unknown_pcs: HashSet<u64>,
    process_gone: bool,
    pending: HashMap<u32, Pending>,
    pub outstanding: HashMap<u64, Alloc>,
    pub mmaps: BTreeMap<u64, Alloc>,
    pub stacks: Vec<StackInfo>,
    stack_index: HashMap<Vec<Frame>, u32>,
    sym_cache: RefCell<SymbolCache>,
    frames: Vec<Frame>,
    pub counts: UserCounts,
    trace: bool,
    /// glibc's realloc(p, 0) frees p and returns NULL; musl returns a block.
    realloc_zero_frees: bool,
}

fn fnv1a(frames: &[Frame]) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for f in frames {
        for b in f.address.to_le_bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x01000193);
        }
    }
    h
}

impl Tracker {
    pub fn new(pid: i32, unwinder: AnyUnwinder, trace: bool) -> Tracker {
        Tracker {
            pid,
            modules: ModuleMap::new(),
            files: ElfCache::new(),
            unwinder,
            unknown_pcs: HashSet::new(),
            process_gone: false,
            pending: HashMap::new(),
            outstanding: HashMap::new(),
            mmaps: BTreeMap::new(),
            stacks: Vec::new(),
            stack_index: HashMap::new(),
            sym_cache: RefCell::new(HashMap::new()),
            frames: Vec::new(),
            counts: UserCounts::default(),
            trace,
            realloc_zero_frees: true,
        }
    }

    /// Tells the tracker whether realloc(p, 0) frees (glibc) or allocates (musl).
    pub fn set_realloc_zero_frees(&mut self, frees: bool) {
        self.realloc_zero_frees = frees;
    }

    /// Re-reads /proc/PID/maps (new libraries, dlopen). Keeps the old map
    /// when the process is gone, so reports still symbolize.
    pub fn refresh_modules(&mut self) -> bool {
        if self.process_gone {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/maps", self.pid)) {
            Ok(text) if !text.is_empty() => {
                // Stacks already seen keep their own files (see `intern`), so
                // the map only needs what is mapped now.
                self.modules = ModuleMap::from_proc_maps(&text, &mut self.files);
                self.unknown_pcs.clear();
                debug!("module map: {} mappings", self.modules.mappings().len());
                true
            }
            _ => {
                self.process_gone = true;
                false
            }
        }
    }

    /// Marks the process as gone: no more /proc reads.
    pub fn process_exited(&mut self) {
        self.process_gone = true;
    }

    pub fn arch_name(&self) -> &'static str {
        self.unwinder.arch_name()
    }

    pub fn handle(&mut self, data: &[u8]) {
        match Event::parse(data) {
            Ok(Event::Entry(e)) => self.on_entry(&e),
            Ok(Event::Return { tid, retval, .. }) => self.on_return(tid, retval),
            Ok(Event::Free {
                kind,
                addr,
                len,
                tid,
                ..
            }) => self.on_free(tid, kind, addr, len),
            Err(e) => {
                self.counts.bad_records += 1;
                warn!("{e}");
            }
        }
    }

    fn unwind(&mut self, e: &Entry<'_>) -> StackEnd {
        self.frames.clear();
        self.unwinder.unwind_at_entry(
            e.regs,
            e.stack,
            cfg!(target_endian = "big"),
            e.reached_stack_end,
            &self.modules,
            &mut self.frames,
        )
    }

    fn on_entry(&mut self, e: &Entry<'_>) {
        self.counts.entries += 1;
        let stack = if e.untracked {
            None
        } else {
            let mut end = self.unwind(e);
            // A pc outside every known module: a library was loaded since the
            // last look at /proc/PID/maps.
            if let Some(pc) = self
                .frames
                .iter()
                .map(|f| f.address)
                .find(|&a| self.modules.find(a).is_none())
            {
                if !self.unknown_pcs.contains(&pc) && self.refresh_modules() {
                    end = self.unwind(e);
                }
                if self.modules.find(pc).is_none() {
                    self.unknown_pcs.insert(pc);
                }
            }
            match end {
                StackEnd::Outermost => {}
                end if end.is_truncated() => self.counts.truncated_stacks += 1,
                _ => self.counts.unwind_stopped += 1,
            }
            Some(self.intern(end))
        };
        self.pending.insert(
            e.tid,
            Pending {
                kind: e.kind,
                size: e.size,
                old_ptr: e.old_ptr,
                ts_ns: e.ts_ns,
                stack,
            },
        );
    }

    fn intern(&mut self, end: StackEnd) -> u32 {
        if let Some(&i) = self.stack_index.get(&self.frames) {
            return i;
        }
        let frames = std::mem::take(&mut self.frames);
        // Keep each frame's file now (it may be unmapped or the process gone
        // by report time); symbolize only when a report shows the stack.
        let located = frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let m = self.modules.find(f.address)?;
                // Return addresses point after the call: look up the call.
                let back = u64::from(i > 0);
                let svma = m.avma_to_svma(f.address.saturating_sub(back))?;
                Some((m.elf.clone(), svma))
            })
            .collect();
        let index = self.stacks.len() as u32;
        self.stacks.push(StackInfo {
            id: fnv1a(&frames),
            frames: frames.clone(),
            located,
            symbolized: OnceCell::new(),
            end,
        });
        self.stack_index.insert(frames, index);
        index
    }

    /// The frames of stack `index`, symbolized (once).
    pub fn symbolized(&self, index: u32) -> &[ReportFrame] {
        let s = &self.stacks[index as usize];
        s.symbolized.get_or_init(|| {
            let mut cache = self.sym_cache.borrow_mut();
            let mut out = Vec::new();
            for (i, (f, loc)) in s.frames.iter().zip(&s.located).enumerate() {
                let back = u64::from(i > 0);
                let unknown = |module: Option<String>| ReportFrame {
                    address: f.address,
                    function: None,
                    offset: None,
                    file: None,
                    line: None,
                    module,
                    method: f.method.name(),
                    inlined: false,
                };
                let Some((elf, svma)) = loc else {
                    out.push(unknown(None));
                    continue;
                };
                let syms = cache
                    .entry((elf.id(), *svma))
                    .or_insert_with(|| Rc::new(elf.symbolize(*svma)))
                    .clone();
                if syms.is_empty() {
                    out.push(unknown(Some(elf.path().to_string())));
                }
                for sym in syms.iter() {
                    out.push(ReportFrame {
                        address: f.address,
                        function: sym.function.clone(),
                        offset: sym.offset.map(|o| o + back),
                        file: sym.file.clone(),
                        line: sym.line,
                        module: Some(elf.path().to_string()),
                        method: f.method.name(),
                        inlined: sym.inlined,
                    });
                }
            }
            out
        })
    }

    fn insert(&mut self, addr: u64, p: &Pending) {
        let Some(stack) = p.stack else { return };
        let a = Alloc {
            size: p.size,
            stack,
            ts_ns: p.ts_ns,
        };
        if p.kind == Kind::Mmap {
            self.mmaps.insert(addr, a);
        } else {
            self.outstanding.insert(addr, a);
        }
    }

    fn on_return(&mut self, tid: u32, retval: u64) {
        let Some(p) = self.pending.remove(&tid) else {
            self.counts.unpaired_returns += 1;
            return;
        };
        if self.trace {
            eprintln!("[tid {tid}] {}({}) = {retval:#x}", p.kind.name(), p.size);
        }
        match p.kind {
            Kind::Realloc | Kind::Reallocarray => {
                if retval != 0 {
                    if p.old_ptr != 0 {
                        self.outstanding.remove(&p.old_ptr);
                    }
                    self.insert(retval, &p);
                } else if p.size == 0 && p.old_ptr != 0 && self.realloc_zero_frees {
                    self.outstanding.remove(&p.old_ptr);
                }
            }
            _ if retval != 0 => self.insert(retval, &p),
            _ => {} // failed: not a leak
        }
    }

    fn on_free(&mut self, tid: u32, kind: Kind, addr: u64, len: u64) {
        self.counts.frees += 1;
        if self.trace {
            eprintln!("[tid {tid}] {}({addr:#x})", kind.name());
        }
        if kind == Kind::Munmap {
            self.unmap(addr, len);
        } else {
            self.outstanding.remove(&addr);
        }
    }

    /// munmap may cover several regions or part of one: trim them.
    fn unmap(&mut self, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        let hits: Vec<(u64, Alloc)> = self
            .mmaps
            .range(..end)
            .filter(|(&a, r)| a.saturating_add(r.size) > addr)
            .map(|(&a, &r)| (a, r))
            .collect();
        for (a, r) in hits {
            self.mmaps.remove(&a);
            let r_end = a.saturating_add(r.size);
            if a < addr {
                self.mmaps.insert(
                    a,
                    Alloc {
                        size: addr - a,
                        ..r
                    },
                );
            }
            if r_end > end {
                self.mmaps.insert(
                    end,
                    Alloc {
                        size: r_end - end,
                        ..r
                    },
                );
            }
        }
    }

    pub fn cache_stats(&self) -> memleak_unwind_arch::CacheStats {
        self.unwinder.cache_stats()
    }
}
