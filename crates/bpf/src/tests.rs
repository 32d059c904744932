//! Build tests of the embedded object: byte order, no CO-RE, every program present.

use super::*;
use object::{Object, ObjectSection, ObjectSymbol};

fn elf() -> object::File<'static> {
    object::File::parse(OBJECT).expect("the embedded BPF object parses as ELF")
}

#[test]
fn object_byte_order_matches_target() {
    let file = elf();
    assert_eq!(file.architecture(), object::Architecture::Bpf);
    let little = file.is_little_endian();
    assert_eq!(
        little,
        cfg!(target_endian = "little"),
        "object is {BPF_TARGET}"
    );
    assert_eq!(BPF_TARGET, if little { "bpfel" } else { "bpfeb" });
}

#[test]
fn object_has_no_core_relocations() {
    let file = elf();
    // CO-RE relocations live in .BTF.ext's core_relo subsection
    // (struct btf_ext_header: magic u16, version u8, flags u8, hdr_len u32,
    // func_info_off/len, line_info_off/len, then core_relo_off/len).
    let Some(ext) = file.section_by_name(".BTF.ext") else {
        return;
    };
    let data = ext.data().expect(".BTF.ext data");
    let rd = |off: usize| {
        let b: [u8; 4] = data[off..off + 4].try_into().unwrap();
        if file.is_little_endian() {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let hdr_len = rd(4);
    if hdr_len >= 32 {
        assert_eq!(rd(28), 0, "the BPF object carries CO-RE relocations");
    }
    // No reference to kernel types either: nothing named like vmlinux's BTF.
    assert!(
        file.section_by_name(".BTF").is_some(),
        "map definitions need the object's BTF"
    );
}

#[test]
fn object_has_every_program() {
    let file = elf();
    let names: Vec<String> = file
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text)
        .filter_map(|s| s.name().ok().map(str::to_owned))
        .collect();
    for p in [
        prog::MALLOC,
        prog::CALLOC,
        prog::REALLOC,
        prog::REALLOCARRAY,
        prog::POSIX_MEMALIGN,
        prog::ALIGNED_ALLOC,
        prog::MEMALIGN,
        prog::VALLOC,
        prog::PVALLOC,
        prog::MMAP,
        prog::ALLOC_RETURN,
        prog::FREE,
        prog::MUNMAP,
    ] {
        assert!(
            names.iter().any(|n| n == p),
            "program `{p}` missing from {names:?}"
        );
    }
}

#[test]
fn config_layout() {
    let c = Config {
        min_size: 1,
        max_size: 2,
        stack_bytes: 3,
        sample_rate: 4,
        wakeup_bytes: 5,
    };
    let b = c.to_bytes();
    assert_eq!(u64::from_ne_bytes(b[8..16].try_into().unwrap()), 2);
    assert_eq!(u32::from_ne_bytes(b[20..24].try_into().unwrap()), 4);
    assert_eq!(u64::from_ne_bytes(b[24..32].try_into().unwrap()), 5);
}

#[test]
fn parse_records() {
    let mut rec = vec![0u8; ENTRY_FIXED + 16];
    rec[0..4].copy_from_slice(&1u32.to_ne_bytes());
    rec[4..8].copy_from_slice(&77u32.to_ne_bytes());
    rec[16..20].copy_from_slice(&1u32.to_ne_bytes()); // calloc
    rec[20..24].copy_from_slice(&2u32.to_ne_bytes()); // stack fault
    rec[24..32].copy_from_slice(&48u64.to_ne_bytes());
    rec[40..48].copy_from_slice(&0x1000u64.to_ne_bytes());
    rec[72..76].copy_from_slice(&16u32.to_ne_bytes());
    let Event::Entry(e) = Event::parse(&rec).unwrap() else {
        panic!("not an entry")
    };
    assert_eq!(
        (e.tid, e.kind, e.size, e.regs[0]),
        (77, Kind::Calloc, 48, 0x1000)
    );
    assert!(e.reached_stack_end && !e.untracked);
    assert_eq!(e.stack.len(), 16);
    rec[72..76].copy_from_slice(&17u32.to_ne_bytes());
    assert!(
        Event::parse(&rec).is_err(),
        "stack_len beyond the record must be rejected"
    );
    assert!(Event::parse(&rec[..10]).is_err());
}
