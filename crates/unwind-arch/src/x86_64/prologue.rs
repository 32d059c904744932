//! Prologue analysis for x86_64 code without CFI (musl builds its C code
//! with `-fno-asynchronous-unwind-tables -fomit-frame-pointer`).
//!
//! From the function's start up to the pc, every instruction is decoded
//! (`decode.rs`) and its effect on the stack pointer tracked: `push`/`pop`,
//! `sub`/`add $imm, %rsp`, `lea off(%rsp), %rsp`, `mov %rsp, %rbp` (a
//! frame pointer: the CFA is then taken from %rbp, so `and $-N, %rsp` and
//! `sub %reg, %rsp` after it are fine), `mov %rbp, %rsp`/`leave`, and where
//! %rbp was pushed. Code after a `ret` or an unconditional `jmp` is reached
//! by a branch from the function's body: the state there is the one the
//! body had at its latest `call` (epilogues in the middle of a function are
//! undone that way). An instruction that cannot be decoded, or one that
//! moves %rsp in a way not tracked (without a frame pointer), stops the
//! analysis: no rule rather than a wrong one.

use super::decode::{decode, Insn, Map};
use super::rule::FRAME_POINTER;
use crate::code::Starts;
use crate::elf::ElfFile;
use crate::rule::{CfaRule, Reg, RegRule, UnwindRule};
use crate::unwinder::Method;

const RSP: u8 = 4;
const RBP: u8 = 5;
/// The longest function analysed (bytes from its start to the pc).
const MAX_DISTANCE: u64 = 64 * 1024;

/// What the instructions that ran did to the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct State {
    /// Bytes below the return address: CFA = rsp + depth + 8.
    depth: i64,
    /// %rbp was pushed with this depth after the push: saved at
    /// CFA - 8 - depth.
    rbp_saved: Option<i64>,
    /// `mov %rsp, %rbp` ran at this depth: CFA = rbp + depth + 8.
    frame: Option<i64>,
    /// %rsp moved by an amount not known (alloca, realignment): only the
    /// frame pointer gives the CFA.
    rsp_lost: bool,
}

/// Why the analysis stopped before the pc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// An encoding the decoder does not know (or the bytes ran out).
    Undecodable,
    /// %rsp changed in a way that cannot be followed.
    Untracked,
}

fn is_call(i: &Insn) -> bool {
    i.map == Map::One && (i.op == 0xe8 || (i.op == 0xff && matches!(i.digit(), Some(2 | 3))))
}

fn ends_path(i: &Insn) -> bool {
    i.map == Map::One
        && (matches!(i.op, 0xc3 | 0xc2 | 0xe9 | 0xeb | 0xcc | 0xf4)
            || (i.op == 0xff && matches!(i.digit(), Some(4 | 5))))
        || (i.map == Map::Two && i.op == 0x0b) // ud2
}

fn is_branch(i: &Insn) -> bool {
    ends_path(i)
        || (i.map == Map::One && matches!(i.op, 0x70..=0x7f | 0xe0..=0xe3))
        || (i.map == Map::Two && matches!(i.op, 0x80..=0x8f))
}

/// Does `i` write %rbp as a general register (other than the moves the
/// analysis follows)?
fn writes_rbp(i: &Insn) -> bool {
    if i.vex || i.map != Map::One {
        // movzx/movsx/cmov/imul/setcc into %rbp.
        return !i.vex
            && i.map == Map::Two
            && matches!(i.op, 0x40..=0x4f | 0xaf | 0xb6 | 0xb7 | 0xbe | 0xbf)
            && i.reg() == Some(RBP);
    }
    match i.op {
        // op r/m, r: r/m is the destination.
        0x01 | 0x09 | 0x11 | 0x19 | 0x21 | 0x29 | 0x31 | 0x89 => i.rm_reg() == Some(RBP),
        // op r, r/m and lea/movsxd: reg is the destination.
        0x03 | 0x0b | 0x13 | 0x1b | 0x23 | 0x2b | 0x33 | 0x8b | 0x8d | 0x63 => i.reg() == Some(RBP),
        0x81 | 0x83 | 0xc1 | 0xd1 | 0xd3 | 0xc7 => {
            i.rm_reg() == Some(RBP) && i.digit() != Some(7) // cmp writes nothing
        }
        0xbd => i.rex & 1 == 0,
        _ => false,
    }
}

