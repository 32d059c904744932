//! memleak's BPF side: the object built from `src/bpf/memleak.bpf.c` for the
//! target's byte order and architecture, and the records it sends through its
//! ring buffer.
//!
//! The object needs no kernel BTF and carries no CO-RE relocations; the build
//! tests below check both, and that its byte order is the target's.
//!
//! Records are produced by the kernel and consumed on the same machine, so
//! they are read in native byte order. Their layout mirrors `memleak.h`.

#![deny(missing_docs)]

mod meta {
    include!(concat!(env!("OUT_DIR"), "/meta.rs"));
}
pub use meta::{BPF_TARGET, TARGET_ARCH};

/// The BPF object (ELF) for this target, embedded at build time.
pub static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/memleak.bpf.o"));

/// Name of each BPF program in [`OBJECT`], as `SEC(...)` functions.
pub mod prog {
    /// Entry of `malloc`.
    pub const MALLOC: &str = "malloc_entry";
    /// Entry of `calloc`.
    pub const CALLOC: &str = "calloc_entry";
    /// Entry of `realloc`.
    pub const REALLOC: &str = "realloc_entry";
    /// Entry of `reallocarray`.
    pub const REALLOCARRAY: &str = "reallocarray_entry";
    /// Entry of `posix_memalign`.
    pub const POSIX_MEMALIGN: &str = "posix_memalign_entry";
    /// Entry of `aligned_alloc`.
    pub const ALIGNED_ALLOC: &str = "aligned_alloc_entry";
    /// Entry of `memalign`.
    pub const MEMALIGN: &str = "memalign_entry";
    /// Entry of `valloc`.
    pub const VALLOC: &str = "valloc_entry";
    /// Entry of `pvalloc`.
    pub const PVALLOC: &str = "pvalloc_entry";
    /// Entry of `mmap` (only with `--mmap`).
    pub const MMAP: &str = "mmap_entry";
    /// Return of every allocation function.
    pub const ALLOC_RETURN: &str = "alloc_return";
    /// Entry of `free`.
    pub const FREE: &str = "free_entry";
    /// Entry of `munmap` (only with `--mmap`).
    pub const MUNMAP: &str = "munmap_entry";
}

/// Map names in [`OBJECT`].
pub mod map {
    /// Ring buffer of entry/return/free records.
    pub const EVENTS: &str = "events";
    /// Per-thread state between entry and return.
    pub const THREADS: &str = "threads";
    /// Per-CPU loss and bookkeeping counters, indexed by [`Counter`](crate::Counter).
    pub const COUNTERS: &str = "counters";
    /// The read-only configuration ([`Config`](crate::Config)).
    pub const RODATA: &str = ".rodata";
}

/// Largest `--stack-bytes` the BPF side copies.
pub const MAX_STACK_BYTES: u32 = 65536;

/// Configuration written into the object's `.rodata` before load.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Smallest traced request, bytes.
    pub min_size: u64,
    /// Largest traced request, bytes.
    pub max_size: u64,
    /// Bytes of user stack copied from sp at each allocation (multiple of 8).
    pub stack_bytes: u32,
    /// Trace every Nth allocation (1: all).
    pub sample_rate: u32,
    /// Wake the reader once this many bytes are pending in the ring buffer.
    pub wakeup_bytes: u64,
}

impl Config {
    /// The bytes of `.rodata` holding this configuration.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.min_size.to_ne_bytes());
        b[8..16].copy_from_slice(&self.max_size.to_ne_bytes());
        b[16..20].copy_from_slice(&self.stack_bytes.to_ne_bytes());
        b[20..24].copy_from_slice(&self.sample_rate.to_ne_bytes());
        b[24..32].copy_from_slice(&self.wakeup_bytes.to_ne_bytes());
        b
    }
}

/// What was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// `malloc(size)`
    Malloc,
    /// `calloc(n, size)`
    Calloc,
    /// `realloc(ptr, size)`
    Realloc,
    /// `reallocarray(ptr, n, size)`
    Reallocarray,
    /// `posix_memalign(&ptr, align, size)`
    PosixMemalign,
    /// `aligned_alloc(align, size)`
    AlignedAlloc,
    /// `memalign(align, size)`
    Memalign,
    /// `valloc(size)`
    Valloc,
    /// `pvalloc(size)`
    Pvalloc,
    /// `mmap(addr, len, ...)`
    Mmap,
    /// `free(ptr)`
    Free,
    /// `munmap(addr, len)`
    Munmap,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Kind> {
        use Kind::*;
        Some(match raw {
            0 => Malloc,
            1 => Calloc,
            2 => Realloc,
            3 => Reallocarray,
            4 => PosixMemalign,
            5 => AlignedAlloc,
            6 => Memalign,
            7 => Valloc,
            8 => Pvalloc,
            9 => Mmap,
            10 => Free,
            11 => Munmap,
            _ => return None,
        })
    }

    /// The C function's name.
    pub fn name(self) -> &'static str {
        use Kind::*;
        match self {
            Malloc => "malloc",
            Calloc => "calloc",
            Realloc => "realloc",
            Reallocarray => "reallocarray",
            PosixMemalign => "posix_memalign",
            AlignedAlloc => "aligned_alloc",
            Memalign => "memalign",
            Valloc => "valloc",
            Pvalloc => "pvalloc",
            Mmap => "mmap",
            Free => "free",
            Munmap => "munmap",
        }
    }
}

