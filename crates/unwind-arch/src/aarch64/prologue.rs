//! Prologue analysis for aarch64 code without CFI (musl's C code).
//!
//! Instructions are 4 bytes, so every one from the function's start to the
//! pc is looked at; only those that move sp or save x29/x30 matter:
//! - `stp`/`ldp`/`str`/`ldr` with pre- or post-indexed writeback on sp (any
//!   register size: `stp d8, d9, [sp, #-N]!` moves sp too),
//! - `stp x29, x30, [sp, #off]`, `str x30, [sp, #off]` (saves),
//! - `sub sp, sp, #N` / `add sp, sp, #N`,
//! - `mov x29, sp` / `add x29, sp, #k` (a frame record: the CFA is then
//!   taken from x29, so `sub sp, sp, xN` after it is fine) and
//!   `mov sp, x29`.
//!
//! A function that never saves x30 (a leaf) keeps its return address in
//! x30. Code after `ret` or an unconditional branch is reached from the
//! body: the state there is the body's at its latest `bl`/`blr`. Any other
//! write to sp stops the analysis: no rule rather than a wrong one.

use crate::code::Starts;
use crate::elf::ElfFile;
use crate::rule::{CfaRule, Reg, RegRule, UnwindRule};
use crate::unwinder::Method;

const SP: u32 = 31;
const FP: u32 = 29;
const LR: u32 = 30;
/// The longest function analysed (bytes from its start to the pc).
const MAX_DISTANCE: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct State {
    /// Bytes below the CFA: CFA = sp + depth.
    depth: i64,
    /// x30 / x29 saved at CFA + offset.
    lr_at: Option<i64>,
    fp_at: Option<i64>,
    /// x29 = CFA - frame.
    frame: Option<i64>,
    /// sp moved by an unknown amount (only x29 gives the CFA).
    sp_lost: bool,
}

fn rt(i: u32) -> u32 {
    i & 31
}
fn rn(i: u32) -> u32 {
    (i >> 5) & 31
}
fn rt2(i: u32) -> u32 {
    (i >> 10) & 31
}
fn sext(v: u32, bits: u32) -> i64 {
    let shift = 64 - bits;
    (i64::from(v) << shift) >> shift
}

fn is_call(i: u32) -> bool {
    i & 0xfc00_0000 == 0x9400_0000 // bl
        || i & 0xffff_fc1f == 0xd63f_0000 // blr
        || i & 0xfeff_f800 == 0xd63f_0800 // blraa, blrab, blraaz, blrabz
}

fn ends_path(i: u32) -> bool {
    i & 0xfc00_0000 == 0x1400_0000 // b
        || i & 0xffff_fc1f == 0xd61f_0000 // br
        || i & 0xffff_fc1f == 0xd65f_0000 // ret
        || i & 0xffff_fbff == 0xd65f_0bff // retaa, retab
        || i & 0xfeff_f800 == 0xd61f_0800 // braa...
        || i & 0xffe0_001f == 0xd420_0000 // brk
}

fn is_branch(i: u32) -> bool {
    ends_path(i)
        || i & 0xff00_0010 == 0x5400_0000 // b.cond
        || i & 0x7e00_0000 == 0x3400_0000 // cbz, cbnz
        || i & 0x7e00_0000 == 0x3600_0000 // tbz, tbnz
}

impl State {
    fn saved(&mut self, reg: u32, at_sp: i64) {
        let at = at_sp - self.depth;
        match reg {
            LR if self.lr_at.is_none() => self.lr_at = Some(at),
            FP if self.fp_at.is_none() => self.fp_at = Some(at),
            _ => {}
        }
    }

    fn restored(&mut self, reg: u32) {
        match reg {
            LR => self.lr_at = None,
            FP => {
                self.fp_at = None;
                self.frame = None;
            }
            _ => {}
        }
    }

