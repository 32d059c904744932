//! Finds the allocator a process uses and the file offsets of its functions:
//! the first file in symbol-resolution order (the program, then its
//! `DT_NEEDED` libraries breadth-first, then the interpreter) that defines
//! `malloc` — libc, jemalloc, musl's loader, or a static program itself.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{anyhow, bail, Result};
use log::debug;
use memleak_bpf::Kind;
use memleak_unwind_arch::{parse_proc_maps, ElfFile};

/// A probe point: an allocator function and where to attach.
#[derive(Debug, Clone)]
pub struct ProbePoint {
    pub kind: Kind,
    pub symbol: String,
    pub file_offset: u64,
}

/// The allocator library and its probe points.
#[derive(Debug)]
pub struct Allocator {
    pub path: PathBuf,
    pub probes: Vec<ProbePoint>,
}

/// Allocation functions in the order they are preferred when two names share
/// an address (an alias is probed once).
const ALLOC_KINDS: [Kind; 9] = [
    Kind::Malloc,
    Kind::Calloc,
    Kind::Realloc,
    Kind::Reallocarray,
    Kind::PosixMemalign,
    Kind::AlignedAlloc,
    Kind::Memalign,
    Kind::Valloc,
    Kind::Pvalloc,
];

fn multiarch_dirs(machine: u16) -> &'static [&'static str] {
    match machine {
        62 => &["x86_64-linux-gnu"],
        183 => &["aarch64-linux-gnu"],
        8 => &["mips-linux-gnu", "mipsel-linux-gnu"],
        _ => &[],
    }
}

/// `path` as a process whose root is `root` names it (None: memleak's).
fn rooted(root: Option<&Path>, path: &Path) -> PathBuf {
    match root {
        Some(r) => r.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_path_buf(),
    }
}

/// Library search directories, as ld.so would use them for `exe`, under
/// the process's `root`.
fn search_dirs(exe: &ElfFile, exe_path: &Path, root: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(v) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
    }
    let origin = exe_path.parent().map(Path::to_path_buf).unwrap_or_default();
    for rp in exe.run_paths() {
        // $ORIGIN is the program's directory as memleak opens it.
        match rp.strip_prefix("$ORIGIN") {
            Some(rest) => dirs.push(PathBuf::from(format!("{}{rest}", origin.to_string_lossy()))),
            None => dirs.push(rooted(root, Path::new(&rp))),
        }
    }
    dirs.extend(ld_so_conf(Path::new("/etc/ld.so.conf"), 0, root));
    for m in multiarch_dirs(exe.machine()) {
        dirs.push(rooted(root, Path::new(&format!("/lib/{m}"))));
        dirs.push(rooted(root, Path::new(&format!("/usr/lib/{m}"))));
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"] {
        dirs.push(rooted(root, Path::new(d)));
    }
    dirs
}

fn ld_so_conf(path: &Path, depth: u32, root: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(text) = std::fs::read_to_string(rooted(root, path)) else {
        return out;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = pattern.trim();
            // Only `dir/*.conf`-style patterns are used in practice.
            let (dir, suffix) = match pattern.rsplit_once("/*") {
                Some((d, s)) => (d.to_string(), s.to_string()),
                None => (pattern.to_string(), String::new()),
            };
            if depth < 4 {
                let mut files: Vec<PathBuf> = std::fs::read_dir(rooted(root, Path::new(&dir)))
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| Path::new(&dir).join(e.file_name()))
                            .collect()
                    })
                    .unwrap_or_default();
                files.sort();
                for f in files
                    .into_iter()
                    .filter(|f| f.to_string_lossy().ends_with(&suffix))
                {
                    out.extend(ld_so_conf(&f, depth + 1, root));
                }
            }
        } else if line.starts_with('/') {
            out.push(rooted(root, Path::new(line)));
        }
    }
    out
}

fn open(path: &Path) -> Option<Rc<ElfFile>> {
    ElfFile::open(&path.to_string_lossy()).ok().map(Rc::new)
}

