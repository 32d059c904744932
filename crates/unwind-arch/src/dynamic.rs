//! What the dynamic loader reads, found through the program headers alone.
//! OpenWrt's `sstrip` removes the section header table: `.dynsym`,
//! `.dynstr`, the dynamic section and the notes are still in the file (the
//! loader maps them), but only PT_DYNAMIC and PT_NOTE lead to them. From
//! there: `DT_NEEDED`, `DT_RUNPATH`/`DT_RPATH` (strings in `DT_STRTAB`), the
//! dynamic symbols (`DT_SYMTAB`, counted with `DT_GNU_HASH` or `DT_HASH`)
//! and the GNU build ID.

use object::elf;
use object::read::elf::{Dyn, ElfFile, FileHeader, GnuHashTable, HashTable, ProgramHeader, Sym};

/// The dynamic section's contents that memleak uses.
#[derive(Debug, Default)]
pub(crate) struct DynamicInfo {
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` then `DT_RPATH` (colon-separated lists).
    pub run_paths: Vec<String>,
    /// Defined functions of the dynamic symbol table: (name, address, size).
    pub functions: Vec<(&'static str, u64, u64)>,
}

/// The bytes at address `vaddr` in the file, up to the end of the PT_LOAD
/// segment holding it.
fn at_vaddr<Elf: FileHeader<Endian = object::Endianness>>(
    f: &ElfFile<'static, Elf>,
    vaddr: u64,
) -> Option<&'static [u8]> {
    let e = f.endian();
    for ph in f.elf_program_headers() {
        if ph.p_type(e) != elf::PT_LOAD {
            continue;
        }
        let (start, size, offset) = (
            ph.p_vaddr(e).into(),
            ph.p_filesz(e).into(),
            ph.p_offset(e).into(),
        );
        if vaddr >= start && vaddr - start < size {
            let from = offset.checked_add(vaddr - start)? as usize;
            let to = offset.checked_add(size)? as usize;
            return f.data().get(from..to);
        }
    }
    None
}

/// The NUL-terminated string at `offset` in `strtab`.
fn string(strtab: &'static [u8], offset: u64) -> Option<&'static str> {
    let s = strtab.get(usize::try_from(offset).ok()?..)?;
    let end = s.iter().position(|&c| c == 0)?;
    std::str::from_utf8(&s[..end]).ok()
}

/// Reads the dynamic section through PT_DYNAMIC; `None` without one.
pub(crate) fn read<Elf: FileHeader<Endian = object::Endianness>>(
    f: &ElfFile<'static, Elf>,
) -> Option<DynamicInfo> {
    let e = f.endian();
    let table = f
        .elf_program_headers()
        .iter()
        .find_map(|ph| ph.dynamic(e, f.data()).ok().flatten())?;
    let tag = |t: elf::DynamicTag| table.iter().find(|d| d.tag(e) == t).map(|d| d.val(e));
    let strtab = at_vaddr(f, tag(elf::DT_STRTAB)?)?;
    let strtab = match tag(elf::DT_STRSZ) {
        Some(n) => strtab.get(..usize::try_from(n).ok()?)?,
        None => strtab,
    };
    let mut info = DynamicInfo::default();
    for t in [elf::DT_NEEDED, elf::DT_RUNPATH, elf::DT_RPATH] {
        for d in table.iter().filter(|d| d.tag(e) == t) {
            if let Some(s) = string(strtab, d.val(e)) {
                match t {
                    elf::DT_NEEDED => info.needed.push(s.to_string()),
                    _ => info.run_paths.push(s.to_string()),
                }
            }
        }
    }
    // The symbol table has no size of its own: the hash tables count it.
    let count = tag(elf::DT_GNU_HASH)
        .and_then(|a| at_vaddr(f, a))
        .and_then(|d| GnuHashTable::<Elf>::parse(e, d).ok())
        .and_then(|h| h.symbol_table_length(e))
        .or_else(|| {
            tag(elf::DT_HASH)
                .and_then(|a| at_vaddr(f, a))
                .and_then(|d| HashTable::<Elf>::parse(e, d).ok())
                .map(|h| h.symbol_table_length())
        });
    if let (Some(count), Some(symtab)) = (count, tag(elf::DT_SYMTAB).and_then(|a| at_vaddr(f, a))) {
        let size = std::mem::size_of::<Elf::Sym>();
        let n = (count as usize).min(symtab.len() / size);
        if let Ok((syms, _)) = object::slice_from_bytes::<Elf::Sym>(symtab, n) {
            for s in syms {
                let ty = s.st_type();
                if (ty != elf::STT_FUNC && ty != elf::STT_GNU_IFUNC)
                    || s.st_shndx(e) == elf::SHN_UNDEF
                {
                    continue;
                }
                let value: u64 = s.st_value(e).into();
                if value == 0 {
                    continue;
                }
                if let Some(name) = string(strtab, s.st_name(e).into()).filter(|n| !n.is_empty()) {
                    info.functions.push((name, value, s.st_size(e).into()));
                }
            }
        }
    }
    Some(info)
}

/// The GNU build ID from the PT_NOTE segments.
pub(crate) fn build_id<Elf: FileHeader<Endian = object::Endianness>>(
    f: &ElfFile<'static, Elf>,
) -> Option<Vec<u8>> {
    let e = f.endian();
    for ph in f.elf_program_headers() {
        let Ok(Some(mut notes)) = ph.notes(e, f.data()) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == elf::ELF_NOTE_GNU && note.n_type(e) == elf::NT_GNU_BUILD_ID {
                return Some(note.desc().to_vec());
            }
        }
    }
    None
}
