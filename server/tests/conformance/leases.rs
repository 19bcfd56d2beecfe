//! Leases: extension, expiry, abandonment and the reaper.

use super::*;

pub async fn abandon_requeues_without_spending_a_retry(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
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
    let s = &AsDefault(&*store);
    let j = s.submit(&job("l", "Root", 0), T0).await.unwrap();
    let first = claim(s, 1, T0).await;
    assert_eq!(s.reap(T0 + 5 * SEC).await.unwrap(), 0, "not yet expired");
    assert_eq!(s.reap(T0 + 11 * SEC).await.unwrap(), 1);
    let t = s.task(&first[0].task_id).await.unwrap();
    assert_eq!((t.state, t.retries_used), (TaskState::Queued, 0));
    let second = claim(s, 1, T0 + 12 * SEC).await;
    assert_ne!(
        second[0].lease, first[0].lease,
        "every claim gets a fresh token"
    );
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
    let s = &AsDefault(&*store);
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
    let s = &AsDefault(&*store);
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
    let s = &AsDefault(&*store);
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

pub async fn planted_expired_leases_are_reaped_and_refused(store: Arc<dyn Store>) {
    use tessera_server::testing::factory::JobPlan;
    let s = &AsDefault(&*store);
    let mut plan = JobPlan::new("planted", T0);
    let root = plan.root("Root", TaskState::Computed);
    let gone = plan.child(root, "Leaf", TaskState::Running);
    plan.task(gone).lease_expires_at = Some(T0 - 1);
    // Lost twice already: max_lost is 3, so this expiry fails it.
    let lost = plan.child(root, "Leaf", TaskState::Running);
    plan.task(lost).lease_expires_at = Some(T0 - 1);
    plan.task(lost).lost = 2;
    let live = plan.child(root, "Leaf", TaskState::Running);
    let planted = plan.plant(&**s).await;
    // A report on an expired lease is refused even before the reaper ran.
    let late = s
        .report(
            "factory",
            &[TaskReport {
                task_id: planted.id(gone).into(),
                lease: 1,
                report: computed(vec![]),
            }],
            T0,
        )
        .await
        .unwrap();
    assert!(!late[0].accepted);
    assert_eq!(s.reap(T0).await.unwrap(), 2, "the live lease is not reaped");
    let task = |t| s.task(planted.id(t));
    let lost = task(lost).await.unwrap();
    assert_eq!(lost.state, TaskState::Failed);
    assert!(lost.error.unwrap().contains("lost by its runner 3 times"));
    // The lost task failed its job, so the expired one is not requeued into a failed job but
    // canceled, saying why; the live attempt runs on (its report is still recorded).
    let gone = task(gone).await.unwrap();
    assert_eq!((gone.state, gone.retries_used), (TaskState::Canceled, 0));
    let why = gone.error.unwrap();
    assert!(
        why.contains(&format!("task {} failed for good", lost.id)),
        "{why}"
    );
    assert_eq!(task(live).await.unwrap().state, TaskState::Running);
}

/// A lease is bound to the runner that claimed it: another runner presenting the right token
/// can neither report, extend nor write log lines for the attempt, and no answer tells it the
/// token or the holder.
pub async fn only_the_holder_reports_extends_and_logs(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    s.submit(&job("bound", "Root", 1), T0).await.unwrap();
    let t = claim(s, 1, T0).await.remove(0);
    assert!(
        t.lease >= 1 && t.lease < 1 << 53,
        "a token every JSON reader holds exactly"
    );
    let results = s
        .report(
            "intruder",
            &[TaskReport {
                task_id: t.task_id.clone(),
                lease: t.lease,
                report: computed(vec![]),
            }],
            T0 + 1,
        )
        .await
        .unwrap();
    assert!(!results[0].accepted);
    let why = results[0].error.clone().unwrap_or_default();
    assert!(
        why.contains("not running under this lease for runner \"intruder\""),
        "{why}"
    );
    assert!(
        !why.contains(&t.lease.to_string()) && !why.contains("r1"),
        "{why}"
    );
    let held = s
        .extend(
            "intruder",
            &[LeaseRef {
                task_id: t.task_id.clone(),
                lease: t.lease,
            }],
            T0 + 1,
        )
        .await
        .unwrap();
    assert!(!held[0].held);
    let line = |runner: &str| LogLine {
        time_unix_nano: T0 + 1,
        level: Level::Info,
        message: "hello".into(),
        task_id: t.task_id.clone(),
        job_id: String::new(),
        runner_id: runner.into(),
        attempt: t.attempt,
        fields: Default::default(),
    };
    let e = s
        .add_logs(vec![line("r1"), line("intruder")])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("did not run that attempt"), "{e}");
    assert_eq!(s.task(&t.task_id).await.unwrap().state, TaskState::Running);
    // The holder still does all three.
    assert_eq!(s.add_logs(vec![line("r1")]).await.unwrap(), 1);
    assert!(
        s.extend(
            "r1",
            &[LeaseRef {
                task_id: t.task_id.clone(),
                lease: t.lease
            }],
            T0 + 2
        )
        .await
        .unwrap()[0]
            .held
    );
    assert!(report(s, &t, computed(vec![]), T0 + 3).await);
    // Lines of an ended attempt still come in from the runner that ran it.
    assert_eq!(s.add_logs(vec![line("r1")]).await.unwrap(), 1);
}
