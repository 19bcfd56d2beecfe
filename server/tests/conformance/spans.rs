//! Spans: one per attempt, opened by its claim and ended by its report or its expiry; they
//! add up to the job's task time. Rows planted with the factory (`tessera_server::testing::factory`).

use super::*;
use tessera_server::testing::factory::{JobPlan, TaskRef};

/// Reports attempt 1 (lease 1, as the factory plants a running task) of `task`.
async fn report_planted(
    store: &(impl StoreRef + ?Sized),
    task: &str,
    report: Report,
    now: u64,
) -> bool {
    let store = &store.as_default();
    let results = store
        .report(
            "factory",
            &[TaskReport {
                task_id: task.into(),
                lease: 1,
                report,
            }],
            now,
        )
        .await
        .unwrap();
    results[0].accepted
}

pub async fn a_report_ends_the_attempts_span_and_adds_to_the_task_time(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let mut plan = JobPlan::new("spans", T0);
    let root = plan.root("Root", TaskState::Computed);
    let a = plan.child(root, "Leaf", TaskState::Running);
    let b = plan.child(root, "Leaf", TaskState::Running);
    plan.task(b).started_at = Some(T0 + SEC);
    let planted = plan.plant(&**s).await;
    let open = s
        .spans(&planted.job_id, &SpanQuery::default())
        .await
        .unwrap();
    assert_eq!(open.spans.len(), 2, "{open:?}");
    assert!(open.spans.iter().all(|sp| sp.end_time_unix_nano.is_none()
        && sp.outcome == SpanOutcome::Running
        && sp.runner_id == "factory"));
    assert_eq!(open.spans[0].task_id, planted.id(a), "in start order");

    assert!(report_planted(s, planted.id(a), computed(vec![]), T0 + 3 * SEC).await);
    let failed = Report::Failed {
        permanent: false,
        reason: "boom".into(),
        display: Some("b, failed".into()),
    };
    assert!(report_planted(s, planted.id(b), failed, T0 + 4 * SEC).await);
    let ended = s
        .spans(&planted.job_id, &SpanQuery::default())
        .await
        .unwrap();
    let by_task = |t: TaskRef| {
        ended
            .spans
            .iter()
            .find(|sp| sp.task_id == planted.id(t))
            .unwrap()
            .clone()
    };
    let (sa, sb) = (by_task(a), by_task(b));
    assert_eq!(
        (sa.outcome, sa.end_time_unix_nano),
        (SpanOutcome::Computed, Some(T0 + 3 * SEC))
    );
    assert_eq!(
        (sb.outcome, sb.end_time_unix_nano),
        (SpanOutcome::Failed, Some(T0 + 4 * SEC))
    );
    assert_eq!(sb.error.as_deref(), Some("boom"));
    assert_eq!(
        sb.name, "b, failed",
        "the attempt's display name names its span"
    );
    // 3 s + 3 s of attempts; b had no retries, so the job failed when b did.
    let job = s.job(&planted.job_id).await.unwrap();
    assert_eq!(job.task_time_ns, 6 * SEC);
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.finished_at, Some(T0 + 4 * SEC));
}

pub async fn an_expired_attempt_ends_its_span_as_expired(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let mut plan = JobPlan::new("expiry", T0);
    let root = plan.root("Root", TaskState::Computed);
    let a = plan.child(root, "Leaf", TaskState::Running);
    plan.task(a).lease_expires_at = Some(T0 + SEC);
    let planted = plan.plant(&**s).await;
    assert_eq!(s.reap(T0 + 2 * SEC).await.unwrap(), 1);
    let spans = s
        .spans(
            &planted.job_id,
            &SpanQuery {
                task: Some(planted.id(a).into()),
                ..SpanQuery::default()
            },
        )
        .await
        .unwrap()
        .spans;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].outcome, SpanOutcome::Expired);
    assert_eq!(spans[0].end_time_unix_nano, Some(T0 + 2 * SEC));
    // The task went back to the queue, its next attempt a new span.
    let got = claim(s, 1, T0 + 3 * SEC).await;
    assert_eq!(got[0].task_id, planted.id(a));
    assert_eq!(got[0].attempt, 2);
    let spans = s
        .spans(&planted.job_id, &SpanQuery::default())
        .await
        .unwrap();
    assert_eq!(spans.spans.len(), 2);
    assert_eq!(spans.spans[1].attempt, 2);
    assert_eq!(spans.spans[1].end_time_unix_nano, None);
}

