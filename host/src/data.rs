//! Where an attempt reads data between tasks from: the outputs of the tasks it depends on and
//! its job's cache. A runner reads them from the Tessera server; tests and local runs use
//! [`MemoryJobData`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

/// A task this task depends on, as the host hands it to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyRef {
    /// Its position among its parent's subtasks (the parent's handle).
    pub index: u32,
    /// Its id.
    pub task_id: String,
}

/// Reads committed job data for attempts. Errors are messages for people (the guest sees them
/// as `unavailable`).
#[async_trait]
pub trait JobData: Send + Sync {
    /// The tasks `task_id` depends on, in the order its parent listed them.
    async fn dependencies(&self, job_id: &str, task_id: &str)
    -> Result<Vec<DependencyRef>, String>;
    /// A task's output; `None` if it returned none.
    async fn output(&self, job_id: &str, task_id: &str) -> Result<Option<Vec<u8>>, String>;
    /// A cache value; `None` if the key has none.
    async fn cache_get(&self, job_id: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Up to `limit` keys beginning with `prefix` and after `after`, in byte order.
    async fn cache_list(
        &self,
        job_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, String>;
}

/// No job data at all: every read is unavailable (an attempt run without a server).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJobData;

const NO_DATA: &str = "this attempt runs without a Tessera server, so it has no job data to read";

#[async_trait]
impl JobData for NoJobData {
    async fn dependencies(&self, _: &str, _: &str) -> Result<Vec<DependencyRef>, String> {
        Err(NO_DATA.into())
    }
    async fn output(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, String> {
        Err(NO_DATA.into())
    }
    async fn cache_get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, String> {
        Err(NO_DATA.into())
    }
    async fn cache_list(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: u32,
    ) -> Result<Vec<String>, String> {
        Err(NO_DATA.into())
    }
}

/// Job data held in memory: what tests and local runs give attempts to read.
#[derive(Debug, Default)]
pub struct MemoryJobData {
    /// Each task's dependencies.
    pub dependencies: Mutex<HashMap<String, Vec<DependencyRef>>>,
    /// Outputs of computed tasks (`None`: it returned none).
    pub outputs: Mutex<HashMap<String, Option<Vec<u8>>>>,
    /// Cache entries by job and key.
    pub cache: Mutex<BTreeMap<(String, String), Vec<u8>>>,
}

#[async_trait]
impl JobData for MemoryJobData {
    async fn dependencies(&self, _: &str, task_id: &str) -> Result<Vec<DependencyRef>, String> {
        Ok(self
            .dependencies
            .lock()
            .unwrap()
            .get(task_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn output(&self, _: &str, task_id: &str) -> Result<Option<Vec<u8>>, String> {
        match self.outputs.lock().unwrap().get(task_id) {
            Some(output) => Ok(output.clone()),
            None => Err(format!("task {task_id} has not computed")),
        }
    }

    async fn cache_get(&self, job_id: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let cache = self.cache.lock().unwrap();
        Ok(cache.get(&(job_id.to_string(), key.to_string())).cloned())
    }

    async fn cache_list(
        &self,
        job_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, String> {
        let cache = self.cache.lock().unwrap();
        Ok(cache
            .keys()
            .filter(|(job, key)| {
                job == job_id && key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a)
            })
            .map(|(_, key)| key.clone())
            .take(limit as usize)
            .collect())
    }
}
