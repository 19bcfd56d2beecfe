//! Reports: a batch of attempt reports turned into one plan of transitions, subtasks, outputs,
//! cache writes, progress, failures and wake-ups.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tessera_api::{
    Blob, CacheWrite, Level, LogLine, Report, ReportResult, SpanOutcome, SubtaskSpec, TaskReport,
    TaskState,
};

use super::*;
use crate::store::driver::{
    AddProgress, CacheSet, CompletedRow, ErrorText, HeldRow, NewTask, PutOutput, SetState, SpanEnd,
};
use crate::store::encode::{nanos, path_segment};
use crate::store::{Scope, StoreConfig};
use tessera_api::limits;

/// Everything one batch of reports changes.
#[derive(Debug, Default)]
pub(crate) struct ReportPlan {
    /// One verdict per report, in order.
    pub results: Vec<ReportResult>,
    /// Subtasks to insert.
    pub tasks: Vec<NewTask>,
    /// Transitions of the reported tasks.
    pub states: Vec<SetState>,
    /// Progress to add, one entry per job and label.
    pub progress: Vec<AddProgress>,
    /// Jobs that fail with this batch.
    pub failed_jobs: Vec<String>,
    /// Why the queued tasks of each failing job will not run (the first failure of the batch):
    /// they are canceled with this as their error.
    pub not_run: BTreeMap<String, String>,
    /// Log lines to add: one at ERROR for every failed attempt, with its reason.
    pub logs: Vec<LogLine>,
    /// Tasks computed without subtasks, completed by their own transition
    /// ([`SetState::complete`]): completion walks up from them.
    pub completed: Vec<CompletedRow>,
    /// What the plan changes in its jobs' kept counts (before its spans are ended).
    pub tallies: Tallies,
    /// The wake-up keys ([`crate::store::scope::key`]: tenant and cluster) whose waiting claims should
    /// look again: a task became claimable there (or
    /// will when its retry backoff ends), or a job there ended, so that a runner told to exit
    /// when idle finds out now, not when its long poll runs out.
    pub claimable_in: BTreeSet<String>,
    /// Outputs of computed tasks.
    pub outputs: Vec<PutOutput>,
    /// Job-cache writes of computed tasks, the last per job and key.
    pub cache: Vec<CacheSet>,
}

impl ReportPlan {
    /// Whether anything was accepted (and so claimable work may have changed).
    pub(crate) fn changed(&self) -> bool {
        self.results.iter().any(|r| r.accepted)
    }

    /// Whose claims to wake once the plan is applied. A completed task may release tasks
    /// that depend on it, in any cluster, which only the database knows: then everyone.
    pub(crate) fn scope(&self) -> Scope {
        if !self.changed() {
            Scope::Nothing
        } else if !self.completed.is_empty() {
            Scope::Everyone
        } else if self.claimable_in.is_empty() {
            Scope::Nothing
        } else {
            Scope::Clusters(self.claimable_in.iter().cloned().collect())
        }
    }
}

/// The tallies of a plan's transitions and new tasks, over the rows they start from.
pub(super) fn tally(plan: &mut ReportPlan, rows: &HashMap<&str, &HeldRow>) {
    let mut tallies = Tallies::default();
    for s in &plan.states {
        if let Some(row) = rows.get(s.id.as_str()) {
            tallies.shift(&row.job_id, row.state, s.state, 1);
            if let (Some(end), Some(start)) = (&s.span, row.span_start) {
                tallies.ended(&row.job_id, end.at.saturating_sub(start), end.at);
            }
        }
    }
    for t in &plan.tasks {
        tallies.add(&t.job_id, t.state, 1);
    }
    plan.tallies = tallies;
}

/// The jobs whose task totals a batch needs: those of reports that add subtasks.
pub(crate) fn jobs_growing<'a>(reports: &[TaskReport], rows: &'a [HeldRow]) -> Vec<&'a str> {
    let rows: HashMap<&str, &HeldRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut jobs: Vec<&str> = reports
        .iter()
        .filter(|r| matches!(&r.report, Report::Computed { subtasks, .. } if !subtasks.is_empty()))
        .filter_map(|r| rows.get(r.task_id.as_str()).map(|row| row.job_id.as_str()))
        .collect();
    jobs.sort_unstable();
    jobs.dedup();
    jobs
}

/// How many subtasks the batch's computed reports on tasks of `tenant` submit.
pub(crate) fn subtasks_of(
    reports: &[TaskReport],
    rows: &[HeldRow],
    tenant: crate::store::TenantId,
) -> u64 {
    let rows: HashMap<&str, &HeldRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    reports
        .iter()
        .filter(|r| {
            rows.get(r.task_id.as_str())
                .is_some_and(|row| row.tenant == tenant)
        })
        .map(|r| match &r.report {
            Report::Computed { subtasks, .. } => subtasks.len() as u64,
            _ => 0,
        })
        .sum()
}

