//! Test support: builds guest components from source and collects their log lines.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use tessera_host::{Host, HostConfig, LogRecord, LogSink};

pub use tessera_testkit::{guest, shared_cache};

/// A host with the shared cache and a small pool (tests may share one process).
pub fn host() -> Host {
    host_for(64)
}

/// A host with the shared cache and a pool for `instances` attempts at once.
pub fn host_for(instances: u32) -> Host {
    Host::new(HostConfig {
        cache_dir: Some(shared_cache()),
        max_instances: instances,
        ..HostConfig::default()
    })
    .expect("creating the host")
}

/// Collects log lines in memory.
#[derive(Clone, Default)]
pub struct Collect(pub Arc<Mutex<Vec<LogRecord>>>);

impl Collect {
    pub fn lines(&self) -> Vec<LogRecord> {
        self.0.lock().unwrap().clone()
    }

    pub fn messages(&self) -> Vec<String> {
        self.lines().into_iter().map(|r| r.message).collect()
    }

    pub fn sink(&self) -> Arc<dyn LogSink> {
        Arc::new(self.clone())
    }
}

impl LogSink for Collect {
    fn emit(&self, record: LogRecord) {
        self.0.lock().unwrap().push(record);
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS:`, `RssAnon:`, `VmHWM:`), 0 if absent.
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An attempt of task type `name` (v0.0) for the benches: job `bench`, task `t{task}`.
pub fn bench_spec(name: &str, task: usize, input: String) -> tessera_host::AttemptSpec {
    tessera_host::AttemptSpec {
        job_id: "bench".into(),
        task_id: format!("t{task}"),
        attempt: 1,
        identifier: tessera_host::TaskIdentifier::parse(name, "v0.0").unwrap(),
        input,
    }
}

/// Counts "Starting sleep task" lines (the benches' sleepers say they started).
#[derive(Default)]
pub struct CountStarts(pub std::sync::atomic::AtomicUsize);

impl LogSink for CountStarts {
    fn emit(&self, record: LogRecord) {
        if record.message == "Starting sleep task" {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// `n` attempts of `component`'s `SleepTask`, each sleeping `seconds`, started on `rt`; returns
/// once all have logged their start (panicking after `limit`), with how long that took and
/// the attempts.
pub fn start_sleepers(
    rt: &tokio::runtime::Runtime,
    host: &Arc<Host>,
    component: &Arc<tessera_host::TaskComponent>,
    n: usize,
    seconds: u32,
    limit: std::time::Duration,
) -> (
    std::time::Duration,
    Vec<tokio::task::JoinHandle<tessera_host::Outcome>>,
) {
    let limits = tessera_host::Limits::default();
    let starts = Arc::new(CountStarts::default());
    let started = std::time::Instant::now();
    let handles = (0..n)
        .map(|i| {
            let (host, component, limits, starts) = (
                host.clone(),
                component.clone(),
                limits.clone(),
                starts.clone(),
            );
            rt.spawn(async move {
                let input = format!(r#"{{"index":{i},"seconds":{seconds}}}"#);
                let spec = bench_spec("SleepTask", i, input);
                host.run(&component, spec, &limits, starts).await
            })
        })
        .collect();
    while starts.0.load(std::sync::atomic::Ordering::Relaxed) < n {
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            started.elapsed() < limit,
            "{n} sleepers did not all start within {limit:?}"
        );
    }
    (started.elapsed(), handles)
}
