//! A small table-driven x86_64 instruction decoder: lengths, the opcode, the
//! ModRM byte and the immediate — what prologue analysis and call-site
//! checks need, not a disassembler. Covers the legacy, REX, VEX and EVEX
//! encodings of 64-bit mode; an invalid or unknown encoding gives `None`.

/// Opcode map of a decoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Map {
    /// One-byte opcodes.
    One,
    /// `0F xx`.
    Two,
    /// `0F 38 xx`.
    ThreeA,
    /// `0F 3A xx`.
    ThreeB,
}

/// One decoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    /// Length in bytes.
    pub len: usize,
    /// Opcode map.
    pub map: Map,
    /// The opcode byte.
    pub op: u8,
    /// The ModRM byte, if any.
    pub modrm: Option<u8>,
    /// REX prefix bits (W R X B in the low nibble); 0 without REX.
    pub rex: u8,
    /// Operand-size prefix (0x66).
    pub opsize: bool,
    /// The immediate, sign-extended (0 without one).
    pub imm: i64,
    /// The displacement of a memory operand, sign-extended.
    pub disp: i64,
    /// The SIB byte, if any.
    pub sib: Option<u8>,
    /// VEX- or EVEX-encoded.
    pub vex: bool,
}

impl Insn {
    /// REX.W.
    pub fn w(&self) -> bool {
        self.rex & 8 != 0
    }
    /// ModRM.mod.
    pub fn mode(&self) -> Option<u8> {
        self.modrm.map(|m| m >> 6)
    }
    /// ModRM.reg with REX.R (the register operand, or the group's `/digit`
    /// without it: see [`Insn::digit`]).
    pub fn reg(&self) -> Option<u8> {
        self.modrm.map(|m| ((m >> 3) & 7) | ((self.rex & 4) << 1))
    }
    /// ModRM.reg as an opcode extension (`/digit`).
    pub fn digit(&self) -> Option<u8> {
        self.modrm.map(|m| (m >> 3) & 7)
    }
    /// ModRM.rm with REX.B when it names a register (mod = 3).
    pub fn rm_reg(&self) -> Option<u8> {
        let m = self.modrm?;
        (m >> 6 == 3).then_some((m & 7) | ((self.rex & 1) << 3))
    }
    /// The base register of a memory operand (with REX.B), if it has one.
    pub fn mem_base(&self) -> Option<u8> {
        let m = self.modrm?;
        if m >> 6 == 3 {
            return None;
        }
        let base = match self.sib {
            Some(sib) => {
                if sib & 7 == 5 && m >> 6 == 0 {
                    return None; // disp32, no base
                }
                sib & 7
            }
            None if m & 7 == 5 && m >> 6 == 0 => return None, // rip-relative
            None => m & 7,
        };
        Some(base | ((self.rex & 1) << 3))
    }
    /// The memory operand has an index register.
    pub fn mem_has_index(&self) -> bool {
        self.sib
            .is_some_and(|sib| ((sib >> 3) & 7) != 4 || self.rex & 2 != 0)
    }
}

/// Immediate kinds of the one-byte map.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Imm {
    None,
    B,
    /// 16 or 32 bits (operand size), sign-extended to 64 with REX.W.
    Z,
    W,
    /// `enter`: iw + ib.
    Enter,
    /// `mov r, imm`: 8 bytes with REX.W.
    MovZ,
    /// `mov al/eax, moffs`: an address.
    Moffs,
    /// Depends on ModRM.reg (`F6`/`F7` test).
    GroupF6,
    GroupF7,
}

