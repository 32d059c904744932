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
//! `tests/fixtures/src/musl_leak.c -DMUSL_RECORD` is built against musl,
//! whose code has no unwind tables and no frame pointers, statically and
//! dynamically (see `build_musl`). It allocates inside musl's helpers
//! (strdup, fopen, and a qsort comparator) through its own malloc, which
//! records at its entry; each recording must unwind through the helper to
//! `main` (the helper's caller found from its machine code or by a scan of
//! the stack, not from CFI), and must stop at the helper with CFI and frame
//! pointers alone (`UnwindMode::CfiFp`). The tests first check that no FDE
//! of the C library covers the helpers.
//!
//! The cross compilers, zig, musl and qemu-user come from `scripts/deps.sh`;
//! a missing tool fails the test (it is never skipped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

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

/// Line numbers of the `/* CALL:callee@caller */` markers of a fixture
/// source in tests/fixtures/src.
fn markers(file: &str) -> HashMap<String, u32> {
    let src = std::fs::read_to_string(repo().join("tests/fixtures/src").join(file)).unwrap();
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
    run_recorder(t, exe, &[], Path::new(&t["sysroot"]), &rec)
}

/// Runs `exe ARGS... REC` (natively on the host's architecture, else under
/// qemu-user with `sysroot` as its -L prefix) and parses the recording it
/// writes to `rec`.
fn run_recorder(
    t: &HashMap<String, String>,
    exe: &Path,
    args: &[&str],
    sysroot: &Path,
    rec: &Path,
) -> Recording {
    let name = &t["name"];
    if name == "x86_64" && std::env::consts::ARCH == "x86_64" {
        run(Command::new(exe).args(args).arg(rec));
    } else {
        let qemu = &t["qemu_user"];
        let qemu = if which(qemu) {
            qemu.clone()
        } else {
            format!("{qemu}-static")
        };
        run(Command::new(qemu)
            .arg("-L")
            .arg(sysroot)
            .arg(exe)
            .args(args)
            .arg(rec));
    }
    let text = std::fs::read_to_string(rec).unwrap();
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

    let shown = symbolize(&frames, &modules);
    let ctx = format!(
        "{target_name} {}: end {end:?}\n{}",
        v.name(),
        render(&shown)
    );

    let marks = markers("unwind_chain.c");
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

/// A frame symbolized: function (outermost of inlined ones), line, method,
/// and the path of its module.
type Shown = (String, Option<u32>, Method, String);

/// Each frame symbolized (return addresses looked up minus one).
fn symbolize(frames: &[Frame], modules: &ModuleMap) -> Vec<Shown> {
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
    shown
}

fn render(shown: &[Shown]) -> String {
    shown
        .iter()
        .enumerate()
        .map(|(i, (f, l, m, p))| format!("  #{i} {f} line {l:?} {m:?} {p}"))
        .collect::<Vec<_>>()
        .join("\n")
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

/// What the kernel's rule cache holds for an address, from one
/// `RuleLookup` (memleak's `rules::encode_lookup`).
#[derive(Debug, Clone, Copy)]
enum Cached {
    /// A rule, or none (the walk ends there).
    Rule(Option<(UnwindRule, Method)>),
    /// User space went on by scanning the stack: no rule holds here, the
    /// kernel sends a copy of every stack through this address (a miss).
    Scanned,
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
    cache: &HashMap<u64, Cached>,
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
        let (rule, method) = match cache.get(&(pc - 1)) {
            None | Some(Cached::Scanned) => return (frames, KernelEnd::Miss),
            Some(Cached::Rule(None)) => return (frames, KernelEnd::NoInfo),
            Some(Cached::Rule(Some(found))) => *found,
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
/// looked up must give the unwinder's frames and end; where the unwinder
/// scanned the stack, the kernel must stop with a miss at that frame (user
/// space unwinds each such stack from its copy).
fn check_kernel_walk(rec: &Recording, modules: &ModuleMap, ctx: &str) {
    for mode in [
        UnwindMode::Auto,
        UnwindMode::Cfi,
        UnwindMode::CfiFp,
        UnwindMode::FramePointer,
    ] {
        let mut u = AnyUnwinder::for_machine(rec.machine, mode, 64).expect("a supported machine");
        let (mut frames, mut log) = (Vec::new(), Vec::<RuleLookup>::new());
        let snap = EntrySnapshot {
            raw_regs: rec.regs,
            stack: &rec.stack,
            big_endian: rec.big_endian,
            reached_end: true,
        };
        let end = u.unwind_entry_logged(&snap, modules, &mut frames, Some(&mut log));
        let cache: HashMap<u64, Cached> = log
            .iter()
            .map(|l| {
                let cached = if l.scanned {
                    Cached::Scanned
                } else {
                    Cached::Rule(l.rule)
                };
                (l.address, cached)
            })
            .collect();
        let (kframes, kend) = kernel_walk(rec, &cache, 64, u.code_address_mask());
        // The first frame whose return address minus one user space
        // scanned from: the kernel reaches it and misses there (frame 1
        // comes from the entry rule, every later frame from such a lookup).
        let scanned_at = (1..frames.len()).find(|&i| {
            log.iter()
                .any(|l| l.scanned && l.address == frames[i].address - 1)
        });
        let (want_frames, want_end) = match scanned_at {
            Some(i) => (&frames[..=i], KernelEnd::Miss),
            None => (
                &frames[..],
                match end {
                    StackEnd::Outermost => KernelEnd::Outermost,
                    StackEnd::MaxDepth => KernelEnd::MaxDepth,
                    StackEnd::NoUnwindInfo => KernelEnd::NoInfo,
                    StackEnd::Error(_) | StackEnd::Truncated => KernelEnd::Error,
                },
            ),
        };
        assert_eq!(
            (&kframes[..], kend),
            (want_frames, want_end),
            "{mode:?}: the kernel's walk over the cached rules differs from the unwinder's ({end:?})\n{ctx}"
        );
    }
}

// ---------------------------------------------------------------------------
// musl: full stacks through a C library without unwind tables
// ---------------------------------------------------------------------------

/// How a musl fixture is linked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    Static,
    Dynamic,
}

/// The allocation of `musl_leak` a recording holds (its first argument).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LeakPath {
    /// main -> load_names -> keep_name -> strdup -> malloc
    Strdup,
    /// main -> open_log -> fopen -> __fdopen -> malloc
    Fopen,
    /// main -> sort_names -> qsort -> ... -> cmp_names -> malloc
    Qsort,
}

impl LeakPath {
    fn arg(self) -> &'static str {
        match self {
            LeakPath::Strdup => "strdup",
            LeakPath::Fopen => "fopen",
            LeakPath::Qsort => "qsort",
        }
    }
}

/// The helpers musl_leak.c calls, by their exported names (fdopen is
/// __fdopen, qsort_r __qsort_r): none of them may have an FDE.
const MUSL_HELPERS: &[&str] = &["strdup", "fopen", "fdopen", "qsort", "qsort_r"];

/// musl_leak.c's functions on the recorded paths: each has exactly one FDE.
const MUSL_PROGRAM: &[&str] = &[
    "malloc",
    "keep_name",
    "load_names",
    "open_log",
    "cmp_names",
    "sort_names",
    "main",
];

/// A musl build of `musl_leak.c -DMUSL_RECORD`.
struct MuslBuild {
    exe: PathBuf,
    /// qemu-user's -L prefix: it holds /lib/ld-musl-<arch>.so.1.
    sysroot: PathBuf,
    /// The file holding the C library's code: the executable itself, or
    /// musl's libc.so (which is also its dynamic loader).
    libc: PathBuf,
}

fn memleak_cache() -> PathBuf {
    std::env::var_os("MEMLEAK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/memleak")
        })
}

