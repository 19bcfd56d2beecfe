//! Claim + complete of no-op tasks over HTTP on loopback: tasks/s with 1 and 4 concurrent
//! clients, one task per round trip (complete-and-claim) or 64.
//!
//! `cargo bench -p tessera-server --bench protocol`; results in `bench/README.md`.

use std::time::{Duration, Instant};

use tessera_api::{Client, ReportRequest};
use tessera_server::testing::protocol::{bench_runtime, claim, done, fan_out};
use tessera_server::{Database, ServerConfig, StoreConfig};

/// One client: claim, then report each batch with the next claim riding along.
async fn drain(c: Client, runner: String, batch: u32) -> usize {
    let mut n = 0;
    let mut tasks = c.claim(&claim(&runner, batch)).await.unwrap().tasks;
    while !tasks.is_empty() {
        n += tasks.len();
        let reports = tasks.iter().map(|t| done(t, vec![])).collect();
        let r = c
            .report(&ReportRequest {
                runner_id: runner.clone(),
                reports,
                claim: Some(claim(&runner, batch)),
            })
            .await
            .unwrap();
        tasks = r.tasks;
    }
    n
}

fn main() {
    let server_rt = bench_runtime();
    let client_rt = bench_runtime();
    println!(
        "{:<10} {:>8} {:>8} {:>10} {:>12}",
        "mode", "clients", "tasks", "seconds", "tasks/s"
    );
    for (mode, batch, tasks) in [("1/request", 1u32, 4_000usize), ("64/request", 64, 40_000)] {
        for clients in [1usize, 4] {
            let dir = tempfile::tempdir().unwrap();
            let server = server_rt
                .block_on(tessera_server::start(ServerConfig {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    database: Database::Sqlite(dir.path().join("bench.db")),
                    store: StoreConfig {
                        lease: Duration::from_secs(300),
                        ..StoreConfig::default()
                    },
                    ..ServerConfig::default()
                }))
                .unwrap();
            let url = server.url();
            let (n, secs) = client_rt.block_on(async {
                fan_out(&Client::new(url.clone(), None), tasks).await;
                let started = Instant::now();
                let workers: Vec<_> = (0..clients)
                    .map(|i| {
                        tokio::spawn(drain(
                            Client::new(url.clone(), None),
                            format!("bench-{i}"),
                            batch,
                        ))
                    })
                    .collect();
                let mut n = 0;
                for w in workers {
                    n += w.await.unwrap();
                }
                (n, started.elapsed().as_secs_f64())
            });
            assert_eq!(n, tasks);
            println!(
                "{mode:<10} {clients:>8} {n:>8} {secs:>10.2} {:>12.0}",
                n as f64 / secs
            );
            server_rt.block_on(server.shutdown());
        }
    }
}
