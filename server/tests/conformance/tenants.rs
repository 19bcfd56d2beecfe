//! Tenants: isolation in the store, quotas, and fair share on a shared fleet.

use super::*;
use tessera_api::{NewTenant, TenantUpdate};
use tessera_server::store::{Owned, Reach, TenantId};

/// Creates tenant `name` with `update` applied; its number.
pub(crate) async fn tenant(
    s: &(impl StoreRef + ?Sized),
    name: &str,
    update: TenantUpdate,
) -> TenantId {
    let s = &s.as_default();
    s.create_tenant(
        &NewTenant {
            name: name.into(),
            weight: None,
        },
        T0,
    )
    .await
    .unwrap();
    s.update_tenant(name, &update).await.unwrap();
    s.tenant_named(name).await.unwrap().unwrap().0
}

async fn claim_in(
    s: &(impl StoreRef + ?Sized),
    reach: Reach,
    runner: &str,
    max: u32,
) -> Vec<ClaimedTask> {
    let s = &s.as_default();
    s.0.claim(reach, None, &claim_req(runner, &all(), max), T0 + 5)
        .await
        .unwrap()
}

pub async fn each_tenant_sees_only_its_own_jobs_and_claims(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let a = tenant(s, "a", TenantUpdate::default()).await;
    let b = tenant(s, "b", TenantUpdate::default()).await;
    let ja = s.0.submit(a, &job("ja", "Root", 0), T0).await.unwrap();
    let jb = s.0.submit(b, &job("jb", "Root", 0), T0).await.unwrap();
    let listed =
        s.0.jobs(Reach::Tenant(a), &JobFilter::default())
            .await
            .unwrap();
    assert_eq!(
        listed.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&ja.id]
    );
    assert_eq!(s.jobs(&JobFilter::default()).await.unwrap().jobs.len(), 2);
    assert_eq!(s.owner(Owned::Job(&jb.id)).await.unwrap(), Some(b));
    assert_eq!(s.owner(Owned::Job("nope")).await.unwrap(), None);
    // A's runner takes A's root only; its report on B's root is as unknown as a ghost's.
    let got = claim_in(s, Reach::Tenant(a), "ra", 10).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job_id, ja.id);
    assert_eq!(
        s.owner(Owned::Task(&got[0].task_id)).await.unwrap(),
        Some(a)
    );
    let theirs = claim_in(s, Reach::Tenant(b), "rb", 10).await.remove(0);
    let results =
        s.0.report(
            Reach::Tenant(a),
            "rb",
            &[TaskReport {
                task_id: theirs.task_id.clone(),
                lease: theirs.lease,
                report: computed(vec![]),
            }],
            T0 + 6,
        )
        .await
        .unwrap();
    assert!(!results[0].accepted);
    assert!(
        results[0]
            .error
            .as_deref()
            .unwrap()
            .contains("does not exist")
    );
    let leases = [LeaseRef {
        task_id: theirs.task_id.clone(),
        lease: theirs.lease,
    }];
    assert!(
        !s.0.extend(Reach::Tenant(a), "rb", &leases, T0 + 6)
            .await
            .unwrap()[0]
            .held
    );
    assert!(
        s.0.extend(Reach::Tenant(b), "rb", &leases, T0 + 6)
            .await
            .unwrap()[0]
            .held
    );
    // Subtasks belong to their parent's tenant.
    let leaf = computed(vec![sub("Leaf", vec![])]);
    assert!(report_by(s, "ra", &got[0], leaf, T0 + 7).await);
    assert!(claim_in(s, Reach::Tenant(b), "rb", 10).await.is_empty());
    let leaf = claim_in(s, Reach::Tenant(a), "ra", 10).await.remove(0);
    assert_eq!(s.owner(Owned::Task(&leaf.task_id)).await.unwrap(), Some(a));
}

