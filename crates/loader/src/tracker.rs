//! What user space keeps beside the kernel's books: the stack table (every
//! stack an outstanding block may name, symbolized when a report shows it),
//! the resolution of misses (stacks the kernel could not finish, unwound
//! here from their copy, whose rules then go into the kernel's cache), the
//! verification of kernel walks (`--verify-unwind`), and the snapshot of the
//! books a report renders.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use log::{debug, warn};
use memleak_bpf::{abi, stack_id, AllocInfo, Event, KStack, RuleKey, StackRecord, MISS_ID_BIT};
use memleak_unwind_arch::{
    AnyUnwinder, ElfCache, ElfFile, EntrySnapshot, Frame, Mapping, Method, ModuleMap, RuleLookup,
    StackEnd,
};

use crate::books::{Books, Category};
use crate::report::growth::{self, Growth};
use crate::report::{self, BlockRef, Group, Place, ReportFrame, Shown, Symbolizer};
use crate::rules;

/// Bytes of miss records held back waiting for the linker's word.
const MAX_DEFERRED_BYTES: usize = 4 << 20;

/// A unique stack.
pub struct StackInfo {
    pub id: u64,
    pub frames: Vec<Frame>,
    /// Each frame's file and the address looked up in it (for a return
    /// address, that of the call), when it was in a known module.
    pub located: Vec<Option<(Rc<ElfFile>, u64)>>,
    symbolized: OnceCell<Vec<ReportFrame>>,
    /// Why the walk ended (`outermost`, `truncated`, ...).
    pub end: &'static str,
    /// The registers and stack copy of a walk that stopped before the
    /// outermost frame (kept for recordings: a host may finish it).
    pub copy: Option<Rc<StackCopy>>,
}

/// Registers and stack bytes at an allocator's entry.
pub struct StackCopy {
    pub regs: [u64; 4],
    pub bytes: Vec<u8>,
    pub reached_end: bool,
}

/// Stack bytes kept for unfinished walks, in all.
const MAX_COPY_BYTES: usize = 4 << 20;

/// An outstanding block, as a report sees it.
#[derive(Debug, Clone, Copy)]
pub struct Alloc {
    pub size: u64,
    /// Index into [`Tracker::stacks`].
    pub stack: u32,
    pub ts_ns: u64,
}

/// What user space counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct UserCounts {
    /// Records that did not parse.
    pub bad_records: u64,
    /// Misses unwound here.
    pub misses_resolved: u64,
    /// Kernel walks compared with the user-space unwinder (--verify-unwind).
    pub verified: u64,
    /// ... that disagreed.
    pub disagreements: u64,
    /// Rules put into the kernel's cache.
    pub rules_cached: u64,
    /// Rules the kernel's cache refused.
    pub rule_failures: u64,
    /// In the last snapshot: blocks whose stack is not known (its miss
    /// record never arrived).
    pub unresolved: u64,
    /// In the last snapshot: blocks whose stack walk ran out of copied
    /// stack or frames.
    pub truncated_stacks: u64,
    /// In the last snapshot: blocks whose stack walk stopped at a frame
    /// without unwind info or at an impossible rule.
    pub unwind_stopped: u64,
    /// In the last snapshot: blocks whose stack has frames found by
    /// scanning the stack (`<scan>`, the last resort).
    pub scanned_stacks: u64,
    /// Copies of unfinished walks not kept for a recording (over
    /// [`MAX_COPY_BYTES`]).
    pub copies_dropped: u64,
}

pub struct Tracker {
    pid: i32,
    pub modules: ModuleMap,
    files: ElfCache,
    unwinder: AnyUnwinder,
    big_endian: bool,
    unknown_pcs: HashSet<u64>,
    process_gone: bool,
    pub outstanding: Vec<(u64, Alloc)>,
    pub mmaps: Vec<(u64, Alloc)>,
    pub stacks: Vec<StackInfo>,
    by_id: HashMap<u64, u32>,
    /// Miss id -> stack index, and the snapshot generation it was seen in.
    misses: HashMap<u64, (u32, u64)>,
    generation: u64,
    symbolizer: RefCell<Symbolizer>,
    /// Keep the copies of walks that stopped early (`memleak record`).
    pub keep_copies: bool,
    copy_bytes: usize,
    frames: Vec<Frame>,
    rule_log: Vec<RuleLookup>,
    /// Rules already in the kernel's cache: (lookup address, encoded rule).
    cached: HashMap<u64, memleak_bpf::RawRule>,
    /// Per thread: the copy end last given to the kernel.
    copy_ends: HashMap<u32, u64>,
    /// The kernel reports the dynamic linker's objects before a dlclose.
    pub linker_watched: bool,
    /// Misses with frames in no known module, held until the linker says
    /// what was loaded (EV_LINKMAP) or the next snapshot.
    deferred: Vec<Vec<u8>>,
    deferred_bytes: usize,
    pub counts: UserCounts,
    trace: bool,
}

