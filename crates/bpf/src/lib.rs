//! memleak's BPF side: the object built from `src/bpf/memleak.bpf.c` for the
//! target's byte order and architecture, the maps that keep the books and the
//! rule cache, and the records it sends through its ring buffer.
//!
//! The object needs no kernel BTF and carries no CO-RE relocations; the build
//! tests below check both, and that its byte order is the target's.
//!
//! Records and map entries are produced and consumed on the same machine, so
//! they are read in native byte order. The constants come from `memleak.h`
//! (generated into [`abi`]); the `#[repr(C)]` types mirror its structs, and a
//! test checks their layout against the object's BTF.

#![deny(missing_docs)]

mod meta {
    include!(concat!(env!("OUT_DIR"), "/meta.rs"));
}

/// Every integer `#define` of `memleak.h`.
#[allow(missing_docs)]
pub mod abi {
    include!(concat!(env!("OUT_DIR"), "/abi.rs"));
}
pub use meta::{BPF_TARGET, TARGET_ARCH};

/// How records reach user space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A BPF ring buffer (kernels 5.8+).
    RingBuffer,
    /// A perf event array with a per-CPU staging buffer (older kernels).
    PerfBuffer,
}

/// Which helper reads user memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserRead {
    /// `bpf_probe_read_user` (kernels 5.5+).
    ProbeReadUser,
    /// `bpf_probe_read` (older kernels).
    ProbeRead,
}

/// One build of the BPF programs, for the features a kernel has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variant {
    /// The event transport.
    pub transport: Transport,
    /// The user-memory read helper.
    pub read: UserRead,
}

impl Variant {
    /// Every variant built.
    pub const ALL: [Variant; 4] = [
        Variant::new(Transport::RingBuffer, UserRead::ProbeReadUser),
        Variant::new(Transport::PerfBuffer, UserRead::ProbeReadUser),
        Variant::new(Transport::RingBuffer, UserRead::ProbeRead),
        Variant::new(Transport::PerfBuffer, UserRead::ProbeRead),
    ];

    /// The variant with these features.
    pub const fn new(transport: Transport, read: UserRead) -> Variant {
        Variant { transport, read }
    }

    /// The BPF object (ELF) of this variant, embedded at build time.
    pub fn object(self) -> &'static [u8] {
        match (self.transport, self.read) {
            (Transport::RingBuffer, UserRead::ProbeReadUser) => {
                include_bytes!(concat!(env!("OUT_DIR"), "/memleak.bpf.o"))
            }
            (Transport::PerfBuffer, UserRead::ProbeReadUser) => {
                include_bytes!(concat!(env!("OUT_DIR"), "/memleak-perfbuf.bpf.o"))
            }
            (Transport::RingBuffer, UserRead::ProbeRead) => {
                include_bytes!(concat!(env!("OUT_DIR"), "/memleak-legacy-read.bpf.o"))
            }
            (Transport::PerfBuffer, UserRead::ProbeRead) => include_bytes!(concat!(
                env!("OUT_DIR"),
                "/memleak-perfbuf-legacy-read.bpf.o"
            )),
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = match self.transport {
            Transport::RingBuffer => "ring buffer",
            Transport::PerfBuffer => "perf buffer",
        };
        let r = match self.read {
            UserRead::ProbeReadUser => "bpf_probe_read_user",
            UserRead::ProbeRead => "bpf_probe_read",
        };
        write!(f, "{t}, {r}")
    }
}

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
    /// The dynamic linker's `_dl_debug_state`: sends the loaded objects
    /// before a dlclose unmaps some.
    pub const LINK_CHANGE: &str = "link_change";
    /// Every entry through one multi-uprobe link, the kind in its cookie
    /// (kernels 6.6+; loaded instead of the per-function programs).
    pub const ENTRY_MULTI: &str = "entry_multi";
    /// Every return through one multi-uprobe link (kernels 6.6+).
    pub const RETURN_MULTI: &str = "return_multi";
    /// The stack walk, tail-called by every allocation entry (never attached).
    pub const WALK_STACK: &str = "walk_stack";
}

