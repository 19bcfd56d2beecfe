//! Races over real HTTP: many claimers, and completions racing lease expiry.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::ServerProc;
use tessera_api::{Client, JobState, ReportRequest, SpanOutcome, SpanQuery};
use tessera_server::testing::protocol::{claim, done, fan_out};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_claimers_over_ten_thousand_tasks_get_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("t.db"), &[]);
    let job = fan_out(&server.client(), 10_000).await;
    let claimed = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let c = Client::new(server.url.clone(), None);
            let claimed = claimed.clone();
            tokio::spawn(async move {
                let runner = format!("claimer-{w}");
                loop {
                    let tasks = c.claim(&claim(&runner, 50)).await.unwrap().tasks;
                    if tasks.is_empty() {
                        return;
                    }
                    claimed
                        .lock()
                        .unwrap()
                        .extend(tasks.iter().map(|t| t.task_id.clone()));
                    let reports = tasks.iter().map(|t| done(t, vec![])).collect();
                    let r = c
                        .report(&ReportRequest {
                            runner_id: runner.clone(),
                            reports,
                            claim: None,
                        })
                        .await
                        .unwrap();
                    assert!(r.results.iter().all(|r| r.accepted));
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let claimed = claimed.lock().unwrap().clone();
    let unique: HashSet<&String> = claimed.iter().collect();
    assert_eq!(claimed.len(), 10_000, "claims handed out");
    assert_eq!(unique.len(), 10_000, "a task went to two claimers");
    let j = server.client().job(&job).await.unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.task_counts.computed, 10_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completions_racing_lease_expiry_never_record_a_task_twice() {
    let dir = tempfile::tempdir().unwrap();
    // Leases here expire again and again on purpose: no limit on losses in a row.
    let server = ServerProc::start(
        &dir.path().join("t.db"),
        &["--lease-seconds", "0.3", "--max-lost", "0"],
    );
    let job = fan_out(&server.client(), 300).await;
    let accepted = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let refused = Arc::new(Mutex::new(0u32));
    let deadline = Instant::now() + Duration::from_secs(120);
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let c = Client::new(server.url.clone(), None);
            let (accepted, refused) = (accepted.clone(), refused.clone());
            tokio::spawn(async move {
                let runner = format!("racer-{w}");
                let mut step = w as u64;
                while Instant::now() < deadline {
                    let tasks = c.claim(&claim(&runner, 5)).await.unwrap().tasks;
                    if tasks.is_empty() {
                        if c.job(&job_id_of(&c).await).await.unwrap().state == JobState::Completed {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    // Some finish well inside the lease, some well after it.
                    step = step
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let pause = (step >> 33) % 600;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    let reports = tasks.iter().map(|t| done(t, vec![])).collect();
                    let answer = c
                        .report(&ReportRequest {
                            runner_id: runner.clone(),
                            reports,
                            claim: None,
                        })
                        .await;
                    match answer {
                        Ok(r) => {
                            for res in r.results {
                                if res.accepted {
                                    *accepted.lock().unwrap().entry(res.task_id).or_default() += 1;
                                } else {
                                    *refused.lock().unwrap() += 1;
                                }
                            }
                        }
                        Err(e) => {
                            assert_eq!(e.status(), Some(409), "{e}");
                            *refused.lock().unwrap() += tasks.len() as u32;
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let c = server.client();
    let j = c.job(&job).await.unwrap();
    assert_eq!(j.state, JobState::Completed, "{j:?}");
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 300);
    assert!(
        accepted.values().all(|&n| n == 1),
        "a completion was accepted twice"
    );
    assert!(
        *refused.lock().unwrap() > 0,
        "no report raced an expired lease; the test proves nothing"
    );
    let spans = c
        .spans(
            &job,
            &SpanQuery {
                limit: Some(5000),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .spans;
    let mut computed_spans: HashMap<&str, u32> = HashMap::new();
    for s in spans.iter().filter(|s| s.outcome == SpanOutcome::Computed) {
        *computed_spans.entry(s.task_id.as_str()).or_default() += 1;
    }
    assert_eq!(computed_spans.len(), 301);
    assert!(computed_spans.values().all(|&n| n == 1));
    assert!(spans.iter().any(|s| s.outcome == SpanOutcome::Expired));
}

async fn job_id_of(c: &Client) -> String {
    c.jobs(&Default::default()).await.unwrap().jobs[0]
        .id
        .clone()
}
