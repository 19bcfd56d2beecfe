//! Capacity of one host: memory per sleeping task with 10,000 asleep at once, and no-op
//! attempts per second across both cores.
//!
//! `cargo bench -p tessera-host --bench capacity [-- SLEEPERS NOOPS]`; results in `bench/README.md`.
//! With `CAPACITY_EXIT_ASLEEP=1` it exits while the sleepers sleep, so that a heap profiler
//! reports what they hold as leaked.

#[path = "../tests/support/mod.rs"]
mod support;

use support::{bench_spec, status_kib};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_host::{DiscardLogs, Host, HostConfig, Limits, LogSink};

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sleepers = args.first().copied().unwrap_or(10_000);
    let noops = args.get(1).copied().unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let host = Arc::new(
        Host::new(HostConfig {
            cache_dir: Some(support::shared_cache()),
            max_instances: (sleepers as u32).max(64) + 64,
            ..HostConfig::default()
        })
        .unwrap(),
    );
    println!("allocation: {:?}", host.allocation());
    let sleep = rt
        .block_on(host.load(support::guest("parallel-sleep")))
        .unwrap();
    let noop = rt
        .block_on(host.load(support::guest("hostile-guest")))
        .unwrap();
    let limits = Limits::default();

    // Warm up, then measure memory with `sleepers` tasks asleep at once.
    rt.block_on(host.run(
        &sleep,
        bench_spec("SleepTask", 0, r#"{"index":0,"seconds":0}"#.into()),
        &limits,
        Arc::new(DiscardLogs),
    ));
    let rss_before = status_kib("VmRSS:");
    let anon_before = status_kib("RssAnon:");
    let maps_before = map_count();
    let (all_started, handles) =
        support::start_sleepers(&rt, &host, &sleep, sleepers, 10, Duration::from_secs(9));
    let rss_during = status_kib("VmRSS:");
    let anon_during = status_kib("RssAnon:");
    let maps_during = map_count();
    if std::env::var_os("CAPACITY_EXIT_ASLEEP").is_some() {
        std::process::exit(0);
    }
    let parts = anonymous_by_mapping();
    let failed = rt.block_on(async {
        let mut failed = 0;
        for h in handles {
            if h.await.unwrap().failure().is_some() {
                failed += 1;
            }
        }
        failed
    });
    println!(
        "sleepers: {sleepers} started in {:.2} s, {failed} failed",
        all_started.as_secs_f64()
    );
    println!(
        "rss: {rss_before} KiB before, {rss_during} KiB with all asleep: {:.1} KiB per sleeping task",
        (rss_during.saturating_sub(rss_before)) as f64 / sleepers as f64
    );
    println!(
        "anonymous rss: {anon_before} KiB before, {anon_during} KiB with all asleep: {:.1} KiB per sleeping task \
         (the rest is the component's data image, mapped copy-on-write from one shared file)",
        (anon_during.saturating_sub(anon_before)) as f64 / sleepers as f64
    );
    println!(
        "memory mappings: {maps_before} before, {maps_during} with all asleep ({:.2} per task; vm.max_map_count {})",
        (maps_during.saturating_sub(maps_before)) as f64 / sleepers as f64,
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .unwrap_or_default()
            .trim()
    );
    println!("peak rss (VmHWM): {} KiB", status_kib("VmHWM:"));
    println!("anonymous memory with all asleep, per sleeping task, by mapping (size, count):");
    for (kib, size, count, name) in parts.iter().take(12) {
        println!(
            "  {:>6.1} KiB  {count:>6} x {:>9} KiB  {name}",
            *kib as f64 / sleepers as f64,
            size / 1024
        );
    }

    // Throughput: `noops` no-op attempts, 64 in flight at a time per worker.
    let started = Instant::now();
    let done = rt.block_on(async {
        let per = noops / 128;
        let workers: Vec<_> = (0..128)
            .map(|w| {
                let (host, noop, limits) = (host.clone(), noop.clone(), limits.clone());
                tokio::spawn(async move {
                    let sink: Arc<dyn LogSink> = Arc::new(DiscardLogs);
                    for i in 0..per {
                        let o = host
                            .run(
                                &noop,
                                bench_spec("Noop", w * per + i, "{}".into()),
                                &limits,
                                sink.clone(),
                            )
                            .await;
                        assert!(o.computed().is_some());
                    }
                    per
                })
            })
            .collect();
        let mut n = 0;
        for w in workers {
            n += w.await.unwrap();
        }
        n
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "no-op attempts: {done} in {secs:.2} s = {:.0} attempts/s on 2 worker threads",
        done as f64 / secs
    );
}

/// This process's anonymous memory (`/proc/self/smaps`) grouped by mapping size and name,
/// largest first: (KiB, mapping size in bytes, how many mappings, name). The pools show up as
/// their sizes: one mapping per instance's fiber stack, linear-memory pieces around the data
/// image, one big reservation for the table pool, malloc's arenas.
fn anonymous_by_mapping() -> Vec<(u64, u64, u64, String)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut groups: Vec<(u64, u64, u64, String)> = Vec::new();
    let mut current: Option<(u64, String)> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let (a, b) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16));
            if let (Ok(a), Ok(b)) = (a, b) {
                let name = line.split_whitespace().nth(5).unwrap_or("[anon]");
                let name = name.rsplit('/').next().unwrap_or(name).to_string();
                current = Some((b - a, name));
            }
        } else if let Some(v) = line.strip_prefix("Anonymous:") {
            let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            if let Some((size, name)) = current.take().filter(|_| kib > 0) {
                match groups.iter_mut().find(|g| g.1 == size && g.3 == name) {
                    Some(g) => {
                        g.0 += kib;
                        g.2 += 1;
                    }
                    None => groups.push((kib, size, 1, name)),
                }
            }
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.0));
    groups
}
