//! `analyze_prologue` on the input as MIPS code: the bytes go into the
//! `.text` of a small mips32 ELF executable built here, with or without a
//! function symbol, and the rule is asked for at a pc the input picks.
//!
//! Input: `flags sym pc_lo pc_hi code...`
//! - flags bit 0: big-endian; bit 1: a function symbol; bit 2: the symbol
//!   is MIPS16 (odd address); bit 3: the symbol has a size (to the end).
//! - sym: the symbol's offset in the code, in words.
//! - pc: offset of the pc in the code, in bytes (little-endian u16).

#![no_main]

use libfuzzer_sys::fuzz_target;
use memleak_unwind_arch::{analyze_prologue, ElfFile};

/// Address of the file's first byte (the code is at `BASE + CODE`).
const BASE: u32 = 0x0040_0000;
const CODE: usize = 0x60;

fuzz_target!(|data: &[u8]| {
    let [flags, sym, pc_lo, pc_hi, code @ ..] = data else {
        return;
    };
    let big = flags & 1 != 0;
    let code_len = code.len() as u32;
    let sym_off = (u32::from(*sym) * 4).min(code_len);
    let symbol = (flags & 2 != 0).then(|| {
        let value = BASE + CODE as u32 + sym_off + u32::from(flags & 4 != 0);
        let size = if flags & 8 != 0 {
            code_len - sym_off
        } else {
            0
        };
        (value, size)
    });
    let file = build_elf(big, code, symbol);
    // SAFETY: as in elf_parse.rs: the `ElfFile` is dropped before `file`.
    let bytes: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(&file) };
    let elf = ElfFile::parse("/nonexistent/memleak-fuzz/mips.elf", bytes)
        .expect("the harness's ELF file does not parse");
    let text = u64::from(BASE) + CODE as u64;
    let pc = u64::from(u16::from_le_bytes([*pc_lo, *pc_hi]));
    for at in [pc, u64::from(code_len), u64::from(sym_off) + 2] {
        let _ = analyze_prologue(&elf, text + at);
    }
    drop(elf);
});

/// A mips32 ET_EXEC file: one R+X PT_LOAD mapping the whole file at `BASE`,
/// sections `.text` (`code` at `BASE + CODE`), `.symtab` (with `symbol`:
/// value and size, named `f`), `.strtab` and `.shstrtab`.
fn build_elf(big: bool, code: &[u8], symbol: Option<(u32, u32)>) -> Vec<u8> {
    let mut f = vec![0u8; CODE];
    let u16b = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32b = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let align4 = |f: &mut Vec<u8>| f.resize(f.len().next_multiple_of(4), 0);
    f.extend_from_slice(code);
    let load_end = f.len() as u32;
    align4(&mut f);

    let symtab = f.len() as u32;
    f.extend_from_slice(&[0; 16]);
    if let Some((value, size)) = symbol {
        f.extend_from_slice(&u32b(1)); // st_name "f"
        f.extend_from_slice(&u32b(value));
        f.extend_from_slice(&u32b(size));
        f.push(0x12); // STB_GLOBAL, STT_FUNC
        f.push(0);
        f.extend_from_slice(&u16b(1)); // .text
    }
    let symtab_size = f.len() as u32 - symtab;
    let strtab = f.len() as u32;
    f.extend_from_slice(b"\0f\0");
    let shstrtab = f.len() as u32;
    let names = b"\0.text\0.symtab\0.strtab\0.shstrtab\0";
    f.extend_from_slice(names);
    align4(&mut f);
    let shoff = f.len() as u32;

    // name, type, flags, addr, offset, size, link, info, align, entsize
    let sections: [[u32; 10]; 5] = [
        [0; 10],
        [
            1,
            1,
            6,
            BASE + CODE as u32,
            CODE as u32,
            code.len() as u32,
            0,
            0,
            4,
            0,
        ],
        [7, 2, 0, 0, symtab, symtab_size, 3, 1, 4, 16],
        [15, 3, 0, 0, strtab, 3, 0, 0, 1, 0],
        [23, 3, 0, 0, shstrtab, names.len() as u32, 0, 0, 1, 0],
    ];
    for s in sections {
        for v in s {
            f.extend_from_slice(&u32b(v));
        }
    }

    let mut h = Vec::with_capacity(CODE);
    h.extend_from_slice(&[0x7f, b'E', b'L', b'F', 1, if big { 2 } else { 1 }, 1]);
    h.resize(16, 0);
    h.extend_from_slice(&u16b(2)); // ET_EXEC
    h.extend_from_slice(&u16b(8)); // EM_MIPS
    h.extend_from_slice(&u32b(1)); // EV_CURRENT
    h.extend_from_slice(&u32b(BASE + CODE as u32)); // e_entry
    h.extend_from_slice(&u32b(52)); // e_phoff
    h.extend_from_slice(&u32b(shoff));
    h.extend_from_slice(&u32b(0x5000_1007)); // 32r2, noreorder, pic, cpic
    for v in [52, 32, 1, 40, 5, 4] {
        h.extend_from_slice(&u16b(v)); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    // PT_LOAD: type, offset, vaddr, paddr, filesz, memsz, flags (R+X), align
    for v in [1, 0, BASE, BASE, load_end, load_end, 5, 0x1_0000] {
        h.extend_from_slice(&u32b(v));
    }
    f[..h.len()].copy_from_slice(&h);
    f
}
