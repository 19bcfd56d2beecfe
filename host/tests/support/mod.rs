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
