//! The store conformance suite: every store implementation must pass every test here.
//!
//! Each test takes a fresh store and drives it with explicit times, so lease expiry and retry
//! backoff are tested without sleeping. `stores!` instantiates the suite per implementation.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tessera_api::{
    ClaimRequest, ClaimedTask, JobFilter, JobState, LeaseRef, Level, LogLine, LogQuery,
    OutlookRequest, ProgressUpdate, Report, RootTask, SpanOutcome, SpanQuery, SubmitJob,
    SubtaskSpec, TaskIdentifier, TaskQuery, TaskReport, TaskState,
};
use tessera_server::{PostgresStore, SqliteStore, Store, StoreConfig};

const T0: u64 = 1_800_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn config() -> StoreConfig {
    StoreConfig {
        lease: Duration::from_secs(10),
        retry_base: Duration::from_secs(2),
        retry_max: Duration::from_secs(60),
        max_lost: 3,
        max_job_tasks: 1_000,
    }
}

fn id(name: &str, version: &str) -> TaskIdentifier {
    TaskIdentifier::parse(name, version).unwrap()
}

fn job(name: &str, root: &str, max_retries: u32) -> SubmitJob {
    SubmitJob {
        name: name.into(),
        root: RootTask {
            identifier: id(root, "v0.0"),
            input: json!({"n": 1}),
            max_retries,
            display: None,
        },
        cluster: None,
    }
}

fn claim_req(runner: &str, ids: &[TaskIdentifier], max: u32) -> ClaimRequest {
    ClaimRequest {
        runner_id: runner.into(),
        cluster: "default".into(),
        identifiers: ids.to_vec(),
        max,
        wait_ms: 0,
        return_when_idle: false,
    }
}

fn all() -> Vec<TaskIdentifier> {
    ["Root", "Leaf", "A", "B", "C"]
        .iter()
        .map(|n| id(n, "v0.0"))
        .collect()
}

fn sub(name: &str, deps: Vec<u32>) -> SubtaskSpec {
    SubtaskSpec {
        identifier: id(name, "v0.0"),
        input: json!({"name": name}),
        display: None,
        depends_on: deps,
        max_retries: 0,
        cluster: None,
    }
}

fn computed(subtasks: Vec<SubtaskSpec>) -> Report {
    Report::Computed {
        subtasks,
        display: None,
        progress: vec![],
    }
}

async fn claim(store: &dyn Store, max: u32, now: u64) -> Vec<ClaimedTask> {
    store
        .claim(&claim_req("r1", &all(), max), now)
        .await
        .unwrap()
}

async fn report(store: &dyn Store, task: &ClaimedTask, report: Report, now: u64) -> bool {
    let results = store
        .report(
            "r1",
            &[TaskReport {
                task_id: task.task_id.clone(),
                lease: task.lease,
                report,
            }],
            now,
        )
        .await
        .unwrap();
    results[0].accepted
}

pub async fn claim_complete_and_subtasks(store: Arc<dyn Store>) {
    let s = &*store;
    let j = s.submit(&job("fan", "Root", 0), T0).await.unwrap();
    assert_eq!(j.state, JobState::Queued);
    assert_eq!(j.task_counts.queued, 1);
    let root = claim(s, 10, T0 + 1).await;
    assert_eq!(root.len(), 1);
    assert_eq!(root[0].identifier, id("Root", "v0.0"));
    assert_eq!(root[0].input, json!({"n": 1}));
    assert_eq!(root[0].attempt, 1);
    assert_eq!(s.job(&j.id).await.unwrap().state, JobState::Running);
    assert!(
        claim(s, 10, T0 + 2).await.is_empty(),
        "a running task is not handed out twice"
    );
    let progress = vec![ProgressUpdate {
        label: "leaves".into(),
        done: 0,
        total: 3,
    }];
    let done = Report::Computed {
        subtasks: vec![
            sub("Leaf", vec![]),
            sub("Leaf", vec![]),
            sub("Leaf", vec![]),
        ],
        display: Some("Root!".into()),
        progress,
    };
    assert!(report(s, &root[0], done, T0 + SEC).await);
    let leaves = claim(s, 10, T0 + SEC + 1).await;
    assert_eq!(leaves.len(), 3);
    assert!(leaves.iter().all(|l| l.job_id == j.id));
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(leaf.input, json!({"name": "Leaf"}));
        let p = vec![ProgressUpdate {
            label: "leaves".into(),
            done: 1,
            total: 0,
        }];
        let r = Report::Computed {
            subtasks: vec![],
            display: Some(format!("Leaf({i})")),
            progress: p,
        };
        assert!(report(s, leaf, r, T0 + 2 * SEC).await);
    }
    let j = s.job(&j.id).await.unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.task_counts.computed, 4);
    assert_eq!(j.task_counts.total(), 4);
    assert_eq!(
        j.progress,
        vec![ProgressUpdate {
            label: "leaves".into(),
            done: 3,
            total: 3
        }]
    );
    assert_eq!(j.started_at, Some(T0 + 1));
    assert_eq!(j.finished_at, Some(T0 + 2 * SEC));
    // Summed task time: root 1 s, three leaves ~1 s each.
    assert_eq!(j.task_time_ns, (SEC - 1) + 3 * (SEC - 1));
    let tasks = s.tasks(&j.id, &TaskQuery::default()).await.unwrap().tasks;
    assert_eq!(tasks[0].display, "Root!");
    assert_eq!(tasks[0].children, 3);
    assert!(
        tasks
            .iter()
            .all(|t| t.completed && t.state == TaskState::Computed)
    );
    assert_eq!(tasks[2].display, "Leaf(1)");
}

