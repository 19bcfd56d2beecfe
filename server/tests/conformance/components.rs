//! Deployed components: content-addressed storage, deploy and undeploy, the digests a job pins,
//! fleet claims and what runners say of themselves.

use tessera_api::Component;
use tessera_server::store::StoreError;

use super::*;

/// A component row as the HTTP layer would make it.
fn component(digest: char, name: &str, types: &[(&str, &str)], at: u64) -> Component {
    Component {
        digest: format!("sha256:{}", digest.to_string().repeat(64)),
        name: name.into(),
        size: 3,
        task_types: types.iter().map(|(n, v)| id(n, v)).collect(),
        deployed_by: "alice@laptop".into(),
        deployed_at: at,
        undeployed_at: None,
    }
}

fn fleet(runner: &str, max: u32) -> ClaimRequest {
    ClaimRequest {
        deployed: true,
        host: Some("fleet-host".into()),
        concurrency: Some(8),
        ..claim_req(runner, &[], max)
    }
}

fn leaf_sub(name: &str) -> SubtaskSpec {
    SubtaskSpec {
        identifier: id(name, "v0.0"),
        input: json!({}),
        display: None,
        depends_on: vec![],
        max_retries: 0,
        cluster: None,
    }
}

pub async fn deploy_is_content_addressed_and_undeploy_keeps_the_bytes(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let a = component('a', "tasks", &[("Root", "v0.0")], T0);
    let first = s.deploy(&a, Arc::from(&b"one"[..])).await.unwrap();
    assert!(first.created);
    assert_eq!(first.component, a);
    // The same bytes again: nothing changes, and the answer says so.
    let later = Component {
        deployed_at: T0 + 5,
        name: "renamed".into(),
        ..a.clone()
    };
    let again = s.deploy(&later, Arc::from(&b"one"[..])).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.component, a);

    let b = component('b', "tasks", &[("Leaf", "v0.0")], T0 + 10);
    assert!(s.deploy(&b, Arc::from(&b"two"[..])).await.unwrap().created);
    let listed = s.components(false).await.unwrap().components;
    assert_eq!(listed, [b.clone(), a.clone()], "most recent first");
    assert_eq!(s.component(&a.digest).await.unwrap(), a);
    // By name: the most recently deployed under it.
    assert_eq!(s.component("tasks").await.unwrap(), b);
    assert_eq!(s.component_bytes(&b.digest).await.unwrap(), b"two");
    let missing = format!("sha256:{}", "c".repeat(64));
    assert!(matches!(
        s.component_bytes(&missing).await,
        Err(StoreError::NotFound {
            what: "component",
            ..
        })
    ));
    assert!(matches!(
        s.component("nothing").await,
        Err(StoreError::NotFound { .. })
    ));

    // Undeploying by name takes every component deployed under it.
    let gone = s.undeploy("tasks", T0 + 20).await.unwrap().components;
    assert_eq!(gone.len(), 2);
    assert!(gone.iter().all(|c| c.undeployed_at == Some(T0 + 20)));
    assert!(s.components(false).await.unwrap().components.is_empty());
    assert_eq!(s.components(true).await.unwrap().components.len(), 2);
    assert!(matches!(
        s.undeploy(&a.digest, T0 + 21).await,
        Err(StoreError::Conflict(_))
    ));
    // Jobs that pinned them can still fetch them.
    assert_eq!(s.component_bytes(&a.digest).await.unwrap(), b"one");

    // Deploying undeployed bytes deploys them again, as of now.
    let back = Component {
        deployed_at: T0 + 30,
        ..a.clone()
    };
    let redeployed = s.deploy(&back, Arc::from(&b"one"[..])).await.unwrap();
    assert!(redeployed.created);
    assert_eq!(redeployed.component, back);
    assert_eq!(s.components(false).await.unwrap().components, [back]);
}