/// Finds `soname` for `exe`: first among the files the process has mapped,
/// then in the search directories; it must match the program's machine and class.
fn resolve(
    soname: &str,
    exe: &ElfFile,
    mapped: &[String],
    dirs: &[PathBuf],
    root: Option<&Path>,
) -> Option<(PathBuf, Rc<ElfFile>)> {
    let usable =
        |f: &ElfFile| f.machine() == exe.machine() && f.address_size() == exe.address_size();
    if soname.contains('/') {
        let p = rooted(root, Path::new(soname));
        return open(&p).filter(|f| usable(f)).map(|f| (p, f));
    }
    for m in mapped {
        // By the name the process gave it (a deleted file is opened
        // through its map_files link).
        let name = crate::procfs::named(m);
        if Path::new(&name).file_name().is_some_and(|n| n == soname) {
            if let Some(f) = open(Path::new(m)).filter(|f| usable(f)) {
                return Some((PathBuf::from(m), f));
            }
        }
    }
    for d in dirs {
        let p = d.join(soname);
        if p.exists() {
            if let Some(f) = open(&p).filter(|f| usable(f)) {
                return Some((p, f));
            }
        }
    }
    None
}

/// Probe points of the allocator in `lib`, or an error naming what is missing.
pub fn probe_points(
    lib: &ElfFile,
    path: &Path,
    prefix: &str,
    mmap: bool,
) -> Result<Vec<ProbePoint>> {
    let mut points: Vec<ProbePoint> = Vec::new();
    let mut kinds: Vec<Kind> = ALLOC_KINDS.to_vec();
    kinds.push(Kind::Free);
    if mmap {
        kinds.extend([Kind::Mmap, Kind::Munmap]);
    }
    for kind in kinds {
        // mmap/munmap are libc's even when the allocator has a prefix.
        let symbol = if matches!(kind, Kind::Mmap | Kind::Munmap) {
            kind.name().to_string()
        } else {
            format!("{prefix}{}", kind.name())
        };
        let Some(svma) = lib.find_function(&symbol) else {
            if kind == Kind::Free {
                // A static program that never frees links no `free`: every
                // block it allocates stays outstanding, and is reported so.
                log::warn!(
                    "{} has no `{symbol}`: nothing it allocates is ever freed, every block counts as outstanding",
                    path.display()
                );
                continue;
            }
            if kind == Kind::Malloc {
                bail!(
                    "allocator symbol `{symbol}` not found in {} (use -O to name the allocator library, or -S for a symbol prefix such as je_)",
                    path.display()
                );
            }
            debug!("{} has no `{symbol}`: not probed", path.display());
            continue;
        };
        let Some(file_offset) = lib.svma_to_file_offset(svma) else {
            bail!(
                "{}: `{symbol}` at {svma:#x} is outside every loadable segment",
                path.display()
            );
        };
        if let Some(first) = points.iter().find(|p| p.file_offset == file_offset) {
            debug!("`{symbol}` is an alias of `{}`: probed once", first.symbol);
            continue;
        }
        points.push(ProbePoint {
            kind,
            symbol,
            file_offset,
        });
    }
    Ok(points)
}

fn note_searched(searched: &mut Vec<String>, path: &Path) {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let shown = real.display().to_string();
    if !searched.contains(&shown) {
        searched.push(shown);
    }
}

