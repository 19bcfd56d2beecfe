//! What a successful task attempt hands back: subtasks and progress.

use serde::{Deserialize, Serialize};

use crate::TaskIdentifier;

/// A subtask submitted by a task attempt, recorded when the attempt succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubtaskSpec {
    /// Which task type runs it.
    pub identifier: TaskIdentifier,
    /// Its input, a JSON value.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub input: serde_json::Value,
    /// A name for people; defaults to the task name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// Indexes of earlier subtasks of the same attempt that must complete first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(deserialize_with = "crate::num::vec_whole")]
    pub depends_on: Vec<u32>,
    /// How often it may be retried after a failure.
    #[serde(default)]
    #[serde(deserialize_with = "crate::num::whole")]
    pub max_retries: u32,
    /// The cluster that runs it; `None` means the parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// Increments to a named progress indicator of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProgressUpdate {
    /// The indicator's name, e.g. `tiles`.
    pub label: String,
    /// Units done.
    #[serde(deserialize_with = "crate::num::whole")]
    pub done: u64,
    /// Units in all.
    #[serde(deserialize_with = "crate::num::whole")]
    pub total: u64,
}
