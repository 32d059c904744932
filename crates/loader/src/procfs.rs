//! Where a traced process's files are, seen from memleak. The paths in
//! `/proc/PID/maps` and `/proc/PID/exe` are as the kernel can name them from
//! memleak's root; a process in a container (its own mount namespace, a
//! chroot, pivot_root) may map files memleak's root does not reach, named
//! by the container's paths. Each path is checked against the device and
//! inode the kernel gives for it, and else opened through `/proc/PID/root`
//! or, for a file deleted or replaced since, `/proc/PID/map_files`.
//! Reports show the paths as the process names them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The root of process `pid`, for the paths it names.
pub fn root_of(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root"))
}

/// `/proc/PID/root` when the process's root is not memleak's (a
/// container, a chroot), for finding files it has not mapped yet.
pub fn own_root(pid: i32) -> Option<PathBuf> {
    let theirs = std::fs::metadata(format!("/proc/{pid}/root/")).ok()?;
    let ours = std::fs::metadata("/").ok()?;
    (theirs.dev() != ours.dev() || theirs.ino() != ours.ino()).then(|| root_of(pid))
}

/// The PID of `pid` in its own PID namespace, when it has one (a
/// container): the last of /proc/PID/status's `NSpid`.
pub fn ns_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ids: Vec<i32> = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    (ids.len() > 1).then(|| *ids.last().expect("more than one"))
}

/// True when `path` is the file with device `dev` and inode `ino`.
fn is_file(path: &Path, dev: u64, ino: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// `path`, as the process names it, under `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The file with device `dev` and inode `ino` under `root`, at `path` or at
/// a tail of it: the kernel names a file on a mount memleak's root does not
/// reach by its path from the mount's own root (a container's root mounted
/// at /var/lib/x/rootfs shows its /lib/libc.so.6 as
/// /var/lib/x/rootfs/lib/libc.so.6), which the process's root may cut.
fn find_under(root: &Path, path: &Path, dev: u64, ino: u64) -> Option<PathBuf> {
    let text = path.to_str()?;
    let starts = std::iter::once(0).chain(text.match_indices('/').map(|(i, _)| i).skip(1));
    starts
        .map(|i| under(root, Path::new(&text[i..])))
        .find(|p| is_file(p, dev, ino))
}

/// The executable of process `pid` (named `exe`, as /proc/PID/exe reads),
/// at a path memleak can open.
pub fn exe(pid: i32, exe: &Path) -> PathBuf {
    let Ok(m) = std::fs::metadata(format!("/proc/{pid}/exe")) else {
        return exe.to_path_buf();
    };
    if is_file(exe, m.dev(), m.ino()) {
        return exe.to_path_buf();
    }
    if let Some(rooted) = find_under(&root_of(pid), exe, m.dev(), m.ino()) {
        log::info!(
            "process {pid} runs {} from a root of its own (a container): read through {}",
            exe.display(),
            rooted.display()
        );
        return rooted;
    }
    PathBuf::from(format!("/proc/{pid}/exe"))
}

/// `/proc/PID/maps` with every file path one memleak can open.
pub fn maps(pid: i32) -> std::io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(rewrite_maps(&text, &root_of(pid), pid))
}

/// The device number of a maps line's `major:minor` (hex).
fn parse_dev(field: &str) -> Option<u64> {
    let (major, minor) = field.split_once(':')?;
    let (major, minor) = (
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    Some(libc::makedev(major, minor))
}

/// Each file of `text` (maps) at a path memleak can open: as given when
/// that is the file, else under `root`, else its `map_files` link.
fn rewrite_maps(text: &str, root: &Path, pid: i32) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let fields: Vec<&str> = line.splitn(6, ' ').collect();
        let path_at = line
            .find(" /")
            .filter(|&at| line[..at].split_whitespace().count() == 5);
        let (Some(at), [range, _, _, dev, ino, ..]) = (path_at, fields.as_slice()) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let name = &line[at + 1..];
        // A file deleted (or replaced) since it was mapped: a daemon whose
        // libc was upgraded under it.
        let path = Path::new(name.strip_suffix(" (deleted)").unwrap_or(name));
        let opened = match (parse_dev(dev), ino.parse::<u64>()) {
            (Some(dev), Ok(ino)) if !is_file(path, dev, ino) => find_under(root, path, dev, ino)
                .unwrap_or_else(|| {
                    let link = PathBuf::from(format!("/proc/{pid}/map_files/{range}"));
                    name_of(&link, name);
                    link
                }),
            _ => path.to_path_buf(),
        };
        out.push_str(&line[..=at]);
        out.push_str(&opened.to_string_lossy());
        out.push('\n');
    }
    out
}