/// Map names in [`OBJECT`].
pub mod map {
    /// Ring buffer (or perf event array) of misses, verification copies,
    /// munmaps and `-t` records.
    pub const EVENTS: &str = "events";
    /// Perf-buffer variants: the per-CPU staging buffer (one entry per CPU).
    pub const STAGING: &str = "staging";
    /// Per-thread state between entry and return.
    pub const THREADS: &str = "threads";
    /// The books: outstanding heap blocks ([`AllocKey`](crate::AllocKey) → [`AllocInfo`](crate::AllocInfo)).
    pub const ALLOCS: &str = "allocs";
    /// Outstanding mmap regions (`--mmap`), same types as [`ALLOCS`].
    pub const MMAPS: &str = "mmaps";
    /// Stacks the kernel walked of up to [`KSTACK_SHORT`](crate::KSTACK_SHORT)
    /// frames: `u64` id → a prefix of [`KStack`](crate::KStack).
    pub const STACKS: &str = "stacks";
    /// Deeper stacks: `u64` id → [`KStack`](crate::KStack).
    pub const DEEP_STACKS: &str = "deep_stacks";
    /// The rule cache: [`RuleKey`](crate::RuleKey) → [`RawRule`](crate::RawRule).
    pub const RULES: &str = "rules";
    /// Per-CPU loss and bookkeeping counters, indexed by [`Counter`](crate::Counter).
    pub const COUNTERS: &str = "counters";
    /// Per process: the address of the dynamic linker's `_r_debug`
    /// (`u32` tgid → `u64`).
    pub const R_DEBUGS: &str = "r_debugs";
    /// Per thread: where its stack copies may stop (`u32` tid → `u64` address).
    pub const COPY_ENDS: &str = "copy_ends";
    /// Program array holding [`prog::WALK_STACK`](crate::prog::WALK_STACK) at index 0.
    pub const WALKERS: &str = "walkers";
    /// The read-only configuration ([`Config`](crate::Config)).
    pub const RODATA: &str = ".rodata";
    /// `--sample-bytes`: [`SAMPLE_GAPS`](crate::SAMPLE_GAPS) gaps between
    /// sampled bytes (`u32` index → `u64` bytes).
    pub const SAMPLE_GAPS: &str = "sample_gaps";
}

/// Largest `--stack-bytes` the BPF side copies.
pub const MAX_STACK_BYTES: u32 = abi::MAX_STACK_BYTES as u32;
/// Deepest stack the kernel walks and stores.
pub const KSTACK_MAX: usize = abi::KSTACK_MAX as usize;
/// Stacks up to this deep go to the smaller table, [`map::STACKS`].
pub const KSTACK_SHORT: usize = abi::KSTACK_SHORT as usize;
/// Entries of [`map::SAMPLE_GAPS`].
pub const SAMPLE_GAPS: usize = abi::SAMPLE_GAPS as usize;
/// Stack ids with this bit set are miss ids (user space resolves them).
pub const MISS_ID_BIT: u64 = abi::MISS_ID_BIT;
/// Bits of a stored pc below the method byte.
pub const PC_MASK: u64 = (1 << abi::METHOD_SHIFT) - 1;

/// Views a plain `#[repr(C)]` value as bytes.
fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is a plain-old-data #[repr(C)] type without padding (checked
    // by the layout tests); any byte view of it is initialized.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Reads a plain `#[repr(C)]` value from the start of `b`.
fn read_pod<T: Copy + Default>(b: &[u8]) -> Option<T> {
    if b.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked; every bit pattern is a valid T (plain
    // integers); read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// Plain-old-data map keys and values: their bytes as the kernel sees them.
pub trait Pod: Copy + Default {
    /// The value's bytes (native byte order).
    fn as_bytes(&self) -> &[u8] {
        bytes_of(self)
    }
    /// Reads a value from map bytes; `None` if too short.
    fn from_bytes(b: &[u8]) -> Option<Self> {
        read_pod(b)
    }
}

/// Configuration written into the object's `.rodata` before load (`struct config`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Smallest traced request, bytes.
    pub min_size: u64,
    /// Largest traced request, bytes.
    pub max_size: u64,
    /// Wake the reader once this many bytes are pending in the ring buffer.
    pub wakeup_bytes: u64,
    /// Bits of a code address (aarch64: the pointer-authentication bits cleared).
    pub pc_mask: u64,
    /// Bytes of user stack copied from sp on a miss (multiple of 8).
    pub stack_bytes: u32,
    /// Track every Nth allocation of each thread (1: all).
    pub sample_rate: u32,
    /// Deepest stack (`--max-frames`).
    pub max_frames: u32,
    /// 1: every tracked allocation also sends its copy (`--verify-unwind`).
    pub verify: u32,
    /// 1: every call is sent (`-t`).
    pub trace: u32,
    /// 0: off; N: each byte sampled with probability 1/N (`--sample-bytes`).
    pub sample_bytes: u32,
}
impl Pod for Config {}

/// Key of [`map::ALLOCS`] and [`map::MMAPS`] (`struct alloc_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AllocKey {
    /// The block's address.
    pub addr: u64,
    /// The process.
    pub tgid: u32,
    /// Zero.
    pub _pad: u32,
}
impl Pod for AllocKey {}

