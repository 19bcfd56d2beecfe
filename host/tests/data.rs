//! Data between tasks through the sandbox: every host function of `tessera:task@0.2.0`'s
//! outputs and job cache, with real components, their limits, reading what does not exist,
//! and a component built against 0.1.0 running on the same host.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use support::{Collect, guest, host};
use tessera_host::{
    AttemptSpec, DependencyRef, FailureKind, Host, JobData, Limits, MemoryJobData, Outcome,
    TaskComponent, TaskIdentifier,
};

fn probe(how: &str, size: u32) -> AttemptSpec {
    AttemptSpec {
        job_id: "job".into(),
        task_id: "probe".into(),
        attempt: 1,
        identifier: TaskIdentifier::parse("DataProbe", "v0.0").unwrap(),
        input: json!({ "how": how, "size": size }).to_string(),
    }
}

async fn setup() -> (Host, Arc<TaskComponent>) {
    let host = host();
    let component = host.load(guest("hostile-guest")).await.unwrap();
    (host, component)
}

async fn run(
    host: &Host,
    component: &TaskComponent,
    spec: AttemptSpec,
    limits: &Limits,
    data: Arc<dyn JobData>,
) -> Outcome {
    host.run_with_data(component, spec, limits, Collect::default().sink(), data)
        .await
}

/// Runs the probe `how` with an empty job cache and no dependencies.
async fn probe_alone(
    host: &Host,
    component: &TaskComponent,
    how: &str,
    size: u32,
    limits: &Limits,
) -> Outcome {
    run(host, component, probe(how, size), limits, data_with(&[])).await
}

/// The probe's JSON output, or a panic saying how the attempt ended instead.
fn seen(outcome: &Outcome) -> Value {
    let computed = outcome
        .computed()
        .unwrap_or_else(|| panic!("the probe failed: {outcome:?}"));
    let bytes = computed.output.as_ref().expect("the probe sets an output");
    serde_json::from_slice(bytes).unwrap()
}

fn data_with(cache: &[(&str, &[u8])]) -> Arc<MemoryJobData> {
    let data = MemoryJobData::default();
    for (key, value) in cache {
        data.cache
            .lock()
            .unwrap()
            .insert(("job".into(), key.to_string()), value.to_vec());
    }
    Arc::new(data)
}

