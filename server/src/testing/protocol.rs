//! Driving the runner protocol by hand, for tests and benchmarks of the server.

use serde_json::json;
use tessera_api::{
    ClaimRequest, ClaimedTask, Client, Report, ReportRequest, RootTask, SubmitJob, SubtaskSpec,
    TaskIdentifier, TaskReport,
};

/// `NAME@v0.0`.
pub fn ident(name: &str) -> TaskIdentifier {
    TaskIdentifier::parse(name, "v0.0").expect("a valid test identifier")
}

/// A claim for `Root` and `Leaf` tasks on the default cluster, without waiting.
pub fn claim(runner: &str, max: u32) -> ClaimRequest {
    ClaimRequest {
        runner_id: runner.into(),
        cluster: "default".into(),
        identifiers: vec![ident("Root"), ident("Leaf")],
        max,
        wait_ms: 0,
        return_when_idle: false,
        digests: vec![],
        deployed: false,
        host: None,
        concurrency: None,
        wasmtime: None,
    }
}

/// A `Leaf` subtask with input `{"i": i}`.
pub fn leaf(i: usize) -> SubtaskSpec {
    SubtaskSpec {
        identifier: ident("Leaf"),
        input: json!({ "i": i }),
        display: None,
        depends_on: vec![],
        max_retries: 0,
        cluster: None,
    }
}

/// The report that `task` computed with `subtasks`.
pub fn done(task: &ClaimedTask, subtasks: Vec<SubtaskSpec>) -> TaskReport {
    TaskReport {
        task_id: task.task_id.clone(),
        lease: task.lease,
        report: Report::computed(subtasks),
    }
}

/// A job named `name` whose root is a `Root` task.
pub fn root_job(name: &str) -> SubmitJob {
    SubmitJob {
        name: name.into(),
        root: RootTask {
            identifier: ident("Root"),
            input: json!({}),
            max_retries: 0,
            display: None,
        },
        cluster: None,
    }
}

/// Submits a job whose root (run here) fans out `n` leaves; returns the job id.
pub async fn fan_out(c: &Client, n: usize) -> String {
    let job = c
        .submit(&root_job(&format!("fan-out-{n}")))
        .await
        .expect("submitting");
    let root = c
        .claim(&claim("setup", 1))
        .await
        .expect("claiming the root")
        .tasks
        .remove(0);
    let leaves = (0..n).map(leaf).collect();
    let request = ReportRequest {
        runner_id: "setup".into(),
        reports: vec![done(&root, leaves)],
        claim: None,
    };
    let r = c.report(&request).await.expect("reporting the root");
    assert!(r.results[0].accepted, "{:?}", r.results[0]);
    job.id
}

/// A runtime for one side of a benchmark (the server or its clients): two worker threads, as
/// many as the machine the figures are recorded on has cores.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