/// Loss and bookkeeping counters kept per CPU by the BPF programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// The ring buffer was full: an event was lost.
    RingbufDrops = 0,
    /// An entry found a call on the same thread whose return never came.
    MissingReturn = 1,
    /// A return without a recorded entry.
    MissingEntry = 2,
    /// The per-thread map was full: a call was not tracked.
    StateFull = 3,
    /// Allocator calls made from inside the allocator, counted once.
    Nested = 4,
    /// Skipped by `--sample-rate`.
    SampledOut = 5,
    /// Skipped by `--min-size` / `--max-size`.
    Filtered = 6,
    /// posix_memalign's result could not be read.
    MemptrFault = 7,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 8] = [
        Counter::RingbufDrops,
        Counter::MissingReturn,
        Counter::MissingEntry,
        Counter::StateFull,
        Counter::Nested,
        Counter::SampledOut,
        Counter::Filtered,
        Counter::MemptrFault,
    ];

    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Counter::RingbufDrops => "ringbuf_drops",
            Counter::MissingReturn => "missing_returns",
            Counter::MissingEntry => "missing_entries",
            Counter::StateFull => "thread_map_full",
            Counter::Nested => "nested_calls",
            Counter::SampledOut => "sampled_out",
            Counter::Filtered => "size_filtered",
            Counter::MemptrFault => "memptr_faults",
        }
    }

    /// True when the counter means an event was lost (the report may be wrong).
    pub fn is_loss(self) -> bool {
        matches!(
            self,
            Counter::RingbufDrops
                | Counter::MissingReturn
                | Counter::MissingEntry
                | Counter::StateFull
                | Counter::MemptrFault
        )
    }
}

/// Number of registers in [`Entry::regs`]: pc, sp, fp, ra.
pub const NR_REGS: usize = 4;

/// An allocator entry: what was asked, the registers and a copy of the stack.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Thread id.
    pub tid: u32,
    /// `bpf_ktime_get_ns()` at entry (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// The function called.
    pub kind: Kind,
    /// Filtered out by size or sampling: only its free side matters.
    pub untracked: bool,
    /// The stack copy reached the stack's end (an unreadable page).
    pub reached_stack_end: bool,
    /// Requested bytes.
    pub size: u64,
    /// `realloc`'s block passed in.
    pub old_ptr: u64,
    /// pc, sp, fp, ra (ra is 0 where the architecture has no such register).
    pub regs: [u64; NR_REGS],
    /// User memory from sp upwards.
    pub stack: &'a [u8],
}

/// A record from the ring buffer.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// See [`Entry`].
    Entry(Entry<'a>),
    /// An allocator returned `retval` (0: it failed).
    Return {
        /// Thread id.
        tid: u32,
        /// `bpf_ktime_get_ns()` at return.
        ts_ns: u64,
        /// The new block, 0 on failure.
        retval: u64,
    },
    /// `free` or `munmap`.
    Free {
        /// Thread id.
        tid: u32,
        /// `bpf_ktime_get_ns()` at entry.
        ts_ns: u64,
        /// [`Kind::Free`] or [`Kind::Munmap`].
        kind: Kind,
        /// The block.
        addr: u64,
        /// munmap's length.
        len: u64,
    },
}

/// A ring-buffer record that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRecord(pub &'static str);

impl std::error::Error for BadRecord {}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed ring buffer record: {}", self.0)
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

const HDR: usize = 16;
const ENTRY_FIXED: usize = HDR + 8 + 16 + 8 * NR_REGS + 8;
const F_UNTRACKED: u32 = 1;
const F_STACK_END: u32 = 2;

impl<'a> Event<'a> {
    /// Parses one ring-buffer record.
    pub fn parse(b: &'a [u8]) -> Result<Event<'a>, BadRecord> {
        if b.len() < HDR {
            return Err(BadRecord("shorter than its header"));
        }
        let (ty, tid, ts_ns) = (u32_at(b, 0), u32_at(b, 4), u64_at(b, 8));
        match ty {
            1 => {
                if b.len() < ENTRY_FIXED {
                    return Err(BadRecord("short entry record"));
                }
                let kind = Kind::from_raw(u32_at(b, 16)).ok_or(BadRecord("unknown kind"))?;
                let flags = u32_at(b, 20);
                let mut regs = [0u64; NR_REGS];
                for (i, r) in regs.iter_mut().enumerate() {
                    *r = u64_at(b, 40 + 8 * i);
                }
                let stack_len = u32_at(b, 40 + 8 * NR_REGS) as usize;
                let stack = b
                    .get(ENTRY_FIXED..ENTRY_FIXED + stack_len)
                    .ok_or(BadRecord("stack length beyond the record"))?;
                Ok(Event::Entry(Entry {
                    tid,
                    ts_ns,
                    kind,
                    untracked: flags & F_UNTRACKED != 0,
                    reached_stack_end: flags & F_STACK_END != 0,
                    size: u64_at(b, 24),
                    old_ptr: u64_at(b, 32),
                    regs,
                    stack,
                }))
            }
            2 => {
                if b.len() < HDR + 8 {
                    return Err(BadRecord("short return record"));
                }
                Ok(Event::Return {
                    tid,
                    ts_ns,
                    retval: u64_at(b, 16),
                })
            }
            3 => {
                if b.len() < HDR + 24 {
                    return Err(BadRecord("short free record"));
                }
                let kind = Kind::from_raw(u32_at(b, 16)).ok_or(BadRecord("unknown kind"))?;
                Ok(Event::Free {
                    tid,
                    ts_ns,
                    kind,
                    addr: u64_at(b, 24),
                    len: u64_at(b, 32),
                })
            }
            _ => Err(BadRecord("unknown record type")),
        }
    }
}

#[cfg(test)]
mod tests;
