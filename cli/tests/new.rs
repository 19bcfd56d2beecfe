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

/// The `--component` flavour with cargo-component, where it is installed: it is not part of
/// CI (`cargo install cargo-component` takes over 15 minutes on two cores), so without it
/// this test says SKIPPED, even under CI.
#[tokio::test(flavor = "multi_thread")]
async fn the_cargo_component_flavour_builds_with_cargo_component_and_runs() {
    let installed = Command::new("cargo-component")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("SKIPPED the cargo-component flavour: cargo-component is not on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("greeter_cc");
    let mut cmd = tessera();
    cmd.args(["new", "greeter_cc", "--component", "--path"])
        .arg(&krate);
    let (status, out, err) = output(cmd, Duration::from_secs(30));
    assert!(status.success(), "{err}");
    assert!(out.contains("cargo component build --release"), "{out}");
    assert!(!krate.join(".cargo").exists(), "no dead cargo config");
    let tests = cargo(&krate, &["test"]);
    assert!(tests.contains("test result: ok. 3 passed"), "{tests}");
    cargo(&krate, &["component", "build", "--release"]);
    let wasm = tessera_testkit::workspace()
        .join("target/tessera-new/wasm32-wasip1/release/greeter_cc.wasm");
    assert!(wasm.exists(), "{}", wasm.display());
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let job = server.client();
    let job = job
        .submit(&job_of(
            "greetings",
            "Greetings",
            serde_json::json!({"names": ["Ada"]}),
        ))
        .await
        .unwrap();
    let (status, _, err) = output(runner(&server, &[&wasm]), 2 * MINUTE);
    assert!(status.success(), "{err}");
    let j = finished(&server.client(), &job.id, MINUTE).await;
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.task_counts.computed, 2);
}
