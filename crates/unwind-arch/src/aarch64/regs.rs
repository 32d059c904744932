//! aarch64 registers as captured at a probe. `bl` leaves the return address
//! in x30 (LR); x29 is the frame pointer, pointing at the frame record
//! {previous x29, x30} (AAPCS64 section 6.2.3 and 6.4.6).

use crate::regs::UnwindRegs;

/// The aarch64 registers the unwinder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnwindRegsAarch64 {
    /// pc
    pub pc: u64,
    /// sp
    pub sp: u64,
    /// x29
    pub fp: u64,
    /// x30
    pub lr: u64,
}

impl UnwindRegsAarch64 {
    /// From a probe's raw registers in memleak's record order: pc, sp, fp, ra.
    pub fn from_raw(raw: [u64; 4]) -> Self {
        UnwindRegsAarch64 {
            pc: raw[0],
            sp: raw[1],
            fp: raw[2],
            lr: raw[3],
        }
    }
}

impl From<UnwindRegsAarch64> for UnwindRegs {
    fn from(r: UnwindRegsAarch64) -> UnwindRegs {
        UnwindRegs {
            pc: r.pc,
            sp: r.sp,
            fp: Some(r.fp),
            ra: Some(r.lr),
        }
    }
}
