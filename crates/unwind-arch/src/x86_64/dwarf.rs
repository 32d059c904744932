//! DWARF register numbers, from "System V Application Binary Interface, AMD64
//! Architecture Processor Supplement", figure 3.36 (DWARF Register Number
//! Mapping): 6 is %rbp, 7 is %rsp, 16 is the return address column.

/// %rsp
pub const SP: gimli::Register = gimli::X86_64::RSP;
/// %rbp
pub const FP: gimli::Register = gimli::X86_64::RBP;
/// Return address (RA), a pseudo-register.
pub const RA: gimli::Register = gimli::X86_64::RA;

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_follow_the_psabi() {
        assert_eq!((super::FP.0, super::SP.0, super::RA.0), (6, 7, 16));
    }
}
