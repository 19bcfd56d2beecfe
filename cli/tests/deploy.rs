//! Deployed components through real processes: `tessera deploy`, fleet runners
//! (`tessera runner --deployed`) fetching components by digest, pinning, and every bad upload
//! refused with a message a person can act on.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use support::{ServerProc, assert_completed, finished, guest, output, tessera, until};
use tessera_api::{Client, Deployed, JobState, SpanQuery};

/// `tessera parallel -n N -- tessera runner --deployed ARGS` against `server`.
fn fleet(server: &ServerProc, n: u32, args: &[&str]) -> std::process::Command {
    let mut cmd = tessera();
    cmd.args(["parallel", "-n", &n.to_string(), "--"])
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .args(["runner", "--deployed"])
        .args(args)
        .env("TESSERA_SERVER", &server.url);
    cmd
}

/// The digests of every span of a job, one per attempt.
async fn span_digests(client: &Client, job: &str) -> Vec<Option<String>> {
    let spans = client.spans(job, &SpanQuery::default()).await.unwrap();
    spans.spans.into_iter().map(|s| s.component).collect()
}

/// `n` as unsigned LEB128.
fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A copy of `wasm` in `dir` as `name`, whose bytes (and so digest) differ but whose code is
/// the same: a custom section holding `payload` appended at its end.
fn with_custom_section(wasm: &Path, dir: &Path, name: &str, payload: &[u8]) -> PathBuf {
    let mut bytes = std::fs::read(wasm).unwrap();
    let section = b"tessera-test";
    bytes.push(0); // a custom section
    leb128(1 + section.len() + payload.len(), &mut bytes);
    leb128(section.len(), &mut bytes);
    bytes.extend_from_slice(section);
    bytes.extend_from_slice(payload);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A changed build of `wasm`: the same code, another digest.
fn changed_copy(wasm: &Path, dir: &Path) -> PathBuf {
    with_custom_section(wasm, dir, "parallel_sleep_v2.wasm", b"a changed build")
}

fn deploy(server: &ServerProc, wasm: &Path, extra: &[&str]) -> Deployed {
    let path = wasm.to_str().unwrap();
    let mut args = vec!["deploy", path, "--json"];
    args.extend_from_slice(extra);
    let (status, out, err) = server.cli(&args);
    assert!(status.success(), "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployed_component_runs_on_fleet_runners_as_files_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let wasm = guest("parallel-sleep");
    let wasm_path = wasm.to_str().unwrap();

    let (status, out, err) = server.cli(&["deploy", wasm_path]);
    assert!(status.success(), "{err}");
    assert!(out.starts_with("Deployed parallel_sleep sha256:"), "{out}");
    assert!(
        out.contains("ParallelSleepWorkflow@v0.0, SleepTask@v0.0"),
        "{out}"
    );
    let (_, again, _) = server.cli(&["deploy", wasm_path]);
    assert!(
        again.starts_with("Already deployed: parallel_sleep"),
        "{again}"
    );
    assert!(again.contains("nothing changed"), "{again}");

    let (_, list, _) = server.cli(&["components", "list"]);
    assert!(list.contains("parallel_sleep"), "{list}");
    assert!(list.contains("1 component"), "{list}");
    let (_, shown, _) = server.cli(&["components", "show", "parallel_sleep", "--json"]);
    let shown: tessera_api::Component = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown.task_types.len(), 2);
    let bytes = std::fs::read(&wasm).unwrap();
    assert_eq!(shown.size, bytes.len() as u64);

    // The seed job, on five fleet runners that were never given the file.
    let id = server.submit_seed(20, 0.5);
    let (status, out, err) = output(fleet(&server, 5, &[]), Duration::from_secs(120));
    assert!(status.success(), "{out}\n{err}");
    assert!(
        err.contains("serving the deployed components"),
        "the banner says what a fleet runner serves: {err}"
    );
    let c = server.client();
    let job = finished(&c, &id, Duration::from_secs(10)).await;
    assert_completed(&job);
    assert_eq!(job.task_counts.computed, 21);
    let digests = span_digests(&c, &id).await;
    assert_eq!(digests.len(), 21);
    assert!(
        digests
            .iter()
            .all(|d| d.as_deref() == Some(shown.digest.as_str())),
        "{digests:?}"
    );
    let (_, logs, _) = server.cli(&["logs", &id]);
    assert_eq!(logs.matches("Finished sleep task").count(), 20, "{logs}");
    let (_, spans, _) = server.cli(&["spans", &id]);
    assert!(spans.contains("COMPONENT"), "{spans}");
    assert!(spans.contains(&shown.digest[..19]), "{spans}");
    let (_, runners, _) = server.cli(&["runners", "list"]);
    assert!(runners.contains("deployed components"), "{runners}");
    assert!(runners.contains("5 runners"), "{runners}");

    // A runner given the file names the same digest in its spans.
    let by_file = server.submit_seed(2, 0.1);
    let (status, out, err) = output(support::runner(&server, &[&wasm]), Duration::from_secs(60));
    assert!(status.success(), "{out}\n{err}");
    let digests = span_digests(&c, &by_file).await;
    assert_eq!(digests.len(), 3);
    assert!(
        digests
            .iter()
            .all(|d| d.as_deref() == Some(shown.digest.as_str())),
        "{digests:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_keeps_the_code_it_pinned_while_a_new_build_is_deployed() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let wasm = guest("parallel-sleep");
    let v1 = deploy(&server, &wasm, &["--name", "sleepers"]).component;
    let c = server.client();
    let first = c
        .submit(&support::job_of(
            "first",
            "ParallelSleepWorkflow",
            json!({"count": 20, "seconds": 2}),
        ))
        .await
        .unwrap();
    let mut runner = fleet(&server, 1, &["--concurrency", "5", "--forever", "--quiet"]);
    let mut runner = runner
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until(
        Duration::from_secs(60),
        "the first sleeps to start",
        || async { c.job(&first.id).await.unwrap().task_counts.running > 0 },
    )
    .await;
    let v2 = deploy(
        &server,
        &changed_copy(&wasm, dir.path()),
        &["--name", "sleepers"],
    );
    assert!(v2.created);
    let v2 = v2.component;
    assert_ne!(v1.digest, v2.digest);
    let second = c
        .submit(&support::job_of(
            "second",
            "ParallelSleepWorkflow",
            json!({"count": 2, "seconds": 0.1}),
        ))
        .await
        .unwrap();
    let second_done = finished(&c, &second.id, Duration::from_secs(60)).await;
    let first_done = finished(&c, &first.id, Duration::from_secs(120)).await;
    support::signal(runner.id(), "TERM");
    assert!(runner.wait().unwrap().success());
    assert_completed(&first_done);
    assert_completed(&second_done);
    let first_ran = span_digests(&c, &first.id).await;
    assert_eq!(first_ran.len(), 21);
    assert!(
        first_ran
            .iter()
            .all(|d| d.as_deref() == Some(v1.digest.as_str())),
        "the running job switched code: {first_ran:?}"
    );
    let second_ran = span_digests(&c, &second.id).await;
    assert_eq!(second_ran.len(), 3);
    assert!(
        second_ran
            .iter()
            .all(|d| d.as_deref() == Some(v2.digest.as_str())),
        "the new job did not run the new build: {second_ran:?}"
    );
    // The task view names the pinned digest too.
    let page = c.tasks(&first.id, &Default::default()).await.unwrap().tasks;
    assert!(
        page.iter()
            .all(|t| t.component.as_deref() == Some(v1.digest.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_bytes_fail_the_attempt_and_the_runner_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let server = ServerProc::start(&db, &[]);
    let sleep = deploy(&server, &guest("parallel-sleep"), &[]).component;
    let fan_out = deploy(&server, &guest("fan-out"), &[]).component;
    // Damage the sleepers' bytes where they are stored.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "UPDATE components SET bytes = bytes || x'00' WHERE digest = ?1",
            [&sleep.digest],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let c = server.client();
    let broken = c
        .submit(&support::job_of(
            "broken",
            "ParallelSleepWorkflow",
            json!({"count": 1, "seconds": 0.1}),
        ))
        .await
        .unwrap();
    let fine = c
        .submit(&support::job_of("fine", "FanOut", json!({"count": 5})))
        .await
        .unwrap();
    let (status, out, err) = output(fleet(&server, 1, &[]), Duration::from_secs(60));
    assert!(status.success(), "{out}\n{err}");
    let broken = finished(&c, &broken.id, Duration::from_secs(10)).await;
    assert_eq!(broken.state, JobState::Failed);
    let root = c
        .tasks(&broken.id, &Default::default())
        .await
        .unwrap()
        .tasks;
    let why = root[0].error.clone().unwrap_or_default();
    assert!(why.contains("stored bytes are damaged"), "{why}");
    assert!(why.contains("deploy the component again"), "{why}");
    let fine = finished(&c, &fine.id, Duration::from_secs(10)).await;
    assert_completed(&fine);
    assert_eq!(
        span_digests(&c, &fine.id).await[0].as_deref(),
        Some(fan_out.digest.as_str())
    );
}

/// Components that are not task components this server runs, built by hand.
mod bad {
    use wasm_encoder::{
        Component, ComponentExportKind, ComponentExportSection, ComponentImportSection,
        ComponentTypeRef, ComponentTypeSection, InstanceType,
    };

    /// A component that imports `imports` (empty instances) and re-exports the import named
    /// `export` as itself.
    pub fn component(imports: &[&str], export: &str) -> Vec<u8> {
        let mut types = ComponentTypeSection::new();
        types.instance(&InstanceType::new());
        let mut import = ComponentImportSection::new();
        for name in imports {
            import.import(*name, ComponentTypeRef::Instance(0));
        }
        let index = imports.iter().position(|i| *i == export).unwrap() as u32;
        let mut exports = ComponentExportSection::new();
        exports.export(export, ComponentExportKind::Instance, index, None);
        let mut c = Component::new();
        c.section(&types).section(&import).section(&exports);
        c.finish()
    }
}

/// `POST /v1/components` by hand: returns the status and the error body.
async fn upload(
    server: &ServerProc,
    bytes: Vec<u8>,
    digest: Option<&str>,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let digest = digest
        .map(str::to_string)
        .unwrap_or_else(|| tessera_server::component::digest(&bytes));
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/components", server.url))
        .query(&[
            ("name", "bad"),
            ("digest", digest.as_str()),
            ("task_types", "Bad@v0.0"),
        ])
        .header("content-type", "application/wasm")
        .body(bytes);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_are_refused_with_a_reason_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(
        &dir.path().join("t.db"),
        &["--max-component-mib", "1", "--token", "s3cret"],
    );
    let token = Some("s3cret");
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "a core module",
            core_module.clone(),
            "invalid_component",
            "core WebAssembly module, not a component",
        ),
        (
            "a component of another world",
            b"\0asm\x0d\0\x01\0".to_vec(),
            "invalid_component",
            "does not export tessera:task/tasks@0.2.0 or tessera:task/tasks@0.1.0 (it exports \
             nothing)",
        ),
        (
            "an unsupported WIT version",
            bad::component(&["tessera:task/tasks@0.9.0"], "tessera:task/tasks@0.9.0"),
            "invalid_component",
            "it exports tessera:task/tasks@0.9.0, a version of the task interface this server \
             does not run",
        ),
        (
            "an import the host does not provide",
            bad::component(
                &[
                    "wasi:http/outgoing-handler@0.2.0",
                    "tessera:task/tasks@0.1.0",
                ],
                "tessera:task/tasks@0.1.0",
            ),
            "invalid_component",
            "it imports \"wasi:http/outgoing-handler@0.2.0\", which the Tessera runner host does \
             not provide",
        ),
        (
            "a file over the size limit",
            vec![0u8; (1 << 20) + 1],
            "component_too_large",
            "larger than this server's limit of 1 MiB (tessera server --max-component-mib)",
        ),
    ];
    for (what, bytes, code, message) in cases {
        let (status, body) = upload(&server, bytes, None, token).await;
        let expected = if code == "component_too_large" {
            413
        } else {
            400
        };
        assert_eq!(status, expected, "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        let said = body["message"].as_str().unwrap();
        assert!(said.contains(message), "{what}: {said}");
    }
    let (status, body) = upload(
        &server,
        core_module.clone(),
        Some(&format!("sha256:{}", "0".repeat(64))),
        token,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("digest_mismatch"))
    );
    assert!(body["message"].as_str().unwrap().contains("deploy again"));
    let (status, body) = upload(&server, core_module.clone(), None, None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));

    // The same through the CLI: it loads the component in its sandbox before uploading.
    let deploy_cli = |path: &Path, token: Option<&str>| {
        let mut cmd = tessera();
        cmd.arg("deploy")
            .arg(path)
            .env("TESSERA_SERVER", &server.url);
        if let Some(t) = token {
            cmd.env("TESSERA_TOKEN", t);
        }
        output(cmd, Duration::from_secs(120))
    };
    let cli_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "core.wasm",
            core_module.clone(),
            "core.wasm is not a Tessera task component: it is a core WebAssembly module",
        ),
        (
            "other-world.wasm",
            b"\0asm\x0d\0\x01\0".to_vec(),
            "other-world.wasm is not a Tessera task component: it does not export \
             tessera:task/tasks@0.2.0 or tessera:task/tasks@0.1.0 (it exports nothing)",
        ),
        (
            "wit-0.9.wasm",
            bad::component(&["tessera:task/tasks@0.9.0"], "tessera:task/tasks@0.9.0"),
            "wit-0.9.wasm is not a Tessera task component: it exports \
             tessera:task/tasks@0.9.0, a version of the task interface this server does not run",
        ),
        (
            "http.wasm",
            bad::component(
                &[
                    "wasi:http/outgoing-handler@0.2.0",
                    "tessera:task/tasks@0.1.0",
                ],
                "tessera:task/tasks@0.1.0",
            ),
            "http.wasm is not a Tessera task component: it imports \
             \"wasi:http/outgoing-handler@0.2.0\", which the Tessera runner host does not provide",
        ),
    ];
    for (name, bytes, message) in cli_cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (status, _, err) = deploy_cli(&path, token);
        assert!(!status.success(), "{name}");
        assert!(err.contains(message), "{name}: {err}");
    }
    // A real component made larger than the server takes: the server's limit, named, before
    // any of it is sent (the server says its limit in /v1/health).
    let big = with_custom_section(
        &guest("parallel-sleep"),
        dir.path(),
        "big.wasm",
        &vec![7u8; 1 << 20],
    );
    let (status, _, err) = deploy_cli(&big, token);
    assert!(!status.success());
    assert!(
        err.contains(
            "larger than this server's limit of 1 MiB (tessera server --max-component-mib)"
        ),
        "{err}"
    );
    assert!(
        err.contains("big.wasm ("),
        "refused by the CLI, naming the file: {err}"
    );
    let (status, _, err) = deploy_cli(&guest("parallel-sleep"), None);
    assert!(!status.success());
    assert!(err.contains("requires a bearer token"), "{err}");
    let mut show = tessera();
    show.args(["components", "show", "nothing"])
        .env("TESSERA_SERVER", &server.url)
        .env("TESSERA_TOKEN", "s3cret");
    let (status, _, err) = output(show, Duration::from_secs(30));
    assert!(!status.success());
    assert!(err.contains("component nothing does not exist"), "{err}");
    let (status, _, err) = server.cli(&["runner", "--deployed", "x.wasm"]);
    assert!(!status.success());
    assert!(err.contains("cannot be used with"), "{err}");

    // Nothing of any of it was stored.
    let mut list = tessera();
    list.args(["components", "list", "--all", "--json"])
        .env("TESSERA_SERVER", &server.url)
        .env("TESSERA_TOKEN", "s3cret");
    let (status, out, err) = output(list, Duration::from_secs(30));
    assert!(status.success(), "{err}");
    let list: tessera_api::ComponentList = serde_json::from_str(&out).unwrap();
    assert!(list.components.is_empty(), "{list:?}");
}
