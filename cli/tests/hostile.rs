//! Hostile and oversized results through real processes: a real server with a small body limit,
//! a real runner at concurrency 8, guests of our own that send what the server would refuse.
//! Each bad result fails its own attempt once, with a reason; none reruns; none spoils the
//! reports it was batched with.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{ServerProc, guest, output, runner};
use tessera_api::{Client, JobState, Task, TaskQuery};

const MINUTE: Duration = Duration::from_secs(60);

async fn submit(c: &Client, name: &str, task: &str, input: Value) -> String {
    c.submit(&support::job_of(name, task, input))
        .await
        .unwrap()
        .id
}

async fn root(c: &Client, job: &str) -> Task {
    c.tasks(job, &TaskQuery::default()).await.unwrap().tasks[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_results_fail_their_own_attempt_once_and_spoil_no_batch() {
    let hostile = guest("hostile-guest");
    let dir = tempfile::tempdir().unwrap();
    // A 1 MiB body limit: eight honest 300 KiB results cannot share one request.
    let server = ServerProc::start(&dir.path().join("t.db"), &["--max-body-mib", "1"]);
    let c = server.client();
    let misuse = |how: &str, size: u32| json!({ "how": how, "size": size });
    let failing = [
        (
            submit(&c, "huge-error", "Misuse", misuse("huge-error", 50)).await,
            "bytes cut]",
        ),
        (
            submit(&c, "duplicate-deps", "Misuse", misuse("duplicate-deps", 0)).await,
            "lists dependency 0 twice",
        ),
        (
            submit(&c, "deep-input", "Misuse", misuse("deep-input", 125)).await,
            "levels deep; at most 64 are allowed",
        ),
        (
            submit(&c, "big-inputs", "Misuse", misuse("big-inputs", 20)).await,
            "exceeds the limit of 1 MiB per task",
        ),
        (
            // Just under 1 MiB as the guest sent it, 3.6 MiB as it would be stored.
            submit(&c, "float-inputs", "Misuse", misuse("float-inputs", 1)).await,
            "its input of 3.6 MiB (as stored: compact JSON) exceeds the limit of 1 MiB per task",
        ),
        (
            submit(
                &c,
                "too-wide",
                "WideFanOut",
                json!({"count": 20, "kib": 100}),
            )
            .await,
            "of report",
        ),
    ];
    let overflow = submit(&c, "overflow", "Misuse", misuse("progress-overflow", 0)).await;
    let mut honest = Vec::new();
    for i in 0..8 {
        honest.push(
            submit(
                &c,
                &format!("wide-{i}"),
                "WideFanOut",
                json!({"count": 3, "kib": 100}),
            )
            .await,
        );
    }

    let mut cmd = runner(&server, &[&hostile]);
    cmd.args(["--concurrency", "8"]);
    let (status, out, err) = output(cmd, 3 * MINUTE);
    assert!(status.success(), "the runner failed:\n{out}\n{err}");

    for (job, why) in &failing {
        let j = c.job(job).await.unwrap();
        assert_eq!(j.state, JobState::Failed, "{}: {err}", j.name);
        let r = root(&c, job).await;
        assert_eq!(r.attempts, 1, "{} ran again", j.name);
        let error = r.error.unwrap_or_default();
        assert!(error.contains(why), "{}: {error:?} lacks {why:?}", j.name);
        assert!(error.len() <= tessera_api::limits::MAX_REASON_BYTES);
    }
    // Sums past 2^64 saturate; the job stays readable.
    let j = c.job(&overflow).await.unwrap();
    assert_eq!(j.state, JobState::Completed);
    let p = &j.progress[0];
    assert_eq!((p.label.as_str(), p.done), ("overflow", p.total));
    assert!(p.total >= i64::MAX as u64, "{p:?}");
    c.jobs(&Default::default()).await.expect("every page reads");
    // Honest results past the body limit together arrive in several requests.
    for job in &honest {
        let j = c.job(job).await.unwrap();
        assert_eq!(j.state, JobState::Completed, "{}: {err}", j.name);
        assert_eq!(j.task_counts.computed, 4);
        assert_eq!(root(&c, job).await.attempts, 1, "{} ran again", j.name);
    }
    assert!(
        !err.contains("start one with `tessera server`"),
        "no refusal reads as an unreachable server:\n{err}"
    );
    assert!(
        !err.contains("gave up waiting for the last log lines"),
        "the runner's logs drained as it exited:\n{err}"
    );
    // A 50 MiB error is a line, not a flood: elided with its length wherever it is printed.
    assert!(
        out.lines().all(|l| l.len() < 4096),
        "a runner line is too long"
    );
    let (status, shown, _) = server.cli(&["jobs", "show", &failing[0].0]);
    assert!(status.success());
    assert!(shown.len() < 8192 && shown.contains(" bytes]"), "{shown}");
}

/// Guest text reaches terminals escaped: the runner's lines, `jobs show`, `logs`, `spans`; the
/// JSON output keeps it as it was.
#[tokio::test(flavor = "multi_thread")]
async fn guest_text_cannot_drive_a_terminal() {
    let hostile = guest("hostile-guest");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let c = server.client();
    let job = submit(
        &c,
        "control-text",
        "Misuse",
        json!({ "how": "control-text" }),
    )
    .await;
    let (status, runner_out, runner_err) = output(runner(&server, &[&hostile]), 2 * MINUTE);
    assert!(status.success(), "{runner_err}");
    assert!(runner_out.contains("✗ spoof"), "{runner_out}");
    let controls = |s: &str| s.chars().any(|c| c.is_control() && c != '\n');
    let mut shown = vec![
        ("runner", runner_out.clone()),
        ("runner stderr", runner_err),
    ];
    for args in [
        vec!["jobs", "show", &job],
        vec!["jobs", "list"],
        vec!["logs", &job],
        vec!["spans", &job],
    ] {
        let (status, out, err) = server.cli(&args);
        assert!(status.success(), "{args:?}: {err}");
        shown.push((args[0], out));
    }
    for (what, text) in &shown {
        assert!(
            !controls(text),
            "{what} printed a control character:\n{text:?}"
        );
    }
    let logs = &shown.iter().find(|(w, _)| *w == "logs").unwrap().1;
    assert!(logs.contains("\\u{1b}]0;owned\\u{7}\\r\\n12:00"), "{logs}");
    assert_eq!(
        logs.lines().filter(|l| l.contains("forged")).count(),
        1,
        "a forged line stays inside its own: {logs}"
    );
    // JSON output is a contract: the text as the guest wrote it.
    let (_, json_logs, _) = server.cli(&["logs", &job, "--json"]);
    let lines: Vec<Value> = serde_json::from_str(&json_logs).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("\x1b]0;owned\x07")),
        "{json_logs}"
    );
}

