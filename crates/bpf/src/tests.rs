//! Build tests of the embedded object: byte order, no CO-RE, every program present.

use super::*;
use object::{Object, ObjectSection, ObjectSymbol};

fn elves() -> Vec<(Variant, object::File<'static>)> {
    Variant::ALL
        .iter()
        .map(|v| {
            let f = object::File::parse(v.object())
                .unwrap_or_else(|e| panic!("the {v} object does not parse: {e}"));
            (*v, f)
        })
        .collect()
}

#[test]
fn object_byte_order_matches_target() {
    for (_, file) in elves() {
        byte_order_matches_target(file);
    }
}

fn byte_order_matches_target(file: object::File<'static>) {
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
    for (_, file) in elves() {
        no_core_relocations(file);
    }
}

fn no_core_relocations(file: object::File<'static>) {
    // CO-RE relocations live in .BTF.ext's core_relo subsection
    // (struct btf_ext_header: magic u16, version u8, flags u8, hdr_len u32,
    // func_info_off/len, line_info_off/len, then core_relo_off/len).
    let ext = file
        .section_by_name(".BTF.ext")
        .expect("clang -g always emits .BTF.ext for BPF programs");
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
    for (v, file) in elves() {
        every_program(v, file);
    }
}

fn every_program(v: Variant, file: object::File<'static>) {
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
        prog::WALK_STACK,
    ] {
        assert!(
            names.iter().any(|n| n == p),
            "{v}: program `{p}` missing from {names:?}"
        );
    }
}

#[test]
fn config_bytes_follow_the_struct() {
    let c = Config {
        min_size: 1,
        max_size: 2,
        wakeup_bytes: 3,
        pc_mask: 4,
        stack_bytes: 5,
        sample_rate: 6,
        max_frames: 7,
        verify: 8,
        trace: 9,
        sample_bytes: 10,
    };
    let b = c.as_bytes();
    assert_eq!(b.len(), 56);
    assert_eq!(u64::from_ne_bytes(b[8..16].try_into().unwrap()), 2);
    assert_eq!(u64::from_ne_bytes(b[24..32].try_into().unwrap()), 4);
    assert_eq!(u32::from_ne_bytes(b[36..40].try_into().unwrap()), 6);
    assert_eq!(u32::from_ne_bytes(b[52..56].try_into().unwrap()), 10);
    assert_eq!(Config::from_bytes(b), Some(c));
}

fn stack_record(ty: u64, stack_len: u32, room: usize) -> Vec<u8> {
    let mut f = StackEventFixed {
        ty: ty as u32,
        tid: 77,
        tgid: 70,
        stack_id: MISS_ID_BIT | 5,
        regs: [0x1000, 0x7ff0, 0, 0],
        stack_len,
        ..Default::default()
    };
    f.kstack.nr = 2;
    f.kstack.end = abi::END_MISS as u32;
    f.kstack.pcs[0] = 0x1000;
    f.kstack.pcs[1] = 0x2000 | (abi::M_ENTRY << abi::METHOD_SHIFT);
    let mut rec = f.as_bytes().to_vec();
    rec.resize(rec.len() + room, 0xaa);
    rec
}

#[test]
fn parse_stack_records() {
    let rec = stack_record(abi::EV_MISS, 16, 16);
    let Event::Stack(e) = Event::parse(&rec).unwrap() else {
        panic!("not a stack record")
    };
    assert!(!e.verify);
    assert_eq!((e.tid, e.tgid, e.stack_id), (77, 70, MISS_ID_BIT | 5));
    assert_eq!(e.regs[0], 0x1000);
    assert_eq!(e.kstack.words().len(), 2);
    assert_eq!(e.stack, &[0xaa; 16]);
    let verify = stack_record(abi::EV_VERIFY, 0, 0);
    let Event::Stack(v) = Event::parse(&verify).unwrap() else {
        panic!("not a stack record")
    };
    assert!(v.verify && v.stack.is_empty());
    // Lengths beyond the record, a kernel stack beyond its array, short records.
    assert!(Event::parse(&stack_record(abi::EV_MISS, 17, 16)).is_err());
    assert!(Event::parse(&stack_record(abi::EV_MISS, u32::MAX, 16)).is_err());
    let mut bad = stack_record(abi::EV_MISS, 0, 0);
    bad[64..68].copy_from_slice(&(KSTACK_MAX as u32 + 1).to_ne_bytes());
    assert!(Event::parse(&bad).is_err());
    assert!(Event::parse(&rec[..10]).is_err());
    assert!(Event::parse(&rec[..2]).is_err());
    assert!(Event::parse(&99u32.to_ne_bytes()).is_err());
}

