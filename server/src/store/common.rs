//! Pieces every store implementation shares: ids, encodings of enums, validation, cursors.

use tessera_api::{JobState, Level, SpanOutcome, SubtaskSpec, TaskIdentifier, TaskState};

use super::{StoreConfig, StoreError, check_name};

/// A new UUIDv7, time-ordered.
pub(super) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A level as a number that orders by severity.
pub(super) fn level_rank(level: Level) -> i64 {
    level as i64
}

/// The level of a stored number.
pub(super) fn rank_level(rank: i64) -> Level {
    match rank {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        _ => Level::Error,
    }
}

/// A task state from its stored text.
pub(super) fn state_of(text: &str) -> TaskState {
    text.parse().unwrap_or(TaskState::Failed)
}

/// A span outcome as stored.
pub(super) fn outcome_str(o: SpanOutcome) -> &'static str {
    match o {
        SpanOutcome::Running => "running",
        SpanOutcome::Computed => "computed",
        SpanOutcome::Failed => "failed",
        SpanOutcome::Abandoned => "abandoned",
        SpanOutcome::Expired => "expired",
        SpanOutcome::Canceled => "canceled",
    }
}

/// A span outcome from its stored text.
pub(super) fn outcome_of(text: &str) -> SpanOutcome {
    match text {
        "running" => SpanOutcome::Running,
        "computed" => SpanOutcome::Computed,
        "abandoned" => SpanOutcome::Abandoned,
        "expired" => SpanOutcome::Expired,
        "canceled" => SpanOutcome::Canceled,
        _ => SpanOutcome::Failed,
    }
}

/// The lease length in ms, as runners are told.
pub(super) fn lease_ms(config: &StoreConfig) -> u64 {
    config.lease.as_millis() as u64
}

/// A duration in ns.
pub(super) fn nanos(d: std::time::Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// The task columns [`super::sqlite`] reads, in its row order.
pub(super) const TASK_COLUMNS: &str = "id, job_id, parent_id, depth, name, major, minor, input, display, \
    state, depends_on, attempt, retries_used, max_retries, cluster, lease_runner, error, \
    children, completed, created_at, started_at, finished_at, path";

/// Why a set of subtasks is malformed, if it is.
pub(super) fn check_subtasks(subtasks: &[SubtaskSpec]) -> Option<String> {
    for (i, s) in subtasks.iter().enumerate() {
        if let Some(&d) = s.depends_on.iter().find(|&&d| d as usize >= i) {
            return Some(format!(
                "subtask {i} depends on {d}, which is not an earlier subtask of the same attempt"
            ));
        }
        if let Some(c) = &s.cluster
            && let Err(e) = check_name("cluster", c)
        {
            return Some(format!("subtask {i}: {e}"));
        }
        if let Err(e) = TaskIdentifier::new(s.identifier.name.clone(), s.identifier.version) {
            return Some(format!("subtask {i}: {e}"));
        }
    }
    None
}

/// Reads a `TIME:ID` page cursor.
pub(super) fn split_cursor(cursor: &str) -> Result<(u64, i64), StoreError> {
    cursor
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "cursor {cursor:?} is not valid: pass the next_cursor of the previous page"
            ))
        })
}

/// A job's state from its flags, as [`JOB_STATE_SQL`] derives it in SQL.
pub(super) fn derive_state(
    canceled: bool,
    failed: bool,
    completed: bool,
    started: bool,
) -> JobState {
    if canceled {
        JobState::Canceled
    } else if failed {
        JobState::Failed
    } else if completed {
        JobState::Completed
    } else if started {
        JobState::Running
    } else {
        JobState::Queued
    }
}

/// The path segment of the `i`-th child: fixed width so that text order is tree order.
pub(super) fn path_segment(i: usize) -> String {
    format!("{i:08x}.")
}

/// SQL for the derived job state, matching [`derive_state`].
pub(super) const JOB_STATE_SQL: &str = "CASE WHEN canceled THEN 'canceled' WHEN failed THEN 'failed' \
    WHEN completed_at IS NOT NULL THEN 'completed' WHEN started_at IS NOT NULL THEN 'running' \
    ELSE 'queued' END";

/// A running task as a report finds it, once its lease is checked.
pub(super) struct Held {
    pub(super) job_id: String,
    pub(super) cluster: String,
    pub(super) path: String,
    pub(super) depth: u32,
    pub(super) attempt: u32,
    pub(super) retries_used: u32,
    pub(super) max_retries: u32,
    pub(super) job_canceled: bool,
}

/// Whether `lease` still holds a task found `state` under lease `current`, expiring at
/// `expires`, at `now` (fencing); the error says why not.
pub(super) fn check_lease(
    task_id: &str,
    lease: u64,
    now: u64,
    state: &str,
    current: u64,
    expires: Option<u64>,
) -> Result<(), String> {
    if state != "running" || current != lease {
        return Err(format!(
            "lease {lease} on task {task_id} is no longer held (the task is {state} under lease \
             {current}); the result of this attempt was discarded"
        ));
    }
    if expires.is_some_and(|e| e < now) {
        return Err(format!(
            "lease {lease} on task {task_id} expired before the report arrived; the task will run again"
        ));
    }
    Ok(())
}

/// What a failed attempt leads to.
pub(super) enum AfterFailure {
    /// The job was canceled meanwhile: the task is canceled.
    Canceled,
    /// Retries remain: queued again, claimable from `not_before`.
    Retry {
        /// When the backoff ends (ns).
        not_before: u64,
    },
    /// No retries left: the task fails, and so does its job.
    Failed,
}

impl Held {
    /// What this task's failure at `now` leads to.
    pub(super) fn after_failure(&self, config: &StoreConfig, now: u64) -> AfterFailure {
        if self.job_canceled {
            AfterFailure::Canceled
        } else if self.retries_used < self.max_retries {
            AfterFailure::Retry {
                not_before: now + nanos(config.backoff(self.retries_used)),
            }
        } else {
            AfterFailure::Failed
        }
    }
}
