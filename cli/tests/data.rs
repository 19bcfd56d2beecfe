//! Data between tasks, end to end: real servers, runners and components. Word count on five
//! runners gives the count computed here; a failed or killed attempt's cache writes never show;
//! components of both contracts serve one job.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use support::{ServerProc, finished, guest, job_of, output, runner, tessera, until};
use tessera_api::{CacheQuery, Client, JobState, SpanQuery, TaskQuery, TaskState};

fn fixture_0_1() -> PathBuf {
    support::workspace().join("host/tests/fixtures/parallel_sleep-0.1.0.wasm")
}

/// A deterministic text of `n` words from a small vocabulary, with punctuation and capitals.
fn text(n: usize) -> String {
    let vocabulary = [
        "tile", "scene", "Cloud", "band", "pixel", "orbit", "sensor", "swath", "granule", "mosaic",
        "raster", "vector", "grid", "zone", "datum",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut words = Vec::with_capacity(n);
    for i in 0..n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Skewed: low indexes far more often, so the top words are clear.
        let r = (state % 1000) as usize;
        let w = vocabulary[(r * r / 1000) * vocabulary.len() / 1000];
        words.push(if i % 11 == 0 {
            format!("{w},")
        } else {
            w.to_string()
        });
    }
    words.join(" ")
}

