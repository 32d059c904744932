//! The unwinder's rules in the kernel's compact form (`struct unwind_rule`
//! in memleak.h), and back.
//!
//! Every [`UnwindRule`] the user-space unwinder produces (CFI rows, the
//! frame-pointer fallback, mips prologue analysis) is expressible, as long as
//! its offsets fit in 32 bits; a rule that does not is cached as
//! "unexpressible", so the kernel sends a copy instead of guessing.

use memleak_bpf::{abi, RawRule};
use memleak_unwind_arch::{CfaRule, Method, Reg, RegRule, RuleLookup, UnwindRule};

fn reg_code(r: Reg) -> u8 {
    (match r {
        Reg::Sp => abi::UR_SP,
        Reg::Fp => abi::UR_FP,
        Reg::Ra => abi::UR_RA,
    }) as u8
}

fn code_reg(c: u8) -> Option<Reg> {
    match u64::from(c) {
        abi::UR_SP => Some(Reg::Sp),
        abi::UR_FP => Some(Reg::Fp),
        abi::UR_RA => Some(Reg::Ra),
        _ => None,
    }
}

fn method_code(m: Method) -> u8 {
    (match m {
        Method::Regs => abi::M_REGS,
        Method::Entry => abi::M_ENTRY,
        Method::Cfi => abi::M_CFI,
        Method::Fp => abi::M_FP,
        Method::Prologue => abi::M_PROLOGUE,
        Method::Scan => abi::M_SCAN,
    }) as u8
}

/// The method stored in the top byte of a kernel stack word.
pub fn method_of_code(c: u64) -> Option<Method> {
    Some(match c {
        abi::M_REGS => Method::Regs,
        abi::M_ENTRY => Method::Entry,
        abi::M_CFI => Method::Cfi,
        abi::M_FP => Method::Fp,
        abi::M_PROLOGUE => Method::Prologue,
        abi::M_SCAN => Method::Scan,
        _ => return None,
    })
}

/// A stack word as the kernel stores it: the address and how it was found.
pub fn stack_word(address: u64, method: Method) -> u64 {
    (address & memleak_bpf::PC_MASK) | (u64::from(method_code(method)) << abi::METHOD_SHIFT)
}

fn off(v: i64) -> Option<i32> {
    i32::try_from(v).ok()
}

/// `(how, offset)` of a register rule.
fn reg_rule(r: RegRule) -> Option<(u8, i32)> {
    let op = |o: u64| o as u8;
    Some(match r {
        RegRule::Undefined => (op(abi::RR_UNDEFINED), 0),
        RegRule::SameValue => (op(abi::RR_SAME), 0),
        RegRule::AtCfa(o) => (op(abi::RR_AT_CFA), off(o)?),
        RegRule::ValCfa(o) => (op(abi::RR_VAL_CFA), off(o)?),
        RegRule::AtRegOffset(reg, o) => (op(abi::RR_AT_REG) | reg_code(reg) << 4, off(o)?),
        RegRule::InReg(reg) => (op(abi::RR_IN_REG) | reg_code(reg) << 4, 0),
    })
}

fn unreg_rule(how: u8, off: i32) -> Option<RegRule> {
    let reg = || code_reg(how >> 4);
    let o = i64::from(off);
    Some(match u64::from(how & 0xf) {
        abi::RR_UNDEFINED => RegRule::Undefined,
        abi::RR_SAME => RegRule::SameValue,
        abi::RR_AT_CFA => RegRule::AtCfa(o),
        abi::RR_VAL_CFA => RegRule::ValCfa(o),
        abi::RR_AT_REG => RegRule::AtRegOffset(reg()?, o),
        abi::RR_IN_REG => RegRule::InReg(reg()?),
        _ => return None,
    })
}

/// The kernel's form of what the unwinder found at an address: a rule, or
/// `None` (the walk ends there, like the unwinder's `NoUnwindInfo`).
/// A `scanned` address has no rule the kernel could run: it sends a copy
/// of each stack through it (user space scans again).
pub fn encode_lookup(l: &RuleLookup) -> RawRule {
    if l.scanned {
        return RawRule {
            kind: abi::RK_UNEXPRESSIBLE as u8,
            ..RawRule::default()
        };
    }
    encode(l.rule)
}

/// The kernel's form of a rule (`None`: no rule, the walk ends).
pub fn encode(found: Option<(UnwindRule, Method)>) -> RawRule {
    let Some((rule, method)) = found else {
        return RawRule {
            kind: abi::RK_NO_INFO as u8,
            ..RawRule::default()
        };
    };
    let unexpressible = RawRule {
        kind: abi::RK_UNEXPRESSIBLE as u8,
        ..RawRule::default()
    };
    let (cfa, cfa_off) = match rule.cfa {
        CfaRule::RegOffset(r, o) => (reg_code(r), o),
        CfaRule::DerefRegOffset(r, o) => (reg_code(r) | abi::CFA_DEREF as u8, o),
    };
    let (Some(cfa_off), Some((ra, ra_off)), Some((fp, fp_off))) =
        (off(cfa_off), reg_rule(rule.ra), reg_rule(rule.fp))
    else {
        return unexpressible;
    };
    RawRule {
        cfa_off,
        ra_off,
        fp_off,
        cfa,
        ra,
        fp,
        kind: abi::RK_STEP as u8 | method_code(method) << 4,
    }
}

