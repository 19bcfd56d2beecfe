//! Guests that misbehave fail only their own attempt, with a clear reason, and the host keeps
//! running normal tasks right after.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Collect, guest, host};
use tessera_host::{
    AttemptSpec, FailureKind, Host, Limits, Outcome, TaskComponent, TaskIdentifier,
};

fn spec(name: &str, input: serde_json::Value) -> AttemptSpec {
    AttemptSpec {
        job_id: "job".into(),
        task_id: format!("task-{name}"),
        attempt: 1,
        identifier: TaskIdentifier::parse(name, "v0.0").unwrap(),
        input: input.to_string(),
    }
}

async fn setup() -> (Host, Arc<TaskComponent>) {
    let host = host();
    let component = host.load(guest("hostile-guest")).await.unwrap();
    (host, component)
}

/// Runs a task that must fail, then a normal task that must succeed on the same host.
async fn fails_then_host_still_works(
    host: &Host,
    component: &TaskComponent,
    name: &str,
    input: serde_json::Value,
    limits: &Limits,
) -> tessera_host::Failure {
    let logs = Collect::default();
    let outcome = host
        .run(component, spec(name, input), limits, logs.sink())
        .await;
    let failure = match outcome {
        Outcome::Failed(f) => f,
        Outcome::Computed(c) => panic!("{name} should have failed but computed {c:?}"),
    };
    let after = host
        .run(
            component,
            spec("Chatty", json!({"fail": false})),
            limits,
            Collect::default().sink(),
        )
        .await;
    assert!(
        after.computed().is_some(),
        "a normal task after {name} failed: {after:?}"
    );
    failure
}

/// The guest's own error with code `denied`: the sandbox refused what it tried.
fn assert_denied(f: &tessera_host::Failure) {
    assert_eq!(
        f.kind,
        FailureKind::Guest {
            code: Some("denied".into())
        },
        "{f}"
    );
}

