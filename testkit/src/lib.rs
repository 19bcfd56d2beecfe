//! Test support shared by the crates' tests and benchmarks: builds guest components from
//! source with cargo, once per process. It depends on no Tessera crate, so the host's tests
//! do not compile the server; the server's test support is its feature `testing`
//! (`tessera_server::testing`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ has a parent")
        .to_path_buf()
}

/// Where tests build guests: a target directory of their own, so a test never waits on the
/// cargo that runs it; cargo's lock serializes concurrent test processes.
pub fn guest_target_dir() -> PathBuf {
    workspace().join("target").join("guests")
}

/// A compiled-component cache shared by the tests, so each component compiles once per run.
pub fn shared_cache() -> PathBuf {
    guest_target_dir().join("cache")
}

/// Builds the guest package `package` for wasm32-wasip2 (release) and returns its `.wasm`.
pub fn guest(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some((_, path)) = built.iter().find(|(p, _)| p == package) {
        return path.clone();
    }
    let target_dir = guest_target_dir();
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
