//! Loading task components: validation, compilation through the cache, and their task types.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_api::TaskIdentifier;
use wasmtime::Store;
use wasmtime::component::Component;

use crate::bindings::{WorldPre, v1, v2};
use crate::cache::{CacheOutcome, digest};
use crate::limits::Limits;
use crate::log::DiscardLogs;
use crate::sandbox::Host;

/// A loaded, compiled task component, ready to run attempts.
pub struct TaskComponent {
    pub(crate) path: PathBuf,
    pub(crate) pre: WorldPre<crate::state::AttemptState>,
    identifiers: Vec<TaskIdentifier>,
    digest: String,
    size: u64,
    cache: CacheOutcome,
}

impl std::fmt::Debug for TaskComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskComponent")
            .field("path", &self.path)
            .field("identifiers", &self.identifiers)
            .field("digest", &self.digest)
            .field("cache", &self.cache)
            .finish()
    }
}

impl TaskComponent {
    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The task types it exports.
    pub fn identifiers(&self) -> &[TaskIdentifier] {
        &self.identifiers
    }

    /// Hex SHA-256 of the component file.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Bytes of the component file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The `tessera:task` contract it was built against: `0.2.0` or `0.1.0`.
    pub fn contract(&self) -> &'static str {
        self.pre.version()
    }

    /// Whether its compiled code came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// The exported task type that can run a task submitted as `task`: same name and major
    /// version, minor version not older than the task's (the newest such, if several).
    pub fn resolve(&self, task: &TaskIdentifier) -> Option<&TaskIdentifier> {
        self.identifiers
            .iter()
            .filter(|own| own.can_run(task))
            .max_by_key(|own| own.version)
    }
}

/// Why a component file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("could not read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a Tessera task component; the reason says what it is instead.
    #[error("{} is not a Tessera task component: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The compiled-code cache failed.
    #[error("could not compile {}: {reason}", path.display())]
    Compile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Two components implement the same task type (same name and major version).
    #[error(
        "{} and {} both implement {identifier}: give each task type to one component",
        first.display(),
        second.display()
    )]
    Conflict {
        /// The task type.
        identifier: TaskIdentifier,
        /// The component loaded first.
        first: PathBuf,
        /// The other one.
        second: PathBuf,
    },
}

const WASM_MAGIC: &[u8] = b"\0asm";
/// Longest a component may take to list its task types when it is loaded.
pub const LOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
const BUILD_HINT: &str = "build it with the tessera-guest SDK: \
    cargo build --release --target wasm32-wasip2 (or cargo component build --release)";

fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(format!("it is not a WebAssembly file; {BUILD_HINT}"));
    }
    // A component's layer field (bytes 6..8) is 1; a core module's is 0.
    if bytes[6..8] == [0, 0] {
        return Err(format!(
            "it is a core WebAssembly module, not a component (was it built for wasm32-unknown-unknown \
             or wasm32-wasip1 without an adapter?); {BUILD_HINT}"
        ));
    }
    Ok(())
}

impl Host {
    /// Loads a component file: checks it, compiles it (or reads the cache), links it against
    /// the host and asks it for its task types.
    pub async fn load(&self, path: impl AsRef<Path>) -> Result<Arc<TaskComponent>, LoadError> {
        self.load_with(path, &Limits::default()).await
    }

