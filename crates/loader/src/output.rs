//! Where the reports go: stdout (`-p`, as BCC's memleak), stderr (a traced
//! command keeps its stdout to itself), or the file `--output` names.
//!
//! A regular file is rewritten whole for each report: the reports so far
//! are written to a temporary file beside it, which is then renamed over
//! it. Whoever opens the file sees complete reports only, never half of one
//! (an append could be read half done). A FIFO, a character device or a
//! terminal cannot be renamed over: each report is one `write` to it.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

/// What became of a report.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// The reader went away (a closed pipe): no report can be written any more.
    Closed,
}

pub enum Output {
    Stdout,
    Stderr,
    /// A regular file, replaced whole by each report.
    Replace {
        path: PathBuf,
        /// Every report written so far.
        written: Vec<u8>,
        /// Each report is a document of its own (folded, svg, pprof): the
        /// periodic ones go to `FILE.1`, `FILE.2`, ..., the final to FILE.
        documents: bool,
    },
    /// A FIFO or a device: one write per report.
    Stream {
        path: PathBuf,
        file: File,
    },
}

impl Output {
    /// The stream or file for `--output` (`-` is stdout); without it,
    /// stdout or stderr as `default_stderr` says. The file is created (or
    /// truncated) now, so that a bad path fails before tracing starts.
    pub fn open(path: Option<&Path>, default_stderr: bool, documents: bool) -> Result<Output> {
        let Some(path) = path else {
            return Ok(if default_stderr {
                Output::Stderr
            } else {
                Output::Stdout
            });
        };
        if path == Path::new("-") {
            return Ok(Output::Stdout);
        }
        let err = |e: std::io::Error| anyhow!("--output {}: {e}", path.display());
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                return Err(anyhow!("--output {}: is a directory", path.display()))
            }
            Ok(m) if !m.is_file() => {
                let ft = m.file_type();
                if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
                    let file = OpenOptions::new().append(true).open(path).map_err(err)?;
                    return Ok(Output::Stream {
                        path: path.to_path_buf(),
                        file,
                    });
                }
            }
            _ => {}
        }
        // A symbolic link keeps pointing where it did: the file it names is
        // the one replaced.
        let real = match std::fs::canonicalize(path) {
            Ok(p) => p,
            // A link to a file not made yet: the file it names.
            Err(_) => match std::fs::read_link(path) {
                Ok(target) => path.parent().unwrap_or(Path::new("")).join(target),
                Err(_) => path.to_path_buf(),
            },
        };
        // Created empty the way every report will be written: a directory
        // where the temporary file cannot be made fails now, not later.
        replace(&real, b"", false).map_err(err)?;
        Ok(Output::Replace {
            path: real,
            written: Vec::new(),
            documents,
        })
    }

    /// Writes one report; `periodic` is its number among the periodic
    /// ones (None for the final report).
    pub fn write(&mut self, text: &[u8], periodic: Option<u64>) -> Result<Written> {
        let closed = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(Written::Closed),
            Err(e) => Err(e),
            Ok(()) => Ok(Written::Done),
        };
        match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                closed(out.write_all(text).and_then(|()| out.flush()))
                    .context("writing the report to stdout")
            }
            Output::Stderr => {
                let mut out = std::io::stderr().lock();
                closed(out.write_all(text).and_then(|()| out.flush()))
                    .context("writing the report to stderr")
            }
            Output::Stream { path, file } => closed(file.write_all(text))
                .with_context(|| format!("writing the report to {}", path.display())),
            Output::Replace {
                path,
                written,
                documents: true,
            } => {
                let path = match periodic {
                    Some(n) => {
                        let mut name = path.file_name().unwrap_or_default().to_os_string();
                        name.push(format!(".{n}"));
                        path.with_file_name(name)
                    }
                    None => path.clone(),
                };
                let _ = written;
                replace(&path, text, false)
                    .with_context(|| format!("writing the report to {}", path.display()))?;
                Ok(Written::Done)
            }
            Output::Replace { path, written, .. } => {
                written.extend_from_slice(text);
                replace(path, written, false)
                    .with_context(|| format!("writing the report to {}", path.display()))?;
                Ok(Written::Done)
            }
        }
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path` (atomic within a file system); with `sync`, the data reaches the
/// disk before the rename (a power cut leaves the old file or the new).
pub fn replace(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".memleak-{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
