//! The shared CFI engine: finds the CFI row for an address in `.eh_frame`
//! (through `.eh_frame_hdr`'s binary-search table when present) or
//! `.debug_frame`, and translates it into an [`UnwindRule`].

use std::cell::OnceCell;

use gimli::{BaseAddresses, CieOrFde, DebugFrame, EhFrame, UnwindSection};
use log::debug;

use crate::arch::Arch;
use crate::elf::{ElfFile, SectionData, Slice};
use crate::rule::{CfaRule, Reg, RegRule, UnwindRule};

/// gimli's per-lookup state, reused across lookups.
pub type UnwindContext = gimli::UnwindContext<usize>;

/// Sorted FDE ranges of a section without a lookup table: (start, end, offset).
#[derive(Default)]
pub(crate) struct FdeIndexes {
    eh_frame: OnceCell<Vec<(u64, u64, usize)>>,
    debug_frame: OnceCell<Vec<(u64, u64, usize)>>,
}

/// Where a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfiSource {
    /// `.eh_frame`
    EhFrame,
    /// `.debug_frame`
    DebugFrame,
}

/// Outcome of a CFI lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfiLookup {
    /// A row covers the address and translates to this rule.
    Rule(UnwindRule, CfiSource),
    /// A row covers the address, but uses registers or expressions the
    /// unwinder does not track.
    Unsupported,
    /// No FDE covers the address.
    NotCovered,
}

fn bases(elf: &ElfFile, section: SectionData) -> BaseAddresses {
    let mut b = BaseAddresses::default()
        .set_text(elf.text_svma)
        .set_got(elf.got_svma);
    if let Some(hdr) = elf.eh_frame_hdr {
        b = b.set_eh_frame_hdr(hdr.svma);
    }
    b.set_eh_frame(section.svma)
}

fn build_index<S: UnwindSection<Slice>>(
    section: &S,
    bases: &BaseAddresses,
) -> Vec<(u64, u64, usize)> {
    let mut out = Vec::new();
    let mut entries = section.entries(bases);
    loop {
        match entries.next() {
            Ok(Some(CieOrFde::Fde(partial))) => {
                if let Ok(fde) = partial.parse(S::cie_from_offset) {
                    out.push((fde.initial_address(), fde.end_address(), fde.offset()));
                }
            }
            Ok(Some(CieOrFde::Cie(_))) => {}
            Ok(None) => break,
            Err(e) => {
                debug!("CFI parse stopped: {e}");
                break;
            }
        }
    }
    out.sort_unstable();
    out
}

fn find_in_index(index: &[(u64, u64, usize)], svma: u64) -> Option<usize> {
    let i = index.partition_point(|e| e.0 <= svma);
    let e = index.get(i.checked_sub(1)?)?;
    (svma < e.1).then_some(e.2)
}

/// Looks up the CFI rule for `svma` (an address as stated in `elf`).
pub fn find_cfi_rule<A: Arch>(elf: &ElfFile, svma: u64, ctx: &mut UnwindContext) -> CfiLookup {
    if let Some(sec) = elf.eh_frame {
        let mut eh = EhFrame::new(sec.data, elf.endian());
        eh.set_address_size(A::ADDRESS_SIZE);
        eh.set_vendor(A::vendor());
        let b = bases(elf, sec);
        // Our own index of the FDEs (built once per file), not
        // .eh_frame_hdr's table: gimli's search of a corrupt table (a
        // huge count) overflows; the index costs one pass over .eh_frame.
        let index = elf.cfi_index.eh_frame.get_or_init(|| build_index(&eh, &b));
        let row = find_in_index(index, svma).and_then(|off| {
            let fde = eh
                .fde_from_offset(&b, gimli::EhFrameOffset(off), EhFrame::cie_from_offset)
                .ok()?;
            let row = fde.unwind_info_for_address(&eh, &b, ctx, svma).ok()?;
            Some(translate::<A, _>(row, &eh))
        });
        match row {
            Some(Some(rule)) => return CfiLookup::Rule(rule, CfiSource::EhFrame),
            Some(None) => return CfiLookup::Unsupported,
            None => {}
        }
    }
    if let Some(sec) = elf.debug_frame {
        let mut df = DebugFrame::new(sec.data, elf.endian());
        df.set_address_size(A::ADDRESS_SIZE);
        df.set_vendor(A::vendor());
        let b = BaseAddresses::default();
        let index = elf
            .cfi_index
            .debug_frame
            .get_or_init(|| build_index(&df, &b));
        let row = find_in_index(index, svma).and_then(|off| {
            let fde = df
                .fde_from_offset(
                    &b,
                    gimli::DebugFrameOffset(off),
                    DebugFrame::cie_from_offset,
                )
                .ok()?;
            let row = fde.unwind_info_for_address(&df, &b, ctx, svma).ok()?;
            Some(translate::<A, _>(row, &df))
        });
        match row {
            Some(Some(rule)) => return CfiLookup::Rule(rule, CfiSource::DebugFrame),
            Some(None) => return CfiLookup::Unsupported,
            None => {}
        }
    }
    CfiLookup::NotCovered
}

