//! Keys mean what they say, through real server processes on both stores: a revoked key's
//! waiting requests end at once (and on another server of the same PostgreSQL database within
//! 2 s), a claim never hands work to a revoked key, and a database that has had keys never
//! opens again without one.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::{ServerProc, databases, new_key, output, tessera};
use tessera_api::{Client, NewTenant, Role};
use tessera_server::testing::protocol::root_job;

const OPERATOR: &str = "operator-token-for-key-tests";

/// Tenant `a`'s runner, read and submit keys (id and secret each), made through `op`.
async fn tenant_a(op: &Client) -> [(String, String); 3] {
    op.create_tenant(&NewTenant {
        name: "a".into(),
        weight: None,
    })
    .await
    .unwrap();
    [
        new_key(op, Role::Runner, Some("a")).await,
        new_key(op, Role::Read, Some("a")).await,
        new_key(op, Role::Submit, Some("a")).await,
    ]
}

fn claim_body(wait_ms: u64) -> serde_json::Value {
    json!({
        "runner_id": "r1",
        "cluster": "default",
        "identifiers": [{"name": "Root", "version": "v0.0"}, {"name": "Leaf", "version": "v0.0"}],
        "max": 10,
        "wait_ms": wait_ms,
    })
}

/// Starts a claim that long-polls with `secret` on `base`; it answers when the wait ends.
fn waiting_claim(
    base: &str,
    secret: &str,
) -> tokio::task::JoinHandle<(StatusCode, String, Instant)> {
    let (url, secret) = (format!("{base}/v1/runner/claim"), secret.to_string());
    tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .bearer_auth(secret)
            .json(&claim_body(30_000))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.text().await.unwrap(), Instant::now())
    })
}

/// Starts a watch of `job` (a long poll until it differs from `etag`) with `secret`.
fn waiting_watch(
    base: &str,
    secret: &str,
    job: &str,
    etag: &str,
) -> tokio::task::JoinHandle<(StatusCode, String, Instant)> {
    let url = format!("{base}/v1/jobs/{job}?wait_ms=30000");
    let (secret, etag) = (secret.to_string(), etag.to_string());
    tokio::spawn(async move {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(secret)
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.text().await.unwrap(), Instant::now())
    })
}