pub async fn a_job_pins_the_components_deployed_when_it_was_submitted(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    // Nothing deployed: no pins, and a fleet runner has nothing to claim.
    let plain = s.submit(&job("plain", "Root", 0), T0).await.unwrap();
    assert!(s.claim(&fleet("f", 10), T0).await.unwrap().is_empty());

    let old = component('a', "tasks", &[("Root", "v0.0"), ("Leaf", "v0.0")], T0);
    s.deploy(&old, Arc::from(&b"old"[..])).await.unwrap();
    let first = s.submit(&job("first", "Root", 0), T0 + 1).await.unwrap();
    // A newer component serves Root (and not Leaf) for jobs submitted from now on.
    let new = component('b', "tasks", &[("Root", "v0.0")], T0 + 2);
    s.deploy(&new, Arc::from(&b"new"[..])).await.unwrap();
    let second = s.submit(&job("second", "Root", 0), T0 + 3).await.unwrap();

    let outlook = OutlookRequest {
        cluster: "default".into(),
        identifiers: vec![],
        deployed: true,
    };
    assert_eq!(s.outlook(&outlook).await.unwrap().queued, 2);
    let claimed = s.claim(&fleet("f", 10), T0 + 4).await.unwrap();
    let pinned: Vec<(&str, Option<&str>)> = claimed
        .iter()
        .map(|t| (t.job_id.as_str(), t.component.as_deref()))
        .collect();
    assert_eq!(
        pinned,
        [
            (first.id.as_str(), Some(old.digest.as_str())),
            (second.id.as_str(), Some(new.digest.as_str())),
        ],
        "the job without pins is left to runners with files"
    );
    let root_task = s.task(&claimed[0].task_id).await.unwrap();
    assert_eq!(root_task.component.as_deref(), Some(old.digest.as_str()));

    // Subtasks get their job's pins: Leaf from the old component (the new one does not
    // export it), Other from none.
    s.undeploy(&new.digest, T0 + 5).await.unwrap();
    for t in &claimed {
        let subs = vec![leaf_sub("Leaf"), leaf_sub("Other")];
        assert!(report_by(s, "f", t, computed(subs), T0 + 5).await);
    }
    let leaves = s.claim(&fleet("f", 10), T0 + 6).await.unwrap();
    let pinned: Vec<(&str, &str, Option<&str>)> = leaves
        .iter()
        .map(|t| {
            (
                t.job_id.as_str(),
                t.identifier.name.as_str(),
                t.component.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        pinned,
        [
            (first.id.as_str(), "Leaf", Some(old.digest.as_str())),
            (second.id.as_str(), "Leaf", Some(old.digest.as_str())),
        ]
    );

    // A runner with files still claims what it serves, pinned or not; its span names no
    // component, a fleet runner's does.
    let by_file = s
        .claim(
            &claim_req("files", &[id("Root", "v0.0"), id("Other", "v0.0")], 10),
            T0 + 7,
        )
        .await
        .unwrap();
    let jobs: Vec<&str> = by_file.iter().map(|t| t.job_id.as_str()).collect();
    assert_eq!(
        jobs,
        [plain.id.as_str(), first.id.as_str(), second.id.as_str()]
    );
    assert!(
        by_file
            .iter()
            .all(|t| t.component.is_none() || t.job_id != plain.id)
    );
    let spans = s.spans(&first.id, &Default::default()).await.unwrap().spans;
    let ran: Vec<(&str, Option<&str>)> = spans
        .iter()
        .map(|sp| (sp.runner_id.as_str(), sp.component.as_deref()))
        .collect();
    assert_eq!(
        ran,
        [
            ("f", Some(old.digest.as_str())),
            ("f", Some(old.digest.as_str())),
            ("files", None),
        ]
    );
    // Undeploying changes nothing for jobs that pinned it.
    s.undeploy(&old.digest, T0 + 8).await.unwrap();
    assert!(report_by(s, "f", &leaves[0], Report::Abandoned, T0 + 9).await);
    let again = s.claim(&fleet("f", 10), T0 + 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].component.as_deref(), Some(old.digest.as_str()));
}

pub async fn fleet_runners_are_listed_and_serve_what_was_pinned(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let c = component('a', "tasks", &[("Root", "v0.0")], T0);
    s.deploy(&c, Arc::from(&b"x"[..])).await.unwrap();
    let j = s.submit(&job("j", "Root", 0), T0).await.unwrap();
    // Nobody asked for work yet: the pinned task says a fleet runner would serve it.
    let why = s.unserved(&j.id, T0).await.unwrap().tasks;
    assert_eq!(why.len(), 1);
    assert!(
        why[0].reason.contains("tessera runner --deployed"),
        "{why:?}"
    );
    let claimed = s.claim(&fleet("f", 1), T0 + 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let runners = s.runners(T0 + 2).await.unwrap().runners;
    assert_eq!(runners.len(), 1);
    let r = &runners[0];
    assert!(r.deployed);
    assert_eq!(r.host.as_deref(), Some("fleet-host"));
    assert_eq!(r.concurrency, Some(8));
    assert_eq!(r.running, 1);
    // A second job is served by the fleet runner seen: nothing to explain.
    let k = s.submit(&job("k", "Root", 0), T0 + 3).await.unwrap();
    assert!(s.unserved(&k.id, T0 + 4).await.unwrap().tasks.is_empty());
}

pub async fn the_deployed_task_types_are_bounded(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let many = |c: char, n: usize| {
        let names: Vec<String> = (0..n).map(|i| format!("T{c}{i}")).collect();
        Component {
            task_types: names
                .iter()
                .map(|n| TaskIdentifier::parse(n, "v0.0").unwrap())
                .collect(),
            ..component(c, "big", &[], T0)
        }
    };
    s.deploy(&many('a', 600), Arc::from(&b"a"[..]))
        .await
        .unwrap();
    let refused = s.deploy(&many('b', 600), Arc::from(&b"b"[..])).await;
    let Err(StoreError::Conflict(why)) = refused else {
        panic!("{refused:?}")
    };
    assert!(why.contains("undeploy some first"), "{why}");
    assert_eq!(s.components(true).await.unwrap().components.len(), 1);
}

pub async fn a_retried_job_runs_the_code_it_pinned(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let old = component('a', "tasks", &[("Root", "v0.0")], T0);
    s.deploy(&old, Arc::from(&b"old"[..])).await.unwrap();
    let j = s.submit(&job("j", "Root", 0), T0).await.unwrap();
    let got = s.claim(&fleet("f", 1), T0 + 1).await.unwrap();
    let failed = Report::Failed {
        permanent: false,
        reason: "boom".into(),
        display: None,
    };
    assert!(report_by(s, "f", &got[0], failed, T0 + 2).await);
    assert_eq!(s.job(&j.id).await.unwrap().state, JobState::Failed);
    // A new build and the old one undeployed: the retry still runs what the job pinned.
    let new = component('b', "tasks", &[("Root", "v0.0")], T0 + 3);
    s.deploy(&new, Arc::from(&b"new"[..])).await.unwrap();
    s.undeploy(&old.digest, T0 + 4).await.unwrap();
    s.retry(&j.id, T0 + 5).await.unwrap();
    let again = s.claim(&fleet("f", 1), T0 + 6).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].component.as_deref(), Some(old.digest.as_str()));
}