pub async fn a_tenant_may_not_queue_past_its_quota(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let quota = TenantUpdate {
        queued_tasks: Some(3),
        ..TenantUpdate::default()
    };
    let a = tenant(s, "a", quota).await;
    let other = tenant(s, "other", TenantUpdate::default()).await;
    for i in 0..3 {
        s.0.submit(a, &job(&format!("j{i}"), "Root", 0), T0)
            .await
            .unwrap();
    }
    let refused = s.0.submit(a, &job("j3", "Root", 0), T0).await.unwrap_err();
    let message = refused.to_string();
    assert!(
        matches!(refused, tessera_server::StoreError::Quota(_)),
        "{message}"
    );
    assert!(
        message.contains("queued_tasks: 3") && message.contains("tasks queued"),
        "{message}"
    );
    // Another tenant is not held back by it.
    s.0.submit(other, &job("free", "Root", 0), T0)
        .await
        .unwrap();
    // A root that would queue two subtasks when one more fits fails its attempt, with why;
    // nothing else changes.
    let roots = claim_in(s, Reach::Tenant(a), "ra", 1).await;
    let two = computed(vec![sub("Leaf", vec![]), sub("Leaf", vec![])]);
    assert!(
        report_by(s, "ra", &roots[0], two, T0 + 6).await,
        "a verdict, not a refusal"
    );
    let task = s.task(&roots[0].task_id).await.unwrap();
    assert_eq!(task.state, TaskState::Failed);
    let why = task.error.unwrap();
    assert!(why.contains("quota of 3 queued tasks"), "{why}");
    let mine =
        s.0.jobs(Reach::Tenant(a), &JobFilter::default())
            .await
            .unwrap();
    assert_eq!(mine.jobs.len(), 3, "the refused submit stored nothing");
    // One subtask fits (2 queued + 1).
    let roots = claim_in(s, Reach::Tenant(a), "ra", 1).await;
    let one = computed(vec![sub("Leaf", vec![])]);
    assert!(report_by(s, "ra", &roots[0], one, T0 + 7).await);
    assert_eq!(
        s.task(&roots[0].task_id).await.unwrap().state,
        TaskState::Computed
    );
    let usage = s.tenants(Reach::Tenant(a)).await.unwrap()[0]
        .1
        .usage
        .unwrap();
    assert_eq!(usage.queued_tasks, 2, "{usage:?}");
}

pub async fn running_attempts_stop_at_the_quota_and_ceilings_ride_the_claim(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let quota = TenantUpdate {
        running: Some(2),
        memory_mib: Some(64),
        deadline_seconds: Some(5),
        ..TenantUpdate::default()
    };
    let a = tenant(s, "a", quota).await;
    for i in 0..5 {
        s.0.submit(a, &job(&format!("j{i}"), "Root", 0), T0)
            .await
            .unwrap();
    }
    let got = claim_in(s, Reach::Tenant(a), "ra", 10).await;
    assert_eq!(got.len(), 2, "running: 2");
    assert!(
        got.iter()
            .all(|t| t.memory_mib == Some(64) && t.deadline_ms == Some(5_000))
    );
    assert!(claim_in(s, Reach::Tenant(a), "ra", 10).await.is_empty());
    // The fleet respects it too.
    assert!(claim_in(s, Reach::All, "fleet", 10).await.is_empty());
    assert!(report_by(s, "ra", &got[0], computed(vec![]), T0 + 6).await);
    assert_eq!(claim_in(s, Reach::Tenant(a), "ra", 10).await.len(), 1);
    // The default tenant has no ceilings: its claims carry none.
    s.submit(&job("d", "Root", 0), T0).await.unwrap();
    let d = claim(s, 1, T0 + 7).await;
    assert_eq!((d[0].memory_mib, d[0].deadline_ms), (None, None));
}

