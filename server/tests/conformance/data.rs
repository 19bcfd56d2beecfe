//! Data between tasks: outputs kept with a task's success, read by the tasks that depend on
//! it and followed through `output_from`; the job cache, written atomically with success,
//! last write wins within a batch, and listed in byte order by prefix.

use tessera_api::{Blob, CacheQuery, CacheWrite};
use tessera_server::store::StoreError;

use super::*;

fn put(key: &str, value: &[u8]) -> CacheWrite {
    CacheWrite {
        key: key.into(),
        value: Some(Blob(value.to_vec())),
    }
}

fn delete(key: &str) -> CacheWrite {
    CacheWrite {
        key: key.into(),
        value: None,
    }
}

fn computed_with(
    subtasks: Vec<SubtaskSpec>,
    output: Option<&[u8]>,
    output_from: Option<u32>,
    cache: Vec<CacheWrite>,
) -> Report {
    Report::Computed {
        subtasks,
        display: None,
        progress: vec![],
        output: output.map(|o| Blob(o.to_vec())),
        output_from,
        cache,
    }
}

async fn keys(s: &(impl StoreRef + ?Sized), job: &str, prefix: Option<&str>) -> Vec<String> {
    let s = &s.as_default();
    let query = CacheQuery {
        prefix: prefix.map(str::to_string),
        ..CacheQuery::default()
    };
    let page = s.cache(job, &query).await.unwrap();
    page.entries.into_iter().map(|e| e.key).collect()
}

/// A root submits A, B and C (after A and B) and takes C's output as its own; A and B compute.
pub async fn outputs_are_kept_with_success_and_read_through_dependencies(s: Arc<dyn Store>) {
    let s = &AsDefault(&*s);
    let j = s.submit(&job("outputs", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await.remove(0);
    let subs = vec![sub("A", vec![]), sub("B", vec![]), sub("C", vec![0, 1])];
    assert!(
        report(
            s,
            &root,
            computed_with(subs, Some(b"ignored"), Some(2), vec![]),
            T0 + 1
        )
        .await
    );
    let mut ab = claim(s, 10, T0 + 2).await;
    assert_eq!(ab.len(), 2, "C waits for A and B");
    ab.sort_by_key(|t| t.identifier.name.clone());
    let (a, b) = (&ab[0], &ab[1]);
    let early = s.output(&j.id, Some(&a.task_id)).await.unwrap_err();
    assert!(
        matches!(&early, StoreError::Conflict(m) if m.contains("it is running")),
        "{early}"
    );
    assert!(
        report(
            s,
            a,
            computed_with(vec![], Some(b"{\"n\":1}"), None, vec![]),
            T0 + 3
        )
        .await
    );
    assert!(report(s, b, computed(vec![]), T0 + 3).await);

    let out = s.output(&j.id, Some(&a.task_id)).await.unwrap();
    assert_eq!(out.value.as_deref(), Some(&b"{\"n\":1}"[..]));
    let none = s.output(&j.id, Some(&b.task_id)).await.unwrap();
    assert_eq!(none.value, None, "B computed without an output");
    let pending = s.output(&j.id, None).await.unwrap_err();
    assert!(
        matches!(&pending, StoreError::Conflict(m) if m.contains("has not computed yet")),
        "the root's output is C's, which is queued: {pending}"
    );

    let c = claim(s, 10, T0 + 4).await.remove(0);
    assert_eq!(c.identifier.name, "C");
    let deps = s.dependencies(&c.task_id).await.unwrap().dependencies;
    let seen: Vec<(u32, &str, Option<u64>)> = deps
        .iter()
        .map(|d| (d.index, d.task_id.as_str(), d.output_bytes))
        .collect();
    assert_eq!(
        seen,
        [
            (0, a.task_id.as_str(), Some(7)),
            (1, b.task_id.as_str(), None)
        ]
    );
    assert!(deps.iter().all(|d| d.state == TaskState::Computed));
    assert!(
        s.dependencies(&a.task_id)
            .await
            .unwrap()
            .dependencies
            .is_empty()
    );
    assert!(
        report(
            s,
            &c,
            computed_with(vec![], Some(b"sum"), None, vec![]),
            T0 + 5
        )
        .await
    );

    let result = s.output(&j.id, None).await.unwrap();
    assert_eq!(result.task_id, c.task_id, "the root's output is C's");
    assert_eq!(result.value.as_deref(), Some(&b"sum"[..]));
    assert_eq!(s.job(&j.id).await.unwrap().state, JobState::Completed);

    // Another job's task, an unknown job or task: not found.
    let other = s.submit(&job("other", "Root", 0), T0 + 6).await.unwrap();
    let e = s.output(&other.id, Some(&a.task_id)).await.unwrap_err();
    assert!(
        matches!(e, StoreError::NotFound { what: "task", .. }),
        "{e}"
    );
    let e = s.output("no-such-job", None).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { what: "job", .. }), "{e}");
    let e = s.dependencies("no-such-task").await.unwrap_err();
    assert!(
        matches!(e, StoreError::NotFound { what: "task", .. }),
        "{e}"
    );
}

