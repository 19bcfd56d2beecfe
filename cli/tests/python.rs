//! Python task components: the seed workflow written in Python, built with `tessera
//! build-python` (componentize-py, pinned), run by five real runners; and how a Python task
//! fails.
//!
//! Needs componentize-py 0.25.1 (`TESSERA_COMPONENTIZE_PY`, or on PATH); `.ci/run` installs it
//! in a virtual environment. Without it the test says SKIPPED (and fails under CI).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::{ServerProc, assert_completed, finished, output, runner, tessera, workspace};
use tessera_api::{JobState, LogQuery, TaskState};

/// The componentize-py to build with, if there is one.
fn componentize_py() -> Option<PathBuf> {
    let tool = std::env::var_os("TESSERA_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("componentize-py"));
    let ok = std::process::Command::new(&tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(tool);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide componentize-py (TESSERA_COMPONENTIZE_PY)"
    );
    eprintln!("SKIPPED the Python guest test: install componentize-py 0.25.1");
    None
}

/// A log line's field as text (numbers and booleans arrive as JSON numbers and booleans).
fn field(line: &tessera_api::LogLine, key: &str) -> String {
    match line.fields.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// `tessera build-python FILE -o OUT`, asserting it worked; returns what it printed.
fn build(tool: &Path, file: &Path, out: &Path) -> String {
    let mut cmd = tessera();
    cmd.arg("build-python")
        .arg(file)
        .arg("-o")
        .arg(out)
        .arg("--componentize-py")
        .arg(tool);
    let (status, stdout, stderr) = output(cmd, Duration::from_secs(600));
    assert!(status.success(), "{stdout}\n{stderr}");
    stdout
}

/// Task types that fail in each way a Python task can, that try to leave the sandbox, and
/// that serve and call Rust task types (the hostile guest's `RustToPython` and `Echo`).
const FAILING: &str = r#"
import encodings.idna  # noqa: F401  (host names: imported now, as runtime imports cannot be)
import os
import socket
import time
from tessera_guest import Context, Task, TaskError


class PyLeaf(Task):
    index: int

    def execute(self, context: Context) -> None:
        context.logger.info("leaf in python", index=self.index)
        context.submit_subtask(Echo(value=self.index))
        context.cache.put(f"py/{self.index}", {"squared": self.index * self.index})
        assert context.cache.get(f"py/{self.index}") == {"squared": self.index * self.index}
        context.set_output({"leaf": self.index})


class Echo(Task, export=False):
    # Served by the Rust hostile guest: this class only describes its input.
    value: int


class Escape(Task):
    how: str

    def execute(self, context: Context) -> None:
        if self.how == "file":
            open("/etc/passwd").read()
        elif self.how == "env":
            context.logger.info("env", home=os.environ["HOME"])
        elif self.how == "socket":
            socket.create_connection(("127.0.0.1", 9), timeout=1)
        elif self.how == "loop":
            while True:
                pass
        elif self.how == "memory":
            hog = []
            while True:
                hog.append(bytearray(16 << 20))


class Raises(Task):
    what: str

    def execute(self, context: Context) -> None:
        context.logger.warn("about to fail", what=self.what)
        if self.what == "permanent":
            raise TaskError("the scene does not exist", code="not-found", permanent=True)
        {}["missing"]


class Naps(Task):
    version = "v1.2"
    seconds: float

    def execute(self, context: Context) -> None:
        started = time.monotonic()
        time.sleep(self.seconds)
        context.logger.info("napped", took=round(time.monotonic() - started, 3),
                            attempt=context.attempt, job=context.job_id == "" )
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_workflow_in_python_runs_on_five_runners() {
    let Some(tool) = componentize_py() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let example = workspace().join("examples/parallel-sleep-py/parallel_workflow.py");
    let wasm = dir.path().join("parallel_workflow.wasm");
    let said = build(&tool, &example, &wasm);
    assert!(
        said.contains("ParallelSleepWorkflow@v0.0, SleepTask@v0.0"),
        "{said}"
    );

    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let id = server.submit_seed(20, 0.5);
    let (status, out, err) = output(server.parallel_runners(5, &wasm), Duration::from_secs(300));
    assert!(status.success(), "{out}\n{err}");
    let c = server.client();
    let job = finished(&c, &id, Duration::from_secs(10)).await;
    assert_completed(&job);
    assert_eq!(job.task_counts.computed, 21);
    let sleeps = job.progress.iter().find(|p| p.label == "sleeps").unwrap();
    assert_eq!((sleeps.done, sleeps.total), (20, 20));
    // Twenty sleeps of 0.5 s on five runners overlap.
    let took = job.finished_at.unwrap() - job.started_at.unwrap();
    assert!(
        took < 8_000_000_000,
        "20 × 0.5 s on 5 runners took {took} ns"
    );
    let spans = c.spans(&id, &Default::default()).await.unwrap().spans;
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert!(names.contains(&"SleepTask(7)"), "{names:?}");
    // The sleeps ran on all five runners, overlapping.
    let sleeps: Vec<_> = spans
        .iter()
        .filter(|s| s.name.starts_with("SleepTask("))
        .collect();
    let runners: std::collections::HashSet<&str> =
        sleeps.iter().map(|s| s.runner_id.as_str()).collect();
    assert_eq!(runners.len(), 5, "{runners:?}");
    let most_at_once = sleeps
        .iter()
        .map(|a| {
            sleeps
                .iter()
                .filter(|b| {
                    b.start_time_unix_nano <= a.start_time_unix_nano
                        && b.end_time_unix_nano.unwrap() > a.start_time_unix_nano
                })
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most_at_once >= 4,
        "at most {most_at_once} sleeps overlapped"
    );
    let logs = c.logs(&id, &LogQuery::default()).await.unwrap().logs;
    let started: Vec<_> = logs
        .iter()
        .filter(|l| l.message == "Starting sleep task")
        .collect();
    assert_eq!(started.len(), 20);
    let mut finished_indexes: Vec<String> = logs
        .iter()
        .filter(|l| l.message == "Finished sleep task")
        .map(|l| field(l, "index"))
        .collect();
    finished_indexes.sort_by_key(|i| i.parse::<u32>().unwrap());
    let all: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(finished_indexes, all);
    assert!(started.iter().any(|l| field(l, "index") == "19"));
    assert!(
        logs.iter()
            .any(|l| l.message == "Submitting sleep subtasks" && field(l, "count") == "20")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_failures_say_what_failed() {
    let Some(tool) = componentize_py() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        workspace().join("examples/parallel-sleep-py/parallel_workflow.py"),
        dir.path().join("parallel_workflow.py"),
    )
    .unwrap();
    let file = dir.path().join("failing.py");
    std::fs::write(&file, FAILING).unwrap();
    let wasm = dir.path().join("failing.wasm");
    let said = build(&tool, &file, &wasm);
    assert!(said.contains("Raises@v0.0"), "{said}");
    assert!(
        !dir.path().join("__pycache__").exists(),
        "the build left bytecode beside the author's files"
    );
    assert!(said.contains("Naps@v1.2"), "{said}");

    let server = ServerProc::start(&dir.path().join("t.db"), &["--retry-base-seconds", "0.05"]);
    let c = server.client();
    let submit = |task: &str, version: &str, input: serde_json::Value, retries: u32| {
        let mut job = support::job_of(&task.to_lowercase(), task, input);
        job.root.identifier = tessera_api::TaskIdentifier::parse(task, version).unwrap();
        job.root.max_retries = retries;
        let c = c.clone();
        async move { c.submit(&job).await.unwrap().id }
    };
    let crash = submit("Raises", "v0.0", json!({"what": "crash"}), 1).await;
    let permanent = submit("Raises", "v0.0", json!({"what": "permanent"}), 3).await;
    let bad_input = submit("Raises", "v0.0", json!({"what": 3}), 3).await;
    let naps = submit("Naps", "v1.2", json!({"seconds": 0.3}), 0).await;
    let escapes: Vec<(&str, String)> = {
        let mut v = Vec::new();
        for how in ["file", "env", "socket", "loop", "memory"] {
            v.push((
                how,
                submit("Escape", "v0.0", json!({ "how": how }), 0).await,
            ));
        }
        v
    };
    // Rust → Python → Rust in one job, on one runner serving both components.
    let mixed = submit("RustToPython", "v0.0", json!({"count": 3}), 0).await;
    let hostile = support::guest("hostile-guest");
    let mut cmd = runner(&server, &[&wasm, &hostile]);
    cmd.args([
        "--deadline-seconds",
        "5",
        "--memory-mib",
        "128",
        "--concurrency",
        "4",
    ]);
    let (status, out, err) = output(cmd, Duration::from_secs(300));
    assert!(status.success(), "{out}\n{err}");

    let (job, _) = {
        let c = c.clone();
        let job = finished(&c, &mixed, Duration::from_secs(10)).await;
        (job, ())
    };
    assert_completed(&job);
    assert_eq!(
        job.task_counts.computed, 8,
        "a Rust root, 3 Python leaves, 3 Rust echoes, a Rust probe after all leaves"
    );
    // Data between the languages: the Rust probe read the Python leaves' outputs, and the
    // root took the probe's output as its own; the leaves' cache writes are the job's.
    let out = c.output(&mixed, None, 1 << 20).await.unwrap();
    let seen: serde_json::Value = serde_json::from_slice(&out.value.unwrap()).unwrap();
    assert_eq!(seen["deps"], json!([0, 1, 2]));
    let leaves: Vec<serde_json::Value> = seen["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|bytes| {
            let bytes: Vec<u8> = serde_json::from_value(bytes.clone()).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect();
    assert_eq!(
        leaves,
        [json!({"leaf": 0}), json!({"leaf": 1}), json!({"leaf": 2})]
    );
    let squared = c
        .cache_value(&mixed, "py/2", 1 << 20, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(squared, br#"{"squared":4}"#);
    let tasks = c.tasks(&mixed, &Default::default()).await.unwrap().tasks;
    let kinds: Vec<&str> = tasks.iter().map(|t| t.identifier.name.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "PyLeaf").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "Echo").count(),
        3,
        "{kinds:?}"
    );

    // The sandbox holds for Python: each escape fails only its own attempt, with a reason.
    for (how, id) in escapes {
        let job = finished(&c, &id, Duration::from_secs(10)).await;
        assert_eq!(job.state, JobState::Failed, "{how}");
        let task = c
            .tasks(&id, &Default::default())
            .await
            .unwrap()
            .tasks
            .remove(0);
        let why = task.error.unwrap_or_default();
        let expected = match how {
            "file" => "FileNotFoundError",
            "env" => "KeyError: 'HOME'",
            "socket" => "gaierror",
            "loop" => "deadline",
            _ => "MemoryError",
        };
        assert!(why.contains(expected), "{how}: {why}");
    }

    let root = |id: String| {
        let c = c.clone();
        async move {
            let job = finished(&c, &id, Duration::from_secs(10)).await;
            let tasks = c.tasks(&id, &Default::default()).await.unwrap().tasks;
            (job, tasks.into_iter().next().unwrap())
        }
    };
    // An exception fails the attempt with its type, message and traceback; retries apply.
    let (job, task) = root(crash).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(task.attempts, 2);
    let why = task.error.unwrap();
    assert!(why.contains("KeyError: 'missing'"), "{why}");
    assert!(why.contains("Traceback (most recent call last)"), "{why}");
    assert!(why.contains("in execute"), "{why}");
    // A permanent TaskError fails at once, whatever the retries.
    let (job, task) = root(permanent).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(task.attempts, 1);
    assert!(task.error.unwrap().contains("the scene does not exist"));
    // An input that does not match the fields is refused, permanently, saying which field.
    let (_, task) = root(bad_input).await;
    assert_eq!(task.attempts, 1);
    let why = task.error.unwrap();
    assert!(
        why.contains("input for Raises@v0.0 does not match its type: field `what`: expected str"),
        "{why}"
    );
    // time.sleep works (through WASI's clocks) and the context knows the attempt.
    let (job, task) = root(naps.clone()).await;
    assert_completed(&job);
    assert_eq!(task.state, TaskState::Computed);
    let logs = c.logs(&naps, &LogQuery::default()).await.unwrap().logs;
    let line = logs.iter().find(|l| l.message == "napped").unwrap();
    let took: f64 = field(line, "took").parse().unwrap();
    assert!(took >= 0.29, "time.sleep(0.3) took {took} s");
    assert_eq!(field(line, "attempt"), "1");
    assert_eq!(field(line, "job"), "false");
}

/// The SDK's own tests (guest-sdk-python/tests), natively, with `tessera_guest.testing`'s
/// stand-in host: what a Python author runs in their local loop.
#[test]
fn the_python_sdk_passes_its_own_tests() {
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-m", "unittest", "discover", "-s", "guest-sdk-python/tests"])
        .current_dir(workspace())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let Ok(out) = cmd.output() else {
        assert!(std::env::var_os("CI").is_none(), "CI must provide python3");
        eprintln!("SKIPPED the Python SDK's tests: install python3");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("OK"), "{err}");
}
