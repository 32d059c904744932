//! Prologue analysis for mips32 code without CFI (GCC emits no `.eh_frame`
//! for C at -O2 unless asked, and glibc's FDEs cover a quarter of its text).
//!
//! From the function's start (its symbol, or a backward scan for the
//! `addiu $sp,$sp,-N` that opens the frame) up to the pc, the prologue is
//! read for:
//! - `addiu $sp, $sp, -N` (frame size N; the CFA is $sp + N),
//! - `sw $ra, off($sp)` and `sw $fp, off($sp)` (saved at CFA - N + off),
//! - `move $fp, $sp` (`addu`/`or $30,$29,$0`: later code may move $sp, so
//!   the CFA is taken from $fp),
//! - MIPS16e `save` (frame size and saved $ra in one instruction),
//!
//! stopping at the first branch or jump. A frame whose prologue has not run
//! yet (the pc is before the `addiu`) has CFA = $sp; one that never saves
//! $ra (a leaf) keeps the return address in $ra, which is only known in the
//! first frame.

use crate::elf::ElfFile;
use crate::rule::{CfaRule, Reg, RegRule, UnwindRule};

const SP: u32 = 29;
const FP: u32 = 30;
const RA: u32 = 31;

/// How far back to look for the start of a function without a symbol.
const MAX_BACKWARD_SCAN: u64 = 16 * 1024;
/// How far into a function its prologue may reach.
const MAX_PROLOGUE: u64 = 256;

fn opcode(i: u32) -> u32 {
    i >> 26
}
fn rs(i: u32) -> u32 {
    (i >> 21) & 31
}
fn rt(i: u32) -> u32 {
    (i >> 16) & 31
}
fn rd(i: u32) -> u32 {
    (i >> 11) & 31
}
fn imm(i: u32) -> i64 {
    i64::from(i as u16 as i16)
}

fn is_frame_alloc(i: u32) -> bool {
    // addiu $sp, $sp, -N
    opcode(i) == 0x09 && rs(i) == SP && rt(i) == SP && imm(i) < 0
}

fn is_branch_or_jump(i: u32) -> bool {
    match opcode(i) {
        0x00 => matches!(i & 0x3f, 0x08 | 0x09), // jr, jalr
        0x01..=0x07 | 0x14..=0x17 => true,       // regimm, j, jal, beq, bne, blez, bgtz, beql..
        _ => false,
    }
}

fn read_insn(elf: &ElfFile, svma: u64) -> Option<u32> {
    let b: [u8; 4] = elf.read_at_svma(svma, 4)?.try_into().ok()?;
    Some(match elf.endian() {
        gimli::RunTimeEndian::Big => u32::from_be_bytes(b),
        gimli::RunTimeEndian::Little => u32::from_le_bytes(b),
    })
}

fn function_start(elf: &ElfFile, pc: u64) -> Option<u64> {
    if let Some((_, start)) = elf.find_symbol(pc) {
        return Some(start);
    }
    // No symbol: walk back to the instruction that opens a frame.
    let mut a = pc & !3;
    let stop = pc.saturating_sub(MAX_BACKWARD_SCAN);
    while a >= stop && a >= 4 {
        a -= 4;
        let i = read_insn(elf, a)?;
        if is_frame_alloc(i) {
            return Some(a);
        }
    }
    None
}

/// What a scan of a prologue found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Prologue {
    pub frame_size: Option<i64>,
    pub ra_at: Option<i64>, // offset from $sp after the allocation
    pub fp_at: Option<i64>,
    pub fp_is_frame: bool,
}