async fn etag(base: &str, secret: &str, job: &str) -> String {
    reqwest::Client::new()
        .get(format!("{base}/v1/jobs/{job}"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Revokes key `id` through `op` and says when the revocation answered.
async fn revoke(op: &Client, id: &str) -> Instant {
    op.revoke_key(id).await.unwrap();
    Instant::now()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_s_waiting_requests_end_at_once_and_are_handed_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for db in databases(dir.path()).await {
        let log = dir.path().join(format!("server-{}.log", db.len()));
        let server = ServerProc::start_db(&db, &log, &["--token", OPERATOR]);
        let op = Client::new(server.url.clone(), Some(OPERATOR.into()));
        let [(runner_id, runner), (read_id, read), (submit_id, submit)] = tenant_a(&op).await;
        let submitter = Client::new(server.url.clone(), Some(submit.clone()));

        // A claim waiting for work, a watch waiting for a job to change, a log follow.
        let claim = waiting_claim(&server.url, &runner);
        let job = submitter.submit(&root_job("watched")).await.unwrap().id;
        // The first job wakes the claim: let it take that one, then wait again.
        let (status, body, _) = claim.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{db}: {body}");
        let claim = waiting_claim(&server.url, &runner);
        let tag = etag(&server.url, &read, &job).await;
        let watch = waiting_watch(&server.url, &read, &job, &tag);
        let mut follow = tessera();
        follow
            .args(["logs", &job, "--follow"])
            .env("TESSERA_SERVER", &server.url)
            .env("TESSERA_TOKEN", &read);
        let follow = std::thread::spawn(move || {
            let r = output(follow, Duration::from_secs(60));
            (r, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!claim.is_finished() && !watch.is_finished(), "{db}");

        let revoked = revoke(&op, &runner_id).await;
        let (status, body, at) = claim.await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{db}: {body}");
        assert!(body.contains("revoked"), "{db}: {body}");
        let took = at.saturating_duration_since(revoked);
        assert!(
            took < Duration::from_secs(1),
            "{db}: the claim ended {took:?} after"
        );

        // Work that appears now is never leased to the revoked key: its next claim is a 401,
        // and the job stays queued for a runner whose key is good.
        let queued = submitter.submit(&root_job("after")).await.unwrap().id;
        let again = reqwest::Client::new()
            .post(format!("{}/v1/runner/claim", server.url))
            .bearer_auth(&runner)
            .json(&claim_body(0))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::UNAUTHORIZED, "{db}");
        let after = op.job(&queued).await.unwrap();
        assert_eq!(after.task_counts.queued, 1, "{db}: {after:?}");

        let revoked = revoke(&op, &read_id).await;
        let (status, body, at) = watch.await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{db}: {body}");
        let took = at.saturating_duration_since(revoked);
        assert!(
            took < Duration::from_secs(1),
            "{db}: the watch ended {took:?} after"
        );
        // `tessera logs --follow` asks again every half second: its next request is refused.
        let ((status, _, err), at) = follow.join().unwrap();
        assert!(!status.success(), "{db}: {err}");
        assert!(err.contains("401") && err.contains("wrong"), "{db}: {err}");
        let took = at.saturating_duration_since(revoked);
        assert!(
            took < Duration::from_secs(2),
            "{db}: the follow ended {took:?} after"
        );
        revoke(&op, &submit_id).await;
    }
}

/// Servers sharing a PostgreSQL database learn of a revocation within 2 s: a claim and a watch
/// waiting on the other server end with 401, and the key is handed nothing there either.
#[tokio::test(flavor = "multi_thread")]
async fn on_two_postgres_servers_a_revocation_ends_the_other_server_s_waits_within_2_s() {
    let Some(db) = tessera_server::testing::postgres::fresh_database().await else {
        eprintln!("SKIPPED: set TESSERA_TEST_POSTGRES to run the two-server revocation test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let one = ServerProc::start_db(&db, &dir.path().join("one.log"), &["--token", OPERATOR]);
    let two = ServerProc::start_db(&db, &dir.path().join("two.log"), &["--token", OPERATOR]);
    let op = Client::new(one.url.clone(), Some(OPERATOR.into()));
    let [(runner_id, runner), (read_id, read), (_, submit)] = tenant_a(&op).await;
    let job = Client::new(one.url.clone(), Some(submit.clone()))
        .submit(&root_job("watched"))
        .await
        .unwrap()
        .id;
    // Server two takes the first job's root, then waits with both keys.
    let first = waiting_claim(&two.url, &runner);
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    let claim = waiting_claim(&two.url, &runner);
    let tag = etag(&two.url, &read, &job).await;
    let watch = waiting_watch(&two.url, &read, &job, &tag);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!claim.is_finished() && !watch.is_finished());

    // Revoked through server one.
    let revoked = revoke(&op, &runner_id).await;
    revoke(&op, &read_id).await;
    for (what, waiting) in [("claim", claim), ("watch", watch)] {
        let (status, body, at) = waiting.await.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        let took = at.saturating_duration_since(revoked);
        assert!(
            took < Duration::from_secs(2),
            "the {what} on the other server ended {took:?} after the revocation"
        );
    }
    // And work submitted now through server one is not leased by server two to the key.
    let queued = Client::new(one.url.clone(), Some(submit))
        .submit(&root_job("after"))
        .await
        .unwrap()
        .id;
    let again = reqwest::Client::new()
        .post(format!("{}/v1/runner/claim", two.url))
        .bearer_auth(&runner)
        .json(&claim_body(0))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(op.job(&queued).await.unwrap().task_counts.queued, 1);
}

/// Every route the OpenAPI document lists, with its path parameters filled in.
fn every_route() -> Vec<(reqwest::Method, String)> {
    let doc = serde_json::to_value(tessera_server::http::openapi()).unwrap();
    let mut routes = vec![(reqwest::Method::GET, "/v1/openapi.json".to_string())];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let path = path
                .replace("{id}", "01937a1c-0000-7000-8000-000000000000")
                .replace("{name}", "a");
            routes.push((method.to_uppercase().parse().unwrap(), path));
        }
    }
    routes
}

#[tokio::test]
async fn a_database_that_had_keys_stays_locked_after_every_key_is_revoked_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    for db in databases(dir.path()).await {
        let log = dir.path().join(format!("first-{}.log", db.len()));
        let server = ServerProc::start_db(&db, &log, &[]);
        let (status, secret, err) = server.cli(&["keys", "create", "--role", "operator"]);
        assert!(status.success(), "{db}: {err}");
        let secret = secret.trim().to_string();
        let op = Client::new(server.url.clone(), Some(secret.clone()));
        let id = op.whoami().await.unwrap().key.unwrap();
        op.submit(&root_job("kept")).await.unwrap();
        // The last key revokes itself.
        op.revoke_key(&id).await.unwrap();
        drop(server);

        // No key is left. Restarted on the same database, without a token, it stays locked.
        let log = dir.path().join(format!("second-{}.log", db.len()));
        let server = ServerProc::start_db(&db, &log, &[]);
        let http = reqwest::Client::new();
        for (method, path) in every_route() {
            let response = http
                .request(method.clone(), format!("{}{path}", server.url))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            if path == "/v1/health" || path == "/v1/ready" {
                assert_eq!(status, StatusCode::OK, "{db}: {method} {path}: {body}");
                continue;
            }
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{db}: {method} {path} without a key: {body}"
            );
            assert!(body.contains("--token"), "{db}: {method} {path}: {body}");
        }
        let (status, _, err) = server.cli(&["jobs", "list"]);
        assert!(!status.success(), "{db}");
        assert!(
            err.contains("restart the server with --token"),
            "{db}: {err}"
        );
        drop(server);

        // The way back in: --token makes T an operator key, which can mint a new key.
        let log = dir.path().join(format!("third-{}.log", db.len()));
        let server = ServerProc::start_db(&db, &log, &["--token", OPERATOR]);
        let op = Client::new(server.url.clone(), Some(OPERATOR.into()));
        let jobs = op.jobs(&Default::default()).await.unwrap().jobs;
        assert!(jobs.iter().any(|j| j.name == "kept"), "{db}: {jobs:?}");
        let (_, fresh) = new_key(&op, Role::Operator, None).await;
        let mut cmd = tessera();
        cmd.args(["jobs", "list"])
            .env("TESSERA_SERVER", &server.url)
            .env("TESSERA_TOKEN", &fresh);
        let (status, out, err) = output(cmd, Duration::from_secs(30));
        assert!(status.success(), "{db}: {err}");
        assert!(out.contains("kept"), "{db}: {out}");
    }
}