/// What a cached rule says (for tests and `-vv` dumps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Step with this rule.
    Step(UnwindRule, Method),
    /// No rule: the walk ends.
    NoInfo,
    /// The kernel sends a copy.
    Unexpressible,
}

/// Reads a cached rule back; `None` for bytes no encoder writes.
pub fn decode(r: &RawRule) -> Option<Decoded> {
    match u64::from(r.kind & 0xf) {
        abi::RK_NO_INFO => return Some(Decoded::NoInfo),
        abi::RK_UNEXPRESSIBLE => return Some(Decoded::Unexpressible),
        abi::RK_STEP => {}
        _ => return None,
    }
    let base = code_reg(r.cfa & 0xf)?;
    let o = i64::from(r.cfa_off);
    let cfa = if u64::from(r.cfa) & abi::CFA_DEREF != 0 {
        CfaRule::DerefRegOffset(base, o)
    } else {
        CfaRule::RegOffset(base, o)
    };
    Some(Decoded::Step(
        UnwindRule {
            cfa,
            ra: unreg_rule(r.ra, r.ra_off)?,
            fp: unreg_rule(r.fp, r.fp_off)?,
        },
        method_of_code(u64::from(r.kind >> 4))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_reg_rules() -> Vec<RegRule> {
        let mut v = vec![RegRule::Undefined, RegRule::SameValue];
        for o in [-16, 0, 8, 0x7fff_ffff, -0x8000_0000] {
            v.push(RegRule::AtCfa(o));
            v.push(RegRule::ValCfa(o));
            for r in [Reg::Sp, Reg::Fp, Reg::Ra] {
                v.push(RegRule::AtRegOffset(r, o));
            }
        }
        for r in [Reg::Sp, Reg::Fp, Reg::Ra] {
            v.push(RegRule::InReg(r));
        }
        v
    }

    #[test]
    fn every_rule_round_trips() {
        let methods = [Method::Cfi, Method::Fp, Method::Prologue];
        let mut n = 0;
        for cfa in [
            CfaRule::RegOffset(Reg::Sp, 8),
            CfaRule::RegOffset(Reg::Fp, 16),
            CfaRule::RegOffset(Reg::Sp, -4),
            CfaRule::DerefRegOffset(Reg::Fp, -8),
            CfaRule::DerefRegOffset(Reg::Sp, 0x7fff_ffff),
        ] {
            for ra in all_reg_rules() {
                for fp in [RegRule::SameValue, RegRule::AtCfa(-16), RegRule::Undefined] {
                    let m = methods[n % methods.len()];
                    n += 1;
                    let rule = UnwindRule { cfa, ra, fp };
                    let raw = encode(Some((rule, m)));
                    assert_eq!(decode(&raw), Some(Decoded::Step(rule, m)), "{rule:?}");
                }
            }
        }
        assert_eq!(decode(&encode(None)), Some(Decoded::NoInfo));
    }

    #[test]
    fn scanned_lookups_are_never_cached_as_rules() {
        let rule = UnwindRule {
            cfa: CfaRule::RegOffset(Reg::Sp, 16),
            ra: RegRule::AtCfa(-8),
            fp: RegRule::SameValue,
        };
        let scanned = RuleLookup {
            address: 0x1000,
            rule: None,
            scanned: true,
        };
        assert_eq!(
            decode(&encode_lookup(&scanned)),
            Some(Decoded::Unexpressible)
        );
        let found = RuleLookup {
            rule: Some((rule, Method::Prologue)),
            scanned: false,
            ..scanned
        };
        assert_eq!(
            decode(&encode_lookup(&found)),
            Some(Decoded::Step(rule, Method::Prologue))
        );
        assert_eq!(
            method_of_code(u64::from(method_code(Method::Scan))),
            Some(Method::Scan)
        );
    }

    #[test]
    fn offsets_beyond_32_bits_are_unexpressible() {
        let rule = UnwindRule {
            cfa: CfaRule::RegOffset(Reg::Sp, 1 << 40),
            ra: RegRule::AtCfa(-8),
            fp: RegRule::SameValue,
        };
        assert_eq!(
            decode(&encode(Some((rule, Method::Cfi)))),
            Some(Decoded::Unexpressible)
        );
        let rule = UnwindRule {
            cfa: CfaRule::RegOffset(Reg::Sp, 8),
            ra: RegRule::AtCfa(-8),
            fp: RegRule::AtCfa(-(1 << 33)),
        };
        assert_eq!(
            decode(&encode(Some((rule, Method::Cfi)))),
            Some(Decoded::Unexpressible)
        );
    }

    #[test]
    fn garbage_does_not_decode() {
        let bad = RawRule {
            kind: 0x7,
            ..RawRule::default()
        };
        assert_eq!(decode(&bad), None);
        let bad = RawRule {
            kind: abi::RK_STEP as u8,
            cfa: 0x9,
            ..RawRule::default()
        };
        assert_eq!(decode(&bad), None);
    }

    #[test]
    fn stack_words_keep_the_method() {
        let w = stack_word(0x7f00_1234_5678, Method::Prologue);
        assert_eq!(w & memleak_bpf::PC_MASK, 0x7f00_1234_5678);
        assert_eq!(
            method_of_code(w >> abi::METHOD_SHIFT),
            Some(Method::Prologue)
        );
    }
}
