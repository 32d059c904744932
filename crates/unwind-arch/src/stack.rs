//! Stack memory as the unwinder sees it: a copy of user memory from sp upwards.

use crate::error::UnwindError;

/// Reads one stack slot (an address-sized word) of the unwound thread.
pub trait StackMemory {
    /// The word at `addr`, or why it cannot be read.
    fn read_word(&self, addr: u64) -> Result<u64, UnwindError>;
}

/// A copy of the stack taken at a probe: `bytes` start at address `base`
/// (the stack pointer then).
#[derive(Debug, Clone, Copy)]
pub struct StackSnapshot<'a> {
    base: u64,
    bytes: &'a [u8],
    word_size: u8,
    big_endian: bool,
    /// The copy stopped at an unreadable page (the stack's end), not at its
    /// size limit: reading past it is a bad address, not a short copy.
    reached_end: bool,
}

impl<'a> StackSnapshot<'a> {
    /// A copy of `bytes` taken from address `base`, with stack slots of
    /// `word_size` bytes (4 or 8) in the given byte order.
    pub fn new(
        base: u64,
        bytes: &'a [u8],
        word_size: u8,
        big_endian: bool,
        reached_end: bool,
    ) -> Self {
        StackSnapshot {
            base,
            bytes,
            word_size,
            big_endian,
            reached_end,
        }
    }

    /// Address of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The copied bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl StackMemory for StackSnapshot<'_> {
    fn read_word(&self, addr: u64) -> Result<u64, UnwindError> {
        let n = self.word_size as usize;
        let Some(off) = addr.checked_sub(self.base) else {
            return Err(UnwindError::BadStackAddress(addr));
        };
        let off = usize::try_from(off).map_err(|_| UnwindError::BadStackAddress(addr))?;
        match self.bytes.get(off..off.saturating_add(n)) {
            Some(b) if b.len() == n => {
                let mut v = [0u8; 8];
                if self.big_endian {
                    v[8 - n..].copy_from_slice(b);
                    Ok(u64::from_be_bytes(v))
                } else {
                    v[..n].copy_from_slice(b);
                    Ok(u64::from_le_bytes(v))
                }
            }
            _ if self.reached_end || off > (1 << 30) => Err(UnwindError::BadStackAddress(addr)),
            _ => Err(UnwindError::StackCopyTooShort(addr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_both_orders_and_sizes() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
        let le8 = StackSnapshot::new(0x100, &bytes, 8, false, false);
        assert_eq!(le8.read_word(0x100), Ok(0x0807060504030201));
        let be4 = StackSnapshot::new(0x100, &bytes, 4, true, false);
        assert_eq!(be4.read_word(0x104), Ok(0x05060708));
        let le4 = StackSnapshot::new(0x100, &bytes, 4, false, false);
        assert_eq!(le4.read_word(0x104), Ok(0x08070605));
        assert_eq!(
            le4.read_word(0x106),
            Err(UnwindError::StackCopyTooShort(0x106))
        );
        assert_eq!(le4.read_word(0xfc), Err(UnwindError::BadStackAddress(0xfc)));
    }
}
