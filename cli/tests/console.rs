//! The console in real headless Chromium (Debian's), driven by playwright-core: a real job run
//! by five real runners, then a cancel from the page. Screenshots land in
//! `console-tests/screenshots/`.
//!
//! Needs `chromium` (apt-get install chromium) and `npm ci --prefix console-tests`; `.ci/run`
//! installs both.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{ServerProc, guest, output, runner, until};
use tessera_api::{
    ClaimRequest, Client, JobState, Report, ReportRequest, RootTask, SubmitJob, SubtaskSpec,
    TaskIdentifier, TaskReport,
};

/// A job three levels deep on cluster `deep`, built through the runner protocol (the test is
/// its runner): Root > A > B > Leaf 0..11, the leaves queued for the browser test to complete
/// one by one.
async fn deep_job(c: &Client) -> String {
    let id = |name: &str| TaskIdentifier::parse(name, "v0.0").unwrap();
    let job = c
        .submit(&SubmitJob {
            name: "deep".into(),
            root: RootTask {
                identifier: id("Root"),
                input: serde_json::json!({}),
                max_retries: 0,
                display: Some("Root".into()),
            },
            cluster: Some("deep".into()),
        })
        .await
        .unwrap();
    let child = |name: &str, display: String| SubtaskSpec {
        identifier: id(name),
        input: serde_json::json!({}),
        display: Some(display),
        depends_on: vec![],
        max_retries: 0,
        cluster: None,
    };
    let levels = [
        ("Root", vec![child("Mid", "A".into())]),
        ("Mid", vec![child("Mid", "B".into())]),
        (
            "Mid",
            (0..12)
                .map(|i| child("Leaf", format!("Leaf {i}")))
                .collect(),
        ),
    ];
    for (name, subtasks) in levels {
        let claimed = c
            .claim(&ClaimRequest {
                cluster: "deep".into(),
                identifiers: vec![id(name)],
                wait_ms: 5_000,
                ..tessera_server::testing::protocol::claim("console-test", 1)
            })
            .await
            .unwrap()
            .tasks;
        let t = &claimed[0];
        c.report(&ReportRequest {
            runner_id: "console-test".into(),
            reports: vec![TaskReport {
                task_id: t.task_id.clone(),
                lease: t.lease,
                report: Report::computed(subtasks),
            }],
            claim: None,
        })
        .await
        .unwrap();
    }
    job.id
}

fn sleep_job(name: &str, count: u32, seconds: f64) -> SubmitJob {
    SubmitJob {
        name: name.into(),
        root: RootTask {
            identifier: TaskIdentifier::parse("ParallelSleepWorkflow", "v0.0").unwrap(),
            input: serde_json::json!({"count": count, "seconds": seconds}),
            max_retries: 0,
            display: None,
        },
        cluster: None,
    }
}