/// (has ModRM, immediate) for the one-byte map; `None`: invalid in 64-bit
/// mode or a prefix (handled before the table).
fn one_byte(op: u8) -> Option<(bool, Imm)> {
    use Imm::*;
    Some(match op {
        0x00..=0x3f => match op & 7 {
            0..=3 => (true, None),
            4 => (false, B),
            5 => (false, Z),
            _ => return Option::None, // push/pop seg, daa..., prefixes
        },
        0x50..=0x5f => (false, None),
        0x63 => (true, None),
        0x68 => (false, Z),
        0x69 => (true, Z),
        0x6a => (false, B),
        0x6b => (true, B),
        0x6c..=0x6f => (false, None),
        0x70..=0x7f => (false, B),
        0x80 | 0x83 => (true, B),
        0x81 => (true, Z),
        0x84..=0x8f => (true, None),
        0x90..=0x99 | 0x9b..=0x9f => (false, None),
        0xa0..=0xa3 => (false, Moffs),
        0xa4..=0xa7 | 0xaa..=0xaf => (false, None),
        0xa8 => (false, B),
        0xa9 => (false, Z),
        0xb0..=0xb7 => (false, B),
        0xb8..=0xbf => (false, MovZ),
        0xc0 | 0xc1 | 0xc6 => (true, B),
        0xc2 | 0xca => (false, W),
        0xc3 | 0xc9 | 0xcb | 0xcc | 0xcf => (false, None),
        0xc7 => (true, Z),
        0xc8 => (false, Enter),
        0xcd => (false, B),
        0xd0..=0xd3 => (true, None),
        0xd7 => (false, None),
        0xd8..=0xdf => (true, None),
        0xe0..=0xe7 => (false, B),
        0xe8 | 0xe9 => (false, Z),
        0xeb => (false, B),
        0xec..=0xef => (false, None),
        0xf1 | 0xf4 | 0xf5 | 0xf8..=0xfd => (false, None),
        0xf6 => (true, GroupF6),
        0xf7 => (true, GroupF7),
        0xfe | 0xff => (true, None),
        _ => return Option::None,
    })
}

/// (has ModRM, immediate bytes) for the `0F` map.
fn two_byte(op: u8) -> Option<(bool, u8)> {
    Some(match op {
        0x00..=0x03 | 0x0d | 0x10..=0x1f | 0x20..=0x23 | 0x28..=0x2f => (true, 0),
        0x05..=0x09 | 0x0b | 0x0e | 0x30..=0x37 | 0x77 | 0xa0..=0xa2 | 0xa8..=0xaa => (false, 0),
        0xc8..=0xcf => (false, 0),
        0x80..=0x8f => (false, 4),
        0x40..=0x6f | 0x74..=0x76 | 0x78..=0x7f | 0x90..=0x9f => (true, 0),
        0x70..=0x73 | 0xa4 | 0xac | 0xba | 0xc2 | 0xc4..=0xc6 => (true, 1),
        0xa3 | 0xa5 | 0xab | 0xad..=0xb9 | 0xbb..=0xc1 | 0xc3 | 0xc7 | 0xd0..=0xff => (true, 0),
        _ => return None,
    })
}

fn read_le(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let s = b.get(at..at.checked_add(n)?)?;
    Some(match n {
        0 => 0,
        1 => i64::from(s[0] as i8),
        2 => i64::from(i16::from_le_bytes([s[0], s[1]])),
        4 => i64::from(i32::from_le_bytes(s.try_into().ok()?)),
        8 => i64::from_le_bytes(s.try_into().ok()?),
        _ => return None,
    })
}