#[tokio::test]
async fn infinite_loop_hits_the_deadline() {
    let (host, component) = setup().await;
    let limits = Limits {
        deadline: Duration::from_millis(500),
        ..Limits::default()
    };
    let started = Instant::now();
    let f =
        fails_then_host_still_works(&host, &component, "InfiniteLoop", json!({}), &limits).await;
    assert_eq!(f.kind, FailureKind::Deadline);
    assert!(f.message.contains("deadline of 500 ms exceeded"), "{f}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "current_thread")]
async fn a_busy_guest_cannot_starve_a_sleeping_one_on_the_same_thread() {
    let (host, component) = setup().await;
    let host = Arc::new(host);
    let limits = Limits {
        deadline: Duration::from_secs(2),
        ..Limits::default()
    };
    let spinner = {
        let (host, component, limits) = (host.clone(), component.clone(), limits.clone());
        tokio::spawn(async move {
            host.run(
                &component,
                spec("InfiniteLoop", json!({})),
                &limits,
                Collect::default().sink(),
            )
            .await
        })
    };
    tokio::task::yield_now().await;
    let started = Instant::now();
    let sleeper = host
        .run(
            &component,
            spec("Busy", json!({"millis": 0})),
            &limits,
            Collect::default().sink(),
        )
        .await;
    let waited = started.elapsed();
    assert!(sleeper.computed().is_some(), "{sleeper:?}");
    assert!(
        waited < Duration::from_millis(1500),
        "the second task waited {waited:?} behind a spinning guest on one thread"
    );
    let spun = spinner.await.unwrap();
    assert_eq!(spun.failure().unwrap().kind, FailureKind::Deadline);
}

#[tokio::test]
async fn memory_growth_hits_the_memory_limit() {
    let (host, component) = setup().await;
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let f = fails_then_host_still_works(&host, &component, "MemoryBomb", json!({}), &limits).await;
    assert_eq!(f.kind, FailureKind::MemoryLimit, "{f}");
    assert!(f.message.contains("memory limit of 64 MiB exceeded"), "{f}");
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_overflow() {
    let (host, component) = setup().await;
    let f = fails_then_host_still_works(
        &host,
        &component,
        "StackOverflow",
        json!({}),
        &Limits::default(),
    )
    .await;
    assert_eq!(f.kind, FailureKind::StackOverflow, "{f}");
    assert!(f.message.contains("overflowed its call stack"), "{f}");
}

#[tokio::test]
async fn a_panic_reports_its_message() {
    let (host, component) = setup().await;
    let logs = Collect::default();
    let outcome = host
        .run(
            &component,
            spec("Panic", json!({"message": "tile 42 is corrupt"})),
            &Limits::default(),
            logs.sink(),
        )
        .await;
    let f = outcome.failure().expect("panic fails").clone();
    assert_eq!(f.kind, FailureKind::Panic, "{f}");
    assert!(
        f.message
            .starts_with("guest panicked: tile 42 is corrupt (at "),
        "{f}"
    );
    assert!(f.message.contains("src/lib.rs"), "{f}");
    // The panic output also reaches the task's logs, from stderr.
    assert!(
        logs.lines()
            .iter()
            .any(|l| l.message.contains("tile 42 is corrupt")
                && l.field("stream").as_deref() == Some("stderr"))
    );
    fails_then_host_still_works(
        &host,
        &component,
        "Panic",
        json!({"message": "again"}),
        &Limits::default(),
    )
    .await;
}

#[tokio::test]
async fn a_trap_names_the_trap_and_where() {
    let (host, component) = setup().await;
    let f =
        fails_then_host_still_works(&host, &component, "Trap", json!({}), &Limits::default()).await;
    assert_eq!(f.kind, FailureKind::Trap, "{f}");
    assert!(
        f.message
            .contains("guest trapped: wasm `unreachable` instruction executed"),
        "{f}"
    );
    assert!(f.message.contains("guest backtrace:"), "{f}");
    assert!(
        f.message
            .contains("as tessera_guest::bindings::exports::tessera::task::tasks::Guest>::execute"),
        "{f}"
    );
}

#[tokio::test]
async fn files_of_the_host_are_invisible() {
    let (host, component) = setup().await;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "secret").unwrap();
    for path in [
        secret.path().to_str().unwrap(),
        "/etc/passwd",
        "Cargo.toml",
        ".",
    ] {
        let f = fails_then_host_still_works(
            &host,
            &component,
            "ReadFile",
            json!({"path": path}),
            &Limits::default(),
        )
        .await;
        assert_denied(&f);
        assert!(f.message.contains(&format!("cannot read {path}")), "{f}");
    }
}

#[tokio::test]
async fn environment_variables_of_the_host_are_invisible() {
    let (host, component) = setup().await;
    // Variables this test process surely has (cargo sets CARGO_MANIFEST_DIR for tests).
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    for name in ["CARGO_MANIFEST_DIR", "PATH", "HOME"] {
        let f = fails_then_host_still_works(
            &host,
            &component,
            "ReadEnv",
            json!({"name": name}),
            &Limits::default(),
        )
        .await;
        assert_denied(&f);
        assert!(f.message.contains("(0 variables visible)"), "{f}");
    }
}

#[tokio::test]
async fn sockets_are_denied() {
    let (host, component) = setup().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let f = fails_then_host_still_works(
        &host,
        &component,
        "OpenSocket",
        json!({"address": address}),
        &Limits::default(),
    )
    .await;
    assert_denied(&f);
    assert!(
        f.message.contains(&format!("cannot connect to {address}")),
        "{f}"
    );
    assert!(listener.accept().is_err(), "the guest reached the listener");
}

#[tokio::test]
async fn a_log_flood_is_truncated_with_a_marker() {
    let (host, component) = setup().await;
    let logs = Collect::default();
    let limits = Limits {
        log_bytes: 64 * 1024,
        ..Limits::default()
    };
    let outcome = host
        .run(
            &component,
            spec("LogFlood", json!({"lines": 20_000})),
            &limits,
            logs.sink(),
        )
        .await;
    let done = outcome
        .computed()
        .expect("a flood of logs is truncated, not fatal");
    assert!(done.logs_truncated);
    let lines = logs.lines();
    let bytes: usize = lines.iter().map(|l| l.message.len()).sum();
    assert!(
        bytes < 64 * 1024 + 1024,
        "{bytes} bytes of log passed a 64 KiB limit"
    );
    let last = lines.last().unwrap();
    assert!(
        last.message.starts_with("log output truncated"),
        "{}",
        last.message
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.message.starts_with("log output truncated"))
            .count(),
        1
    );
    // Both the host log function and stdout counted against the budget.
    assert!(
        lines
            .iter()
            .any(|l| l.field("stream").as_deref() == Some("stdout"))
    );
    fails_then_host_still_works(&host, &component, "Trap", json!({}), &limits).await;
}

#[tokio::test]
async fn a_subtask_bomb_is_refused_at_the_limit() {
    let (host, component) = setup().await;
    let limits = Limits {
        subtasks: 1000,
        ..Limits::default()
    };
    let f = fails_then_host_still_works(
        &host,
        &component,
        "SubtaskBomb",
        json!({"batch": 300}),
        &limits,
    )
    .await;
    // `?` on the refusal keeps its code.
    assert_eq!(
        f.kind,
        FailureKind::Guest {
            code: Some("too-many-subtasks".into())
        },
        "{f}"
    );
    assert!(
        f.message
            .contains("too many subtasks: one attempt may submit at most 1000"),
        "{f}"
    );
}

#[tokio::test]
async fn an_oversized_input_is_refused_before_running() {
    let (host, component) = setup().await;
    let limits = Limits {
        input_bytes: 1024,
        ..Limits::default()
    };
    let big = "x".repeat(4096);
    let f =
        fails_then_host_still_works(&host, &component, "Panic", json!({"message": big}), &limits)
            .await;
    assert_eq!(f.kind, FailureKind::InputTooLarge, "{f}");
    assert!(f.message.contains("exceeds the limit of 1 KiB"), "{f}");
}

#[tokio::test]
async fn stdout_and_stderr_become_log_lines_and_errors_keep_their_code() {
    let (host, component) = setup().await;
    let logs = Collect::default();
    let mut s = spec("Chatty", json!({"fail": true}));
    s.attempt = 3;
    let outcome = host
        .run(&component, s, &Limits::default(), logs.sink())
        .await;
    let f = outcome.failure().unwrap();
    assert_eq!(
        f.kind,
        FailureKind::Guest {
            code: Some("gave-up".into())
        }
    );
    assert_eq!(f.message, "the chatty task gave up [gave-up]");
    assert_eq!(f.display.as_deref(), Some("Chatty!"));
    let lines = logs.lines();
    let find = |m: &str| {
        lines
            .iter()
            .find(|l| l.message == m)
            .unwrap_or_else(|| panic!("no line {m:?} in {lines:?}"))
    };
    assert_eq!(
        find("hello from stdout").field("stream").as_deref(),
        Some("stdout")
    );
    assert_eq!(
        find("hello from stderr").field("stream").as_deref(),
        Some("stderr")
    );
    assert_eq!(
        find("no newline at the end").field("stream").as_deref(),
        Some("stdout")
    );
    let who = find("who am i");
    assert_eq!(who.field("job").as_deref(), Some("job"));
    assert_eq!(who.field("task").as_deref(), Some("task-Chatty"));
    assert_eq!(who.field("attempt").as_deref(), Some("3"));
    assert!(lines.iter().all(|l| l.attempt == 3));
}

#[tokio::test]
async fn progress_and_display_come_back_with_success() {
    let (host, component) = setup().await;
    let outcome = host
        .run(
            &component,
            spec("Chatty", json!({"fail": false})),
            &Limits::default(),
            Collect::default().sink(),
        )
        .await;
    let done = outcome.computed().unwrap();
    assert_eq!(done.display.as_deref(), Some("Chatty!"));
    assert_eq!(done.progress.len(), 1);
    assert_eq!(
        (
            done.progress[0].label.as_str(),
            done.progress[0].done,
            done.progress[0].total
        ),
        ("items", 4, 10)
    );
}

#[tokio::test]
async fn an_older_minor_version_runs_on_a_newer_implementation() {
    let (host, component) = setup().await;
    let mut s = spec("Versioned", json!({}));
    s.identifier = TaskIdentifier::parse("Versioned", "v1.1").unwrap();
    let outcome = host
        .run(
            &component,
            s.clone(),
            &Limits::default(),
            Collect::default().sink(),
        )
        .await;
    assert!(outcome.computed().is_some(), "{outcome:?}");
    s.identifier = TaskIdentifier::parse("Versioned", "v1.4").unwrap();
    let outcome = host
        .run(&component, s, &Limits::default(), Collect::default().sink())
        .await;
    assert_eq!(outcome.failure().unwrap().kind, FailureKind::UnknownTask);
}

#[tokio::test]
async fn dropping_the_attempt_cancels_it_at_once() {
    let (host, component) = setup().await;
    let started = Instant::now();
    let limits = Limits::default();
    let run = host.run(
        &component,
        spec("InfiniteLoop", json!({})),
        &limits,
        Collect::default().sink(),
    );
    let timed_out = tokio::time::timeout(Duration::from_millis(300), run).await;
    assert!(timed_out.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));
    let after = host
        .run(
            &component,
            spec("Noop", json!({})),
            &Limits::default(),
            Collect::default().sink(),
        )
        .await;
    assert!(after.computed().is_some());
}

