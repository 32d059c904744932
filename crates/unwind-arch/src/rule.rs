//! The compact unwind rule shared by every architecture: what a CFI row (or a
//! fallback) says about the three registers the unwinder tracks. Rules are
//! small `Copy` values, so they are cached per address.

use crate::error::UnwindError;
use crate::regs::UnwindRegs;
use crate::stack::StackMemory;

/// A register the unwinder tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reg {
    /// Stack pointer.
    Sp,
    /// Frame pointer.
    Fp,
    /// Return-address register (aarch64 x30, mips $31); x86_64 has none.
    Ra,
}

impl Reg {
    fn name(self) -> &'static str {
        match self {
            Reg::Sp => "sp",
            Reg::Fp => "fp",
            Reg::Ra => "ra",
        }
    }
}

/// How to compute the canonical frame address (CFA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CfaRule {
    /// `CFA = reg + offset` (DW_CFA_def_cfa).
    RegOffset(Reg, i64),
    /// `CFA = *(reg + offset)` (DW_CFA_def_cfa_expression `DW_OP_bregN off; DW_OP_deref`,
    /// as GCC emits for functions that realign the stack).
    DerefRegOffset(Reg, i64),
}

/// How to recover a register of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegRule {
    /// The register has no value in the caller; for the return address this
    /// marks the outermost frame (DW_CFA_undefined).
    Undefined,
    /// The caller's value is the current value (DW_CFA_same_value).
    SameValue,
    /// Saved at `CFA + offset` (DW_CFA_offset).
    AtCfa(i64),
    /// The value is `CFA + offset` (DW_CFA_val_offset).
    ValCfa(i64),
    /// Saved at `reg + offset` (DW_CFA_expression `DW_OP_bregN off`).
    AtRegOffset(Reg, i64),
    /// The caller's value is in another register (DW_CFA_register).
    InReg(Reg),
}

/// One step of unwinding: from a frame's registers to its caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnwindRule {
    /// The CFA, which is the caller's stack pointer.
    pub cfa: CfaRule,
    /// The return address, which is the caller's pc.
    pub ra: RegRule,
    /// The caller's frame pointer.
    pub fp: RegRule,
}

fn add(base: u64, offset: i64) -> Result<u64, UnwindError> {
    base.checked_add_signed(offset)
        .ok_or(UnwindError::IntegerOverflow)
}

fn get(regs: &UnwindRegs, reg: Reg) -> Result<u64, UnwindError> {
    let v = match reg {
        Reg::Sp => Some(regs.sp),
        Reg::Fp => regs.fp,
        Reg::Ra => regs.ra,
    };
    v.ok_or(UnwindError::UnknownRegister(reg.name()))
}

fn recover(
    rule: RegRule,
    current: Option<u64>,
    cfa: u64,
    regs: &UnwindRegs,
    mem: &impl StackMemory,
) -> Result<Option<u64>, UnwindError> {
    Ok(match rule {
        RegRule::Undefined => None,
        RegRule::SameValue => current,
        RegRule::AtCfa(off) => Some(mem.read_word(add(cfa, off)?)?),
        RegRule::ValCfa(off) => Some(add(cfa, off)?),
        RegRule::AtRegOffset(reg, off) => Some(mem.read_word(add(get(regs, reg)?, off)?)?),
        RegRule::InReg(reg) => Some(get(regs, reg)?),
    })
}

