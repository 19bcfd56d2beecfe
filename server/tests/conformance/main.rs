//! The store conformance suite: every store implementation must pass every test here, one
//! module per entity (jobs, claims, reports, leases, logs, spans, components, data).
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
use tessera_server::store::testing::{AsDefault, StoreRef};
use tessera_server::{PostgresStore, SqliteStore, Store, StoreConfig};

mod claims;
mod components;
mod data;
mod jobs;
mod keys;
mod leases;
mod logs;
mod reports;
mod spans;
mod tenants;

const T0: u64 = 1_800_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn config() -> StoreConfig {
    StoreConfig {
        lease: Duration::from_secs(10),
        retry_base: Duration::from_secs(2),
        retry_max: Duration::from_secs(60),
        max_lost: 3,
        max_job_tasks: 1_000,
        max_value_bytes: 64 << 10,
        max_input_bytes: 64 << 10,
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
        identifiers: ids.to_vec(),
        ..tessera_server::testing::protocol::claim(runner, max)
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
    Report::computed(subtasks)
}

async fn claim(store: &(impl StoreRef + ?Sized), max: u32, now: u64) -> Vec<ClaimedTask> {
    let store = &store.as_default();
    store
        .claim(&claim_req("r1", &all(), max), now)
        .await
        .unwrap()
}

async fn report(
    store: &(impl StoreRef + ?Sized),
    task: &ClaimedTask,
    report: Report,
    now: u64,
) -> bool {
    let store = &store.as_default();
    report_by(store, "r1", task, report, now).await
}

/// Reports one attempt as `runner` (the runner that claimed it, or not); whether it was
/// accepted.
async fn report_by(
    store: &(impl StoreRef + ?Sized),
    runner: &str,
    task: &ClaimedTask,
    report: Report,
    now: u64,
) -> bool {
    let store = &store.as_default();
    let results = store
        .report(
            runner,
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

/// Reports a batch at once; returns whether each was accepted.
/// Submits job `name` at T0 and runs its root, which submits subtasks A and B (at T0 + 1).
async fn job_with_a_and_b(store: &(impl StoreRef + ?Sized), name: &str) -> tessera_api::Job {
    let store = &store.as_default();
    let j = store.submit(&job(name, "Root", 0), T0).await.unwrap();
    let root = claim(store, 1, T0).await;
    assert_eq!(root[0].job_id, j.id);
    let ab = computed(vec![sub("A", vec![]), sub("B", vec![])]);
    assert!(report(store, &root[0], ab, T0 + 1).await);
    j
}

async fn report_batch(
    store: &(impl StoreRef + ?Sized),
    batch: &[(&ClaimedTask, Report)],
    now: u64,
) -> Vec<bool> {
    let store = &store.as_default();
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
    s: &(impl StoreRef + ?Sized),
    n: usize,
    max_retries: u32,
) -> (String, ClaimedTask, Vec<ClaimedTask>) {
    let s = &s.as_default();
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

/// After a test: every job's kept counts (tasks by state, task time, last end) agree with a
/// count of its rows, whatever the test did to it.
async fn audit_every_job(store: &(impl StoreRef + ?Sized), backend: &str) {
    let store = &store.as_default();
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

/// One test per store, entity and case: `sqlite::reports::batch_…`, so a failure names the store.
/// Every test runs on a fresh store, then audits every job it left.
macro_rules! stores {
    ($backend:ident, $make:path; $($entity:ident { $($test:ident),+ $(,)? })+) => {
        mod $backend {
            $(
                mod $entity {
                    $(
                        #[tokio::test]
                        async fn $test() {
                            let Some((store, _guard)) = $make().await else { return };
                            crate::$entity::$test(store.clone()).await;
                            crate::audit_every_job(&*store, stringify!($backend)).await;
                        }
                    )+
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
    let url = tessera_server::testing::postgres::fresh_database().await?;
    let store = PostgresStore::connect(&url, config()).await.unwrap();
    Some((Arc::new(store), ()))
}

macro_rules! suite {
    ($backend:ident, $make:path) => {
        stores!($backend, $make;
            jobs {
                each_commit_is_told_once,
                a_failed_job_hands_out_no_more_tasks,
                retry_job_requeues_failed_tasks,
                cancel_stops_handing_out_and_running_attempts_learn_it,
                job_listing_filters_and_paginates,
                an_id_is_found_only_as_it_was_spelled,
                tasks_paginate_depth_first_and_by_parent,
                job_state_derivation,
                invalid_submissions_are_refused,
                progress_saturates_instead_of_poisoning_the_job,
                a_job_may_not_grow_past_its_task_limit,
                a_planted_job_in_every_state_counts_and_pages,
            }
            claims {
                version_rule,
                cluster_rule,
                depends_on_waits_for_the_whole_subtree,
                oldest_job_first_and_depth_first_within_a_job,
                outlook_counts_work_a_runner_could_do,
                a_runner_may_serve_a_thousand_identifiers,
                claims_make_runners_visible_and_unserved_tasks_say_why,
            }
            reports {
                claim_complete_and_subtasks,
                fail_retries_with_backoff_then_fails_the_job,
                invalid_subtasks_fail_the_attempt,
                batch_the_same_task_twice_counts_once,
                batch_a_computed_and_a_failed_sibling,
                batch_siblings_complete_their_parent_and_job,
                batch_completion_walks_up_several_levels,
                batch_a_refused_report_does_not_spoil_its_neighbours,
                an_unrequested_canceled_report_gives_the_task_back,
                duplicate_dependencies_fail_the_attempt,
                a_task_failing_for_good_ends_its_job_visibly_and_logs_why,
                a_permanent_failure_fails_at_once_whatever_the_retries,
            }
            leases {
                abandon_requeues_without_spending_a_retry,
                expired_leases_requeue_without_spending_a_retry,
                a_task_lost_three_times_in_a_row_fails,
                a_report_after_expiry_is_refused_even_before_the_reaper,
                extending_keeps_the_lease,
                planted_expired_leases_are_reaped_and_refused,
                only_the_holder_reports_extends_and_logs,
            }
            logs {
                logs_filter_paginate_and_refuse_unknown_tasks,
            }
            components {
                deploy_is_content_addressed_and_undeploy_keeps_the_bytes,
                a_job_pins_the_components_deployed_when_it_was_submitted,
                fleet_runners_are_listed_and_serve_what_was_pinned,
                the_deployed_task_types_are_bounded,
                a_retried_job_runs_the_code_it_pinned,
                a_file_runner_names_the_file_that_ran,
                digests_that_do_not_pair_with_the_identifiers_label_nothing,
            }
            data {
                outputs_are_kept_with_success_and_read_through_dependencies,
                cache_writes_commit_with_success_only,
                batch_last_write_wins_and_deletes,
                cache_keys_page_in_byte_order_by_prefix,
                an_attempt_reads_the_cache_as_of_its_claim,
                a_deleted_job_takes_its_outputs_and_cache_with_it,
            }
            spans {
                a_report_ends_the_attempts_span_and_adds_to_the_task_time,
                an_expired_attempt_ends_its_span_as_expired,
                spans_page_in_start_order,
                every_attempt_keeps_its_span_and_pages_once,
            }
            keys {
                a_revoked_key_is_handed_nothing_and_created_keys_keep_counting,
                a_fleet_key_reaches_only_the_leases_it_holds,
            }
            tenants {
                each_tenant_sees_only_its_own_jobs_and_claims,
                a_tenant_may_not_queue_past_its_quota,
                running_attempts_stop_at_the_quota_and_ceilings_ride_the_claim,
                a_shared_fleet_levels_running_slots_by_weight,
                log_lines_and_component_bytes_stay_within_their_quotas,
            }
        );
    };
}

suite!(sqlite, crate::sqlite);
suite!(postgres, crate::postgres);

/// Many servers, one database: concurrent reapers requeue each expired lease exactly once, and
/// concurrent claimers never share a task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_servers_reap_and_claim_without_doubles() {
    let Some(url) = tessera_server::testing::postgres::fresh_database().await else {
        return;
    };
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(
            PostgresStore::connect(&url, config()).await.unwrap(),
        ));
    }
    let s = &*stores[0];
    let s = &AsDefault(s);
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
                let got = AsDefault(&*st)
                    .claim(&claim_req("r", &all(), 7), T0 + 2)
                    .await
                    .unwrap();
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

/// Many servers, one database: a submit on one server wakes the other server's claims waiting
/// on the job's cluster, and not those waiting on another cluster (the NOTIFY names it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_servers_wake_only_the_cluster_that_got_work() {
    use tessera_server::Wake;
    let Some(url) = tessera_server::testing::postgres::fresh_database().await else {
        return;
    };
    let here = PostgresStore::connect(&url, config()).await.unwrap();
    let there = PostgresStore::connect(&url, config()).await.unwrap();
    let wake = Wake::default();
    let mut gpu = wake.subscribe("gpu");
    let mut cpu = wake.subscribe("cpu");
    there.on_commit(Arc::new(wake.clone()));
    // Once it listens, the other server wakes everyone (work may have come while it did not).
    tokio::time::timeout(Duration::from_secs(10), gpu.changed())
        .await
        .expect("the other server listens");
    cpu.changed().await;
    let mut submit = job("gpu work", "Root", 0);
    submit.cluster = Some("gpu".into());
    AsDefault(&here).submit(&submit, T0).await.unwrap();
    assert!(
        woke(&mut gpu).await,
        "the gpu claims slept through gpu work"
    );
    assert!(!woke(&mut cpu).await, "the cpu claims woke for gpu work");
}

async fn woke(w: &mut tessera_server::wake::Woken) -> bool {
    tokio::time::timeout(Duration::from_millis(500), w.changed())
        .await
        .is_ok()
}