#[tokio::test]
async fn exit_reads_as_exit_with_its_status() {
    let (host, component) = setup().await;
    // WASI 0.2's exit carries success or failure only: exit(3) arrives as status 1.
    for (asked, status) in [(0, 0), (3, 1)] {
        let f = fails_then_host_still_works(
            &host,
            &component,
            "Misuse",
            json!({"how": "exit", "size": asked}),
            &Limits::default(),
        )
        .await;
        assert_eq!(f.kind, FailureKind::Exit { status }, "{f}");
        assert!(f.message.contains(&format!("called exit({status})")), "{f}");
    }
}

#[tokio::test]
async fn a_panic_after_a_handled_refusal_is_reported_as_the_panic() {
    let (host, component) = setup().await;
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let f = fails_then_host_still_works(
        &host,
        &component,
        "Misuse",
        json!({"how": "reserve-then-panic"}),
        &limits,
    )
    .await;
    assert_eq!(f.kind, FailureKind::Panic, "{f}");
    assert!(
        f.message
            .contains("gave up for another reason (the reservation was refused: true)"),
        "{f}"
    );
}

/// A subtask input is measured as the server stores it, not as the guest sent it: just under
/// 1 MiB of `1e15`s is about 3.6 MiB stored, refused as `invalid` by submit-subtasks itself.
#[tokio::test]
async fn a_subtask_input_is_measured_as_it_is_stored() {
    let (host, component) = setup().await;
    let f = fails_then_host_still_works(
        &host,
        &component,
        "Misuse",
        json!({"how": "float-inputs", "size": 1}),
        &Limits::default(),
    )
    .await;
    assert!(
        f.message
            .contains("submit-subtasks refused: SubmitError::Invalid("),
        "{f}"
    );
    assert!(
        f.message
            .contains("(Echo@v0.0): its input of 3.6 MiB (as stored: compact JSON) exceeds the limit of 1 MiB per task"),
        "{f}"
    );
}

