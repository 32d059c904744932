//! Offline unwinding of real fixture binaries, for every target in
//! `targets/*.toml`, on this host.
//!
//! `tests/fixtures/src/unwind_chain.c` is built with the target's C cross
//! compiler in four variants (frame pointers, none, `.debug_frame` only, no
//! unwind information at all), run (natively or under qemu-user), and records
//! its registers at `record_here`'s entry, a copy of its stack and its module
//! map. Each recording must unwind to `main` through level3, level2 and
//! level1, on the lines of the CALL markers, with the method the variant
//! allows (CFI, frame pointers, or mips prologue analysis).
//!
//! The cross compilers and qemu-user come from `scripts/deps.sh`; a missing
//! tool fails the test (it is never skipped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use memleak_unwind_arch::{
    AnyUnwinder, CfaRule, ElfCache, EntrySnapshot, Frame, Method, ModuleMap, Recording, Reg,
    RegRule, RuleLookup, StackEnd, UnwindMode, UnwindRule,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `key = "value"` / `key = value` pairs of a targets/*.toml file.
fn target(name: &str) -> HashMap<String, String> {
    let path = repo().join("targets").join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

#[track_caller]
fn run(cmd: &mut Command) -> std::process::Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run `{shown}`: {e} (run scripts/deps.sh)"));
    assert!(
        out.status.success(),
        "`{shown}` failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Line numbers of the `/* CALL:callee@caller */` markers.
fn markers() -> HashMap<String, u32> {
    let src = std::fs::read_to_string(repo().join("tests/fixtures/src/unwind_chain.c")).unwrap();
    let mut m = HashMap::new();
    for (i, line) in src.lines().enumerate() {
        if let Some(rest) = line.split("/* CALL:").nth(1) {
            let key = rest.split(" */").next().unwrap().to_string();
            m.insert(key, i as u32 + 1);
        }
    }
    m
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Fp,
    NoFp,
    DebugFrame,
    NoCfi,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Fp => "fp",
            Variant::NoFp => "nofp",
            Variant::DebugFrame => "debug-frame",
            Variant::NoCfi => "nocfi",
        }
    }
}

fn build(t: &HashMap<String, String>, v: Variant, out: &Path) -> PathBuf {
    let name = &t["name"];
    let arch_src = if name.starts_with("mips") {
        "mips"
    } else {
        name.as_str()
    };
    let cc = if name == std::env::consts::ARCH && name == "x86_64" {
        "gcc".to_string()
    } else {
        format!("{}-gcc", t["gnu_triple"])
    };
    let mips = name.starts_with("mips");
    let mut flags: Vec<&str> = vec!["-O2", "-g"];
    match v {
        Variant::Fp => flags.push("-fno-omit-frame-pointer"),
        Variant::NoFp => flags.extend(["-fomit-frame-pointer", "-fasynchronous-unwind-tables"]),
        Variant::DebugFrame => flags.extend([
            "-fomit-frame-pointer",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ]),
        Variant::NoCfi => {
            flags.extend(["-fno-asynchronous-unwind-tables", "-fno-unwind-tables"]);
            // Without CFI, x86_64 and aarch64 need frame pointers; mips32
            // analyses prologues.
            flags.push(if mips {
                "-fomit-frame-pointer"
            } else {
                "-fno-omit-frame-pointer"
            });
        }
    }
    let exe = out.join(format!("unwind_chain-{name}-{}", v.name()));
    let src = repo().join("tests/fixtures/src");
    run(Command::new(&cc)
        .args(&flags)
        .arg("-o")
        .arg(&exe)
        .arg(src.join("unwind_chain.c"))
        .arg(src.join(format!("record/{arch_src}.S"))));
    if v == Variant::NoCfi {
        let objcopy = cc.replace("gcc", "objcopy");
        run(Command::new(objcopy)
            .args([
                "--remove-section=.debug_frame",
                "--remove-section=.eh_frame",
            ])
            .arg(&exe));
    }
    exe
}

fn record(t: &HashMap<String, String>, exe: &Path, out: &Path) -> Recording {
    let rec = out.join(format!(
        "{}.rec",
        exe.file_name().unwrap().to_string_lossy()
    ));
    let name = &t["name"];
    if name == "x86_64" && std::env::consts::ARCH == "x86_64" {
        run(Command::new(exe).arg(&rec));
    } else {
        let qemu = &t["qemu_user"];
        let qemu = if which(qemu) {
            qemu.clone()
        } else {
            format!("{qemu}-static")
        };
        run(Command::new(qemu)
            .arg("-L")
            .arg(&t["sysroot"])
            .arg(exe)
            .arg(&rec));
    }
    let text = std::fs::read_to_string(&rec).unwrap();
    Recording::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", rec.display()))
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

fn check(target_name: &str, v: Variant) {
    let t = target(target_name);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("unwind-fixtures");
    std::fs::create_dir_all(&out).unwrap();
    let exe = build(&t, v, &out);
    let rec = record(&t, &exe, &out);
    assert_eq!(
        rec.big_endian,
        t["endian"] == "big",
        "{target_name}: recorded byte order"
    );
    let mut files = ElfCache::new();
    let modules = rec.module_map(&mut files);
    let (frames, end) = rec
        .unwind(&modules, UnwindMode::Auto, 64)
        .expect("a supported machine");

    // Symbolize: the function and line of each frame (return addresses - 1).
    let mut shown = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let m = modules.find(f.address);
        let sym = m.and_then(|m| {
            let svma = m.avma_to_svma(f.address - u64::from(i > 0))?;
            m.elf.symbolize(svma).pop()
        });
        shown.push((
            sym.as_ref()
                .and_then(|s| s.function.clone())
                .unwrap_or_default(),
            sym.as_ref().and_then(|s| s.line),
            f.method,
            m.map(|m| m.elf.path().to_string()).unwrap_or_default(),
        ));
    }
    let dump = shown
        .iter()
        .enumerate()
        .map(|(i, (f, l, m, p))| format!("  #{i} {f} line {l:?} {m:?} {p}"))
        .collect::<Vec<_>>()
        .join("\n");
    let ctx = format!("{target_name} {}: end {end:?}\n{dump}", v.name());

    let marks = markers();
    let want = [
        ("record_here", None),
        (
            "level3",
            Some(if target_name.starts_with("mips") {
                marks["record_here@level3:mips"]
            } else {
                marks["record_here@level3"]
            }),
        ),
        ("level2", Some(marks["level3@level2"])),
        ("level1", Some(marks["level2@level1"])),
        ("main", Some(marks["level1@main"])),
    ];
    assert!(shown.len() >= want.len(), "chain too short:\n{ctx}");
    for (i, (func, line)) in want.iter().enumerate() {
        assert_eq!(shown[i].0, *func, "frame {i} function:\n{ctx}");
        if let Some(line) = line {
            assert_eq!(shown[i].1, Some(*line), "frame {i} line:\n{ctx}");
        }
    }
    assert_eq!(frames[0].method, Method::Regs, "{ctx}");
    assert_eq!(frames[1].method, Method::Entry, "{ctx}");
    let expected = match v {
        Variant::NoFp | Variant::DebugFrame => Method::Cfi,
        // The fp variant still has CFI, which is preferred.
        Variant::Fp => Method::Cfi,
        Variant::NoCfi if target_name.starts_with("mips") => Method::Prologue,
        Variant::NoCfi => Method::Fp,
    };
    for (i, f) in frames.iter().enumerate().take(5).skip(2) {
        assert_eq!(f.method, expected, "frame {i} method:\n{ctx}");
    }
    check_kernel_walk(&rec, &modules, &ctx);
    // Past main the walk goes into libc's start code; it must end cleanly
    // where CFI exists (the outermost frame marks its return address undefined).
    if matches!(v, Variant::NoFp | Variant::DebugFrame | Variant::Fp)
        && !target_name.starts_with("mips")
    {
        assert_eq!(end, StackEnd::Outermost, "{ctx}");
    }
}

/// How the kernel's walk ended (`END_*` in memleak.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelEnd {
    Outermost,
    MaxDepth,
    NoInfo,
    Error,
    Miss,
}

/// A model of memleak's in-kernel walk (`walk()` in
/// crates/bpf/src/bpf/memleak.bpf.c), step for step: the ABI's entry rule,
/// then one cached rule per return address minus one, reading live stack
/// memory (here: the recording, which runs to the stack's end) no lower than
/// sp at entry. It is written apart from the unwinder on purpose: it checks
/// that the rules the unwinder looked up are all the kernel needs, and that
/// their compact form (32-bit offsets) holds them.
fn kernel_walk(
    rec: &Recording,
    cache: &HashMap<u64, Option<(UnwindRule, Method)>>,
    max_frames: usize,
    pc_mask: u64,
) -> (Vec<Frame>, KernelEnd) {
    let word = if rec.machine == 8 { 4 } else { 8 };
    let sp0 = rec.regs[1];
    let read = |addr: u64| -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(sp0)?).ok()?;
        let b = rec.stack.get(off..off + word)?;
        let mut v = [0u8; 8];
        Some(if rec.big_endian {
            v[8 - word..].copy_from_slice(b);
            u64::from_be_bytes(v)
        } else {
            v[..word].copy_from_slice(b);
            u64::from_le_bytes(v)
        })
    };
    let add = |b: u64, o: i64| -> Option<u64> {
        i32::try_from(o).expect("an offset the kernel's 32-bit rule cannot hold");
        b.checked_add_signed(o)
    };
    let mut frames = vec![Frame {
        address: rec.regs[0],
        method: Method::Regs,
    }];
    let (mut pc, mut sp, mut fp) = (rec.regs[0], sp0, Some(rec.regs[2]));
    // Frame 1: the ABI's rule at a function's entry.
    let ra = if rec.machine == 62 {
        match read(sp0) {
            Some(ra) => ra,
            None => return (frames, KernelEnd::Error),
        }
    } else {
        rec.regs[3]
    };
    if ra == 0 {
        return (frames, KernelEnd::Outermost);
    }
    if rec.machine == 62 {
        sp += 8;
    } else if ra == pc {
        return (frames, KernelEnd::Error);
    }
    pc = ra & pc_mask;
    frames.push(Frame {
        address: pc,
        method: Method::Entry,
    });
    loop {
        if frames.len() >= max_frames {
            return (frames, KernelEnd::MaxDepth);
        }
        let Some(found) = cache.get(&(pc - 1)) else {
            return (frames, KernelEnd::Miss);
        };
        let Some((rule, method)) = *found else {
            return (frames, KernelEnd::NoInfo);
        };
        let get = |r: Reg| match r {
            Reg::Sp => Some(sp),
            Reg::Fp => fp,
            Reg::Ra => None, // known at frame 0 only
        };
        let cfa = match rule.cfa {
            CfaRule::RegOffset(r, o) => get(r).and_then(|b| add(b, o)),
            CfaRule::DerefRegOffset(r, o) => get(r).and_then(|b| add(b, o)).and_then(read),
        };
        let Some(cfa) = cfa else {
            return (frames, KernelEnd::Error);
        };
        // Ok(None): no value; Err: an error.
        let recover = |how: RegRule, cur: Option<u64>| -> Result<Option<u64>, ()> {
            match how {
                RegRule::Undefined => Ok(None),
                RegRule::SameValue => Ok(cur),
                RegRule::AtCfa(o) => add(cfa, o).and_then(read).map(Some).ok_or(()),
                RegRule::ValCfa(o) => add(cfa, o).map(Some).ok_or(()),
                RegRule::AtRegOffset(r, o) => get(r)
                    .and_then(|b| add(b, o))
                    .and_then(read)
                    .map(Some)
                    .ok_or(()),
                RegRule::InReg(r) => get(r).map(Some).ok_or(()),
            }
        };
        let ra = match rule.ra {
            RegRule::SameValue => return (frames, KernelEnd::Error),
            how => match recover(how, None) {
                Ok(Some(ra)) if ra != 0 => ra,
                Ok(_) => return (frames, KernelEnd::Outermost),
                Err(()) => return (frames, KernelEnd::Error),
            },
        };
        let Ok(next_fp) = recover(rule.fp, fp) else {
            return (frames, KernelEnd::Error);
        };
        if cfa < sp || (cfa == sp && ra == pc) {
            return (frames, KernelEnd::Error);
        }
        (pc, sp, fp) = (ra & pc_mask, cfa, next_fp);
        frames.push(Frame {
            address: pc,
            method,
        });
    }
}

/// The walk the kernel makes once its cache holds every rule the unwinder
/// looked up must give the unwinder's frames and end.
fn check_kernel_walk(rec: &Recording, modules: &ModuleMap, ctx: &str) {
    for mode in [UnwindMode::Auto, UnwindMode::Cfi, UnwindMode::FramePointer] {
        let mut u = AnyUnwinder::for_machine(rec.machine, mode, 64).expect("a supported machine");
        let (mut frames, mut log) = (Vec::new(), Vec::<RuleLookup>::new());
        let snap = EntrySnapshot {
            raw_regs: rec.regs,
            stack: &rec.stack,
            big_endian: rec.big_endian,
            reached_end: true,
        };
        let end = u.unwind_entry_logged(&snap, modules, &mut frames, Some(&mut log));
        let cache: HashMap<u64, Option<(UnwindRule, Method)>> =
            log.iter().map(|l| (l.address, l.rule)).collect();
        let (kframes, kend) = kernel_walk(rec, &cache, 64, u.code_address_mask());
        let want_end = match end {
            StackEnd::Outermost => KernelEnd::Outermost,
            StackEnd::MaxDepth => KernelEnd::MaxDepth,
            StackEnd::NoUnwindInfo => KernelEnd::NoInfo,
            StackEnd::Error(_) | StackEnd::Truncated => KernelEnd::Error,
        };
        assert_eq!(
            (&kframes, kend),
            (&frames, want_end),
            "{mode:?}: the kernel's walk over the cached rules differs from the unwinder's ({end:?})\n{ctx}"
        );
    }
}

macro_rules! fixture_tests {
    ($($name:ident: $target:expr, $variant:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check($target, $variant);
            }
        )*
    };
}

fixture_tests! {
    x86_64_fp: "x86_64", Variant::Fp;
    x86_64_nofp: "x86_64", Variant::NoFp;
    x86_64_debug_frame: "x86_64", Variant::DebugFrame;
    x86_64_nocfi: "x86_64", Variant::NoCfi;
    aarch64_fp: "aarch64", Variant::Fp;
    aarch64_nofp: "aarch64", Variant::NoFp;
    aarch64_debug_frame: "aarch64", Variant::DebugFrame;
    aarch64_nocfi: "aarch64", Variant::NoCfi;
    mipsel_fp: "mipsel", Variant::Fp;
    mipsel_nofp: "mipsel", Variant::NoFp;
    mipsel_debug_frame: "mipsel", Variant::DebugFrame;
    mipsel_nocfi: "mipsel", Variant::NoCfi;
    mips_fp: "mips", Variant::Fp;
    mips_nofp: "mips", Variant::NoFp;
    mips_debug_frame: "mips", Variant::DebugFrame;
    mips_nocfi: "mips", Variant::NoCfi;
}