pub async fn a_file_runner_names_the_file_that_ran(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let mut j = job("j", "Root", 0);
    j.root.identifier = id("Root", "v0.1");
    let j = s.submit(&j, T0).await.unwrap();
    // The runner's Root v0.3 can run a Root v0.1 task: its file is the one that ran.
    let mut files = claim_req("files", &[id("Leaf", "v0.0"), id("Root", "v0.3")], 10);
    files.digests = vec![digest('b'), digest('c')];
    let got = s.claim(&files, T0 + 1).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].component, None, "nothing was pinned");
    let spans = s.spans(&j.id, &Default::default()).await.unwrap().spans;
    assert_eq!(spans[0].component, Some(digest('c')));
    // Later claims name the files again, once their digests are known and when one is new;
    // each type by the file paired with the identifier that runs it.
    for (n, root, file) in [(2, "Root", 'c'), (3, "Leaf", 'b'), (4, "Leaf", 'b')] {
        let j = s.submit(&job("j", root, 0), T0 + n).await.unwrap();
        assert_eq!(s.claim(&files, T0 + n).await.unwrap().len(), 1);
        let spans = s.spans(&j.id, &Default::default()).await.unwrap().spans;
        assert_eq!(spans[0].component, Some(digest(file)), "{root} at {n}");
    }
}

pub async fn digests_that_do_not_pair_with_the_identifiers_label_nothing(store: Arc<dyn Store>) {
    let s = &AsDefault(&*store);
    let j = s.submit(&job("j", "Root", 0), T0).await.unwrap();
    let mut files = claim_req("files", &[id("Root", "v0.0"), id("Leaf", "v0.0")], 10);
    files.digests = vec![format!("sha256:{}", "a".repeat(64))];
    let got = s.claim(&files, T0 + 1).await.unwrap();
    assert_eq!(got.len(), 1, "the claim itself stands");
    let spans = s.spans(&j.id, &Default::default()).await.unwrap().spans;
    assert_eq!(spans[0].component, None);
}
