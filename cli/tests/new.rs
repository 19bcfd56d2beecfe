//! `tessera new`: the template builds, passes its own tests, and runs on a real runner.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const MINUTE: Duration = Duration::from_secs(60);
use tessera_api::JobState;

/// Runs cargo in the generated crate, with a target directory shared across test runs.
fn cargo(dir: &std::path::Path, args: &[&str]) -> String {
    let target = tessera_testkit::workspace()
        .join("target")
        .join("tessera-new");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(dir)
        .args(args)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("running cargo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "cargo {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_task_crate_tests_builds_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("greeter");
    let (status, out, err) = output(
        {
            let mut cmd = tessera();
            cmd.args(["new", "greeter", "--path"]).arg(&krate);
            cmd
        },
        Duration::from_secs(30),
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("cargo build-component"), "{out}");
    // A second time, the directory exists: refused, nothing overwritten.
    let mut again = tessera();
    again.args(["new", "greeter", "--path"]).arg(&krate);
    let (status, _, err) = output(again, Duration::from_secs(30));
    assert!(!status.success() && err.contains("already exists"), "{err}");

    // Its own unit tests pass natively, through tessera_guest::testing.
    let tests = cargo(&krate, &["test"]);
    assert!(tests.contains("test result: ok. 3 passed"), "{tests}");
    // The alias builds the component.
    cargo(&krate, &["build-component"]);
    let wasm =
        tessera_testkit::workspace().join("target/tessera-new/wasm32-wasip2/release/greeter.wasm");
    assert!(wasm.exists(), "{}", wasm.display());

    // And it runs on a real runner.
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let (status, out, err) = server.cli(&[
        "submit",
        "Greetings",
        "--input",
        r#"{"names": ["Ada", "Grace"]}"#,
        "--json",
    ]);
    assert!(status.success(), "{err}");
    let job: tessera_api::Job = serde_json::from_str(&out).unwrap();
    let (status, _, err) = output(runner(&server, &[&wasm]), 2 * MINUTE);
    assert!(status.success(), "{err}");
    let j = finished(&server.client(), &job.id, MINUTE).await;
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.task_counts.computed, 3);
    let (_, logs, _) = server.cli(&["logs", &job.id]);
    assert!(
        logs.contains("Hello, Ada!") && logs.contains("Hello, Grace!"),
        "{logs}"
    );
}