/// Log budgets count raw bytes; escaped for JSON a control byte is six. Eight tasks within
/// their budgets once pushed a log batch past the body limit and every line was dropped, a
/// neighbour's included. Batches are now cut by their encoded size: every line arrives.
#[tokio::test(flavor = "multi_thread")]
async fn log_batches_fit_the_body_limit_however_their_lines_escape() {
    let hostile = guest("hostile-guest");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &["--max-body-mib", "1"]);
    let c = server.client();
    let mut jobs = Vec::new();
    for i in 0..8 {
        jobs.push(
            submit(
                &c,
                &format!("escaped-{i}"),
                "Misuse",
                json!({ "how": "escaped-logs", "size": 200 }),
            )
            .await,
        );
    }
    let mut cmd = runner(&server, &[&hostile]);
    cmd.args(["--concurrency", "8"]);
    let (status, _, err) = output(cmd, 3 * MINUTE);
    assert!(status.success(), "{err}");
    assert!(!err.contains("refused"), "no log batch was refused:\n{err}");
    for job in &jobs {
        assert_eq!(c.job(job).await.unwrap().state, JobState::Completed);
        let mut lines = 0;
        let mut cursor = None;
        loop {
            let page = c
                .logs(
                    job,
                    &tessera_api::LogQuery {
                        cursor: cursor.clone(),
                        limit: Some(5000),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            if page.logs.is_empty() {
                break;
            }
            lines += page.logs.len();
            cursor = page.next_cursor;
        }
        // 200 lines of about 1 KiB: within the default 1 MiB log budget, all of them kept.
        assert_eq!(lines, 200, "job {job}");
    }
}

/// `tessera submit` with an input over the server's limits: one clear line, exit 2, no panic,
/// no silent SIGPIPE.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_submit_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(
        &dir.path().join("t.db"),
        &["--max-body-mib", "2", "--max-input-kib", "256"],
    );
    // 2.6 MB: over the body limit. 600 KB: within it, over the input limit.
    let big = dir.path().join("big.json");
    let items: Vec<u32> = (0..400_000).collect();
    std::fs::write(&big, serde_json::to_string(&items).unwrap()).unwrap();
    let small = dir.path().join("small.json");
    std::fs::write(&small, serde_json::to_string(&vec![7u8; 300_000]).unwrap()).unwrap();
    for (file, why) in [
        (&big, "larger than the server accepts"),
        (&small, "--max-input-kib"),
    ] {
        let (status, _, err) =
            server.cli(&["submit", "Echo", "--input-file", file.to_str().unwrap()]);
        assert_eq!(status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(why), "{err}");
    }
}