/// The names of the files opened through `/proc/PID/map_files`, as the
/// process's maps named them.
fn map_files_names() -> std::sync::MutexGuard<'static, std::collections::HashMap<String, String>> {
    static NAMES: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        std::sync::OnceLock::new();
    NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Remembers that `link` (a `map_files` link) is the file the process
/// names `name` (`/usr/lib/libc.so.6 (deleted)`).
fn name_of(link: &Path, name: &str) {
    map_files_names().insert(link.to_string_lossy().into_owned(), name.to_string());
}

/// The path of a file as the process named it, without a ` (deleted)`
/// mark: what its name says (a soname) even when it is opened through
/// `/proc/PID/map_files`.
pub fn named(path: &str) -> String {
    let shown = shown(path);
    shown
        .strip_suffix(" (deleted)")
        .map_or(shown.clone(), str::to_string)
}

/// A path memleak opened shown as the process names it (without the
/// `/proc/PID/root` it was opened through: a forked child's files may have
/// been opened through its parent's; a file opened through
/// `/proc/PID/map_files` by the name the maps gave it).
pub fn shown(path: &str) -> String {
    if let Some(name) = map_files_names().get(path) {
        return name.clone();
    }
    let rooted = path.strip_prefix("/proc/").and_then(|rest| {
        let (pid, rest) = rest.split_once('/')?;
        let rest = rest.strip_prefix("root")?;
        (pid.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with('/')).then_some(rest)
    });
    rooted.unwrap_or(path).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_a_root_and_back() {
        let root = root_of(42);
        assert_eq!(
            under(&root, Path::new("/app/leaky")),
            Path::new("/proc/42/root/app/leaky")
        );
        assert_eq!(shown("/proc/42/root/lib/libc.so.6"), "/lib/libc.so.6");
        assert_eq!(shown("/usr/lib/x"), "/usr/lib/x");
        assert_eq!(shown("/proc/42/map_files/1-2"), "/proc/42/map_files/1-2");
        assert_eq!(shown("/proc/self/root/x"), "/proc/self/root/x");
    }

    /// A path that is the file stays; one that is not goes under the root
    /// or to its map_files link; other lines stay as they are.
    #[test]
    fn maps_paths_that_are_not_the_file_move() {
        let me = std::env::current_exe().unwrap();
        let m = std::fs::metadata(&me).unwrap();
        let dev = format!("{:x}:{:02x}", libc::major(m.dev()), libc::minor(m.dev()));
        let text = format!(
            "55d0c0a00000-55d0c0a01000 r--p 00000000 {dev} {}                  {}\n\
             55d0c0a01000-55d0c0a02000 r-xp 00001000 {dev} {}                  /app/my prog\n\
             7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]\n\
             7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n",
            m.ino(),
            me.display(),
            m.ino()
        );
        let out = rewrite_maps(&text, Path::new("/nonexistent-root"), 42);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].ends_with(&format!(" {}", me.display())),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(" /proc/42/map_files/55d0c0a01000-55d0c0a02000"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], text.lines().nth(2).unwrap());
        assert_eq!(lines[3], text.lines().nth(3).unwrap());
        // The root the process names its files from: the file is there.
        let dir = me.parent().unwrap();
        let name = me.file_name().unwrap().to_string_lossy();
        let text = format!(
            "55d0c0a00000-55d0c0a01000 r--p 00000000 {dev} {} /{name}\n",
            m.ino()
        );
        let out = rewrite_maps(&text, dir, 42);
        assert!(
            out.trim_end().ends_with(&format!(" {}", me.display())),
            "{out}"
        );
    }
}
