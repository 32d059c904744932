use super::dwarf;
use super::prologue;
use super::rule;
use crate::arch::Arch;
use crate::elf::ElfFile;
use crate::rule::{RegRule, UnwindRule};
use crate::unwinder::Method;

/// Marker type for aarch64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchAarch64;

impl Arch for ArchAarch64 {
    const NAME: &'static str = "aarch64";
    const ADDRESS_SIZE: u8 = 8;
    const ELF_MACHINE: u16 = object::elf::EM_AARCH64.0;
    const SP: gimli::Register = dwarf::SP;
    const FP: gimli::Register = dwarf::FP;
    const RA: gimli::Register = dwarf::RA;

    fn entry_rule() -> UnwindRule {
        rule::ENTRY
    }

    fn frame_pointer_rule() -> Option<UnwindRule> {
        Some(rule::FRAME_POINTER)
    }

    fn default_ra_rule() -> RegRule {
        // x30 is a real register: unless a row says where it was saved, it
        // still holds the return address (leaf functions).
        RegRule::SameValue
    }

    fn code_rules(elf: &ElfFile, svma: u64, out: &mut Vec<(UnwindRule, Method)>) -> bool {
        prologue::code_rules(elf, svma, out)
    }

    fn is_call_site(elf: &ElfFile, ra_svma: u64) -> bool {
        prologue::is_call_site(elf, ra_svma)
    }

    fn strip_return_address(ra: u64) -> u64 {
        rule::strip_pac(ra)
    }

    fn vendor() -> gimli::Vendor {
        // DW_CFA_AARCH64_negate_ra_state (return addresses signed with PAC).
        gimli::Vendor::AArch64
    }
}
