//! Tenants through a real server process on both stores: every route of the API against
//! another tenant's resources with each role's key (an isolation matrix driven by the OpenAPI
//! document, so that a new route without a case fails here), runners that try to pass for
//! each other, and a server without keys refusing what a web page could send it.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ServerProc, databases, guest, output, tessera};
use tessera_api::{
    Blob, CacheWrite, ClaimedTask, Client, DeployQuery, ExtendRequest, LeaseRef, LogBatch, LogLine,
    NewTenant, Report, ReportRequest, Role, TaskReport,
};
use tessera_server::testing::protocol::{claim, done, leaf, root_job};

const OPERATOR: &str = "operator-token-for-tests";

/// A tenant's keys by role, and its runner's id.
struct Keys {
    admin: String,
    submit: String,
    read: String,
    runner: String,
}

async fn key(op: &Client, role: Role, tenant: Option<&str>) -> String {
    support::new_key(op, role, tenant).await.1
}

async fn tenant_keys(op: &Client, tenant: &str) -> Keys {
    op.create_tenant(&NewTenant {
        name: tenant.into(),
        weight: None,
    })
    .await
    .unwrap();
    Keys {
        admin: key(op, Role::Admin, Some(tenant)).await,
        submit: key(op, Role::Submit, Some(tenant)).await,
        read: key(op, Role::Read, Some(tenant)).await,
        runner: key(op, Role::Runner, Some(tenant)).await,
    }
}

fn client(server: &ServerProc, key: &str) -> Client {
    Client::new(server.url.clone(), Some(key.to_string()))
}

/// Tenant B's resources, named by id.
struct Theirs {
    job: String,
    root: String,
    /// A subtask B's runner holds.
    held: ClaimedTask,
    digest: String,
    admin_key_id: String,
}

/// Sets up tenant B: a deployed component, a job whose root computed (output, cache, a log
/// line) and whose one subtask B's runner holds, and a second job left queued.
async fn their_resources(server: &ServerProc, b: &Keys, wasm: &[u8]) -> Theirs {
    let admin = client(server, &b.admin);
    let digest = tessera_server::component::digest(wasm);
    admin
        .deploy(
            &DeployQuery {
                name: "theirs".into(),
                digest: digest.clone(),
                task_types: "Root@v0.0,Leaf@v0.0".into(),
                by: None,
            },
            wasm.to_vec(),
        )
        .await
        .unwrap();
    let submit = client(server, &b.submit);
    let job = submit.submit(&root_job("theirs")).await.unwrap().id;
    submit.submit(&root_job("theirs-queued")).await.unwrap();
    let runner = client(server, &b.runner);
    let got = runner.claim(&claim("rb", 1)).await.unwrap().tasks;
    let root = got[0].clone();
    assert_eq!(root.job_id, job);
    let mut report = done(&root, vec![leaf(0)]);
    if let Report::Computed { output, cache, .. } = &mut report.report {
        *output = Some(Blob(b"\"b-secret-output\"".to_vec()));
        cache.push(CacheWrite {
            key: "b-secret-key".into(),
            value: Some(Blob(b"1".to_vec())),
        });
    }
    let answer = runner
        .report(&ReportRequest {
            runner_id: "rb".into(),
            reports: vec![report],
            claim: None,
        })
        .await
        .unwrap();
    assert!(answer.results[0].accepted, "{answer:?}");
    runner
        .send_logs(&LogBatch {
            logs: vec![log_line(&root, "rb")],
        })
        .await
        .unwrap();
    let held = runner.claim(&claim("rb", 1)).await.unwrap().tasks.remove(0);
    assert_eq!(
        held.job_id, job,
        "the subtask is claimed before the queued job"
    );
    let keys = admin.keys().await.unwrap().keys;
    let admin_key_id = keys
        .iter()
        .find(|k| k.role == Role::Admin)
        .unwrap()
        .id
        .clone();
    Theirs {
        job,
        root: root.task_id,
        held,
        digest,
        admin_key_id,
    }
}

fn log_line(task: &ClaimedTask, runner: &str) -> LogLine {
    LogLine {
        time_unix_nano: 1,
        level: tessera_api::Level::Info,
        message: "hello".into(),
        task_id: task.task_id.clone(),
        job_id: task.job_id.clone(),
        runner_id: runner.into(),
        attempt: task.attempt,
        fields: Default::default(),
    }
}

/// What a route answers a key of tenant A about tenant B's resources.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The route is public.
    Public,
    /// Allowed roles get 404: B's resource is as missing as one that never was.
    NotFound,
    /// Allowed roles get a success that shows nothing of B.
    Blind,
    /// Allowed roles get 409 or an answer that refuses (the runner protocol on B's task).
    Refused,
}

/// One case of the matrix: a route, the request to send, the roles allowed, what they get.
struct Case {
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
    allowed: &'static [Role],
    expect: Expect,
}

const READERS: &[Role] = &[Role::Admin, Role::Submit, Role::Read];
const SUBMITTERS: &[Role] = &[Role::Admin, Role::Submit];
const ADMINS: &[Role] = &[Role::Admin];
const RUNNERS: &[Role] = &[Role::Admin, Role::Runner];
const ANYONE: &[Role] = &[Role::Admin, Role::Submit, Role::Read, Role::Runner];
const NOBODY: &[Role] = &[];