    /// Loads a component, asking for its task types under `limits`' memory limit and a
    /// deadline of at most [`LOAD_DEADLINE`].
    pub async fn load_with(
        &self,
        path: impl AsRef<Path>,
        limits: &Limits,
    ) -> Result<Arc<TaskComponent>, LoadError> {
        let path = path.as_ref().to_path_buf();
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            })?;
        self.load_bytes(path, bytes, limits).await
    }

    /// Loads a component from its bytes (`label` names it in errors: a file, a digest), as
    /// [`Host::load_with`] does.
    pub async fn load_bytes(
        &self,
        label: impl Into<PathBuf>,
        bytes: Vec<u8>,
        limits: &Limits,
    ) -> Result<Arc<TaskComponent>, LoadError> {
        let path = label.into();
        let invalid = |reason: String| LoadError::Invalid {
            path: path.clone(),
            reason,
        };
        check_header(&bytes).map_err(invalid)?;
        let digest = digest(&bytes);
        let size = bytes.len() as u64;

        let engine = self.engine.clone();
        let cache = self.cache.clone();
        let key = digest.clone();
        let compiled = tokio::task::spawn_blocking(move || match cache {
            Some(cache) => cache
                .load_or_compile(&engine, &key, &bytes)
                .map_err(|e| e.to_string()),
            None => Component::new(&engine, &bytes)
                .map(|c| (c, CacheOutcome::Uncached))
                .map_err(|e| format!("{e:#}")),
        })
        .await
        .map_err(|e| LoadError::Compile {
            path: path.clone(),
            reason: format!("compilation was interrupted: {e}"),
        })?;
        let (component, cache) = compiled.map_err(|reason| {
            if reason.contains("failed to parse WebAssembly") || reason.contains("invalid") {
                invalid(format!("it does not validate: {reason}"))
            } else {
                LoadError::Compile {
                    path: path.clone(),
                    reason,
                }
            }
        })?;

        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            invalid(format!(
                "it imports something the Tessera host does not provide ({e:#}); \
                 task components may import only tessera:task/host and WASI 0.2"
            ))
        })?;
        let pre = match v2::TaskComponentPre::new(instance_pre.clone()) {
            Ok(pre) => WorldPre::V2(pre),
            Err(v2_error) => match v1::TaskComponentPre::new(instance_pre) {
                Ok(pre) => WorldPre::V1(pre),
                Err(_) => {
                    return Err(invalid(format!(
                        "it does not export tessera:task/tasks@0.2.0 or @0.1.0 ({v2_error:#}); \
                         {BUILD_HINT}"
                    )));
                }
            },
        };

        let identifiers = self.task_types(&pre, limits).await.map_err(invalid)?;
        Ok(Arc::new(TaskComponent {
            path,
            pre,
            identifiers,
            digest,
            size,
            cache,
        }))
    }

    /// Loads several components that together serve a runner: each task type (name and major
    /// version) must come from one of them.
    pub async fn load_all(
        &self,
        paths: &[PathBuf],
        limits: &Limits,
    ) -> Result<Vec<Arc<TaskComponent>>, LoadError> {
        let mut loaded: Vec<Arc<TaskComponent>> = Vec::with_capacity(paths.len());
        for path in paths {
            let c = self.load_with(path, limits).await?;
            for id in c.identifiers() {
                if let Some(other) = loaded.iter().find(|o| {
                    o.identifiers()
                        .iter()
                        .any(|i| i.name == id.name && i.version.major == id.version.major)
                }) {
                    return Err(LoadError::Conflict {
                        identifier: id.clone(),
                        first: other.path().to_path_buf(),
                        second: path.clone(),
                    });
                }
            }
            loaded.push(c);
        }
        Ok(loaded)
    }

    /// Instantiates once in a scratch store to ask for the exported task types.
    async fn task_types(
        &self,
        pre: &WorldPre<crate::state::AttemptState>,
        limits: &Limits,
    ) -> Result<Vec<TaskIdentifier>, String> {
        let limits = Limits {
            deadline: limits.deadline.min(LOAD_DEADLINE),
            ..limits.clone()
        };
        let (state, _streams) = self.new_state(
            &limits,
            Arc::new(DiscardLogs),
            "load".into(),
            "load".into(),
            0,
            Arc::new(crate::data::NoJobData),
        );
        let mut store = Store::new(&self.engine, state);
        self.configure_store(&mut store, &limits);
        let listed = tokio::time::timeout(limits.deadline, async {
            let names: Vec<(String, String)> = match pre {
                WorldPre::V2(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let ids = instance
                        .tessera_task_tasks()
                        .call_task_types(&mut store)
                        .await?;
                    ids.into_iter().map(|i| (i.name, i.version)).collect()
                }
                WorldPre::V1(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let ids = instance
                        .tessera_task_tasks()
                        .call_task_types(&mut store)
                        .await?;
                    ids.into_iter().map(|i| (i.name, i.version)).collect()
                }
            };
            Ok::<_, wasmtime::Error>(names)
        })
        .await
        .map_err(|_| {
            format!(
                "it did not list its task types within {} (task-types must only return a list)",
                crate::limits::human_duration(limits.deadline)
            )
        })?;
        let listed: Vec<(String, String)> = listed.map_err(|e| {
            if store.data().limiter.refused.is_some() {
                format!(
                    "listing its task types needed more than the memory limit of {}",
                    crate::limits::human_bytes(limits.memory_bytes)
                )
            } else {
                format!("listing its task types failed: {e:#}")
            }
        })?;
        if listed.is_empty() {
            return Err(
                "it exports no task types; register them with tessera_guest::export_tasks!".into(),
            );
        }
        let mut ids = Vec::with_capacity(listed.len());
        for (name, version) in listed {
            let parsed = TaskIdentifier::parse(&name, &version)
                .map_err(|e| format!("it exports a bad task identifier: {e}"))?;
            if ids.contains(&parsed) {
                return Err(format!("it exports {parsed} twice"));
            }
            ids.push(parsed);
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(
            check_header(b"hello world")
                .unwrap_err()
                .contains("not a WebAssembly file")
        );
        let core = b"\0asm\x01\0\0\0";
        assert!(
            check_header(core)
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        let component = b"\0asm\x0d\0\x01\0";
        assert!(check_header(component).is_ok());
    }
}
