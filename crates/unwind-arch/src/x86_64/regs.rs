//! x86_64 registers as captured at a probe. %rip is the pc, %rsp the stack
//! pointer and %rbp the frame pointer when the code keeps one; the return
//! address has no register: `call` pushes it at [%rsp] (psABI section 3.2.2).

use crate::regs::UnwindRegs;

/// The x86_64 registers the unwinder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnwindRegsX86_64 {
    /// %rip
    pub rip: u64,
    /// %rsp
    pub rsp: u64,
    /// %rbp
    pub rbp: u64,
}

impl UnwindRegsX86_64 {
    /// From a probe's raw registers in memleak's record order: pc, sp, fp, ra.
    pub fn from_raw(raw: [u64; 4]) -> Self {
        UnwindRegsX86_64 {
            rip: raw[0],
            rsp: raw[1],
            rbp: raw[2],
        }
    }
}

impl From<UnwindRegsX86_64> for UnwindRegs {
    fn from(r: UnwindRegsX86_64) -> UnwindRegs {
        UnwindRegs {
            pc: r.rip,
            sp: r.rsp,
            fp: Some(r.rbp),
            ra: None,
        }
    }
}