/// An outstanding block (`struct alloc_info`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocInfo {
    /// Requested bytes.
    pub size: u64,
    /// A key of [`map::STACKS`], or a miss id ([`MISS_ID_BIT`] set).
    pub stack_id: u64,
    /// `bpf_ktime_get_ns()` at the allocator's entry (CLOCK_MONOTONIC).
    pub ts_ns: u64,
}
impl Pod for AllocInfo {}

/// Key of [`map::RULES`] (`struct rule_key`): a return address minus one.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct RuleKey {
    /// The address looked up (return address - 1).
    pub pc: u64,
    /// The process.
    pub tgid: u32,
    /// Zero.
    pub _pad: u32,
}
impl Pod for RuleKey {}

/// A compact unwind rule as the kernel runs it (`struct unwind_rule`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RawRule {
    /// CFA offset.
    pub cfa_off: i32,
    /// Return-address offset.
    pub ra_off: i32,
    /// Frame-pointer offset.
    pub fp_off: i32,
    /// `UR_*` base register, `| CFA_DEREF`.
    pub cfa: u8,
    /// `RR_* | UR_* << 4`.
    pub ra: u8,
    /// `RR_* | UR_* << 4`.
    pub fp: u8,
    /// `RK_* | M_* << 4`.
    pub kind: u8,
}
impl Pod for RawRule {}

/// A stack the kernel walked (`struct kstack`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KStack {
    /// Valid entries of `pcs`.
    pub nr: u32,
    /// Why the walk ended (`END_*`).
    pub end: u32,
    /// PCs, innermost first, each with its method (`M_*`) in the top byte.
    pub pcs: [u64; KSTACK_MAX],
}
impl Default for KStack {
    fn default() -> Self {
        KStack {
            nr: 0,
            end: 0,
            pcs: [0; KSTACK_MAX],
        }
    }
}
impl Pod for KStack {}

impl KStack {
    /// Reads a stack from map bytes holding all of `struct kstack` or a
    /// prefix of it; `None` if `nr` claims more words than there are.
    pub fn from_prefix(b: &[u8]) -> Option<KStack> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_ne_bytes(b.get(i..i + 8)?.try_into().ok()?))
        };
        let head = word(0)?.to_ne_bytes();
        let nr = u32::from_ne_bytes(head[..4].try_into().ok()?);
        let end = u32::from_ne_bytes(head[4..].try_into().ok()?);
        let mut s = KStack {
            nr,
            end,
            ..KStack::default()
        };
        if nr as usize > KSTACK_MAX {
            return None;
        }
        for i in 0..nr as usize {
            s.pcs[i] = word(8 + 8 * i)?;
        }
        Some(s)
    }

    /// The valid words (pc | method << 56).
    pub fn words(&self) -> &[u64] {
        &self.pcs[..(self.nr as usize).min(KSTACK_MAX)]
    }
}

/// Mixes one word into a stack hash, as `mix()` in memleak.bpf.c.
fn mix(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(0x100000001b3);
    h ^ (h >> 29)
}

/// A stack's id from its words (pc | method << 56), computed exactly as the
/// BPF walk does, so a stack unwound in user space and the same stack walked
/// in the kernel share one id.
pub fn stack_id(words: &[u64]) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for &w in words {
        h = mix(h, w);
    }
    let h = mix(h, words.len() as u64) & !MISS_ID_BIT;
    if h == 0 {
        1
    } else {
        h
    }
}

