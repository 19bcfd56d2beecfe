//! Jobs: submission, state, listing, task pages, cancel, retry, progress and size limits.

use tessera_server::store::StoreError;

use super::*;

pub async fn a_failed_job_hands_out_no_more_tasks(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    job_with_a_and_b(s, "f").await;
    let a = s
        .claim(&claim_req("r1", &[id("A", "v0.0")], 1), T0 + 2)
        .await
        .unwrap();
    assert!(
        report(
            s,
            &a[0],
            Report::Failed {
                permanent: false,
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
    let s = &AsDefault(&*store);
    let j = s.submit(&job("r", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    assert!(
        report(
            s,
            &root[0],
            Report::Failed {
                permanent: false,
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

pub async fn cancel_stops_handing_out_and_running_attempts_learn_it(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let j = job_with_a_and_b(s, "c").await;
    let a = s
        .claim(&claim_req("r1", &[id("A", "v0.0")], 1), T0 + 2)
        .await
        .unwrap();
    let c = s.cancel(&j.id, T0 + 3).await.unwrap();
    assert_eq!(c.state, JobState::Canceled);
    assert!(c.canceled);
    assert_eq!(c.task_counts.canceled, 1, "queued B canceled");
    assert!(claim(s, 10, T0 + 4).await.is_empty());
    let st = s
        .extend(
            "r1",
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

pub async fn job_listing_filters_and_paginates(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
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

/// Ids are found as the store spelled them and no other way (SQLite keeps their bytes, not
/// their text), and a job listing's cursor must be one of them.
pub async fn an_id_is_found_only_as_it_was_spelled(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let j = s.submit(&job("spelled", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    assert!(report(s, &root[0], computed(vec![sub("Leaf", vec![])]), T0 + 1).await);
    let task = &root[0].task_id;
    assert_eq!(s.job(&j.id).await.unwrap().id, j.id);
    assert_eq!(s.task(task).await.unwrap().id, *task);
    for other in [
        j.id.to_uppercase(),
        j.id.replace('-', ""),
        format!("{{{}}}", j.id),
    ] {
        let e = s.job(&other).await.unwrap_err();
        assert!(
            matches!(e, StoreError::NotFound { what: "job", .. }),
            "{other}: {e}"
        );
        let e = s.tasks(&other, &TaskQuery::default()).await.unwrap_err();
        assert!(
            matches!(e, StoreError::NotFound { what: "job", .. }),
            "{other}: {e}"
        );
    }
    let e = s.task(&task.to_uppercase()).await.unwrap_err();
    assert!(
        matches!(e, StoreError::NotFound { what: "task", .. }),
        "{e}"
    );
    let page = s
        .tasks(
            &j.id,
            &TaskQuery {
                parent: Some(task.to_uppercase()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(page.tasks.is_empty(), "{:?}", page.tasks);
    // The cursor is the last id of a page: anything else is refused with what to pass.
    for cursor in ["zzz", "0", &j.id.to_uppercase()] {
        let e = s
            .jobs(&JobFilter {
                cursor: Some(cursor.into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{cursor}: {e}");
        assert!(e.to_string().contains("next_cursor"), "{e}");
    }
}

pub async fn tasks_paginate_depth_first_and_by_parent(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
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

pub async fn job_state_derivation(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
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
    let s = &AsDefault(&*store);
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

pub async fn progress_saturates_instead_of_poisoning_the_job(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let (job_id, _, leaves) = fanned_out(s, 2, 0).await;
    let huge = || Report::Computed {
        subtasks: vec![],
        display: None,
        progress: vec![ProgressUpdate {
            label: "bytes".into(),
            done: u64::MAX,
            total: 1,
        }],
        output: None,
        output_from: None,
        cache: vec![],
    };
    assert!(report(s, &leaves[0], huge(), T0 + 3).await);
    assert!(report(s, &leaves[1], huge(), T0 + 4).await);
    let j = s.job(&job_id).await.unwrap();
    assert_eq!(j.progress[0].done, i64::MAX as u64);
    assert_eq!(j.progress[0].total, 2);
    assert_eq!(s.jobs(&JobFilter::default()).await.unwrap().jobs.len(), 1);
}

pub async fn a_job_may_not_grow_past_its_task_limit(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    // The limit is 1,000 tasks: the root and 998 subtasks fit, one more does not.
    let j = s.submit(&job("big", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await;
    let leaves: Vec<SubtaskSpec> = (0..998).map(|_| sub("A", vec![])).collect();
    let mut with_parent = leaves.clone();
    with_parent.push(sub("B", vec![]));
    assert!(report(s, &root[0], computed(with_parent), T0 + 1).await);
    let b = s
        .claim(&claim_req("r1", &[id("B", "v0.0")], 1), T0 + 2)
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

pub async fn a_planted_job_in_every_state_counts_and_pages(store: Arc<dyn Store>) {
    use tessera_server::testing::factory::JobPlan;
    let s = &AsDefault(&*store);
    let mut plan = JobPlan::new("every state", T0);
    let root = plan.root("Root", TaskState::Computed);
    let done = plan.child(root, "A", TaskState::Computed);
    plan.child(done, "B", TaskState::Computed);
    plan.child(root, "A", TaskState::Running);
    let queued = plan.child(root, "A", TaskState::Queued);
    let waiting = plan.child(root, "A", TaskState::Queued);
    plan.depends(waiting, queued);
    plan.child(root, "C", TaskState::Canceled);
    let planted = plan.plant(&**s).await;
    let job = s.job(&planted.job_id).await.unwrap();
    let c = &job.task_counts;
    assert_eq!(
        (c.queued, c.running, c.computed, c.failed, c.canceled),
        (2, 1, 3, 0, 1)
    );
    assert_eq!(job.state, JobState::Running);
    // Depth-first pages over the planted tree.
    let page = s
        .tasks(&planted.job_id, &TaskQuery::default())
        .await
        .unwrap();
    let ids: Vec<&str> = page.tasks.iter().map(|t| t.id.as_str()).collect();
    let expected: Vec<&str> = (0..7).map(|i| planted.task_ids[i].as_str()).collect();
    assert_eq!(ids, expected);
    // Only the queued task without a pending dependency is claimable; once it completes, the
    // one waiting for it is.
    let got = claim(s, 10, T0 + 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].task_id, planted.id(queued));
    assert!(report(s, &got[0], computed(vec![]), T0 + 2).await);
    let got = claim(s, 10, T0 + 3).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].task_id, planted.id(waiting));
}

/// What a store told its listener.
#[derive(Default)]
struct Heard(std::sync::Mutex<Vec<tessera_server::store::Scope>>);

impl tessera_server::store::CommitListener for Heard {
    fn committed(&self, scope: &tessera_server::store::Scope) {
        self.0.lock().unwrap().push(scope.clone());
    }
}

/// Every store tells its listener of each of its commits once, after it commits: a submit
/// names its cluster, a claim and a cancel a change with nothing claimable; reads say nothing.
pub async fn each_commit_is_told_once(store: Arc<dyn Store>) {
    use tessera_server::store::Scope;
    let heard = Arc::new(Heard::default());
    store.on_commit(heard.clone());
    // A PostgreSQL store listens for other servers' commits, and says `Everyone` once it does
    // (work may have come while it did not): wait for that, so that its own NOTIFYs reach it.
    let listening = async {
        while !heard.0.lock().unwrap().contains(&Scope::Everyone) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), listening).await;
    let store = &AsDefault(&*store);
    let mut submit = job("told", "Root", 0);
    submit.cluster = Some("gpu".into());
    let j = store.submit(&submit, T0).await.unwrap();
    store.job(&j.id).await.unwrap();
    assert!(
        claim(store, 1, T0).await.is_empty(),
        "another cluster's work"
    );
    let mut on_gpu = claim_req("r1", &all(), 1);
    on_gpu.cluster = "gpu".into();
    assert_eq!(store.claim(&on_gpu, T0 + 1).await.unwrap().len(), 1);
    store.cancel(&j.id, T0 + 2).await.unwrap();
    // A PostgreSQL store also hears its own NOTIFY: it must not tell its listener twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut heard = heard.0.lock().unwrap().clone();
    heard.retain(|s| *s != Scope::Everyone);
    assert_eq!(
        heard,
        [
            Scope::Clusters(vec!["gpu".into()]),
            Scope::Nothing,
            Scope::Nothing
        ]
    );
}
