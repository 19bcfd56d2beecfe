//! Submit latency while 2,000 runners long-poll elsewhere: a submit must not run a claim
//! transaction for each of them. Median and 95th percentile of 200 sequential submits, with
//! no idle runners, with 2,000 waiting on cluster `idle`, and with 2,000 runners of another
//! tenant waiting on the very cluster the submits go to.
//!
//! `cargo bench -p tessera-server --bench wake`; results in `bench/README.md`.

use std::time::{Duration, Instant};

use tessera_api::{ClaimRequest, Client, RootTask, SubmitJob, TaskIdentifier};
use tessera_server::testing::protocol::{bench_runtime, claim};
use tessera_server::{Database, ServerConfig};

const IDLE: usize = 2_000;
const SUBMITS: usize = 200;
const TOKEN: &str = "wake-bench";

fn job(i: usize) -> SubmitJob {
    SubmitJob {
        name: format!("latency-{i}"),
        root: RootTask {
            identifier: TaskIdentifier::parse("Noop", "v0.0").unwrap(),
            input: serde_json::Value::Null,
            max_retries: 0,
            display: None,
        },
        cluster: Some("busy".into()),
    }
}

/// Milliseconds of 200 submits, sorted.
async fn submits(c: &Client) -> Vec<f64> {
    let mut ms = Vec::with_capacity(SUBMITS);
    for i in 0..SUBMITS {
        let started = Instant::now();
        c.submit(&job(i)).await.unwrap();
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    ms
}

fn main() {
    let server_rt = bench_runtime();
    let client_rt = bench_runtime();
    let dir = tempfile::tempdir().unwrap();
    let server = server_rt
        .block_on(tessera_server::start(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database: Database::Sqlite(dir.path().join("bench.db")),
            token: Some(TOKEN.into()),
            ..ServerConfig::default()
        }))
        .unwrap();
    let url = server.url();
    println!(
        "{:<28} {:>10} {:>10}",
        "idle runners", "median ms", "p95 ms"
    );
    client_rt.block_on(async {
        let c = Client::new(url.clone(), Some(TOKEN.into()));
        let quiet = submits(&c).await;
        println!(
            "{:<28} {:>10.2} {:>10.2}",
            0,
            quiet[SUBMITS / 2],
            quiet[SUBMITS * 95 / 100]
        );
        let elsewhere = idle(&url, TOKEN, "idle").await;
        let busy = submits(&c).await;
        println!(
            "{:<28} {:>10.2} {:>10.2}",
            format!("{IDLE} on another cluster"),
            busy[SUBMITS / 2],
            busy[SUBMITS * 95 / 100]
        );
        for p in elsewhere {
            p.abort();
        }
        // Runners of another tenant, on the cluster the submits go to.
        c.create_tenant(&tessera_api::NewTenant {
            name: "other".into(),
            weight: None,
        })
        .await
        .unwrap();
        let key = c
            .create_key(&tessera_api::NewKey {
                role: tessera_api::Role::Runner,
                tenant: Some("other".into()),
                name: None,
            })
            .await
            .unwrap()
            .secret;
        let theirs = idle(&url, &key, "busy").await;
        let shared = submits(&c).await;
        println!(
            "{:<28} {:>10.2} {:>10.2}",
            format!("{IDLE} of another tenant"),
            shared[SUBMITS / 2],
            shared[SUBMITS * 95 / 100]
        );
        for p in theirs {
            p.abort();
        }
    });
    server_rt.block_on(server.shutdown());
}

/// 2,000 runners with `key` long-polling `cluster`, each on its own connection; returns once
/// they wait.
async fn idle(url: &str, key: &str, cluster: &str) -> Vec<tokio::task::JoinHandle<()>> {
    let pollers: Vec<_> = (0..IDLE)
        .map(|i| {
            let c = Client::new(url.to_string(), Some(key.to_string()));
            let cluster = cluster.to_string();
            tokio::spawn(async move {
                loop {
                    let _ = c
                        .claim(&ClaimRequest {
                            cluster: cluster.clone(),
                            identifiers: vec![TaskIdentifier::parse("Noop", "v0.0").unwrap()],
                            wait_ms: 60_000,
                            ..claim(&format!("idle-{i}"), 1)
                        })
                        .await;
                }
            })
        })
        .collect();
    // Let every poller reach its wait.
    tokio::time::sleep(Duration::from_secs(5)).await;
    pollers
}
