//! Claims: which queued tasks a runner gets (version and cluster rules, order, dependencies).

use super::*;

pub async fn version_rule(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
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
            .claim(&claim_req("r1", &[id("Root", runner)], 1), T0)
            .await
            .unwrap();
        assert_eq!(!got.is_empty(), claims, "runner {runner}");
    }
    let mut j = job("v", "Root", 0);
    j.root.identifier = id("Root", "v1.0");
    s.submit(&j, T0).await.unwrap();
    let got = s
        .claim(&claim_req("r1", &[id("Root", "v1.7")], 1), T0)
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "a newer minor runs an older task");
    assert!(
        s.claim(&claim_req("r1", &[id("Other", "v1.7")], 1), T0)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn cluster_rule(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let mut j = job("gpu-job", "Root", 0);
    j.cluster = Some("gpu".into());
    let j = s.submit(&j, T0).await.unwrap();
    assert_eq!(j.cluster, "gpu");
    assert!(claim(s, 1, T0).await.is_empty());
    let mut req = claim_req("r1", &all(), 1);
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

pub async fn depends_on_waits_for_the_whole_subtree(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
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
    let s = &AsDefault(&*store);
    let first = job_with_a_and_b(s, "first").await;
    let second = s.submit(&job("second", "Root", 0), T0 + 2).await.unwrap();
    let a = s
        .claim(&claim_req("r1", &[id("A", "v0.0")], 1), T0 + 3)
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

pub async fn outlook_counts_work_a_runner_could_do(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let req = OutlookRequest {
        cluster: "default".into(),
        identifiers: vec![id("Leaf", "v0.0")],
        deployed: false,
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

pub async fn a_runner_may_serve_a_thousand_identifiers(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    s.submit(&job("many", "Root", 0), T0).await.unwrap();
    let mut ids: Vec<TaskIdentifier> = (0..999).map(|n| id(&format!("T{n}"), "v0.0")).collect();
    ids.push(id("Root", "v0.0"));
    let request = OutlookRequest {
        cluster: "default".into(),
        identifiers: ids.clone(),
        deployed: false,
    };
    assert_eq!(s.outlook(&request).await.unwrap().queued, 1);
    let got = s.claim(&claim_req("r1", &ids, 10), T0 + 1).await.unwrap();
    assert_eq!(got.len(), 1);
}

pub async fn claims_make_runners_visible_and_unserved_tasks_say_why(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let mut newer = job("newer", "Root", 0);
    newer.root.identifier = id("Root", "v0.3");
    let j = s.submit(&newer, T0).await.unwrap();
    let mut gpu = job("gpu", "Root", 0);
    gpu.cluster = Some("gpu".into());
    let g = s.submit(&gpu, T0).await.unwrap();
    // Before any runner claims, nobody serves anything.
    assert!(s.runners(T0).await.unwrap().runners.is_empty());
    let why = s.unserved(&j.id, T0).await.unwrap().tasks;
    assert_eq!(why.len(), 1);
    assert!(
        why[0]
            .reason
            .starts_with("no runner has asked for work in cluster default")
    );
    // A runner of Root v0.2 claims in cluster default: it is seen, and the v0.3 task is not
    // for it.
    let request = ClaimRequest {
        identifiers: vec![id("Root", "v0.2")],
        ..claim_req("old-runner", &[], 1)
    };
    assert!(s.claim(&request, T0 + SEC).await.unwrap().is_empty());
    let seen = s.runners(T0 + 2 * SEC).await.unwrap().runners;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].id.as_str(), seen[0].cluster.as_str()),
        ("old-runner", "default")
    );
    assert_eq!(seen[0].identifiers, [id("Root", "v0.2")]);
    assert_eq!(seen[0].last_seen, T0 + SEC);
    let why = s.unserved(&j.id, T0 + 2 * SEC).await.unwrap().tasks;
    assert_eq!(why.len(), 1);
    assert_eq!(why[0].identifier, id("Root", "v0.3"));
    assert_eq!(
        why[0].reason,
        "no runner in cluster default has served Root@v0.3 in the last 5 minutes; runners \
         seen there serve Root v0.2"
    );
    // Cluster gpu: nobody there; the v0.2 runner of cluster default could run Root v0.0.
    let why = s.unserved(&g.id, T0 + 2 * SEC).await.unwrap().tasks;
    assert_eq!(
        why[0].reason,
        "no runner has asked for work in cluster gpu in the last 5 minutes; Root@v0.0 is \
         served in cluster default"
    );
    // A runner that serves it makes the diagnosis empty; six minutes later it is forgotten.
    let request = ClaimRequest {
        identifiers: vec![id("Root", "v0.3")],
        ..claim_req("new-runner", &[], 1)
    };
    let got = s.claim(&request, T0 + 3 * SEC).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        s.unserved(&j.id, T0 + 4 * SEC)
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
    let later = T0 + 6 * 60 * SEC;
    assert!(s.runners(later).await.unwrap().runners.is_empty());
    assert!(s.unserved("no-such-job", later).await.is_err());
}
