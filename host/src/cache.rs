//! Compiled components cached on disk by content hash, so a fleet of runners starting
//! together compiles each component once.

use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a loaded component's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Read from the disk cache; nothing was compiled.
    Hit,
    /// Compiled now, and written to the cache.
    Compiled,
    /// Compiled now; no cache is configured.
    Uncached,
}

/// A directory of compiled components, keyed by the component's SHA-256 and the engine's
/// compilation settings.
#[derive(Debug, Clone)]
pub(crate) struct ComponentCache {
    dir: PathBuf,
    /// Bytes of compiled code kept; the least recently used go first past it.
    max_bytes: u64,
}

/// The default bound of the compiled-component cache: 2 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

/// Hex SHA-256 of a component's bytes.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

impl ComponentCache {
    pub(crate) fn new(dir: PathBuf, max_bytes: u64) -> Self {
        ComponentCache { dir, max_bytes }
    }

    /// Deletes the least recently used artifacts (and their locks) until the cache holds at
    /// most `max_bytes`, sparing `keep`. Best effort: another process may be doing the same.
    fn prune(&self, keep: &Path) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut artifacts: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = artifacts.iter().map(|(_, len, _)| *len).sum();
        artifacts.sort();
        for (_, len, path) in artifacts {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if fs::remove_file(&path).is_ok() {
                let _ = fs::remove_file(path.with_extension("lock"));
                total = total.saturating_sub(len);
                tracing::debug!(path = %path.display(), "evicted a cached component");
            }
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the compiled component, from the cache when it has it, else compiled now and
    /// stored. A file lock makes concurrent processes wait for one compilation.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), CacheError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { what, path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let mut settings = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut settings);
        let stem = format!("{digest}-{:016x}", settings.finish());
        let artifact = self.dir.join(format!("{stem}.cwasm"));
        let lock_path = self.dir.join(format!("{stem}.lock"));

        let lock = File::create(&lock_path).map_err(io("create", &lock_path))?;
        lock.lock().map_err(io("lock", &lock_path))?;

        if artifact.exists() {
            // SAFETY: the artifact was written by `Component::serialize` of this same engine
            // configuration (the file name carries its compatibility hash), into a directory
            // only Tessera writes; wasmtime still checks its header before use.
            match unsafe { Component::deserialize_file(engine, &artifact) } {
                Ok(component) => {
                    // Recently used: the last to be evicted.
                    let _ = File::options()
                        .write(true)
                        .open(&artifact)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(e) => tracing::warn!(
                    path = %artifact.display(),
                    "discarding unreadable cached component: {e}"
                ),
            }
        }
        let component = Component::new(engine, bytes).map_err(CacheError::Compile)?;
        let serialized = component.serialize().map_err(CacheError::Compile)?;
        let tmp = self.dir.join(format!("{stem}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&serialized)?;
            f.sync_all()?;
            fs::rename(&tmp, &artifact)
        };
        write().map_err(io("write", &artifact))?;
        self.prune(&artifact);
        Ok((component, CacheOutcome::Compiled))
    }
}

/// Why the cache could not serve a component.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error("could not {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:#}")]
    Compile(wasmtime::Error),
}

/// The default cache directory: `$TESSERA_CACHE_DIR`, else `$XDG_CACHE_HOME/tessera/components`,
/// else `$HOME/.cache/tessera/components`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TESSERA_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("tessera").join("components"))
}