    fn step(&mut self, i: u32) -> Result<(), ()> {
        // Load/store pair: opc 101 V 0 idx L imm7 Rt2 Rn Rt.
        if i & 0x3a00_0000 == 0x2800_0000 {
            let opc = i >> 30;
            let v = i & (1 << 26) != 0;
            let idx = (i >> 23) & 3; // 1 post, 2 offset, 3 pre
            let load = i & (1 << 22) != 0;
            let scale = if v { 4 << opc } else { 4 << (opc >> 1) };
            let imm = sext((i >> 15) & 0x7f, 7) * scale;
            let x_regs = !v && opc == 2;
            if rn(i) == SP {
                if self.sp_lost && idx != 2 {
                    return Err(());
                }
                let base = if idx == 3 { imm } else { 0 };
                let off = if idx == 2 { imm } else { base };
                if idx == 3 {
                    self.depth -= imm;
                }
                if x_regs {
                    if load {
                        self.restored(rt(i));
                        self.restored(rt2(i));
                    } else if !self.sp_lost {
                        let at_sp = if idx == 3 { 0 } else { off };
                        self.saved(rt(i), at_sp);
                        self.saved(rt2(i), at_sp + 8);
                    }
                }
                if idx == 1 {
                    self.depth -= imm;
                }
            } else if load && x_regs {
                self.restored(rt(i));
                self.restored(rt2(i));
            }
            return Ok(());
        }
        // Load/store register, immediate pre/post-indexed: size 111 V 00 opc 0 imm9 idx Rn Rt.
        if i & 0x3b20_0000 == 0x3800_0000 && matches!((i >> 10) & 3, 1 | 3) {
            let pre = (i >> 10) & 3 == 3;
            let imm = sext((i >> 12) & 0x1ff, 9);
            let load = (i >> 22) & 3 != 0;
            let x_reg = i >> 30 == 3 && i & (1 << 26) == 0;
            if rn(i) == SP {
                if self.sp_lost {
                    return Err(());
                }
                if pre {
                    self.depth -= imm;
                }
                if x_reg {
                    if load {
                        self.restored(rt(i));
                    } else {
                        self.saved(rt(i), 0);
                    }
                }
                if !pre {
                    self.depth -= imm;
                }
            }
            return Ok(());
        }
        // str/ldr Xt, [sp, #imm12*8] and stur/ldur Xt, [sp, #imm9].
        if i & 0xff80_0000 == 0xf900_0000 || i & 0xffa0_0c00 == 0xf800_0000 {
            let load = i & (1 << 22) != 0;
            let off = if i & 0x0100_0000 != 0 {
                i64::from((i >> 10) & 0xfff) * 8
            } else {
                sext((i >> 12) & 0x1ff, 9)
            };
            if rn(i) == SP && !self.sp_lost {
                if load {
                    self.restored(rt(i));
                } else {
                    self.saved(rt(i), off);
                }
            } else if load {
                self.restored(rt(i));
            }
            return Ok(());
        }
        // add/sub (immediate), 64-bit: sf 0|1 0 100010 sh imm12 Rn Rd.
        if i & 0x9f80_0000 == 0x9100_0000 {
            let sub = i & (1 << 30) != 0;
            let setflags = i & (1 << 29) != 0;
            let mut imm = i64::from((i >> 10) & 0xfff);
            if i & (1 << 22) != 0 {
                imm <<= 12;
            }
            let (rd, rn) = (rt(i), rn(i));
            let delta = if sub { -imm } else { imm };
            if setflags {
                return Ok(()); // adds/subs/cmp cannot write sp
            }
            match (rd, rn) {
                (SP, SP) => {
                    if self.sp_lost {
                        return Err(());
                    }
                    self.depth -= delta;
                }
                (FP, SP) if !self.sp_lost => self.frame = Some(self.depth - delta),
                (SP, FP) => match self.frame {
                    Some(f) => {
                        self.depth = f + delta;
                        self.sp_lost = false;
                    }
                    None => return Err(()),
                },
                (SP, _) => return Err(()),
                (FP, _) => self.frame = None,
                _ => {}
            }
            return Ok(());
        }
        // add/sub (extended register) into sp: alloca.
        if i & 0x1fe0_0000 == 0x0b20_0000 && rt(i) == SP && i & (1 << 29) == 0 {
            if self.frame.is_none() {
                return Err(());
            }
            self.sp_lost = true;
            return Ok(());
        }
        // mov x29, xN (orr x29, xzr, xN) ends a frame record.
        if i & 0xffe0_ffe0 == 0xaa00_03e0 && rt(i) == FP {
            self.frame = None;
        }
        Ok(())
    }

