//! The parallel-sleep example, built from source and run through the host.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Collect, guest, host};
use tessera_host::{AttemptSpec, Limits, Outcome, TaskIdentifier};

fn spec(name: &str, input: serde_json::Value) -> AttemptSpec {
    AttemptSpec {
        job_id: "job-1".into(),
        task_id: format!("task-{name}"),
        attempt: 1,
        identifier: TaskIdentifier::parse(name, "v0.0").unwrap(),
        input: input.to_string(),
    }
}

#[tokio::test]
async fn component_lists_its_task_types() {
    let host = host();
    let component = host.load(guest("parallel-sleep")).await.unwrap();
    let names: Vec<String> = component
        .identifiers()
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(names, ["ParallelSleepWorkflow@v0.0", "SleepTask@v0.0"]);
}

#[tokio::test]
async fn root_task_submits_count_sleep_subtasks() {
    let host = host();
    let component = host.load(guest("parallel-sleep")).await.unwrap();
    let logs = Collect::default();
    let outcome = host
        .run(
            &component,
            spec(
                "ParallelSleepWorkflow",
                json!({"count": 20, "seconds": 5.0}),
            ),
            &Limits::default(),
            logs.sink(),
        )
        .await;
    let Outcome::Computed(done) = outcome else {
        panic!("root task failed: {outcome:?}")
    };
    assert_eq!(done.subtasks.len(), 20);
    for (i, sub) in done.subtasks.iter().enumerate() {
        assert_eq!(
            sub.identifier,
            TaskIdentifier::parse("SleepTask", "v0.0").unwrap()
        );
        assert_eq!(sub.input, json!({"index": i, "seconds": 5.0}));
        assert!(sub.depends_on.is_empty());
    }
    let lines = logs.lines();
    let submit = lines
        .iter()
        .find(|l| l.message == "Submitting sleep subtasks")
        .expect("the root task logs its submission");
    assert_eq!(submit.field("count").as_deref(), Some("20"));
    assert_eq!(submit.field("seconds").as_deref(), Some("5"));
    assert_eq!(&*submit.job_id, "job-1");
    assert_eq!(done.progress.len(), 1);
    assert_eq!((done.progress[0].done, done.progress[0].total), (0, 20));
}

#[tokio::test]
async fn sleep_task_logs_both_messages_and_sets_its_display() {
    let host = host();
    let component = host.load(guest("parallel-sleep")).await.unwrap();
    let logs = Collect::default();
    let started = Instant::now();
    let outcome = host
        .run(
            &component,
            spec("SleepTask", json!({"index": 7, "seconds": 0.3})),
            &Limits::default(),
            logs.sink(),
        )
        .await;
    let elapsed = started.elapsed();
    let Outcome::Computed(done) = outcome else {
        panic!("sleep task failed: {outcome:?}")
    };
    assert_eq!(done.display.as_deref(), Some("SleepTask(7)"));
    assert!(done.subtasks.is_empty());
    assert!(
        elapsed >= Duration::from_millis(300),
        "slept only {elapsed:?}"
    );
    let lines = logs.lines();
    let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(messages, ["Starting sleep task", "Finished sleep task"]);
    for line in &lines {
        assert_eq!(line.field("index").as_deref(), Some("7"));
        assert_eq!(&*line.task_id, "task-SleepTask");
        assert_eq!(line.level, tessera_host::Level::Info);
    }
    assert!(lines[1].time_unix_nano - lines[0].time_unix_nano >= 300_000_000);
}

#[tokio::test]
async fn bad_input_fails_with_the_type_error() {
    let host = host();
    let component = host.load(guest("parallel-sleep")).await.unwrap();
    let outcome = host
        .run(
            &component,
            spec("SleepTask", json!({"index": "seven"})),
            &Limits::default(),
            Collect::default().sink(),
        )
        .await;
    let failure = outcome.failure().expect("bad input must fail");
    assert!(
        failure
            .message
            .contains("input for SleepTask@v0.0 does not match its type"),
        "{failure}"
    );
    // Permanent, as in the Python SDK: no retry can fix an input of the wrong shape.
    assert!(
        failure.message.contains("[permanent:bad-input]"),
        "{failure}"
    );
    assert!(
        matches!(&failure.kind, tessera_host::FailureKind::Guest { code: Some(code) }
            if tessera_api::limits::is_permanent_code(code)),
        "{failure:?}"
    );
}

#[tokio::test]
async fn unknown_task_types_are_refused_before_instantiation() {
    let host = host();
    let component = host.load(guest("parallel-sleep")).await.unwrap();
    for (name, version) in [
        ("Nope", "v0.0"),
        ("SleepTask", "v0.1"),
        ("SleepTask", "v1.0"),
    ] {
        let mut s = spec("SleepTask", json!({"index": 1, "seconds": 0}));
        s.identifier = TaskIdentifier::parse(name, version).unwrap();
        let outcome = host
            .run(&component, s, &Limits::default(), Collect::default().sink())
            .await;
        let failure = outcome.failure().expect("must fail");
        assert_eq!(failure.kind, tessera_host::FailureKind::UnknownTask);
        assert!(
            failure
                .message
                .contains("it implements ParallelSleepWorkflow@v0.0, SleepTask@v0.0"),
            "{failure}"
        );
    }
}