/// What was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Every kind, in `K_*` order.
    pub const ALL: [Kind; abi::NR_KINDS as usize] = [
        Kind::Malloc,
        Kind::Calloc,
        Kind::Realloc,
        Kind::Reallocarray,
        Kind::PosixMemalign,
        Kind::AlignedAlloc,
        Kind::Memalign,
        Kind::Valloc,
        Kind::Pvalloc,
        Kind::Mmap,
        Kind::Free,
        Kind::Munmap,
    ];

    /// The `K_*` number (the cookie of a multi-uprobe).
    pub fn raw(self) -> u32 {
        self as u32
    }

    fn from_raw(raw: u32) -> Option<Kind> {
        Kind::ALL.get(raw as usize).copied()
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

    /// The BPF program probing this function's entry.
    pub fn program(self) -> &'static str {
        use Kind::*;
        match self {
            Malloc => prog::MALLOC,
            Calloc => prog::CALLOC,
            Realloc => prog::REALLOC,
            Reallocarray => prog::REALLOCARRAY,
            PosixMemalign => prog::POSIX_MEMALIGN,
            AlignedAlloc => prog::ALIGNED_ALLOC,
            Memalign => prog::MEMALIGN,
            Valloc => prog::VALLOC,
            Pvalloc => prog::PVALLOC,
            Mmap => prog::MMAP,
            Free => prog::FREE,
            Munmap => prog::MUNMAP,
        }
    }
}

/// Loss, bookkeeping and unwinding counters kept per CPU by the BPF programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// A ring-buffer record could not be reserved (a stack copy or `-t` record lost).
    RingbufDrops = abi::C_RINGBUF_DROPS as u32,
    /// An entry found a call on the same thread whose return never came.
    MissingReturn = abi::C_MISSING_RETURN as u32,
    /// A return without a recorded entry.
    MissingEntry = abi::C_MISSING_ENTRY as u32,
    /// The per-thread map was full: a call was not tracked.
    StateFull = abi::C_STATE_FULL as u32,
    /// Allocator calls made from inside the allocator, counted once.
    Nested = abi::C_NESTED as u32,
    /// Skipped by `--sample-rate`.
    SampledOut = abi::C_SAMPLED_OUT as u32,
    /// Skipped by `--min-size` / `--max-size`.
    Filtered = abi::C_FILTERED as u32,
    /// posix_memalign's result could not be read.
    MemptrFault = abi::C_MEMPTR_FAULT as u32,
    /// The books were full: a block is missing from them.
    AllocsFull = abi::C_ALLOCS_FULL as u32,
    /// The stack table was full: an allocation's stack is unknown.
    StacksFull = abi::C_STACKS_FULL as u32,
    /// Allocations whose stack the kernel walked to its end.
    KernelStacks = abi::C_KERNEL_STACKS as u32,
    /// Allocations whose stack went to user space (a PC without a rule).
    Misses = abi::C_MISSES as u32,
    /// Frames stepped with a cached rule.
    RuleHits = abi::C_RULE_HITS as u32,
    /// Misses at a PC whose rule the kernel cannot run.
    Unexpressible = abi::C_UNEXPRESSIBLE as u32,
    /// Misses because the stack is deeper than the kernel walks.
    KernelTooDeep = abi::C_KERNEL_TOO_DEEP as u32,
    /// A block was booked at an address still booked (its free was not seen).
    Replaced = abi::C_REPLACED as u32,
    /// Partial munmaps applied by user space.
    MunmapEvents = abi::C_MUNMAP_EVENTS as u32,
    /// Ring-buffer bytes reserved.
    BytesSent = abi::C_BYTES_SENT as u32,
    /// The tail call to the stack walk failed: a stack is unknown.
    NoWalker = abi::C_NO_WALKER as u32,
    /// `--verify-unwind`: a verification copy found no room in the ring.
    VerifySkipped = abi::C_VERIFY_SKIPPED as u32,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; abi::NR_COUNTERS as usize] = [
        Counter::RingbufDrops,
        Counter::MissingReturn,
        Counter::MissingEntry,
        Counter::StateFull,
        Counter::Nested,
        Counter::SampledOut,
        Counter::Filtered,
        Counter::MemptrFault,
        Counter::AllocsFull,
        Counter::StacksFull,
        Counter::KernelStacks,
        Counter::Misses,
        Counter::RuleHits,
        Counter::Unexpressible,
        Counter::KernelTooDeep,
        Counter::Replaced,
        Counter::MunmapEvents,
        Counter::BytesSent,
        Counter::NoWalker,
        Counter::VerifySkipped,
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
            Counter::AllocsFull => "allocs_map_full",
            Counter::StacksFull => "stacks_map_full",
            Counter::KernelStacks => "kernel_stacks",
            Counter::Misses => "rule_misses",
            Counter::RuleHits => "rule_hits",
            Counter::Unexpressible => "unexpressible_rules",
            Counter::KernelTooDeep => "deeper_than_kernel_walk",
            Counter::Replaced => "replaced_blocks",
            Counter::MunmapEvents => "partial_munmaps",
            Counter::BytesSent => "ringbuf_bytes",
            Counter::NoWalker => "stack_walk_failures",
            Counter::VerifySkipped => "verify_copies_skipped",
        }
    }

    /// True when the counter means an event (or its stack) was lost: the
    /// report may be wrong.
    pub fn is_loss(self) -> bool {
        matches!(
            self,
            Counter::RingbufDrops
                | Counter::MissingReturn
                | Counter::MissingEntry
                | Counter::StateFull
                | Counter::MemptrFault
                | Counter::AllocsFull
                | Counter::StacksFull
                | Counter::NoWalker
        )
    }
}