/// Decides a batch of reports from `runner` over the rows of the tasks they name (locked by
/// the caller) and the task totals of the jobs that grow ([`jobs_growing`]). Each report is
/// accepted or refused on its own; `new_id` names new subtasks.
/// `room` holds, for the tenants of growing jobs that have a quota of queued tasks, how
/// many more they may queue and the quota.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reports(
    reports: &[TaskReport],
    runner: &str,
    rows: &[HeldRow],
    totals: &HashMap<String, u64>,
    room: &HashMap<crate::store::TenantId, (u64, u64)>,
    config: &StoreConfig,
    now: u64,
    mut new_id: impl FnMut() -> String,
) -> ReportPlan {
    let mut added: BTreeMap<String, u64> = BTreeMap::new();
    let mut queued: HashMap<crate::store::TenantId, u64> = HashMap::new();
    let rows: HashMap<&str, &HeldRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut plan = ReportPlan::default();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut progress: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut cache: BTreeMap<(String, String), Option<Vec<u8>>> = BTreeMap::new();
    for report in reports {
        let task = report.task_id.as_str();
        let verdict = if !seen.insert(task) {
            Err(LeaseRefusal::ReportedTwice { task: task.into() })
        } else {
            match rows.get(task) {
                None => Err(LeaseRefusal::NoSuchTask { task: task.into() }),
                Some(row) => check_lease(row, runner, report.lease, now).map(|()| *row),
            }
        };
        plan.results.push(ReportResult {
            task_id: task.to_string(),
            accepted: verdict.is_ok(),
            error: verdict.as_ref().err().map(ToString::to_string),
        });
        let Ok(row) = verdict else { continue };
        match &report.report {
            Report::Computed {
                subtasks,
                display,
                progress: updates,
                output,
                output_from,
                cache: writes,
            } => {
                if let Some(why) = check_subtasks(subtasks, config.max_input_bytes) {
                    let reason = format!("the attempt submitted invalid subtasks: {why}");
                    fail(&mut plan, row, reason, display.clone(), config, now, false);
                    continue;
                }
                if let Some(reason) = check_data(output.as_ref(), writes, config) {
                    fail(&mut plan, row, reason, display.clone(), config, now, false);
                    continue;
                }
                if let Some(i) = output_from
                    && *i as usize >= subtasks.len()
                {
                    let reason = format!(
                        "the attempt took its output from subtask {i}, but it submitted {}",
                        subtasks.len()
                    );
                    fail(&mut plan, row, reason, display.clone(), config, now, false);
                    continue;
                }
                if !subtasks.is_empty() {
                    let before = totals
                        .get(&row.job_id)
                        .copied()
                        .unwrap_or(0)
                        .saturating_add(added.get(&row.job_id).copied().unwrap_or(0));
                    let after = before.saturating_add(subtasks.len() as u64);
                    if after > config.max_job_tasks {
                        let reason = format!(
                            "the attempt's {} subtasks would give its job {after} tasks, more than \
                             the {} a job may have (the server's --max-job-tasks)",
                            subtasks.len(),
                            config.max_job_tasks
                        );
                        fail(&mut plan, row, reason, display.clone(), config, now, false);
                        continue;
                    }
                    let n = subtasks.len() as u64;
                    let so_far = queued.get(&row.tenant).copied().unwrap_or(0);
                    if let Some(&(left, quota)) = room.get(&row.tenant)
                        && so_far.saturating_add(n) > left
                    {
                        let reason = format!(
                            "the attempt's {n} subtasks would pass its tenant's quota of {quota} \
                             queued tasks (queued_tasks; {} queued now): nothing of the attempt \
                             was kept; it runs again, or ask the operator to raise the quota",
                            quota.saturating_sub(left)
                        );
                        fail(&mut plan, row, reason, display.clone(), config, now, false);
                        continue;
                    }
                    *queued.entry(row.tenant).or_default() += n;
                    *added.entry(row.job_id.clone()).or_default() += n;
                }
                let display = display
                    .as_deref()
                    .map(|d| limits::cut(d, limits::MAX_DISPLAY_BYTES));
                let rows = subtask_rows(row, subtasks, now, &mut new_id);
                // Past every check: the attempt is accepted, and what it wrote is kept with it.
                for w in writes {
                    cache.insert(
                        (row.job_id.clone(), w.key.clone()),
                        w.value.as_ref().map(|v| v.0.clone()),
                    );
                }
                let source = output_from.map(|i| rows[i as usize].id.clone());
                if source.is_some() || output.is_some() {
                    plan.outputs.push(PutOutput {
                        task_id: row.id.clone(),
                        value: if source.is_some() {
                            None
                        } else {
                            output.as_ref().map(|o| o.0.clone())
                        },
                        source,
                    });
                }
                plan.claimable_in.extend(
                    rows.iter()
                        .filter(|t| t.state == TaskState::Queued && t.depends_on.is_empty())
                        .map(|t| crate::store::scope::key(t.tenant, &t.cluster)),
                );
                plan.tasks.extend(rows);
                plan.states.push(SetState {
                    display: display.clone(),
                    children: Some(subtasks.len() as u64),
                    finished_at: Some(now),
                    error: ErrorText::Clear,
                    complete: subtasks.is_empty(),
                    span: span(row, SpanOutcome::Computed, None, now),
                    ..transition(row, TaskState::Computed)
                });
                for p in updates.iter().take(limits::MAX_PROGRESS_LABELS) {
                    let label = limits::cut(&p.label, limits::MAX_LABEL_BYTES);
                    let sum = progress.entry((row.job_id.clone(), label)).or_default();
                    sum.0 = sum.0.saturating_add(p.done);
                    sum.1 = sum.1.saturating_add(p.total);
                }
                if subtasks.is_empty() {
                    plan.completed.push(CompletedRow {
                        id: row.id.clone(),
                        parent_id: row.parent_id.clone(),
                        job_id: row.job_id.clone(),
                    });
                }
            }
            Report::Failed {
                reason,
                display,
                permanent,
            } => {
                let (reason, display) = (reason.clone(), display.clone());
                fail(&mut plan, row, reason, display, config, now, *permanent);
            }
            // A cancellation nobody asked for gives the task back like an abandon.
            Report::Canceled if row.job_canceled => {
                plan.states.push(SetState {
                    finished_at: Some(now),
                    span: span(row, SpanOutcome::Canceled, None, now),
                    ..transition(row, TaskState::Canceled)
                });
            }
            Report::Abandoned | Report::Canceled => {
                if !row.job_canceled {
                    plan.claimable_in
                        .insert(crate::store::scope::key(row.tenant, &row.cluster));
                }
                // So that the task's log says why attempt N + 1 follows (or why none does).
                let message = if row.job_canceled {
                    format!("attempt {} stopped: its job was canceled", row.attempt)
                } else {
                    format!(
                        "attempt {} was abandoned by its runner (it stopped before the attempt \
                         finished); the task runs again without spending a retry",
                        row.attempt
                    )
                };
                plan.logs.push(attempt_line(row, Level::Warn, message, now));
                plan.states.push(SetState {
                    span: span(row, SpanOutcome::Abandoned, None, now),
                    ..requeue(row, now)
                });
            }
        }
    }
    tally(&mut plan, &rows);
    plan.cache = cache
        .into_iter()
        .map(|((job_id, key), value)| CacheSet {
            job_id,
            key,
            value,
            seq: 0,
        })
        .collect();
    plan.progress = progress
        .into_iter()
        .map(|((job_id, label), (done, total))| AddProgress {
            job_id,
            label,
            done,
            total,
        })
        .collect();
    plan
}

