//! aarch64's fixed rules.

use crate::rule::{CfaRule, Reg, RegRule, UnwindRule};

/// At a function's first instruction `bl` has just set x30: the caller's
/// pc is x30, sp and x29 are untouched.
pub const ENTRY: UnwindRule = UnwindRule {
    cfa: CfaRule::RegOffset(Reg::Sp, 0),
    ra: RegRule::InReg(Reg::Ra),
    fp: RegRule::SameValue,
};

/// Frame records: x29 points at {caller's x29, x30}; the caller's sp is
/// x29 + 16 for the usual `stp x29, x30, [sp, #-N]!; mov x29, sp`.
pub const FRAME_POINTER: UnwindRule = UnwindRule {
    cfa: CfaRule::RegOffset(Reg::Fp, 16),
    ra: RegRule::AtCfa(-8),
    fp: RegRule::AtCfa(-16),
};

/// User-space code addresses fit in 48 bits (Linux hands out higher ones
/// only to mmap calls that ask for them); the bits above hold a
/// pointer-authentication code on return addresses signed with `paciasp`.
pub fn strip_pac(ra: u64) -> u64 {
    ra & ((1u64 << 48) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aarch64::UnwindRegsAarch64;
    use crate::regs::UnwindRegs;
    use crate::stack::StackSnapshot;

    fn words(w: &[u64]) -> Vec<u8> {
        w.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn entry_then_frame_records() {
        // At entry x30 = 0x400100 (into f); f's record at 0x1010 = {0x1030, 0x400200};
        // main's record at 0x1030 = {0, 0}: outermost.
        let stack = words(&[0, 0, 0x1030, 0x400200, 0, 0, 0, 0]);
        let mem = StackSnapshot::new(0x1000, &stack, 8, false, false);
        let regs: UnwindRegs = UnwindRegsAarch64 {
            pc: 0x7f00,
            sp: 0x1000,
            fp: 0x1010,
            lr: 0x400100,
        }
        .into();
        let f = ENTRY.exec(&regs, &mem).unwrap().unwrap();
        assert_eq!(
            (f.pc, f.sp, f.fp, f.ra),
            (0x400100, 0x1000, Some(0x1010), None)
        );
        let main = FRAME_POINTER.exec(&f, &mem).unwrap().unwrap();
        assert_eq!(
            (main.pc, main.sp, main.fp),
            (0x400200, 0x1020, Some(0x1030))
        );
        assert_eq!(FRAME_POINTER.exec(&main, &mem), Ok(None));
    }

    #[test]
    fn pac_bits_are_stripped() {
        assert_eq!(strip_pac(0x003d_0000_0040_0123), 0x0000_0000_0040_0123);
        assert_eq!(strip_pac(0x0000_ffff_8000_1000), 0x0000_ffff_8000_1000);
    }
}
