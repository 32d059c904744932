//! ELF files as the unwinder and symbolizer use them: load segments (to turn
//! file offsets into addresses), CFI sections, symbols and DWARF line info.
//!
//! Files are mapped once and kept for the life of the process: modules stay
//! usable after the traced process unmapped them or exited.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use gimli::{EndianSlice, RunTimeEndian};
use log::{debug, warn};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Object, ObjectSection, ObjectSymbol};

use crate::error::{ElfError, Result};

pub(crate) type Slice = EndianSlice<'static, RunTimeEndian>;

/// A PT_LOAD segment.
#[derive(Debug, Clone, Copy)]
struct Segment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    executable: bool,
}

impl Segment {
    /// True when `svma` is in the segment's file-backed part (without
    /// overflow, whatever the header says).
    fn contains(&self, svma: u64) -> bool {
        svma >= self.vaddr && svma - self.vaddr < self.filesz
    }
}

/// A section's bytes and its address as stated in the file (SVMA).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SectionData {
    pub data: &'static [u8],
    pub svma: u64,
}

/// A function symbol.
#[derive(Debug, Clone)]
struct Symbol {
    svma: u64,
    size: u64,
    name: &'static str,
}

/// One frame of a symbolized address: the function, or a function inlined
/// into it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SymbolizedFrame {
    /// Function name, demangled.
    pub function: Option<String>,
    /// Offset of the address into the function (outermost frame only, from
    /// the symbol table).
    pub offset: Option<u64>,
    /// Source file as recorded in DWARF.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// This frame was inlined into the next one.
    pub inlined: bool,
}

/// An ELF file, mapped.
pub struct ElfFile {
    id: usize,
    path: String,
    data: &'static [u8],
    endian: RunTimeEndian,
    machine: u16,
    address_size: u8,
    segments: Vec<Segment>,
    pub(crate) eh_frame: Option<SectionData>,
    pub(crate) eh_frame_hdr: Option<SectionData>,
    pub(crate) debug_frame: Option<SectionData>,
    pub(crate) text_svma: u64,
    pub(crate) got_svma: u64,
    symbols: Vec<Symbol>,
    by_name: HashMap<&'static str, u64>,
    is_static_exec: bool,
    has_symtab: bool,
    build_id: Option<Vec<u8>>,
    debug_path: Option<String>,
    debug_data: Option<&'static [u8]>,
    /// It or its separate debug file has `.debug_info`.
    has_debug_info: bool,
    /// `DT_NEEDED` and run paths read through PT_DYNAMIC, for a file
    /// without section headers (sstrip'ed).
    phdr_dynamic: Option<(Vec<String>, Vec<String>)>,
    dwarf: OnceCell<Option<addr2line::Context<Slice>>>,
    pub(crate) cfi_index: crate::cfi::FdeIndexes,
    /// Function starts found in the code itself (call and address-taking
    /// instructions), for code without symbols; computed on first use.
    code_starts: OnceCell<Vec<u64>>,
}

impl std::fmt::Debug for ElfFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfFile")
            .field("path", &self.path)
            .field("machine", &self.machine)
            .finish()
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

