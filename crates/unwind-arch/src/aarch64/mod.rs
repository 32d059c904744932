//! aarch64 (AAPCS64).

mod arch;
mod dwarf;
mod prologue;
mod regs;
mod rule;

pub use arch::ArchAarch64;
pub use regs::UnwindRegsAarch64;