/// The musl that scripts/deps.sh builds for a cross target from Debian's
/// source (musl's own flags: -Os, no unwind tables, no frame pointers):
/// its prefix, and the name of its dynamic loader (`ld-musl-<arch>.so.1`).
fn cross_musl(t: &HashMap<String, String>) -> (PathBuf, String) {
    let prefix = memleak_cache().join("musl").join(&t["name"]);
    let lib = prefix.join("lib");
    let ldso = std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/deps.sh {})", lib.display(), t["name"]))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("ld-musl-") && n.ends_with(".so.1"))
        .unwrap_or_else(|| {
            panic!(
                "no ld-musl-*.so.1 in {} (run scripts/deps.sh)",
                lib.display()
            )
        });
    (prefix, ldso)
}

/// Builds `musl_leak.c -DMUSL_RECORD` for `t` (-O2 -g -fomit-frame-pointer,
/// the program's CFI in .eh_frame):
///
/// - x86_64: Debian's musl-gcc, static, and dynamic with the system's
///   /lib/ld-musl-x86_64.so.1 (Debian's libc.so, stripped).
/// - the other targets, static: zig cc with its own musl. zig compiles that
///   musl with -g, which leaves a .debug_frame FDE for every libc function;
///   it is removed from the executable, so the C library is as a shipped,
///   debug-stripped musl has it (the program's CFI is in .eh_frame and stays).
/// - the other targets, dynamic: the target's gcc through the musl-gcc
///   wrapper of the musl scripts/deps.sh builds, run with that musl as
///   qemu-user's -L prefix.
///
/// Then checks that no FDE covers the helpers in the C library's file, and
/// that exactly one covers each function of the program.
fn build_musl(t: &HashMap<String, String>, link: Link, out: &Path) -> MuslBuild {
    let name = &t["name"];
    let arch_src = if name.starts_with("mips") {
        "mips"
    } else {
        name.as_str()
    };
    let src = repo().join("tests/fixtures/src");
    let link_name = if link == Link::Static {
        "static"
    } else {
        "dynamic"
    };
    let exe = out.join(format!("musl_leak-{name}-{link_name}"));
    // Built under a name of this process, then renamed into place.
    let tmp = out.join(format!(
        ".musl_leak-{name}-{link_name}.{}",
        std::process::id()
    ));
    let flags = ["-O2", "-g", "-fomit-frame-pointer", "-DMUSL_RECORD"];
    let sources = [
        src.join("musl_leak.c"),
        src.join(format!("record/{arch_src}.S")),
    ];
    // The toolchain depends on the target only (the test may itself run
    // under qemu-user, scripts/test-cross.sh).
    let (sysroot, libc) = match (name == "x86_64", link) {
        (true, _) => {
            let mut cmd = Command::new("musl-gcc");
            if link == Link::Static {
                cmd.arg("-static");
            }
            cmd.args(flags).arg("-o").arg(&tmp).args(&sources);
            run(&mut cmd);
            let libc = match link {
                Link::Static => exe.clone(),
                Link::Dynamic => Path::new("/lib/ld-musl-x86_64.so.1")
                    .canonicalize()
                    .expect("/lib/ld-musl-x86_64.so.1 (Debian's musl package)"),
            };
            (PathBuf::from("/"), libc)
        }
        (false, Link::Static) => {
            let arch = t["triple"].split('-').next().unwrap().to_string();
            let zig_target = if arch.starts_with("mips") {
                format!("{arch}-linux-musleabi")
            } else {
                format!("{arch}-linux-musl")
            };
            // zig from PyPI (scripts/deps.sh), its cache under ours as in
            // scripts/build-static.sh.
            run(Command::new("python3")
                .args(["-m", "ziglang", "cc", "-fno-sanitize=all", "-target"])
                .arg(&zig_target)
                .env("ZIG_GLOBAL_CACHE_DIR", memleak_cache().join("zig"))
                .args(flags)
                .arg("-o")
                .arg(&tmp)
                .args(&sources));
            run(Command::new(format!("{}-objcopy", t["gnu_triple"]))
                .arg("--remove-section=.debug_frame")
                .arg(&tmp));
            (PathBuf::from("/"), exe.clone())
        }
        (false, Link::Dynamic) => {
            let (prefix, ldso) = cross_musl(t);
            run(Command::new(prefix.join("bin/musl-gcc"))
                .args(flags)
                .arg("-fasynchronous-unwind-tables")
                .arg(format!("-Wl,--dynamic-linker=/lib/{ldso}"))
                .arg("-o")
                .arg(&tmp)
                .args(&sources));
            let libc = prefix.join("lib/libc.so");
            (prefix, libc)
        }
    };
    std::fs::rename(&tmp, &exe)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", tmp.display(), exe.display()));
    let build = MuslBuild { exe, sysroot, libc };
    check_musl_fdes(t, &build);
    build
}