/// The summary the word-count job must return, computed here without the component.
fn expected(text: &str, top: usize) -> Value {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let mut ranked: Vec<(&String, &u64)> = counts.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    json!({
        "words": counts.values().sum::<u64>(),
        "distinct": counts.len(),
        "top": ranked.iter().take(top).map(|(w, c)| json!({"word": w, "count": c})).collect::<Vec<_>>(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn word_count_on_five_runners_matches_a_count_made_here() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let wasm = guest("word-count");
    let text = text(3000);
    let input = json!({"text": text, "chunks": 20, "top": 5}).to_string();
    let (status, out, err) = server.cli(&[
        "submit",
        "WordCount",
        "--name",
        "word-count",
        "--input",
        &input,
    ]);
    assert!(status.success(), "{err}");
    let job = out
        .lines()
        .find_map(|l| l.strip_prefix("Submitted job: "))
        .unwrap()
        .to_string();
    let (status, _, err) = output(server.parallel_runners(5, &wasm), Duration::from_secs(300));
    assert!(status.success(), "{err}");
    let client = server.client();
    let done = finished(&client, &job, Duration::from_secs(60)).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(
        done.task_counts.total(),
        22,
        "a root, 20 chunks and a merge"
    );

    let want = expected(&text, 5);
    let (status, printed, err) = server.cli(&["jobs", "output", &job]);
    assert!(status.success(), "{err}");
    let printed: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(
        printed, want,
        "tessera jobs output prints the merge's summary"
    );
    let (status, as_json, err) = server.cli(&["jobs", "output", &job, "--json"]);
    assert!(status.success(), "{err}");
    let as_json: Value = serde_json::from_str(&as_json).unwrap();
    assert_eq!(as_json["json"], want);
    assert!(as_json["bytes"].as_u64().unwrap() > 50);

    // The merge's task id is the one the output names; a chunk's output is its own counts.
    let tasks = client
        .tasks(&job, &TaskQuery::default())
        .await
        .unwrap()
        .tasks;
    let merge = tasks.iter().find(|t| t.identifier.name == "Merge").unwrap();
    assert_eq!(as_json["task_id"], merge.id.as_str());
    let chunk = tasks.iter().find(|t| t.display == "CountWords(3)").unwrap();
    let (status, counts, err) = server.cli(&["jobs", "output", &job, &chunk.id]);
    assert!(status.success(), "{err}");
    let counts: BTreeMap<String, u64> = serde_json::from_str(&counts).unwrap();
    assert!(!counts.is_empty());

    // Each chunk noted its word count in the job cache.
    let (status, listed, err) = server.cli(&["cache", &job, "list", "--json"]);
    assert!(status.success(), "{err}");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let entries = listed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 20);
    assert_eq!(entries[0]["key"], "words/00000");
    let mut noted = 0;
    for e in entries {
        let key = e["key"].as_str().unwrap();
        let (status, value, err) = server.cli(&["cache", &job, "get", key]);
        assert!(status.success(), "{err}");
        noted += value.trim().parse::<u64>().unwrap();
    }
    assert_eq!(noted, want["words"].as_u64().unwrap());
    let (status, _, err) = server.cli(&["cache", &job, "get", "words/99999"]);
    assert!(!status.success());
    assert!(
        err.contains("has no cache value under \"words/99999\""),
        "{err}"
    );
    // The chunks ran on more than one runner.
    let spans = client
        .spans(&job, &SpanQuery::default())
        .await
        .unwrap()
        .spans;
    let runners: std::collections::BTreeSet<&str> =
        spans.iter().map(|s| s.runner_id.as_str()).collect();
    assert!(runners.len() > 1, "{runners:?}");

    // Deleting the job takes its outputs and cache along.
    let (status, said, err) = server.cli(&["jobs", "delete", &job]);
    assert!(status.success(), "{err}");
    assert!(
        said.contains("22 tasks, their logs, spans, outputs and cache"),
        "{said}"
    );
    let (status, _, err) = server.cli(&["jobs", "output", &job]);
    assert!(!status.success());
    assert!(err.contains("does not exist"), "{err}");
    let e = client
        .cache(&job, &CacheQuery::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
}

async fn cache_keys(client: &Client, job: &str) -> Vec<String> {
    client
        .cache(job, &CacheQuery::default())
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.key)
        .collect()
}

/// A runner of the hostile guest in the background, its output dropped.
fn quiet_runner(server: &ServerProc) -> std::process::Child {
    runner(server, &[&guest("hostile-guest")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The one task of a job of one task.
async fn only_task(client: &Client, job: &str) -> tessera_api::Task {
    client
        .tasks(job, &TaskQuery::default())
        .await
        .unwrap()
        .tasks
        .remove(0)
}

fn submit_probe(server: &ServerProc, how: &str, size: u32, retries: u32) -> String {
    let input = json!({"how": how, "size": size}).to_string();
    let (status, out, err) = server.cli(&[
        "submit",
        "DataProbe",
        "--input",
        &input,
        "--max-retries",
        &retries.to_string(),
    ]);
    assert!(status.success(), "{err}");
    out.lines()
        .find_map(|l| l.strip_prefix("Submitted job: "))
        .unwrap()
        .to_string()
}

/// Every key and prefix the limits allow lists through a runner (the runner sends them in the
/// request target, which fits them at 4 bytes a character), and a prefix the server would
/// refuse is refused by the host first as `invalid-key`.
#[tokio::test(flavor = "multi_thread")]
async fn cache_listings_at_the_key_limits_work_through_a_runner() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let client = server.client();
    let job = submit_probe(&server, "wide-keys", 0, 0);
    let (status, _, err) = output(
        runner(&server, &[&guest("hostile-guest")]),
        Duration::from_secs(120),
    );
    assert!(status.success(), "{err}");
    let done = finished(&client, &job, Duration::from_secs(60)).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    let seen = client
        .output(&job, None, 1 << 20)
        .await
        .unwrap()
        .value
        .unwrap();
    let seen: Value = serde_json::from_slice(&seen).unwrap();
    for (what, want) in [
        ("emoji", "ok 1"),
        ("cjk", "ok 1"),
        ("whole_key", "ok 1"),
        ("control", "invalid-key"),
        ("too_long", "invalid-key"),
    ] {
        assert_eq!(seen[what], want, "{what}: {seen}");
    }
    // The committed keys list at the limits through the API too.
    let page = client
        .cache(
            &job,
            &CacheQuery {
                prefix: Some("😀".repeat(512)),
                after: Some("語".repeat(512)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let listed: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(listed, ["😀".repeat(512)], "{page:?}");
    // In byte order: 語 is E8 AA 9E, 😀 F0 9F 98 80.
    let all = cache_keys(&client, &job).await;
    assert_eq!(all, ["語".repeat(512), "😀".repeat(512)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_attempts_cache_writes_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &["--retry-base-seconds", "1.5"]);
    let client = server.client();
    let job = submit_probe(&server, "fail-after-write", 0, 2);
    let mut run = quiet_runner(&server);
    // Between attempts: the first failed and waits out its backoff; it wrote, then failed.
    let root = async || only_task(&client, &job).await;
    until(
        Duration::from_secs(60),
        "the first attempt to fail",
        || async {
            let t = root().await;
            t.attempts >= 1 && t.state == TaskState::Queued
        },
    )
    .await;
    assert!(
        cache_keys(&client, &job).await.is_empty(),
        "attempt 1's write shows"
    );
    let e = client
        .cache_value(&job, "doomed", 1 << 20, None)
        .await
        .unwrap();
    assert_eq!(e, None);
    let e = client.output(&job, None, 1 << 20).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let done = finished(&client, &job, Duration::from_secs(60)).await;
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(root().await.attempts, 3, "retried twice");
    assert!(
        cache_keys(&client, &job).await.is_empty(),
        "no attempt's write shows"
    );
    // No output, and never will be unless retried: exit 1 (as the README says), saying so.
    let (status, _, err) = server.cli(&["jobs", "output", &job]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("has no output: it is failed"), "{err}");
    assert!(
        err.contains("will not compute unless its job is retried"),
        "{err}"
    );
    let _ = run.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_runners_cache_writes_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &["--lease-seconds", "2"]);
    let client = server.client();
    // Attempt 1 writes `sleeper` = 1 and sleeps a minute; later attempts write their number
    // and return at once.
    let job = submit_probe(&server, "write-then-sleep", 60, 0);
    let mut first = quiet_runner(&server);
    let task = async || only_task(&client, &job).await;
    until(Duration::from_secs(60), "attempt 1 to run", || async {
        task().await.state == TaskState::Running
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(cache_keys(&client, &job).await.is_empty());
    until(Duration::from_secs(30), "the lease to expire", || async {
        task().await.state == TaskState::Queued
    })
    .await;
    assert!(
        cache_keys(&client, &job).await.is_empty(),
        "the killed write shows"
    );
    let wasm = guest("hostile-guest");
    let (status, _, err) = output(runner(&server, &[&wasm]), Duration::from_secs(120));
    assert!(status.success(), "{err}");
    let done = finished(&client, &job, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Completed);
    let value = client
        .cache_value(&job, "sleeper", 1 << 20, None)
        .await
        .unwrap();
    assert_eq!(
        value.as_deref(),
        Some(&b"2"[..]),
        "attempt 2's write, not attempt 1's"
    );
    let out = client.output(&job, None, 1 << 20).await.unwrap();
    assert_eq!(out.value.as_deref(), Some(&b"\"slept\""[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn components_of_both_contracts_serve_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let client = server.client();
    let job = client
        .submit(&job_of("mixed", "MixedRoot", json!({"count": 3})))
        .await
        .unwrap();
    let new = guest("hostile-guest");
    let old = fixture_0_1();
    let mut both = runner(&server, &[&new, &old]);
    both.args(["--concurrency", "4"]);
    let (status, _, err) = output(both, Duration::from_secs(120));
    assert!(status.success(), "{err}");
    let done = finished(&client, &job.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    // The 0.2.0 probe read its 0.1.0 dependencies: three, none with an output.
    let out = client.output(&job.id, None, 1 << 20).await.unwrap();
    let seen: Value = serde_json::from_slice(&out.value.unwrap()).unwrap();
    assert_eq!(seen["deps"], json!([0, 1, 2]));
    assert_eq!(seen["outputs"], json!([null, null, null]));
    assert_eq!(seen["stranger"], "not-a-dependency");
    // Spans name the file each attempt ran: both components served this job.
    let spans = client
        .spans(&job.id, &SpanQuery::default())
        .await
        .unwrap()
        .spans;
    let digest = |name: &str| {
        spans
            .iter()
            .find(|s| s.name.starts_with(name))
            .and_then(|s| s.component.clone())
            .unwrap_or_else(|| panic!("no span of {name}: {spans:#?}"))
    };
    assert_ne!(digest("MixedRoot"), digest("SleepTask"));
    assert_eq!(digest("MixedRoot"), digest("DataProbe"));
}

#[test]
fn the_output_of_an_unknown_job_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let mut cmd = tessera();
    cmd.args(["jobs", "output", "no-such-job"])
        .env("TESSERA_SERVER", &server.url);
    let (status, _, err) = output(cmd, Duration::from_secs(30));
    assert!(!status.success());
    assert!(err.contains("job no-such-job does not exist"), "{err}");
}