/// Scans instructions (as 32-bit words, in address order) that ran before pc.
pub(crate) fn scan(insns: impl IntoIterator<Item = u32>) -> Prologue {
    let mut p = Prologue::default();
    for i in insns {
        if is_branch_or_jump(i) {
            break;
        }
        if is_frame_alloc(i) && p.frame_size.is_none() {
            p.frame_size = Some(-imm(i));
        } else if opcode(i) == 0x2b && rs(i) == SP {
            // sw rt, off($sp)
            match rt(i) {
                RA if p.ra_at.is_none() => p.ra_at = Some(imm(i)),
                FP if p.fp_at.is_none() => p.fp_at = Some(imm(i)),
                _ => {}
            }
        } else if opcode(i) == 0
            && matches!(i & 0x3f, 0x21 | 0x25)
            && rd(i) == FP
            && rs(i) == SP
            && rt(i) == 0
        {
            // move $fp, $sp (addu / or $30, $29, $0)
            p.fp_is_frame = true;
        }
    }
    p
}

/// Decodes a MIPS16e `save` (16-bit: 01100100 ra s0 s1 framesize[3:0]),
/// the frame setup of MIPS16 code: returns (frame size, $ra saved).
pub fn decode_mips16_save(insn: u16) -> Option<(i64, bool)> {
    if insn >> 7 != 0b0_1100_1001 {
        return None;
    }
    let ra = insn & 0x40 != 0;
    let size = i64::from(insn & 0xf);
    Some((if size == 0 { 128 } else { size * 8 }, ra))
}

fn rule_from(p: &Prologue) -> UnwindRule {
    let Some(n) = p.frame_size else {
        // The frame is not set up: everything is still in registers.
        return UnwindRule {
            cfa: CfaRule::RegOffset(Reg::Sp, 0),
            ra: RegRule::InReg(Reg::Ra),
            fp: RegRule::SameValue,
        };
    };
    let cfa = if p.fp_is_frame {
        CfaRule::RegOffset(Reg::Fp, n)
    } else {
        CfaRule::RegOffset(Reg::Sp, n)
    };
    UnwindRule {
        cfa,
        ra: p
            .ra_at
            .map_or(RegRule::InReg(Reg::Ra), |off| RegRule::AtCfa(off - n)),
        fp: p
            .fp_at
            .map_or(RegRule::SameValue, |off| RegRule::AtCfa(off - n)),
    }
}

/// The rule for `svma` in `elf` from its function's prologue, or `None`
/// when the function's start cannot be found or read.
pub fn analyze_prologue(elf: &ElfFile, svma: u64) -> Option<UnwindRule> {
    // MIPS16 code (odd addresses) opens with `save`.
    if let Some((_, start)) = elf.find_symbol(svma).filter(|(_, s)| s & 1 == 1) {
        let b: [u8; 2] = elf.read_at_svma(start & !1, 2)?.try_into().ok()?;
        let insn = match elf.endian() {
            gimli::RunTimeEndian::Big => u16::from_be_bytes(b),
            gimli::RunTimeEndian::Little => u16::from_le_bytes(b),
        };
        let (n, ra) = decode_mips16_save(insn)?;
        let ran = svma > (start & !1);
        let p = Prologue {
            frame_size: ran.then_some(n),
            // `save` stores $ra in the highest slot of the frame.
            ra_at: (ran && ra).then_some(n - 4),
            ..Prologue::default()
        };
        return Some(rule_from(&p));
    }
    let start = function_start(elf, svma)?;
    let end = svma.min(start + MAX_PROLOGUE);
    let mut insns = Vec::new();
    let mut a = start;
    while a < end {
        insns.push(read_insn(elf, a)?);
        a += 4;
    }
    Some(rule_from(&scan(insns)))
}

/// True when the instruction two before `ra_svma` (a call and its delay
/// slot) is `jal`, `jalx`, `jalr` or `bal`/`bgezal`/`bltzal`.
pub fn is_call_site(elf: &ElfFile, ra_svma: u64) -> bool {
    ra_svma % 4 == 0
        && ra_svma
            .checked_sub(8)
            .and_then(|a| read_insn(elf, a))
            .is_some_and(is_call)
}