/// A transition of `row` to `state` that changes nothing else.
pub(super) fn transition(row: &HeldRow, state: TaskState) -> SetState {
    SetState {
        id: row.id.clone(),
        state,
        error: ErrorText::Keep,
        display: None,
        children: None,
        spend_retry: false,
        not_before: None,
        finished_at: None,
        lost: 0,
        complete: false,
        span: None,
    }
}

/// Whether `row`'s job is over (canceled, or failed): its tasks do not run again.
pub(super) fn job_over(row: &HeldRow) -> bool {
    row.job_canceled || row.job_failed
}

/// Back to the queue without spending a retry (canceled if its job was canceled or failed).
pub(super) fn requeue(row: &HeldRow, now: u64) -> SetState {
    if job_over(row) {
        SetState {
            finished_at: Some(now),
            ..transition(row, TaskState::Canceled)
        }
    } else {
        transition(row, TaskState::Queued)
    }
}

/// How the attempt's span ends at `now`, if the row has one open (its name is the task's
/// display name, which the same transition sets).
pub(super) fn span(
    row: &HeldRow,
    outcome: SpanOutcome,
    error: Option<String>,
    now: u64,
) -> Option<SpanEnd> {
    row.span_start.map(|_| SpanEnd {
        at: now,
        outcome,
        error,
    })
}

/// A failed attempt: retried with backoff while retries remain (and the failure is not
/// `permanent`), else the task and its job fail.
pub(super) fn fail(
    plan: &mut ReportPlan,
    row: &HeldRow,
    reason: String,
    display: Option<String>,
    config: &StoreConfig,
    now: u64,
    permanent: bool,
) {
    let reason = limits::cut(&reason, limits::MAX_REASON_BYTES);
    let display = display.map(|d| limits::cut(&d, limits::MAX_DISPLAY_BYTES));
    let base = SetState {
        display,
        error: ErrorText::Set(reason.clone()),
        span: span(row, SpanOutcome::Failed, Some(reason.clone()), now),
        ..transition(row, TaskState::Failed)
    };
    let (state, then) = if job_over(row) {
        let over = if row.job_canceled {
            "canceled"
        } else {
            "failed"
        };
        let state = SetState {
            state: TaskState::Canceled,
            finished_at: Some(now),
            ..base
        };
        (
            state,
            format!("its job has {over}, so it does not run again"),
        )
    } else if row.retries_used < row.max_retries && !permanent {
        plan.claimable_in
            .insert(crate::store::scope::key(row.tenant, &row.cluster));
        let wait = config.backoff(row.retries_used);
        let state = SetState {
            state: TaskState::Queued,
            spend_retry: true,
            not_before: Some(now.saturating_add(nanos(wait))),
            ..base
        };
        let left = row.max_retries - row.retries_used;
        let then = format!(
            "retrying in {:.1} s ({left} {} left)",
            wait.as_secs_f64(),
            if left == 1 { "retry" } else { "retries" }
        );
        (state, then)
    } else {
        plan.failed_jobs.push(row.job_id.clone());
        plan.claimable_in
            .insert(crate::store::scope::key(row.tenant, &row.cluster));
        plan.not_run.entry(row.job_id.clone()).or_insert_with(|| {
            limits::cut(
                &format!("not run: task {} failed for good: {reason}", row.id),
                limits::MAX_REASON_BYTES,
            )
        });
        let state = SetState {
            finished_at: Some(now),
            ..base
        };
        let why = if permanent && row.retries_used < row.max_retries {
            "a permanent failure (no retry can fix it): the task and its job failed"
        } else {
            "no retries left: the task and its job failed"
        };
        (state, why.to_string())
    };
    plan.states.push(state);
    plan.logs.push(attempt_line(
        row,
        Level::Error,
        format!("attempt {} failed: {reason}; {then}", row.attempt),
        now,
    ));
}