#[rustfmt::skip]
fn cases(b: &Theirs) -> Vec<Case> {
    use Expect::*;
    use Method as M;
    let (job, task, digest) = (&b.job, &b.root, &b.digest);
    let lease = json!([{ "task_id": b.held.task_id, "lease": b.held.lease }]);
    let c = |method: Method, template: &'static str, path: String, body: Option<Value>,
             allowed: &'static [Role], expect: Expect| Case { method, template, path, body, allowed, expect };
    let ids = json!([{"name": "Leaf", "version": "v0.0"}, {"name": "Root", "version": "v0.0"}]);
    let claim_body = json!({"runner_id": "rb", "cluster": "default", "identifiers": ids, "max": 10});
    let report = json!({"runner_id": "rb", "reports": [{"task_id": b.held.task_id,
        "lease": b.held.lease, "report": {"outcome": "computed"}}]});
    let logs = json!({"logs": [serde_json::to_value(log_line(&b.held, "rb")).unwrap()]});
    let root_job = json!({"name": "ours", "root": {"identifier": {"name": "Root", "version": "v0.0"}}});
    vec![
        c(M::GET, "/v1/health", "/v1/health".into(), None, ANYONE, Public),
        c(M::GET, "/v1/ready", "/v1/ready".into(), None, ANYONE, Public),
        c(M::GET, "/v1/openapi.json", "/v1/openapi.json".into(), None, ANYONE, Blind),
        c(M::GET, "/v1/whoami", "/v1/whoami".into(), None, ANYONE, Blind),
        c(M::GET, "/v1/tenants", "/v1/tenants".into(), None, ANYONE, Blind),
        c(M::POST, "/v1/tenants", "/v1/tenants".into(), Some(json!({"name": "c"})), NOBODY, Blind),
        c(M::PATCH, "/v1/tenants/{name}", "/v1/tenants/b".into(), Some(json!({"running": 1})), NOBODY, Blind),
        c(M::GET, "/v1/keys", "/v1/keys".into(), None, ADMINS, Blind),
        c(M::POST, "/v1/keys", "/v1/keys".into(), Some(json!({"role": "read", "tenant": "b"})), ADMINS, NotFound),
        c(M::DELETE, "/v1/keys/{id}", format!("/v1/keys/{}", b.admin_key_id), None, ADMINS, NotFound),
        c(M::GET, "/v1/jobs", "/v1/jobs".into(), None, READERS, Blind),
        c(M::POST, "/v1/jobs", "/v1/jobs".into(), Some(root_job), SUBMITTERS, Blind),
        c(M::GET, "/v1/jobs/{id}", format!("/v1/jobs/{job}"), None, READERS, NotFound),
        c(M::DELETE, "/v1/jobs/{id}", format!("/v1/jobs/{job}"), None, ADMINS, NotFound),
        c(M::GET, "/v1/jobs/{id}/tasks", format!("/v1/jobs/{job}/tasks"), None, READERS, NotFound),
        c(M::POST, "/v1/jobs/{id}/cancel", format!("/v1/jobs/{job}/cancel"), Some(json!({})), SUBMITTERS, NotFound),
        c(M::POST, "/v1/jobs/{id}/retry", format!("/v1/jobs/{job}/retry"), Some(json!({})), SUBMITTERS, NotFound),
        c(M::GET, "/v1/jobs/{id}/unserved", format!("/v1/jobs/{job}/unserved"), None, READERS, NotFound),
        c(M::GET, "/v1/jobs/{id}/logs", format!("/v1/jobs/{job}/logs"), None, READERS, NotFound),
        c(M::GET, "/v1/jobs/{id}/spans", format!("/v1/jobs/{job}/spans"), None, READERS, NotFound),
        c(M::GET, "/v1/jobs/{id}/output", format!("/v1/jobs/{job}/output"), None, ANYONE, NotFound),
        c(M::GET, "/v1/jobs/{id}/cache", format!("/v1/jobs/{job}/cache"), None, ANYONE, NotFound),
        c(M::GET, "/v1/jobs/{id}/cache/value", format!("/v1/jobs/{job}/cache/value?key=b-secret-key"), None, ANYONE, NotFound),
        c(M::GET, "/v1/tasks/{id}", format!("/v1/tasks/{task}"), None, READERS, NotFound),
        c(M::GET, "/v1/tasks/{id}/dependencies", format!("/v1/tasks/{task}/dependencies"), None, ANYONE, NotFound),
        c(M::GET, "/v1/runners", "/v1/runners".into(), None, READERS, Blind),
        c(M::GET, "/v1/components", "/v1/components?all=true".into(), None, READERS, Blind),
        c(M::GET, "/v1/components/{id}", format!("/v1/components/{digest}"), None, ANYONE, NotFound),
        c(M::GET, "/v1/components/{id}/info", format!("/v1/components/{digest}/info"), None, READERS, NotFound),
        c(M::DELETE, "/v1/components/{id}", format!("/v1/components/{digest}"), None, ADMINS, NotFound),
        // Deploying is checked on its own below (it takes a wasm body, not JSON).
        c(M::POST, "/v1/components", String::new(), None, ADMINS, Blind),
        c(M::POST, "/v1/runner/claim", "/v1/runner/claim".into(), Some(claim_body), RUNNERS, Blind),
        c(M::POST, "/v1/runner/outlook", "/v1/runner/outlook".into(),
            Some(json!({"cluster": "default", "identifiers": ids})), RUNNERS, Blind),
        c(M::POST, "/v1/runner/report", "/v1/runner/report".into(), Some(report), RUNNERS, Refused),
        c(M::POST, "/v1/runner/extend", "/v1/runner/extend".into(),
            Some(json!({"runner_id": "rb", "leases": lease})), RUNNERS, Refused),
        c(M::POST, "/v1/logs", "/v1/logs".into(), Some(logs), RUNNERS, Refused),
    ]
}

