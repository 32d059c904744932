use super::dwarf;
use super::prologue;
use super::rule;
use crate::arch::Arch;
use crate::elf::ElfFile;
use crate::rule::{RegRule, UnwindRule};
use crate::unwinder::Method;

/// Marker type for x86_64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchX86_64;

impl Arch for ArchX86_64 {
    const NAME: &'static str = "x86_64";
    const ADDRESS_SIZE: u8 = 8;
    const ELF_MACHINE: u16 = object::elf::EM_X86_64.0;
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
        // Every CIE says where the return address is (offset -8); if a row
        // does not, it is not recoverable.
        RegRule::Undefined
    }

    fn code_rules(elf: &ElfFile, svma: u64, out: &mut Vec<(UnwindRule, Method)>) -> bool {
        prologue::code_rules(elf, svma, out)
    }

    fn is_call_site(elf: &ElfFile, ra_svma: u64) -> bool {
        prologue::is_call_site(elf, ra_svma)
    }

    fn scanned_caller_sp(slot: u64) -> Option<u64> {
        slot.checked_add(8)
    }
}