/// The console tests' directory and Chromium, if both are there to run them (CI installs
/// both and must run the tests; elsewhere a missing one is said loudly).
fn browser() -> Option<(std::path::PathBuf, String)> {
    let tests = support::workspace().join("console-tests");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = [
        (!tests.join("node_modules/playwright-core").exists())
            .then_some("playwright-core (npm ci --prefix console-tests)"),
        (!Path::new(&chromium).exists())
            .then_some("Chromium (apt-get install chromium, or set CHROMIUM)"),
    ];
    let missing: Vec<&str> = missing.into_iter().flatten().collect();
    if !missing.is_empty() {
        // CI installs both and must run this test; elsewhere say loudly what was not run.
        assert!(
            std::env::var_os("CI").is_none(),
            "the console test needs {}",
            missing.join(" and ")
        );
        eprintln!(
            "SKIPPED the console browser test: install {}",
            missing.join(" and ")
        );
        return None;
    }
    Some((tests, chromium))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_page_shows_tree_timeline_logs_and_cancels() {
    let Some((tests, chromium)) = browser() else {
        return;
    };
    let wasm = guest("parallel-sleep");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let c = server.client();
    let done = c
        .submit(&sleep_job("parallel-sleep-workflow", 20, 0.5))
        .await
        .unwrap();
    let five = server.parallel_runners(5, &wasm);
    let (status, _, err) = output(five, Duration::from_secs(180));
    assert!(status.success(), "{err}");
    assert_eq!(c.job(&done.id).await.unwrap().state, JobState::Completed);

    // The same component deployed, and a job run by a fleet runner.
    let (status, out, err) = server.cli(&["deploy", wasm.to_str().unwrap(), "--json"]);
    assert!(status.success(), "{err}");
    let deployed: tessera_api::Deployed = serde_json::from_str(&out).unwrap();
    let fleet_job = c
        .submit(&sleep_job("deployed-sleep", 2, 0.1))
        .await
        .unwrap();
    let (status, _, err) = server.cli(&["runner", "--deployed", "--quiet"]);
    assert!(status.success(), "{err}");
    assert_eq!(
        c.job(&fleet_job.id).await.unwrap().state,
        JobState::Completed
    );

    // A job with a result: word count's root takes its merge's output as its own.
    let counted = c
        .submit(&support::job_of(
            "word-count",
            "WordCount",
            serde_json::json!({"text": "a b b c c c", "chunks": 2, "top": 2}),
        ))
        .await
        .unwrap();
    let words = guest("word-count");
    let (status, _, err) = output(runner(&server, &[&words]), Duration::from_secs(120));
    assert!(status.success(), "{err}");

    let long = c.submit(&sleep_job("long-sleeps", 4, 60.0)).await.unwrap();
    let mut bg = runner(&server, &[&wasm]);
    bg.args(["--concurrency", "4", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut bg = bg.spawn().unwrap();
    until(Duration::from_secs(60), "the long job to run", || async {
        c.job(&long.id).await.unwrap().task_counts.running >= 4
    })
    .await;

    let deep = deep_job(&c).await;
    // A version no runner serves: the page says why it waits (the five runners served v0.0).
    let mut newer = sleep_job("too-new", 1, 0.0);
    newer.root.identifier = TaskIdentifier::parse("ParallelSleepWorkflow", "v0.9").unwrap();
    let unserved = c.submit(&newer).await.unwrap();

    let shots = tests.join("screenshots");
    let mut node = Command::new("node");
    node.arg("job-page.mjs")
        .current_dir(&tests)
        .env("TESSERA_URL", &server.url)
        .env("JOB_ID", &done.id)
        .env("RUNNING_JOB_ID", &long.id)
        .env("DEEP_JOB_ID", &deep)
        .env("RESULT_JOB_ID", &counted.id)
        .env("UNSERVED_JOB_ID", &unserved.id)
        .env("DEPLOYED_JOB_ID", &fleet_job.id)
        .env("DIGEST", &deployed.component.digest)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium);
    let (status, out, err) = output(node, Duration::from_secs(180));
    assert!(status.success(), "the browser test failed:\n{out}\n{err}");
    assert!(shots.join("job.png").exists());

    // The runner learns of the cancel at its next lease extension and stops its attempts.
    let j = support::finished(&c, &long.id, Duration::from_secs(60)).await;
    assert_eq!(j.state, JobState::Canceled);
    until(
        Duration::from_secs(60),
        "running attempts to stop",
        || async { c.job(&long.id).await.unwrap().task_counts.running == 0 },
    )
    .await;
    let _ = bg.kill();
    let _ = bg.wait();
}

/// A server with keys: the console asks for one, shows a tenant's key only its tenant's jobs,
/// and the operator every tenant's and the Tenants page.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_signs_in_with_a_key_and_shows_one_tenant() {
    let Some((tests, chromium)) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let operator = "console-operator-token";
    let server = ServerProc::start(&dir.path().join("t.db"), &["--token", operator]);
    let op = Client::new(server.url.clone(), Some(operator.into()));
    let mut keys = Vec::new();
    for tenant in ["a", "b"] {
        op.create_tenant(&tessera_api::NewTenant {
            name: tenant.into(),
            weight: None,
        })
        .await
        .unwrap();
        for role in [tessera_api::Role::Submit, tessera_api::Role::Read] {
            let key = op
                .create_key(&tessera_api::NewKey {
                    role,
                    tenant: Some(tenant.into()),
                    name: None,
                })
                .await
                .unwrap();
            keys.push(key.secret);
        }
    }
    let as_ = |key: &str| Client::new(server.url.clone(), Some(key.to_string()));
    let ours = as_(&keys[0])
        .submit(&sleep_job("ours", 1, 0.0))
        .await
        .unwrap();
    let theirs = as_(&keys[2])
        .submit(&sleep_job("theirs", 1, 0.0))
        .await
        .unwrap();
    let mut node = Command::new("node");
    node.arg("tenants.mjs")
        .current_dir(&tests)
        .env("TESSERA_URL", &server.url)
        .env("TENANT_KEY", &keys[1])
        .env("OPERATOR_KEY", operator)
        .env("OURS", &ours.id)
        .env("THEIRS", &theirs.id)
        .env("SCREENSHOTS", tests.join("screenshots"))
        .env("CHROMIUM", &chromium);
    let (status, out, err) = output(node, Duration::from_secs(120));
    assert!(status.success(), "the browser test failed:\n{out}\n{err}");
    assert!(out.contains("tenant console checks passed"), "{out}");
}
