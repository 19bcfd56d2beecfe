//! A Python task component beside a Rust one, both the seed example: size, compile time
//! (cold), load time (cached), the cost of a next-to-nothing attempt (a workflow of 0 sleeps:
//! one log line, no subtasks), and memory per sleeping `SleepTask` with N asleep at once.
//!
//! `bench/python.sh` builds the Python component and runs this with
//! `TESSERA_PY_COMPONENT=PATH cargo bench -p tessera-host --bench python -- N...`;
//! results in `bench/README.md`.

#[path = "../tests/support/mod.rs"]
mod support;

use support::{bench_spec, status_kib};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_host::{DiscardLogs, Host, HostConfig, Limits, LogSink, TaskComponent};

/// Median of `f` over `n` runs, in µs.
fn median_us(n: usize, mut f: impl FnMut() -> Duration) -> f64 {
    let mut times: Vec<f64> = (0..n).map(|_| f().as_secs_f64() * 1e6).collect();
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

fn measure(rt: &tokio::runtime::Runtime, label: &str, wasm: &Path, counts: &[usize]) {
    let size = std::fs::metadata(wasm).unwrap().len();
    let most = counts.iter().copied().max().unwrap_or(1);
    // Cold: no cache at all. Cached: a fresh cache, filled once, then read.
    let cache = tempfile::tempdir().unwrap();
    let host_for = |cache_dir: Option<PathBuf>| {
        Host::new(HostConfig {
            cache_dir,
            max_instances: most as u32 + 64,
            ..HostConfig::default()
        })
        .unwrap()
    };
    let cold_host = host_for(None);
    let started = Instant::now();
    rt.block_on(cold_host.load(wasm)).unwrap();
    let cold = started.elapsed();
    drop(cold_host);
    let host = host_for(Some(cache.path().to_path_buf()));
    rt.block_on(host.load(wasm)).unwrap();
    let started = Instant::now();
    let component: Arc<TaskComponent> = rt.block_on(host.load(wasm)).unwrap();
    let cached = started.elapsed();
    let limits = Limits::default();
    let sink: Arc<dyn LogSink> = Arc::new(DiscardLogs);
    let per_attempt = median_us(200, || {
        let started = Instant::now();
        let outcome = rt.block_on(host.run(
            &component,
            bench_spec(
                "ParallelSleepWorkflow",
                0,
                r#"{"count":0,"seconds":0}"#.into(),
            ),
            &limits,
            sink.clone(),
        ));
        assert!(outcome.computed().is_some(), "{outcome:?}");
        started.elapsed()
    });
    println!(
        "{label}: {size} bytes; compile (cold) {:.2} s; load (cached) {:.1} ms; an attempt of next to nothing {per_attempt:.0} µs",
        cold.as_secs_f64(),
        cached.as_secs_f64() * 1e3
    );
    let host = Arc::new(host);
    for &n in counts {
        let before = status_kib("RssAnon:");
        let (took, handles) =
            support::start_sleepers(rt, &host, &component, n, 30, Duration::from_secs(28));
        let during = status_kib("RssAnon:");
        for h in handles {
            h.abort();
        }
        // Let the aborted attempts drop their stores before the next round.
        std::thread::sleep(Duration::from_millis(500));
        println!(
            "{label}: {n} asleep at once (all started in {:.2} s): {:.1} KiB anonymous memory per sleeping task",
            took.as_secs_f64(),
            during.saturating_sub(before) as f64 / n as f64
        );
    }
}

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![100, 1000]
    } else {
        counts
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rust = support::guest("parallel-sleep");
    measure(&rt, "rust", &rust, &counts);
    let Some(python) = std::env::var_os("TESSERA_PY_COMPONENT") else {
        eprintln!(
            "set TESSERA_PY_COMPONENT to a build of examples/parallel-sleep-py (bench/python.sh)"
        );
        return;
    };
    measure(&rt, "python", Path::new(&python), &counts);
}
