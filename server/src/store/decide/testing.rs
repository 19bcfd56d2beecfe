//! What the decision tests share: a clock, settings, rows and reports.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use tessera_api::{
    Blob, CacheWrite, LogLine, Report, SubtaskSpec, TaskIdentifier, TaskReport, TaskState,
};

use super::*;
use crate::store::StoreConfig;
use crate::store::driver::HeldRow;

pub(super) const NOW: u64 = 1_000_000_000_000;

pub(super) fn config() -> StoreConfig {
    StoreConfig {
        lease: Duration::from_secs(10),
        retry_base: Duration::from_secs(2),
        retry_max: Duration::from_secs(60),
        max_lost: 3,
        max_job_tasks: 1_000_000,
        ..StoreConfig::default()
    }
}

pub(super) fn row(id: &str) -> HeldRow {
    HeldRow {
        tenant: 1,
        id: id.into(),
        job_id: "job".into(),
        parent_id: Some("root".into()),
        cluster: "default".into(),
        path: "00000000.".into(),
        depth: 1,
        state: TaskState::Running,
        lease: 3,
        lease_expires_at: Some(NOW + 1),
        attempt: 3,
        retries_used: 0,
        max_retries: 0,
        job_canceled: false,
        job_failed: false,
        runner: Some("r1".into()),
        lost: 0,
        span_start: Some(NOW - 5),
    }
}

pub(super) fn report(id: &str, report: Report) -> TaskReport {
    TaskReport {
        task_id: id.into(),
        lease: 3,
        report,
    }
}

pub(super) fn computed(subtasks: Vec<SubtaskSpec>) -> Report {
    Report::computed(subtasks)
}

pub(super) fn sub(name: &str, deps: Vec<u32>) -> SubtaskSpec {
    SubtaskSpec {
        identifier: TaskIdentifier::parse(name, "v1.2").unwrap(),
        input: json!({"n": name}),
        display: None,
        depends_on: deps,
        max_retries: 2,
        cluster: None,
    }
}

pub(super) fn failed(reason: &str) -> Report {
    Report::Failed {
        permanent: false,
        reason: reason.into(),
        display: Some("Shown".into()),
    }
}

pub(super) fn decide(batch: &[TaskReport], rows: &[HeldRow]) -> ReportPlan {
    decide_with(batch, rows, &HashMap::new(), &config())
}

/// [`decide`] with jobs' task totals and settings of its own.
pub(super) fn decide_with(
    batch: &[TaskReport],
    rows: &[HeldRow],
    totals: &HashMap<String, u64>,
    config: &StoreConfig,
) -> ReportPlan {
    let mut n = 0;
    reports(
        batch,
        "r1",
        rows,
        totals,
        &HashMap::new(),
        config,
        NOW,
        || {
            n += 1;
            format!("new{n}")
        },
    )
}

pub(super) fn id(name: &str, version: &str) -> TaskIdentifier {
    TaskIdentifier::parse(name, version).unwrap()
}

pub(super) fn with_data(
    subtasks: Vec<SubtaskSpec>,
    output: Option<&[u8]>,
    output_from: Option<u32>,
    cache: Vec<(&str, Option<&[u8]>)>,
) -> Report {
    Report::Computed {
        subtasks,
        display: None,
        progress: vec![],
        output: output.map(|o| Blob(o.to_vec())),
        output_from,
        cache: cache
            .into_iter()
            .map(|(key, value)| CacheWrite {
                key: key.into(),
                value: value.map(|v| Blob(v.to_vec())),
            })
            .collect(),
    }
}

pub(super) fn claimant(tenant: i64, weight: u32, running: u64, room: Option<u64>) -> Claimant {
    Claimant {
        tenant,
        weight,
        running,
        room,
    }
}

pub(super) fn line(job: &str, message: &str) -> LogLine {
    LogLine {
        time_unix_nano: 1,
        level: tessera_api::Level::Info,
        message: message.into(),
        task_id: "t".into(),
        job_id: job.into(),
        runner_id: "r".into(),
        attempt: 1,
        fields: Default::default(),
    }
}
