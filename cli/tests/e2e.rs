//! The user's story end to end with real processes: the built `tessera` binary, a real server
//! on a free loopback port, the real example component built from source.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{ServerProc, finished, guest, output, runner, signal, tessera, until};
use tessera_api::{JobState, LogQuery, Span, SpanOutcome, SpanQuery, TaskQuery};

const MINUTE: Duration = Duration::from_secs(60);

/// Submits through the CLI and returns the job id read from its output.
fn submit(server: &ServerProc, args: &[&str]) -> String {
    let args: Vec<&str> = std::iter::once("submit")
        .chain(args.iter().copied())
        .collect();
    let (status, out, err) = server.cli(&args);
    assert!(status.success(), "submit failed: {err}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("Submitted job: "))
        .unwrap_or_else(|| panic!("no job id in {out:?}"))
        .to_string();
    assert!(
        out.contains(&format!("Open in Console: {}/jobs/{id}", server.url)),
        "{out}"
    );
    id
}

fn sleep_job(server: &ServerProc, count: u32, seconds: f64) -> String {
    let input = format!(r#"{{"count":{count},"seconds":{seconds}}}"#);
    submit(
        server,
        &[
            "ParallelSleepWorkflow",
            "--name",
            "parallel-sleep-workflow",
            "--input",
            &input,
        ],
    )
}

/// The largest number of spans running at one instant.
fn overlap(spans: &[&Span]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for s in spans {
        edges.push((s.start_time_unix_nano, 1));
        edges.push((s.end_time_unix_nano.expect("ended"), -1));
    }
    edges.sort();
    let (mut now, mut best) = (0, 0);
    for (_, d) in edges {
        now += d;
        best = best.max(now);
    }
    best as usize
}

async fn spans(server: &ServerProc, job: &str) -> Vec<Span> {
    server
        .client()
        .spans(job, &SpanQuery::default())
        .await
        .unwrap()
        .spans
}

#[tokio::test(flavor = "multi_thread")]
async fn five_parallel_runners_overlap_and_every_log_lands_on_the_job() {
    let wasm = guest("parallel-sleep");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let job = sleep_job(&server, 20, 0.5);
    let cmd = server.parallel_runners(5, &wasm);
    let (status, out, err) = output(cmd, 3 * MINUTE);
    assert!(status.success(), "parallel runners failed:\n{out}\n{err}");
    assert!(
        out.contains("[1] ✓") && out.contains("[5] ✓"),
        "every copy's lines are prefixed:\n{out}"
    );

    let c = server.client();
    let j = c.job(&job).await.unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.task_counts.computed, 21);
    let all = spans(&server, &job).await;
    let sleeps: Vec<&Span> = all
        .iter()
        .filter(|s| s.name.starts_with("SleepTask("))
        .collect();
    assert_eq!(sleeps.len(), 20);
    let runners: HashSet<&str> = sleeps.iter().map(|s| s.runner_id.as_str()).collect();
    assert_eq!(runners.len(), 5, "spans from five runners");
    assert!(
        overlap(&sleeps) >= 5,
        "at least five sleeps at once, got {}",
        overlap(&sleeps)
    );
    let logs = c.logs(&job, &LogQuery::default()).await.unwrap().logs;
    let sleep_lines = logs
        .iter()
        .filter(|l| l.message == "Starting sleep task" || l.message == "Finished sleep task")
        .count();
    assert_eq!(sleep_lines, 40);
    assert!(logs.iter().all(|l| l.job_id == job));
    let names: HashSet<String> = c
        .tasks(&job, &TaskQuery::default())
        .await
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.display)
        .collect();
    for i in 0..20 {
        assert!(names.contains(&format!("SleepTask({i})")), "{names:?}");
    }

    // The CLI's JSON contract.
    let (status, out, _) = server.cli(&["spans", &job, "--json"]);
    assert!(status.success());
    let spans_json: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(spans_json.len(), 21);
    for key in [
        "name",
        "task_id",
        "runner_id",
        "start_time_unix_nano",
        "end_time_unix_nano",
    ] {
        assert!(
            spans_json.iter().all(|s| !s[key].is_null()),
            "spans lack {key}"
        );
    }
    let (status, out, _) = server.cli(&["logs", &job, "--json"]);
    assert!(status.success());
    let logs_json: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(logs_json.len(), 41);
    for key in ["time_unix_nano", "level", "message", "task_id", "fields"] {
        assert!(
            logs_json.iter().all(|l| !l[key].is_null()),
            "logs lack {key}"
        );
    }
    assert!(
        logs_json.iter().any(|l| l["fields"]["index"] == 7),
        "index is a number field"
    );
    let (_, out, _) = server.cli(&["jobs", "list", "--json"]);
    let jobs: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs[0]["id"], job.as_str());
    assert_eq!(jobs[0]["state"], "completed");
    assert_eq!(jobs[0]["task_counts"]["computed"], 21);
    // People's views print without error.
    for args in [
        vec!["spans", job.as_str()],
        vec!["logs", job.as_str()],
        vec!["jobs", "show", job.as_str()],
        vec!["jobs", "list"],
    ] {
        let (status, out, err) = server.cli(&args);
        assert!(status.success(), "{args:?}: {err}");
        assert!(
            out.contains("SleepTask(3)") || args[0] == "jobs",
            "{args:?}:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_runner_at_concurrency_twenty_overlaps_every_sleep() {
    let wasm = guest("parallel-sleep");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let job = sleep_job(&server, 20, 1.0);
    let mut cmd = runner(&server, &[&wasm]);
    cmd.args(["--concurrency", "20"]);
    let (status, out, err) = output(cmd, 2 * MINUTE);
    assert!(status.success(), "{err}");
    assert!(err.contains("serving"), "the banner:\n{err}");
    let all = spans(&server, &job).await;
    let sleeps: Vec<&Span> = all
        .iter()
        .filter(|s| s.name.starts_with("SleepTask("))
        .collect();
    assert_eq!(sleeps.len(), 20);
    assert_eq!(overlap(&sleeps), 20, "all twenty sleeps at once");
    // The runner's line names each sleep as its parent displayed it.
    for s in &sleeps {
        assert!(
            out.contains(&format!("✓ {} computed in", s.name)),
            "{}:\n{out}",
            s.name
        );
    }
    // `jobs show` lists the first 20 tasks with their versions; --tasks every one, also in JSON.
    let (status, out, err) = server.cli(&["jobs", "show", &job]);
    assert!(status.success(), "{err}");
    assert!(out.contains("VERSION") && out.contains(" v0.0 "), "{out}");
    assert!(out.contains("… more tasks with --tasks"), "{out}");
    let (status, out, err) = server.cli(&["jobs", "show", &job, "--json", "--tasks"]);
    assert!(status.success(), "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["id"], job.as_str());
    assert_eq!(shown["tasks"].as_array().map(Vec::len), Some(21), "{out}");
    // --quiet prints no banner either (nothing is left: it only says so and exits).
    let mut cmd = runner(&server, &[&wasm]);
    cmd.arg("--quiet");
    let (status, out, err) = output(cmd, MINUTE);
    assert!(status.success(), "{err}");
    assert!(!err.contains("serving") && out.is_empty(), "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_runners_tasks_run_again_elsewhere_and_finish_once() {
    let wasm = guest("parallel-sleep");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &["--lease-seconds", "1"]);
    let job = sleep_job(&server, 10, 3.0);
    let start = |id: &str| {
        let mut cmd = runner(&server, &[&wasm]);
        cmd.args(["--concurrency", "5", "--runner-id", id, "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().unwrap()
    };
    let mut a = start("runner-a");
    let mut b = start("runner-b");
    until(MINUTE, "both runners running sleep tasks", || async {
        let all = spans(&server, &job).await;
        let busy = |r: &str| {
            all.iter().any(|s| {
                s.runner_id == r
                    && s.outcome == SpanOutcome::Running
                    && s.name.starts_with("SleepTask")
            })
        };
        busy("runner-a") && busy("runner-b")
    })
    .await;
    a.kill().unwrap();
    a.wait().unwrap();
    let j = finished(&server.client(), &job, 2 * MINUTE).await;
    assert_eq!(j.state, JobState::Completed);
    let status = b.wait().unwrap();
    assert!(status.success());
    let all = spans(&server, &job).await;
    let mut computed: HashMap<&str, Vec<&Span>> = HashMap::new();
    for s in all.iter().filter(|s| s.outcome == SpanOutcome::Computed) {
        computed.entry(s.task_id.as_str()).or_default().push(s);
    }
    assert_eq!(computed.len(), 11, "every task computed");
    assert!(
        computed.values().all(|v| v.len() == 1),
        "a task was recorded computed twice"
    );
    let expired: Vec<&Span> = all
        .iter()
        .filter(|s| s.outcome == SpanOutcome::Expired)
        .collect();
    assert!(!expired.is_empty(), "the killed runner held tasks");
    for e in expired {
        assert_eq!(e.runner_id, "runner-a");
        assert_eq!(
            computed[e.task_id.as_str()][0].runner_id,
            "runner-b",
            "ran again elsewhere"
        );
        assert_eq!(
            server.client().task(&e.task_id).await.unwrap().retries_used,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_requeues_running_tasks_without_spending_a_retry() {
    let wasm = guest("parallel-sleep");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let job = sleep_job(&server, 2, 5.0);
    let mut cmd = runner(&server, &[&wasm]);
    cmd.args([
        "--concurrency",
        "2",
        "--runner-id",
        "runner-a",
        "--grace-seconds",
        "0.2",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let a = cmd.spawn().unwrap();
    until(MINUTE, "runner-a running both sleeps", || async {
        spans(&server, &job)
            .await
            .iter()
            .filter(|s| s.name.starts_with("SleepTask") && s.outcome == SpanOutcome::Running)
            .count()
            == 2
    })
    .await;
    signal(a.id(), "TERM");
    let out = a.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Stopping: no new claims; letting 2 running attempts finish"),
        "{err}"
    );
    // Each abandoned attempt is said in words, on the runner's output and in its task's log.
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.matches("stopped: abandoned as the runner stops")
            .count(),
        2,
        "{said}"
    );
    assert!(!said.contains("Abandon)"), "{said}");
    let c = server.client();
    let logs = c.logs(&job, &Default::default()).await.unwrap().logs;
    let abandoned_lines = logs
        .iter()
        .filter(|l| {
            l.level == tessera_api::Level::Warn
                && l.message
                    .starts_with("attempt 1 was abandoned by its runner")
        })
        .count();
    assert_eq!(abandoned_lines, 2, "{logs:?}");
    let queued = c
        .tasks(
            &job,
            &TaskQuery {
                state: Some(tessera_api::TaskState::Queued),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(queued.tasks.len(), 2, "both sleeps back in the queue");
    assert!(
        queued
            .tasks
            .iter()
            .all(|t| t.retries_used == 0 && t.attempts == 1)
    );

    let mut cmd = runner(&server, &[&wasm]);
    cmd.args(["--concurrency", "2", "--runner-id", "runner-b"]);
    let (status, _, err) = output(cmd, MINUTE);
    assert!(status.success(), "{err}");
    assert_eq!(c.job(&job).await.unwrap().state, JobState::Completed);
    let all = spans(&server, &job).await;
    let abandoned = all
        .iter()
        .filter(|s| s.outcome == SpanOutcome::Abandoned && s.runner_id == "runner-a")
        .count();
    let by_b = all
        .iter()
        .filter(|s| {
            s.outcome == SpanOutcome::Computed
                && s.runner_id == "runner-b"
                && s.name.starts_with("SleepTask")
        })
        .count();
    assert_eq!((abandoned, by_b), (2, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_then_job_retry_once_the_cause_is_gone() {
    let hostile = guest("hostile-guest");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &["--retry-base-seconds", "0.1"]);
    // `submit --wait` follows the job and exits 1 when it fails.
    let mut waiter = tessera();
    waiter
        .args([
            "submit",
            "Allocate",
            "--input",
            r#"{"mib": 100}"#,
            "--max-retries",
            "2",
            "--wait",
        ])
        .env("TESSERA_SERVER", &server.url);
    let waiter = std::thread::spawn(move || output(waiter, 2 * MINUTE));
    let c = server.client();
    until(MINUTE, "the job to be submitted", || async {
        !c.jobs(&Default::default()).await.unwrap().jobs.is_empty()
    })
    .await;
    let job = c.jobs(&Default::default()).await.unwrap().jobs[0]
        .id
        .clone();
    let mut cmd = runner(&server, &[&hostile]);
    cmd.args(["--memory-mib", "32"]);
    let (status, out, err) = output(cmd, 2 * MINUTE);
    assert!(status.success(), "{err}");
    assert_eq!(
        out.matches("memory limit of 32 MiB exceeded").count(),
        3,
        "{out}"
    );
    let (status, out, _) = waiter.join().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "submit --wait exits 1 for a failed job:\n{out}"
    );
    assert!(out.contains("failed"), "{out}");
    // It names the task that failed the job, with the reason, and where to read more.
    assert!(
        out.contains("failed after 3 attempts: ") && out.contains("memory limit of 32 MiB"),
        "{out}"
    );
    assert!(
        out.contains(&format!("tessera logs {job} --task ")),
        "{out}"
    );
    let j = c.job(&job).await.unwrap();
    assert_eq!(j.state, JobState::Failed);
    // Each failed attempt is an ERROR line of the task: two retried, the last final.
    let (status, logs, err) = server.cli(&["logs", &job, "--level", "error"]);
    assert!(status.success(), "{err}");
    assert_eq!(logs.matches("; retrying in ").count(), 2, "{logs}");
    assert_eq!(
        logs.matches("no retries left: the task and its job failed")
            .count(),
        1,
        "{logs}"
    );
    let attempts = spans(&server, &job).await;
    assert_eq!(attempts.len(), 3, "max-retries 2 runs three times");
    assert!(attempts.iter().all(|s| s.outcome == SpanOutcome::Failed));

    let (status, out, err) = server.cli(&["jobs", "retry", &job]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("Retrying job") && out.contains(": 1 task queued again"),
        "{out}"
    );
    let mut cmd = runner(&server, &[&hostile]);
    cmd.args(["--memory-mib", "256"]);
    let (status, _, err) = output(cmd, 2 * MINUTE);
    assert!(status.success(), "{err}");
    assert_eq!(c.job(&job).await.unwrap().state, JobState::Completed);
}

#[test]
fn parallel_forwards_sigterm_to_every_copy() {
    let script = r#"trap 'echo got-term; kill $!; exit 0' TERM; echo ready; sleep 30 & wait"#;
    let mut cmd = tessera();
    cmd.args(["parallel", "-n", "3", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (out, err) = {
        let mut child = child;
        let stdout = child.stdout.take().unwrap();
        let seen = lines.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let line = line.unwrap();
                seen.lock().unwrap().push_str(&line);
                seen.lock().unwrap().push('\n');
            }
        });
        let started = std::time::Instant::now();
        while lines.lock().unwrap().matches("ready").count() < 3 {
            assert!(started.elapsed() < MINUTE, "copies did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(pid, "TERM");
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
        assert!(status.success(), "{err}");
        (lines.lock().unwrap().clone(), err)
    };
    for i in 1..=3 {
        assert!(out.contains(&format!("[{i}] ready")), "{out}");
        assert!(
            out.contains(&format!("[{i}] got-term")),
            "copy {i} did not get SIGTERM:\n{out}"
        );
    }
    assert!(err.contains("forwarding SIGTERM to 3 copies"), "{err}");
}

#[test]
fn parallel_reports_a_failing_copy_and_its_exit_code() {
    let mut cmd = tessera();
    cmd.args([
        "parallel",
        "-n",
        "3",
        "--",
        "sh",
        "-c",
        r#"echo "copy $TESSERA_PARALLEL_INDEX"; [ "$TESSERA_PARALLEL_INDEX" != 2 ] || exit 7"#,
    ]);
    let (status, out, err) = output(cmd, MINUTE);
    assert_eq!(status.code(), Some(7), "{err}");
    assert!(err.contains("copy 2 exited with code 7"), "{err}");
    assert!(
        out.contains("[1] copy 1") && out.contains("[3] copy 3"),
        "{out}"
    );
}

/// An error the task marks permanent (the example's bad input) fails the task at once, however
/// many retries it has, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_is_not_retried() {
    let wasm = guest("parallel-sleep");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &["--retry-base-seconds", "0.1"]);
    let job = submit(
        &server,
        &[
            "ParallelSleepWorkflow",
            "--input",
            r#"{"count": 2, "seconds": -1}"#,
            "--max-retries",
            "3",
        ],
    );
    let (status, out, err) = output(runner(&server, &[&wasm]), 2 * MINUTE);
    assert!(status.success(), "{err}");
    assert!(out.contains("[permanent:bad-input]"), "{out}");
    let j = finished(&server.client(), &job, MINUTE).await;
    assert_eq!(j.state, JobState::Failed);
    let attempts = spans(&server, &job).await;
    assert_eq!(attempts.len(), 1, "no retry after a permanent error");
    let (status, logs, err) = server.cli(&["logs", &job, "--level", "error"]);
    assert!(status.success(), "{err}");
    assert!(
        logs.contains("a permanent failure (no retry can fix it)"),
        "{logs}"
    );
}

/// A task no runner can serve says why it waits: `runners list` shows who was seen serving
/// what, and `jobs show` names the version the runners lack.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_no_runner_serves_says_why_it_waits() {
    let wasm = guest("parallel-sleep");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    // The component serves v0.0; this job asks for a newer minor version.
    let job = submit(
        &server,
        &[
            "ParallelSleepWorkflow",
            "--version",
            "v0.1",
            "--input",
            r#"{"count": 1, "seconds": 0}"#,
        ],
    );
    let mut cmd = runner(&server, &[&wasm]);
    cmd.args(["--runner-id", "old-runner"]);
    let (status, _, err) = output(cmd, MINUTE);
    assert!(status.success(), "{err}");
    assert!(
        err.contains("No work left that this runner could serve"),
        "{err}"
    );
    let (status, out, err) = server.cli(&["runners", "list"]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("old-runner") && out.contains("ParallelSleepWorkflow@v0.0"),
        "{out}"
    );
    let (status, out, err) = server.cli(&["jobs", "show", &job]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains(
            "⚠ 1 task waiting: no runner in cluster default has served \
             ParallelSleepWorkflow@v0.1 in the last 5 minutes; runners seen there serve \
             ParallelSleepWorkflow v0.0"
        ),
        "{out}"
    );
}