impl UnwindRule {
    /// Computes the caller's registers. `Ok(None)` means this is the
    /// outermost frame (the return address is undefined or zero).
    pub fn exec(
        &self,
        regs: &UnwindRegs,
        mem: &impl StackMemory,
    ) -> Result<Option<UnwindRegs>, UnwindError> {
        let cfa = match self.cfa {
            CfaRule::RegOffset(reg, off) => add(get(regs, reg)?, off)?,
            CfaRule::DerefRegOffset(reg, off) => mem.read_word(add(get(regs, reg)?, off)?)?,
        };
        let ra_current = regs.ra;
        let ra = match self.ra {
            RegRule::SameValue => {
                Some(ra_current.ok_or(UnwindError::UnknownRegister(Reg::Ra.name()))?)
            }
            rule => recover(rule, ra_current, cfa, regs, mem)?,
        };
        let Some(ra) = ra.filter(|&ra| ra != 0) else {
            return Ok(None);
        };
        let fp = recover(self.fp, regs.fp, cfa, regs, mem)?;
        Ok(Some(UnwindRegs {
            pc: ra,
            sp: cfa,
            fp,
            ra: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::StackSnapshot;

    // A synthetic stack at 0x1000: word i holds `words[i]`.
    fn stack(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn regs(sp: u64, fp: Option<u64>, ra: Option<u64>) -> UnwindRegs {
        UnwindRegs {
            pc: 0x4000,
            sp,
            fp,
            ra,
        }
    }

    fn rule(cfa: CfaRule, ra: RegRule, fp: RegRule) -> UnwindRule {
        UnwindRule { cfa, ra, fp }
    }

    #[test]
    fn cfa_reg_offset_ra_at_cfa() {
        let bytes = stack(&[0x1111, 0x5000, 0x2222]);
        let mem = StackSnapshot::new(0x1000, &bytes, 8, false, true);
        let r = rule(
            CfaRule::RegOffset(Reg::Sp, 16),
            RegRule::AtCfa(-8),
            RegRule::SameValue,
        );
        let next = r
            .exec(&regs(0x1000, Some(0x77), None), &mem)
            .unwrap()
            .unwrap();
        assert_eq!((next.pc, next.sp, next.fp), (0x5000, 0x1010, Some(0x77)));
    }

    #[test]
    fn cfa_from_frame_pointer_fp_at_cfa() {
        // x86_64 frame-pointer frame: [fp] = saved fp, [fp+8] = ra, CFA = fp + 16.
        let bytes = stack(&[0, 0, 0x1ff0, 0x6000]);
        let mem = StackSnapshot::new(0x1000, &bytes, 8, false, true);
        let r = rule(
            CfaRule::RegOffset(Reg::Fp, 16),
            RegRule::AtCfa(-8),
            RegRule::AtCfa(-16),
        );
        let next = r
            .exec(&regs(0x1000, Some(0x1010), None), &mem)
            .unwrap()
            .unwrap();
        assert_eq!((next.pc, next.sp, next.fp), (0x6000, 0x1020, Some(0x1ff0)));
    }

    #[test]
    fn cfa_deref_expression() {
        // CFA = *(fp - 8), as GCC emits for a realigned main.
        let bytes = stack(&[0x1020, 0x3333, 0, 0x7000]);
        let mem = StackSnapshot::new(0x1000, &bytes, 8, false, true);
        let r = rule(
            CfaRule::DerefRegOffset(Reg::Fp, -8),
            RegRule::AtCfa(-8),
            RegRule::AtRegOffset(Reg::Fp, 0),
        );
        let next = r
            .exec(&regs(0x1000, Some(0x1008), None), &mem)
            .unwrap()
            .unwrap();
        assert_eq!((next.pc, next.sp, next.fp), (0x7000, 0x1020, Some(0x3333)));
    }

    #[test]
    fn ra_same_value_and_in_register() {
        let mem = StackSnapshot::new(0x1000, &[], 8, false, true);
        // aarch64 leaf: CFA = sp, ra still in x30.
        let r = rule(
            CfaRule::RegOffset(Reg::Sp, 0),
            RegRule::SameValue,
            RegRule::SameValue,
        );
        let next = r
            .exec(&regs(0x1000, Some(5), Some(0x8000)), &mem)
            .unwrap()
            .unwrap();
        assert_eq!((next.pc, next.sp, next.ra), (0x8000, 0x1000, None));
        let r = rule(
            CfaRule::RegOffset(Reg::Sp, 0),
            RegRule::InReg(Reg::Fp),
            RegRule::Undefined,
        );
        let next = r
            .exec(&regs(0x1000, Some(0x9000), None), &mem)
            .unwrap()
            .unwrap();
        assert_eq!((next.pc, next.fp), (0x9000, None));
        // The return address is needed but unknown.
        let r = rule(
            CfaRule::RegOffset(Reg::Sp, 0),
            RegRule::SameValue,
            RegRule::SameValue,
        );
        assert_eq!(
            r.exec(&regs(0x1000, None, None), &mem),
            Err(UnwindError::UnknownRegister("ra"))
        );
    }

    #[test]
    fn val_cfa() {
        let mem = StackSnapshot::new(0x1000, &[], 8, false, true);
        let r = rule(
            CfaRule::RegOffset(Reg::Sp, 32),
            RegRule::InReg(Reg::Ra),
            RegRule::ValCfa(-16),
        );
        let next = r
            .exec(&regs(0x1000, None, Some(0x4321)), &mem)
            .unwrap()
            .unwrap();
        assert_eq!((next.pc, next.sp, next.fp), (0x4321, 0x1020, Some(0x1010)));
    }

    #[test]
    fn undefined_or_null_return_address_is_outermost() {
        let bytes = stack(&[0, 0]);
        let mem = StackSnapshot::new(0x1000, &bytes, 8, false, true);
        let r = rule(
            CfaRule::RegOffset(Reg::Sp, 8),
            RegRule::Undefined,
            RegRule::SameValue,
        );
        assert_eq!(r.exec(&regs(0x1000, None, None), &mem), Ok(None));
        let r = rule(
            CfaRule::RegOffset(Reg::Sp, 8),
            RegRule::AtCfa(-8),
            RegRule::SameValue,
        );
        assert_eq!(r.exec(&regs(0x1000, None, None), &mem), Ok(None));
    }

    #[test]
    fn reads_outside_the_copy() {
        let bytes = stack(&[1, 2]);
        // The copy stopped at --stack-bytes: reading past it is a short copy.
        let short = StackSnapshot::new(0x1000, &bytes, 8, false, false);
        let r = rule(
            CfaRule::RegOffset(Reg::Sp, 64),
            RegRule::AtCfa(-8),
            RegRule::SameValue,
        );
        assert_eq!(
            r.exec(&regs(0x1000, None, None), &short),
            Err(UnwindError::StackCopyTooShort(0x1038))
        );
        // The copy reached the stack's end: the same read is a bad address.
        let whole = StackSnapshot::new(0x1000, &bytes, 8, false, true);
        assert_eq!(
            r.exec(&regs(0x1000, None, None), &whole),
            Err(UnwindError::BadStackAddress(0x1038))
        );
        // Below sp is never in the copy.
        let r = rule(
            CfaRule::RegOffset(Reg::Sp, -64),
            RegRule::AtCfa(0),
            RegRule::SameValue,
        );
        assert_eq!(
            r.exec(&regs(0x1000, None, None), &short),
            Err(UnwindError::BadStackAddress(0xfc0))
        );
    }
}