    fn rule(&self) -> Option<(UnwindRule, Method)> {
        let fp = self.fp_at.map_or(RegRule::SameValue, RegRule::AtCfa);
        let ra = self.lr_at.map_or(RegRule::InReg(Reg::Ra), RegRule::AtCfa);
        if let Some(f) = self.frame {
            let rule = UnwindRule {
                cfa: CfaRule::RegOffset(Reg::Fp, f),
                ra,
                fp,
            };
            // x29 points at a frame record {caller's x29, x30}: the
            // frame-pointer chain, with the exact CFA.
            let record = self.fp_at == Some(-f) && self.lr_at == Some(8 - f);
            let m = if record { Method::Fp } else { Method::Prologue };
            return Some((rule, m));
        }
        if self.sp_lost || self.depth < 0 {
            return None;
        }
        Some((
            UnwindRule {
                cfa: CfaRule::RegOffset(Reg::Sp, self.depth),
                ra,
                fp,
            },
            Method::Prologue,
        ))
    }
}

/// Runs the analysis over the instructions before the pc.
pub(crate) fn analyze(insns: impl IntoIterator<Item = u32>) -> Option<State> {
    let mut state = State::default();
    let mut at_call = None;
    let mut first_branch = None;
    for i in insns {
        if is_call(i) {
            at_call = Some(state);
        }
        if is_branch(i) && first_branch.is_none() {
            first_branch = Some(state);
        }
        if ends_path(i) {
            state = at_call.or(first_branch).unwrap_or(state);
        } else {
            state.step(i).ok()?;
        }
    }
    Some(state)
}