pub async fn a_shared_fleet_levels_running_slots_by_weight(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let a = tenant(s, "a", TenantUpdate::default()).await;
    let b = tenant(s, "b", TenantUpdate::default()).await;
    let heavy = tenant(
        s,
        "heavy",
        TenantUpdate {
            weight: Some(3),
            ..TenantUpdate::default()
        },
    )
    .await;
    for i in 0..12 {
        s.0.submit(a, &job(&format!("a{i}"), "Root", 0), T0)
            .await
            .unwrap();
    }
    // A alone takes the whole fleet: work-conserving.
    let first = claim_in(s, Reach::All, "fleet", 4).await;
    assert_eq!(first.len(), 4);
    for i in 0..12 {
        s.0.submit(b, &job(&format!("b{i}"), "Root", 0), T0 + 1)
            .await
            .unwrap();
    }
    let owner = |t: &ClaimedTask| t.job_id.clone();
    let mut of_b = 0;
    // B arrives while A holds four slots: the next four go to B, then they alternate.
    let next = claim_in(s, Reach::All, "fleet", 4).await;
    for t in &next {
        if s.owner(Owned::Job(&owner(t))).await.unwrap() == Some(b) {
            of_b += 1;
        }
    }
    assert_eq!(of_b, 4, "B catches up with A's four running");
    let pair = claim_in(s, Reach::All, "fleet", 2).await;
    let mut owners = Vec::new();
    for t in &pair {
        owners.push(s.owner(Owned::Job(&owner(t))).await.unwrap().unwrap());
    }
    owners.sort_unstable();
    assert_eq!(owners, [a, b], "level tenants share a claim");
    // Weight 3: of the next eight slots, heavy gets six.
    for i in 0..12 {
        s.0.submit(heavy, &job(&format!("h{i}"), "Root", 0), T0 + 2)
            .await
            .unwrap();
    }
    let mut counts = std::collections::HashMap::new();
    for t in claim_in(s, Reach::All, "fleet", 8).await {
        let who = s.owner(Owned::Job(&t.job_id)).await.unwrap().unwrap();
        *counts.entry(who).or_insert(0) += 1;
    }
    // Running before: a 5, b 5, heavy 0. Heavy levels at 5 × 3 = 15 weighted first.
    assert_eq!(counts.get(&heavy), Some(&8), "{counts:?}");
    let tenants = s.tenants(Reach::All).await.unwrap();
    let running: u64 = tenants.iter().map(|(_, t)| t.usage.unwrap().running).sum();
    assert_eq!(running, 18);
}

pub async fn log_lines_and_component_bytes_stay_within_their_quotas(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let a = tenant(
        s,
        "a",
        TenantUpdate {
            log_bytes_per_job: Some(100),
            component_bytes: Some(150),
            ..TenantUpdate::default()
        },
    )
    .await;
    let j = s.0.submit(a, &job("logs", "Root", 0), T0).await.unwrap();
    let t = claim_in(s, Reach::Tenant(a), "r1", 1).await.remove(0);
    let line = |i: u64| LogLine {
        time_unix_nano: T0 + i,
        level: Level::Info,
        message: "x".repeat(30),
        task_id: t.task_id.clone(),
        job_id: String::new(),
        runner_id: "r1".into(),
        attempt: 1,
        fields: Default::default(),
    };
    // 32 bytes a line: three fit in 100, the fourth becomes the marker.
    assert_eq!(s.add_logs((0..5).map(line).collect()).await.unwrap(), 4);
    assert_eq!(
        s.add_logs(vec![line(9)]).await.unwrap(),
        0,
        "no second marker"
    );
    let stored = s.logs(&j.id, &LogQuery::default()).await.unwrap().logs;
    assert_eq!(stored.len(), 4);
    assert!(
        stored[3].message.contains("log_bytes_per_job: 100"),
        "{:?}",
        stored[3]
    );
    // Another job of the tenant has its own allowance.
    let j2 = s.0.submit(a, &job("logs2", "Root", 0), T0).await.unwrap();
    let t2 = claim_in(s, Reach::Tenant(a), "r1", 1).await.remove(0);
    assert_eq!(t2.job_id, j2.id);
    let mut l = line(1);
    l.task_id = t2.task_id.clone();
    assert_eq!(s.add_logs(vec![l]).await.unwrap(), 1);

    let component = |digest: char, size: u64| tessera_api::Component {
        digest: format!("sha256:{}", digest.to_string().repeat(64)),
        name: "c".into(),
        size,
        task_types: vec![id("Root", "v0.0")],
        deployed_by: "t".into(),
        deployed_at: T0,
        undeployed_at: None,
    };
    s.0.deploy(a, &component('a', 100), vec![0u8; 100].into())
        .await
        .unwrap();
    let e =
        s.0.deploy(a, &component('b', 100), vec![0u8; 100].into())
            .await
            .unwrap_err()
            .to_string();
    assert!(e.contains("component_bytes: 150"), "{e}");
    // The same bytes again are no new bytes; another tenant has its own allowance.
    s.0.deploy(a, &component('a', 100), vec![0u8; 100].into())
        .await
        .unwrap();
    s.deploy(&component('b', 100), vec![0u8; 100].into())
        .await
        .unwrap();
    let usage = s.tenants(Reach::Tenant(a)).await.unwrap()[0]
        .1
        .usage
        .unwrap();
    assert_eq!(usage.component_bytes, 100);
}
