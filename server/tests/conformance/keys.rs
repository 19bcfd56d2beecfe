//! Keys and what a key holds: a revoked key is handed nothing in the claim's own transaction,
//! keys once created keep a database locked, and a fleet runner's key reaches only the
//! leases it holds.

use tessera_api::Role;
use tessera_server::store::{KeyRecord, Reach, StoreError, TenantId};

use super::*;

/// A fleet runner's id as the HTTP layer binds it: its key's id, then the id it chose.
const FLEET_KEY: &str = "0123456789abcdef";
const OTHER_KEY: &str = "fedcba9876543210";

async fn tenant(s: &(impl StoreRef + ?Sized), name: &str) -> TenantId {
    let s = &s.as_default();
    crate::tenants::tenant(s, name, Default::default()).await
}

fn key_record(id: &str, tenant: Option<TenantId>) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        tenant,
        tenant_name: None,
        role: Role::Runner,
        name: "runner".into(),
        hash: "00".repeat(32),
        created_at: T0,
        revoked_at: None,
        requests_per_second: None,
    }
}

pub async fn a_revoked_key_is_handed_nothing_and_created_keys_keep_counting(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let a = tenant(s, "a").await;
    assert_eq!(s.keys_created().await.unwrap(), 0);
    s.create_key(&key_record(FLEET_KEY, Some(a))).await.unwrap();
    s.0.submit(a, &job("j", "Root", 0), T0).await.unwrap();
    let request = claim_req(&format!("{FLEET_KEY}/r"), &all(), 10);

    s.revoke_key(Reach::All, FLEET_KEY, T0 + 1).await.unwrap();
    // Revoked keys still count: a database that has had a key never opens again.
    assert_eq!(s.keys_created().await.unwrap(), 1);
    let refused =
        s.0.claim(Reach::Tenant(a), Some(FLEET_KEY), &request, T0 + 2)
            .await;
    assert!(matches!(refused, Err(StoreError::Revoked)), "{refused:?}");
    // A key the store never had is refused the same way.
    let unknown =
        s.0.claim(Reach::Tenant(a), Some(OTHER_KEY), &request, T0 + 2)
            .await;
    assert!(matches!(unknown, Err(StoreError::Revoked)), "{unknown:?}");
    let jobs = s.0.jobs(Reach::Tenant(a), &JobFilter::default()).await;
    assert_eq!(
        jobs.unwrap().jobs[0].task_counts.queued,
        1,
        "nothing was leased"
    );

    // A good key gets the task.
    s.create_key(&key_record(OTHER_KEY, Some(a))).await.unwrap();
    let got =
        s.0.claim(Reach::Tenant(a), Some(OTHER_KEY), &request, T0 + 3)
            .await
            .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(s.keys_created().await.unwrap(), 2);
}

pub async fn a_fleet_key_reaches_only_the_leases_it_holds(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let a = tenant(s, "a").await;
    let b = tenant(s, "b").await;
    let fleet_runner = format!("{FLEET_KEY}/f1");
    let theirs_runner = format!("{OTHER_KEY}/b1");
    s.0.submit(a, &job("of a", "Root", 0), T0).await.unwrap();
    s.0.submit(b, &job("of b", "Root", 0), T0 + 1)
        .await
        .unwrap();
    // The fleet runner holds a's root; b's own runner holds b's.
    let mine =
        s.0.claim(
            Reach::All,
            None,
            &claim_req(&fleet_runner, &all(), 1),
            T0 + 2,
        )
        .await
        .unwrap()
        .remove(0);
    let theirs =
        s.0.claim(
            Reach::Tenant(b),
            None,
            &claim_req(&theirs_runner, &all(), 1),
            T0 + 2,
        )
        .await
        .unwrap()
        .remove(0);

    // What the server checks before a fleet runner reads data: its own lease holds.
    let held = s.lease_of(&mine.task_id).await.unwrap().unwrap();
    assert_eq!(held.job_id, mine.job_id);
    assert!(held.held_by(FLEET_KEY, mine.lease, T0 + 3));
    assert!(!held.held_by(FLEET_KEY, mine.lease.wrapping_add(1), T0 + 3));
    assert!(!held.held_by(OTHER_KEY, mine.lease, T0 + 3));
    assert!(
        !held.held_by(FLEET_KEY, mine.lease, T0 + 60 * SEC),
        "expired"
    );
    let other = s.lease_of(&theirs.task_id).await.unwrap().unwrap();
    assert!(!other.held_by(FLEET_KEY, theirs.lease, T0 + 3));
    assert!(s.lease_of("no-such-task").await.unwrap().is_none());

    // A fleet runner's report on a task another key holds reads like one on a task that
    // does not exist: nothing of its state.
    let report = |task: &ClaimedTask| TaskReport {
        task_id: task.task_id.clone(),
        lease: task.lease,
        report: Report::Abandoned,
    };
    let results =
        s.0.report(Reach::All, &fleet_runner, &[report(&theirs)], T0 + 4)
            .await
            .unwrap();
    let why = results[0].error.clone().unwrap();
    assert!(!results[0].accepted);
    assert_eq!(why, format!("task {} does not exist", theirs.task_id));
    // A tenant's own runner still hears why its report was refused.
    let results =
        s.0.report(Reach::Tenant(b), &fleet_runner, &[report(&theirs)], T0 + 4)
            .await
            .unwrap();
    assert!(
        results[0]
            .error
            .as_deref()
            .unwrap()
            .contains("it is running")
    );

    // Each tenant sees only its own attempts on the shared fleet runner.
    let running = |runners: tessera_api::RunnerList, id: &str| {
        runners
            .runners
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.running)
    };
    let seen_by_a = s.0.runners(Reach::Tenant(a), T0 + 5).await.unwrap();
    let seen_by_b = s.0.runners(Reach::Tenant(b), T0 + 5).await.unwrap();
    let seen_by_all = s.0.runners(Reach::All, T0 + 5).await.unwrap();
    assert_eq!(running(seen_by_a, &fleet_runner), Some(1));
    assert_eq!(running(seen_by_b, &fleet_runner), Some(0));
    assert_eq!(running(seen_by_all, &fleet_runner), Some(1));
}
