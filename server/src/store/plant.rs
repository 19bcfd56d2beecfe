//! Rows put in any state directly, for tests (River's `testfactory`): a test gets a task where it
//! needs it — running under a lease that expired, failed with its retries spent, computed with
//! open children — without walking submit → claim → report. Behind the `testing` feature;
//! `tessera_server::testing::factory` builds these. The job's kept counts are added as for any change,
//! so a planted job passes [`super::Store::audit`].

use tessera_api::{TaskIdentifier, TaskState};

/// A job to plant with its tasks.
#[derive(Debug, Clone)]
pub struct PlantedJob {
    pub id: String,
    pub name: String,
    pub cluster: String,
    pub canceled: bool,
    pub failed: bool,
    pub submitted_at: u64,
    /// Set when every task of the job is completed.
    pub completed_at: Option<u64>,
    /// Its tasks, parents before children; the first is the root.
    pub tasks: Vec<PlantedTask>,
}

/// A task row with every column chosen. A running task that started gets an open span for its
/// attempt.
#[derive(Debug, Clone)]
pub struct PlantedTask {
    pub id: String,
    pub parent_id: Option<String>,
    /// Its position in the job's tree: [`child_path`] of its parent's.
    pub path: String,
    pub depth: u32,
    pub identifier: TaskIdentifier,
    pub input: serde_json::Value,
    pub display: Option<String>,
    pub cluster: String,
    pub state: TaskState,
    /// Ids of earlier siblings it waits for, and how many of them are not completed yet.
    pub depends_on: Vec<String>,
    pub pending_deps: u32,
    /// Subtasks it submitted, and how many of them are not completed yet.
    pub children: u64,
    pub open_children: u64,
    pub completed: bool,
    pub attempt: u32,
    pub lease: u64,
    pub runner: Option<String>,
    pub lease_expires_at: Option<u64>,
    pub retries_used: u32,
    pub max_retries: u32,
    pub lost: u32,
    pub not_before: u64,
    pub error: Option<String>,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
}

/// The path of a parent's `index`-th child (the root's path is empty).
pub fn child_path(parent: &str, index: usize) -> String {
    format!("{parent}{}", super::encode::path_segment(index))
}
