//! The runner protocol: claim, complete, fail, abandon, extend, outlook.

use serde::{Deserialize, Serialize};

use crate::{Blob, CacheWrite, ProgressUpdate, SubtaskSpec, TaskIdentifier};

/// Work a runner asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The runner's id (any stable string; a UUID is typical).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub runner_id: String,
    /// The cluster it serves.
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 200,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub cluster: String,
    /// The task types (with versions) it can run.
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub identifiers: Vec<TaskIdentifier>,
    /// At most this many tasks.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    #[serde(deserialize_with = "crate::num::whole")]
    pub max: u32,
    /// Wait up to this long for work before answering empty (long-poll), in ms.
    #[serde(default)]
    #[serde(deserialize_with = "crate::num::whole")]
    #[cfg_attr(feature = "openapi", schema(maximum = 60000))]
    pub wait_ms: u64,
    /// Answer empty as soon as the runner's outlook shows no work at all (run-all runners
    /// use it to exit the moment their job finishes).
    #[serde(default)]
    pub return_when_idle: bool,
    /// The digest (`sha256:…`) of the component file serving each of `identifiers`, in the
    /// same order, so that spans name the code that ran. Informational: ignored unless it
    /// gives one well-formed digest per identifier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_items = 1000, inline, value_type = Vec<String>)
    )]
    pub digests: Vec<String>,
    /// A fleet runner: it serves every task with a deployed component (fetched by digest)
    /// instead of `identifiers`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deployed: bool,
    /// The machine it runs on, for `tessera runners list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")
    )]
    pub host: Option<String>,
    /// How many attempts it runs at once, for `tessera runners list`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::num::opt_whole"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100000))]
    pub concurrency: Option<u32>,
    /// The wasmtime version its sandbox embeds (e.g. `48.0.10`), for `tessera runners list`:
    /// an operator checks the fleet against wasmtime's security advisories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 50, pattern = r"^[0-9A-Za-z.+-]+$")
    )]
    pub wasmtime: Option<String>,
}

/// Whether a runner's stated wasmtime version has a version's shape (1 to 50 characters of
/// digits, letters, `.`, `+` and `-`).
pub fn is_version_text(text: &str) -> bool {
    (1..=50).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
}

/// A task handed to a runner under a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedTask {
    /// The task.
    pub task_id: String,
    /// Its job.
    pub job_id: String,
    /// Its task type as submitted.
    pub identifier: TaskIdentifier,
    /// The display name its parent gave it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// Its input.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub input: serde_json::Value,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The lease token (fencing): random, below 2^53, new at every claim and shown nowhere
    /// else; quote it, with this runner's id, in every report and extension of this attempt.
    pub lease: u64,
    /// How long the lease lasts unless extended, in ms.
    pub lease_ms: u64,
    /// The deployed component to run it with (its digest), for a fleet runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The job's cache version when the task was claimed: the attempt reads the cache as of
    /// it (`as_of`), so it sees what committed before it started plus its own writes.
    #[serde(default)]
    pub cache_seq: u64,
    /// The most linear memory this attempt may use, in MiB, if its tenant sets a ceiling:
    /// the host enforces the lower of this and its own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
    /// The longest this attempt may run, in ms, if its tenant sets a ceiling: the host
    /// enforces the lower of this and its own deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// Tasks handed out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    /// Possibly empty when the wait ran out.
    pub tasks: Vec<ClaimedTask>,
}

/// How an attempt ended, as its runner reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Report {
    /// `execute` returned Ok: record the subtasks with the task's success.
    Computed {
        /// Subtasks submitted by the attempt.
        #[serde(default)]
        subtasks: Vec<SubtaskSpec>,
        /// The display name set by the attempt.
        #[serde(default)]
        display: Option<String>,
        /// Progress increments.
        #[serde(default)]
        progress: Vec<ProgressUpdate>,
        /// The task's output (base64), which the tasks depending on it read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
        output: Option<Blob>,
        /// The position among `subtasks` of the subtask whose output becomes this task's
        /// once it computes (instead of `output`).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::num::opt_whole"
        )]
        output_from: Option<u32>,
        /// The attempt's job-cache writes and deletes, in the order it made them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cache: Vec<CacheWrite>,
    },
    /// The attempt failed: retry with backoff while retries remain.
    Failed {
        /// Why, for people.
        reason: String,
        /// The display name set by the attempt.
        #[serde(default)]
        display: Option<String>,
        /// No retry can fix it (the guest said so): fail the task at once.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        permanent: bool,
    },
    /// The runner gave the task back (shutting down): requeue without spending a retry.
    Abandoned,
    /// The attempt stopped because its job was canceled.
    Canceled,
}

impl Report {
    /// An attempt that computed with `subtasks` and nothing else: no output, no cache writes,
    /// no progress, its display name unchanged.
    pub fn computed(subtasks: Vec<SubtaskSpec>) -> Report {
        Report::Computed {
            subtasks,
            display: None,
            progress: vec![],
            output: None,
            output_from: None,
            cache: vec![],
        }
    }
}

/// One report about one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskReport {
    /// The task.
    pub task_id: String,
    /// The lease token from the claim.
    #[serde(deserialize_with = "crate::num::whole")]
    pub lease: u64,
    /// How the attempt ended.
    pub report: Report,
}

