//! DWARF register numbers, from "DWARF for the Arm 64-bit Architecture
//! (AArch64)", section 4.1 (DWARF register names): x29 (FP) is 29, x30 (LR)
//! is 30, SP is 31. The return-address column is x30.

/// SP
pub const SP: gimli::Register = gimli::AArch64::SP;
/// x29, the frame pointer
pub const FP: gimli::Register = gimli::AArch64::X29;
/// x30, the link register
pub const RA: gimli::Register = gimli::AArch64::X30;

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_follow_the_abi() {
        assert_eq!((super::FP.0, super::RA.0, super::SP.0), (29, 30, 31));
    }
}