/// A log line of `row`'s current attempt, written by the server, that says how it ended.
pub(super) fn attempt_line(row: &HeldRow, level: Level, message: String, now: u64) -> LogLine {
    LogLine {
        time_unix_nano: now,
        level,
        message,
        task_id: row.id.clone(),
        job_id: row.job_id.clone(),
        runner_id: row.runner.clone().unwrap_or_else(|| "server".into()),
        attempt: row.attempt,
        fields: serde_json::Map::new(),
    }
}

/// Why an attempt's output or cache writes cannot be kept, if they cannot.
pub(crate) fn check_data(
    output: Option<&Blob>,
    writes: &[CacheWrite],
    config: &StoreConfig,
) -> Option<String> {
    let max = config.max_value_bytes;
    if let Some(o) = output
        && o.0.len() > max
    {
        return Some(format!(
            "the attempt's output of {} bytes is larger than the {max} the server keeps (its \
             --max-value-kib); return a reference (a URL) to large results",
            o.0.len()
        ));
    }
    if writes.len() > limits::MAX_CACHE_WRITES {
        return Some(format!(
            "the attempt made {} cache writes; one attempt may make at most {}",
            writes.len(),
            limits::MAX_CACHE_WRITES
        ));
    }
    for w in writes {
        if let Err(why) = limits::check_cache_key(&w.key) {
            return Some(format!("the attempt wrote to the cache: {why}"));
        }
        if let Some(v) = &w.value
            && v.0.len() > max
        {
            return Some(format!(
                "the attempt's cache value for {} is {} bytes, larger than the {max} the server \
                 keeps (its --max-value-kib)",
                limits::elide(&w.key, 64),
                v.0.len()
            ));
        }
    }
    None
}

/// Why a set of subtasks is malformed, if it is: the rule the host applies too
/// ([`limits::check_subtask`]), inputs measured as stored against the server's input limit.
pub(crate) fn check_subtasks(subtasks: &[SubtaskSpec], max_input: usize) -> Option<String> {
    subtasks
        .iter()
        .enumerate()
        .find_map(|(i, s)| limits::check_subtask(i, s, max_input).err())
}

