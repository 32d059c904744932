//! `ElfFile::parse` on any bytes, then every query the unwinder and the
//! symbolizer make of a file, at addresses taken from its load segments and
//! from the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use memleak_unwind_arch::{
    analyze_prologue, find_cfi_rule, ArchAarch64, ArchMips32, ArchX86_64, ElfFile, UnwindContext,
};

/// No such directory: a `.gnu_debuglink` looked up next to the file finds
/// nothing.
const PATH: &str = "/nonexistent/memleak-fuzz/input.elf";

fuzz_target!(|data: &[u8]| {
    // SAFETY: `parse` wants bytes that live for the life of the process, as
    // files mapped by `ElfFile::open` do. Leaking a copy of each input would
    // grow without bound, so the lifetime is extended instead: the `ElfFile`
    // and everything borrowed from it (names, code bytes) are dropped before
    // this closure returns, while libFuzzer still holds `data`, and the
    // library keeps nothing borrowed from a file outside its `ElfFile`.
    let data: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(data) };
    if let Ok(elf) = ElfFile::parse(PATH, data) {
        exercise(&elf, data);
    }
});

fn exercise(elf: &ElfFile, data: &[u8]) {
    let _ = (elf.machine(), elf.endian(), elf.address_size(), elf.path());
    let _ = (elf.is_static_executable(), elf.has_symtab(), elf.has_cfi());
    let _ = elf.build_id();
    let _ = elf.needed_libraries();
    let _ = elf.run_paths();
    let _ = elf.interpreter();

    let mut addrs = vec![0, 1, u64::MAX];
    addrs.extend(elf.find_function("malloc"));
    addrs.extend(elf.find_function("main"));
    for (vaddr, offset, filesz) in elf.load_segments().take(8) {
        addrs.extend([
            vaddr,
            vaddr.wrapping_add(filesz / 2) & !3,
            vaddr.wrapping_add(filesz).wrapping_sub(1),
            vaddr.wrapping_add(filesz),
        ]);
        let _ = elf.file_offset_to_svma(offset);
        let _ = elf.file_offset_to_svma(offset.wrapping_add(filesz));
    }
    // An address the input picks: its last 8 bytes.
    if let Some(tail) = data.len().checked_sub(8).and_then(|at| data.get(at..)) {
        addrs.push(u64::from_le_bytes(tail.try_into().expect("8 bytes")));
    }
    for offset in [0, data.len() as u64 / 2, data.len() as u64] {
        let _ = elf.file_offset_to_svma(offset);
    }

    let mut ctx = UnwindContext::new();
    for &a in &addrs {
        let _ = elf.symbolize(a);
        let _ = elf.find_symbol(a);
        let _ = elf.find_sized_symbol(a);
        let _ = elf.svma_to_file_offset(a);
        let _ = elf.read_at_svma(a, 16);
        let _ = elf.is_code(a);
        let _ = match elf.machine() {
            183 => find_cfi_rule::<ArchAarch64>(elf, a, &mut ctx),
            8 => find_cfi_rule::<ArchMips32>(elf, a, &mut ctx),
            _ => find_cfi_rule::<ArchX86_64>(elf, a, &mut ctx),
        };
        let _ = analyze_prologue(elf, a);
    }
}