fn is_call(i: u32) -> bool {
    match opcode(i) {
        0x03 | 0x1d => true,                  // jal, jalx
        0x00 => i & 0x3f == 0x09,             // jalr
        0x01 => matches!(rt(i), 0x10..=0x13), // bltzal, bgezal (bal), bltzall, bgezall
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::UnwindRegs;
    use crate::stack::StackSnapshot;

    const ADDIU_SP_M32: u32 = 0x27bd_ffe0; // addiu sp,sp,-32
    const SW_RA_28: u32 = 0xafbf_001c; // sw ra,28(sp)
    const SW_FP_24: u32 = 0xafbe_0018; // sw s8,24(sp)
    const MOVE_FP_SP: u32 = 0x03a0_f025; // move s8,sp (or)
    const JAL: u32 = 0x0c10_0000; // jal
    const LUI_GP: u32 = 0x3c1c_0002; // lui gp,0x2

    #[test]
    fn full_prologue() {
        let p = scan([
            LUI_GP,
            ADDIU_SP_M32,
            SW_RA_28,
            SW_FP_24,
            MOVE_FP_SP,
            JAL,
            0xafbf_0010,
        ]);
        assert_eq!(
            p,
            Prologue {
                frame_size: Some(32),
                ra_at: Some(28),
                fp_at: Some(24),
                fp_is_frame: true
            }
        );
        let r = rule_from(&p);
        assert_eq!(
            r,
            UnwindRule {
                cfa: CfaRule::RegOffset(Reg::Fp, 32),
                ra: RegRule::AtCfa(-4),
                fp: RegRule::AtCfa(-8)
            }
        );
    }

    #[test]
    fn prologue_not_run_yet_and_leaf() {
        // pc at the function's first instruction: nothing ran.
        let r = rule_from(&scan([]));
        assert_eq!(r.cfa, CfaRule::RegOffset(Reg::Sp, 0));
        assert_eq!(r.ra, RegRule::InReg(Reg::Ra));
        // A leaf with a frame but no saved $ra.
        let r = rule_from(&scan([ADDIU_SP_M32]));
        assert_eq!(
            (r.cfa, r.ra),
            (CfaRule::RegOffset(Reg::Sp, 32), RegRule::InReg(Reg::Ra))
        );
    }

    #[test]
    fn stops_at_first_branch() {
        // sw ra after a branch is not part of the prologue.
        let p = scan([ADDIU_SP_M32, 0x1000_0003 /* b */, SW_RA_28]);
        assert_eq!(p.ra_at, None);
    }

    #[test]
    fn unwinds_a_synthetic_frame() {
        // Frame of 32 bytes at sp=0x7fff0000: $ra saved at sp+28.
        let mut stack = vec![0u8; 32];
        stack[28..32].copy_from_slice(&0x0040_0abcu32.to_be_bytes());
        let mem = StackSnapshot::new(0x7fff_0000, &stack, 4, true, false);
        let rule = rule_from(&scan([ADDIU_SP_M32, SW_RA_28]));
        let regs = UnwindRegs {
            pc: 0x0040_1000,
            sp: 0x7fff_0000,
            fp: Some(0),
            ra: None,
        };
        let next = rule.exec(&regs, &mem).unwrap().unwrap();
        assert_eq!((next.pc, next.sp), (0x0040_0abc, 0x7fff_0020));
    }

    #[test]
    fn calls() {
        assert!(is_call(JAL));
        assert!(is_call(0x0320_f809)); // jalr t9
        assert!(is_call(0x0411_0003)); // bal
        assert!(!is_call(0x1000_0003)); // b
        assert!(!is_call(0x03e0_0008)); // jr ra
    }

    #[test]
    fn mips16e_save() {
        // save 32,ra = 0110 0100 1 1 0 0 0100
        assert_eq!(decode_mips16_save(0b0110_0100_1100_0100), Some((32, true)));
        assert_eq!(
            decode_mips16_save(0b0110_0100_1000_0000),
            Some((128, false))
        );
        assert_eq!(decode_mips16_save(0x6500), None);
    }
}
