//! x86_64 (System V psABI).

mod arch;
mod decode;
mod dwarf;
mod prologue;
mod regs;
mod rule;

pub use arch::ArchX86_64;
pub use regs::UnwindRegsX86_64;