/// A handle from an earlier call names its subtask in `depends_on`; the report carries
/// positions among all the attempt's subtasks. A handle not yet issued is refused.
#[tokio::test]
async fn handles_from_earlier_calls_name_dependencies() {
    let (host, component) = setup().await;
    let outcome = host
        .run(
            &component,
            spec("AfterHandles", json!({"bad": false})),
            &Limits::default(),
            Collect::default().sink(),
        )
        .await;
    let computed = outcome.computed().expect("computed");
    let deps: Vec<Vec<u32>> = computed
        .subtasks
        .iter()
        .map(|s| s.depends_on.clone())
        .collect();
    // a, b, final after [a, b]; then x, y after [x (index 0 of its call), b].
    assert_eq!(deps, [vec![], vec![], vec![0, 1], vec![], vec![3, 1]]);
    assert_eq!(computed.subtasks[2].display.as_deref(), Some("final"));

    let f = fails_then_host_still_works(
        &host,
        &component,
        "AfterHandles",
        json!({"bad": true}),
        &Limits::default(),
    )
    .await;
    assert_eq!(
        f.kind,
        FailureKind::Guest {
            code: Some("bad-dependency".into())
        },
        "{f}"
    );
}

/// An attempt finds memory as its component defines it, never as an earlier attempt in the same
/// pooled slot left it: the pool resets written pages in place (PAGEMAP_SCAN) or by `madvise`.
#[tokio::test]
async fn an_attempt_never_sees_what_an_earlier_one_wrote() {
    let host = support::host_for(2);
    let component = host.load(guest("hostile-guest")).await.unwrap();
    let limits = Limits::default();
    for round in 0..20 {
        let write = round % 2 == 0;
        let outcome = host
            .run(
                &component,
                spec("Residue", json!({ "write": write })),
                &limits,
                Collect::default().sink(),
            )
            .await;
        assert!(
            outcome.computed().is_some(),
            "round {round} (write: {write}): {outcome:?}"
        );
    }
}