/// Whether two paths name the same file (device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The libraries the dynamic loader maps first, in its order: LD_PRELOAD,
/// then the program's DT_NEEDED (their own needs follow as they are found).
fn startup_queue(exe: &ElfFile) -> VecDeque<String> {
    let mut queue: VecDeque<String> = VecDeque::new();
    if let Ok(preload) = std::env::var("LD_PRELOAD") {
        queue.extend(
            preload
                .split([' ', ':'])
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    queue.extend(exe.needed_libraries());
    queue
}

/// The files a program maps before its first instruction: itself, its
/// interpreter, LD_PRELOAD and every library it needs (transitively), as
/// far as they can be found, with what `mapped` already shows.
fn startup_files(
    exe_path: &Path,
    exe: &ElfFile,
    mapped: &[String],
    root: Option<&Path>,
) -> Vec<PathBuf> {
    let dirs = search_dirs(exe, exe_path, root);
    let mut files: Vec<PathBuf> = vec![exe_path.to_path_buf()];
    files.extend(mapped.iter().map(PathBuf::from));
    let mut seen = HashSet::new();
    let mut queue = startup_queue(exe);
    queue.extend(exe.interpreter());
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some((path, lib)) = resolve(&name, exe, mapped, &dirs, root) {
            queue.extend(lib.needed_libraries());
            files.push(path);
        }
    }
    files
}

/// Finds the allocator of the process whose executable is `exe_path`;
/// `maps` is the text of its `/proc/PID/maps`. `running` is the PID of a
/// process memleak attaches to (None: a command stopped at its exec).
/// `root`: the process's own root when it is not memleak's (a container:
/// libraries are looked for there).
pub fn find(
    exe_path: &Path,
    maps: Option<&str>,
    running: Option<i32>,
    root: Option<&Path>,
    obj: Option<&Path>,
    prefix: &str,
    mmap: bool,
) -> Result<Allocator> {
    let mapped: Vec<String> = maps
        .map(|m| parse_proc_maps(m).into_iter().map(|e| e.path).collect())
        .unwrap_or_default();
    if let Some(obj) = obj {
        let meta = std::fs::metadata(obj).map_err(|e| anyhow!("-O {}: {e}", obj.display()))?;
        if meta.is_dir() {
            bail!(
                "-O {}: is a directory; name the allocator's library file",
                obj.display()
            );
        }
        if !meta.is_file() {
            bail!("-O {}: not a regular file", obj.display());
        }
        let lib = ElfFile::open(&obj.to_string_lossy())?;
        let probes = probe_points(&lib, obj, prefix, mmap)?;
        // A library the process does not load has no calls to see: the
        // report would be empty, and say nothing of why. This is an error,
        // not a warning: allocators come linked (DT_NEEDED), preloaded or
        // built into the program. One that only a dlopen brings in serves
        // the calls of that library alone (the program's own calls bind to
        // the allocator loaded at start) and cannot own the blocks allocated
        // before it came, and a traced command is checked before any of its
        // libraries is mapped; such a library is traced by attaching with
        // -p once it is loaded, which this check then accepts.
        let loaded = match running {
            Some(_) => mapped.iter().any(|m| same_file(Path::new(m), obj)),
            None => {
                let exe = ElfFile::open(&exe_path.to_string_lossy())?;
                startup_files(exe_path, &exe, &mapped, root)
                    .iter()
                    .any(|f| same_file(f, obj))
            }
        };
        if !loaded {
            match running {
                Some(pid) => bail!(
                    "-O {}: process {pid} has not loaded it, so it sees no allocation (a library loaded later with dlopen can be named once it is loaded)",
                    obj.display()
                ),
                None => bail!(
                    "-O {}: {} does not load it at start (it is not the program, its interpreter, LD_PRELOAD or a library the program needs), so it would see no allocation (a library loaded later with dlopen: attach with -p once it is loaded)",
                    obj.display(),
                    exe_path.display()
                ),
            }
        }
        return Ok(Allocator {
            path: obj.to_path_buf(),
            probes,
        });
    }
    let exe = ElfFile::open(&exe_path.to_string_lossy())?;
    let malloc = format!("{prefix}malloc");
    if exe.find_function(&malloc).is_some() {
        let probes = probe_points(&exe, exe_path, prefix, mmap)?;
        return Ok(Allocator {
            path: exe_path.to_path_buf(),
            probes,
        });
    }
    // A running process has its libraries mapped: only those count (a file
    // of the same name found on memleak's side may be another one, e.g. in
    // a container).
    let dirs = if running.is_some() && !mapped.is_empty() {
        Vec::new()
    } else {
        search_dirs(&exe, exe_path, root)
    };
    let mut searched = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = startup_queue(&exe);
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some((path, lib)) = resolve(&name, &exe, &mapped, &dirs, root) else {
            debug!("could not find {name} for {}", exe_path.display());
            continue;
        };
        note_searched(&mut searched, &path);
        if lib.find_function(&malloc).is_some() {
            let probes = probe_points(&lib, &path, prefix, mmap)?;
            return Ok(Allocator { path, probes });
        }
        queue.extend(lib.needed_libraries());
    }
    if let Some(interp) = exe.interpreter() {
        if let Some((path, lib)) = resolve(&interp, &exe, &mapped, &dirs, root) {
            note_searched(&mut searched, &path);
            if lib.find_function(&malloc).is_some() {
                let probes = probe_points(&lib, &path, prefix, mmap)?;
                return Ok(Allocator { path, probes });
            }
        }
    }
    if exe.is_static_executable() && !exe.has_symtab() {
        bail!(
            "{} is a stripped static executable: its `{malloc}` cannot be found (use an unstripped build, or -O)",
            exe_path.display()
        );
    }
    searched.insert(0, exe_path.display().to_string());
    bail!(
        "allocator symbol `{malloc}` not found in {} (use -O to name the allocator library, or -S for a symbol prefix such as je_)",
        searched.join(", ")
    )
}