/// The [start, end) ranges of the FDEs in `.eh_frame` and `.debug_frame` of
/// an ELF file, read with gimli (independently of the unwinder).
fn fde_ranges(path: &Path) -> Vec<(u64, u64)> {
    use object::{Object, ObjectSection};

    fn collect<R: gimli::Reader, S: gimli::UnwindSection<R>>(
        section: &S,
        bases: &gimli::BaseAddresses,
        out: &mut Vec<(u64, u64)>,
    ) where
        S::Offset: gimli::UnwindOffset<R::Offset>,
    {
        let mut entries = section.entries(bases);
        while let Some(entry) = entries.next().expect("a readable CFI section") {
            if let gimli::CieOrFde::Fde(partial) = entry {
                let fde = partial
                    .parse(|s, b, o| s.cie_from_offset(b, o))
                    .expect("a readable FDE");
                out.push((fde.initial_address(), fde.initial_address() + fde.len()));
            }
        }
    }

    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = object::File::parse(&*data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let address_size = if file.is_64() { 8 } else { 4 };
    let mut out = Vec::new();
    if let Some(s) = file.section_by_name(".eh_frame") {
        let bytes = s.uncompressed_data().unwrap();
        let mut eh = gimli::EhFrame::new(&bytes, endian);
        eh.set_address_size(address_size);
        let mut bases = gimli::BaseAddresses::default().set_eh_frame(s.address());
        if let Some(text) = file.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        collect(&eh, &bases, &mut out);
    }
    if let Some(s) = file.section_by_name(".debug_frame") {
        let bytes = s.uncompressed_data().unwrap();
        let mut df = gimli::DebugFrame::new(&bytes, endian);
        df.set_address_size(address_size);
        collect(&df, &gimli::BaseAddresses::default(), &mut out);
    }
    out
}

/// The C library has no FDE for the helpers, the program one per function:
/// the unwinding below goes through code without CFI, and only there.
fn check_musl_fdes(t: &HashMap<String, String>, b: &MuslBuild) {
    let count = |file: &Path, functions: &[&str]| -> Vec<(String, usize)> {
        let elf = memleak_unwind_arch::ElfFile::open(&file.to_string_lossy())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let fdes = fde_ranges(file);
        functions
            .iter()
            .map(|f| {
                let at = elf
                    .find_function(f)
                    .unwrap_or_else(|| panic!("no function {f} in {}", file.display()));
                let n = fdes
                    .iter()
                    .filter(|(lo, hi)| (*lo..*hi).contains(&at))
                    .count();
                (f.to_string(), n)
            })
            .collect()
    };
    let helpers = count(&b.libc, MUSL_HELPERS);
    let program = count(&b.exe, MUSL_PROGRAM);
    // Shown with --nocapture: what the C library and the program hold.
    eprintln!(
        "{} {}: {} FDEs in {}; covering {helpers:?}; program {program:?}",
        t["name"],
        b.exe.display(),
        fde_ranges(&b.libc).len(),
        b.libc.display()
    );
    for (f, n) in &helpers {
        assert_eq!(
            *n,
            0,
            "{}: {f} has CFI: the C library does not test unwinding without it",
            b.libc.display()
        );
    }
    for (f, n) in &program {
        assert_eq!(*n, 1, "{}: {f} should have one FDE", b.exe.display());
    }
}

type MuslCell = Arc<OnceLock<MuslBuild>>;

/// `build_musl`, once per test process for each target and link.
fn musl_build_once(target_name: &str, link: Link) -> MuslCell {
    static CELLS: OnceLock<Mutex<HashMap<String, MuslCell>>> = OnceLock::new();
    let cell = CELLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(format!("{target_name} {link:?}"))
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("musl-fixtures");
        std::fs::create_dir_all(&out).unwrap();
        build_musl(&target(target_name), link, &out)
    });
    cell
}

