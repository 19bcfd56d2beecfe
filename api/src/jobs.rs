//! Jobs and tasks as the HTTP API shows them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{ProgressUpdate, TaskIdentifier};

/// A job's state, derived from its tasks and its cancel flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Nothing has started.
    Queued,
    /// Something started and the job is not finished.
    Running,
    /// Every task computed.
    Completed,
    /// A task failed with no retries left.
    Failed,
    /// Canceled by a user.
    Canceled,
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for a runner (or for its dependencies, or its retry backoff).
    Queued,
    /// Held by a runner under a lease.
    Running,
    /// Its execute returned Ok.
    Computed,
    /// Failed with no retries left.
    Failed,
    /// Its job was canceled before it ran.
    Canceled,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident = $text:literal),+ }) => {
        impl $ty {
            /// The lowercase name used on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
            /// Every value, in order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(format!(
                        "unknown {} {s:?}: use one of {}",
                        stringify!($ty),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum!(JobState { Queued = "queued", Running = "running", Completed = "completed", Failed = "failed", Canceled = "canceled" });
text_enum!(TaskState { Queued = "queued", Running = "running", Computed = "computed", Failed = "failed", Canceled = "canceled" });

impl JobState {
    /// Whether the job can change no more without a retry.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Canceled
        )
    }
}

/// The root task of a job to submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RootTask {
    /// Which task type.
    pub identifier: TaskIdentifier,
    /// Its input, any JSON value.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub input: serde_json::Value,
    /// How often it may be retried after a failure.
    #[serde(default)]
    #[serde(deserialize_with = "crate::num::whole")]
    pub max_retries: u32,
    /// A display name; defaults to the task name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// `POST /v1/jobs`: submit a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// A name for people, e.g. `parallel-sleep-workflow`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 200,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub name: String,
    /// The root task.
    pub root: RootTask,
    /// The cluster whose runners run it (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 200,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub cluster: Option<String>,
}

/// Task counts of a job by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskCounts {
    /// Queued tasks.
    pub queued: u64,
    /// Running tasks.
    pub running: u64,
    /// Computed tasks.
    pub computed: u64,
    /// Failed tasks.
    pub failed: u64,
    /// Canceled tasks.
    pub canceled: u64,
}

impl TaskCounts {
    /// All tasks of the job.
    pub fn total(&self) -> u64 {
        self.queued + self.running + self.computed + self.failed + self.canceled
    }

    /// The count of one state.
    pub fn get(&self, state: TaskState) -> u64 {
        match state {
            TaskState::Queued => self.queued,
            TaskState::Running => self.running,
            TaskState::Computed => self.computed,
            TaskState::Failed => self.failed,
            TaskState::Canceled => self.canceled,
        }
    }

    /// Adds `n` to one state's count.
    pub fn add(&mut self, state: TaskState, n: u64) {
        match state {
            TaskState::Queued => self.queued += n,
            TaskState::Running => self.running += n,
            TaskState::Computed => self.computed += n,
            TaskState::Failed => self.failed += n,
            TaskState::Canceled => self.canceled += n,
        }
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// UUIDv7, time-ordered.
    pub id: String,
    /// The name it was submitted with.
    pub name: String,
    /// The cluster it runs on.
    pub cluster: String,
    /// Derived from its tasks and its cancel flag.
    pub state: JobState,
    /// Whether a user canceled it.
    pub canceled: bool,
    /// Tasks by state.
    pub task_counts: TaskCounts,
    /// Progress indicators by label.
    pub progress: Vec<ProgressUpdate>,
    /// When it was submitted (ns since the Unix epoch).
    pub submitted_at: u64,
    /// When its first task attempt started.
    pub started_at: Option<u64>,
    /// When its last task attempt ended (once the job is finished).
    pub finished_at: Option<u64>,
    /// The summed duration of every task attempt, in ns.
    pub task_time_ns: u64,
    /// The tenant it belongs to (`default` on a server without tenants).
    #[serde(default)]
    pub tenant: String,
}

/// `GET /v1/jobs`: a page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters for listing jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs whose name contains this text.
    pub name: Option<String>,
    /// Only jobs submitted at or after this time (ns since the Unix epoch).
    #[serde(default, deserialize_with = "crate::num::opt_whole")]
    pub since: Option<u64>,
    /// Only jobs submitted before this time (ns since the Unix epoch).
    #[serde(default, deserialize_with = "crate::num::opt_whole")]
    pub until: Option<u64>,
    /// The `next_cursor` of the previous page: the last job id it listed.
    #[cfg_attr(
        feature = "openapi",
        param(pattern = r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$")
    )]
    pub cursor: Option<String>,
    /// Page size (default 50, at most 500).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500))]
    #[serde(default, deserialize_with = "crate::num::opt_whole")]
    pub limit: Option<u32>,
    /// Only jobs of this tenant (for an operator; anyone else sees their own tenant's only).
    pub tenant: Option<String>,
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    /// UUIDv7.
    pub id: String,
    /// Its job.
    pub job_id: String,
    /// Its parent task; absent for the root.
    pub parent_id: Option<String>,
    /// Depth in the tree (the root is 0).
    pub depth: u32,
    /// Its task type.
    pub identifier: TaskIdentifier,
    /// The display name it set, else the task name.
    pub display: String,
    /// Its state.
    pub state: TaskState,
    /// Its input.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub input: serde_json::Value,
    /// Ids of tasks that must complete before it runs.
    pub depends_on: Vec<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Retries spent.
    pub retries_used: u32,
    /// Retries allowed.
    pub max_retries: u32,
    /// The cluster that runs it.
    pub cluster: String,
    /// The runner holding it, while running.
    pub runner_id: Option<String>,
    /// Why its last attempt failed.
    pub error: Option<String>,
    /// How many subtasks it has.
    pub children: u64,
    /// Whether it and all its descendants are computed.
    pub completed: bool,
    /// When it was created (ns).
    pub created_at: u64,
    /// When its first attempt started (ns).
    pub started_at: Option<u64>,
    /// When it reached a final state (ns).
    pub finished_at: Option<u64>,
    /// The deployed component (digest) its job pinned for its task type, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
}

/// `GET /v1/jobs/{id}/tasks`: a page of a job's tasks, depth-first from the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Query of a job's tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Only the direct children of this task (the console expands the tree with it).
    pub parent: Option<String>,
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (default 100, at most 1000).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    #[serde(default, deserialize_with = "crate::num::opt_whole")]
    pub limit: Option<u32>,
}

/// A job's progress indicators summed, keyed by label (helper for clients).
pub fn progress_map(progress: &[ProgressUpdate]) -> BTreeMap<&str, (u64, u64)> {
    progress
        .iter()
        .map(|p| (p.label.as_str(), (p.done, p.total)))
        .collect()
}