pub async fn spans_page_in_start_order(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let mut plan = JobPlan::new("pages", T0);
    let root = plan.root("Root", TaskState::Computed);
    let mut leaves = Vec::new();
    for i in 0..5u64 {
        let leaf = plan.child(root, "Leaf", TaskState::Running);
        // Started in reverse order of their paths.
        plan.task(leaf).started_at = Some(T0 + (5 - i) * SEC);
        leaves.push(leaf);
    }
    let planted = plan.plant(&**s).await;
    let mut query = SpanQuery {
        limit: Some(2),
        ..SpanQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = s.spans(&planted.job_id, &query).await.unwrap();
        assert!(page.spans.len() <= 2);
        seen.extend(page.spans.iter().map(|sp| sp.task_id.clone()));
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<String> = leaves
        .iter()
        .rev()
        .map(|&l| planted.id(l).to_string())
        .collect();
    assert_eq!(seen, expected);
}

/// A task that ran more than once keeps every attempt's span: its latest on its row, earlier
/// ones moved aside by the claim of the next. Pages of any size see each span once, in start
/// order with ties in key order, whichever of the two places a span is in.
pub async fn every_attempt_keeps_its_span_and_pages_once(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let mut plan = JobPlan::new("attempts", T0);
    let root = plan.root("Root", TaskState::Computed);
    let a = plan.child(root, "Leaf", TaskState::Running);
    let b = plan.child(root, "Leaf", TaskState::Running);
    let c = plan.child(root, "Leaf", TaskState::Queued);
    plan.task(a).lease_expires_at = Some(T0 + SEC);
    let planted = plan.plant(&**s).await;
    let (ia, ib, ic) = (planted.id(a), planted.id(b), planted.id(c));
    // a's first attempt expires; its second (and c's first) start together, and a computes.
    assert_eq!(s.reap(T0 + 2 * SEC).await.unwrap(), 1);
    let got = claim(s, 2, T0 + 3 * SEC).await;
    let ids: Vec<&str> = got.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, [ia, ic], "{got:?}");
    assert_eq!(got[0].attempt, 2);
    assert!(report(s, &got[0], computed(vec![]), T0 + 5 * SEC).await);

    // a1 and b started together at T0 (a planted first), a2 and c together at T0 + 3 s.
    let expected = [
        (ia, 1, SpanOutcome::Expired, T0, Some(T0 + 2 * SEC)),
        (ib, 1, SpanOutcome::Running, T0, None),
        (
            ia,
            2,
            SpanOutcome::Computed,
            T0 + 3 * SEC,
            Some(T0 + 5 * SEC),
        ),
        (ic, 1, SpanOutcome::Running, T0 + 3 * SEC, None),
    ];
    let seen = |spans: &[tessera_api::Span]| -> Vec<_> {
        spans
            .iter()
            .map(|sp| {
                (
                    sp.task_id.clone(),
                    sp.attempt,
                    sp.outcome,
                    sp.start_time_unix_nano,
                    sp.end_time_unix_nano,
                )
            })
            .collect()
    };
    let expected: Vec<_> = expected
        .iter()
        .map(|&(t, n, o, start, end)| (t.to_string(), n, o, start, end))
        .collect();
    for limit in [1, 2, 3, 1000] {
        let mut query = SpanQuery {
            limit: Some(limit),
            ..SpanQuery::default()
        };
        let mut all = Vec::new();
        loop {
            let page = s.spans(&planted.job_id, &query).await.unwrap();
            assert!(page.spans.len() <= limit as usize);
            all.extend(seen(&page.spans));
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(all, expected, "pages of {limit}");
    }
    let of_a = s
        .spans(
            &planted.job_id,
            &SpanQuery {
                task: Some(ia.into()),
                ..SpanQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        seen(&of_a.spans),
        [expected[0].clone(), expected[2].clone()]
    );
    // The task started when its first attempt did; the job's time is both of a's attempts.
    let task = s.task(ia).await.unwrap();
    assert_eq!((task.attempts, task.started_at), (2, Some(T0)));
    assert_eq!(s.job(&planted.job_id).await.unwrap().task_time_ns, 4 * SEC);
    assert_eq!(
        s.audit(&planted.job_id).await.unwrap(),
        Vec::<String>::new()
    );
}