fn end_name_of_kernel(end: u32) -> &'static str {
    match u64::from(end) {
        abi::END_OUTERMOST => "outermost",
        abi::END_MAX_DEPTH => "max_depth",
        abi::END_NO_INFO => "no_unwind_info",
        abi::END_ERROR => "unwind_error",
        abi::END_COPY_LOST => "stack_copy_lost",
        _ => "unwind_error",
    }
}

pub fn end_name(end: StackEnd) -> &'static str {
    match end {
        StackEnd::Outermost => "outermost",
        StackEnd::Truncated => "truncated",
        StackEnd::MaxDepth => "max_depth",
        StackEnd::NoUnwindInfo => "no_unwind_info",
        StackEnd::Error(_) => "unwind_error",
    }
}

/// True for ends the user can fix with a larger copy or a deeper limit.
pub fn is_truncated(end: &str) -> bool {
    matches!(end, "truncated" | "max_depth" | "stack_copy_lost")
}

impl Tracker {
    pub fn new(pid: i32, unwinder: AnyUnwinder, big_endian: bool, trace: bool) -> Tracker {
        Tracker {
            pid,
            modules: ModuleMap::new(),
            files: ElfCache::new(),
            unwinder,
            big_endian,
            unknown_pcs: HashSet::new(),
            process_gone: false,
            outstanding: Vec::new(),
            mmaps: Vec::new(),
            stacks: Vec::new(),
            by_id: HashMap::new(),
            misses: HashMap::new(),
            generation: 0,
            symbolizer: RefCell::new(Symbolizer::default()),
            keep_copies: false,
            copy_bytes: 0,
            frames: Vec::new(),
            rule_log: Vec::new(),
            cached: HashMap::new(),
            copy_ends: HashMap::new(),
            linker_watched: false,
            deferred: Vec::new(),
            deferred_bytes: 0,
            counts: UserCounts::default(),
            trace,
        }
    }