/// Writes land only with an accepted success: not from a report refused by its lease, not from
/// one whose data the store refuses, not from one whose subtasks fail the attempt.
pub async fn cache_writes_commit_with_success_only(s: Arc<dyn Store>) {
    let s = &AsDefault(&*s);
    let (job_id, _root, leaves) = fanned_out(s, 4, 1).await;
    let big = vec![0u8; (64 << 10) + 1];
    let bad = [
        // Refused by its lease.
        (
            None,
            computed_with(vec![], None, None, vec![put("stale", b"1")]),
        ),
        // A value over the store's limit (64 KiB here).
        (
            Some("larger than"),
            computed_with(vec![], None, None, vec![put("big", &big)]),
        ),
        // A key with a control character.
        (
            Some("control character"),
            computed_with(
                vec![],
                None,
                None,
                vec![put("a\u{7}", b"1"), put("ok", b"1")],
            ),
        ),
        // An output taken from a subtask it did not submit.
        (
            Some("submitted 0"),
            computed_with(vec![], None, Some(0), vec![put("from", b"1")]),
        ),
    ];
    for (leaf, (why, r)) in leaves.iter().zip(bad) {
        let lease = if why.is_none() {
            leaf.lease + 1
        } else {
            leaf.lease
        };
        let results = s
            .report(
                "r1",
                &[TaskReport {
                    task_id: leaf.task_id.clone(),
                    lease,
                    report: r,
                }],
                T0 + 3,
            )
            .await
            .unwrap();
        assert_eq!(results[0].accepted, why.is_some(), "{:?}", results[0]);
        if let Some(why) = why {
            let task = s.task(&leaf.task_id).await.unwrap();
            assert_eq!(
                task.state,
                TaskState::Queued,
                "the attempt failed and is retried"
            );
            let error = task.error.unwrap_or_default();
            assert!(error.contains(why), "{error}");
        }
    }
    assert!(
        keys(s, &job_id, None).await.is_empty(),
        "nothing was written"
    );

    // A job past its task limit fails the attempt that would grow it: its writes go too.
    let j = s.submit(&job("limit", "Root", 0), T0 + 10).await.unwrap();
    let root = claim(s, 1, T0 + 10).await.remove(0);
    let too_many: Vec<SubtaskSpec> = (0..1000).map(|_| sub("Leaf", vec![])).collect();
    let r = computed_with(too_many, None, None, vec![put("grown", b"1")]);
    assert!(report(s, &root, r, T0 + 11).await);
    assert_eq!(
        s.task(&root.task_id).await.unwrap().state,
        TaskState::Failed
    );
    assert!(keys(s, &j.id, None).await.is_empty());
}

/// Within one batch the last write to a key wins, deletes included; the cache is per job.
pub async fn batch_last_write_wins_and_deletes(s: Arc<dyn Store>) {
    let s = &AsDefault(&*s);
    let (job_id, _root, leaves) = fanned_out(s, 3, 0).await;
    let batch = [
        (
            &leaves[0],
            computed_with(
                vec![],
                None,
                None,
                vec![put("k", b"first"), put("gone", b"x")],
            ),
        ),
        (
            &leaves[1],
            computed_with(
                vec![],
                None,
                None,
                vec![put("k", b"second"), delete("gone")],
            ),
        ),
    ];
    assert_eq!(report_batch(s, &batch, T0 + 3).await, [true, true]);
    assert_eq!(s.cache_get(&job_id, "k", None).await.unwrap(), b"second");
    let e = s.cache_get(&job_id, "gone", None).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::NotFound {
                what: "cache key",
                ..
            }
        ),
        "{e}"
    );
    // A later attempt overwrites and deletes what earlier ones committed.
    let r = computed_with(vec![], None, None, vec![put("k", b"third"), delete("k2")]);
    assert!(report(s, &leaves[2], r, T0 + 4).await);
    assert_eq!(s.cache_get(&job_id, "k", None).await.unwrap(), b"third");
    let other = s.submit(&job("other", "Root", 0), T0 + 5).await.unwrap();
    let e = s.cache_get(&other.id, "k", None).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::NotFound {
                what: "cache key",
                ..
            }
        ),
        "{e}"
    );
    let e = s.cache_get("no-such-job", "k", None).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { what: "job", .. }), "{e}");
}

