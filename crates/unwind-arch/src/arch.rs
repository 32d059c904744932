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

    /// Rules for a PC without CFI worked out from its function's machine
    /// code, best first (prologue analysis from the function's symbol or,
    /// without one, from the likely starts found by looking backwards).
    /// The method is [`Method::Prologue`], or [`Method::Fp`] for a function
    /// that keeps the frame-pointer chain. The unwinder checks each against
    /// the stack (the return address it gives must follow a call) before it
    /// uses one. `svma` is the address looked up, as stated in `elf`.
    /// Returns true when the first rule comes from the function's known
    /// start (its symbol): only such a rule may end the walk (a return
    /// address of zero), as a guessed start could read any zero word.
    fn code_rules(elf: &ElfFile, svma: u64, out: &mut Vec<(UnwindRule, Method)>) -> bool {
        let _ = (elf, svma, out);
        false
    }

    /// True when the instruction just before `ra_svma` in `elf` is a call:
    /// `ra_svma` may be a return address.
    fn is_call_site(elf: &ElfFile, ra_svma: u64) -> bool {
        let _ = (elf, ra_svma);
        false
    }

    /// For a return address found by scanning the stack at `slot`, the
    /// caller's stack pointer when the ABI fixes it (x86_64: a call pushes
    /// the return address, so it is `slot + 8`); `None` where it must be
    /// found from the caller's own rule.
    fn scanned_caller_sp(slot: u64) -> Option<u64> {
        let _ = slot;
        None
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