fn malformed(path: &str, reason: impl std::fmt::Display) -> ElfError {
    ElfError::Malformed {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

fn map_file(path: &str) -> Result<&'static [u8]> {
    let io = |source| ElfError::Io {
        path: path.to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(malformed(path, "the file is empty"));
    }
    // SAFETY: the mapping is private and read-only; a file truncated under us
    // would fault, as it would for the dynamic loader itself.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(Box::leak(Box::new(map)))
}

impl ElfFile {
    /// Maps and parses the ELF file at `path`.
    pub fn open(path: &str) -> Result<ElfFile> {
        let data = map_file(path)?;
        Self::parse(path, data)
    }

    /// Maps and parses the ELF file at `path`, with the separate debug
    /// file at `debug` (fetched from a debuginfod server, say), which must
    /// have the file's build ID; else it is refused with a warning and the
    /// usual places are searched.
    pub fn open_with_debug(path: &str, debug: &str) -> Result<ElfFile> {
        let data = map_file(path)?;
        Self::parse_with(path, data, Some(debug))
    }

    /// Parses an ELF file held in memory for the life of the process.
    pub fn parse(path: &str, data: &'static [u8]) -> Result<ElfFile> {
        Self::parse_with(path, data, None)
    }

    fn parse_with(path: &str, data: &'static [u8], debug: Option<&str>) -> Result<ElfFile> {
        let file = object::File::parse(data).map_err(|e| malformed(path, e))?;
        let (segments, eh_frame_phdr, is_static_exec) = match &file {
            object::File::Elf32(f) => program_headers(f),
            object::File::Elf64(f) => program_headers(f),
            _ => return Err(malformed(path, "not an ELF file")),
        };
        let machine = match &file {
            object::File::Elf32(f) => f.elf_header().e_machine(f.endian()).0,
            object::File::Elf64(f) => f.elf_header().e_machine(f.endian()).0,
            _ => unreachable!("checked above"),
        };
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let address_size = if file.is_64() { 8 } else { 4 };
        let section = |name: &str| {
            let s = file.section_by_name(name)?;
            let data = s.data().ok()?;
            // SAFETY of lifetimes: `data` borrows the leaked mapping.
            (!data.is_empty()).then_some(SectionData {
                data,
                svma: s.address(),
            })
        };
        let mut eh_frame_hdr = section(".eh_frame_hdr");
        let mut eh_frame = section(".eh_frame");
        if eh_frame_hdr.is_none() {
            // Without section headers (sstrip'ed files) PT_GNU_EH_FRAME
            // still locates .eh_frame_hdr, and it locates .eh_frame.
            if let Some((svma, offset, size)) = eh_frame_phdr {
                let range = usize::try_from(offset)
                    .ok()
                    .and_then(|o| Some(o..o.checked_add(usize::try_from(size).ok()?)?));
                if let Some(d) = range.and_then(|r| data.get(r)) {
                    eh_frame_hdr = Some(SectionData { data: d, svma });
                }
            }
        }
        if eh_frame.is_none() {
            if let Some(hdr) = eh_frame_hdr {
                eh_frame = eh_frame_from_hdr(hdr, endian, address_size, &segments, data);
            }
        }
        let mut debug_frame = section(".debug_frame");
        let text_svma = file.section_by_name(".text").map_or(0, |s| s.address());
        let got_svma = file.section_by_name(".got").map_or(0, |s| s.address());

        let has_symtab = file.symbols().next().is_some();
        let mut symbols = Vec::new();
        collect_functions(&file, &mut symbols);
        // MiniDebugInfo: the local functions of a stripped file, in an
        // xz-compressed ELF file of their own.
        if !has_symtab {
            if let Some(mini) = mini_debug_info(path, &file) {
                collect_functions(&mini, &mut symbols);
            }
        }
        // Without section headers (sstrip): the dynamic symbols, needed
        // libraries and build ID through the program headers.
        let mut phdr_dynamic = None;
        let mut build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
        if file.section_by_name(".dynsym").is_none() && file.section_by_name(".symtab").is_none() {
            let (info, id) = match &file {
                object::File::Elf32(f) => (crate::dynamic::read(f), crate::dynamic::build_id(f)),
                object::File::Elf64(f) => (crate::dynamic::read(f), crate::dynamic::build_id(f)),
                _ => (None, None),
            };
            if let Some(info) = info {
                symbols.extend(info.functions.iter().map(|&(name, svma, size)| Symbol {
                    svma,
                    size,
                    name,
                }));
                phdr_dynamic = Some((info.needed, info.run_paths));
            }
            build_id = build_id.or(id);
        }
        // Separate debug info (by build ID) keeps the .symtab that strip
        // removed: local functions such as glibc's __libc_start_call_main.
        let given = debug.filter(|d| {
            let id = map_file(d)
                .ok()
                .and_then(|data| object::File::parse(data).ok())
                .and_then(|f| f.build_id().ok().flatten().map(<[u8]>::to_vec));
            let same = id.is_some() && id == build_id;
            if !same {
                warn!("{d}: not the debug file of {path} (another build ID): not used");
            }
            same
        });
        let debug_path = match given {
            Some(d) => Some(d.to_string()),
            None => find_debug_file(path, &file, build_id.as_deref()),
        };
        let has_debug_info = file.section_by_name(".debug_info").is_some();
        let debug_data = debug_path.as_deref().and_then(|p| match map_file(p) {
            Ok(d) => Some(d),
            Err(e) => {
                warn!("{e}");
                None
            }
        });
        let mut has_debug_info = has_debug_info;
        if let Some(debug) = debug_data {
            if let Ok(debug_file) = object::File::parse(debug) {
                collect_functions(&debug_file, &mut symbols);
                has_debug_info |= debug_file.section_by_name(".debug_info").is_some();
                // A stripped file's .debug_frame went to its debug file.
                if debug_frame.is_none() {
                    debug_frame = debug_file
                        .section_by_name(".debug_frame")
                        .and_then(section_bytes)
                        .filter(|d| !d.is_empty())
                        .map(|data| SectionData { data, svma: 0 });
                }
            }
        }
        // Every name, for lookups by name (aliases included).
        let mut by_name: HashMap<&'static str, u64> = HashMap::with_capacity(symbols.len());
        for s in &symbols {
            by_name.entry(s.name).or_insert(s.svma);
        }
        // One symbol per address for lookups by address: an alias with a
        // size, then the one with the fewest leading underscores (`malloc`
        // rather than `__libc_malloc`).
        let underscores = |n: &str| n.len() - n.trim_start_matches('_').len();
        symbols.sort_by(|a, b| {
            a.svma
                .cmp(&b.svma)
                .then(b.size.cmp(&a.size))
                .then(underscores(a.name).cmp(&underscores(b.name)))
                .then(a.name.cmp(b.name))
        });
        symbols.dedup_by(|b, a| a.svma == b.svma);

        Ok(ElfFile {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path: path.to_string(),
            data,
            endian,
            machine,
            address_size,
            segments,
            eh_frame,
            eh_frame_hdr,
            debug_frame,
            text_svma,
            got_svma,
            symbols,
            by_name,
            is_static_exec,
            has_symtab,
            build_id,
            debug_path,
            debug_data,
            has_debug_info,
            phdr_dynamic,
            dwarf: OnceCell::new(),
            cfi_index: Default::default(),
            code_starts: OnceCell::new(),
        })
    }

    /// A number unique to this file in this process (cache keys).
    pub fn id(&self) -> usize {
        self.id
    }

    /// The path it was opened from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `e_machine`.
    pub fn machine(&self) -> u16 {
        self.machine
    }

    /// Byte order of the file.
    pub fn endian(&self) -> RunTimeEndian {
        self.endian
    }

    /// 4 or 8.
    pub fn address_size(&self) -> u8 {
        self.address_size
    }

    /// True for an executable with no PT_INTERP and no dynamic section: a
    /// statically linked program, which carries its own allocator.
    pub fn is_static_executable(&self) -> bool {
        self.is_static_exec
    }

    /// True when the file has a `.symtab` (it is not stripped).
    pub fn has_symtab(&self) -> bool {
        self.has_symtab
    }

    /// The GNU build ID.
    pub fn build_id(&self) -> Option<&[u8]> {
        self.build_id.as_deref()
    }

    /// True when it or its separate debug file has DWARF debug info
    /// (function names of every function, file and line).
    pub fn has_debug_info(&self) -> bool {
        self.has_debug_info
    }

    /// The separate debug file in use, if any.
    pub fn debug_file(&self) -> Option<&str> {
        self.debug_path.as_deref()
    }

    /// True when the file has any CFI (`.eh_frame` or `.debug_frame`).
    pub fn has_cfi(&self) -> bool {
        self.eh_frame.is_some() || self.debug_frame.is_some()
    }

    /// The address (SVMA) of the defined function `name` in .symtab or .dynsym.
    pub fn find_function(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).copied()
    }

    /// Names of the `DT_NEEDED` libraries, in order.
    pub fn needed_libraries(&self) -> Vec<String> {
        if let Some((needed, _)) = &self.phdr_dynamic {
            return needed.clone();
        }
        let Ok(file) = object::File::parse(self.data) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let strs = |f: &dyn Fn() -> Option<Vec<String>>| f().unwrap_or_default();
        match &file {
            object::File::Elf32(f) => {
                out.extend(strs(&|| dynamic_strings(f, object::elf::DT_NEEDED)))
            }
            object::File::Elf64(f) => {
                out.extend(strs(&|| dynamic_strings(f, object::elf::DT_NEEDED)))
            }
            _ => {}
        }
        out
    }

    /// `DT_RUNPATH` and `DT_RPATH` directories.
    pub fn run_paths(&self) -> Vec<String> {
        if let Some((_, paths)) = &self.phdr_dynamic {
            return paths
                .iter()
                .flat_map(|s| s.split(':'))
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
        }
        let Ok(file) = object::File::parse(self.data) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for tag in [object::elf::DT_RUNPATH, object::elf::DT_RPATH] {
            let found = match &file {
                object::File::Elf32(f) => dynamic_strings(f, tag),
                object::File::Elf64(f) => dynamic_strings(f, tag),
                _ => None,
            };
            for s in found.unwrap_or_default() {
                out.extend(s.split(':').filter(|p| !p.is_empty()).map(str::to_string));
            }
        }
        out
    }

    /// The program interpreter (PT_INTERP), if any.
    pub fn interpreter(&self) -> Option<String> {
        let file = object::File::parse(self.data).ok()?;
        match &file {
            object::File::Elf32(f) => interp(f),
            object::File::Elf64(f) => interp(f),
            _ => None,
        }
    }

    /// Converts an address as stated in the file to its file offset (what a
    /// uprobe is attached at).
    pub fn svma_to_file_offset(&self, svma: u64) -> Option<u64> {
        let s = self.segments.iter().find(|s| s.contains(svma))?;
        (svma - s.vaddr).checked_add(s.offset)
    }

    /// `len` bytes of the file's contents at address `svma` (code, for
    /// prologue analysis).
    pub fn read_at_svma(&self, svma: u64, len: usize) -> Option<&'static [u8]> {
        let off = self.svma_to_file_offset(svma)? as usize;
        self.data.get(off..off.checked_add(len)?)
    }

    /// True when `svma` lies in an executable segment (code a return
    /// address may point into).
    pub fn is_code(&self, svma: u64) -> bool {
        self.segments
            .iter()
            .any(|s| s.executable && s.contains(svma))
    }

    /// Converts a file offset to the address stated in the file.
    pub fn file_offset_to_svma(&self, offset: u64) -> Option<u64> {
        let s = self
            .segments
            .iter()
            .find(|s| offset >= s.offset && offset - s.offset < s.filesz.max(1))?;
        (offset - s.offset).checked_add(s.vaddr)
    }

    /// The loadable segments: (address, file offset, bytes in the file).
    pub fn load_segments(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.segments.iter().map(|s| (s.vaddr, s.offset, s.filesz))
    }

    /// The executable segments: (address, bytes).
    pub(crate) fn code_segments(&self) -> impl Iterator<Item = (u64, &'static [u8])> + '_ {
        self.segments
            .iter()
            .filter(|s| s.executable)
            .filter_map(|s| {
                let len = usize::try_from(s.filesz).ok()?;
                Some((s.vaddr, self.read_at_svma(s.vaddr, len)?))
            })
    }

    /// The sorted function starts `find` sees in the code (computed once per
    /// file): the architecture's sweep for call targets and addresses
    /// taken.
    pub(crate) fn code_starts(&self, find: impl FnOnce(&ElfFile) -> Vec<u64>) -> &[u64] {
        self.code_starts.get_or_init(|| {
            let mut v = find(self);
            v.sort_unstable();
            v.dedup();
            v
        })
    }

    /// The function symbol containing `svma` by its size: its start.
    /// Symbols without a size (assembly labels) are not used, unlike in
    /// [`find_symbol`](Self::find_symbol).
    pub fn find_sized_symbol(&self, svma: u64) -> Option<u64> {
        let i = self.symbols.partition_point(|s| s.svma <= svma);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        (s.size > 0 && svma - s.svma < s.size).then_some(s.svma)
    }

    /// The function symbol containing `svma`: its name and start.
    pub fn find_symbol(&self, svma: u64) -> Option<(&'static str, u64)> {
        let i = self.symbols.partition_point(|s| s.svma <= svma);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        // Symbols without a size (hand-written assembly) get the benefit of
        // the doubt up to the next symbol.
        let end = if s.size > 0 {
            s.svma.saturating_add(s.size)
        } else {
            self.symbols.get(i).map_or(u64::MAX, |n| n.svma)
        };
        (svma < end).then_some((s.name, s.svma))
    }

    fn dwarf(&self) -> Option<&addr2line::Context<Slice>> {
        self.dwarf
            .get_or_init(|| {
                let (path, data) = match (&self.debug_path, self.debug_data) {
                    (Some(p), Some(d)) => (p.as_str(), d),
                    _ => (self.path.as_str(), self.data),
                };
                match load_dwarf(data, self.endian) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        warn!("no line info from {path}: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Function, file and line of `svma`, innermost (inlined) frame first.
    /// `svma` should point into the call instruction for return addresses.
    pub fn symbolize(&self, svma: u64) -> Vec<SymbolizedFrame> {
        let mut out = Vec::new();
        // (No code at the very top of the address space; addr2line would
        // step past it.)
        if let Some(ctx) = self.dwarf().filter(|_| svma < u64::MAX - 1) {
            if let Ok(mut frames) = ctx.find_frames(svma).skip_all_loads() {
                while let Ok(Some(frame)) = frames.next() {
                    let function = frame
                        .function
                        .as_ref()
                        .and_then(|f| f.demangle().ok())
                        .map(|s| s.into_owned());
                    let (file, line) = frame
                        .location
                        .map_or((None, None), |l| (l.file.map(str::to_string), l.line));
                    out.push(SymbolizedFrame {
                        function,
                        offset: None,
                        file,
                        line,
                        inlined: true,
                    });
                }
            }
        }
        let symbol = self.find_symbol(svma);
        if out.is_empty() {
            out.push(SymbolizedFrame::default());
        }
        let last = out.last_mut().expect("not empty");
        last.inlined = false;
        if let Some((name, start)) = symbol {
            // A C function's public name (`malloc`) rather than the one
            // DWARF gives its definition (glibc: `__GI___libc_malloc`);
            // C++ and Rust keep DWARF's (a mangled name demangles with its
            // parameters).
            let mangled = name.starts_with("_Z") || name.starts_with("_R");
            if last.function.is_none() || !mangled {
                last.function = Some(demangle(name));
            }
            last.offset = Some(svma - start);
        }
        out
    }
}

/// Appends the defined function symbols of `file` (.symtab and .dynsym).
fn collect_functions(file: &object::File<'static>, out: &mut Vec<Symbol>) {
    for sym in file.symbols().chain(file.dynamic_symbols()) {
        // Functions, and global labels in code (assembly entry points such
        // as musl's `_start`, which are typeless).
        let code_label = || {
            matches!(
                sym.kind(),
                object::SymbolKind::Unknown | object::SymbolKind::Label
            ) && sym.is_global()
                && sym
                    .section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .is_some_and(|s| s.kind() == object::SectionKind::Text)
        };
        if !(sym.kind() == object::SymbolKind::Text || code_label()) || sym.is_undefined() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() || sym.address() == 0 {
            continue;
        }
        out.push(Symbol {
            svma: sym.address(),
            size: sym.size(),
            name,
        });
    }
}

static DEBUG_DIRS: std::sync::OnceLock<Vec<std::path::PathBuf>> = std::sync::OnceLock::new();

/// Directories searched for separate debug files before `/usr/lib/debug`
/// (`--debug-dir`); set once, before any file is opened.
pub fn set_debug_dirs(dirs: Vec<std::path::PathBuf>) {
    let _ = DEBUG_DIRS.set(dirs);
}

/// The debug directories, the given ones first.
fn debug_dirs() -> Vec<std::path::PathBuf> {
    let mut dirs = DEBUG_DIRS.get().cloned().unwrap_or_default();
    dirs.push("/usr/lib/debug".into());
    dirs
}

/// The ELF file in `.gnu_debugdata` (MiniDebugInfo), inflated and kept
/// for the life of the process like the mapped files.
#[cfg(feature = "minidebuginfo")]
fn mini_debug_info(path: &str, file: &object::File<'static>) -> Option<object::File<'static>> {
    let data = file.section_by_name(".gnu_debugdata")?.data().ok()?;
    let mut out = Vec::new();
    if let Err(e) = lzma_rs::xz_decompress(&mut std::io::Cursor::new(data), &mut out) {
        warn!("{path}: .gnu_debugdata: {e}: not used");
        return None;
    }
    let out: &'static [u8] = Box::leak(out.into_boxed_slice());
    match object::File::parse(out) {
        Ok(f) => {
            debug!("{path}: MiniDebugInfo ({} bytes)", out.len());
            Some(f)
        }
        Err(e) => {
            warn!("{path}: .gnu_debugdata: {e}: not used");
            None
        }
    }
}

#[cfg(not(feature = "minidebuginfo"))]
fn mini_debug_info(path: &str, file: &object::File<'static>) -> Option<object::File<'static>> {
    if file.section_by_name(".gnu_debugdata").is_some() {
        debug!("{path}: .gnu_debugdata not read (built without minidebuginfo)");
    }
    None
}

/// CRC-32 (IEEE 802.3, as `.gnu_debuglink` and zlib use).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// The separate debug file of the file at `path`: by build ID under each
/// debug directory (`.build-id/xx/yyyy.debug`), else by `.gnu_debuglink`
/// next to it, in its `.debug/` and under each debug directory, its CRC
/// checked. A candidate of another build is refused with a warning.
fn find_debug_file(
    path: &str,
    file: &object::File<'static>,
    build_id: Option<&[u8]>,
) -> Option<String> {
    let dirs = debug_dirs();
    if let Some(id) = build_id.filter(|id| id.len() >= 2) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        for dir in &dirs {
            let p = dir.join(format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..]));
            if p.exists() {
                debug!("separate debug info: {}", p.display());
                return Some(p.to_string_lossy().into_owned());
            }
        }
    }
    let (name, crc) = file.gnu_debuglink().ok().flatten()?;
    let name = std::str::from_utf8(name).ok()?;
    // A file name, not a path (a crafted link must not name any file).
    if name.is_empty() || name.contains('/') || name == ".." || name == "." {
        return None;
    }
    let here = std::path::Path::new(path).parent()?;
    let mut candidates = vec![here.join(name), here.join(".debug").join(name)];
    for dir in &dirs {
        candidates.push(dir.join(here.strip_prefix("/").unwrap_or(here)).join(name));
        candidates.push(dir.join(name));
    }
    for c in candidates {
        if c == std::path::Path::new(path) || !c.is_file() {
            continue;
        }
        let Ok(data) = map_file(&c.to_string_lossy()) else {
            continue;
        };
        if crc32(data) != crc {
            // Once per file: a program is opened more than once.
            static WARNED: std::sync::Mutex<Vec<std::path::PathBuf>> =
                std::sync::Mutex::new(Vec::new());
            let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
            if !warned.contains(&c) {
                warn!(
                    "{}: not the debug file of {path} (its CRC differs from the .gnu_debuglink's): not used",
                    c.display()
                );
                warned.push(c);
            }
            continue;
        }
        debug!("separate debug info (debuglink): {}", c.display());
        return Some(c.to_string_lossy().into_owned());
    }
    None
}

fn load_dwarf(
    data: &'static [u8],
    endian: RunTimeEndian,
) -> std::result::Result<Option<addr2line::Context<Slice>>, String> {
    let file = object::File::parse(data).map_err(|e| e.to_string())?;
    if file.section_by_name(".debug_info").is_none() {
        return Ok(None);
    }
    let load = |id: gimli::SectionId| -> std::result::Result<Slice, gimli::Error> {
        let data = file
            .section_by_name(id.name())
            .and_then(section_bytes)
            .unwrap_or(&[]);
        Ok(EndianSlice::new(data, endian))
    };
    let dwarf = gimli::Dwarf::load(load).map_err(|e| e.to_string())?;
    addr2line::Context::from_dwarf(dwarf)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A DWARF section's bytes: compressed ones (`SHF_COMPRESSED`, zlib or
/// zstd, as Debian's debug packages ship them) are inflated once and kept
/// for the life of the process, like the mapped files.
#[cfg(feature = "compressed-debug")]
fn section_bytes(s: object::Section<'static, '_>) -> Option<&'static [u8]> {
    // A compressed section that claims to inflate more than 1024 times
    // (zlib's limit) is corrupt: not inflated (it would reserve that much).
    if let Ok(c) = s.compressed_data() {
        let limit = (c.data.len() as u64)
            .saturating_mul(1032)
            .saturating_add(1 << 16);
        if c.uncompressed_size > limit {
            debug!(
                "{}: claims {} bytes from {} compressed: corrupt, not read",
                s.name().unwrap_or("?"),
                c.uncompressed_size,
                c.data.len()
            );
            return None;
        }
    }
    match s.uncompressed_data() {
        Ok(std::borrow::Cow::Borrowed(b)) => Some(b),
        Ok(std::borrow::Cow::Owned(v)) => Some(Box::leak(v.into_boxed_slice())),
        Err(e) => {
            debug!("{}: {e}", s.name().unwrap_or("?"));
            None
        }
    }
}

/// A DWARF section's bytes; compressed ones are left out (this build has
/// no decompressor: the `compressed-debug` feature).
#[cfg(not(feature = "compressed-debug"))]
fn section_bytes(s: object::Section<'static, '_>) -> Option<&'static [u8]> {
    let compressed = matches!(s.flags(), object::SectionFlags::Elf { sh_flags, .. }
        if sh_flags.0 & object::elf::SHF_COMPRESSED.0 != 0);
    if compressed {
        debug!(
            "{}: compressed (built without compressed-debug)",
            s.name().unwrap_or("?")
        );
        return None;
    }
    s.data().ok()
}

/// Demangles C++ (`_Z...`) and Rust symbol names; others are returned as they are.
pub fn demangle(name: &str) -> String {
    addr2line::demangle_auto(std::borrow::Cow::Borrowed(name), None).into_owned()
}

type PhdrInfo = (Vec<Segment>, Option<(u64, u64, u64)>, bool);

fn program_headers<Elf: FileHeader<Endian = object::Endianness>>(
    f: &object::read::elf::ElfFile<'static, Elf>,
) -> PhdrInfo {
    let e = f.endian();
    let mut segments = Vec::new();
    let mut eh = None;
    let (mut interp, mut dynamic) = (false, false);
    for ph in f.elf_program_headers() {
        match ph.p_type(e) {
            object::elf::PT_LOAD => segments.push(Segment {
                vaddr: ph.p_vaddr(e).into(),
                offset: ph.p_offset(e).into(),
                filesz: ph.p_filesz(e).into(),
                executable: ph.p_flags(e).0 & object::elf::PF_X.0 != 0,
            }),
            object::elf::PT_GNU_EH_FRAME => {
                eh = Some((
                    ph.p_vaddr(e).into(),
                    ph.p_offset(e).into(),
                    ph.p_filesz(e).into(),
                ))
            }
            object::elf::PT_INTERP => interp = true,
            object::elf::PT_DYNAMIC => dynamic = true,
            _ => {}
        }
    }
    let exec = matches!(
        f.elf_header().e_type(e),
        object::elf::ET_EXEC | object::elf::ET_DYN
    );
    // static-pie has PT_DYNAMIC but no PT_INTERP; a shared library has no
    // PT_INTERP either, but has DT_NEEDED or a soname: those are told apart
    // by the caller with needed_libraries().
    let is_static =
        exec && !interp && (!dynamic || f.elf_header().e_type(e) == object::elf::ET_DYN);
    (segments, eh, is_static)
}

fn interp<Elf: FileHeader<Endian = object::Endianness>>(
    f: &object::read::elf::ElfFile<'static, Elf>,
) -> Option<String> {
    let e = f.endian();
    let data = f.data();
    for ph in f.elf_program_headers() {
        if ph.p_type(e) == object::elf::PT_INTERP {
            let bytes = ph.data(e, data).ok()?;
            let s = bytes.split(|&b| b == 0).next()?;
            return std::str::from_utf8(s).ok().map(str::to_string);
        }
    }
    None
}

fn dynamic_strings<Elf: FileHeader<Endian = object::Endianness>>(
    f: &object::read::elf::ElfFile<'static, Elf>,
    tag: object::elf::DynamicTag,
) -> Option<Vec<String>> {
    use object::read::elf::Dyn;
    let e = f.endian();
    let data = f.data();
    let sections = f.elf_section_table();
    // `dynamic` returns the table and the index of its string table.
    let (dynamic, strtab) = sections.dynamic(e, data).ok()??;
    let strings = sections.strings(e, data, strtab).ok()?;
    let mut out = Vec::new();
    for d in dynamic {
        if d.d_tag(e) == tag {
            let s = d.string(e, strings).ok()?;
            out.push(String::from_utf8_lossy(s).into_owned());
        }
    }
    Some(out)
}

/// Finds .eh_frame from .eh_frame_hdr's `eh_frame_ptr` when the file has no
/// section headers; it runs to the end of its PT_LOAD segment.
fn eh_frame_from_hdr(
    hdr: SectionData,
    endian: RunTimeEndian,
    address_size: u8,
    segments: &[Segment],
    data: &'static [u8],
) -> Option<SectionData> {
    let bases = gimli::BaseAddresses::default().set_eh_frame_hdr(hdr.svma);
    let parsed = gimli::EhFrameHdr::new(hdr.data, endian)
        .parse(&bases, address_size)
        .ok()?;
    let svma = match parsed.eh_frame_ptr() {
        gimli::Pointer::Direct(a) => a,
        gimli::Pointer::Indirect(_) => return None,
    };
    let seg = segments.iter().find(|s| s.contains(svma))?;
    let start = usize::try_from((svma - seg.vaddr).checked_add(seg.offset)?).ok()?;
    let end = usize::try_from(seg.offset.checked_add(seg.filesz)?).ok()?;
    Some(SectionData {
        data: data.get(start..end)?,
        svma,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC-32 check value, and the empty input.
    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
