//! Debug files and executables from debuginfod servers, by build ID
//! (`GET URL/buildid/HEX/debuginfo` and `.../executable`), kept in the
//! cache elfutils' clients use (`$DEBUGINFOD_CACHE_PATH`, else
//! `$XDG_CACHE_HOME/debuginfod_client`, else `~/.cache/debuginfod_client`;
//! `HEX/debuginfo`, `HEX/executable`), so that gdb, perf and memleak share
//! what they fetched. A file whose build ID is not the one asked for is
//! refused with a warning, never used.

use super::hex;
use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use log::{debug, info, warn};

/// What to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The separate debug file.
    DebugInfo,
    /// The executable or library itself.
    Executable,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::DebugInfo => "debuginfo",
            Kind::Executable => "executable",
        }
    }
}

pub struct Debuginfod {
    urls: Vec<String>,
    cache: PathBuf,
    #[cfg(feature = "debuginfod")]
    agent: ureq::Agent,
    /// Servers that did not answer: not asked again in this run.
    down: RefCell<HashSet<String>>,
}

/// The cache directory (see the module's documentation).
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("DEBUGINFOD_CACHE_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("debuginfod_client")
}

/// The servers of `--debuginfod` and `$DEBUGINFOD_URLS` (blank-separated),
/// in that order; a build without the client ignores the variable.
pub fn urls(given: &[String]) -> Vec<String> {
    let mut urls: Vec<String> = given.to_vec();
    if let Some(env) = std::env::var("DEBUGINFOD_URLS")
        .ok()
        .filter(|_| cfg!(feature = "debuginfod"))
    {
        urls.extend(env.split_whitespace().map(str::to_string));
    }
    let mut seen = HashSet::new();
    urls.retain(|u| seen.insert(u.clone()));
    for u in &mut urls {
        while u.ends_with('/') {
            u.pop();
        }
    }
    urls
}

impl Debuginfod {
    /// A client of `urls` (none: no client).
    pub fn new(urls: Vec<String>) -> anyhow::Result<Option<Debuginfod>> {
        if urls.is_empty() {
            return Ok(None);
        }
        let cache = cache_dir();
        #[cfg(not(feature = "debuginfod"))]
        {
            let _ = cache;
            anyhow::bail!(
                "this memleak was built without debuginfod (the `debuginfod` cargo feature): \
                 unset DEBUGINFOD_URLS or drop --debuginfod"
            );
        }
        #[cfg(feature = "debuginfod")]
        {
            use std::time::Duration;
            let config = ureq::Agent::config_builder()
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_global(Some(Duration::from_secs(300)))
                .build();
            Ok(Some(Debuginfod {
                urls,
                cache,
                agent: config.into(),
                down: RefCell::new(HashSet::new()),
            }))
        }
    }

    /// The file of `kind` with build ID `id`: from the cache, else from
    /// the first server that has it (stored in the cache).
    pub fn fetch(&self, id: &[u8], kind: Kind) -> Option<PathBuf> {
        if id.is_empty() {
            return None;
        }
        let hex = hex(id);
        let path = self.cache.join(&hex).join(kind.name());
        if path.is_file() && has_build_id(&path, id) {
            debug!("debuginfod cache: {}", path.display());
            return Some(path);
        }
        for url in &self.urls {
            if self.down.borrow().contains(url) {
                continue;
            }
            match self.download(url, &hex, kind, &path) {
                Ok(true) if has_build_id(&path, id) => {
                    info!("{url}: {} of {hex}", kind.name());
                    return Some(path);
                }
                Ok(true) => {
                    warn!(
                        "{url} sent a {} for build ID {hex} that has another build ID: refused",
                        kind.name()
                    );
                    let _ = std::fs::remove_file(&path);
                }
                Ok(false) => debug!("{url}: no {} of {hex}", kind.name()),
                Err(e) => {
                    warn!("debuginfod server {url}: {e}; not asked again in this run");
                    self.down.borrow_mut().insert(url.clone());
                }
            }
        }
        None
    }

    /// GETs the file into `to`: Ok(false) when the server has none (404).
    #[cfg(feature = "debuginfod")]
    fn download(&self, url: &str, hex: &str, kind: Kind, to: &Path) -> anyhow::Result<bool> {
        use anyhow::Context as _;
        let full = format!("{url}/buildid/{hex}/{}", kind.name());
        let response = match self.agent.get(&full).call() {
            Ok(r) => r,
            Err(ureq::Error::StatusCode(404)) => return Ok(false),
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        };
        let dir = to.parent().expect("a file in the cache");
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        let tmp = dir.join(format!(".{}.{}.tmp", kind.name(), std::process::id()));
        let result = (|| -> anyhow::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            std::io::copy(&mut response.into_body().into_reader(), &mut file)
                .with_context(|| format!("reading {full}"))?;
            std::fs::rename(&tmp, to)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| true)
    }

    #[cfg(not(feature = "debuginfod"))]
    fn download(&self, _: &str, _: &str, _: Kind, _: &Path) -> anyhow::Result<bool> {
        unreachable!("no client without the feature")
    }
}

/// True when the ELF file at `path` has build ID `id`.
fn has_build_id(path: &Path, id: &[u8]) -> bool {
    use object::Object as _;
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    object::File::parse(&*data)
        .ok()
        .and_then(|f| f.build_id().ok().flatten().map(|b| b == id))
        .unwrap_or(false)
}
