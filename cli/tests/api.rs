//! The HTTP API over real HTTP against a real `tessera server` process on a real SQLite file.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::ServerProc;
use tessera_api::{
    ClaimRequest, ExtendRequest, JobFilter, JobState, LeaseRef, Level, LogBatch, LogLine, LogQuery,
    OutlookRequest, Report, ReportRequest, RootTask, SpanQuery, SubmitJob, SubtaskSpec,
    TaskIdentifier, TaskQuery, TaskReport,
};

fn ident(name: &str) -> TaskIdentifier {
    TaskIdentifier::parse(name, "v0.0").unwrap()
}

fn submit_body(name: &str) -> SubmitJob {
    SubmitJob {
        name: name.into(),
        root: RootTask {
            identifier: ident("Root"),
            input: json!({"count": 2}),
            max_retries: 1,
            display: None,
        },
        cluster: None,
    }
}

fn claim(max: u32, wait_ms: u64) -> ClaimRequest {
    ClaimRequest {
        wait_ms,
        ..tessera_server::testing::protocol::claim("runner-a", max)
    }
}

#[tokio::test]
async fn every_endpoint_answers() {
    let dir = tempfile::tempdir().unwrap();
    for db in support::databases(dir.path()).await {
        let server = ServerProc::start_db(&db, &dir.path().join("server.log"), &[]);
        let c = server.client();
        assert_eq!(c.health().await.unwrap().status, "ok");

        let spec: Value = reqwest::get(format!("{}/v1/openapi.json", server.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let paths: Vec<&str> = spec["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        for p in [
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/tasks",
            "/v1/jobs/{id}/cancel",
            "/v1/jobs/{id}/retry",
            "/v1/jobs/{id}/logs",
            "/v1/jobs/{id}/spans",
            "/v1/tasks/{id}",
            "/v1/logs",
            "/v1/runner/claim",
            "/v1/runner/report",
            "/v1/runner/extend",
            "/v1/runner/outlook",
            "/v1/health",
        ] {
            assert!(paths.contains(&p), "openapi lacks {p}: {paths:?}");
        }
        assert!(spec["components"]["schemas"]["SubmitJob"].is_object());

        let job = c.submit(&submit_body("every-endpoint")).await.unwrap();
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(c.job(&job.id).await.unwrap().id, job.id);
        assert_eq!(
            c.jobs(&JobFilter::default()).await.unwrap().jobs[0].id,
            job.id
        );
        let outlook = c
            .outlook(&OutlookRequest {
                cluster: "default".into(),
                identifiers: vec![ident("Root")],
                deployed: false,
            })
            .await
            .unwrap();
        assert_eq!(outlook.queued, 1);

        let root = c.claim(&claim(5, 0)).await.unwrap().tasks;
        assert_eq!(root.len(), 1);
        let ext = c
            .extend(&ExtendRequest {
                runner_id: "runner-a".into(),
                leases: vec![LeaseRef {
                    task_id: root[0].task_id.clone(),
                    lease: root[0].lease,
                }],
            })
            .await
            .unwrap();
        assert!(ext.leases[0].held);
        let leaf = SubtaskSpec {
            identifier: ident("Leaf"),
            input: json!({"i": 1}),
            display: None,
            depends_on: vec![],
            max_retries: 0,
            cluster: None,
        };
        let report = c
            .report(&ReportRequest {
                runner_id: "runner-a".into(),
                reports: vec![TaskReport {
                    task_id: root[0].task_id.clone(),
                    lease: root[0].lease,
                    report: Report::Computed {
                        subtasks: vec![leaf.clone(), leaf],
                        display: Some("Root!".into()),
                        progress: vec![],
                        output: None,
                        output_from: None,
                        cache: vec![],
                    },
                }],
                claim: Some(claim(5, 0)),
            })
            .await
            .unwrap();
        assert!(report.results[0].accepted);
        assert_eq!(
            report.tasks.len(),
            2,
            "complete-and-claim hands out the two leaves"
        );

        let task = c.task(&root[0].task_id).await.unwrap();
        assert_eq!(task.display, "Root!");
        let tasks = c.tasks(&job.id, &TaskQuery::default()).await.unwrap();
        assert_eq!(tasks.tasks.len(), 3);

        let line = LogLine {
            time_unix_nano: 1,
            level: Level::Info,
            message: "hello".into(),
            task_id: root[0].task_id.clone(),
            job_id: String::new(),
            runner_id: "runner-a".into(),
            attempt: 1,
            fields: Default::default(),
        };
        let stored = c.send_logs(&LogBatch { logs: vec![line] }).await.unwrap();
        assert_eq!(stored["stored"], 1);
        let logs = c.logs(&job.id, &LogQuery::default()).await.unwrap();
        assert_eq!(logs.logs[0].message, "hello");
        let spans = c.spans(&job.id, &SpanQuery::default()).await.unwrap();
        assert_eq!(spans.spans.len(), 3);
        assert_eq!(spans.spans[0].name, "Root!");

        let canceled = c.cancel(&job.id).await.unwrap();
        assert_eq!(canceled.state, JobState::Canceled);
        let retried = c.retry(&job.id).await.unwrap();
        assert_eq!(retried.state, JobState::Running);
    }
}

/// What the store holds, as the API shows it.
async fn snapshot(c: &tessera_api::Client) -> Value {
    let jobs = c.jobs(&JobFilter::default()).await.unwrap();
    let mut all = Vec::new();
    for j in &jobs.jobs {
        let tasks = c.tasks(&j.id, &TaskQuery::default()).await.unwrap();
        let logs = c.logs(&j.id, &LogQuery::default()).await.unwrap();
        all.push(json!({"job": j, "tasks": tasks.tasks, "logs": logs.logs}));
    }
    Value::Array(all)
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_message_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for db in support::databases(dir.path()).await {
        let server = ServerProc::start_db(
            &db,
            &dir.path().join("server.log"),
            &["--max-body-mib", "1"],
        );
        let c = server.client();
        let job = c.submit(&submit_body("keep-me")).await.unwrap();
        let root = c.claim(&claim(1, 0)).await.unwrap().tasks;
        let before = snapshot(&c).await;

        let http = reqwest::Client::new();
        let url = |p: &str| format!("{}{p}", server.url);
        let big = "x".repeat(2 << 20);
        let ghost = "01a00000-0000-7000-8000-000000000000";
        let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
            ("malformed JSON", http.post(url("/v1/jobs")).header("content-type", "application/json").body("{\"name\":"), 400, "not valid JSON"),
            ("wrong type", http.post(url("/v1/jobs")).json(&json!({"name": 5, "root": {"identifier": {"name": "Root", "version": "v0.0"}}})), 400, "expected a string"),
            ("unknown field", http.post(url("/v1/jobs")).json(&json!({"name": "x", "colour": "red", "root": {"identifier": {"name": "Root", "version": "v0.0"}}})), 400, "unknown field `colour`"),
            ("bad version", http.post(url("/v1/jobs")).json(&json!({"name": "x", "root": {"identifier": {"name": "Root", "version": "1.0"}}})), 400, "v<major>.<minor>"),
            ("bad task name", http.post(url("/v1/jobs")).json(&json!({"name": "x", "root": {"identifier": {"name": "no spaces", "version": "v0.0"}}})), 400, "is not valid"),
            ("input nested too deep", http.post(url("/v1/jobs")).json(&json!({"name": "x", "root": {"identifier": {"name": "Root", "version": "v0.0"}, "input": (0..70).fold(json!(1), |v, _| json!([v]))}})), 400, "70 levels deep"),
            ("empty job name", http.post(url("/v1/jobs")).json(&json!({"name": "", "root": {"identifier": {"name": "Root", "version": "v0.0"}}})), 400, "job name"),
            ("no content type", http.post(url("/v1/jobs")).body("{}"), 415, "Content-Type: application/json"),
            // Its own connection: the server answers before reading the rest and closes it.
            ("oversized body", reqwest::Client::new().post(url("/v1/jobs")).header("content-type", "application/json").body(format!("{{\"name\":\"{big}\"}}")), 413, "larger than the server accepts"),
            ("unknown job", http.get(url(&format!("/v1/jobs/{ghost}"))), 404, "does not exist"),
            ("cancel unknown job", http.post(url(&format!("/v1/jobs/{ghost}/cancel"))).json(&json!({})), 404, "does not exist"),
            ("tasks of unknown job", http.get(url(&format!("/v1/jobs/{ghost}/tasks"))), 404, "does not exist"),
            ("unknown task", http.get(url(&format!("/v1/tasks/{ghost}"))), 404, "does not exist"),
            // The same answer as for a task this runner did not run: nothing tells them apart.
            ("logs for an unknown task", http.post(url("/v1/logs")).json(&json!({"logs": [{"time_unix_nano": 1, "level": "info", "message": "m", "task_id": ghost}]})), 409, "or there is no such task"),
            ("bad log level", http.get(url(&format!("/v1/jobs/{}/logs?level=loud", job.id))), 400, "query string is not valid"),
            ("bad page size", http.get(url("/v1/jobs?limit=abc")), 400, "query string is not valid"),
            ("page too large", http.get(url("/v1/jobs?limit=100000")), 400, "at most 500"),
            ("bad cursor", http.get(url(&format!("/v1/jobs/{}/logs?cursor=zzz", job.id))), 400, "cursor"),
            ("claim max 0", http.post(url("/v1/runner/claim")).json(&json!({"runner_id": "r", "cluster": "default", "identifiers": [], "max": 0})), 400, "max must be"),
            ("report on an unknown task", http.post(url("/v1/runner/report")).json(&json!({"runner_id": "r", "reports": [{"task_id": ghost, "lease": 1, "report": {"outcome": "computed"}}]})), 409, "does not exist"),
            ("report with a stale lease", http.post(url("/v1/runner/report")).json(&json!({"runner_id": "r", "reports": [{"task_id": root[0].task_id, "lease": root[0].lease + 7, "report": {"outcome": "failed", "reason": "x"}}]})), 409, "not running under this lease"),
            ("retry a job with nothing to retry", http.post(url(&format!("/v1/jobs/{}/retry", job.id))).json(&json!({})), 409, "no failed or canceled tasks"),
            ("unknown route", http.get(url("/v1/nope")), 404, "/v1/openapi.json"),
            ("wrong method", http.delete(url("/v1/jobs")), 405, "not allowed"),
        ];
        for (what, request, status, needle) in cases {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{what}");
            let body: Value = response
                .json()
                .await
                .unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
            let message = body["message"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no message in {body}"));
            assert!(!body["code"].as_str().unwrap().is_empty(), "{what}: {body}");
            assert!(
                message.contains(needle),
                "{what}: {message:?} lacks {needle:?}"
            );
        }
        assert_eq!(snapshot(&c).await, before, "bad input changed the store");
    }
}

#[tokio::test]
async fn a_token_is_required_when_set() {
    let dir = tempfile::tempdir().unwrap();
    for db in support::databases(dir.path()).await {
        let server =
            ServerProc::start_db(&db, &dir.path().join("server.log"), &["--token", "s3cret"]);
        let http = reqwest::Client::new();
        let body =
            json!({"name": "x", "root": {"identifier": {"name": "Root", "version": "v0.0"}}});
        for (header, expect) in [
            (None, "requires a bearer token"),
            (Some("Bearer wrong"), "token is wrong"),
        ] {
            for request in [
                http.get(format!("{}/v1/jobs", server.url)),
                http.post(format!("{}/v1/jobs", server.url)).json(&body),
            ] {
                let request = match header {
                    Some(h) => request.header("authorization", h),
                    None => request,
                };
                let response = request.send().await.unwrap();
                assert_eq!(response.status().as_u16(), 401);
                let challenge = response.headers()["www-authenticate"].to_str().unwrap();
                assert!(challenge.starts_with("Bearer realm="), "{challenge}");
                let body: Value = response.json().await.unwrap();
                assert!(body["message"].as_str().unwrap().contains(expect), "{body}");
            }
        }
        // Liveness needs no token (load balancers and runners starting up ask it).
        let health = http
            .get(format!("{}/v1/health", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status().as_u16(), 200);
        // The scheme is case-insensitive (RFC 9110).
        let lower = http
            .get(format!("{}/v1/jobs", server.url))
            .header("authorization", "bearer s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(lower.status().as_u16(), 200);
        let authed = tessera_api::Client::new(server.url.clone(), Some("s3cret".into()));
        assert!(
            authed
                .jobs(&JobFilter::default())
                .await
                .unwrap()
                .jobs
                .is_empty(),
            "a refused submit stored nothing"
        );
        authed.submit(&submit_body("with-token")).await.unwrap();
        let anonymous = server.client();
        let err = anonymous.jobs(&JobFilter::default()).await.unwrap_err();
        assert_eq!(err.status(), Some(401));
    }
}

#[tokio::test]
async fn http_edges_answer_json_and_the_console_sends_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &["--token", "s3cret"]);
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.url);
    let authed = |r: reqwest::RequestBuilder| r.bearer_auth("s3cret");
    for (what, request, status, code) in [
        (
            "bad percent-encoding",
            authed(http.get(url("/v1/jobs/%ff"))),
            400,
            "invalid_path",
        ),
        (
            "a long URL",
            authed(http.get(url(&format!("/v1/jobs?name={}", "n".repeat(17_000))))),
            414,
            "uri_too_long",
        ),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(body["code"], code, "{what}: {body}");
    }
    // Liveness and readiness need no token; readiness asks the database.
    let ready = http.get(url("/v1/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
    let api = authed(http.get(url("/v1/jobs"))).send().await.unwrap();
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
    for page in ["/", "/jobs/x", "/assets/app.js"] {
        let response = http.get(url(page)).send().await.unwrap();
        let h = response.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{page}: {csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{page}");
        assert_eq!(h["x-frame-options"], "DENY", "{page}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{page}");
    }
}

/// The console stays live by long-polling a job: `ETag` names its version, `If-None-Match` with
/// `wait_ms` waits for a change (304 when none comes), and a claim elsewhere ends the wait.
#[tokio::test]
async fn a_job_can_be_watched_for_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let c = server.client();
    let job = c.submit(&submit_body("watched")).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/jobs/{}", server.url, job.id);
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    // Nothing changes: 304, with the same version.
    let same = http
        .get(format!("{url}?wait_ms=200"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status().as_u16(), 304);
    assert_eq!(same.headers()["etag"].to_str().unwrap(), etag);
    // A claim during a long wait ends it with the new version.
    let waiting = {
        let (http, url, etag) = (http.clone(), url.clone(), etag.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let r = http
                .get(format!("{url}?wait_ms=30000"))
                .header("if-none-match", etag)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.claim(&claim(1, 0)).await.unwrap().tasks.len(), 1);
    let (status, body, took) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["task_counts"]["running"], 1, "{body}");
    assert!(
        took < Duration::from_secs(25),
        "the claim ended the wait ({took:?})"
    );
    // A wait past a minute is refused.
    let long = http
        .get(format!("{url}?wait_ms=60001"))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status().as_u16(), 400);
}

/// Posts a job body that must be refused as too large (413); its error body.
async fn refused_submit(server: &ServerProc, body: String) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/jobs", server.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    response.json().await.unwrap()
}

/// A 31 MiB JSON array as a job input once took the server to 1.87 GB. It is refused now, with a
/// message, and costs the server little more than its bytes.
#[tokio::test]
async fn a_huge_input_is_refused_without_blowing_up_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let mut array = String::with_capacity(32 << 20);
    array.push('[');
    while array.len() < 31 << 20 {
        array.push_str("1,");
    }
    array.push_str("1]");
    let body = format!(
        r#"{{"name":"huge","root":{{"identifier":{{"name":"Root","version":"v0.0"}},"input":{array}}}}}"#
    );
    let error = refused_submit(&server, body).await;
    assert_eq!(error["code"], "input_too_large", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("--max-input-kib"),
        "{error}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("server peak RSS: {} MiB", peak_kib / 1024);
    assert!(peak_kib < 512 * 1024, "server peak RSS {peak_kib} KiB");
    // An input is measured as stored, not as sent: 0.95 MiB of `1e15`s is 3.6 MiB stored
    // (`1000000000000000.0` each), refused as a subtask input would be.
    let floats = vec!["1e15"; (1 << 20) / 100 * 95 / 5].join(",");
    let body = format!(
        r#"{{"name":"floats","root":{{"identifier":{{"name":"Root","version":"v0.0"}},"input":[{floats}]}}}}"#
    );
    assert!(body.len() < 1 << 20);
    let error = refused_submit(&server, body).await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message
            .contains("its input of 3.6 MiB (as stored: compact JSON) exceeds the limit of 1 MiB"),
        "{error}"
    );
    // Inputs within the limit still go through.
    server.client().submit(&submit_body("small")).await.unwrap();
}

/// Slowloris under the common fd limit: 1,100 requests that never finish their headers must not
/// stop the server from answering.
#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_cannot_starve_the_server() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start_with_fd_limit(&dir.path().join("t.db"), 1024, &[]);
    let addr = server.url.strip_prefix("http://").unwrap().to_string();
    let mut held = Vec::new();
    for _ in 0..1100 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        held.push(s);
    }
    // Let the server accept what it can.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Within 5 s, well before the 10 s header timeout could have freed anything: the server
    // made room by closing the connections idle the longest (bench/README.md has the latency).
    for _ in 0..3 {
        let started = Instant::now();
        let health = reqwest::Client::new()
            .get(format!("{}/v1/health", server.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("health answers under a slowloris");
        assert_eq!(health.status().as_u16(), 200);
        eprintln!("health answered in {:?}", started.elapsed());
    }
    // And real work still goes through.
    server.client().submit(&submit_body("after")).await.unwrap();
    drop(held);
}

#[tokio::test]
async fn a_task_lost_by_its_runners_fails_instead_of_running_forever() {
    let dir = tempfile::tempdir().unwrap();
    for db in support::databases(dir.path()).await {
        let server = ServerProc::start_db(
            &db,
            &dir.path().join("server.log"),
            &["--lease-seconds", "0.3", "--max-lost", "2"],
        );
        let c = server.client();
        let mut body = submit_body("lost");
        // With a retry left, the second loss in a row would spend it and queue the task again.
        body.root.max_retries = 0;
        let job = c.submit(&body).await.unwrap();
        // Two runners in a row claim the task and vanish without a report.
        for round in 1..=2u32 {
            let mut tasks = Vec::new();
            let started = Instant::now();
            while tasks.is_empty() {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{db}: not requeued"
                );
                tasks = c.claim(&claim(1, 2_000)).await.unwrap().tasks;
            }
            assert_eq!(tasks[0].attempt, round, "{db}");
        }
        let root = tasks_of(&c, &job.id).await.remove(0);
        let started = Instant::now();
        let failed = loop {
            let j = c.job(&job.id).await.unwrap();
            if j.state == JobState::Failed {
                break j;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{db}: {j:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(failed.task_counts.failed, 1, "{db}");
        let task = c.task(&root.id).await.unwrap();
        let why = task.error.unwrap_or_default();
        assert!(
            why.contains("lost by its runner 2 times in a row"),
            "{db}: {why}"
        );
        assert_eq!(task.attempts, 2, "{db}: it did not run a third time");
        // A job retry starts the count over.
        c.retry(&job.id).await.unwrap();
        let again = c.claim(&claim(1, 2_000)).await.unwrap().tasks;
        assert_eq!(again.len(), 1, "{db}");
        c.report(&ReportRequest {
            runner_id: "runner-a".into(),
            reports: vec![TaskReport {
                task_id: again[0].task_id.clone(),
                lease: again[0].lease,
                report: Report::Computed {
                    subtasks: vec![],
                    display: None,
                    progress: vec![],
                    output: None,
                    output_from: None,
                    cache: vec![],
                },
            }],
            claim: None,
        })
        .await
        .unwrap();
        assert_eq!(
            c.job(&job.id).await.unwrap().state,
            JobState::Completed,
            "{db}"
        );
    }
}

async fn tasks_of(c: &tessera_api::Client, job: &str) -> Vec<tessera_api::Task> {
    c.tasks(job, &TaskQuery::default()).await.unwrap().tasks
}

#[tokio::test]
async fn a_waiting_claim_wakes_when_work_is_submitted() {
    let dir = tempfile::tempdir().unwrap();
    for db in support::databases(dir.path()).await {
        let server = ServerProc::start_db(&db, &dir.path().join("server.log"), &[]);
        let c = server.client();
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let got = c.claim(&claim(1, 20_000)).await.unwrap();
                (got.tasks.len(), started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.submit(&submit_body("wake")).await.unwrap();
        let (n, waited) = waiter.await.unwrap();
        assert_eq!(n, 1);
        assert!(
            waited >= Duration::from_millis(400),
            "did not wait: {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(5),
            "woke only after {waited:?}"
        );
        // An idle runner that asked to return when idle gets an empty answer at once.
        let mut idle = claim(1, 20_000);
        idle.identifiers = vec![ident("Nothing")];
        idle.cluster = "elsewhere".into();
        idle.return_when_idle = true;
        let started = Instant::now();
        assert!(c.claim(&idle).await.unwrap().tasks.is_empty());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

/// The body budget: while one request holds all of `--max-inflight-mib` (its body still
/// arriving), a second body-carrying request waits before its body is read; reads do not wait,
/// and the second request goes through once the first is answered.
#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_wait_for_the_inflight_budget() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &["--max-inflight-mib", "1"]);
    let addr = server.url.strip_prefix("http://").unwrap().to_string();
    // A submit declaring a 2 MiB body (more than the whole budget) that sends only its start.
    let mut hog = std::net::TcpStream::connect(&addr).unwrap();
    hog.write_all(
        format!(
            "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 2097152\r\n\r\n{{\"name\": \"hog\", "
        )
        .as_bytes(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = server.client();
    let waiting = tokio::spawn(async move { c.submit(&submit_body("second")).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "a submit went past a full body budget"
    );
    // Reads take nothing from the budget.
    let page = reqwest::Client::new()
        .get(format!("{}/v1/jobs", server.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    // The hog finishes its (malformed) body: it is refused, and the budget frees up.
    let rest = vec![b' '; 2 * 1024 * 1024 - 16];
    hog.write_all(&rest).unwrap();
    let mut answer = [0u8; 12];
    hog.read_exact(&mut answer).unwrap();
    assert_eq!(
        &answer,
        b"HTTP/1.1 400",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let job = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting submit went through once the budget was free")
        .unwrap()
        .unwrap();
    assert_eq!(job.name, "second");
}