async fn send(http: &reqwest::Client, base: &str, key: &str, case: &Case) -> (StatusCode, String) {
    let mut request = http
        .request(case.method.clone(), format!("{base}{}", case.path))
        .bearer_auth(key);
    if let Some(body) = &case.body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// Every (method, path) the OpenAPI document lists.
async fn documented_routes(http: &reqwest::Client, base: &str) -> BTreeSet<(String, String)> {
    let doc: Value = http
        .get(format!("{base}/v1/openapi.json"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The document is served beside what it describes.
    let mut routes = BTreeSet::from([("GET".to_string(), "/v1/openapi.json".to_string())]);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

/// A server on `db` with an operator token and tenants a and b, B's resources set up.
async fn two_tenants(
    db: &str,
    dir: &std::path::Path,
    wasm: &[u8],
) -> (ServerProc, Client, Keys, Keys, Theirs) {
    let log = dir.join(format!("server-{}.log", db.len()));
    let server = ServerProc::start_db(db, &log, &["--token", OPERATOR]);
    let op = client(&server, OPERATOR);
    let a = tenant_keys(&op, "a").await;
    let b = tenant_keys(&op, "b").await;
    let theirs = their_resources(&server, &b, wasm).await;
    (server, op, a, b, theirs)
}

#[tokio::test]
async fn each_role_of_one_tenant_sees_nothing_of_another_on_every_route() {
    let wasm = std::fs::read(guest("parallel-sleep")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for db in databases(dir.path()).await {
        let (server, op, a, b, theirs) = two_tenants(&db, dir.path(), &wasm).await;
        let http = reqwest::Client::new();
        let cases = cases(&theirs);

        // Every documented route has a case, and every case a documented route.
        let covered: BTreeSet<(String, String)> = cases
            .iter()
            .map(|c| (c.method.to_string(), c.template.to_string()))
            .collect();
        assert_eq!(documented_routes(&http, &server.url).await, covered, "{db}");

        let roles = [
            (Role::Admin, &a.admin),
            (Role::Submit, &a.submit),
            (Role::Read, &a.read),
            (Role::Runner, &a.runner),
        ];
        for case in cases.iter().filter(|c| !c.path.is_empty()) {
            for (role, key) in roles {
                let (status, body) = send(&http, &server.url, key, case).await;
                let what = format!(
                    "{db}: {role} key of tenant a, {} {}",
                    case.method, case.path
                );
                if case.expect != Expect::Public && !case.allowed.contains(&role) {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
                    assert!(body.contains("needs a key of role"), "{what}: {body}");
                    continue;
                }
                match case.expect {
                    Expect::Public | Expect::Blind => {
                        assert!(status.is_success(), "{what}: {status} {body}")
                    }
                    Expect::NotFound => {
                        assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {body}")
                    }
                    Expect::Refused => assert!(
                        status == StatusCode::CONFLICT
                            || body.contains("\"accepted\":false")
                            || body.contains("\"held\":false"),
                        "{what}: {status} {body}"
                    ),
                }
                // Nothing of B shows in any answer to A: no id (but those A sent), no
                // output, no key, no lease.
                let sent = format!("{} {}", case.path, case.body.clone().unwrap_or_default());
                let ids = [
                    &theirs.job,
                    &theirs.root,
                    &theirs.held.task_id,
                    &theirs.digest,
                    &theirs.admin_key_id,
                ];
                for secret in ids.into_iter().filter(|id| !sent.contains(id.as_str())) {
                    assert!(
                        !body.contains(secret.as_str()),
                        "{what} shows {secret}: {body}"
                    );
                }
                assert!(
                    !body.contains("b-secret-output") && !body.contains("b-secret-key"),
                    "{what}"
                );
                if !sent.contains(&theirs.held.lease.to_string()) {
                    assert!(
                        !body.contains(&theirs.held.lease.to_string()),
                        "{what} discloses the lease: {body}"
                    );
                }
                // Nor whether B's task exists or what state it is in.
                assert!(
                    !body.contains("running") || case.expect == Expect::Blind,
                    "{what}: {body}"
                );
            }
        }

        // A deploy by A of the very bytes B deployed is A's own: created, not "deployed
        // already" (which would tell A what B runs).
        let ours = client(&server, &a.admin)
            .deploy(
                &DeployQuery {
                    name: "ours".into(),
                    digest: theirs.digest.clone(),
                    task_types: "Root@v0.0".into(),
                    by: None,
                },
                wasm.clone(),
            )
            .await
            .unwrap();
        assert!(ours.created, "{db}: {ours:?}");
        for key in [&a.submit, &a.read, &a.runner] {
            let e = client(&server, key)
                .deploy(
                    &DeployQuery {
                        name: "x".into(),
                        digest: theirs.digest.clone(),
                        task_types: "Root@v0.0".into(),
                        by: None,
                    },
                    wasm.clone(),
                )
                .await
                .unwrap_err();
            assert!(e.to_string().contains("403"), "{db}: {e}");
        }

        // B still has everything, untouched: its job running, its task held, its lease good.
        let bc = client(&server, &b.submit);
        let job = bc.job(&theirs.job).await.unwrap();
        assert_eq!(job.state, tessera_api::JobState::Running, "{db}");
        let br = client(&server, &b.runner);
        let extended = br
            .extend(&ExtendRequest {
                runner_id: "rb".into(),
                leases: vec![LeaseRef {
                    task_id: theirs.held.task_id.clone(),
                    lease: theirs.held.lease,
                }],
            })
            .await
            .unwrap();
        assert!(extended.leases[0].held, "{db}: {extended:?}");
        // And sees nothing of A: A's job submitted above is not in B's list.
        let listed = bc.jobs(&Default::default()).await.unwrap();
        assert!(
            listed.jobs.iter().all(|j| j.name.starts_with("theirs")),
            "{db}"
        );
        // The operator sees both tenants' jobs, each saying whose it is, and may ask for one
        // tenant's; a tenant asking for another's gets nothing.
        let all = op.jobs(&Default::default()).await.unwrap();
        assert!(
            all.jobs.iter().any(|j| j.name == "ours" && j.tenant == "a"),
            "{db}"
        );
        assert!(
            all.jobs
                .iter()
                .any(|j| j.id == theirs.job && j.tenant == "b"),
            "{db}"
        );
        let only_b = tessera_api::JobFilter {
            tenant: Some("b".into()),
            ..Default::default()
        };
        let of_b = op.jobs(&only_b).await.unwrap().jobs;
        assert!(
            !of_b.is_empty() && of_b.iter().all(|j| j.tenant == "b"),
            "{db}"
        );
        let peek = client(&server, &a.read).jobs(&only_b).await.unwrap();
        assert!(peek.jobs.is_empty(), "{db}: {peek:?}");
        let e = op
            .jobs(&tessera_api::JobFilter {
                tenant: Some("nobody".into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("404"), "{db}: {e}");
    }
}

/// Runners cannot pass for one another: not with the same key and another id, not with another
/// key and the same id, not from another tenant, not as a fleet runner — and a refusal says
/// nothing of the lease.
#[tokio::test]
async fn a_lease_answers_only_to_the_runner_and_key_that_claimed_it() {
    let dir = tempfile::tempdir().unwrap();
    for db in databases(dir.path()).await {
        let log = dir.path().join(format!("server-{}.log", db.len()));
        let server = ServerProc::start_db(&db, &log, &["--token", OPERATOR]);
        let op = client(&server, OPERATOR);
        let a = tenant_keys(&op, "a").await;
        let b = tenant_keys(&op, "b").await;
        let second_runner_key = key(&op, Role::Runner, Some("a")).await;
        let fleet = key(&op, Role::Runner, None).await;
        client(&server, &a.submit)
            .submit(&root_job("held"))
            .await
            .unwrap();
        let holder = client(&server, &a.runner);
        let task = holder.claim(&claim("r1", 1)).await.unwrap().tasks.remove(0);
        let pretenders = [
            (&a.runner, "r2", "the same key, another runner id"),
            (
                &second_runner_key,
                "r1",
                "another key of the tenant, the same runner id",
            ),
            (&b.runner, "r1", "another tenant's runner"),
            (&fleet, "r1", "a fleet runner"),
        ];
        for (key, id, who) in pretenders {
            let c = client(&server, key);
            let report = ReportRequest {
                runner_id: id.into(),
                reports: vec![TaskReport {
                    task_id: task.task_id.clone(),
                    lease: task.lease,
                    report: Report::Failed {
                        reason: "hijacked".into(),
                        display: None,
                        permanent: true,
                    },
                }],
                claim: None,
            };
            let e = c.report(&report).await.unwrap_err().to_string();
            assert!(e.contains("409"), "{db}: {who}: {e}");
            assert!(!e.contains(&task.lease.to_string()), "{db}: {who}: {e}");
            let extended = c
                .extend(&ExtendRequest {
                    runner_id: id.into(),
                    leases: vec![LeaseRef {
                        task_id: task.task_id.clone(),
                        lease: task.lease,
                    }],
                })
                .await
                .unwrap();
            assert!(!extended.leases[0].held, "{db}: {who}");
            let e = c
                .send_logs(&LogBatch {
                    logs: vec![log_line(&task, id)],
                })
                .await
                .unwrap_err();
            assert!(e.to_string().contains("409"), "{db}: {who}: {e}");
        }
        // A guess next to the lease is as wrong as any other.
        for guess in [task.lease.wrapping_add(1), task.lease.saturating_sub(1), 1] {
            let e = holder
                .report(&ReportRequest {
                    runner_id: "r1".into(),
                    reports: vec![TaskReport {
                        lease: guess,
                        ..done(&task, vec![])
                    }],
                    claim: None,
                })
                .await
                .unwrap_err();
            assert!(e.to_string().contains("409"), "{db}: {e}");
        }
        // The holder still holds it and completes it.
        let answer = holder
            .report(&ReportRequest {
                runner_id: "r1".into(),
                reports: vec![done(&task, vec![])],
                claim: None,
            })
            .await
            .unwrap();
        assert!(answer.results[0].accepted, "{db}: {answer:?}");
    }
}

/// A runner of a tenant runs only that tenant's tasks; a fleet runner runs every tenant's
/// deployed components. Real runners, real components, one cluster name for all.
/// Runs `tessera runner --deployed` with `key` until nothing is left that it could serve.
fn run_fleet(server: &ServerProc, key: &str) {
    let mut fleet_runner = tessera();
    fleet_runner
        .args(["runner", "--deployed"])
        .env("TESSERA_SERVER", &server.url)
        .env("TESSERA_TOKEN", key);
    let (status, _, err) = output(fleet_runner, Duration::from_secs(120));
    assert!(status.success(), "{err}");
    assert!(
        err.contains("the deployed components for every tenant"),
        "{err}"
    );
}

#[tokio::test]
async fn tenant_runners_serve_their_tenant_and_fleet_runners_every_tenant() {
    let wasm_path = guest("parallel-sleep");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &["--token", OPERATOR]);
    let op = client(&server, OPERATOR);
    let a = tenant_keys(&op, "a").await;
    let b = tenant_keys(&op, "b").await;
    let fleet = key(&op, Role::Runner, None).await;
    let seed = |n: u32| {
        support::job_of(
            "seed",
            "ParallelSleepWorkflow",
            json!({"count": n, "seconds": 0.05}),
        )
    };
    let ja = client(&server, &a.submit)
        .submit(&seed(3))
        .await
        .unwrap()
        .id;
    let jb = client(&server, &b.submit)
        .submit(&seed(4))
        .await
        .unwrap()
        .id;

    // A's runner with the component file serves A's job and exits: B's job is not its work.
    // Its banner says whose tasks it serves.
    let mut runner = support::runner(&server, &[&wasm_path]);
    runner.env("TESSERA_TOKEN", &a.runner);
    let (status, _, err) = output(runner, Duration::from_secs(120));
    assert!(status.success(), "{err}");
    assert!(err.contains(" for tenant a on cluster default"), "{err}");
    let job_a = client(&server, &a.read).job(&ja).await.unwrap();
    support::assert_completed(&job_a);
    let job_b = client(&server, &b.read).job(&jb).await.unwrap();
    assert_eq!(
        job_b.task_counts.computed, 0,
        "A's runner ran B's work: {job_b:?}"
    );

    // B deploys its component; a fleet runner (the operator's) runs B's next job from it.
    let (status, _, err) = {
        let mut cmd = tessera();
        cmd.args(["deploy"])
            .arg(&wasm_path)
            .env("TESSERA_SERVER", &server.url)
            .env("TESSERA_TOKEN", &b.admin);
        output(cmd, Duration::from_secs(120))
    };
    assert!(status.success(), "{err}");
    let jb2 = client(&server, &b.submit)
        .submit(&seed(2))
        .await
        .unwrap()
        .id;
    run_fleet(&server, &fleet);
    support::assert_completed(&client(&server, &b.read).job(&jb2).await.unwrap());
    // The fleet runner left B's unpinned job (submitted before the deploy) alone.
    let job_b = client(&server, &b.read).job(&jb).await.unwrap();
    assert_eq!(job_b.task_counts.computed, 0, "{job_b:?}");

    // A job whose tasks read each other's outputs and the job cache runs on the fleet key:
    // each read goes under the lease of the attempt that makes it.
    let (status, _, err) = {
        let mut cmd = tessera();
        cmd.args(["deploy"])
            .arg(guest("word-count"))
            .env("TESSERA_SERVER", &server.url)
            .env("TESSERA_TOKEN", &b.admin);
        output(cmd, Duration::from_secs(120))
    };
    assert!(status.success(), "{err}");
    let words = support::job_of(
        "words",
        "WordCount",
        json!({"text": "tile scene tile band", "chunks": 2, "top": 2}),
    );
    let jw = client(&server, &b.submit).submit(&words).await.unwrap().id;
    run_fleet(&server, &fleet);
    let reader = client(&server, &b.read);
    support::assert_completed(&reader.job(&jw).await.unwrap());
    let summary = reader
        .output(&jw, None, 1 << 20)
        .await
        .unwrap()
        .value
        .unwrap();
    let summary: Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(summary["words"], 4, "{summary}");
    assert_eq!(
        summary["top"][0],
        json!({"word": "tile", "count": 2}),
        "{summary}"
    );

    // B's runner serves B's first job; its spans name B's runner key, never A's.
    let mut runner = support::runner(&server, &[&wasm_path]);
    runner.env("TESSERA_TOKEN", &b.runner);
    let (status, _, err) = output(runner, Duration::from_secs(120));
    assert!(status.success(), "{err}");
    support::assert_completed(&client(&server, &b.read).job(&jb).await.unwrap());
    let b_key = client(&server, &b.runner)
        .whoami()
        .await
        .unwrap()
        .key
        .unwrap();
    let spans = client(&server, &b.read)
        .spans(&jb, &Default::default())
        .await
        .unwrap();
    assert!(
        spans
            .spans
            .iter()
            .all(|s| s.runner_id.starts_with(&format!("{b_key}/"))),
        "{spans:?}"
    );
    // Each tenant's runners list shows its own runners (and fleet runners), not the other's.
    let a_key = client(&server, &a.runner)
        .whoami()
        .await
        .unwrap()
        .key
        .unwrap();
    let seen_by_b = client(&server, &b.read).runners().await.unwrap();
    assert!(
        seen_by_b.runners.iter().all(|r| !r.id.starts_with(&a_key)),
        "{seen_by_b:?}"
    );
    assert!(
        seen_by_b.runners.iter().any(|r| r.id.starts_with(&b_key)),
        "{seen_by_b:?}"
    );
}

/// A fleet runner's key claims every tenant's tasks but reads a job's data, and fetches a
/// component, only under a live lease it holds in that job (or on a task pinned to that
/// component); it sees no tenant's quotas, and learns nothing of tasks other keys hold.
#[tokio::test]
async fn a_fleet_key_reads_only_what_it_holds_a_lease_in() {
    let wasm = std::fs::read(guest("parallel-sleep")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for db in databases(dir.path()).await {
        let (server, op, a, b, theirs) = two_tenants(&db, dir.path(), &wasm).await;
        let fleet = key(&op, Role::Runner, None).await;
        let http = reqwest::Client::new();
        let get = |path: String, lease: Option<(&str, u64)>| {
            let mut r = http
                .get(format!("{}{path}", server.url))
                .bearer_auth(&fleet);
            if let Some((task, lease)) = lease {
                r = r.header(tessera_api::LEASE_HEADER, format!("{task}:{lease}"));
            }
            async move {
                let r = r.send().await.unwrap();
                let status = r.status();
                (status, r.text().await.unwrap())
            }
        };
        let (job, root, digest) = (&theirs.job, &theirs.root, &theirs.digest);
        let data_routes = |job: &str, task: &str| {
            vec![
                format!("/v1/jobs/{job}/output"),
                format!("/v1/jobs/{job}/cache"),
                format!("/v1/jobs/{job}/cache/value?key=b-secret-key"),
                format!("/v1/tasks/{task}/dependencies"),
            ]
        };
        // Holding nothing, it reads nothing: every answer a 404 like an id that never was.
        for path in data_routes(job, root)
            .into_iter()
            .chain([format!("/v1/components/{digest}")])
        {
            let (status, body) = get(path.clone(), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{db}: {path}: {body}");
            assert!(body.contains("does not exist"), "{db}: {path}: {body}");
            assert!(!body.contains("b-secret"), "{db}: {path}: {body}");
        }
        // Nor with a lease it does not hold (B's own runner's).
        let borrowed = Some((theirs.held.task_id.as_str(), theirs.held.lease));
        let (status, _) = get(format!("/v1/jobs/{job}/cache"), borrowed).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{db}");
        // It sees no tenant's quotas and usage.
        let (status, body) = get("/v1/tenants".into(), None).await;
        assert_eq!(status, StatusCode::OK, "{db}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["tenants"],
            json!([]),
            "{db}"
        );

        // It claims B's queued job (pinned to B's component) and now reads what its task needs.
        let claimed = client(&server, &fleet)
            .claim(&tessera_api::ClaimRequest {
                deployed: true,
                identifiers: vec![],
                ..claim("f1", 1)
            })
            .await
            .unwrap()
            .tasks;
        let mine = claimed
            .first()
            .expect("the fleet runner claims B's queued job");
        assert_ne!(&mine.job_id, job, "{db}");
        assert_eq!(mine.component.as_deref(), Some(digest.as_str()), "{db}");
        let lease = Some((mine.task_id.as_str(), mine.lease));
        let (status, bytes) = get(format!("/v1/components/{digest}"), lease).await;
        assert_eq!(status, StatusCode::OK, "{db}: {bytes}");
        for path in data_routes(&mine.job_id, &mine.task_id) {
            // Read, not refused: a value, an empty page, "not computed yet" or "no such key".
            let (status, body) = get(path.clone(), lease).await;
            assert!(
                status.is_success()
                    || status == StatusCode::CONFLICT
                    || body.contains("no_such_key"),
                "{db}: {path}: {status} {body}"
            );
        }
        // The lease opens its own job only, and only while it is held.
        for path in data_routes(job, root) {
            let (status, body) = get(path.clone(), lease).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{db}: {path}: {body}");
        }
        let wrong = Some((mine.task_id.as_str(), mine.lease.wrapping_add(1)));
        let (status, _) = get(format!("/v1/jobs/{}/cache", mine.job_id), wrong).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{db}");

        // Each tenant sees only its own attempts on the shared runner.
        let fleet_running = |list: tessera_api::RunnerList| {
            list.runners
                .iter()
                .find(|r| r.id.ends_with("/f1"))
                .map(|r| r.running)
        };
        let seen_by_a = client(&server, &a.read).runners().await.unwrap();
        let seen_by_b = client(&server, &b.read).runners().await.unwrap();
        assert_eq!(fleet_running(seen_by_a), Some(0), "{db}");
        assert_eq!(fleet_running(seen_by_b), Some(1), "{db}");

        // A report on the task B's runner holds reads like one on a task that never was.
        let answer = client(&server, &fleet)
            .report(&ReportRequest {
                runner_id: "f1".into(),
                reports: vec![done(&theirs.held, vec![])],
                claim: None,
            })
            .await;
        let why = match answer {
            Ok(r) => r.results[0].error.clone().unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        assert!(why.contains("does not exist"), "{db}: {why}");
        assert!(!why.contains("running"), "{db}: {why}");

        // Reported, its lease ends, and with it what the lease opened.
        let answer = client(&server, &fleet)
            .report(&ReportRequest {
                runner_id: "f1".into(),
                reports: vec![done(mine, vec![])],
                claim: None,
            })
            .await
            .unwrap();
        assert!(answer.results[0].accepted, "{db}: {answer:?}");
        let (status, _) = get(format!("/v1/jobs/{}/cache", mine.job_id), lease).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{db}");
        let (status, _) = get(format!("/v1/components/{digest}"), lease).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{db}");
    }
}

/// A server without keys acts for anyone on loopback — but not for a web page: another
/// `Host` (DNS rebinding) or `Origin` (a cross-site request) is refused. Creating the first
/// key closes it; it will not listen beyond loopback without keys.
#[tokio::test]
async fn a_server_without_keys_refuses_web_pages_and_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let server = ServerProc::start(&db, &[]);
    let http = reqwest::Client::new();
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let get = |host: Option<String>, origin: Option<&'static str>| {
        let mut r = http.get(format!("{}/v1/jobs", server.url));
        if let Some(h) = host {
            r = r.header("host", h);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    assert_eq!(get(None, None).await.unwrap().status(), StatusCode::OK);
    let own = get(Some(format!("localhost:{port}")), None).await.unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let rebound = get(Some(format!("attacker.example:{port}")), None)
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    assert!(rebound.text().await.unwrap().contains("loopback"));
    let cross = get(None, Some("http://attacker.example")).await.unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    assert!(cross.text().await.unwrap().contains("other sites"));
    // Every route, not only the API: the console, its assets, health and readiness.
    for path in [
        "/",
        "/jobs/x",
        "/assets/app.js",
        "/v1/health",
        "/v1/ready",
        "/v1/openapi.json",
    ] {
        let url = format!("{}{path}", server.url);
        let own = http.get(&url).send().await.unwrap();
        assert_eq!(own.status(), StatusCode::OK, "{path}");
        let rebound = http
            .get(&url)
            .header("host", format!("attacker.example:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), StatusCode::FORBIDDEN, "{path}");
        let cross = http
            .get(&url)
            .header("origin", "http://attacker.example")
            .send()
            .await
            .unwrap();
        assert_eq!(cross.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // A form post from another site changes nothing either.
    let post = http
        .post(format!("{}/v1/jobs", server.url))
        .header("origin", "http://attacker.example")
        .json(&root_job("forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::FORBIDDEN);
    assert!(
        server
            .client()
            .jobs(&Default::default())
            .await
            .unwrap()
            .jobs
            .is_empty()
    );

    // The first key closes the server: the CLI says so, and a request without a key is a 401.
    let (status, key, err) = server.cli(&["keys", "create", "--role", "operator"]);
    assert!(status.success(), "{err}");
    assert!(err.contains("only time it is shown"), "{err}");
    assert!(err.contains("now asks every request for a key"), "{err}");
    let key = key.trim().to_string();
    let refused = get(None, None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().contains_key("www-authenticate"));
    let (status, _, err) = server.cli(&["jobs", "list"]);
    assert!(
        !status.success() && err.contains("requires a bearer token (a key)"),
        "{err}"
    );
    let mut cmd = tessera();
    cmd.args(["whoami", "--json"])
        .env("TESSERA_SERVER", &server.url)
        .env("TESSERA_TOKEN", &key);
    let (status, out, err) = output(cmd, Duration::from_secs(30));
    assert!(status.success(), "{err}");
    let me: tessera_api::Identity = serde_json::from_str(&out).unwrap();
    assert_eq!((me.role, me.keys_required), (Role::Operator, true));
    // Revoked: the key opens nothing, at once.
    let id = me.key.unwrap();
    let mut cmd = tessera();
    cmd.args(["keys", "revoke", &id])
        .env("TESSERA_SERVER", &server.url)
        .env("TESSERA_TOKEN", &key);
    let (status, _, err) = output(cmd, Duration::from_secs(30));
    assert!(status.success(), "{err}");
    let after = http
        .get(format!("{}/v1/jobs", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    drop(server);

    // Beyond loopback: refused without keys (before it binds anything), with how to fix it.
    let fresh = dir.path().join("fresh.db");
    let mut cmd = tessera();
    cmd.args(["server", "--listen", "0.0.0.0:0", "--db"])
        .arg(&fresh);
    let (status, _, err) = output(cmd, Duration::from_secs(30));
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without keys"),
        "{err}"
    );
    assert!(err.contains("tessera keys create --role operator"), "{err}");
}

/// Why a job's root task failed.
async fn root_error(c: &Client, job: &str) -> String {
    let tasks = c.tasks(job, &Default::default()).await.unwrap().tasks;
    tasks[0].error.clone().unwrap_or_default()
}

/// Every quota through real processes: the API refuses past it with a message naming the
/// quota, and guests that overshoot fail their own attempts — nothing already stored is lost.
#[tokio::test]
async fn quotas_hold_through_the_api_and_against_guests_that_overshoot() {
    use tessera_api::{JobState, TenantUpdate};
    let hostile = guest("hostile-guest");
    let sleeps = guest("parallel-sleep");
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &["--token", OPERATOR]);
    let op = client(&server, OPERATOR);
    let q = tenant_keys(&op, "q").await;
    let set = |update: TenantUpdate| {
        let op = op.clone();
        async move { op.update_tenant("q", &update).await.unwrap() }
    };
    let submit = client(&server, &q.submit);
    let run = |component: &std::path::Path, concurrency: &str| {
        let mut runner = support::runner(&server, &[component]);
        runner
            .args(["--concurrency", concurrency, "--quiet"])
            .env("TESSERA_TOKEN", &q.runner);
        let (status, out, err) = output(runner, Duration::from_secs(120));
        assert!(status.success(), "{out}\n{err}");
    };
    let job = |task: &str, input: Value| support::job_of(task, task, input);
    // Submits a one-task job of `task` and runs `component` until nothing is left.
    let submit_and_run = |task: &'static str, input: Value, component, concurrency| {
        let (submit, run) = (&submit, &run);
        async move {
            let id = submit.submit(&job(task, input)).await.unwrap();
            run(component, concurrency);
            id
        }
    };

    // Queued tasks, through the API: the fourth submit is refused with the quota named.
    set(TenantUpdate {
        queued_tasks: Some(3),
        ..Default::default()
    })
    .await;
    let mut queued = Vec::new();
    for _ in 0..3 {
        queued.push(submit.submit(&job("Noop", json!({}))).await.unwrap().id);
    }
    let e = submit
        .submit(&job("Noop", json!({})))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("429") && e.contains("queued_tasks: 3"), "{e}");
    run(&hostile, "4");
    for id in &queued {
        support::assert_completed(&submit.job(id).await.unwrap());
    }
    // … and through a guest: a fan-out past it fails its attempt, saying which quota.
    let wide = submit_and_run("WideFanOut", json!({"count": 5, "kib": 1}), &hostile, "4").await;
    let failed = submit.job(&wide.id).await.unwrap();
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let why = root_error(&submit, &wide.id).await;
    assert!(why.contains("quota of 3 queued tasks"), "{why}");

    // Running attempts: at most two at once, whatever the runner's concurrency.
    set(TenantUpdate {
        queued_tasks: Some(100),
        running: Some(2),
        ..Default::default()
    })
    .await;
    let par = submit
        .submit(&support::job_of(
            "par",
            "ParallelSleepWorkflow",
            json!({"count": 6, "seconds": 0.3}),
        ))
        .await
        .unwrap();
    run(&sleeps, "6");
    support::assert_completed(&submit.job(&par.id).await.unwrap());
    let spans = submit
        .spans(&par.id, &Default::default())
        .await
        .unwrap()
        .spans;
    let mut edges: Vec<(u64, i32)> = spans
        .iter()
        .flat_map(|s| {
            [
                (s.start_time_unix_nano, 1),
                (s.end_time_unix_nano.unwrap(), -1),
            ]
        })
        .collect();
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    assert_eq!(most, 2, "two attempts at most ran at once: {spans:?}");

    // Memory and deadline ceilings: lower than the runner's own, enforced by the host.
    set(TenantUpdate {
        running: Some(0),
        memory_mib: Some(16),
        deadline_seconds: Some(1),
        ..Default::default()
    })
    .await;
    let big = submit_and_run("Allocate", json!({"mib": 32}), &hostile, "1").await;
    let why = root_error(&submit, &big.id).await;
    assert!(why.contains("memory limit of 16 MiB"), "{why}");
    let slow = submit_and_run(
        "SleepTask",
        json!({"index": 0, "seconds": 3.0}),
        &sleeps,
        "1",
    )
    .await;
    let why = root_error(&submit, &slow.id).await;
    assert!(why.contains("deadline of 1 s"), "{why}");

    // Log bytes per job: a flood keeps at most the quota, and says where it stopped.
    set(TenantUpdate {
        memory_mib: Some(0),
        deadline_seconds: Some(0),
        log_bytes_per_job: Some(2048),
        ..Default::default()
    })
    .await;
    let flood = submit_and_run("LogFlood", json!({"lines": 200}), &hostile, "1").await;
    support::assert_completed(&submit.job(&flood.id).await.unwrap());
    let logs = submit
        .logs(&flood.id, &Default::default())
        .await
        .unwrap()
        .logs;
    let bytes: usize = logs.iter().map(|l| l.message.len()).sum();
    assert!(bytes < 2048 + 300, "{bytes} bytes kept");
    assert!(
        logs.iter()
            .any(|l| l.message.contains("log_bytes_per_job: 2048")),
        "the marker is there"
    );

    // Component bytes: a deploy past the quota is refused, naming it.
    set(TenantUpdate {
        component_bytes: Some(1000),
        ..Default::default()
    })
    .await;
    let mut deploy = tessera();
    deploy
        .arg("deploy")
        .arg(&sleeps)
        .env("TESSERA_SERVER", &server.url)
        .env("TESSERA_TOKEN", &q.admin);
    let (status, _, err) = output(deploy, Duration::from_secs(120));
    assert!(!status.success());
    assert!(err.contains("component_bytes: 1000"), "{err}");

    // Requests per second per key: a burst past it gets 429 with Retry-After.
    set(TenantUpdate {
        requests_per_second: Some(5),
        ..Default::default()
    })
    .await;
    // The key's quota is read again within two seconds.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let http = reqwest::Client::new();
    let mut limited = None;
    for _ in 0..20 {
        let r = http
            .get(format!("{}/v1/jobs", server.url))
            .bearer_auth(&q.read)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("a burst of 20 passed a quota of 5 per second");
    assert!(limited.headers().contains_key("retry-after"));
    assert!(
        limited
            .text()
            .await
            .unwrap()
            .contains("requests_per_second")
    );
    // Another key of the tenant has its own allowance; the operator has none to spend.
    let other = http
        .get(format!("{}/v1/jobs", server.url))
        .bearer_auth(&q.submit)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // Nothing stored was lost on the way: every job is still there.
    let all = op.jobs(&Default::default()).await.unwrap().jobs;
    assert_eq!(all.len(), 8, "{all:?}");
}