/// Records `path` in the musl build of `target_name`, and returns the
/// recording with its module map and a description for failure messages.
fn musl_recording(
    target_name: &str,
    link: Link,
    path: LeakPath,
    what: &str,
) -> (Arc<OnceLock<MuslBuild>>, Recording, ModuleMap) {
    let t = target(target_name);
    let cell = musl_build_once(target_name, link);
    let b = cell.get().expect("built");
    let rec = b.exe.with_file_name(format!(
        "{}-{}-{what}.rec",
        b.exe.file_name().unwrap().to_string_lossy(),
        path.arg()
    ));
    let rec = run_recorder(&t, &b.exe, &[path.arg()], &b.sysroot, &rec);
    assert_eq!(
        rec.big_endian,
        t["endian"] == "big",
        "{target_name}: recorded byte order"
    );
    let modules = rec.module_map(&mut ElfCache::new());
    (cell.clone(), rec, modules)
}

/// One expected frame of a musl recording.
enum Want {
    /// A frame of the program: its function, and the CALL marker of its line
    /// (none for record_here, frame 0).
    Prog(&'static str, Option<String>),
    /// One frame in the C library, in one of these functions (aliases).
    Libc(&'static [&'static str]),
    /// One or more frames in the C library, each in one of `inner` or in a
    /// function without a symbol (a static function of a stripped libc.so),
    /// the last in one of `last`: musl's qsort calling the comparator.
    LibcRun {
        inner: &'static [&'static str],
        last: &'static [&'static str],
    },
}

