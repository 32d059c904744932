//! The [`Arch`] trait: what the shared unwinder needs to know about an
//! architecture.

use crate::elf::ElfFile;
use crate::rule::{RegRule, UnwindRule};
use crate::unwinder::Method;

/// An architecture the unwinder can walk, on any host.
///
/// Implementations live in one directory per architecture with the same file
/// set (`arch.rs`, `regs.rs`, `rule.rs`, `dwarf.rs`). Nothing here depends on
/// the host's architecture or byte order.
pub trait Arch: Copy + 'static {
    /// Short name: `"x86_64"`, `"aarch64"`, `"mips32"`.
    const NAME: &'static str;
    /// Bytes in an address and a stack slot.
    const ADDRESS_SIZE: u8;
    /// `e_machine` of ELF files for this architecture.
    const ELF_MACHINE: u16;
    /// DWARF number of the stack pointer.
    const SP: gimli::Register;
    /// DWARF number of the frame pointer.
    const FP: gimli::Register;
    /// DWARF number of the return-address column.
    const RA: gimli::Register;

    /// The rule at a function's first instruction, before its prologue: where a
    /// call left the return address. Used for the frame captured at a probe on
    /// a function's entry, so the caller is found even without CFI.
    fn entry_rule() -> UnwindRule;

    /// The frame-pointer rule used where a PC has no CFI, or `None` where the
    /// ABI has no frame-pointer chain.
    fn frame_pointer_rule() -> Option<UnwindRule>;

    /// The rule for the return-address column when a CFI row does not mention
    /// it (the ABI's default: the column keeps its value, or it is saved by
    /// the CIE's initial instructions).
    fn default_ra_rule() -> RegRule;

    /// The rule for a PC that has no CFI: by default the frame-pointer rule;
    /// mips32 analyses the function's prologue instead. `elf` is the file
    /// holding `svma` (the address looked up, as stated in the file), when
    /// it is known.
    fn fallback_rule(elf: Option<&ElfFile>, svma: u64) -> Option<(UnwindRule, Method)> {
        let _ = (elf, svma);
        Self::frame_pointer_rule().map(|r| (r, Method::Fp))
    }

    /// Removes bits that are not part of the address (aarch64 pointer
    /// authentication codes). Identity elsewhere.
    fn strip_return_address(ra: u64) -> u64 {
        ra
    }

    /// gimli vendor extensions to enable for this architecture's CFI.
    fn vendor() -> gimli::Vendor {
        gimli::Vendor::Default
    }
}