impl State {
    /// Applies one instruction; `Err` when the analysis must stop.
    fn step(&mut self, i: &Insn) -> Result<(), Stop> {
        let w = i.w();
        let one = i.map == Map::One && !i.vex;
        let rsp_rm = i.rm_reg() == Some(RSP);
        match i.op {
            // push r / pop r
            0x50..=0x57 if one => {
                self.depth += 8;
                if i.op & 7 == RBP && i.rex & 1 == 0 && self.rbp_saved.is_none() {
                    self.rbp_saved = Some(self.depth);
                }
            }
            0x58..=0x5f if one => {
                if i.op & 7 == RBP && i.rex & 1 == 0 && self.rbp_saved == Some(self.depth) {
                    self.rbp_saved = None;
                    self.frame = None;
                }
                self.depth -= 8;
            }
            0x68 | 0x6a | 0x9c if one => self.depth += 8,
            0x9d if one => self.depth -= 8,
            0x8f if one && i.digit() == Some(0) => self.depth -= 8,
            0xff if one && i.digit() == Some(6) => self.depth += 8,
            // sub/add/and $imm, %rsp
            0x81 | 0x83 if one && rsp_rm && w => match i.digit() {
                Some(5) => self.depth += i.imm,
                Some(0) => self.depth -= i.imm,
                Some(4) if self.frame.is_some() => self.rsp_lost = true,
                Some(7) => {} // cmp
                _ => return Err(Stop::Untracked),
            },
            // sub %reg, %rsp (alloca)
            0x29 | 0x01 if one && rsp_rm && w => {
                if self.frame.is_none() {
                    return Err(Stop::Untracked);
                }
                self.rsp_lost = true;
            }
            0x2b | 0x03 if one && i.reg() == Some(RSP) && w => {
                if self.frame.is_none() {
                    return Err(Stop::Untracked);
                }
                self.rsp_lost = true;
            }
            // lea off(%rsp|%rbp), %rsp
            0x8d if one && i.reg() == Some(RSP) => match (i.mem_base(), i.mem_has_index()) {
                (Some(RSP), false) if !self.rsp_lost => self.depth -= i.disp,
                (Some(RBP), false) if self.frame.is_some() => {
                    self.depth = self.frame.unwrap_or(0) - i.disp;
                    self.rsp_lost = false;
                }
                _ => return Err(Stop::Untracked),
            },
            // mov %rsp, %rbp / mov %rbp, %rsp (both encodings)
            0x89 | 0x8b if one && w && i.mode() == Some(3) => {
                let (src, dst) = if i.op == 0x89 {
                    (i.reg(), i.rm_reg())
                } else {
                    (i.rm_reg(), i.reg())
                };
                match (src, dst) {
                    (Some(RSP), Some(RBP)) if !self.rsp_lost => self.frame = Some(self.depth),
                    (Some(RBP), Some(RSP)) => match self.frame {
                        Some(d) => {
                            self.depth = d;
                            self.rsp_lost = false;
                        }
                        None => return Err(Stop::Untracked),
                    },
                    (_, Some(RSP)) => return Err(Stop::Untracked),
                    (_, Some(RBP)) => self.frame = None,
                    _ => {}
                }
            }
            // leave
            0xc9 if one => match self.frame {
                Some(d) => {
                    self.depth = d - 8;
                    self.rsp_lost = false;
                    if self.rbp_saved == Some(d) {
                        self.rbp_saved = None;
                    }
                    self.frame = None;
                }
                None => return Err(Stop::Untracked),
            },
            // enter $n, $0
            0xc8 if one => {
                self.depth += 8;
                self.rbp_saved.get_or_insert(self.depth);
                self.frame = Some(self.depth);
                self.depth += i.imm;
            }
            _ => {
                if writes_rbp(i) {
                    self.frame = None;
                    if self.rsp_lost {
                        return Err(Stop::Untracked);
                    }
                }
            }
        }
        Ok(())
    }

    /// The rule at a pc with this state: the classic frame-pointer frame is
    /// reported as such (method `fp`), any other as prologue analysis.
    fn rule(&self) -> Option<(UnwindRule, Method)> {
        let fp_rule = |d: i64| RegRule::AtCfa(-8 - d);
        if let Some(f) = self.frame {
            let rule = UnwindRule {
                cfa: CfaRule::RegOffset(Reg::Fp, f + 8),
                ra: RegRule::AtCfa(-8),
                fp: self.rbp_saved.map_or(RegRule::SameValue, fp_rule),
            };
            let method = if rule == FRAME_POINTER {
                Method::Fp
            } else {
                Method::Prologue
            };
            return Some((rule, method));
        }
        if self.rsp_lost || self.depth < 0 {
            return None;
        }
        Some((
            UnwindRule {
                cfa: CfaRule::RegOffset(Reg::Sp, self.depth + 8),
                ra: RegRule::AtCfa(-8),
                fp: self.rbp_saved.map_or(RegRule::SameValue, fp_rule),
            },
            Method::Prologue,
        ))
    }
}