/// The rows of a computed task's subtasks (checked by [`check_subtasks`]).
pub(super) fn subtask_rows(
    parent: &HeldRow,
    subtasks: &[SubtaskSpec],
    now: u64,
    new_id: &mut impl FnMut() -> String,
) -> Vec<NewTask> {
    let (state, finished_at) = if job_over(parent) {
        (TaskState::Canceled, Some(now))
    } else {
        (TaskState::Queued, None)
    };
    let ids: Vec<String> = subtasks.iter().map(|_| new_id()).collect();
    subtasks
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (spec, id))| NewTask {
            id: id.clone(),
            job_id: parent.job_id.clone(),
            tenant: parent.tenant,
            parent_id: Some(parent.id.clone()),
            depth: parent.depth + 1,
            path: format!("{}{}", parent.path, path_segment(i)),
            identifier: spec.identifier.clone(),
            input: serde_json::to_string(&spec.input).expect("JSON values serialize"),
            display: spec
                .display
                .as_deref()
                .map(|d| limits::cut(d, limits::MAX_DISPLAY_BYTES)),
            cluster: spec
                .cluster
                .clone()
                .unwrap_or_else(|| parent.cluster.clone()),
            state,
            depends_on: spec
                .depends_on
                .iter()
                .map(|&d| ids[d as usize].clone())
                .collect(),
            max_retries: spec.max_retries,
            created_at: now,
            finished_at,
            component: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {

    use serde_json::json;
    use tessera_api::ProgressUpdate;

    use super::super::testing::*;

    use super::*;

    #[test]
    fn a_row_without_an_open_span_ends_none_and_adds_no_time() {
        let mut r = row("t");
        r.span_start = None;
        let p = decide(&[report("t", computed(vec![]))], &[r]);
        assert_eq!(p.states[0].state, TaskState::Computed);
        assert_eq!(p.states[0].span, None);
        assert_eq!(p.tallies.rows()[0].task_time_ns, 0);
    }

    #[test]
    fn a_computed_leaf_completes_and_closes_its_span() {
        let p = decide(&[report("t", computed(vec![]))], &[row("t")]);
        assert!(p.results[0].accepted && p.changed());
        assert_eq!(p.states[0].state, TaskState::Computed);
        assert_eq!(p.states[0].error, ErrorText::Clear);
        assert_eq!(p.states[0].children, Some(0));
        assert_eq!(p.states[0].finished_at, Some(NOW));
        assert_eq!(
            p.states[0].span.as_ref().unwrap().outcome,
            SpanOutcome::Computed
        );
        assert_eq!(p.states[0].span.as_ref().unwrap().at, NOW);
        let tally = &p.tallies.rows()[0];
        assert_eq!(
            (tally.task_time_ns, tally.last_end),
            (5, NOW),
            "its span ran 5 ns"
        );
        assert!(p.states[0].complete, "one write computes and completes it");
        let completed = CompletedRow {
            id: "t".into(),
            parent_id: Some("root".into()),
            job_id: "job".into(),
        };
        assert_eq!(p.completed, vec![completed]);
        assert!(p.tasks.is_empty() && p.failed_jobs.is_empty());
    }

    #[test]
    fn computed_with_subtasks_inserts_them_under_the_parent() {
        let mut parent = row("p");
        parent.cluster = "gpu".into();
        let mut b = sub("B", vec![0]);
        b.cluster = Some("cpu".into());
        let p = decide(
            &[report("p", computed(vec![sub("A", vec![]), b]))],
            &[parent],
        );
        assert!(
            p.completed.is_empty() && !p.states[0].complete,
            "a parent completes only with its children"
        );
        assert_eq!(p.states[0].children, Some(2));
        let (a, b) = (&p.tasks[0], &p.tasks[1]);
        assert_eq!((a.id.as_str(), b.id.as_str()), ("new1", "new2"));
        assert_eq!(a.parent_id.as_deref(), Some("p"));
        assert_eq!((a.depth, a.path.as_str()), (2, "00000000.00000000."));
        assert_eq!(b.path, "00000000.00000001.");
        assert_eq!((a.cluster.as_str(), b.cluster.as_str()), ("gpu", "cpu"));
        assert_eq!(b.depends_on, vec!["new1".to_string()]);
        assert_eq!(
            (a.state, a.max_retries, a.created_at),
            (TaskState::Queued, 2, NOW)
        );
        assert_eq!(a.input, r#"{"n":"A"}"#);
    }

    #[test]
    fn subtasks_of_a_canceled_job_are_born_canceled() {
        let mut parent = row("p");
        parent.job_canceled = true;
        let p = decide(&[report("p", computed(vec![sub("A", vec![])]))], &[parent]);
        assert_eq!(p.tasks[0].state, TaskState::Canceled);
        assert_eq!(p.tasks[0].finished_at, Some(NOW));
    }

    #[test]
    fn invalid_subtasks_fail_the_attempt_and_insert_nothing() {
        for (subs, why) in [
            (vec![sub("A", vec![0])], "not an earlier subtask"),
            (vec![sub("A", vec![]), sub("B", vec![0, 0])], "twice"),
            (
                vec![SubtaskSpec {
                    cluster: Some(" ".into()),
                    ..sub("A", vec![])
                }],
                "cluster",
            ),
            (
                vec![SubtaskSpec {
                    input: (0..70).fold(json!(1), |v, _| json!([v])),
                    ..sub("A", vec![])
                }],
                "70 levels deep",
            ),
        ] {
            let p = decide(&[report("t", computed(subs))], &[row("t")]);
            assert!(p.results[0].accepted, "the report itself is recorded");
            assert!(p.tasks.is_empty());
            assert_eq!(p.states[0].state, TaskState::Failed);
            let ErrorText::Set(e) = &p.states[0].error else {
                panic!("no reason")
            };
            assert!(e.contains("invalid subtasks") && e.contains(why), "{e}");
            assert_eq!(p.failed_jobs, vec!["job".to_string()]);
        }
    }

    #[test]
    fn a_failure_with_retries_left_is_queued_after_a_backoff() {
        let mut r = row("t");
        (r.max_retries, r.retries_used) = (3, 1);
        let p = decide(&[report("t", failed("boom"))], &[r]);
        let s = &p.states[0];
        assert_eq!((s.state, s.spend_retry), (TaskState::Queued, true));
        assert_eq!(s.error, ErrorText::Set("boom".into()));
        assert_eq!(s.display.as_deref(), Some("Shown"));
        // 2 s doubled once, ±25 %.
        let wait = s.not_before.unwrap() - NOW;
        assert!((3_000_000_000..=5_000_000_000).contains(&wait), "{wait}");
        assert_eq!(s.finished_at, None);
        assert!(p.failed_jobs.is_empty());
        assert_eq!(
            p.states[0].span.as_ref().unwrap().outcome,
            SpanOutcome::Failed
        );
        assert_eq!(
            p.states[0].span.as_ref().unwrap().error.as_deref(),
            Some("boom")
        );
    }

    #[test]
    fn a_failure_without_retries_fails_the_task_and_its_job() {
        let p = decide(&[report("t", failed("boom"))], &[row("t")]);
        let s = &p.states[0];
        assert_eq!(
            (s.state, s.spend_retry, s.finished_at),
            (TaskState::Failed, false, Some(NOW))
        );
        assert_eq!(p.failed_jobs, vec!["job".to_string()]);
    }

    #[test]
    fn a_failure_in_a_canceled_job_cancels_the_task() {
        let mut r = row("t");
        (r.job_canceled, r.max_retries) = (true, 5);
        let p = decide(&[report("t", failed("boom"))], &[r]);
        assert_eq!(p.states[0].state, TaskState::Canceled);
        assert!(!p.states[0].spend_retry && p.failed_jobs.is_empty());
    }

    #[test]
    fn abandoned_requeues_without_spending_a_retry() {
        let p = decide(&[report("t", Report::Abandoned)], &[row("t")]);
        let s = &p.states[0];
        assert_eq!(
            (s.state, s.spend_retry, &s.error),
            (TaskState::Queued, false, &ErrorText::Keep)
        );
        assert_eq!(
            p.states[0].span.as_ref().unwrap().outcome,
            SpanOutcome::Abandoned
        );
        // The task's log says why another attempt follows.
        let line = &p.logs[0];
        assert_eq!((line.level, line.attempt), (Level::Warn, 3));
        assert!(
            line.message
                .starts_with("attempt 3 was abandoned by its runner"),
            "{line:?}"
        );
        let mut r = row("t");
        r.job_canceled = true;
        let p = decide(&[report("t", Report::Abandoned)], &[r]);
        assert_eq!(p.states[0].state, TaskState::Canceled);
        assert_eq!(p.logs[0].message, "attempt 3 stopped: its job was canceled");
    }

    #[test]
    fn canceled_is_recorded_only_when_the_job_was_canceled() {
        let mut r = row("t");
        r.job_canceled = true;
        let p = decide(&[report("t", Report::Canceled)], &[r]);
        assert_eq!(p.states[0].state, TaskState::Canceled);
        assert_eq!(
            p.states[0].span.as_ref().unwrap().outcome,
            SpanOutcome::Canceled
        );
        // Nobody canceled the job: the task goes back to the queue instead of hanging.
        let p = decide(&[report("t", Report::Canceled)], &[row("t")]);
        assert_eq!(p.states[0].state, TaskState::Queued);
        assert_eq!(
            p.states[0].span.as_ref().unwrap().outcome,
            SpanOutcome::Abandoned
        );
    }

    #[test]
    fn the_same_task_twice_in_a_batch_counts_once() {
        let batch = [report("t", computed(vec![])), report("t", failed("late"))];
        let p = decide(&batch, &[row("t")]);
        assert!(p.results[0].accepted && !p.results[1].accepted);
        assert!(p.results[1].error.as_ref().unwrap().contains("twice"));
        assert_eq!(p.states.len(), 1);
        assert_eq!(p.states[0].state, TaskState::Computed);
    }

    #[test]
    fn one_refused_report_does_not_spoil_its_neighbours() {
        let mut stale = row("stale");
        stale.lease = 9;
        let batch = [
            report("a", computed(vec![])),
            report("stale", computed(vec![])),
            report("b", failed("boom")),
        ];
        let p = decide(&batch, &[row("a"), stale, row("b")]);
        let accepted: Vec<bool> = p.results.iter().map(|r| r.accepted).collect();
        assert_eq!(accepted, [true, false, true]);
        assert_eq!(p.states.len(), 2);
    }

    #[test]
    fn progress_is_summed_per_job_and_label_without_overflow() {
        let update = |label: &str, done, total| ProgressUpdate {
            label: label.into(),
            done,
            total,
        };
        let with = |p: Vec<ProgressUpdate>| Report::Computed {
            subtasks: vec![],
            display: None,
            progress: p,
            output: None,
            output_from: None,
            cache: vec![],
        };
        let batch = [
            report(
                "a",
                with(vec![update("tiles", 1, 10), update("bytes", u64::MAX, 0)]),
            ),
            report(
                "b",
                with(vec![update("tiles", 2, 0), update("bytes", 5, 0)]),
            ),
        ];
        let p = decide(&batch, &[row("a"), row("b")]);
        let got: Vec<(&str, u64, u64)> = p
            .progress
            .iter()
            .map(|a| (a.label.as_str(), a.done, a.total))
            .collect();
        assert_eq!(got, [("bytes", u64::MAX, 0), ("tiles", 3, 10)]);
    }

    #[test]
    fn any_report_resets_the_lost_count() {
        let mut r = row("t");
        r.lost = 2;
        let plan = reports(
            &[report("t", Report::Abandoned)],
            "r1",
            &[r],
            &HashMap::new(),
            &HashMap::new(),
            &config(),
            NOW,
            || "id".into(),
        );
        assert_eq!(plan.states[0].lost, 0);
    }

    #[test]
    fn only_the_clusters_where_work_appears_are_woken() {
        // New subtasks: their clusters (a dependent one waits, so not its cluster).
        let gpu = SubtaskSpec {
            cluster: Some("gpu".into()),
            ..sub("A", vec![])
        };
        let waits = SubtaskSpec {
            cluster: Some("later".into()),
            ..sub("B", vec![0])
        };
        let p = decide(
            &[report("t", computed(vec![gpu.clone(), waits]))],
            &[row("t")],
        );
        assert_eq!(p.scope(), Scope::Clusters(vec!["gpu".into()]));
        // Another tenant's: its own key, so that other tenants' runners sleep on.
        let mut theirs = row("t");
        theirs.tenant = 2;
        let p = decide(&[report("t", computed(vec![gpu]))], &[theirs]);
        assert_eq!(
            p.scope(),
            Scope::Clusters(vec![crate::store::scope::key(2, "gpu")])
        );
        assert_ne!(crate::store::scope::key(2, "gpu"), "gpu");
        // A requeue, and a failure with a retry left: the task's own cluster.
        let p = decide(&[report("t", Report::Abandoned)], &[row("t")]);
        assert_eq!(p.scope(), Scope::Clusters(vec!["default".into()]));
        let mut r = row("t");
        r.max_retries = 1;
        let p = decide(&[report("t", failed("boom"))], &[r]);
        assert_eq!(p.scope(), Scope::Clusters(vec!["default".into()]));
        // A final failure ends its job: the claims of its cluster look again (a runner told
        // to exit when idle exits now); a refused report changes nothing.
        assert_eq!(
            decide(&[report("t", failed("boom"))], &[row("t")]).scope(),
            Scope::Clusters(vec!["default".into()])
        );
        assert_eq!(
            decide(&[report("x", failed("boom"))], &[]).scope(),
            Scope::Nothing
        );
        // A completion may release dependents anywhere.
        let p = decide(&[report("t", computed(vec![]))], &[row("t")]);
        assert_eq!(p.scope(), Scope::Everyone);
    }

    #[test]
    fn failures_log_their_reason_and_a_final_one_says_why_the_rest_will_not_run() {
        let mut retried = row("r");
        retried.max_retries = 2;
        let mut late = row("l");
        late.job_id = "over".into();
        late.job_failed = true;
        late.max_retries = 5;
        let p = decide(
            &[
                report("r", failed("flaky")),
                report("f", failed("boom")),
                report("l", failed("late")),
            ],
            &[retried, row("f"), late],
        );
        let states: Vec<TaskState> = p.states.iter().map(|s| s.state).collect();
        // A retry left: queued. None left: failed. Its job already failed: canceled, no retry.
        assert_eq!(
            states,
            [TaskState::Queued, TaskState::Failed, TaskState::Canceled]
        );
        assert_eq!(p.failed_jobs, ["job"]);
        assert_eq!(
            p.not_run.get("job").map(String::as_str),
            Some("not run: task f failed for good: boom")
        );
        assert!(!p.not_run.contains_key("over"));
        let messages: Vec<&str> = p.logs.iter().map(|l| l.message.as_str()).collect();
        // The retry's wait has jitter.
        let retry = messages[0];
        assert!(
            retry.starts_with("attempt 3 failed: flaky; retrying in ")
                && retry.ends_with(" s (2 retries left)"),
            "{retry}"
        );
        assert_eq!(
            messages[1..],
            [
                "attempt 3 failed: boom; no retries left: the task and its job failed",
                "attempt 3 failed: late; its job has failed, so it does not run again",
            ]
        );
        assert!(
            p.logs
                .iter()
                .all(|l| l.level == Level::Error && l.runner_id == "r1")
        );
    }

    #[test]
    fn a_permanent_failure_is_not_retried() {
        let mut r = row("p");
        r.max_retries = 3;
        let permanent = Report::Failed {
            permanent: true,
            reason: "no such object".into(),
            display: None,
        };
        let p = decide(&[report("p", permanent)], &[r]);
        assert_eq!(p.states[0].state, TaskState::Failed);
        assert!(!p.states[0].spend_retry);
        assert_eq!(p.failed_jobs, ["job"]);
        assert_eq!(
            p.logs[0].message,
            "attempt 3 failed: no such object; a permanent failure (no retry can fix it): the \
             task and its job failed"
        );
    }

    #[test]
    fn tallies_follow_every_transition_of_a_batch() {
        let mut canceled = row("x");
        canceled.job_canceled = true;
        canceled.job_id = "other".into();
        let mut retried = row("r");
        retried.max_retries = 1;
        let batch = [
            report("c", computed(vec![sub("A", vec![]), sub("B", vec![0])])),
            report("f", failed("boom")),
            report("r", failed("again")),
            report("a", Report::Abandoned),
            report("a", Report::Abandoned),
            report("x", Report::Canceled),
            report("gone", failed("no such task")),
        ];
        let p = decide(&batch, &[row("c"), row("f"), retried, row("a"), canceled]);
        let rows = p.tallies.rows();
        assert_eq!(rows.len(), 2, "{rows:?}");
        // job: +2 new (queued); c computed, f failed, r and a back to the queue; the second
        // report of a and the unknown task change nothing.
        assert_eq!(
            (rows[0].job_id.as_str(), rows[0].states),
            ("job", [4, -4, 1, 1, 0])
        );
        assert_eq!(rows[0].total(), 2);
        assert_eq!(
            (rows[1].job_id.as_str(), rows[1].states),
            ("other", [0, -1, 0, 0, 1])
        );
    }

    #[test]
    fn a_job_may_not_grow_past_its_task_limit() {
        let config = StoreConfig {
            max_job_tasks: 10,
            ..config()
        };
        let three = || computed(vec![sub("A", vec![]), sub("B", vec![]), sub("C", vec![])]);
        let batch = [
            report("a", three()),
            report("b", three()),
            report("c", three()),
        ];
        let rows = [row("a"), row("b"), row("c")];
        assert_eq!(jobs_growing(&batch, &rows), vec!["job"]);
        // The job has 3 tasks: the first two reports take it to 9, the third would make 12.
        let totals = HashMap::from([("job".to_string(), 3)]);
        let p = decide_with(&batch, &rows, &totals, &config);
        assert!(p.results.iter().all(|r| r.accepted));
        assert_eq!(p.tasks.len(), 6);
        // Six new queued tasks; of the three running, two computed and one failed.
        let tally = &p.tallies.rows()[0];
        assert_eq!(
            (tally.job_id.as_str(), tally.states),
            ("job", [6, -3, 2, 1, 0])
        );
        assert_eq!(
            tally.total(),
            6,
            "the job's total grows by its new tasks only"
        );
        assert_eq!(p.states[2].state, TaskState::Failed);
        let ErrorText::Set(why) = &p.states[2].error else {
            panic!("a reason is recorded")
        };
        assert!(
            why.contains("would give its job 12 tasks, more than the 10"),
            "{why}"
        );
    }

    #[test]
    fn outputs_and_cache_writes_are_kept_with_accepted_successes_only() {
        let config = StoreConfig {
            max_job_tasks: 4,
            max_value_bytes: 8,
            ..config()
        };
        let batch = [
            // Kept: an output, two writes, then a later report overwrites one of them.
            report(
                "a",
                with_data(
                    vec![],
                    Some(b"out"),
                    None,
                    vec![("k", Some(b"1")), ("j", Some(b"1"))],
                ),
            ),
            report(
                "b",
                with_data(vec![], None, None, vec![("k", Some(b"2")), ("j", None)]),
            ),
            // Refused data: a value over 8 bytes, a control character in a key.
            report(
                "c",
                with_data(vec![], None, None, vec![("big", Some(b"123456789"))]),
            ),
            report(
                "d",
                with_data(vec![], Some(b"x"), None, vec![("\u{7}", Some(b"1"))]),
            ),
            // Growing the job past its limit fails the attempt: its writes go with it.
            report(
                "e",
                with_data(
                    vec![sub("A", vec![]); 5],
                    None,
                    None,
                    vec![("grown", Some(b"1"))],
                ),
            ),
            // An output taken from its second subtask.
            report(
                "f",
                with_data(
                    vec![sub("A", vec![]), sub("B", vec![])],
                    Some(b"no"),
                    Some(1),
                    vec![],
                ),
            ),
            // From a subtask it did not submit.
            report(
                "g",
                with_data(vec![], None, Some(0), vec![("from", Some(b"1"))]),
            ),
        ];
        let rows: Vec<HeldRow> = ["a", "b", "c", "d", "e", "f", "g"].map(row).into();
        let totals = HashMap::from([("job".to_string(), 1)]);
        let p = decide_with(&batch, &rows, &totals, &config);
        let cache: Vec<(&str, Option<&[u8]>)> = p
            .cache
            .iter()
            .map(|w| (w.key.as_str(), w.value.as_deref()))
            .collect();
        assert_eq!(
            cache,
            [("j", None), ("k", Some(&b"2"[..]))],
            "the last write wins"
        );
        assert_eq!(
            p.outputs,
            [
                PutOutput {
                    task_id: "a".into(),
                    value: Some(b"out".to_vec()),
                    source: None,
                },
                PutOutput {
                    task_id: "f".into(),
                    value: None,
                    source: Some("new2".into()),
                },
            ],
            "f's output is its second subtask's, whatever it returned"
        );
        let failed: Vec<&str> = p
            .states
            .iter()
            .filter(|s| s.state != TaskState::Computed)
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(failed, ["c", "d", "e", "g"]);
        let reasons: Vec<String> = p
            .states
            .iter()
            .filter_map(|s| match &s.error {
                ErrorText::Set(why) => Some(why.clone()),
                _ => None,
            })
            .collect();
        for (reason, expect) in reasons.iter().zip([
            "larger than the 8 the server keeps",
            "control character",
            "would give its job",
            "took its output from subtask 0, but it submitted 0",
        ]) {
            assert!(reason.contains(expect), "{reason}");
        }
    }

    #[test]
    fn reasons_and_display_names_are_cut_to_their_limits() {
        let plan = reports(
            &[report(
                "t",
                Report::Failed {
                    permanent: false,
                    reason: "x".repeat(10 << 20),
                    display: Some("d".repeat(10_000)),
                },
            )],
            "r1",
            &[row("t")],
            &HashMap::new(),
            &HashMap::new(),
            &config(),
            NOW,
            || "id".into(),
        );
        let ErrorText::Set(why) = &plan.states[0].error else {
            panic!("a reason is recorded")
        };
        assert!(why.len() <= limits::MAX_REASON_BYTES && why.ends_with("bytes cut]"));
        assert!(plan.states[0].display.as_ref().unwrap().len() <= limits::MAX_DISPLAY_BYTES);
        assert!(
            plan.states[0]
                .span
                .as_ref()
                .unwrap()
                .error
                .as_ref()
                .unwrap()
                .len()
                <= limits::MAX_REASON_BYTES
        );
    }
}
