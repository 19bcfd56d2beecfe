//! Log lines and spans of task attempts (OpenTelemetry's field names).

use serde::{Deserialize, Serialize};

use crate::Level;

/// One log line of a task, as runners send it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// When it was written (ns since the Unix epoch).
    #[serde(deserialize_with = "crate::num::whole")]
    pub time_unix_nano: u64,
    /// Severity.
    pub level: Level,
    /// The message.
    pub message: String,
    /// The task that wrote it.
    pub task_id: String,
    /// Its job (filled in by the server on ingestion when absent).
    #[serde(default)]
    pub job_id: String,
    /// The runner that ran the attempt.
    #[serde(default)]
    pub runner_id: String,
    /// The attempt number.
    #[serde(default)]
    #[serde(deserialize_with = "crate::num::whole")]
    pub attempt: u32,
    /// Structured fields.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// `POST /v1/logs`: a batch of log lines from a runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    /// The lines, any order.
    pub logs: Vec<LogLine>,
}

/// Query of a job's logs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only this task's lines.
    pub task: Option<String>,
    /// Only lines at this level or more severe.
    pub level: Option<Level>,
    /// The `next_cursor` of the previous page.
    #[cfg_attr(feature = "openapi", param(pattern = r"^([0-9]{1,20}:[0-9]{1,20})?$"))]
    pub cursor: Option<String>,
    /// Page size (default 500, at most 5000).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 5000))]
    #[serde(default, deserialize_with = "crate::num::opt_whole")]
    pub limit: Option<u32>,
}

/// A page of log lines in time order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogPage {
    /// The lines.
    pub logs: Vec<LogLine>,
    /// Pass as `cursor` for the next page (also when following: new lines come after it).
    pub next_cursor: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SpanOutcome {
    /// Still running.
    Running,
    /// Computed.
    Computed,
    /// Failed.
    Failed,
    /// Given back by its runner (shutting down); no retry spent.
    Abandoned,
    /// Its lease expired (runner gone); no retry spent.
    Expired,
    /// Its job was canceled while it ran.
    Canceled,
}

/// One task attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Span {
    /// The task's display name (or task name).
    pub name: String,
    /// The task.
    pub task_id: String,
    /// Its job.
    pub job_id: String,
    /// The runner that ran it.
    pub runner_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// Start (ns since the Unix epoch).
    pub start_time_unix_nano: u64,
    /// End, once it ended.
    pub end_time_unix_nano: Option<u64>,
    /// How it ended.
    pub outcome: SpanOutcome,
    /// The failure reason, if it failed.
    pub error: Option<String>,
    /// The component (digest) that ran it: the pinned one on a fleet runner, the file's on a
    /// runner that said which file serves the task type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
}

/// A page of spans in start order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpanPage {
    /// The spans.
    pub spans: Vec<Span>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Query of a job's spans.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct SpanQuery {
    /// Only this task's attempts.
    pub task: Option<String>,
    /// The `next_cursor` of the previous page.
    #[cfg_attr(feature = "openapi", param(pattern = r"^([0-9]{1,20}:[0-9]{1,20})?$"))]
    pub cursor: Option<String>,
    /// Page size (default 1000, at most 5000).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 5000))]
    #[serde(default, deserialize_with = "crate::num::opt_whole")]
    pub limit: Option<u32>,
}