/// `POST /v1/runner/report`: reports, and optionally the next claim in the same round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// The reporting runner.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub runner_id: String,
    /// The reports.
    pub reports: Vec<TaskReport>,
    /// Claim more work after recording the reports.
    #[serde(default)]
    pub claim: Option<ClaimRequest>,
}

/// The verdict on one report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportResult {
    /// The task.
    pub task_id: String,
    /// Whether it was recorded.
    pub accepted: bool,
    /// Why not, if refused (for example an expired lease).
    pub error: Option<String>,
}

/// Answer to a report request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportResponse {
    /// One result per report, in order.
    pub results: Vec<ReportResult>,
    /// Newly claimed tasks, if a claim was asked for.
    pub tasks: Vec<ClaimedTask>,
}

/// A lease to extend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRef {
    /// The task.
    pub task_id: String,
    /// The lease token.
    #[serde(deserialize_with = "crate::num::whole")]
    pub lease: u64,
}

/// `POST /v1/runner/extend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// The runner.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub runner_id: String,
    /// The leases it holds.
    pub leases: Vec<LeaseRef>,
}

/// The verdict on one lease extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseStatus {
    /// The task.
    pub task_id: String,
    /// Whether the lease is still held (false: stop the attempt, its result will be refused).
    pub held: bool,
    /// Whether the task's job was canceled (stop the attempt and report `canceled`).
    pub canceled: bool,
    /// How long the lease now lasts, in ms.
    pub lease_ms: u64,
}

/// Answer to an extend request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExtendResponse {
    /// One status per lease, in order.
    pub leases: Vec<LeaseStatus>,
}

/// A runner the servers have heard from: what it asked for when it last claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunnerInfo {
    /// Its id.
    pub id: String,
    /// The cluster it serves.
    pub cluster: String,
    /// The task types (with versions) it serves.
    pub identifiers: Vec<TaskIdentifier>,
    /// Its first claim (ns since the Unix epoch).
    pub first_seen: u64,
    /// Its latest claim, to within 10 s (ns since the Unix epoch).
    pub last_seen: u64,
    /// Whether it serves deployed components (a fleet runner) rather than files.
    #[serde(default)]
    pub deployed: bool,
    /// The machine it runs on, as it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Attempts it runs at once, as it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// The wasmtime version its sandbox embeds, as it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasmtime: Option<String>,
    /// Tasks it holds under lease now.
    #[serde(default)]
    pub running: u64,
}

/// `GET /v1/runners`: the runners seen in the last five minutes, most recent first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunnerList {
    /// The runners.
    pub runners: Vec<RunnerInfo>,
}

/// Queued tasks of one kind that no runner seen lately could run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unserved {
    /// Their cluster.
    pub cluster: String,
    /// Their task type and version.
    pub identifier: TaskIdentifier,
    /// How many are queued and ready.
    pub queued: u64,
    /// Why none runs, for people: who was seen, serving what.
    pub reason: String,
}

/// `GET /v1/jobs/{id}/unserved`: a job's ready queued tasks that no runner seen in the last
/// five minutes could run, by kind. Empty when every kind has a runner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnservedList {
    /// One entry per cluster and task type.
    pub tasks: Vec<Unserved>,
}

/// `POST /v1/runner/outlook`: is there work this runner could ever do?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OutlookRequest {
    /// The cluster it serves.
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 200,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
        )
    )]
    pub cluster: String,
    /// The task types it can run.
    pub identifiers: Vec<TaskIdentifier>,
    /// A fleet runner: it can run every task with a deployed component.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deployed: bool,
}

/// Answer to an outlook request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Outlook {
    /// Queued tasks it could run (some may wait for dependencies or a retry backoff).
    pub queued: u64,
    /// Running tasks of its cluster (any may still submit subtasks).
    pub running: u64,
}

impl Outlook {
    /// Whether a run-all runner should keep going.
    pub fn has_work(&self) -> bool {
        self.queued > 0 || self.running > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_shaped_text_passes_for_a_runners_wasmtime() {
        for good in ["48.0.10", "49.0.0-rc.1", "48.0.10+local"] {
            assert!(is_version_text(good), "{good}");
        }
        for bad in ["", "48.0.10\n", "48 0 10", "\u{1b}[31m", &"9".repeat(51)] {
            assert!(!is_version_text(bad), "{bad:?}");
        }
    }

    #[test]
    fn reports_round_trip_through_json() {
        let r = TaskReport {
            task_id: "t".into(),
            lease: 3,
            report: Report::Failed {
                permanent: false,
                reason: "boom".into(),
                display: None,
            },
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["report"]["outcome"], "failed");
        assert!(
            json["report"].get("permanent").is_none(),
            "false is left out"
        );
        assert_eq!(serde_json::from_value::<TaskReport>(json).unwrap(), r);
        let permanent: TaskReport = serde_json::from_str(
            r#"{"task_id":"t","lease":1,"report":{"outcome":"failed","reason":"x","permanent":true}}"#,
        )
        .unwrap();
        assert!(matches!(
            permanent.report,
            Report::Failed {
                permanent: true,
                ..
            }
        ));
        let abandoned: TaskReport =
            serde_json::from_str(r#"{"task_id":"t","lease":1,"report":{"outcome":"abandoned"}}"#)
                .unwrap();
        assert_eq!(abandoned.report, Report::Abandoned);
    }
}
