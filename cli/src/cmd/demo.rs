//! `tessera demo`: the seed scenario on an embedded server, measured.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use anyhow::Context;
use tessera_api::{Client, Job, JobState, RootTask, SpanQuery, SubmitJob, TaskIdentifier};
use tessera_server::{Database, ServerConfig, StoreConfig};

use crate::format;

/// Options of `tessera demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many sleep tasks each job fans out.
    #[arg(long, default_value_t = 20)]
    count: u32,
    /// How long each sleep task sleeps, in seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// The parallel-sleep component (default: find it in target/, or build it).
    #[arg(long)]
    component: Option<PathBuf>,
    /// Where the embedded server listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// End once the scenario ran instead of serving the console until Ctrl-C.
    #[arg(long)]
    exit: bool,
}

const WASM: &str = "target/wasm32-wasip2/release/parallel_sleep.wasm";

/// The workspace root above the current directory, if we are in one.
fn workspace_root() -> Option<PathBuf> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        if dir.join("examples/parallel-sleep/Cargo.toml").exists() {
            return Some(dir);
        }
        if !dir.pop() {
            return None;
        }
    }
}

fn find_or_build(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(path.exists(), "component {} does not exist", path.display());
        return Ok(path);
    }
    let root = workspace_root().context(
        "could not find the parallel-sleep example: run the demo inside the tessera checkout, or pass --component PATH",
    )?;
    let wasm = root.join(WASM);
    eprintln!(
        "Building the parallel-sleep component (cargo build --release -p parallel-sleep --target wasm32-wasip2)…"
    );
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "-p",
                "parallel-sleep",
                "--target",
                "wasm32-wasip2",
            ])
            .stdout(Stdio::null())
            .status()
            .context("could not run cargo to build the example component")?;
    anyhow::ensure!(
        status.success(),
        "building the example component failed; is the target installed? rustup target add wasm32-wasip2"
    );
    Ok(wasm)
}

/// One measured scenario.
struct Row {
    label: String,
    job: Job,
    overlap: usize,
    runners: usize,
}

/// The largest number of spans running at one instant.
fn max_overlap(spans: &[(u64, u64)]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for &(s, e) in spans {
        edges.push((s, 1));
        edges.push((e, -1));
    }
    edges.sort();
    let (mut now, mut best) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        best = best.max(now);
    }
    best as usize
}

async fn scenario(
    client: &Client,
    label: &str,
    count: u32,
    seconds: f64,
    runner: Vec<String>,
) -> anyhow::Result<Row> {
    let job = client
        .submit(&SubmitJob {
            name: format!("parallel-sleep-workflow ({label})"),
            root: RootTask {
                identifier: TaskIdentifier::parse("ParallelSleepWorkflow", "v0.0")?,
                input: serde_json::json!({ "count": count, "seconds": seconds }),
                max_retries: 0,
                display: None,
            },
            cluster: None,
        })
        .await?;
    eprintln!("\n== {label}: job {} — {}", job.id, runner.join(" "));
    let status = tokio::process::Command::new(&runner[0])
        .args(&runner[1..])
        .env("TESSERA_SERVER", client.base())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .with_context(|| format!("could not start {}", runner[0]))?;
    anyhow::ensure!(
        status.success(),
        "the runner command for {label} failed ({status})"
    );
    let job = client.job(&job.id).await?;
    anyhow::ensure!(
        job.state == JobState::Completed,
        "job {} ended {}",
        job.id,
        job.state
    );
    let spans = client.spans(&job.id, &SpanQuery::default()).await?.spans;
    let sleeps: Vec<(u64, u64)> = spans
        .iter()
        .filter(|s| s.name.starts_with("SleepTask"))
        .filter_map(|s| Some((s.start_time_unix_nano, s.end_time_unix_nano?)))
        .collect();
    let runners: std::collections::HashSet<&str> =
        spans.iter().map(|s| s.runner_id.as_str()).collect();
    Ok(Row {
        label: label.to_string(),
        overlap: max_overlap(&sleeps),
        runners: runners.len(),
        job,
    })
}

/// Runs the scenario and prints its table.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.count > 0, "--count must be at least 1");
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds >= 0.0,
        "--seconds must be a non-negative number"
    );
    let wasm = find_or_build(args.component.clone())?;
    let dir = tempfile::tempdir().context("could not create a temporary directory")?;
    let db = dir.path().join("demo.db");
    let server = tessera_server::start(ServerConfig {
        listen: args.listen,
        database: Database::Sqlite(db.clone()),
        store: StoreConfig::default(),
        ..ServerConfig::default()
    })
    .await?;
    let url = server.url();
    let client = Client::new(url.clone(), None);
    println!(
        "Tessera demo: embedded server at {url} (SQLite file {})",
        db.display()
    );
    let me = std::env::current_exe().context("could not find the tessera executable")?;
    let me = me.to_string_lossy().to_string();
    let wasm_s = wasm.to_string_lossy().to_string();
    let runner = |extra: &[&str]| {
        let mut v = vec![
            me.clone(),
            "runner".into(),
            wasm_s.clone(),
            "--quiet".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut five = vec![
        me.clone(),
        "parallel".into(),
        "-n".into(),
        "5".into(),
        "--".into(),
    ];
    five.extend(runner(&[]));
    let rows = [
        scenario(&client, "one runner", args.count, args.seconds, runner(&[])).await?,
        scenario(&client, "five runners", args.count, args.seconds, five).await?,
        scenario(
            &client,
            "one runner, concurrency 20",
            args.count,
            args.seconds,
            runner(&["--concurrency", "20"]),
        )
        .await?,
    ];
    let total = args.count as f64 * args.seconds;
    println!();
    let table: Vec<Vec<String>> = rows
        .iter()
        .zip([1.0, 5.0, 20.0])
        .map(|(r, parallel)| {
            let wall = r
                .job
                .finished_at
                .unwrap_or(0)
                .saturating_sub(r.job.started_at.unwrap_or(0));
            let ideal = (args.count as f64 / parallel).ceil() * args.seconds;
            vec![
                r.label.clone(),
                format::duration_ns(wall),
                format!("{ideal:.2} s"),
                format!("{:.1}×", total / (wall as f64 / 1e9).max(1e-9)),
                format!("{} at once", r.overlap),
                r.runners.to_string(),
                format!("{url}/jobs/{}", r.job.id),
            ]
        })
        .collect();
    format::table(
        &[
            "SCENARIO",
            "WALL TIME",
            "IDEAL",
            "SPEEDUP",
            "OVERLAP",
            "RUNNERS",
            "CONSOLE",
        ],
        &table,
    );
    println!();
    println!(
        "{} × {} s sleeps per job; speedup = summed sleep time / wall time.",
        args.count, args.seconds
    );
    println!(
        "Look around: tessera logs JOB, tessera spans JOB (with TESSERA_SERVER={url}), or the console at {url}/"
    );
    if args.exit {
        server.shutdown().await;
        return Ok(ExitCode::SUCCESS);
    }
    println!("Serving until Ctrl-C…");
    super::server::shutdown_signal().await;
    server.shutdown().await;
    drop(dir);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_the_widest_instant() {
        assert_eq!(max_overlap(&[(0, 10), (5, 15), (12, 20)]), 2);
        assert_eq!(max_overlap(&[(0, 10), (10, 20)]), 1);
        assert_eq!(max_overlap(&[]), 0);
    }
}