/// Number of registers in [`StackRecord::regs`]: pc, sp, fp, ra.
pub const NR_REGS: usize = abi::NR_REGS as usize;

/// The fixed part of `struct stack_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct StackEventFixed {
    ty: u32,
    tid: u32,
    ts_ns: u64,
    tgid: u32,
    flags: u32,
    stack_id: u64,
    regs: [u64; NR_REGS],
    kstack: KStack,
    stack_len: u32,
    _pad: u32,
}
impl Pod for StackEventFixed {}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct MunmapEventRaw {
    ty: u32,
    tid: u32,
    ts_ns: u64,
    tgid: u32,
    _pad: u32,
    addr: u64,
    len: u64,
}
impl Pod for MunmapEventRaw {}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct TraceEventRaw {
    ty: u32,
    tid: u32,
    ts_ns: u64,
    tgid: u32,
    kind: u32,
    size: u64,
    addr: u64,
    old_ptr: u64,
}
impl Pod for TraceEventRaw {}

/// The fixed part of `struct linkmap_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct LinkMapHead {
    ty: u32,
    tid: u32,
    ts_ns: u64,
    tgid: u32,
    nr: u32,
}
impl Pod for LinkMapHead {}

/// Where every record keeps its process, right after the header.
const TGID_AT: usize = std::mem::offset_of!(StackEventFixed, tgid);
const _: () = assert!(
    std::mem::offset_of!(MunmapEventRaw, tgid) == TGID_AT
        && std::mem::offset_of!(TraceEventRaw, tgid) == TGID_AT
        && std::mem::offset_of!(LinkMapHead, tgid) == TGID_AT
);

/// The process a record is about, without parsing the rest of it.
pub fn record_tgid(b: &[u8]) -> Option<u32> {
    b.get(TGID_AT..TGID_AT + 4)
        .map(|t| u32::from_ne_bytes(t.try_into().expect("4 bytes")))
}

/// A stack sent to user space: a miss (the kernel could not finish it) or,
/// with `--verify-unwind`, one it finished, to be unwound again and compared.
#[derive(Debug, Clone)]
pub struct StackRecord<'a> {
    /// True for a verification copy, false for a miss.
    pub verify: bool,
    /// Process.
    pub tgid: u32,
    /// Thread.
    pub tid: u32,
    /// `bpf_ktime_get_ns()` when sent.
    pub ts_ns: u64,
    /// The miss id (the allocation's stack id until user space resolves it),
    /// or the kernel's stack id.
    pub stack_id: u64,
    /// pc, sp, fp, ra at the allocator's entry (ra is 0 on x86_64).
    pub regs: [u64; NR_REGS],
    /// What the kernel walked.
    pub kstack: KStack,
    /// The copy reached the stack's end (an unreadable page).
    pub reached_stack_end: bool,
    /// User memory from sp upwards.
    pub stack: &'a [u8],
}