pub async fn version_rule(store: Arc<dyn Store>) {
    let s = &*store;
    let mut j = job("v", "Root", 0);
    j.root.identifier = id("Root", "v1.2");
    s.submit(&j, T0).await.unwrap();
    for (runner, claims) in [
        ("v1.1", false),
        ("v0.9", false),
        ("v2.2", false),
        ("v1.2", true),
    ] {
        let got = s
            .claim(&claim_req("r", &[id("Root", runner)], 1), T0)
            .await
            .unwrap();
        assert_eq!(!got.is_empty(), claims, "runner {runner}");
    }
    let mut j = job("v", "Root", 0);
    j.root.identifier = id("Root", "v1.0");
    s.submit(&j, T0).await.unwrap();
    let got = s
        .claim(&claim_req("r", &[id("Root", "v1.7")], 1), T0)
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "a newer minor runs an older task");
    assert!(
        s.claim(&claim_req("r", &[id("Other", "v1.7")], 1), T0)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn cluster_rule(store: Arc<dyn Store>) {
    let s = &*store;
    let mut j = job("gpu-job", "Root", 0);
    j.cluster = Some("gpu".into());
    let j = s.submit(&j, T0).await.unwrap();
    assert_eq!(j.cluster, "gpu");
    assert!(claim(s, 1, T0).await.is_empty());
    let mut req = claim_req("g", &all(), 1);
    req.cluster = "gpu".into();
    let root = s.claim(&req, T0).await.unwrap();
    assert_eq!(root.len(), 1);
    // Subtasks inherit the cluster unless they name one.
    let mut other = sub("Leaf", vec![]);
    other.cluster = Some("default".into());
    assert!(
        report(
            s,
            &root[0],
            computed(vec![sub("Leaf", vec![]), other]),
            T0 + 1
        )
        .await
    );
    let on_default = claim(s, 10, T0 + 2).await;
    assert_eq!(on_default.len(), 1);
    assert_eq!(s.claim(&req, T0 + 2).await.unwrap().len(), 1);
}

pub async fn fail_retries_with_backoff_then_fails_the_job(store: Arc<dyn Store>) {
    let s = &*store;
    let j = s.submit(&job("retry", "Root", 2), T0).await.unwrap();
    let mut now = T0;
    for attempt in 1..=3u32 {
        let got = claim(s, 1, now).await;
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].attempt, attempt);
        let reason = format!("boom {attempt}");
        assert!(
            report(
                s,
                &got[0],
                Report::Failed {
                    reason,
                    display: None
                },
                now + 1
            )
            .await
        );
        now += 2;
        let t = s.task(&got[0].task_id).await.unwrap();
        if attempt < 3 {
            assert_eq!(t.state, TaskState::Queued);
            assert_eq!(t.retries_used, attempt);
            assert!(claim(s, 1, now).await.is_empty(), "claimed during backoff");
            // Backoff: 2 s × 2^(attempt-1), ±25 %.
            let backoff = 2 * SEC * (1 << (attempt - 1));
            assert!(claim(s, 1, now + backoff * 3 / 4 - 10).await.is_empty());
            now += backoff * 5 / 4 + 1;
            assert!(s.next_retry_at().await.unwrap().is_some());
        } else {
            assert_eq!(t.state, TaskState::Failed);
            assert_eq!(t.error.as_deref(), Some("boom 3"));
        }
    }
    let j = s.job(&j.id).await.unwrap();
    assert_eq!(j.state, JobState::Failed);
    let spans = s.spans(&j.id, &SpanQuery::default()).await.unwrap().spans;
    assert_eq!(spans.len(), 3);
    assert!(spans.iter().all(|sp| sp.outcome == SpanOutcome::Failed));
    assert_eq!(spans[2].error.as_deref(), Some("boom 3"));
}