fn read_insn(elf: &ElfFile, svma: u64) -> Option<u32> {
    let b: [u8; 4] = elf.read_at_svma(svma, 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Rules for `svma` from its function's instructions (see
/// [`Starts::code_rules`]): likely starts are instructions that open a frame
/// (`stp x29, x30, [sp, #-N]!`, `str x30, [sp, #-N]!`, `sub sp, sp, #N`,
/// `paciasp`, `bti c`) right after one that ends a function (`ret`, `b`,
/// `br`, `brk`, padding).
pub fn code_rules(elf: &ElfFile, svma: u64, out: &mut Vec<(UnwindRule, Method)>) -> bool {
    Starts {
        sweep: sweep_starts,
        step: 4,
        looks_like_start,
        analyze: rule_from_start,
    }
    .code_rules(elf, svma, out)
}

fn looks_like_start(elf: &ElfFile, a: u64) -> bool {
    let (Some(prev), Some(first)) = (read_insn(elf, a - 4), read_insn(elf, a)) else {
        return false;
    };
    let opens = first & 0xffc0_7fff == 0xa980_7bfd // stp x29, x30, [sp, #-N]!
        || first & 0xffe0_0fff == 0xf800_0ffe // str x30, [sp, #-N]!
        || first & 0xff80_03ff == 0xd100_03ff // sub sp, sp, #N
        || first == 0xd503_233f // paciasp
        || first == 0xd503_245f; // bti c
    let closes = ends_path(prev) || prev == 0xd503_201f || prev == 0;
    opens && closes
}

/// Function starts the code names: targets of `bl`, and addresses taken
/// with `adr`, or `adrp` + `add` (static functions of a stripped library are
/// called directly, or passed by address).
fn sweep_starts(elf: &ElfFile) -> Vec<u64> {
    let mut starts = Vec::new();
    for (vaddr, bytes) in elf.code_segments() {
        let mut page = [None::<u64>; 32];
        for (k, c) in bytes.chunks_exact(4).enumerate() {
            let pc = vaddr + 4 * k as u64;
            let i = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let target = if i & 0xfc00_0000 == 0x9400_0000 {
                pc.checked_add_signed(sext(i & 0x03ff_ffff, 26) * 4)
            } else if i & 0x9f00_0000 == 0x1000_0000 {
                // adr
                let imm = sext(((i >> 5) & 0x7_ffff) << 2 | (i >> 29) & 3, 21);
                pc.checked_add_signed(imm)
            } else if i & 0x9f00_0000 == 0x9000_0000 {
                // adrp
                let imm = sext(((i >> 5) & 0x7_ffff) << 2 | (i >> 29) & 3, 21);
                page[rt(i) as usize] = (pc & !0xfff).checked_add_signed(imm << 12);
                None
            } else if i & 0xffc0_0000 == 0x9100_0000 {
                // add xd, xn, #imm after adrp xn
                let base = page[rn(i) as usize].take();
                base.map(|b| b + u64::from((i >> 10) & 0xfff))
            } else {
                None
            };
            if let Some(t) = target.filter(|&t| elf.is_code(t) && t % 4 == 0) {
                starts.push(t);
            }
        }
    }
    starts
}

fn rule_from_start(elf: &ElfFile, start: u64, svma: u64) -> Option<(UnwindRule, Method)> {
    let distance = svma.checked_sub(start).filter(|&d| d <= MAX_DISTANCE)?;
    // A return address minus one lies in the call, whose state is the one
    // after it: look at the instructions before it.
    let end = start + (distance & !3);
    let code = elf.read_at_svma(start, (end - start) as usize)?;
    let insns = code
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    analyze(insns)?.rule()
}

/// True when the instruction before `ra_svma` is `bl` or `blr`.
pub fn is_call_site(elf: &ElfFile, ra_svma: u64) -> bool {
    ra_svma % 4 == 0
        && ra_svma
            .checked_sub(4)
            .and_then(|a| read_insn(elf, a))
            .is_some_and(is_call)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STP_FP_LR_M32: u32 = 0xa9be_7bfd; // stp x29, x30, [sp, #-32]!
    const MOV_FP_SP: u32 = 0x9100_03fd; // mov x29, sp
    const STR_X19_16: u32 = 0xf900_0bf3; // str x19, [sp, #16]
    const BL: u32 = 0x9400_0010;
    const STR_LR_M32: u32 = 0xf81e_0ffe; // str x30, [sp, #-32]!
    const SUB_SP_64: u32 = 0xd101_03ff; // sub sp, sp, #64
    const STP_X19_LR_48: u32 = 0xa903_7bf3; // stp x19, x30, [sp, #48]
    const LDP_FP_LR_32: u32 = 0xa8c2_7bfd; // ldp x29, x30, [sp], #32
    const RET: u32 = 0xd65f_03c0;
    /// The frame record of a 32-byte frame: x29 = CFA - 32, {x29, x30} there.
    const RECORD_32: UnwindRule = UnwindRule {
        cfa: CfaRule::RegOffset(Reg::Fp, 32),
        ra: RegRule::AtCfa(-24),
        fp: RegRule::AtCfa(-32),
    };

    #[test]
    fn frame_record_is_fp() {
        let s = analyze([STP_FP_LR_M32, MOV_FP_SP, STR_X19_16, BL]).unwrap();
        assert_eq!(s.rule(), Some((RECORD_32, Method::Fp)));
    }

    #[test]
    fn without_frame_pointer() {
        // str x30, [sp, #-32]!: CFA = sp + 32, x30 at CFA - 32.
        let (r, m) = analyze([STR_LR_M32, BL]).unwrap().rule().unwrap();
        assert_eq!(m, Method::Prologue);
        assert_eq!(r.cfa, CfaRule::RegOffset(Reg::Sp, 32));
        assert_eq!(r.ra, RegRule::AtCfa(-32));
        // sub sp, sp, #64; stp x19, x30, [sp, #48]: x30 at CFA - 8.
        let (r, _) = analyze([SUB_SP_64, STP_X19_LR_48, BL])
            .unwrap()
            .rule()
            .unwrap();
        assert_eq!(r.cfa, CfaRule::RegOffset(Reg::Sp, 64));
        assert_eq!(r.ra, RegRule::AtCfa(-8));
    }

    #[test]
    fn leaf_keeps_lr_and_epilogue_is_undone() {
        let (r, _) = analyze([0xd100_43ff /* sub sp, sp, #16 */])
            .unwrap()
            .rule()
            .unwrap();
        assert_eq!(r.ra, RegRule::InReg(Reg::Ra));
        let s = analyze([STP_FP_LR_M32, MOV_FP_SP, BL, LDP_FP_LR_32, RET, BL]).unwrap();
        assert_eq!(s.rule(), Some((RECORD_32, Method::Fp)));
    }

    #[test]
    fn untracked_sp_write_stops() {
        // mov sp, x0 (add sp, x0, #0) without a frame record.
        assert_eq!(analyze([0x9100_001f]), None);
    }

    #[test]
    fn random_words_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            let insns: Vec<u32> = (0..32)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u32
                })
                .collect();
            if let Some(s) = analyze(insns) {
                let _ = s.rule();
            }
        }
    }
}
