//! An operator can tell which wasmtime a deployment runs, from every side: `tessera --version`,
//! the server's `/v1/health` and each runner in `tessera runners list` (SECURITY.md says how to
//! check it against wasmtime's advisories).

mod support;

use std::time::Duration;

use support::{ServerProc, guest, output, runner, tessera};
use tessera_host::WASMTIME_VERSION;

/// The newest patch of wasmtime's 48 LTS line that the registry reachable here can resolve
/// (48.0.11's wasmtime-internal-wit-bindgen is not on it); an older lockfile fails here.
const AT_LEAST: (u64, u64, u64) = (48, 0, 10);

fn parse(version: &str) -> (u64, u64, u64) {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn the_sandbox_is_on_the_48_lts_line_at_a_patched_release() {
    let version = parse(WASMTIME_VERSION);
    assert_eq!(
        version.0, 48,
        "wasmtime {WASMTIME_VERSION} left the 48 LTS line"
    );
    assert!(
        version >= AT_LEAST,
        "wasmtime {WASMTIME_VERSION} predates the patch release with the 2026-11 advisories"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn version_health_and_runners_name_the_embedded_wasmtime() {
    let wanted = format!("wasmtime {WASMTIME_VERSION}");
    let mut cmd = tessera();
    cmd.arg("--version");
    let (status, out, err) = output(cmd, Duration::from_secs(30));
    assert!(status.success(), "{err}");
    assert!(out.contains(&wanted), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let health: tessera_api::Health = reqwest::get(format!("{}/v1/health", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health.wasmtime.as_deref(), Some(WASMTIME_VERSION));

    server.submit_seed(2, 0.05);
    let (status, _, err) = output(
        runner(&server, &[&guest("parallel-sleep")]),
        Duration::from_secs(120),
    );
    assert!(status.success(), "{err}");
    let (status, listed, err) = server.cli(&["runners", "list", "--json"]);
    assert!(status.success(), "{err}");
    let listed: tessera_api::RunnerList = serde_json::from_str(&listed).unwrap();
    assert!(!listed.runners.is_empty());
    for r in &listed.runners {
        assert_eq!(r.wasmtime.as_deref(), Some(WASMTIME_VERSION), "{r:?}");
    }
    let (status, table, err) = server.cli(&["runners", "list"]);
    assert!(status.success(), "{err}");
    assert!(
        table.contains("WASMTIME") && table.contains(WASMTIME_VERSION),
        "{table}"
    );
}
