//! x86_64's fixed rules.

use crate::rule::{CfaRule, Reg, RegRule, UnwindRule};

/// At a function's first instruction `call` has just pushed the return
/// address: CFA = rsp + 8, RA at CFA - 8, rbp untouched.
pub const ENTRY: UnwindRule = UnwindRule {
    cfa: CfaRule::RegOffset(Reg::Sp, 8),
    ra: RegRule::AtCfa(-8),
    fp: RegRule::SameValue,
};

/// `push %rbp; mov %rsp,%rbp` frames: [rbp] = caller's rbp, [rbp+8] = RA.
pub const FRAME_POINTER: UnwindRule = UnwindRule {
    cfa: CfaRule::RegOffset(Reg::Fp, 16),
    ra: RegRule::AtCfa(-8),
    fp: RegRule::AtCfa(-16),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::UnwindRegs;
    use crate::stack::StackSnapshot;
    use crate::x86_64::UnwindRegsX86_64;

    fn words(w: &[u64]) -> Vec<u8> {
        w.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn entry_then_frame_pointers() {
        // sp=0x1000: [0x1000] = RA into f (0x401100); f's frame record at
        // 0x1010: [0x1010] = 0x1030 (main's rbp), [0x1018] = RA into main;
        // main's record at 0x1030: [0x1030] = 0, [0x1038] = RA into _start.
        let stack = words(&[0x401100, 0, 0x1030, 0x401200, 0, 0, 0, 0x401300]);
        let mem = StackSnapshot::new(0x1000, &stack, 8, false, false);
        let regs: UnwindRegs = UnwindRegsX86_64 {
            rip: 0x7f00,
            rsp: 0x1000,
            rbp: 0x1010,
        }
        .into();
        let f = ENTRY.exec(&regs, &mem).unwrap().unwrap();
        assert_eq!((f.pc, f.sp, f.fp), (0x401100, 0x1008, Some(0x1010)));
        let main = FRAME_POINTER.exec(&f, &mem).unwrap().unwrap();
        assert_eq!(
            (main.pc, main.sp, main.fp),
            (0x401200, 0x1020, Some(0x1030))
        );
        let start = FRAME_POINTER.exec(&main, &mem).unwrap().unwrap();
        assert_eq!((start.pc, start.sp, start.fp), (0x401300, 0x1040, Some(0)));
    }
}
