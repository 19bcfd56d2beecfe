//! Test support: builds guest components from source and collects their log lines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use tessera_host::{Host, HostConfig, LogRecord, LogSink};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Builds the guest package `package` for wasm32-wasip2 (release) and returns its `.wasm`.
///
/// Uses its own target directory so that it never waits on the cargo running the tests; cargo's
/// own lock serializes concurrent test processes, and a second build is a no-op.
pub fn guest(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    if let Some((_, path)) = built.iter().find(|(p, _)| p == package) {
        return path.clone();
    }
    let target_dir = workspace().join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("running cargo to build a guest");
    assert!(
        output.status.success(),
        "building guest {package} failed (is the wasm32-wasip2 target installed? \
         rustup target add wasm32-wasip2):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(path.exists(), "cargo built no {}", path.display());
    built.push((package.to_string(), path.clone()));
    path
}

/// A compiled-component cache shared by the tests, so each component compiles once per run.
pub fn shared_cache() -> PathBuf {
    workspace().join("target").join("guests").join("cache")
}

/// A host with the shared cache and a small pool.
pub fn host() -> Host {
    Host::new(HostConfig {
        cache_dir: Some(shared_cache()),
        max_instances: 2000,
        ..HostConfig::default()
    })
    .expect("creating the host")
}

/// Collects log lines in memory.
#[derive(Clone, Default)]
pub struct Collect(pub Arc<Mutex<Vec<LogRecord>>>);

impl Collect {
    pub fn lines(&self) -> Vec<LogRecord> {
        self.0.lock().unwrap().clone()
    }

    pub fn messages(&self) -> Vec<String> {
        self.lines().into_iter().map(|r| r.message).collect()
    }

    pub fn sink(&self) -> Arc<dyn LogSink> {
        Arc::new(self.clone())
    }
}

impl LogSink for Collect {
    fn emit(&self, record: LogRecord) {
        self.0.lock().unwrap().push(record);
    }
}
