//! The registers the shared unwinder tracks, for every architecture.

/// Registers of one frame: enough to find its caller with a CFI row or a
/// fallback rule. `None` marks a value unknown in this frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnwindRegs {
    /// Program counter (for callers: the return address).
    pub pc: u64,
    /// Stack pointer (for callers: the callee's CFA).
    pub sp: u64,
    /// Frame pointer.
    pub fp: Option<u64>,
    /// Return-address register (aarch64 x30, mips $31); `None` on x86_64 and
    /// in callers, where it has been overwritten.
    pub ra: Option<u64>,
}
