//! Files stripped of their section headers (`scripts/sstrip.py`, as
//! OpenWrt's sstrip): what the loader maps is found through the program
//! headers alone, and equals what the sections give.

use std::path::{Path, PathBuf};
use std::process::Command;

use memleak_unwind_arch::ElfFile;

/// `path` stripped of its section headers, into a temporary file.
fn sstripped(path: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!(
        "sstrip-test-{}-{}",
        std::process::id(),
        path.file_name().unwrap().to_string_lossy()
    ));
    let status = Command::new("python3")
        .arg(root.join("scripts/sstrip.py"))
        .arg(path)
        .arg(&out)
        .status()
        .expect("python3 runs scripts/sstrip.py");
    assert!(status.success());
    out
}

/// This test program (on the host: dynamic, with DT_NEEDED and a build
/// ID; the cross builds are static) and the C library it maps, if any
/// (dynamic symbols only on Debian): names, needed libraries, build ID and
/// CFI are the same with and without section headers.
#[test]
fn program_headers_give_what_sections_give() {
    let libc = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so") || p.contains("/libc-"))
        .map(PathBuf::from);
    let me = std::env::current_exe().unwrap();
    if cfg!(all(target_arch = "x86_64", target_env = "gnu")) {
        assert!(
            libc.is_some(),
            "the host build runs with a dynamic C library"
        );
    }
    let libc_names: &[&str] = &[
        "malloc",
        "free",
        "calloc",
        "realloc",
        "posix_memalign",
        "qsort",
        "strdup",
    ];
    let mut files: Vec<(PathBuf, &[&str])> = vec![(me, &[])];
    files.extend(libc.map(|libc| (libc, libc_names)));
    for (path, names) in files {
        let whole = ElfFile::open(path.to_str().unwrap()).unwrap();
        let stripped_path = sstripped(&path);
        let stripped = ElfFile::open(stripped_path.to_str().unwrap()).unwrap();
        let _ = std::fs::remove_file(&stripped_path);
        for name in names {
            assert!(
                whole.find_function(name).is_some(),
                "{name} in {}",
                path.display()
            );
            assert_eq!(
                stripped.find_function(name),
                whole.find_function(name),
                "{name} of {}",
                path.display()
            );
        }
        assert_eq!(
            stripped.needed_libraries(),
            whole.needed_libraries(),
            "{}",
            path.display()
        );
        assert_eq!(
            stripped.run_paths(),
            whole.run_paths(),
            "{}",
            path.display()
        );
        // The host's toolchain writes build IDs (zig, for the cross
        // builds, does not): then the stripped file must give the same.
        if cfg!(all(target_arch = "x86_64", target_env = "gnu")) {
            assert!(
                whole.build_id().is_some(),
                "{} has a build ID",
                path.display()
            );
        }
        assert_eq!(stripped.build_id(), whole.build_id(), "{}", path.display());
        assert_eq!(stripped.has_cfi(), whole.has_cfi(), "{}", path.display());
        assert_eq!(
            stripped.interpreter(),
            whole.interpreter(),
            "{}",
            path.display()
        );
    }
}