/// Runs the analysis over `code` (the function from its start) up to
/// offset `pc_offset`.
pub(crate) fn analyze(code: &[u8], pc_offset: usize) -> Result<State, Stop> {
    let mut state = State::default();
    // The body's state at its latest call, and before any branch (for code
    // reached after an early `ret` of a shrink-wrapped function).
    let mut at_call: Option<State> = None;
    let mut first_branch: Option<State> = None;
    let mut at = 0;
    while at < pc_offset {
        let i = decode(code.get(at..).ok_or(Stop::Undecodable)?).ok_or(Stop::Undecodable)?;
        if is_call(&i) {
            at_call = Some(state);
        }
        if is_branch(&i) && first_branch.is_none() {
            first_branch = Some(state);
        }
        if ends_path(&i) {
            state = at_call.or(first_branch).unwrap_or(state);
        } else {
            state.step(&i)?;
        }
        at += i.len;
    }
    if at != pc_offset {
        // The pc is not on an instruction boundary of this decoding.
        return Err(Stop::Undecodable);
    }
    Ok(state)
}

/// Rules for `svma` from its function's instructions (see
/// [`Starts::code_rules`]): likely starts are 16-byte aligned addresses
/// after padding, `ret`, `int3` or a jump (GCC aligns functions so).
pub fn code_rules(elf: &ElfFile, svma: u64, out: &mut Vec<(UnwindRule, Method)>) -> bool {
    Starts {
        sweep: sweep_starts,
        step: 16,
        looks_like_start,
        analyze: rule_from_start,
    }
    .code_rules(elf, svma, out)
}

/// Function starts the code names: targets of `call rel32` and addresses
/// taken with `lea off(%rip)` that point into code (static functions of a
/// stripped library are called directly, or passed by address).
fn sweep_starts(elf: &ElfFile) -> Vec<u64> {
    let mut starts = Vec::new();
    for (vaddr, bytes) in elf.code_segments() {
        let mut at = 0;
        while at < bytes.len() {
            let Some(i) = decode(&bytes[at..]) else {
                at += 1;
                continue;
            };
            let next = vaddr + (at + i.len) as u64;
            let target = if i.map == Map::One && !i.vex && i.op == 0xe8 {
                next.checked_add_signed(i.imm)
            } else if i.map == Map::One
                && !i.vex
                && i.op == 0x8d
                && i.mode() == Some(0)
                && i.sib.is_none()
                && i.modrm.is_some_and(|m| m & 7 == 5)
            {
                next.checked_add_signed(i.disp)
            } else {
                None
            };
            if let Some(t) = target.filter(|&t| elf.is_code(t)) {
                starts.push(t);
            }
            at += i.len;
        }
    }
    starts
}

fn looks_like_start(elf: &ElfFile, a: u64) -> bool {
    let (Some(prev), Some(first)) = (elf.read_at_svma(a - 1, 1), elf.read_at_svma(a, 3)) else {
        return false;
    };
    let padding_next = matches!(
        first,
        [0x90 | 0xcc, ..] | [0x0f, 0x1f, _] | [0x66, 0x0f | 0x2e | 0x66, _]
    );
    matches!(prev[0], 0xc3 | 0xcc | 0x90 | 0x00) && !padding_next
}

/// The rule for `svma` when its function starts at `start`.
pub(crate) fn rule_from_start(
    elf: &ElfFile,
    start: u64,
    svma: u64,
) -> Option<(UnwindRule, Method)> {
    let distance = svma.checked_sub(start).filter(|&d| d <= MAX_DISTANCE)?;
    // The pc is the call's last byte (a return address minus one) or an
    // instruction's start: decode up to the instruction holding it.
    let code = elf
        .read_at_svma(start, distance as usize + 16)
        .or_else(|| elf.read_at_svma(start, distance as usize + 1))?;
    let state = analyze_to(code, distance as usize)?;
    state.rule()
}

/// The state before the instruction that contains `offset`.
fn analyze_to(code: &[u8], offset: usize) -> Option<State> {
    let mut at = 0;
    let mut boundary = 0;
    while at <= offset {
        boundary = at;
        at += decode(code.get(at..)?)?.len;
    }
    // A return address minus one lies in the call: its state is the state
    // after the call, which equals the state before it.
    analyze(code, boundary).ok()
}

