//! mips32, o32 ABI, either byte order.

mod arch;
mod dwarf;
mod prologue;
mod regs;
mod rule;

pub use arch::ArchMips32;
pub use prologue::analyze_prologue;
pub use regs::UnwindRegsMips32;
