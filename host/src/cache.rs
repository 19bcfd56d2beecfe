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
}

/// Hex SHA-256 of a component's bytes.
pub(crate) fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

impl ComponentCache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        ComponentCache { dir }
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
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
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
