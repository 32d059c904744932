//! mips32 registers as captured at a probe (o32: "System V ABI, MIPS RISC
//! Processor Supplement", chapter 3): `jal`/`jalr` leave the return address
//! in $ra ($31); $sp is $29, $fp ($s8) is $30. Registers are 32 bits.

use crate::regs::UnwindRegs;

/// The mips32 registers the unwinder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnwindRegsMips32 {
    /// pc (cp0_epc at a probe)
    pub pc: u32,
    /// $sp
    pub sp: u32,
    /// $fp
    pub fp: u32,
    /// $ra
    pub ra: u32,
}

impl UnwindRegsMips32 {
    /// From a probe's raw registers in memleak's record order: pc, sp, fp, ra.
    pub fn from_raw(raw: [u64; 4]) -> Self {
        UnwindRegsMips32 {
            pc: raw[0] as u32,
            sp: raw[1] as u32,
            fp: raw[2] as u32,
            ra: raw[3] as u32,
        }
    }
}

impl From<UnwindRegsMips32> for UnwindRegs {
    fn from(r: UnwindRegsMips32) -> UnwindRegs {
        UnwindRegs {
            pc: r.pc.into(),
            sp: r.sp.into(),
            fp: Some(r.fp.into()),
            ra: Some(r.ra.into()),
        }
    }
}
