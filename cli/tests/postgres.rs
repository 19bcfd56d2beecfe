//! Several servers on one PostgreSQL database (needs TESSERA_TEST_POSTGRES; CI sets it).

mod support;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use support::{ServerProc, finished, guest, runner, signal, until};
use tessera_api::{Client, JobState, SpanOutcome, SpanQuery, SubmitJob};

/// Two servers started at once on a fresh database (the migration lock is exercised).
fn two_servers(db: &str, dir: &std::path::Path, extra: &[&str]) -> (ServerProc, ServerProc) {
    std::thread::scope(|s| {
        let a = s.spawn(|| ServerProc::start_db(db, &dir.join("a.log"), extra));
        let b = s.spawn(|| ServerProc::start_db(db, &dir.join("b.log"), extra));
        (a.join().unwrap(), b.join().unwrap())
    })
}

fn job(task: &str, input: serde_json::Value) -> SubmitJob {
    support::job_of(&task.to_lowercase(), task, input)
}

async fn computed_once(c: &Client, job: &str, tasks: usize) -> HashMap<String, String> {
    let mut spans = Vec::new();
    let mut cursor = None;
    loop {
        let page = c
            .spans(
                job,
                &SpanQuery {
                    cursor,
                    limit: Some(5000),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        spans.extend(page.spans);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let mut by_task: HashMap<String, String> = HashMap::new();
    for s in spans.iter().filter(|s| s.outcome == SpanOutcome::Computed) {
        assert!(
            by_task
                .insert(s.task_id.clone(), s.runner_id.clone())
                .is_none(),
            "task {} computed twice",
            s.task_id
        );
    }
    assert_eq!(by_task.len(), tasks, "every task computed exactly once");
    by_task
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_share_a_job_and_wake_each_others_runners() {
    let Some(db) = tessera_server::testing::postgres::fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_servers(&db, dir.path(), &[]);
    let wasm = guest("fan-out");
    let start = |server: &ServerProc, id: &str| {
        let mut cmd = runner(server, &[&wasm]);
        cmd.args([
            "--forever",
            "--concurrency",
            "16",
            "--quiet",
            "--runner-id",
            id,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        cmd.spawn().unwrap()
    };
    // Both runners wait before there is work; only NOTIFY can wake the one on server B.
    let ra = start(&a, "runner-on-a");
    let rb = start(&b, "runner-on-b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let j = a
        .client()
        .submit(&job("FanOut", serde_json::json!({"count": 2000})))
        .await
        .unwrap();
    let done = finished(&b.client(), &j.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.task_counts.computed, 2001);
    let by_task = computed_once(&a.client(), &j.id, 2001).await;
    let on_b = by_task
        .values()
        .filter(|r| r.as_str() == "runner-on-b")
        .count();
    assert!(
        on_b >= 100,
        "the runner on server B ran only {on_b} tasks: it was not woken by server A's submit"
    );
    for mut r in [ra, rb] {
        signal(r.id(), "TERM");
        assert!(r.wait().unwrap().success());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_one_server_mid_job_loses_nothing() {
    let Some(db) = tessera_server::testing::postgres::fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = two_servers(&db, dir.path(), &["--lease-seconds", "1"]);
    let wasm = guest("parallel-sleep");
    let j = a
        .client()
        .submit(&job(
            "ParallelSleepWorkflow",
            serde_json::json!({"count": 40, "seconds": 0.5}),
        ))
        .await
        .unwrap();
    let start = |servers: String, id: &str| {
        let mut cmd = support::tessera();
        cmd.arg("runner")
            .arg(&wasm)
            .args(["--concurrency", "4", "--quiet", "--runner-id", id])
            .env("TESSERA_SERVER", servers)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let ra = start(format!("{},{}", a.url, b.url), "runner-a");
    let rb = start(format!("{},{}", b.url, a.url), "runner-b");
    let c = b.client();
    until(
        Duration::from_secs(60),
        "a few sleeps to finish",
        || async { c.job(&j.id).await.unwrap().task_counts.computed >= 9 },
    )
    .await;
    a.kill9();
    let killed_at = tessera_server::now_unix_nano();
    let done = finished(&c, &j.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, JobState::Completed);
    let by_task = computed_once(&c, &j.id, 41).await;
    let runners: HashSet<&str> = by_task.values().map(|s| s.as_str()).collect();
    assert_eq!(runners.len(), 2, "{runners:?}");
    let spans = c.spans(&j.id, &SpanQuery::default()).await.unwrap().spans;
    assert!(
        spans
            .iter()
            .any(|s| s.runner_id == "runner-a" && s.start_time_unix_nano > killed_at),
        "runner-a claimed nothing through server B after server A died"
    );
    for r in [ra, rb] {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_deployed_through_one_server_runs_from_the_other() {
    let Some(db) = tessera_server::testing::postgres::fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_servers(&db, dir.path(), &[]);
    let wasm = guest("parallel-sleep");
    let (status, out, err) = a.cli(&["deploy", wasm.to_str().unwrap(), "--json"]);
    assert!(status.success(), "{err}");
    let deployed: tessera_api::Deployed = serde_json::from_str(&out).unwrap();
    let j = a
        .client()
        .submit(&job(
            "ParallelSleepWorkflow",
            serde_json::json!({"count": 4, "seconds": 0.1}),
        ))
        .await
        .unwrap();
    let mut cmd = support::tessera();
    cmd.args(["runner", "--deployed", "--concurrency", "4"])
        .env("TESSERA_SERVER", &b.url);
    let (status, out, err) = support::output(cmd, Duration::from_secs(120));
    assert!(status.success(), "{out}\n{err}");
    let done = finished(&b.client(), &j.id, Duration::from_secs(10)).await;
    assert_eq!(done.state, JobState::Completed);
    let spans = b
        .client()
        .spans(&j.id, &SpanQuery::default())
        .await
        .unwrap();
    assert_eq!(spans.spans.len(), 5);
    assert!(
        spans
            .spans
            .iter()
            .all(|s| s.component.as_deref() == Some(deployed.component.digest.as_str()))
    );
}
