//! Durability: kill -9 the server mid-job and restart it on the same SQLite file.

mod support;

use std::time::Duration;

use support::{ServerProc, until};
use tessera_api::{
    JobState, Level, LogBatch, LogLine, LogQuery, ReportRequest, RootTask, SubmitJob,
};
use tessera_server::testing::protocol::{claim, done, ident, leaf, root_job};

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_job_loses_no_job_and_no_computed_task() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tessera.db");
    let mut first = ServerProc::start(&db, &["--lease-seconds", "1"]);
    let c = first.client();
    let job = c.submit(&root_job("survivor")).await.unwrap();
    let other = c
        .submit(&SubmitJob {
            name: "queued-only".into(),
            root: RootTask {
                identifier: ident("Other"),
                input: serde_json::json!({"keep": true}),
                max_retries: 0,
                display: None,
            },
            cluster: None,
        })
        .await
        .unwrap();
    let report = |reports| ReportRequest {
        runner_id: "r".into(),
        reports,
        claim: None,
    };
    let root = c.claim(&claim("r", 1)).await.unwrap().tasks.remove(0);
    c.report(&report(vec![done(&root, (0..100).map(leaf).collect())]))
        .await
        .unwrap();
    let claimed = c.claim(&claim("r", 60)).await.unwrap().tasks;
    let r = c
        .report(&report(
            claimed[..50].iter().map(|t| done(t, vec![])).collect(),
        ))
        .await
        .unwrap();
    assert!(r.results.iter().all(|r| r.accepted));
    let line = LogLine {
        time_unix_nano: 5,
        level: Level::Info,
        message: "written before the crash".into(),
        task_id: claimed[0].task_id.clone(),
        job_id: String::new(),
        runner_id: "r".into(),
        attempt: 1,
        fields: Default::default(),
    };
    c.send_logs(&LogBatch { logs: vec![line] }).await.unwrap();

    first.kill9();
    let second = ServerProc::start(&db, &["--lease-seconds", "1"]);
    let c = second.client();
    let j = c.job(&job.id).await.unwrap();
    assert_eq!(
        j.task_counts.computed, 51,
        "root and 50 leaves stay computed"
    );
    assert_eq!(j.task_counts.total(), 101);
    let o = c.job(&other.id).await.unwrap();
    assert_eq!(
        (o.name.as_str(), o.state),
        ("queued-only", JobState::Queued)
    );
    let logs = c.logs(&job.id, &LogQuery::default()).await.unwrap().logs;
    assert_eq!(logs[0].message, "written before the crash");

    // The 10 tasks held at the crash come back when their leases expire; then all finish.
    until(
        Duration::from_secs(30),
        "the crashed leases to be reaped",
        || async { c.job(&job.id).await.unwrap().task_counts.running == 0 },
    )
    .await;
    loop {
        let tasks = c.claim(&claim("r", 100)).await.unwrap().tasks;
        if tasks.is_empty() {
            break;
        }
        c.report(&report(tasks.iter().map(|t| done(t, vec![])).collect()))
            .await
            .unwrap();
    }
    let j = c.job(&job.id).await.unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.task_counts.computed, 101);
}