/// musl's qsort (src/stdlib/qsort.c, qsort_nr.c): qsort -> __qsort_r
/// (qsort_r) -> sift / trinkle -> wrapper_cmp -> the comparator, as far as
/// the compiler kept these calls.
const QSORT_INNER: &[&str] = &[
    "wrapper_cmp",
    "sift",
    "trinkle",
    "__qsort_r",
    "qsort_r",
    "qsort",
];
const QSORT_LAST: &[&str] = &["__qsort_r", "qsort_r", "qsort"];

fn musl_chain(target_name: &str, path: LeakPath) -> Vec<Want> {
    let marker = |k: &str| Some(k.to_string());
    let record_here = if target_name.starts_with("mips") {
        "record_here@malloc:mips"
    } else {
        "record_here@malloc"
    };
    let mut want = vec![
        Want::Prog("record_here", None),
        Want::Prog("malloc", marker(record_here)),
    ];
    match path {
        LeakPath::Strdup => want.extend([
            Want::Libc(&["strdup"]),
            Want::Prog("keep_name", marker("strdup@keep_name")),
            Want::Prog("load_names", marker("keep_name@load_names")),
            Want::Prog("main", marker("load_names@main")),
        ]),
        LeakPath::Fopen => want.extend([
            Want::Libc(&["fdopen", "__fdopen"]),
            Want::Libc(&["fopen", "fopen64"]),
            Want::Prog("open_log", marker("fopen@open_log")),
            Want::Prog("main", marker("open_log@main")),
        ]),
        LeakPath::Qsort => want.extend([
            Want::Prog("cmp_names", marker("malloc@cmp_names")),
            Want::LibcRun {
                inner: QSORT_INNER,
                last: QSORT_LAST,
            },
            Want::Prog("sort_names", marker("qsort@sort_names")),
            Want::Prog("main", marker("sort_names@main")),
        ]),
    }
    want
}