#[tokio::test]
async fn the_cache_reads_committed_values_and_the_attempts_own_writes() {
    let (host, component) = setup().await;
    let data = data_with(&[
        ("committed", b"1"),
        ("other", b"5"),
        ("a/0", b"0"),
        ("z", b"9"),
    ]);
    // Another job's keys are not this job's.
    data.cache
        .lock()
        .unwrap()
        .insert(("job2".into(), "a/9".into()), b"1".to_vec());
    let outcome = run(
        &host,
        &component,
        probe("cache", 0),
        &Limits::default(),
        data,
    )
    .await;
    let seen = seen(&outcome);
    assert_eq!(seen["a1"], json!({"v": 1}), "reads its own write");
    assert_eq!(seen["a2"], json!([0, 255]));
    assert_eq!(
        seen["committed"],
        Value::Null,
        "its own delete hides a committed value"
    );
    assert_eq!(seen["other"], 5, "reads a committed value");
    assert_eq!(seen["missing"], Value::Null);
    assert_eq!(seen["list_a"], json!(["a/0", "a/1", "a/2"]));
    assert_eq!(
        seen["list_all"],
        json!(["a/0", "a/1", "a/2", "b/1", "other", "z"])
    );
    let writes = &outcome.computed().unwrap().cache;
    let keys: Vec<(&str, Option<&[u8]>)> = writes
        .iter()
        .map(|w| (w.key.as_str(), w.value.as_ref().map(|v| v.0.as_slice())))
        .collect();
    assert_eq!(
        keys,
        [
            ("a/1", Some(&br#"{"v":1}"#[..])),
            ("a/2", Some(&[0u8, 255][..])),
            ("b/1", Some(&b"true"[..])),
            ("committed", None),
        ],
        "the writes to keep with the attempt's success, in key order"
    );
}

#[tokio::test]
async fn dependencies_outputs_are_read_by_handle_and_strangers_are_refused() {
    let (host, component) = setup().await;
    let data = MemoryJobData::default();
    data.dependencies.lock().unwrap().insert(
        "probe".into(),
        vec![
            DependencyRef {
                index: 0,
                task_id: "t0".into(),
            },
            DependencyRef {
                index: 2,
                task_id: "t2".into(),
            },
        ],
    );
    data.outputs
        .lock()
        .unwrap()
        .insert("t0".into(), Some(b"41".to_vec()));
    data.outputs.lock().unwrap().insert("t2".into(), None);
    let outcome = run(
        &host,
        &component,
        probe("read", 0),
        &Limits::default(),
        Arc::new(data),
    )
    .await;
    let seen = seen(&outcome);
    assert_eq!(seen["deps"], json!([0, 2]));
    assert_eq!(
        seen["outputs"],
        json!([[52, 49], null]),
        "t2 returned no output"
    );
    assert_eq!(seen["stranger"], "not-a-dependency");
    assert_eq!(seen["typed"], "ok 41");
}

#[tokio::test]
async fn reading_an_output_that_does_not_exist_fails_the_attempt_with_a_reason() {
    let (host, component) = setup().await;
    let data = MemoryJobData::default();
    data.dependencies.lock().unwrap().insert(
        "probe".into(),
        vec![DependencyRef {
            index: 4,
            task_id: "ghost".into(),
        }],
    );
    let outcome = run(
        &host,
        &component,
        probe("read", 0),
        &Limits::default(),
        Arc::new(data),
    )
    .await;
    let failure = outcome.failure().expect("no output to read");
    assert_eq!(
        failure.kind,
        FailureKind::Guest {
            code: Some("data-unavailable".into())
        }
    );
    assert!(
        failure.message.contains("ghost has not computed"),
        "{failure}"
    );
    // Without a server there is nothing to read at all.
    let alone = host
        .run(
            &component,
            probe("read", 0),
            &Limits::default(),
            Collect::default().sink(),
        )
        .await;
    let failure = alone.failure().expect("no job data");
    assert!(
        failure.message.contains("without a Tessera server"),
        "{failure}"
    );
}

#[tokio::test]
async fn keys_values_and_writes_are_bounded() {
    let (host, component) = setup().await;
    let outcome = probe_alone(&host, &component, "limits", 0, &Limits::default()).await;
    let first = seen(&outcome);
    assert_eq!(first["too_large"], "too-large", "1 MiB + 1 byte");
    assert_eq!(first["empty_key"], "invalid-key");
    assert_eq!(first["control_key"], "invalid-key");
    assert_eq!(first["long_key"], "invalid-key", "513 characters");
    assert_eq!(first["writes"], 1000);
    assert_eq!(first["after_last"], "too-many-writes");
    assert_eq!(outcome.computed().unwrap().cache.len(), 1000);
    // A smaller report budget runs out first: the writes stop early, and then the output
    // (what the probe saw) no longer fits either.
    let tight = Limits {
        report_bytes: 10 << 10,
        ..Limits::default()
    };
    let outcome = probe_alone(&host, &component, "limits", 0, &tight).await;
    let failure = outcome.failure().expect("nothing left for the output");
    assert_eq!(failure.kind, FailureKind::OutputTooLarge);
    assert!(
        failure
            .message
            .contains("left of what one attempt may hand back"),
        "{failure}"
    );
}

/// Keys and prefixes at their limits list, whatever characters they are made of; a prefix the
/// server would refuse (a control character, too long) is refused by the host first as
/// `invalid-key`, never passed on to come back as a retryable `unavailable`.
#[tokio::test]
async fn listings_take_every_key_and_prefix_the_limits_allow() {
    let (host, component) = setup().await;
    let outcome = probe_alone(&host, &component, "wide-keys", 0, &Limits::default()).await;
    let seen = seen(&outcome);
    assert_eq!(seen["emoji"], "ok 1", "{seen}");
    assert_eq!(seen["cjk"], "ok 1", "{seen}");
    assert_eq!(seen["whole_key"], "ok 1", "{seen}");
    assert_eq!(seen["control"], "invalid-key", "{seen}");
    assert_eq!(seen["too_long"], "invalid-key", "{seen}");
}

#[tokio::test]
async fn outputs_are_bounded_by_the_value_limit() {
    let (host, component) = setup().await;
    let limits = Limits {
        value_bytes: 4 << 10,
        ..Limits::default()
    };
    let fits = probe_alone(&host, &component, "big-output", 4, &limits).await;
    assert_eq!(
        fits.computed().unwrap().output.as_ref().unwrap().len(),
        4 << 10
    );
    let outcome = probe_alone(&host, &component, "big-output", 5, &limits).await;
    let failure = outcome.failure().expect("too large");
    assert_eq!(failure.kind, FailureKind::OutputTooLarge);
    assert!(
        failure.message.contains("5 KiB exceeds the limit of 4 KiB")
            && failure.message.contains("reference"),
        "{failure}"
    );
}

#[tokio::test]
async fn a_failed_attempt_hands_back_no_output_and_no_writes() {
    let (host, component) = setup().await;
    let outcome = probe_alone(&host, &component, "fail-after-write", 0, &Limits::default()).await;
    let failure = outcome.failure().expect("it fails on purpose");
    assert!(failure.message.contains("on purpose"), "{failure}");
}

#[tokio::test]
async fn a_task_takes_its_output_from_a_subtask_it_submitted() {
    let (host, component) = setup().await;
    let outcome = probe_alone(&host, &component, "output-from", 0, &Limits::default()).await;
    let computed = outcome.computed().expect("computed");
    assert_eq!(computed.subtasks.len(), 2);
    assert_eq!(computed.output_from, Some(1));
    assert_eq!(
        computed.output, None,
        "the forwarded output wins over the returned one"
    );
}

fn fixture_0_1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parallel_sleep-0.1.0.wasm")
}

#[tokio::test]
async fn a_component_built_against_0_1_0_runs_beside_a_0_2_0_one() {
    let host = host();
    let old = host
        .load(fixture_0_1())
        .await
        .expect("loads a 0.1.0 component");
    let new = host.load(guest("parallel-sleep")).await.unwrap();
    assert_eq!(old.contract(), "0.1.0");
    assert_eq!(new.contract(), "0.2.0");
    for component in [&old, &new] {
        let logs = Collect::default();
        let spec = |name: &str, task: usize, input: &str| {
            support::bench_spec(name, task, input.to_string())
        };
        let root = host
            .run(
                component,
                spec("ParallelSleepWorkflow", 0, r#"{"count":3,"seconds":0.01}"#),
                &Limits::default(),
                logs.sink(),
            )
            .await;
        let computed = root.computed().expect("the root computes");
        assert_eq!(computed.subtasks.len(), 3);
        assert_eq!(computed.output, None);
        let leaf = host
            .run(
                component,
                spec("SleepTask", 1, r#"{"index":1,"seconds":0.01}"#),
                &Limits::default(),
                logs.sink(),
            )
            .await;
        assert!(leaf.computed().is_some(), "{leaf:?}");
        assert!(
            logs.messages().iter().any(|m| m == "Finished sleep task"),
            "{:?}",
            logs.messages()
        );
    }
}
