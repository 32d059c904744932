//! mips32's fixed rules.

use crate::rule::{CfaRule, Reg, RegRule, UnwindRule};

/// At a function's first instruction `jal` has just set $ra; $sp and $fp
/// are untouched.
pub const ENTRY: UnwindRule = UnwindRule {
    cfa: CfaRule::RegOffset(Reg::Sp, 0),
    ra: RegRule::InReg(Reg::Ra),
    fp: RegRule::SameValue,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mips32::UnwindRegsMips32;
    use crate::stack::StackSnapshot;

    #[test]
    fn entry_uses_ra_register() {
        let mem = StackSnapshot::new(0x7fff0000, &[], 4, true, false);
        let regs = UnwindRegsMips32 {
            pc: 0x77001000,
            sp: 0x7fff0000,
            fp: 0x7fff0100,
            ra: 0x400abc,
        };
        let f = ENTRY.exec(&regs.into(), &mem).unwrap().unwrap();
        assert_eq!(
            (f.pc, f.sp, f.fp, f.ra),
            (0x400abc, 0x7fff0000, Some(0x7fff0100), None)
        );
    }
}