/// True when the instruction ending at `ra_svma` is a call (`call rel32`,
/// `call *r/m`): the address is a return address.
pub fn is_call_site(elf: &ElfFile, ra_svma: u64) -> bool {
    for len in [5usize, 2, 3, 6, 7, 4, 8, 9] {
        let Some(start) = ra_svma.checked_sub(len as u64) else {
            continue;
        };
        let Some(code) = elf.read_at_svma(start, len) else {
            continue;
        };
        if let Some(i) = decode(code) {
            if i.len == len && is_call(&i) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of a function and the offset of the return address after its
    /// first call to malloc, as in musl's strdup:
    /// push %r12; push %rbp; mov %rdi,%rbp; sub $8,%rsp; call strlen;
    /// lea 1(%rax),%r12; mov %r12,%rdi; call malloc; test %rax,%rax
    const STRDUP: &[u8] = &[
        0x41, 0x54, 0x55, 0x48, 0x89, 0xfd, 0x48, 0x83, 0xec, 0x08, 0xe8, 0, 0, 0, 0, 0x4c, 0x8d,
        0x60, 0x01, 0x4c, 0x89, 0xe7, 0xe8, 0, 0, 0, 0, 0x48, 0x85, 0xc0,
    ];

    #[test]
    fn musl_strdup() {
        let s = analyze(STRDUP, 27).unwrap();
        assert_eq!(s.depth, 24);
        assert_eq!(s.rbp_saved, Some(16));
        assert_eq!(s.frame, None);
        let (r, m) = s.rule().unwrap();
        assert_eq!(m, Method::Prologue);
        assert_eq!(r.cfa, CfaRule::RegOffset(Reg::Sp, 32));
        assert_eq!(r.ra, RegRule::AtCfa(-8));
        assert_eq!(r.fp, RegRule::AtCfa(-24));
        // A return address minus one (inside the call) gives the same.
        assert_eq!(analyze_to(STRDUP, 26), Some(s));
    }

    #[test]
    fn frame_pointer_function_is_reported_as_fp() {
        // push %rbp; mov %rsp,%rbp; push %rbx; sub $0x18,%rsp; call x
        let code = [
            0x55, 0x48, 0x89, 0xe5, 0x53, 0x48, 0x83, 0xec, 0x18, 0xe8, 0, 0, 0, 0, 0x90,
        ];
        let (r, m) = analyze(&code, 14).unwrap().rule().unwrap();
        assert_eq!((r, m), (FRAME_POINTER, Method::Fp));
        // The alternative encoding of mov %rsp,%rbp, and realignment after it.
        let code = [
            0x55, 0x48, 0x8b, 0xec, 0x48, 0x83, 0xe4, 0xf0, 0xe8, 0, 0, 0, 0, 0x90,
        ];
        let (r, m) = analyze(&code, 13).unwrap().rule().unwrap();
        assert_eq!((r, m), (FRAME_POINTER, Method::Fp));
    }

    #[test]
    fn early_return_is_undone() {
        // push %rbx; sub $16,%rsp; call x; test; jne L; add $16,%rsp;
        // pop %rbx; ret; L: call y; <pc>
        let code = [
            0x53, 0x48, 0x83, 0xec, 0x10, 0xe8, 0, 0, 0, 0, 0x48, 0x85, 0xc0, 0x75, 0x06, 0x48,
            0x83, 0xc4, 0x10, 0x5b, 0xc3, 0xe8, 0, 0, 0, 0, 0x90,
        ];
        let s = analyze(&code, 26).unwrap();
        assert_eq!(s.depth, 24);
    }

    #[test]
    fn untracked_rsp_stops() {
        // and $-16,%rsp without a frame pointer (as in _start).
        let code = [0x48, 0x83, 0xe4, 0xf0, 0xe8, 0, 0, 0, 0, 0x90];
        assert_eq!(analyze(&code, 9), Err(Stop::Untracked));
        // An undecodable byte.
        assert_eq!(analyze(&[0x06, 0x90], 2), Err(Stop::Undecodable));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut code = vec![0u8; 256];
        for _ in 0..2000 {
            for b in code.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let end = (x % 256) as usize;
            if let Ok(s) = analyze(&code, end) {
                let _ = s.rule();
            }
            let _ = analyze_to(&code, end);
        }
    }
}