#[test]
fn parse_small_records() {
    let m = MunmapEventRaw {
        ty: abi::EV_MUNMAP as u32,
        tgid: 9,
        addr: 0x5000,
        len: 0x2000,
        ..Default::default()
    };
    match Event::parse(m.as_bytes()).unwrap() {
        Event::Munmap {
            tgid, addr, len, ..
        } => assert_eq!((tgid, addr, len), (9, 0x5000, 0x2000)),
        e => panic!("{e:?}"),
    }
    let mut t = TraceEventRaw {
        ty: abi::EV_TRACE as u32,
        kind: abi::K_REALLOC as u32,
        size: 10,
        addr: 0x10,
        old_ptr: 0x20,
        ..Default::default()
    };
    match Event::parse(t.as_bytes()).unwrap() {
        Event::Trace { kind, old_ptr, .. } => assert_eq!((kind, old_ptr), (Kind::Realloc, 0x20)),
        e => panic!("{e:?}"),
    }
    t.kind = abi::NR_KINDS as u32;
    assert!(Event::parse(t.as_bytes()).is_err(), "unknown kind accepted");
    assert!(Event::parse(&t.as_bytes()[..20]).is_err());
}

/// A link map record as the kernel sends it: the whole struct, `nr`
/// entries filled, names NUL-terminated (garbage after the NUL).
fn link_map_record(nr: u32, entries: &[(u64, &str)]) -> Vec<u8> {
    let head = LinkMapHead {
        ty: abi::EV_LINKMAP as u32,
        tgid: 7,
        nr,
        ..Default::default()
    };
    let entry = 8 + abi::LINKMAP_NAME as usize;
    let mut rec = head.as_bytes().to_vec();
    rec.resize(rec.len() + abi::LINKMAP_MAX as usize * entry, 0xee);
    for (i, (base, name)) in entries.iter().enumerate() {
        let at = std::mem::size_of::<LinkMapHead>() + i * entry;
        rec[at..at + 8].copy_from_slice(&base.to_ne_bytes());
        rec[at + 8..at + 8 + name.len()].copy_from_slice(name.as_bytes());
        rec[at + 8 + name.len()] = 0;
    }
    rec
}

#[test]
fn parse_link_map_records() {
    let rec = link_map_record(
        3,
        &[
            (0, ""),
            (0x7f00_0000, "/lib/libc.so.6"),
            (0x7f10_0000, "/p.so"),
        ],
    );
    assert_eq!(record_tgid(&rec), Some(7));
    match Event::parse(&rec).unwrap() {
        Event::LinkMap { tgid, objects } => {
            assert_eq!(tgid, 7);
            assert_eq!(
                objects,
                vec![
                    (0, String::new()),
                    (0x7f00_0000, "/lib/libc.so.6".to_string()),
                    (0x7f10_0000, "/p.so".to_string())
                ]
            );
        }
        e => panic!("{e:?}"),
    }
    // More entries than the struct holds, or a record cut short.
    assert!(Event::parse(&link_map_record(abi::LINKMAP_MAX as u32 + 1, &[])).is_err());
    let cut = link_map_record(3, &[(1, "/a")]);
    assert!(Event::parse(&cut[..cut.len() - abi::LINKMAP_MAX as usize * 264 + 100]).is_err());
}

#[test]
fn stack_ids_depend_on_every_word_and_the_length() {
    let a = stack_id(&[1, 2, 3]);
    assert_eq!(a, stack_id(&[1, 2, 3]));
    assert_ne!(a, stack_id(&[1, 2, 4]));
    assert_ne!(a, stack_id(&[1, 2, 3, 0]));
    assert_ne!(stack_id(&[1 | (2 << 56)]), stack_id(&[1 | (3 << 56)]));
    assert_eq!(
        a & MISS_ID_BIT,
        0,
        "kernel stack ids never look like miss ids"
    );
}

#[test]
fn kinds_and_counters_follow_the_header() {
    for (i, k) in Kind::ALL.iter().enumerate() {
        assert_eq!(Kind::from_raw(i as u32), Some(*k));
    }
    for (i, c) in Counter::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i, "{} out of order", c.name());
    }
    assert_eq!(Kind::Munmap.program(), prog::MUNMAP);
    assert_eq!(abi::K_MUNMAP, Kind::Munmap as u64);
}

#[test]
fn short_stacks_read_from_a_prefix() {
    let mut k = KStack {
        nr: 3,
        end: abi::END_OUTERMOST as u32,
        ..KStack::default()
    };
    k.pcs[..3].copy_from_slice(&[1, 2, 3]);
    let prefix = &k.as_bytes()[..abi::KSTACK_SHORT_BYTES as usize];
    assert_eq!(KStack::from_prefix(prefix), Some(k));
    assert_eq!(KStack::from_prefix(k.as_bytes()), Some(k));
    // nr beyond the bytes given, or beyond the array.
    k.nr = KSTACK_SHORT as u32 + 1;
    assert_eq!(
        KStack::from_prefix(&k.as_bytes()[..abi::KSTACK_SHORT_BYTES as usize]),
        None
    );
    k.nr = KSTACK_MAX as u32 + 1;
    assert_eq!(KStack::from_prefix(k.as_bytes()), None);
    assert_eq!(KStack::from_prefix(&[1, 2]), None);
}