/// Matches the symbolized frames against `want`; returns, per frame up to
/// main, whether it is in the C library, or why the frames do not match.
fn match_musl_chain(shown: &[Shown], want: &[Want], b: &MuslBuild) -> Result<Vec<bool>, String> {
    let marks = markers("musl_leak.c");
    let same = |module: &str, file: &Path| {
        Path::new(module)
            .canonicalize()
            .is_ok_and(|m| file.canonicalize().is_ok_and(|f| f == m))
    };
    let program_function = |f: &str| MUSL_PROGRAM.contains(&f) || f == "record_here";
    let in_libc = |i: usize, names: &[&str]| {
        let (f, _, _, module) = &shown[i];
        same(module, &b.libc) && !program_function(f) && names.contains(&f.as_str())
    };
    let mut libc = Vec::new();
    let mut i = 0;
    for w in want {
        let frame = |i: usize| shown.get(i).ok_or_else(|| format!("frame #{i} is missing"));
        match w {
            Want::Prog(function, marker) => {
                let (f, line, _, module) = frame(i)?;
                if f != function || !same(module, &b.exe) {
                    return Err(format!("frame #{i} is not {function} in the program"));
                }
                if let Some(m) = marker {
                    if *line != Some(marks[m]) {
                        return Err(format!(
                            "frame #{i} ({function}) is not on the line of CALL:{m} ({})",
                            marks[m]
                        ));
                    }
                }
                libc.push(false);
                i += 1;
            }
            Want::Libc(names) => {
                frame(i)?;
                if !in_libc(i, names) {
                    return Err(format!(
                        "frame #{i} is not one of {names:?} in the C library"
                    ));
                }
                libc.push(true);
                i += 1;
            }
            Want::LibcRun { inner, last } => {
                let start = i;
                let mut allowed = inner.to_vec();
                allowed.push("");
                while i < shown.len() && in_libc(i, &allowed) {
                    libc.push(true);
                    i += 1;
                }
                if i == start || !in_libc(i - 1, last) {
                    return Err(format!(
                        "frames #{start}.. are not musl's qsort ({inner:?}, unnamed static \
                         functions), ending in one of {last:?}"
                    ));
                }
            }
        }
    }
    Ok(libc)
}

/// The recording of `path` unwinds (`UnwindMode::Auto`) to main through the
/// helper: the program's frames on the marked lines, the helper's frames in
/// the C library; a frame whose callee is in the C library (no CFI) found
/// by prologue analysis or a stack scan, every other by CFI. The kernel's
/// walk over the rules looked up agrees.
fn check_musl(target_name: &str, link: Link, path: LeakPath) {
    let (cell, rec, modules) = musl_recording(target_name, link, path, "auto");
    let b = cell.get().expect("built");
    let (frames, end) = rec
        .unwind(&modules, UnwindMode::Auto, 64)
        .expect("a supported machine");
    let shown = symbolize(&frames, &modules);
    let ctx = format!(
        "{target_name} {link:?} {path:?} ({}): end {end:?}\n{}",
        b.exe.display(),
        render(&shown)
    );
    // Shown with --nocapture.
    eprintln!("{ctx}");
    let libc = match_musl_chain(&shown, &musl_chain(target_name, path), b)
        .unwrap_or_else(|why| panic!("not the chain through the helper: {why}\n{ctx}"));
    assert_eq!(frames[0].method, Method::Regs, "frame 0 method:\n{ctx}");
    assert_eq!(frames[1].method, Method::Entry, "frame 1 method:\n{ctx}");
    for i in 2..libc.len() {
        let m = frames[i].method;
        if libc[i - 1] {
            assert!(
                matches!(m, Method::Prologue | Method::Scan),
                "frame #{i}: its callee #{} is in the C library, which has no CFI: \
                 found by {m:?}, not by prologue analysis or a scan\n{ctx}",
                i - 1
            );
        } else {
            assert_eq!(m, Method::Cfi, "frame #{i} method:\n{ctx}");
        }
    }
    check_kernel_walk(&rec, &modules, &ctx);
}

/// With CFI and frame pointers alone (`UnwindMode::CfiFp`), the strdup
/// recording stops at strdup: the C library has neither, so nothing past
/// the helper is found. This proves the chain checks above can fail.
fn check_musl_cfi_fp_stops(target_name: &str, link: Link) {
    let (cell, rec, modules) = musl_recording(target_name, link, LeakPath::Strdup, "cfi-fp");
    let b = cell.get().expect("built");
    let (frames, end) = rec
        .unwind(&modules, UnwindMode::CfiFp, 64)
        .expect("a supported machine");
    let shown = symbolize(&frames, &modules);
    let ctx = format!(
        "{target_name} {link:?} ({}) with CfiFp: end {end:?}\n{}",
        b.exe.display(),
        render(&shown)
    );
    eprintln!("{ctx}");
    let up_to_helper = &musl_chain(target_name, LeakPath::Strdup)[..3];
    match_musl_chain(&shown, up_to_helper, b)
        .unwrap_or_else(|why| panic!("not record_here <- malloc <- strdup: {why}\n{ctx}"));
    assert_eq!(
        frames.len(),
        3,
        "the walk went on past strdup without CFI or frame pointers\n{ctx}"
    );
    check_kernel_walk(&rec, &modules, &ctx);
}