fn reg_of<A: Arch>(r: gimli::Register) -> Option<Reg> {
    if r == A::SP {
        Some(Reg::Sp)
    } else if r == A::FP {
        Some(Reg::Fp)
    } else if r == A::RA {
        Some(Reg::Ra)
    } else {
        None
    }
}

/// Parses `DW_OP_bregN off [DW_OP_deref]` (or `DW_OP_bregx`): the only
/// expression forms compilers emit for ordinary frames.
fn breg_expression(mut bytes: &[u8]) -> Option<(gimli::Register, i64, bool)> {
    use gimli::Reader;
    let mut r = gimli::EndianSlice::new(bytes, gimli::LittleEndian);
    let op = r.read_u8().ok()?;
    let reg = match op {
        0x70..=0x8f => gimli::Register(u16::from(op - 0x70)),
        0x92 => gimli::Register(u16::try_from(r.read_uleb128().ok()?).ok()?),
        _ => return None,
    };
    let off = r.read_sleb128().ok()?;
    bytes = r.slice();
    match bytes {
        [] => Some((reg, off, false)),
        [0x06] => Some((reg, off, true)),
        _ => None,
    }
}

fn expression_bytes<S: UnwindSection<Slice>>(
    e: &gimli::UnwindExpression<usize>,
    section: &S,
) -> Option<&'static [u8]> {
    e.get(section).ok().map(|expr| expr.0.slice())
}

fn translate_reg<A: Arch, S: UnwindSection<Slice>>(
    rule: Option<gimli::RegisterRule<usize>>,
    default: RegRule,
    section: &S,
) -> Option<RegRule> {
    use gimli::RegisterRule as G;
    Some(match rule {
        None => default,
        Some(G::Undefined) => RegRule::Undefined,
        Some(G::SameValue) => RegRule::SameValue,
        Some(G::Offset(o)) => RegRule::AtCfa(o),
        Some(G::ValOffset(o)) => RegRule::ValCfa(o),
        Some(G::Register(r)) => RegRule::InReg(reg_of::<A>(r)?),
        Some(G::Expression(e)) => match breg_expression(expression_bytes(&e, section)?)? {
            (r, off, false) => RegRule::AtRegOffset(reg_of::<A>(r)?, off),
            _ => return None,
        },
        Some(_) => return None,
    })
}

