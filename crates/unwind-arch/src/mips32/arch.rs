use super::dwarf;
use super::prologue;
use super::rule;
use crate::arch::Arch;
use crate::elf::ElfFile;
use crate::rule::{RegRule, UnwindRule};
use crate::unwinder::Method;

/// Marker type for mips32 (o32), big- or little-endian: the byte order is
/// taken from the ELF files and the recording at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchMips32;

impl Arch for ArchMips32 {
    const NAME: &'static str = "mips32";
    const ADDRESS_SIZE: u8 = 4;
    const ELF_MACHINE: u16 = object::elf::EM_MIPS.0;
    const SP: gimli::Register = dwarf::SP;
    const FP: gimli::Register = dwarf::FP;
    const RA: gimli::Register = dwarf::RA;

    fn entry_rule() -> UnwindRule {
        rule::ENTRY
    }

    fn frame_pointer_rule() -> Option<UnwindRule> {
        // o32 keeps no frame-pointer chain: $fp, when used, is not linked.
        None
    }

    fn default_ra_rule() -> RegRule {
        RegRule::SameValue
    }

    fn code_rules(elf: &ElfFile, svma: u64, out: &mut Vec<(UnwindRule, Method)>) -> bool {
        out.extend(prologue::analyze_prologue(elf, svma).map(|r| (r, Method::Prologue)));
        elf.find_symbol(svma).is_some()
    }

    fn is_call_site(elf: &ElfFile, ra_svma: u64) -> bool {
        prologue::is_call_site(elf, ra_svma)
    }
}