/// Length of a ModRM operand (SIB and displacement) starting at `at`;
/// returns (bytes after ModRM, SIB, displacement).
fn modrm_operand(b: &[u8], at: usize, modrm: u8) -> Option<(usize, Option<u8>, i64)> {
    let mode = modrm >> 6;
    if mode == 3 {
        return Some((0, None, 0));
    }
    let mut n = 0;
    let mut sib = None;
    let mut disp_len = match mode {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if modrm & 7 == 4 {
        let s = *b.get(at)?;
        sib = Some(s);
        n += 1;
        if mode == 0 && s & 7 == 5 {
            disp_len = 4;
        }
    } else if mode == 0 && modrm & 7 == 5 {
        disp_len = 4; // rip-relative
    }
    let disp = read_le(b, at + n, disp_len)?;
    Some((n + disp_len, sib, disp))
}

/// Decodes the instruction at the start of `b`.
pub(crate) fn decode(b: &[u8]) -> Option<Insn> {
    let mut i = 0;
    let mut opsize = false;
    let mut addr32 = false;
    let mut rex = 0u8;
    // Legacy prefixes, then REX.
    loop {
        match *b.get(i)? {
            0x66 => opsize = true,
            0x67 => addr32 = true,
            0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 => {}
            _ => break,
        }
        i += 1;
        if i > 14 {
            return None;
        }
    }
    if let 0x40..=0x4f = b.get(i)? {
        rex = b[i] & 0xf;
        i += 1;
    }
    let first = *b.get(i)?;
    // VEX (C4/C5) and EVEX (62): always so in 64-bit mode.
    if matches!(first, 0xc4 | 0xc5 | 0x62) && rex == 0 {
        let (map_bits, w, prefix_len) = match first {
            0xc5 => (1, false, 2),
            0xc4 => {
                let p1 = *b.get(i + 1)?;
                let p2 = *b.get(i + 2)?;
                (p1 & 0x1f, p2 & 0x80 != 0, 3)
            }
            _ => {
                let p0 = *b.get(i + 1)?;
                let p1 = *b.get(i + 2)?;
                (p0 & 0x7, p1 & 0x80 != 0, 4)
            }
        };
        let map = match map_bits {
            1 => Map::Two,
            2 => Map::ThreeA,
            3 => Map::ThreeB,
            _ => return None,
        };
        let op_at = i + prefix_len;
        let op = *b.get(op_at)?;
        let modrm = *b.get(op_at + 1)?;
        let (n, sib, disp) = modrm_operand(b, op_at + 2, modrm)?;
        let imm_len = match map {
            Map::ThreeB => 1,
            Map::Two => two_byte(op).map_or(0, |(_, imm)| usize::from(imm)),
            _ => 0,
        };
        let at = op_at + 2 + n;
        let imm = read_le(b, at, imm_len)?;
        return Some(Insn {
            len: at + imm_len,
            map,
            op,
            modrm: Some(modrm),
            rex: u8::from(w) << 3,
            opsize,
            imm,
            disp,
            sib,
            vex: true,
        });
    }
    i += 1;
    let (map, op, has_modrm, imm_len_or_kind) = if first == 0x0f {
        let second = *b.get(i)?;
        i += 1;
        match second {
            0x38 => {
                let op = *b.get(i)?;
                i += 1;
                (Map::ThreeA, op, true, Err(0u8))
            }
            0x3a => {
                let op = *b.get(i)?;
                i += 1;
                (Map::ThreeB, op, true, Err(1))
            }
            0x0f => (Map::Two, second, true, Err(1)), // 3DNow!: ModRM + ib
            _ => {
                let (m, imm) = two_byte(second)?;
                (Map::Two, second, m, Err(imm))
            }
        }
    } else {
        let (m, kind) = one_byte(first)?;
        (Map::One, first, m, Ok(kind))
    };
    let mut modrm = None;
    let mut sib = None;
    let mut disp = 0;
    if has_modrm {
        let m = *b.get(i)?;
        i += 1;
        let (n, s, d) = modrm_operand(b, i, m)?;
        i += n;
        modrm = Some(m);
        sib = s;
        disp = d;
    }
    let z = if opsize { 2 } else { 4 };
    let imm_len = match imm_len_or_kind {
        Err(n) => usize::from(n),
        Ok(kind) => match kind {
            Imm::None => 0,
            Imm::B => 1,
            Imm::Z => {
                // Near branches and calls take 32 bits whatever the prefix.
                if matches!(op, 0xe8 | 0xe9) {
                    4
                } else {
                    z
                }
            }
            Imm::W => 2,
            Imm::Enter => 3,
            Imm::MovZ => {
                if rex & 8 != 0 {
                    8
                } else {
                    z
                }
            }
            Imm::Moffs => {
                if addr32 {
                    4
                } else {
                    8
                }
            }
            Imm::GroupF6 => usize::from(modrm.is_some_and(|m| (m >> 3) & 7 < 2)),
            Imm::GroupF7 => {
                if modrm.is_some_and(|m| (m >> 3) & 7 < 2) {
                    z
                } else {
                    0
                }
            }
        },
    };
    let imm = if imm_len == 3 {
        read_le(b, i, 2)? // enter: the frame size
    } else {
        read_le(b, i, imm_len)?
    };
    Some(Insn {
        len: i + imm_len,
        map,
        op,
        modrm,
        rex,
        opsize,
        imm,
        disp,
        sib,
        vex: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(b: &[u8]) -> usize {
        decode(b).unwrap_or_else(|| panic!("{b:02x?}")).len
    }

    #[test]
    fn lengths_of_common_instructions() {
        // (bytes, length) from objdump of musl's and glibc's x86_64 code.
        let cases: &[&[u8]] = &[
            &[0x41, 0x54],                                           // push %r12
            &[0x55],                                                 // push %rbp
            &[0x48, 0x89, 0xfd],                                     // mov %rdi,%rbp
            &[0x48, 0x83, 0xec, 0x08],                               // sub $0x8,%rsp
            &[0xe8, 0x31, 0x02, 0x00, 0x00],                         // call rel32
            &[0x4c, 0x8d, 0x60, 0x01],                               // lea 0x1(%rax),%r12
            &[0x48, 0x85, 0xc0],                                     // test %rax,%rax
            &[0x74, 0x18],                                           // je rel8
            &[0x48, 0x81, 0xec, 0xf8, 0x00, 0x00, 0x00],             // sub $0xf8,%rsp
            &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0],          // mov %fs:0x28,%rax
            &[0x48, 0x89, 0x84, 0x24, 0xe8, 0, 0, 0],                // mov %rax,0xe8(%rsp)
            &[0x48, 0xc7, 0x44, 0x24, 0x10, 0xff, 0xff, 0xff, 0xff], // movq $-1,0x10(%rsp)
            &[0x48, 0x8d, 0x0d, 0xe6, 0xff, 0xff, 0xff],             // lea -0x1a(%rip),%rcx
            &[0xe9, 0x91, 0xfb, 0xff, 0xff],                         // jmp rel32
            &[0x0f, 0x1f, 0x80, 0, 0, 0, 0],                         // nopl 0x0(%rax)
            &[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0],          // nopw %cs:0x0(%rax,%rax,1)
            &[0x0f, 0x84, 0x10, 0, 0, 0],                            // je rel32
            &[0xc5, 0xf9, 0xef, 0xc0],                               // vpxor %xmm0,%xmm0,%xmm0
            &[0xc4, 0xe2, 0x79, 0x18, 0x07],                         // vbroadcastss (%rdi),%xmm0
            &[0x66, 0x0f, 0x70, 0xc0, 0x00],                         // pshufd $0,%xmm0,%xmm0
            &[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8],                   // movabs $imm64,%rax
            &[0xff, 0xd0],                                           // call *%rax
            &[0xff, 0x15, 0, 0, 0, 0],                               // call *0x0(%rip)
            &[0x41, 0xff, 0x54, 0x24, 0x08],                         // call *0x8(%r12)
            &[0xf3, 0xc3],                                           // repz ret
            &[0x66, 0x0f, 0x3a, 0x0f, 0xc1, 0x08],                   // palignr $8,%xmm1,%xmm0
            &[0x62, 0xf1, 0x7d, 0x48, 0x6f, 0x07],                   // vmovdqa32 (%rdi),%zmm0
            &[0xf6, 0x47, 0x01, 0x01],                               // testb $1,0x1(%rdi)
            &[0x66, 0xc7, 0x07, 0x34, 0x12],                         // movw $0x1234,(%rdi)
        ];
        for c in cases {
            assert_eq!(len(c), c.len(), "{c:02x?}");
        }
    }

    #[test]
    fn invalid_and_truncated_give_none() {
        assert_eq!(decode(&[0x06]), None); // push %es: invalid in 64-bit mode
        assert_eq!(decode(&[0xe8, 0x00]), None); // truncated
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x66; 20]), None);
    }

    #[test]
    fn fields() {
        let i = decode(&[0x48, 0x83, 0xec, 0x18]).unwrap();
        assert_eq!(
            (i.op, i.digit(), i.rm_reg(), i.imm, i.w()),
            (0x83, Some(5), Some(4), 0x18, true)
        );
        let i = decode(&[0x48, 0x8d, 0x65, 0xe8]).unwrap(); // lea -0x18(%rbp),%rsp
        assert_eq!((i.reg(), i.mem_base(), i.disp), (Some(4), Some(5), -0x18));
    }
}