    /// Re-reads /proc/PID/maps (new libraries, dlopen). Keeps the old map
    /// when the process is gone, so reports still symbolize.
    pub fn refresh_modules(&mut self) -> bool {
        if self.process_gone {
            return false;
        }
        match crate::procfs::maps(self.pid) {
            Ok(text) if !text.is_empty() => {
                // Stacks already seen keep their own files (see `intern`), so
                // the map only needs what is mapped now.
                // Unmapped libraries stay, retired: stacks taken while
                // they were mapped still place their frames in them.
                let now = ModuleMap::from_proc_maps(&text, &mut self.files);
                self.modules.update(now);
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

    /// Drops the cached rules of code that is no longer mapped (dlclose):
    /// the next library at those addresses gets its own.
    pub fn forget_unmapped_rules(&mut self, books: &Books) {
        if self.process_gone {
            return;
        }
        let gone: Vec<u64> = self
            .cached
            .keys()
            .copied()
            .filter(|&pc| self.modules.find_current(pc).is_none())
            .collect();
        for pc in gone {
            self.cached.remove(&pc);
            books.delete_rule(&self.rule_key(pc));
        }
    }

    /// The process replaced its image (exec): the rules, copy ends and
    /// stack locations of the old one go; stacks already seen keep their
    /// files.
    pub fn exec(&mut self, books: &Books) {
        for pc in std::mem::take(&mut self.cached).into_keys() {
            books.delete_rule(&self.rule_key(pc));
        }
        for tid in std::mem::take(&mut self.copy_ends).into_keys() {
            books.delete_copy_end(tid);
        }
        // Kernel stack ids hash the PCs only: the new image may reuse them.
        self.by_id.clear();
        self.unknown_pcs.clear();
        // A new address space: nothing of the old one places new frames.
        self.modules = ModuleMap::new();
        self.process_gone = false;
        self.refresh_modules();
    }

    /// The tracker of `pid`, just forked from this tracker's process: the
    /// same mappings and files, and the rules cached for this process put
    /// into the kernel's cache for the child too (same code, same
    /// addresses). `unwinder` is a fresh one for the same machine.
    pub fn fork(&self, pid: i32, unwinder: AnyUnwinder, books: &Books) -> Tracker {
        let mut t = Tracker::new(pid, unwinder, self.big_endian, self.trace);
        t.keep_copies = self.keep_copies;
        t.files = self.files.clone();
        t.modules = self.modules.clone();
        for (pc, rule) in &self.cached {
            if books.insert_rule(&t.rule_key(*pc), rule).is_ok() {
                t.cached.insert(*pc, *rule);
            }
        }
        t.refresh_modules();
        t
    }

    /// Marks the process as gone: no more /proc reads.
    pub fn process_exited(&mut self) {
        self.process_gone = true;
    }

    pub fn arch_name(&self) -> &'static str {
        self.unwinder.arch_name()
    }

    fn rule_key(&self, pc: u64) -> RuleKey {
        RuleKey {
            pc,
            tgid: self.pid as u32,
            _pad: 0,
        }
    }

    /// Handles one record from the kernel.
    pub fn handle(&mut self, data: &[u8], books: &Books) {
        match Event::parse(data) {
            Ok(Event::Stack(rec)) if rec.tgid == self.pid as u32 => {
                if rec.verify {
                    self.verify(&rec);
                } else {
                    // While the linker is watched, a miss with a frame in
                    // no known module waits for its report of the objects
                    // (the library may be gone from /proc/PID/maps).
                    let may_defer = self.linker_watched
                        && self.deferred_bytes.saturating_add(data.len()) <= MAX_DEFERRED_BYTES;
                    if !self.resolve_miss(&rec, books, may_defer) {
                        self.deferred_bytes += data.len();
                        self.deferred.push(data.to_vec());
                    }
                }
            }
            Ok(Event::LinkMap { tgid, objects }) if tgid == self.pid as u32 => {
                self.add_linked_objects(&objects);
                self.resolve_deferred(books);
            }
            Ok(Event::LinkMap { tgid, .. }) => {
                debug!("link map record of another process ({tgid})")
            }
            Ok(Event::Stack(rec)) => debug!("stack record of another process ({})", rec.tgid),
            Ok(Event::Munmap {
                tgid,
                ts_ns,
                addr,
                len,
            }) => {
                if let Err(e) = books.apply_munmap(tgid, addr, len, ts_ns) {
                    warn!("munmap({addr:#x}, {len}): {e:#}");
                }
            }
            Ok(Event::Trace {
                tid,
                kind,
                size,
                addr,
                old_ptr,
                ..
            }) => {
                if self.trace {
                    match kind {
                        memleak_bpf::Kind::Free | memleak_bpf::Kind::Munmap => {
                            eprintln!("[tid {tid}] {}({addr:#x})", kind.name())
                        }
                        memleak_bpf::Kind::Realloc | memleak_bpf::Kind::Reallocarray => {
                            eprintln!(
                                "[tid {tid}] {}({old_ptr:#x}, {size}) = {addr:#x}",
                                kind.name()
                            )
                        }
                        _ => eprintln!("[tid {tid}] {}({size}) = {addr:#x}", kind.name()),
                    }
                }
            }
            Err(e) => {
                self.counts.bad_records += 1;
                warn!("{e}");
            }
        }
    }

    /// Unwinds a record's copy into `self.frames` (and the rules it used into
    /// `self.rule_log`), re-reading the module map once if a frame is
    /// outside every known module.
    fn unwind(&mut self, rec: &StackRecord<'_>) -> StackEnd {
        let snap = EntrySnapshot {
            raw_regs: rec.regs,
            stack: rec.stack,
            big_endian: self.big_endian,
            reached_end: rec.reached_stack_end,
        };
        let go = |t: &mut Tracker| {
            t.frames.clear();
            t.rule_log.clear();
            t.unwinder
                .unwind_entry_logged(&snap, &t.modules, &mut t.frames, Some(&mut t.rule_log))
        };
        let mut end = go(self);
        // A pc outside every known module: a library was loaded since the
        // last look at /proc/PID/maps.
        if let Some(pc) = self
            .frames
            .iter()
            .map(|f| f.address)
            .find(|&a| self.modules.find_current(a).is_none())
        {
            if !self.unknown_pcs.contains(&pc) && self.refresh_modules() {
                end = go(self);
            }
            if self.modules.find_current(pc).is_none() {
                self.unknown_pcs.insert(pc);
            }
        }
        end
    }

    /// The objects the dynamic linker had loaded before a dlclose: those
    /// not mapped now are kept, retired, for the stacks taken while they
    /// were mapped.
    fn add_linked_objects(&mut self, objects: &[(u64, String)]) {
        for (base, name) in objects {
            if !name.starts_with('/') {
                continue; // the program itself (""), the vDSO
            }
            let Some(elf) = self.files.get(name) else {
                continue;
            };
            let segments: Vec<_> = elf.load_segments().collect();
            for (vaddr, offset, size) in segments {
                let start = base.wrapping_add(vaddr);
                self.modules.retire(Mapping {
                    start_avma: start,
                    end_avma: start.saturating_add(size),
                    file_offset: offset,
                    elf: elf.clone(),
                });
            }
        }
        debug!("link map: {} objects", objects.len());
    }

    /// Resolves the misses held back (all of them: no later word comes).
    fn resolve_deferred(&mut self, books: &Books) {
        let held = std::mem::take(&mut self.deferred);
        self.deferred_bytes = 0;
        for data in held {
            if let Ok(Event::Stack(rec)) = Event::parse(&data) {
                self.resolve_miss(&rec, books, false);
            }
        }
    }

    /// A stack the kernel could not finish: unwind its copy, attribute the
    /// allocation, and cache the rule of every PC on the way so the next
    /// allocation on this path stays in the kernel. With `may_defer`, a
    /// stack with a frame in no known module is left alone: returns false.
    fn resolve_miss(&mut self, rec: &StackRecord<'_>, books: &Books, may_defer: bool) -> bool {
        let end = self.unwind(rec);
        if may_defer
            && self
                .frames
                .iter()
                .any(|f| self.modules.find(f.address).is_none())
        {
            return false;
        }
        self.counts.misses_resolved += 1;
        // The kernel walked a prefix of this stack: it must agree.
        let kernel = rec.kstack.words();
        let user: Vec<u64> = self.words();
        if kernel.len() > user.len() || kernel != &user[..kernel.len()] {
            self.disagree("miss", kernel, rec.kstack.end, &user, end);
        }
        if end == StackEnd::Outermost {
            // Every stack of this thread ends in the same outermost frame:
            // later copies need not go beyond it (a little slack above).
            let copy_end = self.unwinder.last_sp().saturating_add(64);
            if self.copy_ends.insert(rec.tid, copy_end) != Some(copy_end) {
                books.set_copy_end(rec.tid, copy_end);
            }
        }
        let index = self.intern(end_name(end));
        self.keep_copy(index, end, rec);
        self.misses.insert(rec.stack_id, (index, self.generation));
        // Where the kernel stopped: a rule it lacks even if we gave it one
        // before (the cache is LRU and may have evicted it).
        let missed_at = (u64::from(rec.kstack.end) == abi::END_MISS)
            .then(|| kernel.last())
            .flatten()
            .map(|w| (w & memleak_bpf::PC_MASK).wrapping_sub(1));
        for i in 0..self.rule_log.len() {
            let lookup = self.rule_log[i];
            let address = lookup.address;
            let raw = rules::encode_lookup(&lookup);
            if self.cached.get(&address) == Some(&raw) && missed_at != Some(address) {
                continue;
            }
            log::trace!("rule at {address:#x}: {:?}", rules::decode(&raw));
            match books.insert_rule(&self.rule_key(address), &raw) {
                Ok(()) => {
                    self.counts.rules_cached += 1;
                    self.cached.insert(address, raw);
                }
                Err(e) => {
                    self.counts.rule_failures += 1;
                    debug!("{e:#}");
                }
            }
        }
        true
    }

    /// --verify-unwind: the kernel finished this stack; the user-space
    /// unwinder must find the same frames from the copy.
    fn verify(&mut self, rec: &StackRecord<'_>) {
        let end = self.unwind(rec);
        self.counts.verified += 1;
        let kernel = rec.kstack.words();
        let user = self.words();
        let agree = if end == StackEnd::Truncated {
            // The copy ended before the stack did; the kernel read on.
            user.len() <= kernel.len() && user == kernel[..user.len()]
        } else {
            user == kernel && same_end(rec.kstack.end, end)
        };
        if !agree {
            self.disagree("kernel walk", kernel, rec.kstack.end, &user, end);
        }
    }

    fn disagree(&mut self, what: &str, kernel: &[u64], kend: u32, user: &[u64], uend: StackEnd) {
        self.counts.disagreements += 1;
        let show = |w: &[u64]| {
            w.iter()
                .map(|w| {
                    let m = rules::method_of_code(w >> abi::METHOD_SHIFT).map_or("?", Method::name);
                    format!("{:#x}<{m}>", w & memleak_bpf::PC_MASK)
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        warn!(
            "unwinding disagreement ({what}): kernel [{}] ({}), user space [{}] ({})",
            show(kernel),
            end_name_of_kernel(kend),
            show(user),
            end_name(uend)
        );
    }

    fn words(&self) -> Vec<u64> {
        self.frames
            .iter()
            .map(|f| rules::stack_word(f.address, f.method))
            .collect()
    }

    /// The index of the stack in `self.frames`, added if new.
    fn intern(&mut self, end: &'static str) -> u32 {
        let id = stack_id(&self.words());
        if let Some(&i) = self.by_id.get(&id) {
            return i;
        }
        let frames = std::mem::take(&mut self.frames);
        self.add_stack(id, frames, end)
    }

    /// With `keep_copies`: keeps the copy a walk that stopped early came
    /// from (the first one of its stack; up to [`MAX_COPY_BYTES`] in all).
    fn keep_copy(&mut self, index: u32, end: StackEnd, rec: &StackRecord<'_>) {
        let stopped = matches!(end, StackEnd::NoUnwindInfo | StackEnd::Error(_))
            || self.stacks[index as usize]
                .frames
                .iter()
                .any(|f| f.method == Method::Scan);
        let s = &mut self.stacks[index as usize];
        if !self.keep_copies || !stopped || s.copy.is_some() {
            return;
        }
        if self.copy_bytes.saturating_add(rec.stack.len()) > MAX_COPY_BYTES {
            self.counts.copies_dropped += 1;
            return;
        }
        self.copy_bytes += rec.stack.len();
        s.copy = Some(Rc::new(StackCopy {
            regs: rec.regs,
            bytes: rec.stack.to_vec(),
            reached_end: rec.reached_stack_end,
        }));
    }

    fn add_stack(&mut self, id: u64, frames: Vec<Frame>, end: &'static str) -> u32 {
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
            id,
            frames,
            located,
            symbolized: OnceCell::new(),
            end,
            copy: None,
        });
        self.by_id.insert(id, index);
        index
    }

    fn kernel_stack(&mut self, id: u64, s: &KStack) -> u32 {
        let frames = s
            .words()
            .iter()
            .map(|w| Frame {
                address: w & memleak_bpf::PC_MASK,
                method: rules::method_of_code(w >> abi::METHOD_SHIFT).unwrap_or(Method::Cfi),
            })
            .collect();
        self.add_stack(id, frames, end_name_of_kernel(s.end))
    }

    /// The stack index an outstanding block names, or `None` when unknown.
    fn stack_index(&mut self, id: u64, books: &Books) -> Option<u32> {
        if id & MISS_ID_BIT != 0 {
            return self.misses.get(&id).map(|m| m.0);
        }
        if let Some(&i) = self.by_id.get(&id) {
            return Some(i);
        }
        let s = books.stack(id)?;
        Some(self.kernel_stack(id, &s))
    }

    fn unknown_stack(&mut self) -> u32 {
        const UNKNOWN: u64 = 0;
        match self.by_id.get(&UNKNOWN) {
            Some(&i) => i,
            None => self.add_stack(UNKNOWN, Vec::new(), "unknown_stack"),
        }
    }

    /// Reads the books of the traced process into `outstanding` and `mmaps`.
    pub fn snapshot(&mut self, books: &Books, mmap: bool) -> anyhow::Result<()> {
        self.resolve_deferred(books);
        let tgid = self.pid as u32;
        let heap = books.blocks(Category::Heap, tgid)?;
        let regions = if mmap {
            books.blocks(Category::Mmap, tgid)?
        } else {
            Vec::new()
        };
        let heap_ids: Vec<u64> = heap
            .iter()
            .chain(regions.iter())
            .map(|(_, i)| i.stack_id)
            .filter(|id| id & MISS_ID_BIT != 0)
            .collect();
        self.outstanding.clear();
        self.mmaps.clear();
        self.outstanding.shrink_to(heap.len());
        self.counts.unresolved = 0;
        self.counts.truncated_stacks = 0;
        self.counts.unwind_stopped = 0;
        self.counts.scanned_stacks = 0;
        for (cat, list) in [(Category::Heap, heap), (Category::Mmap, regions)] {
            for (addr, info) in list {
                let AllocInfo {
                    size,
                    stack_id,
                    ts_ns,
                } = info;
                let stack = match self.stack_index(stack_id, books) {
                    Some(i) => i,
                    None => {
                        self.counts.unresolved += 1;
                        self.unknown_stack()
                    }
                };
                let info = &self.stacks[stack as usize];
                let end = info.end;
                if info.frames.iter().any(|f| f.method == Method::Scan) {
                    self.counts.scanned_stacks += 1;
                }
                if is_truncated(end) {
                    self.counts.truncated_stacks += 1;
                } else if end != "outermost" && end != "unknown_stack" {
                    self.counts.unwind_stopped += 1;
                }
                let a = Alloc { size, stack, ts_ns };
                match cat {
                    Category::Heap => self.outstanding.push((addr, a)),
                    Category::Mmap => self.mmaps.push((addr, a)),
                }
            }
        }
        // Misses no block names need not be remembered once they are older
        // than the previous snapshot (their allocation has returned by then).
        let live: HashSet<u64> = heap_ids.into_iter().collect();
        let old = self.generation;
        self.misses
            .retain(|id, (_, generation)| *generation >= old || live.contains(id));
        self.generation += 1;
        Ok(())
    }

    /// The frames of stack `index`, symbolized (once).
    pub fn symbolized(&self, index: u32) -> &[ReportFrame] {
        let s = &self.stacks[index as usize];
        s.symbolized.get_or_init(|| {
            let mut sym = self.symbolizer.borrow_mut();
            let mut out = Vec::new();
            for (i, (f, loc)) in s.frames.iter().zip(&s.located).enumerate() {
                let place = match loc {
                    Some((elf, svma)) => Place::File { elf, svma: *svma },
                    None => Place::Nowhere,
                };
                sym.frame(&mut out, f, i, place);
            }
            out
        })
    }

    /// The outstanding heap blocks and mmap regions (of the last
    /// snapshot), grouped by stack; those shown are symbolized.
    pub fn groups(&self, growth: &Growth, shown: Shown) -> (Group, Group) {
        let now = report::monotonic_ns();
        let group = |list: &[(u64, Alloc)], category| {
            let blocks = list.iter().map(|(address, a)| BlockRef {
                address: *address,
                size: a.size,
                stack: a.stack,
                age_ns: now.saturating_sub(a.ts_ns),
            });
            Group::of(
                blocks,
                category,
                shown,
                |i| self.stacks[i as usize].id,
                |i| growth.trend((self.stacks[i as usize].id, category)),
                |i| {
                    (
                        self.stacks[i as usize].end.to_string(),
                        self.symbolized(i).to_vec(),
                    )
                },
            )
        };
        (group(&self.outstanding, "heap"), group(&self.mmaps, "mmap"))
    }

    /// The outstanding bytes of each stack (of the last snapshot), heap
    /// and mmap; estimated with `--sample-bytes` (`sample_bytes` > 0).
    pub fn totals(&self, sample_bytes: u64) -> Vec<(growth::Key, u64)> {
        let mut v = Vec::new();
        for (list, category) in [(&self.outstanding, "heap"), (&self.mmaps, "mmap")] {
            for (_, a) in list.iter() {
                let bytes = a.size as f64 * report::weight(a.size, sample_bytes);
                v.push((
                    (self.stacks[a.stack as usize].id, category),
                    bytes.round() as u64,
                ));
            }
        }
        v
    }

    /// The file mappings of the process (those unmapped since too).
    pub fn mapping_infos(&self) -> Vec<report::MappingInfo> {
        let all = self.modules.mappings().iter().chain(self.modules.retired());
        all.map(|m| report::MappingInfo {
            start: m.start_avma,
            limit: m.end_avma,
            file_offset: m.file_offset,
            path: crate::procfs::shown(m.elf.path()),
            build_id: m.elf.build_id().unwrap_or_default().to_vec(),
        })
        .collect()
    }

    pub fn cache_stats(&self) -> memleak_unwind_arch::CacheStats {
        self.unwinder.cache_stats()
    }
}

/// True when a kernel walk's end matches the user-space unwinder's.
fn same_end(kernel: u32, user: StackEnd) -> bool {
    matches!(
        (u64::from(kernel), user),
        (abi::END_OUTERMOST, StackEnd::Outermost)
            | (abi::END_MAX_DEPTH, StackEnd::MaxDepth)
            | (abi::END_NO_INFO, StackEnd::NoUnwindInfo)
            | (abi::END_ERROR, StackEnd::Error(_))
    )
}
