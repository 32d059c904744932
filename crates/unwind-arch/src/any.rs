//! The one place that picks an architecture at run time, from an ELF
//! `e_machine`; everything below it is generic and monomorphized.

use crate::arch::Arch;
use crate::module::ModuleMap;
use crate::stack::StackSnapshot;
use crate::unwinder::{Frame, StackEnd, UnwindMode, Unwinder};
use crate::x86_64::{ArchX86_64, UnwindRegsX86_64};

/// An [`Unwinder`] for the architecture of the traced process.
pub enum AnyUnwinder {
    /// x86_64
    X86_64(Unwinder<ArchX86_64>),
}

impl AnyUnwinder {
    /// The unwinder for ELF machine `e_machine`, or `None` if unsupported.
    pub fn for_machine(e_machine: u16, mode: UnwindMode, max_frames: usize) -> Option<AnyUnwinder> {
        match e_machine {
            m if m == ArchX86_64::ELF_MACHINE => {
                Some(AnyUnwinder::X86_64(Unwinder::new(mode, max_frames)))
            }
            _ => None,
        }
    }

    /// Name of the architecture.
    pub fn arch_name(&self) -> &'static str {
        match self {
            AnyUnwinder::X86_64(_) => ArchX86_64::NAME,
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
        match self {
            AnyUnwinder::X86_64(u) => {
                let regs = UnwindRegsX86_64::from_raw(raw_regs);
                let snap = StackSnapshot::new(
                    regs.rsp,
                    stack,
                    ArchX86_64::ADDRESS_SIZE,
                    big_endian,
                    reached_end,
                );
                u.unwind(regs.into(), true, &snap, modules, frames)
            }
        }
    }

    /// Rule-cache statistics.
    pub fn cache_stats(&self) -> crate::CacheStats {
        match self {
            AnyUnwinder::X86_64(u) => u.cache_stats(),
        }
    }
}