/// An attempt reads the cache as of its claim: what committed before it started, never a
/// later commit (its own writes the host lays over); the latest is for everyone else. When
/// the job completes, only the latest versions stay.
pub async fn an_attempt_reads_the_cache_as_of_its_claim(s: Arc<dyn Store>) {
    let s = &AsDefault(&*s);
    let j = s.submit(&job("snapshots", "Root", 0), T0).await.unwrap();
    let root = claim(s, 1, T0).await.remove(0);
    assert_eq!(root.cache_seq, 0, "nothing written yet");
    let subs = (0..4).map(|_| sub("Leaf", vec![])).collect();
    assert!(
        report(
            s,
            &root,
            computed_with(subs, None, None, vec![put("k", b"0")]),
            T0 + 1
        )
        .await
    );
    let mut leaves = claim(s, 2, T0 + 2).await;
    assert!(
        leaves.iter().all(|t| t.cache_seq == 1),
        "the root's write committed first"
    );
    let (a, b) = (leaves.remove(0), leaves.remove(0));
    // a commits new versions; b, claimed before, still reads the old ones.
    let writes = vec![put("k", b"1"), put("new", b"n"), delete("gone-later")];
    assert!(report(s, &a, computed_with(vec![], None, None, writes), T0 + 3).await);
    assert_eq!(
        s.cache_get(&j.id, "k", Some(b.cache_seq)).await.unwrap(),
        b"0"
    );
    let e = s
        .cache_get(&j.id, "new", Some(b.cache_seq))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    assert_eq!(
        s.cache_get(&j.id, "k", None).await.unwrap(),
        b"1",
        "the latest"
    );
    let as_of = |v: u64| CacheQuery {
        as_of: Some(v),
        ..CacheQuery::default()
    };
    let old = s.cache(&j.id, &as_of(b.cache_seq)).await.unwrap();
    assert_eq!(
        old.entries
            .iter()
            .map(|e| e.key.as_str())
            .collect::<Vec<_>>(),
        ["k"]
    );
    assert_eq!(keys(s, &j.id, None).await, ["k", "new"]);
    // A later claim sees a's commit; a delete hides a key from then on.
    let c = claim(s, 1, T0 + 4).await.remove(0);
    assert_eq!(c.cache_seq, 2);
    assert_eq!(
        s.cache_get(&j.id, "new", Some(c.cache_seq)).await.unwrap(),
        b"n"
    );
    assert!(
        report(
            s,
            &b,
            computed_with(vec![], None, None, vec![delete("new")]),
            T0 + 5
        )
        .await
    );
    assert_eq!(
        s.cache_get(&j.id, "new", Some(c.cache_seq)).await.unwrap(),
        b"n"
    );
    assert!(
        s.cache_get(&j.id, "new", None).await.is_err(),
        "deleted at version 3"
    );
    assert_eq!(keys(s, &j.id, None).await, ["k"]);
    // The job completes: old versions go, the latest stay.
    assert!(report(s, &c, computed(vec![]), T0 + 6).await);
    let d = claim(s, 1, T0 + 7).await.remove(0);
    assert_eq!(d.cache_seq, 3);
    assert!(report(s, &d, computed(vec![]), T0 + 8).await);
    assert_eq!(s.job(&j.id).await.unwrap().state, JobState::Completed);
    assert_eq!(s.cache_get(&j.id, "k", None).await.unwrap(), b"1");
    let e = s.cache_get(&j.id, "k", Some(1)).await.unwrap_err();
    assert!(
        matches!(e, StoreError::NotFound { .. }),
        "version 1 of k was compacted: {e}"
    );
    assert_eq!(keys(s, &j.id, None).await, ["k"]);
}