fn translate<A: Arch, S: UnwindSection<Slice>>(
    row: &gimli::UnwindTableRow<usize>,
    section: &S,
) -> Option<UnwindRule> {
    let cfa = match row.cfa() {
        gimli::CfaRule::RegisterAndOffset { register, offset } => {
            CfaRule::RegOffset(reg_of::<A>(*register)?, *offset)
        }
        gimli::CfaRule::Expression(e) => match breg_expression(expression_bytes(e, section)?)? {
            (r, off, true) => CfaRule::DerefRegOffset(reg_of::<A>(r)?, off),
            (r, off, false) => CfaRule::RegOffset(reg_of::<A>(r)?, off),
        },
    };
    let ra = translate_reg::<A, S>(row.register(A::RA), A::default_ra_rule(), section)?;
    let fp = translate_reg::<A, S>(row.register(A::FP), RegRule::SameValue, section)?;
    Some(UnwindRule { cfa, ra, fp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86_64::ArchX86_64;
    use gimli::write::{
        CallFrameInstruction as I, CommonInformationEntry, EhFrame as WEhFrame, EndianVec,
        Expression, FrameDescriptionEntry, FrameTable,
    };
    use gimli::{Encoding, Format, LittleEndian, Register, X86_64};

    /// Writes one x86_64 CIE/FDE pair covering 0x1000..0x1100 with the given
    /// instructions at the given offsets, and returns the rule at `probe`.
    fn rule_at(instructions: Vec<(u32, I)>, probe: u64) -> Option<UnwindRule> {
        let encoding = Encoding {
            format: Format::Dwarf32,
            version: 1,
            address_size: 8,
        };
        let mut cie = CommonInformationEntry::new(encoding, 1, -8, X86_64::RA);
        cie.add_instruction(I::Cfa(X86_64::RSP, 8));
        cie.add_instruction(I::Offset(X86_64::RA, -8));
        let mut table = FrameTable::default();
        let cie_id = table.add_cie(cie);
        let mut fde = FrameDescriptionEntry::new(gimli::write::Address::Constant(0x1000), 0x100);
        for (off, i) in instructions {
            fde.add_instruction(off, i);
        }
        table.add_fde(cie_id, fde);
        let mut out = WEhFrame(EndianVec::new(LittleEndian));
        table.write_eh_frame(&mut out).unwrap();
        let bytes: &'static [u8] = Box::leak(out.0.into_vec().into_boxed_slice());
        let mut eh = EhFrame::new(bytes, gimli::RunTimeEndian::Little);
        eh.set_address_size(8);
        let bases = BaseAddresses::default().set_eh_frame(0);
        let index = build_index(&eh, &bases);
        let off = find_in_index(&index, probe)?;
        let fde = eh
            .fde_from_offset(&bases, gimli::EhFrameOffset(off), EhFrame::cie_from_offset)
            .unwrap();
        let mut ctx = UnwindContext::new();
        let row = fde
            .unwind_info_for_address(&eh, &bases, &mut ctx, probe)
            .unwrap();
        translate::<ArchX86_64, _>(row, &eh)
    }

    #[test]
    fn translates_cie_and_fde_rows() {
        let prologue = vec![
            (1, I::CfaOffset(16)),
            (1, I::Offset(X86_64::RBP, -16)),
            (4, I::CfaRegister(X86_64::RBP)),
        ];
        // At entry: the CIE's rule.
        assert_eq!(
            rule_at(prologue.clone(), 0x1000),
            Some(UnwindRule {
                cfa: CfaRule::RegOffset(Reg::Sp, 8),
                ra: RegRule::AtCfa(-8),
                fp: RegRule::SameValue
            })
        );
        // After push %rbp.
        assert_eq!(
            rule_at(prologue.clone(), 0x1002),
            Some(UnwindRule {
                cfa: CfaRule::RegOffset(Reg::Sp, 16),
                ra: RegRule::AtCfa(-8),
                fp: RegRule::AtCfa(-16)
            })
        );
        // After mov %rsp,%rbp.
        assert_eq!(
            rule_at(prologue, 0x1010),
            Some(UnwindRule {
                cfa: CfaRule::RegOffset(Reg::Fp, 16),
                ra: RegRule::AtCfa(-8),
                fp: RegRule::AtCfa(-16)
            })
        );
        // Outside the FDE.
        assert_eq!(rule_at(vec![], 0x1100), None);
    }

    #[test]
    fn translates_expressions_and_undefined() {
        // GCC's realigned main: CFA = *(rbp - 8); rbp saved at [rbp].
        let mut cfa = Expression::new();
        cfa.op_breg(X86_64::RBP, -8);
        cfa.op_deref();
        let mut fp = Expression::new();
        fp.op_breg(X86_64::RBP, 0);
        let r = rule_at(
            vec![
                (4, I::CfaExpression(cfa)),
                (4, I::Expression(X86_64::RBP, fp)),
            ],
            0x1010,
        );
        assert_eq!(
            r,
            Some(UnwindRule {
                cfa: CfaRule::DerefRegOffset(Reg::Fp, -8),
                ra: RegRule::AtCfa(-8),
                fp: RegRule::AtRegOffset(Reg::Fp, 0)
            })
        );
        // _start: the return address is undefined (outermost frame).
        let r = rule_at(vec![(0, I::Undefined(X86_64::RA))], 0x1000).unwrap();
        assert_eq!(r.ra, RegRule::Undefined);
        // A CFA based on a register the unwinder does not track (r10).
        assert_eq!(
            rule_at(vec![(2, I::CfaRegister(Register(10)))], 0x1010),
            None
        );
    }

    #[test]
    fn breg_forms() {
        // DW_OP_breg6 -8; DW_OP_deref
        assert_eq!(
            breg_expression(&[0x76, 0x78, 0x06]),
            Some((gimli::Register(6), -8, true))
        );
        // DW_OP_breg6 0
        assert_eq!(
            breg_expression(&[0x76, 0x00]),
            Some((gimli::Register(6), 0, false))
        );
        // DW_OP_bregx 30 16
        assert_eq!(
            breg_expression(&[0x92, 30, 16]),
            Some((gimli::Register(30), 16, false))
        );
        // DW_OP_lit0: not a register form
        assert_eq!(breg_expression(&[0x30]), None);
        assert_eq!(breg_expression(&[0x76, 0x00, 0x06, 0x06]), None);
    }
}
