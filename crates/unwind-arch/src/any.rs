//! The one place that picks an architecture at run time, from an ELF
//! `e_machine`; everything below it is generic and monomorphized.

use crate::aarch64::{ArchAarch64, UnwindRegsAarch64};
use crate::arch::Arch;
use crate::mips32::{ArchMips32, UnwindRegsMips32};
use crate::module::ModuleMap;
use crate::regs::UnwindRegs;
use crate::stack::StackSnapshot;
use crate::unwinder::{Frame, RuleLookup, StackEnd, UnwindMode, Unwinder};
use crate::x86_64::{ArchX86_64, UnwindRegsX86_64};

/// What a probe captured at a function's entry: raw registers (pc, sp, fp,
/// ra) and a copy of the stack from sp.
#[derive(Debug, Clone, Copy)]
pub struct EntrySnapshot<'a> {
    /// pc, sp, fp, ra (ra is 0 where the architecture has no such register).
    pub raw_regs: [u64; 4],
    /// User memory from sp upwards.
    pub stack: &'a [u8],
    /// Byte order of the traced process.
    pub big_endian: bool,
    /// The copy reached the stack's end (reads past it are bad addresses,
    /// not a short copy).
    pub reached_end: bool,
}

/// An [`Unwinder`] for the architecture of the traced process.
pub enum AnyUnwinder {
    /// x86_64
    X86_64(Unwinder<ArchX86_64>),
    /// aarch64
    Aarch64(Unwinder<ArchAarch64>),
    /// mips32 (o32), either byte order
    Mips32(Unwinder<ArchMips32>),
}

impl AnyUnwinder {
    /// The unwinder for ELF machine `e_machine`, or `None` if unsupported.
    pub fn for_machine(e_machine: u16, mode: UnwindMode, max_frames: usize) -> Option<AnyUnwinder> {
        match e_machine {
            m if m == ArchX86_64::ELF_MACHINE => {
                Some(AnyUnwinder::X86_64(Unwinder::new(mode, max_frames)))
            }
            m if m == ArchAarch64::ELF_MACHINE => {
                Some(AnyUnwinder::Aarch64(Unwinder::new(mode, max_frames)))
            }
            m if m == ArchMips32::ELF_MACHINE => {
                Some(AnyUnwinder::Mips32(Unwinder::new(mode, max_frames)))
            }
            _ => None,
        }
    }

    /// Name of the architecture.
    pub fn arch_name(&self) -> &'static str {
        match self {
            AnyUnwinder::X86_64(_) => ArchX86_64::NAME,
            AnyUnwinder::Aarch64(_) => ArchAarch64::NAME,
            AnyUnwinder::Mips32(_) => ArchMips32::NAME,
        }
    }

    /// Unwinds from a probe's raw registers (pc, sp, fp, ra) and a copy of
    /// the stack from sp, taken at a function's entry.
    pub fn unwind_at_entry(
        &mut self,
        raw_regs: [u64; 4],
        stack: &[u8],
        big_endian: bool,
        reached_end: bool,
        modules: &ModuleMap,
        frames: &mut Vec<Frame>,
    ) -> StackEnd {
        let snap = EntrySnapshot {
            raw_regs,
            stack,
            big_endian,
            reached_end,
        };
        self.unwind_entry_logged(&snap, modules, frames, None)
    }

    /// [`unwind_at_entry`](Self::unwind_at_entry), also logging every rule
    /// looked up (see [`Unwinder::unwind_logged`]).
    pub fn unwind_entry_logged(
        &mut self,
        snap: &EntrySnapshot<'_>,
        modules: &ModuleMap,
        frames: &mut Vec<Frame>,
        rules: Option<&mut Vec<RuleLookup>>,
    ) -> StackEnd {
        fn go<A: Arch>(
            u: &mut Unwinder<A>,
            regs: UnwindRegs,
            s: &EntrySnapshot<'_>,
            modules: &ModuleMap,
            frames: &mut Vec<Frame>,
            rules: Option<&mut Vec<RuleLookup>>,
        ) -> StackEnd {
            let snap = StackSnapshot::new(
                regs.sp,
                s.stack,
                A::ADDRESS_SIZE,
                s.big_endian,
                s.reached_end,
            );
            u.unwind_logged(regs, true, &snap, modules, frames, rules)
        }
        let raw = snap.raw_regs;
        match self {
            AnyUnwinder::X86_64(u) => {
                let regs = UnwindRegsX86_64::from_raw(raw).into();
                go(u, regs, snap, modules, frames, rules)
            }
            AnyUnwinder::Aarch64(u) => {
                let regs = UnwindRegsAarch64::from_raw(raw).into();
                go(u, regs, snap, modules, frames, rules)
            }
            AnyUnwinder::Mips32(u) => {
                let regs = UnwindRegsMips32::from_raw(raw).into();
                go(u, regs, snap, modules, frames, rules)
            }
        }
    }

    /// The bits of a return address that are part of the address (all but
    /// aarch64's pointer-authentication bits).
    pub fn code_address_mask(&self) -> u64 {
        match self {
            AnyUnwinder::X86_64(_) => ArchX86_64::strip_return_address(u64::MAX),
            AnyUnwinder::Aarch64(_) => ArchAarch64::strip_return_address(u64::MAX),
            AnyUnwinder::Mips32(_) => ArchMips32::strip_return_address(u64::MAX),
        }
    }

    /// See [`Unwinder::last_sp`].
    pub fn last_sp(&self) -> u64 {
        match self {
            AnyUnwinder::X86_64(u) => u.last_sp(),
            AnyUnwinder::Aarch64(u) => u.last_sp(),
            AnyUnwinder::Mips32(u) => u.last_sp(),
        }
    }

    /// Rule-cache statistics.
    pub fn cache_stats(&self) -> crate::CacheStats {
        match self {
            AnyUnwinder::X86_64(u) => u.cache_stats(),
            AnyUnwinder::Aarch64(u) => u.cache_stats(),
            AnyUnwinder::Mips32(u) => u.cache_stats(),
        }
    }
}
