//! Error types: one per layer, cheap to copy, never allocated on the unwinding path.

use thiserror::Error;

/// Why one unwinding step could not produce the caller's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UnwindError {
    /// A read outside the stack copy, below sp or past the stack's end.
    #[error("could not read stack memory at 0x{0:x}")]
    BadStackAddress(u64),
    /// A read past the end of a stack copy that stopped before the stack's end.
    #[error("stack copy too short: needed 0x{0:x}")]
    StackCopyTooShort(u64),
    /// The rule needs a register whose value is not known in this frame.
    #[error("register {0} is not known in this frame")]
    UnknownRegister(&'static str),
    /// The caller's stack pointer is below the callee's.
    #[error("stack pointer moved backwards")]
    StackPointerMovedBackwards,
    /// The caller's registers equal the callee's: it would loop.
    #[error("unwinding did not advance")]
    DidNotAdvance,
    /// Arithmetic on an address overflowed.
    #[error("address arithmetic overflowed")]
    IntegerOverflow,
}

/// Why an ELF file could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ElfError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid ELF file.
    #[error("{path} is not a valid ELF file: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Crate result type for ELF loading.
pub type Result<T> = std::result::Result<T, ElfError>;
