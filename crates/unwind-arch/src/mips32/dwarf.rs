//! DWARF register numbers for MIPS are the general-purpose register numbers
//! ("MIPS ELF ABI supplement", and GCC's DWARF_FRAME_RETURN_COLUMN = 31):
//! $sp is 29, $fp ($s8) is 30, $ra is 31.

/// $sp
pub const SP: gimli::Register = gimli::MIPS::SP;
/// $fp / $s8
pub const FP: gimli::Register = gimli::MIPS::FP;
/// $ra
pub const RA: gimli::Register = gimli::MIPS::RA;

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_follow_the_abi() {
        assert_eq!((super::SP.0, super::FP.0, super::RA.0), (29, 30, 31));
    }
}