macro_rules! musl_tests {
    ($($name:ident: $check:expr;)*) => {
        $(
            #[test]
            fn $name() {
                $check;
            }
        )*
    };
}

musl_tests! {
    musl_x86_64_static_strdup: check_musl("x86_64", Link::Static, LeakPath::Strdup);
    musl_x86_64_static_fopen: check_musl("x86_64", Link::Static, LeakPath::Fopen);
    musl_x86_64_static_qsort: check_musl("x86_64", Link::Static, LeakPath::Qsort);
    musl_x86_64_static_cfi_fp_stops: check_musl_cfi_fp_stops("x86_64", Link::Static);
    musl_x86_64_dynamic_strdup: check_musl("x86_64", Link::Dynamic, LeakPath::Strdup);
    musl_x86_64_dynamic_fopen: check_musl("x86_64", Link::Dynamic, LeakPath::Fopen);
    musl_x86_64_dynamic_qsort: check_musl("x86_64", Link::Dynamic, LeakPath::Qsort);
    musl_x86_64_dynamic_cfi_fp_stops: check_musl_cfi_fp_stops("x86_64", Link::Dynamic);
    musl_aarch64_static_strdup: check_musl("aarch64", Link::Static, LeakPath::Strdup);
    musl_aarch64_static_fopen: check_musl("aarch64", Link::Static, LeakPath::Fopen);
    musl_aarch64_static_qsort: check_musl("aarch64", Link::Static, LeakPath::Qsort);
    musl_aarch64_static_cfi_fp_stops: check_musl_cfi_fp_stops("aarch64", Link::Static);
    musl_aarch64_dynamic_strdup: check_musl("aarch64", Link::Dynamic, LeakPath::Strdup);
    musl_aarch64_dynamic_fopen: check_musl("aarch64", Link::Dynamic, LeakPath::Fopen);
    musl_aarch64_dynamic_qsort: check_musl("aarch64", Link::Dynamic, LeakPath::Qsort);
    musl_aarch64_dynamic_cfi_fp_stops: check_musl_cfi_fp_stops("aarch64", Link::Dynamic);
    musl_mipsel_static_strdup: check_musl("mipsel", Link::Static, LeakPath::Strdup);
    musl_mipsel_static_fopen: check_musl("mipsel", Link::Static, LeakPath::Fopen);
    musl_mipsel_static_qsort: check_musl("mipsel", Link::Static, LeakPath::Qsort);
    musl_mipsel_static_cfi_fp_stops: check_musl_cfi_fp_stops("mipsel", Link::Static);
    musl_mipsel_dynamic_strdup: check_musl("mipsel", Link::Dynamic, LeakPath::Strdup);
    musl_mipsel_dynamic_fopen: check_musl("mipsel", Link::Dynamic, LeakPath::Fopen);
    musl_mipsel_dynamic_qsort: check_musl("mipsel", Link::Dynamic, LeakPath::Qsort);
    musl_mipsel_dynamic_cfi_fp_stops: check_musl_cfi_fp_stops("mipsel", Link::Dynamic);
    musl_mips_static_strdup: check_musl("mips", Link::Static, LeakPath::Strdup);
    musl_mips_static_fopen: check_musl("mips", Link::Static, LeakPath::Fopen);
    musl_mips_static_qsort: check_musl("mips", Link::Static, LeakPath::Qsort);
    musl_mips_static_cfi_fp_stops: check_musl_cfi_fp_stops("mips", Link::Static);
    musl_mips_dynamic_strdup: check_musl("mips", Link::Dynamic, LeakPath::Strdup);
    musl_mips_dynamic_fopen: check_musl("mips", Link::Dynamic, LeakPath::Fopen);
    musl_mips_dynamic_qsort: check_musl("mips", Link::Dynamic, LeakPath::Qsort);
    musl_mips_dynamic_cfi_fp_stops: check_musl_cfi_fp_stops("mips", Link::Dynamic);
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