pub async fn a_failed_job_hands_out_no_more_tasks(store: Arc<dyn Store>) {
    let s = &*store;
    s.submit(&job("f", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    assert!(
        report(
            s,
            &root[0],
            computed(vec![sub("A", vec![]), sub("B", vec![])]),
            T0 + 1
        )
        .await
    );
    let a = s
        .claim(&claim_req("r", &[id("A", "v0.0")], 1), T0 + 2)
        .await
        .unwrap();
    assert!(
        report(
            s,
            &a[0],
            Report::Failed {
                reason: "no".into(),
                display: None
            },
            T0 + 3
        )
        .await
    );
    assert!(
        claim(s, 10, T0 + 4).await.is_empty(),
        "B must not run in a failed job"
    );
}

pub async fn retry_job_requeues_failed_tasks(store: Arc<dyn Store>) {
    let s = &*store;
    let j = s.submit(&job("r", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    assert!(
        report(
            s,
            &root[0],
            Report::Failed {
                reason: "x".into(),
                display: None
            },
            T0 + 1
        )
        .await
    );
    assert_eq!(s.job(&j.id).await.unwrap().state, JobState::Failed);
    let again = s.retry(&j.id, T0 + 2).await.unwrap();
    assert_eq!(
        again.state,
        JobState::Running,
        "it ran before, so it is running again"
    );
    assert_eq!(again.task_counts.queued, 1);
    let root = claim(s, 1, T0 + 3).await;
    assert_eq!(root[0].attempt, 2);
    assert!(report(s, &root[0], computed(vec![]), T0 + 4).await);
    assert_eq!(s.job(&j.id).await.unwrap().state, JobState::Completed);
    let err = s.retry(&j.id, T0 + 5).await.unwrap_err();
    assert!(
        err.to_string().contains("no failed or canceled tasks"),
        "{err}"
    );
}

pub async fn abandon_requeues_without_spending_a_retry(store: Arc<dyn Store>) {
    let s = &*store;
    s.submit(&job("a", "Root", 0), T0).await.unwrap();
    let first = claim(s, 1, T0).await;
    assert!(report(s, &first[0], Report::Abandoned, T0 + 1).await);
    let t = s.task(&first[0].task_id).await.unwrap();
    assert_eq!((t.state, t.retries_used), (TaskState::Queued, 0));
    let second = claim(s, 1, T0 + 2).await;
    assert_eq!(second.len(), 1, "requeued at once, no backoff");
    assert_eq!(second[0].attempt, 2);
}

pub async fn expired_leases_requeue_without_spending_a_retry(store: Arc<dyn Store>) {
    let s = &*store;
    let j = s.submit(&job("l", "Root", 0), T0).await.unwrap();
    let first = claim(s, 1, T0).await;
    assert_eq!(s.reap(T0 + 5 * SEC).await.unwrap(), 0, "not yet expired");
    assert_eq!(s.reap(T0 + 11 * SEC).await.unwrap(), 1);
    let t = s.task(&first[0].task_id).await.unwrap();
    assert_eq!((t.state, t.retries_used), (TaskState::Queued, 0));
    let second = claim(s, 1, T0 + 12 * SEC).await;
    assert_eq!(second[0].lease, first[0].lease + 1);
    // Fencing: the first attempt's late report is refused; the second's is accepted.
    assert!(!report(s, &first[0], computed(vec![]), T0 + 13 * SEC).await);
    assert_eq!(
        s.task(&first[0].task_id).await.unwrap().state,
        TaskState::Running
    );
    assert!(report(s, &second[0], computed(vec![]), T0 + 13 * SEC).await);
    let spans = s.spans(&j.id, &SpanQuery::default()).await.unwrap().spans;
    let outcomes: Vec<SpanOutcome> = spans.iter().map(|sp| sp.outcome).collect();
    assert_eq!(outcomes, [SpanOutcome::Expired, SpanOutcome::Computed]);
}

pub async fn a_task_lost_three_times_in_a_row_fails(store: Arc<dyn Store>) {
    let s = &*store;
    let j = s.submit(&job("lost", "Root", 0), T0).await.unwrap();
    let mut now = T0;
    let mut last = Vec::new();
    for round in 1..=3u64 {
        last = claim(s, 1, now).await;
        assert_eq!(last.len(), 1, "round {round}: requeued");
        now += 11 * SEC;
        assert_eq!(s.reap(now).await.unwrap(), 1);
        // A report in between would start the count over; an abandon is one.
        if round == 1 {
            let again = claim(s, 1, now).await;
            assert!(report(s, &again[0], Report::Abandoned, now).await);
        }
    }
    let t = s.task(&last[0].task_id).await.unwrap();
    assert_eq!(t.state, TaskState::Queued, "the abandon reset the count");
    let fourth = claim(s, 1, now).await;
    now += 11 * SEC;
    assert_eq!(s.reap(now).await.unwrap(), 1);
    let t = s.task(&fourth[0].task_id).await.unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(
        t.error
            .as_deref()
            .unwrap_or_default()
            .contains("lost by its runner 3 times in a row"),
        "{t:?}"
    );
    assert_eq!(s.job(&j.id).await.unwrap().state, JobState::Failed);
    assert!(claim(s, 1, now + SEC).await.is_empty());
}

pub async fn a_report_after_expiry_is_refused_even_before_the_reaper(store: Arc<dyn Store>) {
    let s = &*store;
    s.submit(&job("late", "Root", 0), T0).await.unwrap();
    let got = claim(s, 1, T0).await;
    let results = s
        .report(
            "r1",
            &[TaskReport {
                task_id: got[0].task_id.clone(),
                lease: got[0].lease,
                report: computed(vec![]),
            }],
            T0 + 11 * SEC,
        )
        .await
        .unwrap();
    assert!(!results[0].accepted);
    assert!(
        results[0].error.as_deref().unwrap().contains("expired"),
        "{results:?}"
    );
}

pub async fn extending_keeps_the_lease(store: Arc<dyn Store>) {
    let s = &*store;
    s.submit(&job("e", "Root", 0), T0).await.unwrap();
    let got = claim(s, 1, T0).await;
    let lease = LeaseRef {
        task_id: got[0].task_id.clone(),
        lease: got[0].lease,
    };
    let st = s
        .extend("r1", std::slice::from_ref(&lease), T0 + 8 * SEC)
        .await
        .unwrap();
    assert!(st[0].held && !st[0].canceled);
    assert_eq!(st[0].lease_ms, 10_000);
    assert_eq!(s.reap(T0 + 15 * SEC).await.unwrap(), 0, "extended to 18 s");
    assert_eq!(s.reap(T0 + 19 * SEC).await.unwrap(), 1);
    let st = s.extend("r1", &[lease], T0 + 20 * SEC).await.unwrap();
    assert!(!st[0].held, "a reaped lease cannot be extended");
}

pub async fn cancel_stops_handing_out_and_running_attempts_learn_it(store: Arc<dyn Store>) {
    let s = &*store;
    let j = s.submit(&job("c", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    assert!(
        report(
            s,
            &root[0],
            computed(vec![sub("A", vec![]), sub("B", vec![])]),
            T0 + 1
        )
        .await
    );
    let a = s
        .claim(&claim_req("r", &[id("A", "v0.0")], 1), T0 + 2)
        .await
        .unwrap();
    let c = s.cancel(&j.id, T0 + 3).await.unwrap();
    assert_eq!(c.state, JobState::Canceled);
    assert!(c.canceled);
    assert_eq!(c.task_counts.canceled, 1, "queued B canceled");
    assert!(claim(s, 10, T0 + 4).await.is_empty());
    let st = s
        .extend(
            "r",
            &[LeaseRef {
                task_id: a[0].task_id.clone(),
                lease: a[0].lease,
            }],
            T0 + 5,
        )
        .await
        .unwrap();
    assert!(st[0].held && st[0].canceled);
    assert!(report(s, &a[0], Report::Canceled, T0 + 6).await);
    let c = s.job(&j.id).await.unwrap();
    assert_eq!((c.task_counts.canceled, c.task_counts.running), (2, 0));
    // Retry brings the canceled tasks back.
    let r = s.retry(&j.id, T0 + 7).await.unwrap();
    assert_eq!(r.task_counts.queued, 2);
    assert!(!r.canceled);
    assert_eq!(claim(s, 10, T0 + 8).await.len(), 2);
}

pub async fn depends_on_waits_for_the_whole_subtree(store: Arc<dyn Store>) {
    let s = &*store;
    s.submit(&job("d", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    let subs = vec![sub("A", vec![]), sub("B", vec![0]), sub("C", vec![0, 1])];
    assert!(report(s, &root[0], computed(subs), T0 + 1).await);
    let ready = claim(s, 10, T0 + 2).await;
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].identifier.name, "A");
    // A computes but fans out: B waits until A's child is computed too.
    assert!(report(s, &ready[0], computed(vec![sub("Leaf", vec![])]), T0 + 3).await);
    let leaf = claim(s, 10, T0 + 4).await;
    assert_eq!(leaf.len(), 1);
    assert_eq!(leaf[0].identifier.name, "Leaf");
    assert!(report(s, &leaf[0], computed(vec![]), T0 + 5).await);
    let b = claim(s, 10, T0 + 6).await;
    assert_eq!(
        b.iter()
            .map(|t| t.identifier.name.as_str())
            .collect::<Vec<_>>(),
        ["B"]
    );
    assert!(report(s, &b[0], computed(vec![]), T0 + 7).await);
    let c = claim(s, 10, T0 + 8).await;
    assert_eq!(c[0].identifier.name, "C");
    let deps = s.task(&c[0].task_id).await.unwrap().depends_on;
    assert_eq!(deps.len(), 2);
}

pub async fn oldest_job_first_and_depth_first_within_a_job(store: Arc<dyn Store>) {
    let s = &*store;
    let first = s.submit(&job("first", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    assert_eq!(root[0].job_id, first.id);
    assert!(
        report(
            s,
            &root[0],
            computed(vec![sub("A", vec![]), sub("B", vec![])]),
            T0 + 1
        )
        .await
    );
    let second = s.submit(&job("second", "Root", 0), T0 + 2).await.unwrap();
    let a = s
        .claim(&claim_req("r", &[id("A", "v0.0")], 1), T0 + 3)
        .await
        .unwrap();
    assert!(report(s, &a[0], computed(vec![sub("C", vec![])]), T0 + 4).await);
    // Queued: first/B, first/A/C, second/Root. Depth-first in the oldest job: C, then B.
    let order: Vec<(String, String)> = claim(s, 10, T0 + 5)
        .await
        .into_iter()
        .map(|t| (t.job_id, t.identifier.name))
        .collect();
    assert_eq!(
        order,
        [
            (first.id.clone(), "C".to_string()),
            (first.id.clone(), "B".to_string()),
            (second.id.clone(), "Root".to_string())
        ]
    );
}

pub async fn job_listing_filters_and_paginates(store: Arc<dyn Store>) {
    let s = &*store;
    let mut ids = Vec::new();
    for i in 0..7 {
        let name = if i % 2 == 0 {
            format!("even-{i}")
        } else {
            format!("odd-{i}")
        };
        ids.push(
            s.submit(&job(&name, "Root", 0), T0 + i * SEC)
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .jobs(&JobFilter {
                cursor: cursor.clone(),
                limit: Some(3),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let odd = s
        .jobs(&JobFilter {
            name: Some("odd".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(odd.jobs.len(), 3);
    let window = JobFilter {
        since: Some(T0 + 2 * SEC),
        until: Some(T0 + 4 * SEC),
        ..Default::default()
    };
    assert_eq!(s.jobs(&window).await.unwrap().jobs.len(), 2);
    claim(s, 1, T0 + 10 * SEC).await;
    let running = s
        .jobs(&JobFilter {
            state: Some(JobState::Running),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.jobs.len(), 1);
    assert_eq!(
        running.jobs[0].id, ids[0],
        "the oldest job's root was claimed"
    );
    let queued = s
        .jobs(&JobFilter {
            state: Some(JobState::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.jobs.len(), 6);
    let bad = s
        .jobs(&JobFilter {
            limit: Some(100_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("at most 500"), "{bad}");
}

pub async fn tasks_paginate_depth_first_and_by_parent(store: Arc<dyn Store>) {
    let s = &*store;
    let j = s.submit(&job("t", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    let subs: Vec<SubtaskSpec> = (0..25).map(|_| sub("Leaf", vec![])).collect();
    assert!(report(s, &root[0], computed(subs), T0 + 1).await);
    let mut all_tasks = Vec::new();
    let mut cursor = None;
    loop {
        let q = TaskQuery {
            cursor: cursor.clone(),
            limit: Some(10),
            ..Default::default()
        };
        let page = s.tasks(&j.id, &q).await.unwrap();
        all_tasks.extend(page.tasks);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(all_tasks.len(), 26);
    assert_eq!(all_tasks[0].id, root[0].task_id);
    assert_eq!(all_tasks[0].depth, 0);
    assert!(
        all_tasks[1..]
            .iter()
            .all(|t| t.depth == 1 && t.parent_id.as_deref() == Some(root[0].task_id.as_str()))
    );
    let created: Vec<u64> = all_tasks[1..].iter().map(|t| t.created_at).collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]));
    let children = s
        .tasks(
            &j.id,
            &TaskQuery {
                parent: Some(root[0].task_id.clone()),
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(children.tasks.len(), 25);
    let missing = s.tasks("nope", &TaskQuery::default()).await.unwrap_err();
    assert!(missing.to_string().contains("job nope does not exist"));
}

pub async fn outlook_counts_work_a_runner_could_do(store: Arc<dyn Store>) {
    let s = &*store;
    let req = OutlookRequest {
        cluster: "default".into(),
        identifiers: vec![id("Leaf", "v0.0")],
    };
    assert!(!s.outlook(&req).await.unwrap().has_work());
    s.submit(&job("o", "Root", 0), T0).await.unwrap();
    let o = s.outlook(&req).await.unwrap();
    assert_eq!(
        (o.queued, o.running),
        (0, 0),
        "a Leaf runner cannot run Root"
    );
    let root = claim(s, 1, T0).await;
    let o = s.outlook(&req).await.unwrap();
    assert_eq!(
        (o.queued, o.running),
        (0, 1),
        "the running root may still fan out"
    );
    assert!(report(s, &root[0], computed(vec![sub("Leaf", vec![])]), T0 + 1).await);
    assert_eq!(s.outlook(&req).await.unwrap().queued, 1);
}

pub async fn logs_filter_paginate_and_refuse_unknown_tasks(store: Arc<dyn Store>) {
    let s = &*store;
    let j = s.submit(&job("logs", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    let task = root[0].task_id.clone();
    let line = |i: u64, level: Level| LogLine {
        time_unix_nano: T0 + 1000 - i,
        level,
        message: format!("line {i}"),
        task_id: task.clone(),
        job_id: String::new(),
        runner_id: "r1".into(),
        attempt: 1,
        fields: serde_json::Map::from_iter([("i".to_string(), json!(i))]),
    };
    let lines: Vec<LogLine> = (0..10)
        .map(|i| {
            line(
                i,
                if i % 3 == 0 {
                    Level::Error
                } else {
                    Level::Info
                },
            )
        })
        .collect();
    assert_eq!(s.add_logs(lines).await.unwrap(), 10);
    let page = s
        .logs(
            &j.id,
            &LogQuery {
                limit: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.logs[0].message, "line 9",
        "time order, not arrival order"
    );
    assert_eq!(page.logs[0].job_id, j.id);
    assert_eq!(page.logs[0].fields["i"], json!(9));
    let rest = s
        .logs(
            &j.id,
            &LogQuery {
                cursor: page.next_cursor.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.logs.len(), 6);
    assert_eq!(rest.logs.last().unwrap().message, "line 0");
    let errors = s
        .logs(
            &j.id,
            &LogQuery {
                level: Some(Level::Warn),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(errors.logs.len(), 4);
    let none = s
        .logs(
            &j.id,
            &LogQuery {
                task: Some("other".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(none.logs.is_empty());
    let mut bad = line(99, Level::Info);
    bad.task_id = "ghost".into();
    let err = s
        .add_logs(vec![line(50, Level::Info), bad])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
    let after = s.logs(&j.id, &LogQuery::default()).await.unwrap();
    assert_eq!(after.logs.len(), 10, "a refused batch stores nothing");
}

pub async fn job_state_derivation(store: Arc<dyn Store>) {
    let s = &*store;
    let j = s.submit(&job("states", "Root", 0), T0).await.unwrap();
    assert_eq!(j.state, JobState::Queued);
    assert_eq!(j.finished_at, None);
    let root = claim(s, 1, T0).await;
    assert_eq!(s.job(&j.id).await.unwrap().state, JobState::Running);
    assert!(report(s, &root[0], computed(vec![sub("Leaf", vec![])]), T0 + 1).await);
    let mid = s.job(&j.id).await.unwrap();
    assert_eq!(
        mid.state,
        JobState::Running,
        "root computed but its child is queued"
    );
    assert_eq!(mid.finished_at, None);
    let leaf = claim(s, 1, T0 + 2).await;
    assert!(report(s, &leaf[0], computed(vec![]), T0 + 3).await);
    let done = s.job(&j.id).await.unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.finished_at, Some(T0 + 3));
    let err = s.cancel(&j.id, T0 + 4).await.unwrap_err();
    assert!(err.to_string().contains("already completed"), "{err}");
    assert!(
        s.job("missing")
            .await
            .unwrap_err()
            .to_string()
            .contains("does not exist")
    );
}

pub async fn invalid_submissions_are_refused(store: Arc<dyn Store>) {
    let s = &*store;
    let mut bad = job("", "Root", 0);
    assert!(
        s.submit(&bad, T0)
            .await
            .unwrap_err()
            .to_string()
            .contains("job name")
    );
    bad.name = "ok".into();
    bad.cluster = Some("\u{7}".into());
    assert!(
        s.submit(&bad, T0)
            .await
            .unwrap_err()
            .to_string()
            .contains("cluster")
    );
    assert!(s.jobs(&JobFilter::default()).await.unwrap().jobs.is_empty());
}

pub async fn invalid_subtasks_fail_the_attempt(store: Arc<dyn Store>) {
    let s = &*store;
    s.submit(&job("bad-subs", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    assert!(report(s, &root[0], computed(vec![sub("A", vec![3])]), T0 + 1).await);
    let t = s.task(&root[0].task_id).await.unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.error.unwrap().contains("invalid subtasks"));
}

/// Reports a batch at once; returns whether each was accepted.
async fn report_batch(store: &dyn Store, batch: &[(&ClaimedTask, Report)], now: u64) -> Vec<bool> {
    let reports: Vec<TaskReport> = batch
        .iter()
        .map(|(t, r)| TaskReport {
            task_id: t.task_id.clone(),
            lease: t.lease,
            report: r.clone(),
        })
        .collect();
    let results = store.report("r1", &reports, now).await.unwrap();
    assert_eq!(results.len(), reports.len(), "one verdict per report");
    results.iter().map(|r| r.accepted).collect()
}

/// A root with `n` leaves, all claimed: (job id, root, leaves).
async fn fanned_out(
    s: &dyn Store,
    n: usize,
    max_retries: u32,
) -> (String, ClaimedTask, Vec<ClaimedTask>) {
    let j = s.submit(&job("batch", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await.remove(0);
    let leaves = (0..n)
        .map(|_| SubtaskSpec {
            max_retries,
            ..sub("Leaf", vec![])
        })
        .collect();
    assert!(report(s, &root, computed(leaves), T0 + 1).await);
    let leaves = claim(s, 100, T0 + 2).await;
    assert_eq!(leaves.len(), n);
    (j.id, root, leaves)
}

pub async fn batch_the_same_task_twice_counts_once(store: Arc<dyn Store>) {
    let s = &*store;
    let (job_id, _, leaves) = fanned_out(s, 1, 3).await;
    let failed = Report::Failed {
        reason: "late".into(),
        display: None,
    };
    let verdicts = report_batch(
        s,
        &[(&leaves[0], computed(vec![])), (&leaves[0], failed)],
        T0 + 3,
    )
    .await;
    assert_eq!(verdicts, [true, false]);
    let t = s.task(&leaves[0].task_id).await.unwrap();
    assert_eq!((t.state, t.retries_used), (TaskState::Computed, 0));
    assert_eq!(s.job(&job_id).await.unwrap().state, JobState::Completed);
    let spans = s.spans(&job_id, &SpanQuery::default()).await.unwrap().spans;
    assert_eq!(spans.len(), 2, "one span per attempt, closed once");
}

pub async fn batch_a_computed_and_a_failed_sibling(store: Arc<dyn Store>) {
    let s = &*store;
    let (job_id, root, leaves) = fanned_out(s, 2, 0).await;
    let failed = Report::Failed {
        reason: "boom".into(),
        display: None,
    };
    let verdicts = report_batch(
        s,
        &[(&leaves[0], computed(vec![])), (&leaves[1], failed)],
        T0 + 3,
    )
    .await;
    assert_eq!(verdicts, [true, true]);
    assert_eq!(
        s.task(&leaves[0].task_id).await.unwrap().state,
        TaskState::Computed
    );
    assert!(s.task(&leaves[0].task_id).await.unwrap().completed);
    assert_eq!(
        s.task(&leaves[1].task_id).await.unwrap().state,
        TaskState::Failed
    );
    assert!(
        !s.task(&root.task_id).await.unwrap().completed,
        "one child failed"
    );
    let j = s.job(&job_id).await.unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert_eq!((j.task_counts.computed, j.task_counts.failed), (2, 1));
}

pub async fn batch_siblings_complete_their_parent_and_job(store: Arc<dyn Store>) {
    let s = &*store;
    let (job_id, root, leaves) = fanned_out(s, 3, 0).await;
    let batch: Vec<(&ClaimedTask, Report)> = leaves.iter().map(|l| (l, computed(vec![]))).collect();
    assert_eq!(report_batch(s, &batch, T0 + 3).await, [true, true, true]);
    assert!(s.task(&root.task_id).await.unwrap().completed);
    let j = s.job(&job_id).await.unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.finished_at, Some(T0 + 3));
}

pub async fn batch_completion_walks_up_several_levels(store: Arc<dyn Store>) {
    let s = &*store;
    let (job_id, root, mid) = fanned_out(s, 2, 0).await;
    // One middle task fans out one leaf; the other is a leaf itself. Then the leaf and the
    // other middle task report in one batch: the first middle task, then the root, complete.
    assert!(report(s, &mid[0], computed(vec![sub("Leaf", vec![])]), T0 + 3).await);
    let leaf = claim(s, 10, T0 + 4).await;
    assert_eq!(leaf.len(), 1);
    let batch = [(&leaf[0], computed(vec![])), (&mid[1], computed(vec![]))];
    assert_eq!(report_batch(s, &batch, T0 + 5).await, [true, true]);
    for id in [&mid[0].task_id, &root.task_id] {
        assert!(
            s.task(id).await.unwrap().completed,
            "{id} should have completed"
        );
    }
    assert_eq!(s.job(&job_id).await.unwrap().state, JobState::Completed);
}

pub async fn batch_a_refused_report_does_not_spoil_its_neighbours(store: Arc<dyn Store>) {
    let s = &*store;
    let (_, _, leaves) = fanned_out(s, 3, 0).await;
    let mut stale = leaves[1].clone();
    stale.lease += 7;
    let missing = ClaimedTask {
        task_id: "no-such-task".into(),
        ..leaves[2].clone()
    };
    let batch = [
        (&leaves[0], computed(vec![])),
        (&stale, computed(vec![])),
        (&missing, computed(vec![])),
        (&leaves[2], computed(vec![])),
    ];
    assert_eq!(
        report_batch(s, &batch, T0 + 3).await,
        [true, false, false, true]
    );
    assert_eq!(
        s.task(&leaves[1].task_id).await.unwrap().state,
        TaskState::Running
    );
    assert_eq!(
        s.task(&leaves[2].task_id).await.unwrap().state,
        TaskState::Computed
    );
}

pub async fn an_unrequested_canceled_report_gives_the_task_back(store: Arc<dyn Store>) {
    let s = &*store;
    let (job_id, _, leaves) = fanned_out(s, 1, 0).await;
    assert!(report(s, &leaves[0], Report::Canceled, T0 + 3).await);
    let t = s.task(&leaves[0].task_id).await.unwrap();
    assert_eq!((t.state, t.retries_used), (TaskState::Queued, 0));
    assert_eq!(s.job(&job_id).await.unwrap().state, JobState::Running);
    let again = claim(s, 10, T0 + 4).await;
    assert_eq!(again.len(), 1, "the task is claimable again, not stuck");
    assert!(report(s, &again[0], computed(vec![]), T0 + 5).await);
    assert_eq!(s.job(&job_id).await.unwrap().state, JobState::Completed);
}

pub async fn progress_saturates_instead_of_poisoning_the_job(store: Arc<dyn Store>) {
    let s = &*store;
    let (job_id, _, leaves) = fanned_out(s, 2, 0).await;
    let huge = || Report::Computed {
        subtasks: vec![],
        display: None,
        progress: vec![ProgressUpdate {
            label: "bytes".into(),
            done: u64::MAX,
            total: 1,
        }],
    };
    assert!(report(s, &leaves[0], huge(), T0 + 3).await);
    assert!(report(s, &leaves[1], huge(), T0 + 4).await);
    let j = s.job(&job_id).await.unwrap();
    assert_eq!(j.progress[0].done, i64::MAX as u64);
    assert_eq!(j.progress[0].total, 2);
    assert_eq!(s.jobs(&JobFilter::default()).await.unwrap().jobs.len(), 1);
}

pub async fn a_job_may_not_grow_past_its_task_limit(store: Arc<dyn Store>) {
    let s = &*store;
    // The limit is 1,000 tasks: the root and 998 subtasks fit, one more does not.
    let j = s.submit(&job("big", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    let leaves: Vec<SubtaskSpec> = (0..998).map(|_| sub("A", vec![])).collect();
    let mut with_parent = leaves.clone();
    with_parent.push(sub("B", vec![]));
    assert!(report(s, &root[0], computed(with_parent), T0 + 1).await);
    let b = s
        .claim(&claim_req("r", &[id("B", "v0.0")], 1), T0 + 2)
        .await
        .unwrap();
    assert_eq!(s.job(&j.id).await.unwrap().task_counts.total(), 1_000);
    // B would add one more: its attempt fails, saying why, and nothing is added.
    assert!(report(s, &b[0], computed(vec![sub("C", vec![])]), T0 + 3).await);
    let t = s.task(&b[0].task_id).await.unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(
        t.error
            .as_deref()
            .unwrap_or_default()
            .contains("would give its job 1001 tasks, more than the 1000"),
        "{t:?}"
    );
    assert_eq!(s.job(&j.id).await.unwrap().task_counts.total(), 1_000);
}

pub async fn duplicate_dependencies_fail_the_attempt(store: Arc<dyn Store>) {
    let s = &*store;
    s.submit(&job("dup", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    let subs = vec![sub("A", vec![]), sub("B", vec![0, 0])];
    assert!(report(s, &root[0], computed(subs), T0 + 1).await);
    let t = s.task(&root[0].task_id).await.unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.error.unwrap().contains("twice"));
}

pub async fn a_runner_may_serve_a_thousand_identifiers(store: Arc<dyn Store>) {
    let s = &*store;
    s.submit(&job("many", "Root", 0), T0).await.unwrap();
    let mut ids: Vec<TaskIdentifier> = (0..999).map(|n| id(&format!("T{n}"), "v0.0")).collect();
    ids.push(id("Root", "v0.0"));
    let request = OutlookRequest {
        cluster: "default".into(),
        identifiers: ids.clone(),
    };
    assert_eq!(s.outlook(&request).await.unwrap().queued, 1);
    let got = s.claim(&claim_req("r1", &ids, 10), T0 + 1).await.unwrap();
    assert_eq!(got.len(), 1);
}

/// After a test: every job's kept counts (tasks by state, task time, last end) agree with a
/// count of its rows, whatever the test did to it.
async fn audit_every_job(store: &dyn Store, backend: &str) {
    let mut filter = JobFilter {
        limit: Some(500),
        ..JobFilter::default()
    };
    loop {
        let page = store.jobs(&filter).await.unwrap();
        for job in &page.jobs {
            let wrong = store.audit(&job.id).await.unwrap();
            assert!(
                wrong.is_empty(),
                "{backend}: job {} ({}) keeps counts its rows disagree with: {wrong:?}",
                job.id,
                job.name
            );
        }
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => return,
        }
    }
}

macro_rules! stores {
    ($backend:ident, $make:path; $($test:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some((store, _guard)) = $make().await else { return };
                    super::$test(store.clone()).await;
                    super::audit_every_job(&*store, stringify!($backend)).await;
                }
            )+
        }
    };
}

async fn sqlite() -> Option<(Arc<dyn Store>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("tessera.db"), config()).unwrap();
    Some((Arc::new(store), dir))
}

/// A fresh database on the server `TESSERA_TEST_POSTGRES` names (see
/// scripts/postgres-for-tests.sh); CI sets it, elsewhere the PostgreSQL runs say they skipped.
async fn postgres() -> Option<(Arc<dyn Store>, ())> {
    let url = tessera_testkit::postgres::fresh_database().await?;
    let store = PostgresStore::connect(&url, config()).await.unwrap();
    Some((Arc::new(store), ()))
}

macro_rules! suite {
    ($backend:ident, $make:path) => {
        stores!($backend, $make;
            claim_complete_and_subtasks,
            version_rule,
            cluster_rule,
            fail_retries_with_backoff_then_fails_the_job,
            a_failed_job_hands_out_no_more_tasks,
            retry_job_requeues_failed_tasks,
            abandon_requeues_without_spending_a_retry,
            expired_leases_requeue_without_spending_a_retry,
            a_report_after_expiry_is_refused_even_before_the_reaper,
            a_task_lost_three_times_in_a_row_fails,
            extending_keeps_the_lease,
            cancel_stops_handing_out_and_running_attempts_learn_it,
            depends_on_waits_for_the_whole_subtree,
            oldest_job_first_and_depth_first_within_a_job,
            job_listing_filters_and_paginates,
            tasks_paginate_depth_first_and_by_parent,
            outlook_counts_work_a_runner_could_do,
            logs_filter_paginate_and_refuse_unknown_tasks,
            job_state_derivation,
            invalid_submissions_are_refused,
            invalid_subtasks_fail_the_attempt,
            batch_the_same_task_twice_counts_once,
            batch_a_computed_and_a_failed_sibling,
            batch_siblings_complete_their_parent_and_job,
            batch_completion_walks_up_several_levels,
            batch_a_refused_report_does_not_spoil_its_neighbours,
            an_unrequested_canceled_report_gives_the_task_back,
            progress_saturates_instead_of_poisoning_the_job,
            duplicate_dependencies_fail_the_attempt,
            a_job_may_not_grow_past_its_task_limit,
            a_runner_may_serve_a_thousand_identifiers,
        );
    };
}

suite!(sqlite, super::sqlite);
suite!(postgres, super::postgres);

/// Many servers, one database: concurrent reapers requeue each expired lease exactly once, and
/// concurrent claimers never share a task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_servers_reap_and_claim_without_doubles() {
    let Some(url) = tessera_testkit::postgres::fresh_database().await else {
        return;
    };
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(
            PostgresStore::connect(&url, config()).await.unwrap(),
        ));
    }
    let s = &*stores[0];
    s.submit(&job("many", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    let leaves: Vec<SubtaskSpec> = (0..400).map(|_| sub("Leaf", vec![])).collect();
    assert!(report(s, &root[0], computed(leaves), T0 + 1).await);
    // Four servers claim at once: every leaf goes to exactly one of them.
    let claims = stores.iter().map(|st| {
        let st = st.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = st.claim(&claim_req("r", &all(), 7), T0 + 2).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|t| t.task_id));
            }
        })
    });
    let mut claimed = Vec::new();
    for c in claims.collect::<Vec<_>>() {
        claimed.extend(c.await.unwrap());
    }
    let unique: std::collections::HashSet<&String> = claimed.iter().collect();
    assert_eq!((claimed.len(), unique.len()), (400, 400));
    // Their leases expire; four reapers race: each lease is requeued once.
    let reaps = stores.iter().map(|st| {
        let st = st.clone();
        tokio::spawn(async move { st.reap(T0 + 60 * SEC).await.unwrap() })
    });
    let mut total = 0;
    for r in reaps.collect::<Vec<_>>() {
        total += r.await.unwrap();
    }
    assert_eq!(total, 400, "a lease was requeued twice or not at all");
}
