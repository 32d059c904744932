//! memleak's unwinder: per-architecture register sets feeding one shared DWARF
//! CFI engine (gimli), with prologue-analysis, frame-pointer and stack-scan
//! fallbacks, plus ELF symbolization.
//!
//! # Overview
//!
//! - [`Arch`] describes an architecture: DWARF register numbers, address
//!   size, the rule at a function's entry, the frame-pointer rule, rules
//!   from a function's machine code and call-site checks.
//!   [`ArchX86_64`] is in `x86_64/`; every architecture has the same file
//!   set, and none is `cfg`-gated: any host unwinds any architecture.
//! - [`Unwinder`] walks a [`StackSnapshot`] (the bytes a probe copied from sp
//!   upwards) from [`UnwindRegs`], using a [`ModuleMap`] (which [`ElfFile`]
//!   backs each address) and caching one [`UnwindRule`] per address.
//! - [`ElfFile::symbolize`] turns an address into function, file and line,
//!   inlined frames included.
//!
//! The same code serves live tracing and offline unwinding: registers, stack
//! bytes, a copy of `/proc/PID/maps` and the ELF files (under a sysroot, see
//! [`ElfCache::with_sysroot`]) are all it needs.
//!
//! # Your responsibilities
//!
//! The stack copy must start at the captured sp. Frames whose rule needs
//! memory outside the copy end the walk with [`StackEnd::Truncated`] (the
//! copy stopped at its size limit) or an error (the address is not stack).
//!
//! ```
//! use memleak_unwind_arch::{ArchX86_64, ModuleMap, StackSnapshot, StackEnd, Unwinder, UnwindRegsX86_64, Method};
//! // At malloc's entry [sp] holds the return address into the caller, whose
//! // frame-pointer record is at 0x1010: [0x1010] = 0, [0x1018] = 0.
//! let words: [u64; 4] = [0x401234, 0, 0, 0];
//! let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
//! let stack = StackSnapshot::new(0x1000, &bytes, 8, false, true);
//! let regs = UnwindRegsX86_64 { rip: 0x7f0000001000, rsp: 0x1000, rbp: 0x1010 };
//! let mut unwinder = Unwinder::<ArchX86_64>::default();
//! let mut frames = Vec::new();
//! let end = unwinder.unwind(regs.into(), true, &stack, &ModuleMap::new(), &mut frames);
//! assert_eq!(frames[0].address, 0x7f0000001000);
//! assert_eq!((frames[1].address, frames[1].method), (0x401234, Method::Entry));
//! assert_eq!(end, StackEnd::Outermost); // the frame-pointer record's return address is 0
//! ```

#![deny(missing_docs)]

mod aarch64;
mod any;
mod arch;
mod cache;
mod cfi;
mod code;
mod dynamic;
mod elf;
mod error;
mod mips32;
mod module;
pub mod record;
mod recording;
mod regs;
mod rule;
mod stack;
mod unwinder;
mod x86_64;

pub use aarch64::{ArchAarch64, UnwindRegsAarch64};
pub use any::{AnyUnwinder, EntrySnapshot};
pub use arch::Arch;
pub use cache::CacheStats;
pub use cfi::{find_cfi_rule, CfiLookup, CfiSource, UnwindContext};
pub use elf::{demangle, set_debug_dirs, ElfFile, SymbolizedFrame};
pub use error::{ElfError, UnwindError};
pub use mips32::{analyze_prologue, ArchMips32, UnwindRegsMips32};
pub use module::{parse_proc_maps, ElfCache, Mapping, MapsEntry, ModuleMap};
pub use recording::{Recording, RecordingError};
pub use regs::UnwindRegs;
pub use rule::{CfaRule, Reg, RegRule, UnwindRule};
pub use stack::{StackMemory, StackSnapshot};
pub use unwinder::{Frame, Method, RuleLookup, StackEnd, UnwindMode, Unwinder};
pub use x86_64::{ArchX86_64, UnwindRegsX86_64};