/// Keys list in byte order, by prefix, a page at a time, with their sizes.
pub async fn cache_keys_page_in_byte_order_by_prefix(s: Arc<dyn Store>) {
    let s = &AsDefault(&*s);
    let (job_id, _root, leaves) = fanned_out(s, 1, 0).await;
    let names = [
        "a/2",
        "a/10",
        "a/1",
        "a0",
        "a",
        "b",
        "a/é",
        "a/\u{10ffff}",
        "A/1",
    ];
    let writes = names.iter().map(|k| put(k, k.as_bytes())).collect();
    assert!(
        report(
            s,
            &leaves[0],
            computed_with(vec![], None, None, writes),
            T0 + 3
        )
        .await
    );
    assert_eq!(
        keys(s, &job_id, Some("a/")).await,
        ["a/1", "a/10", "a/2", "a/é", "a/\u{10ffff}"]
    );
    assert_eq!(keys(s, &job_id, None).await.len(), names.len());
    assert_eq!(keys(s, &job_id, Some("a")).await.len(), 7);
    assert!(keys(s, &job_id, Some("z")).await.is_empty());
    // Pages of two, following `next`.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .cache(
                &job_id,
                &CacheQuery {
                    prefix: Some("a/".into()),
                    after: after.take(),
                    limit: Some(2),
                    as_of: None,
                },
            )
            .await
            .unwrap();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries.iter().map(|e| (e.key.clone(), e.bytes)));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let expected: Vec<(String, u64)> = ["a/1", "a/10", "a/2", "a/é", "a/\u{10ffff}"]
        .iter()
        .map(|k| (k.to_string(), k.len() as u64))
        .collect();
    assert_eq!(seen, expected);
    // `after` before the prefix starts at the prefix; past it, nothing.
    let page = s
        .cache(
            &job_id,
            &CacheQuery {
                prefix: Some("a/".into()),
                after: Some("A".into()),
                limit: None,
                as_of: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 5);
    let e = s
        .cache(
            &job_id,
            &CacheQuery {
                limit: Some(1001),
                ..CacheQuery::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
}

/// Deleting a job takes everything of it along — tasks, logs, spans, outputs, cache — and
/// touches no other job; a job that is not over, or still has attempts running, stays.
pub async fn a_deleted_job_takes_its_outputs_and_cache_with_it(s: Arc<dyn Store>) {
    let s = &AsDefault(&*s);
    let (job_id, _root, leaves) = fanned_out(s, 2, 0).await;
    let e = s.delete_job(&job_id).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("cancel it first")),
        "{e}"
    );
    let r = computed_with(vec![], Some(b"1"), None, vec![put("k", b"v")]);
    assert!(report(s, &leaves[0], r, T0 + 3).await);
    s.cancel(&job_id, T0 + 4).await.unwrap();
    let e = s.delete_job(&job_id).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict(m) if m.contains("1 of its attempts still run")),
        "{e}"
    );
    assert!(report(s, &leaves[1], Report::Canceled, T0 + 5).await);

    // Another job with the same cache key and an output of its own.
    let (other, _, other_leaves) = fanned_out(s, 1, 0).await;
    let r = computed_with(vec![], Some(b"2"), None, vec![put("k", b"mine")]);
    assert!(report(s, &other_leaves[0], r, T0 + 6).await);

    let gone = s.delete_job(&job_id).await.unwrap();
    assert_eq!(
        (gone.id.as_str(), gone.state),
        (job_id.as_str(), JobState::Canceled)
    );
    for e in [
        s.job(&job_id).await.unwrap_err(),
        s.output(&job_id, None).await.unwrap_err(),
        s.cache_get(&job_id, "k", None).await.unwrap_err(),
        s.task(&leaves[0].task_id).await.unwrap_err(),
        s.delete_job(&job_id).await.unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    }
    assert!(s.dependencies(&leaves[0].task_id).await.is_err());
    assert_eq!(s.cache_get(&other, "k", None).await.unwrap(), b"mine");
    let kept = s
        .output(&other, Some(&other_leaves[0].task_id))
        .await
        .unwrap();
    assert_eq!(kept.value.as_deref(), Some(&b"2"[..]));
    let listed = s.jobs(&JobFilter::default()).await.unwrap().jobs;
    assert!(listed.iter().all(|j| j.id != job_id));
}