/// A record from the ring buffer.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// See [`StackRecord`].
    Stack(Box<StackRecord<'a>>),
    /// A munmap that was not a whole region's, or a region's head: user
    /// space applies it to [`map::MMAPS`].
    Munmap {
        /// Process.
        tgid: u32,
        /// `bpf_ktime_get_ns()` at munmap's entry.
        ts_ns: u64,
        /// Start.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// The dynamic linker's loaded objects when a dlclose was about to
    /// unmap some: load bias and path of each (the program's path is "").
    LinkMap {
        /// Process.
        tgid: u32,
        /// (l_addr, l_name) of each object, in the linker's order.
        objects: Vec<(u64, String)>,
    },
    /// `-t`: one call.
    Trace {
        /// Process.
        tgid: u32,
        /// Thread.
        tid: u32,
        /// What was called.
        kind: Kind,
        /// Requested bytes (munmap: its length).
        size: u64,
        /// The new block (0: the call failed), or the block freed.
        addr: u64,
        /// realloc's block passed in.
        old_ptr: u64,
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

impl<'a> Event<'a> {
    /// Parses one ring-buffer record.
    pub fn parse(b: &'a [u8]) -> Result<Event<'a>, BadRecord> {
        let ty = b
            .get(..4)
            .map(|t| u32::from_ne_bytes(t.try_into().expect("4 bytes")))
            .ok_or(BadRecord("shorter than its header"))?;
        match u64::from(ty) {
            abi::EV_MISS | abi::EV_VERIFY => {
                let f: StackEventFixed = read_pod(b).ok_or(BadRecord("short stack record"))?;
                if f.kstack.nr as usize > KSTACK_MAX {
                    return Err(BadRecord("kernel stack longer than its array"));
                }
                let start = std::mem::size_of::<StackEventFixed>();
                let stack = start
                    .checked_add(f.stack_len as usize)
                    .and_then(|end| b.get(start..end))
                    .ok_or(BadRecord("stack length beyond the record"))?;
                Ok(Event::Stack(Box::new(StackRecord {
                    verify: u64::from(ty) == abi::EV_VERIFY,
                    tgid: f.tgid,
                    tid: f.tid,
                    ts_ns: f.ts_ns,
                    stack_id: f.stack_id,
                    regs: f.regs,
                    kstack: f.kstack,
                    reached_stack_end: u64::from(f.flags) & abi::F_STACK_END != 0,
                    stack,
                })))
            }
            abi::EV_MUNMAP => {
                let m: MunmapEventRaw = read_pod(b).ok_or(BadRecord("short munmap record"))?;
                Ok(Event::Munmap {
                    tgid: m.tgid,
                    ts_ns: m.ts_ns,
                    addr: m.addr,
                    len: m.len,
                })
            }
            abi::EV_TRACE => {
                let t: TraceEventRaw = read_pod(b).ok_or(BadRecord("short trace record"))?;
                Ok(Event::Trace {
                    tgid: t.tgid,
                    tid: t.tid,
                    kind: Kind::from_raw(t.kind).ok_or(BadRecord("unknown kind"))?,
                    size: t.size,
                    addr: t.addr,
                    old_ptr: t.old_ptr,
                })
            }
            abi::EV_LINKMAP => {
                let head: LinkMapHead = read_pod(b).ok_or(BadRecord("short link map record"))?;
                let nr = head.nr as usize;
                if nr > abi::LINKMAP_MAX as usize {
                    return Err(BadRecord("more link map entries than the record holds"));
                }
                const ENTRY: usize = 8 + abi::LINKMAP_NAME as usize;
                let start = std::mem::size_of::<LinkMapHead>();
                let mut objects = Vec::with_capacity(nr);
                for i in 0..nr {
                    let e = b
                        .get(start + i * ENTRY..start + (i + 1) * ENTRY)
                        .ok_or(BadRecord("link map entries beyond the record"))?;
                    let base = u64::from_ne_bytes(e[..8].try_into().expect("8 bytes"));
                    let name = &e[8..];
                    let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                    objects.push((base, String::from_utf8_lossy(&name[..len]).into_owned()));
                }
                Ok(Event::LinkMap {
                    tgid: head.tgid,
                    objects,
                })
            }
            _ => Err(BadRecord("unknown record type")),
        }
    }
}

// The sizes memleak.h asserts for its structs (on every target: natural
// alignment, no implicit padding).
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<Config>() == 56);
    assert!(size_of::<AllocKey>() == 16);
    assert!(size_of::<AllocInfo>() == 24);
    assert!(size_of::<RuleKey>() == 16);
    assert!(size_of::<RawRule>() == 16);
    assert!(size_of::<KStack>() == 8 + 8 * KSTACK_MAX);
    assert!(size_of::<StackEventFixed>() == 72 + size_of::<KStack>());
    assert!(size_of::<MunmapEventRaw>() == 40);
    assert!(size_of::<TraceEventRaw>() == 48);
};

#[cfg(test)]
mod tests;
