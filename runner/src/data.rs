//! Job data for attempts, read from the Tessera server: dependencies' outputs and the job
//! cache. Every read is bounded by the server's value limit before it is held.

use async_trait::async_trait;
use tessera_api::{CacheQuery, Client, ClientError};
use tessera_host::{DependencyRef, JobData};

/// Reads one attempt's job data over the server's API.
pub struct ServerData {
    client: Client,
    /// Largest value or output taken, in bytes.
    max_value: u64,
    /// The job's cache version when the task was claimed: cache reads are as of it.
    as_of: u64,
}

impl ServerData {
    /// Reads through `client` as of cache version `as_of`, refusing values larger than
    /// `max_value` bytes.
    pub fn new(client: Client, max_value: u64, as_of: u64) -> Self {
        ServerData {
            client,
            max_value,
            as_of,
        }
    }
}

fn why(e: ClientError) -> String {
    e.to_string()
}

#[async_trait]
impl JobData for ServerData {
    async fn dependencies(&self, _job: &str, task: &str) -> Result<Vec<DependencyRef>, String> {
        let list = self.client.dependencies(task).await.map_err(why)?;
        Ok(list
            .dependencies
            .into_iter()
            .map(|d| DependencyRef {
                index: d.index,
                task_id: d.task_id,
            })
            .collect())
    }

    async fn output(&self, job: &str, task: &str) -> Result<Option<Vec<u8>>, String> {
        let output = self
            .client
            .output(job, Some(task), self.max_value)
            .await
            .map_err(why)?;
        Ok(output.value)
    }

    async fn cache_get(&self, job: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.client
            .cache_value(job, key, self.max_value, Some(self.as_of))
            .await
            .map_err(why)
    }

    async fn cache_list(
        &self,
        job: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, String> {
        let query = CacheQuery {
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            after: after.map(str::to_string),
            limit: Some(limit),
            as_of: Some(self.as_of),
        };
        let page = self.client.cache(job, &query).await.map_err(why)?;
        Ok(page.entries.into_iter().map(|e| e.key).collect())
    }
}
