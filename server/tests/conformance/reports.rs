//! Reports: what computed, failed, abandoned and canceled attempts do, alone and in batches.

use super::*;

pub async fn claim_complete_and_subtasks(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
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
        output: None,
        output_from: None,
        cache: vec![],
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
            output: None,
            output_from: None,
            cache: vec![],
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

pub async fn fail_retries_with_backoff_then_fails_the_job(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
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
                    display: None,
                    permanent: false,
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

pub async fn invalid_subtasks_fail_the_attempt(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    s.submit(&job("bad-subs", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    assert!(report(s, &root[0], computed(vec![sub("A", vec![3])]), T0 + 1).await);
    let t = s.task(&root[0].task_id).await.unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.error.unwrap().contains("invalid subtasks"));
}

pub async fn batch_the_same_task_twice_counts_once(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let (job_id, _, leaves) = fanned_out(s, 1, 3).await;
    let failed = Report::Failed {
        permanent: false,
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
    let s = &AsDefault(&*store);
    let (job_id, root, leaves) = fanned_out(s, 2, 0).await;
    let failed = Report::Failed {
        permanent: false,
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
    let s = &AsDefault(&*store);
    let (job_id, root, leaves) = fanned_out(s, 3, 0).await;
    let batch: Vec<(&ClaimedTask, Report)> = leaves.iter().map(|l| (l, computed(vec![]))).collect();
    assert_eq!(report_batch(s, &batch, T0 + 3).await, [true, true, true]);
    assert!(s.task(&root.task_id).await.unwrap().completed);
    let j = s.job(&job_id).await.unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.finished_at, Some(T0 + 3));
}

pub async fn batch_completion_walks_up_several_levels(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
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
    let s = &AsDefault(&*store);
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
    let s = &AsDefault(&*store);
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

pub async fn duplicate_dependencies_fail_the_attempt(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    s.submit(&job("dup", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    let subs = vec![sub("A", vec![]), sub("B", vec![0, 0])];
    assert!(report(s, &root[0], computed(subs), T0 + 1).await);
    let t = s.task(&root[0].task_id).await.unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.error.unwrap().contains("twice"));
}

pub async fn a_task_failing_for_good_ends_its_job_visibly_and_logs_why(store: Arc<dyn Store>) {
    use tessera_server::testing::factory::JobPlan;
    let s = &AsDefault(&*store);
    let mut plan = JobPlan::new("follow-through", T0);
    let root = plan.root("Root", TaskState::Computed);
    let flaky = plan.child(root, "Leaf", TaskState::Running);
    plan.task(flaky).max_retries = 1;
    let fatal = plan.child(root, "Leaf", TaskState::Running);
    let waiting = plan.child(root, "Leaf", TaskState::Queued);
    let busy = plan.child(root, "A", TaskState::Running);
    let planted = plan.plant(&**s).await;
    let held = |t| ClaimedTask {
        task_id: planted.id(t).to_string(),
        job_id: planted.job_id.clone(),
        identifier: id("Leaf", "v0.0"),
        display: None,
        input: json!({}),
        attempt: 1,
        lease: 1,
        lease_ms: 10_000,
        component: None,
        cache_seq: 0,
        memory_mib: None,
        deadline_ms: None,
    };
    let failed = |reason: &str| Report::Failed {
        permanent: false,
        reason: reason.into(),
        display: None,
    };
    // A failure with a retry left: back to the queue, and an ERROR line says so.
    assert!(report_by(s, "factory", &held(flaky), failed("flaky"), T0 + SEC).await);
    assert_eq!(
        s.task(planted.id(flaky)).await.unwrap().state,
        TaskState::Queued
    );
    // A failure for good: the job fails and its queued tasks (the retry included) are canceled
    // with the reason, so nothing is left waiting in a failed job.
    assert!(report_by(s, "factory", &held(fatal), failed("boom"), T0 + 2 * SEC).await);
    let why = format!("not run: task {} failed for good: boom", planted.id(fatal));
    for t in [flaky, waiting] {
        let task = s.task(planted.id(t)).await.unwrap();
        assert_eq!(task.state, TaskState::Canceled);
        assert_eq!(task.error.as_deref(), Some(why.as_str()));
    }
    // A task still running when its job failed reports; what it submits is canceled at once.
    let two = computed(vec![sub("Leaf", vec![]), sub("Leaf", vec![])]);
    assert!(report_by(s, "factory", &held(busy), two, T0 + 3 * SEC).await);
    let job = s.job(&planted.job_id).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    let c = &job.task_counts;
    assert_eq!(
        (c.queued, c.running, c.computed, c.failed, c.canceled),
        (0, 0, 2, 1, 4)
    );
    assert!(claim(s, 10, T0 + 4 * SEC).await.is_empty());
    // Every failed attempt is an ERROR line of its task, with the reason and what follows.
    let errors = s
        .logs(
            &planted.job_id,
            &LogQuery {
                level: Some(Level::Error),
                ..LogQuery::default()
            },
        )
        .await
        .unwrap()
        .logs;
    let lines: Vec<(&str, &str)> = errors
        .iter()
        .map(|l| (l.task_id.as_str(), l.message.as_str()))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].0, planted.id(flaky));
    assert!(
        lines[0]
            .1
            .starts_with("attempt 1 failed: flaky; retrying in"),
        "{}",
        lines[0].1
    );
    assert_eq!(lines[1].0, planted.id(fatal));
    assert_eq!(
        lines[1].1,
        "attempt 1 failed: boom; no retries left: the task and its job failed"
    );
    assert_eq!(
        errors[1].runner_id, "factory",
        "the runner that ran the attempt"
    );
    // Retrying the job brings them all back, their old reasons cleared.
    let job = s.retry(&planted.job_id, T0 + 5 * SEC).await.unwrap();
    assert_eq!(job.task_counts.queued, 5);
    let back = s.task(planted.id(waiting)).await.unwrap();
    assert_eq!((back.state, back.error), (TaskState::Queued, None));
}

pub async fn a_permanent_failure_fails_at_once_whatever_the_retries(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let j = s.submit(&job("permanent", "Root", 5), T0).await.unwrap();
    let got = claim(s, 1, T0).await;
    let permanent = Report::Failed {
        permanent: true,
        reason: "no such object".into(),
        display: None,
    };
    assert!(report(s, &got[0], permanent, T0 + 1).await);
    let job = s.job(&j.id).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    let root = s.task(&got[0].task_id).await.unwrap();
    assert_eq!((root.state, root.retries_used), (TaskState::Failed, 0));
    assert!(claim(s, 1, T0 + 100 * SEC).await.is_empty());
}
