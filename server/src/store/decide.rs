//! What the store does, decided once in plain Rust over the rows involved: no SQL here, and no
//! database in its tests. [`super::core`] reads the rows through a driver, asks here, and hands
//! the answer back to the driver to apply.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tessera_api::{
    Blob, CacheWrite, Job, JobState, LeaseRef, LeaseStatus, Level, LogLine, Report, ReportResult,
    RunnerInfo, SpanOutcome, SubtaskSpec, TaskReport, TaskState, Unserved,
};

use super::Scope;
use super::driver::{
    AddProgress, CacheSet, CompletedRow, ErrorText, HeldRow, JobGrowth, JobTally, NewTask,
    ParentRow, PutOutput, ReadyKind, SetState, SpanEnd, state_index,
};
use super::encode::{nanos, path_segment};
use super::pins::Pins;
use super::{StoreConfig, StoreError};
use tessera_api::limits;

/// Why a report or an extension does not hold its task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseRefusal {
    /// The task does not exist.
    #[error("task {task} does not exist")]
    NoSuchTask {
        /// The task named.
        task: String,
    },
    /// The task is not running under this lease for this runner (any more): the lease
    /// token, the state or the holder differs. Neither the token nor the holder is told.
    #[error(
        "task {task} is not running under this lease for runner {runner} (it is {state}); the \
         result of this attempt was discarded"
    )]
    NotHeld {
        /// The task named.
        task: String,
        /// The runner that asked, escaped for messages.
        runner: String,
        /// The task's state now.
        state: TaskState,
    },
    /// The lease ran out before the report arrived.
    #[error("the lease on task {task} expired before the report arrived; the task will run again")]
    Expired {
        /// The task named.
        task: String,
    },
    /// An earlier report of the same batch already named this task.
    #[error("task {task} was reported twice in one batch; only the first report was recorded")]
    ReportedTwice {
        /// The task named.
        task: String,
    },
}

/// The key a runner id is bound to (`KEY/CHOSEN`, the key's 16 hex digits first: see
/// `http::auth::Caller::runner_id`); `None` for a runner that presented no key.
pub(crate) fn runner_key(runner: &str) -> Option<&str> {
    runner
        .split_once('/')
        .map(|(key, _)| key)
        .filter(|key| key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `lease`, presented by `runner`, still holds `row` at `now` (fencing): the task runs
/// under that token, claimed by that runner, and the lease has not run out.
pub(crate) fn check_lease(
    row: &HeldRow,
    runner: &str,
    lease: u64,
    now: u64,
) -> Result<(), LeaseRefusal> {
    if row.state != TaskState::Running
        || row.lease != lease
        || row.runner.as_deref() != Some(runner)
    {
        return Err(LeaseRefusal::NotHeld {
            task: row.id.clone(),
            runner: limits::elide(runner, 64),
            state: row.state,
        });
    }
    if row.lease_expires_at.is_some_and(|e| e < now) {
        return Err(LeaseRefusal::Expired {
            task: row.id.clone(),
        });
    }
    Ok(())
}

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
    /// The wake-up keys ([`super::scope::key`]: tenant and cluster) whose waiting claims should
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

/// Changes to jobs' kept counts, added up per job: what a transaction tells
/// [`super::driver::Tx::add_job_tallies`], so that reading a job never counts its tasks.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Tallies(BTreeMap<String, JobTally>);

impl Tallies {
    fn job(&mut self, job: &str) -> &mut JobTally {
        self.0.entry(job.to_string()).or_insert_with(|| JobTally {
            job_id: job.to_string(),
            ..JobTally::default()
        })
    }

    /// `n` new tasks of `job` in `state`.
    pub(crate) fn add(&mut self, job: &str, state: TaskState, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let count = &mut self.job(job).states[state_index(state)];
        *count = count.saturating_add(n);
    }

    /// `n` tasks of `job` moved from `from` to `to`.
    pub(crate) fn shift(&mut self, job: &str, from: TaskState, to: TaskState, n: u64) {
        if from == to || n == 0 {
            return;
        }
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let tally = self.job(job);
        let i = state_index(from);
        tally.states[i] = tally.states[i].saturating_sub(n);
        let i = state_index(to);
        tally.states[i] = tally.states[i].saturating_add(n);
    }

    /// An attempt of `job` that ran `nanos` and ended at `at`.
    pub(crate) fn ended(&mut self, job: &str, nanos: u64, at: u64) {
        let tally = self.job(job);
        tally.task_time_ns = tally.task_time_ns.saturating_add(nanos);
        tally.last_end = tally.last_end.max(at);
    }

    /// The first claim of `job`'s tasks, if it is the first.
    pub(crate) fn started(&mut self, job: &str, now: u64) {
        let tally = self.job(job);
        tally.started_at = Some(tally.started_at.map_or(now, |t| t.min(now)));
    }

    /// The tallies that change something, in job id order (the order locks are taken in).
    pub(crate) fn rows(&self) -> Vec<JobTally> {
        self.0
            .values()
            .filter(|t| {
                **t != JobTally {
                    job_id: t.job_id.clone(),
                    ..JobTally::default()
                }
            })
            .cloned()
            .collect()
    }
}

/// How a job's kept counts differ from `counted`, its rows counted with absolute values in a
/// [`JobTally`]; empty when they agree.
pub(crate) fn audit(kept: &Job, counted: &JobTally) -> Vec<String> {
    let mut wrong = Vec::new();
    for &state in TaskState::ALL {
        let (k, c) = (kept.task_counts.get(state), counted.state(state));
        if i64::try_from(k).ok() != Some(c) {
            wrong.push(format!("{state} tasks: kept {k}, counted {c}"));
        }
    }
    if kept.task_time_ns != counted.task_time_ns {
        wrong.push(format!(
            "task time: kept {} ns, counted {} ns",
            kept.task_time_ns, counted.task_time_ns
        ));
    }
    if kept.state.is_finished()
        && counted.last_end > 0
        && kept.finished_at != Some(counted.last_end)
    {
        wrong.push(format!(
            "finished at: kept {:?}, last attempt ended at {}",
            kept.finished_at, counted.last_end
        ));
    }
    wrong
}

/// The tallies of a plan's transitions and new tasks, over the rows they start from.
fn tally(plan: &mut ReportPlan, rows: &HashMap<&str, &HeldRow>) {
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
    tenant: super::TenantId,
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
    room: &HashMap<super::TenantId, (u64, u64)>,
    config: &StoreConfig,
    now: u64,
    mut new_id: impl FnMut() -> String,
) -> ReportPlan {
    let mut added: BTreeMap<String, u64> = BTreeMap::new();
    let mut queued: HashMap<super::TenantId, u64> = HashMap::new();
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
                        .map(|t| super::scope::key(t.tenant, &t.cluster)),
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
                        .insert(super::scope::key(row.tenant, &row.cluster));
                }
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
fn transition(row: &HeldRow, state: TaskState) -> SetState {
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
fn job_over(row: &HeldRow) -> bool {
    row.job_canceled || row.job_failed
}

/// Back to the queue without spending a retry (canceled if its job was canceled or failed).
fn requeue(row: &HeldRow, now: u64) -> SetState {
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
fn span(row: &HeldRow, outcome: SpanOutcome, error: Option<String>, now: u64) -> Option<SpanEnd> {
    row.span_start.map(|_| SpanEnd {
        at: now,
        outcome,
        error,
    })
}

/// A failed attempt: retried with backoff while retries remain (and the failure is not
/// `permanent`), else the task and its job fail.
fn fail(
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
            .insert(super::scope::key(row.tenant, &row.cluster));
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
            .insert(super::scope::key(row.tenant, &row.cluster));
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
    plan.logs.push(LogLine {
        time_unix_nano: now,
        level: Level::Error,
        message: format!("attempt {} failed: {reason}; {then}", row.attempt),
        task_id: row.id.clone(),
        job_id: row.job_id.clone(),
        runner_id: row.runner.clone().unwrap_or_else(|| "server".into()),
        attempt: row.attempt,
        fields: serde_json::Map::new(),
    });
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
fn subtask_rows(
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

/// One step of completion walking up the tree: the jobs whose root just completed, and the
/// number of newly completed children per parent.
pub(crate) fn upwards(completed: &[CompletedRow]) -> (Vec<String>, Vec<(String, u64)>) {
    let mut jobs = Vec::new();
    let mut parents: BTreeMap<&str, u64> = BTreeMap::new();
    for row in completed {
        match &row.parent_id {
            None => jobs.push(row.job_id.clone()),
            Some(p) => *parents.entry(p).or_default() += 1,
        }
    }
    let parents = parents
        .into_iter()
        .map(|(p, n)| (p.to_string(), n))
        .collect();
    (jobs, parents)
}

/// Parents that complete now: computed, with no open children left.
pub(crate) fn ready_parents(parents: &[ParentRow]) -> Vec<String> {
    parents
        .iter()
        .filter(|p| p.state == TaskState::Computed && p.open_children <= 0)
        .map(|p| p.id.clone())
        .collect()
}

/// What the reaper does with running tasks whose lease expired: back to the queue without
/// spending a retry (canceled if their job was) — unless the task's lease has now expired
/// [`StoreConfig::max_lost`] times in a row without any report, when the attempt counts as failed
/// (spending a retry, or failing the task and its job) instead of running forever.
pub(crate) fn expired(rows: &[HeldRow], config: &StoreConfig, now: u64) -> ReportPlan {
    let why = "the runner's lease expired (runner gone or unreachable)";
    let mut plan = ReportPlan::default();
    for row in rows {
        let lost = row.lost.saturating_add(1);
        if !row.job_canceled && config.max_lost > 0 && lost >= config.max_lost {
            let reason = format!(
                "lost by its runner {lost} times in a row: each attempt's lease expired without \
                 a report (the runner died, was cut off, or could not deliver the result); \
                 see the runners' output for why"
            );
            fail(&mut plan, row, reason, None, config, now, false);
            continue;
        }
        plan.states.push(SetState {
            lost,
            span: span(row, SpanOutcome::Expired, Some(why.into()), now),
            ..requeue(row, now)
        });
    }
    let rows: HashMap<&str, &HeldRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    tally(&mut plan, &rows);
    plan
}

/// How long a runner counts as seen after its last claim.
pub(crate) const RUNNER_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Which kinds of ready queued tasks (cluster, task type, how many) no runner in `runners`
/// (those seen within [`RUNNER_WINDOW`]) could run, each with why: what the runners seen in that
/// cluster serve instead, or where the task type is served.
pub(crate) fn unserved(kinds: &[ReadyKind], runners: &[RunnerInfo]) -> Vec<Unserved> {
    let mut out = Vec::new();
    for ReadyKind {
        cluster,
        task,
        pinned,
        queued,
    } in kinds
    {
        let here: Vec<&RunnerInfo> = runners.iter().filter(|r| &r.cluster == cluster).collect();
        if here
            .iter()
            .any(|r| (*pinned && r.deployed) || r.identifiers.iter().any(|i| i.can_run(task)))
        {
            continue;
        }
        let list = |mut items: Vec<String>| {
            items.sort();
            items.dedup();
            let more = items.len().saturating_sub(5);
            items.truncate(5);
            let mut text = items.join(", ");
            if more > 0 {
                text.push_str(&format!(" and {more} more"));
            }
            text
        };
        let versions: Vec<String> = here
            .iter()
            .flat_map(|r| &r.identifiers)
            .filter(|i| i.name == task.name)
            .map(|i| i.version.to_string())
            .collect();
        let minutes = RUNNER_WINDOW.as_secs() / 60;
        let reason = if !versions.is_empty() {
            format!(
                "no runner in cluster {cluster} has served {task} in the last {minutes} minutes; \
                 runners seen there serve {} {}",
                task.name,
                list(versions)
            )
        } else if !here.is_empty() && here.iter().all(|r| r.identifiers.is_empty()) {
            format!(
                "only fleet runners serve cluster {cluster}, and its job pinned no deployed \
                 component for {task}: deploy one that exports it (`tessera deploy`) and submit \
                 again, or start a runner with its component file"
            )
        } else if !here.is_empty() {
            let names = here
                .iter()
                .flat_map(|r| &r.identifiers)
                .map(ToString::to_string)
                .collect();
            format!(
                "no runner in cluster {cluster} has served {} in the last {minutes} minutes; \
                 runners seen there serve {}",
                task.name,
                list(names)
            )
        } else {
            let elsewhere: Vec<String> = runners
                .iter()
                .filter(|r| r.identifiers.iter().any(|i| i.can_run(task)))
                .map(|r| r.cluster.clone())
                .collect();
            if elsewhere.is_empty() && *pinned {
                format!(
                    "no runner has asked for work in cluster {cluster} in the last {minutes} \
                     minutes; start a fleet runner with `tessera runner --deployed --cluster \
                     {cluster}` (its job pinned a deployed component for {task})"
                )
            } else if elsewhere.is_empty() {
                format!(
                    "no runner has asked for work in cluster {cluster} in the last {minutes} \
                     minutes; start one whose component exports {task} with `tessera runner \
                     COMPONENT.wasm --cluster {cluster}`"
                )
            } else {
                format!(
                    "no runner has asked for work in cluster {cluster} in the last {minutes} \
                     minutes; {task} is served in cluster {}",
                    list(elsewhere)
                )
            }
        };
        out.push(Unserved {
            cluster: cluster.clone(),
            identifier: task.clone(),
            queued: *queued,
            reason,
        });
    }
    out
}

/// Gives each new task the component its job pinned for its task type, if any.
pub(crate) fn pin_components(
    tasks: &mut [NewTask],
    jobs: &HashMap<String, JobGrowth>,
) -> Result<(), StoreError> {
    let mut decoded: HashMap<&str, Pins> = HashMap::new();
    for task in tasks {
        let Some(job) = jobs.get(&task.job_id) else {
            continue;
        };
        if job.pins == "[]" {
            continue;
        }
        if !decoded.contains_key(task.job_id.as_str()) {
            let pins = Pins::decode(&job.pins).map_err(StoreError::Corrupt)?;
            decoded.insert(
                jobs.get_key_value(&task.job_id)
                    .expect("present")
                    .0
                    .as_str(),
                pins,
            );
        }
        task.component = decoded[task.job_id.as_str()]
            .resolve(&task.identifier)
            .map(str::to_string);
    }
    Ok(())
}

/// Which leases an extension keeps, over the rows of their tasks.
pub(crate) fn extensions(
    leases: &[LeaseRef],
    runner: &str,
    rows: &[HeldRow],
    config: &StoreConfig,
    now: u64,
) -> Vec<LeaseStatus> {
    let rows: HashMap<&str, &HeldRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let lease_ms = config.lease.as_millis().min(u128::from(u64::MAX)) as u64;
    leases
        .iter()
        .map(|l| match rows.get(l.task_id.as_str()) {
            Some(row) if check_lease(row, runner, l.lease, now).is_ok() => LeaseStatus {
                task_id: l.task_id.clone(),
                held: true,
                canceled: row.job_canceled,
                lease_ms,
            },
            _ => LeaseStatus {
                task_id: l.task_id.clone(),
                held: false,
                canceled: false,
                lease_ms: 0,
            },
        })
        .collect()
}

/// Whether a job may be canceled.
pub(crate) fn cancel(job: &Job) -> Result<(), StoreError> {
    if job.state == JobState::Completed {
        return Err(StoreError::Conflict(format!(
            "job {} already completed; there is nothing left to cancel",
            job.id
        )));
    }
    Ok(())
}

/// Whether a job may be deleted: it is over, and no attempt of it still runs.
pub(crate) fn delete(job: &Job) -> Result<(), StoreError> {
    if !job.state.is_finished() {
        return Err(StoreError::Conflict(format!(
            "job {id} is {state}: cancel it first (tessera jobs cancel {id}), then delete it \
             once its running attempts have stopped",
            id = job.id,
            state = job.state
        )));
    }
    let running = job.task_counts.running;
    if running > 0 {
        return Err(StoreError::Conflict(format!(
            "job {} is {} but {running} of its attempts still run; delete it once they stop \
             (a canceled attempt stops at its next lease extension)",
            job.id, job.state
        )));
    }
    Ok(())
}

/// Whether a job may be retried.
pub(crate) fn retry(job: &Job) -> Result<(), StoreError> {
    if job.task_counts.failed == 0 && job.task_counts.canceled == 0 && !job.canceled {
        return Err(StoreError::Conflict(format!(
            "job {} has no failed or canceled tasks to retry (it is {})",
            job.id, job.state
        )));
    }
    Ok(())
}

/// Fills in each log line's job from its task; refuses the whole batch if a line names a task
/// that does not exist or the wrong job.
pub(crate) fn logs(
    lines: &mut [LogLine],
    jobs: &HashMap<String, String>,
    runners: &HashMap<(String, u32), String>,
) -> Result<(), StoreError> {
    for line in lines.iter_mut() {
        // Only the runner that ran an attempt writes its lines (they may arrive after it
        // ended). Checked first, and one answer whether the task exists or not: a runner
        // learns nothing of tasks it did not run (another tenant's, say).
        let ran = runners.get(&(line.task_id.clone(), line.attempt));
        let job = jobs.get(&line.task_id);
        let (Some(job), true) = (job, ran == Some(&line.runner_id)) else {
            return Err(StoreError::Conflict(format!(
                "log line of task {} attempt {} comes from runner {}, which did not run that \
                 attempt (or there is no such task); nothing of this batch was stored",
                limits::elide(&line.task_id, 64),
                line.attempt,
                limits::elide(&line.runner_id, 64)
            )));
        };
        if !line.job_id.is_empty() && &line.job_id != job {
            return Err(StoreError::Conflict(format!(
                "log line names job {} but task {} belongs to job {job}; nothing of this batch was stored",
                limits::elide(&line.job_id, 64),
                line.task_id
            )));
        }
        line.job_id = job.clone();
    }
    Ok(())
}

/// The quotas in effect: what an operator set (`set`), over the defaults. For the optional
/// quotas, 0 means none.
pub fn quotas(set: &tessera_api::TenantUpdate) -> tessera_api::Quotas {
    let d = tessera_api::Quotas::default();
    tessera_api::Quotas {
        queued_tasks: set.queued_tasks.unwrap_or(d.queued_tasks),
        running: set.running.filter(|&n| n > 0).or(d.running),
        memory_mib: set.memory_mib.filter(|&n| n > 0).or(d.memory_mib),
        deadline_seconds: set
            .deadline_seconds
            .filter(|&n| n > 0)
            .or(d.deadline_seconds),
        log_bytes_per_job: set.log_bytes_per_job.unwrap_or(d.log_bytes_per_job),
        component_bytes: set.component_bytes.unwrap_or(d.component_bytes),
        requests_per_second: set.requests_per_second.unwrap_or(d.requests_per_second),
    }
}

/// What an operator's update makes of a tenant's weight and the quotas set on it, checked.
pub fn update_tenant(
    weight: u32,
    set: &tessera_api::TenantUpdate,
    update: &tessera_api::TenantUpdate,
) -> Result<(u32, tessera_api::TenantUpdate), StoreError> {
    let weight = update.weight.unwrap_or(weight);
    if !(1..=1000).contains(&weight) {
        return Err(StoreError::Invalid(format!(
            "weight {weight} is out of range: use 1 to 1000"
        )));
    }
    let positive = [
        ("queued_tasks", update.queued_tasks),
        ("log_bytes_per_job", update.log_bytes_per_job),
        ("component_bytes", update.component_bytes),
        (
            "requests_per_second",
            update.requests_per_second.map(u64::from),
        ),
    ];
    for (name, value) in positive {
        if value == Some(0) {
            return Err(StoreError::Invalid(format!(
                "{name} must be at least 1 (it has no 'none')"
            )));
        }
    }
    if update.requests_per_second.is_some_and(|r| r > 1_000_000) {
        return Err(StoreError::Invalid(
            "requests_per_second is out of range: at most 1000000".into(),
        ));
    }
    if update.memory_mib.is_some_and(|m| m > 1 << 20) {
        return Err(StoreError::Invalid(
            "memory_mib is out of range: at most 1048576 (1 TiB)".into(),
        ));
    }
    let merged = tessera_api::TenantUpdate {
        weight: None,
        queued_tasks: update.queued_tasks.or(set.queued_tasks),
        running: update.running.or(set.running),
        memory_mib: update.memory_mib.or(set.memory_mib),
        deadline_seconds: update.deadline_seconds.or(set.deadline_seconds),
        log_bytes_per_job: update.log_bytes_per_job.or(set.log_bytes_per_job),
        component_bytes: update.component_bytes.or(set.component_bytes),
        requests_per_second: update.requests_per_second.or(set.requests_per_second),
    };
    Ok((weight, merged))
}

/// A tenant a shared claim may hand tasks of: its weight, its attempts running now, and how
/// many more its quota lets run (`None`: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimant {
    pub tenant: super::TenantId,
    pub weight: u32,
    pub running: u64,
    pub room: Option<u64>,
}

/// Weighted fair share of running slots: how many of `slots` new tasks each tenant gets, by
/// water-filling — each slot goes to the tenant whose running attempts (with what it was
/// given so far) divided by its weight are fewest, ties to the earlier in `tenants` (the
/// caller rotates them, so that ties take turns). A tenant at its cap gets no more; a tenant
/// alone gets every slot (the share is work-conserving).
pub fn shares(slots: u32, tenants: &[Claimant]) -> Vec<(super::TenantId, u32)> {
    let mut given = vec![0u64; tenants.len()];
    for _ in 0..slots {
        let mut best: Option<usize> = None;
        for (i, t) in tenants.iter().enumerate() {
            if t.weight == 0 || t.room.is_some_and(|room| given[i] >= room) {
                continue;
            }
            let load = |j: usize| u128::from(tenants[j].running + given[j]);
            let better = match best {
                None => true,
                // load_i / w_i < load_b / w_b, without division.
                Some(b) => load(i) * u128::from(tenants[b].weight) < load(b) * u128::from(t.weight),
            };
            if better {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        given[b] += 1;
    }
    tenants
        .iter()
        .zip(given)
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| (t.tenant, n as u32))
        .collect()
}

/// Which log lines a job keeps under its tenant's quota: lines are kept in order while they
/// fit in the `room` left; the first that does not is replaced by one marker line saying so,
/// the rest are dropped, and the whole room counts as used, so that the job never gets
/// another marker. Returns the lines kept and the bytes to count.
pub fn logs_within(lines: Vec<LogLine>, room: u64, quota: u64) -> (Vec<LogLine>, u64) {
    let mut kept = Vec::with_capacity(lines.len());
    let mut used = 0u64;
    for line in lines {
        let size = log_size(&line);
        if used.saturating_add(size) <= room {
            used += size;
            kept.push(line);
            continue;
        }
        if room > 0 {
            kept.push(LogLine {
                level: tessera_api::Level::Warn,
                message: format!(
                    "this job reached its tenant's log quota (log_bytes_per_job: {quota} \
                     bytes); its later log lines are dropped"
                ),
                fields: Default::default(),
                ..line
            });
        }
        return (kept, room);
    }
    (kept, used)
}

/// The log lines a batch keeps under each job's quota (`quota` of its tenant) given the bytes
/// each job kept before (`kept`: its tenant and bytes), and the bytes to add per job. The
/// lines come out grouped by job, in their order within each job.
pub fn logs_under_quota(
    lines: Vec<LogLine>,
    kept: &HashMap<String, (super::TenantId, u64)>,
    quota: impl Fn(super::TenantId) -> u64,
) -> (Vec<LogLine>, Vec<(String, u64)>) {
    let mut by_job: Vec<(String, Vec<LogLine>)> = Vec::new();
    for line in lines {
        match by_job.iter_mut().find(|(j, _)| *j == line.job_id) {
            Some((_, group)) => group.push(line),
            None => by_job.push((line.job_id.clone(), vec![line])),
        }
    }
    let mut out = Vec::new();
    let mut added = Vec::new();
    for (job, group) in by_job {
        let (tenant, before) = kept
            .get(&job)
            .copied()
            .unwrap_or((super::DEFAULT_TENANT, 0));
        let quota = quota(tenant);
        let (lines, bytes) = logs_within(group, quota.saturating_sub(before), quota);
        out.extend(lines);
        if bytes > 0 {
            added.push((job, bytes));
        }
    }
    (out, added)
}

/// The bytes a log line costs against a quota: its message and fields as stored.
pub fn log_size(line: &LogLine) -> u64 {
    let fields = serde_json::to_string(&line.fields).map_or(0, |f| f.len());
    (line.message.len() + fields) as u64
}

/// The tenant a request asks to create, checked: a name of letters, digits, `-`, `_` and
/// `.` (it appears in URLs and on command lines), a weight of 1–1000.
pub fn new_tenant(
    tenant: &tessera_api::NewTenant,
    now: u64,
) -> Result<tessera_api::Tenant, StoreError> {
    let name = &tenant.name;
    let fits = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !fits {
        return Err(StoreError::Invalid(format!(
            "tenant name {} is not valid: use 1 to 100 letters, digits, '-', '_' or '.'",
            limits::elide(name, 64)
        )));
    }
    let weight = tenant.weight.unwrap_or(1);
    if !(1..=1000).contains(&weight) {
        return Err(StoreError::Invalid(format!(
            "weight {weight} is out of range: use 1 to 1000"
        )));
    }
    Ok(tessera_api::Tenant {
        name: name.clone(),
        weight,
        created_at: now,
        quotas: tessera_api::Quotas::default(),
        usage: None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tessera_api::{ProgressUpdate, TaskCounts};

    use super::*;
    use tessera_api::TaskIdentifier;

    const NOW: u64 = 1_000_000_000_000;

    fn config() -> StoreConfig {
        StoreConfig {
            lease: Duration::from_secs(10),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            max_lost: 3,
            max_job_tasks: 1_000_000,
            ..StoreConfig::default()
        }
    }

    fn row(id: &str) -> HeldRow {
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

    fn report(id: &str, report: Report) -> TaskReport {
        TaskReport {
            task_id: id.into(),
            lease: 3,
            report,
        }
    }

    fn computed(subtasks: Vec<SubtaskSpec>) -> Report {
        Report::Computed {
            subtasks,
            display: None,
            progress: vec![],
            output: None,
            output_from: None,
            cache: vec![],
        }
    }

    fn sub(name: &str, deps: Vec<u32>) -> SubtaskSpec {
        SubtaskSpec {
            identifier: TaskIdentifier::parse(name, "v1.2").unwrap(),
            input: json!({"n": name}),
            display: None,
            depends_on: deps,
            max_retries: 2,
            cluster: None,
        }
    }

    fn failed(reason: &str) -> Report {
        Report::Failed {
            permanent: false,
            reason: reason.into(),
            display: Some("Shown".into()),
        }
    }

    fn decide(batch: &[TaskReport], rows: &[HeldRow]) -> ReportPlan {
        decide_with(batch, rows, &HashMap::new(), &config())
    }

    /// [`decide`] with jobs' task totals and settings of its own.
    fn decide_with(
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
        let mut r = row("t");
        r.job_canceled = true;
        let p = decide(&[report("t", Report::Abandoned)], &[r]);
        assert_eq!(p.states[0].state, TaskState::Canceled);
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
    fn lease_refusals_are_typed() {
        let mut stale = row("stale");
        stale.lease = 4;
        let mut expired = row("expired");
        expired.lease_expires_at = Some(NOW - 1);
        let mut done = row("done");
        done.state = TaskState::Computed;
        let batch = [
            report("missing", computed(vec![])),
            report("stale", computed(vec![])),
            report("expired", computed(vec![])),
            report("done", computed(vec![])),
        ];
        let p = decide(&batch, &[stale.clone(), expired.clone(), done.clone()]);
        assert!(p.results.iter().all(|r| !r.accepted));
        assert!(!p.changed() && p.states.is_empty());
        let refused = check_lease(&stale, "r1", 3, NOW).unwrap_err();
        assert_eq!(
            refused,
            LeaseRefusal::NotHeld {
                task: "stale".into(),
                runner: "\"r1\"".into(),
                state: TaskState::Running,
            }
        );
        let said = refused.to_string();
        assert!(
            !said.contains('4') && !said.contains('3'),
            "no lease token told: {said}"
        );
        assert_eq!(
            check_lease(&expired, "r1", 3, NOW),
            Err(LeaseRefusal::Expired {
                task: "expired".into(),
            })
        );
        // Another runner with the right token holds nothing.
        let other = check_lease(&row("t"), "r2", 3, NOW).unwrap_err();
        assert!(matches!(other, LeaseRefusal::NotHeld { .. }), "{other}");
        assert!(
            !other.to_string().contains("r1"),
            "the holder is not told: {other}"
        );
        assert!(
            p.results[0]
                .error
                .as_ref()
                .unwrap()
                .contains("does not exist")
        );
        assert!(p.results[3].error.as_ref().unwrap().contains("computed"));
        // Expiry is inclusive of its last instant.
        assert!(check_lease(&row("t"), "r1", 3, NOW + 1).is_ok());
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
    fn completion_walks_up_by_counts() {
        let done = |id: &str, parent: Option<&str>| CompletedRow {
            id: id.into(),
            parent_id: parent.map(Into::into),
            job_id: format!("job-of-{id}"),
        };
        let (jobs, parents) = upwards(&[
            done("a", Some("p")),
            done("b", Some("p")),
            done("r", None),
            done("c", Some("q")),
        ]);
        assert_eq!(jobs, vec!["job-of-r".to_string()]);
        assert_eq!(parents, vec![("p".to_string(), 2), ("q".to_string(), 1)]);
        let parent = |id: &str, state, open| ParentRow {
            id: id.into(),
            state,
            open_children: open,
        };
        let ready = ready_parents(&[
            parent("p", TaskState::Computed, 0),
            parent("q", TaskState::Computed, 1),
            parent("s", TaskState::Running, 0),
        ]);
        assert_eq!(ready, vec!["p".to_string()]);
    }

    #[test]
    fn expired_leases_requeue_or_cancel() {
        let mut canceled = row("c");
        canceled.job_canceled = true;
        let plan = expired(&[row("q"), canceled], &config(), NOW);
        assert_eq!(plan.states[0].state, TaskState::Queued);
        assert_eq!(plan.states[1].state, TaskState::Canceled);
        assert!(
            plan.states
                .iter()
                .all(|s| !s.spend_retry && s.error == ErrorText::Keep && s.lost == 1)
        );
        assert!(
            plan.states
                .iter()
                .all(|s| s.span.as_ref().unwrap().outcome == SpanOutcome::Expired)
        );
        assert!(plan.failed_jobs.is_empty());
    }

    #[test]
    fn a_task_lost_too_often_fails_instead_of_looping() {
        let mut once = row("once");
        once.lost = 1;
        let mut last = row("last");
        last.lost = 2;
        let mut retrying = row("retrying");
        retrying.lost = 2;
        retrying.max_retries = 1;
        let plan = expired(&[once, last, retrying], &config(), NOW);
        assert_eq!(plan.states[0].state, TaskState::Queued);
        assert_eq!(plan.states[0].lost, 2);
        // The third loss in a row fails the attempt: for good without retries left…
        assert_eq!(plan.states[1].state, TaskState::Failed);
        assert_eq!(plan.states[1].lost, 0);
        let ErrorText::Set(why) = &plan.states[1].error else {
            panic!("a reason is recorded")
        };
        assert!(why.contains("lost by its runner 3 times in a row"), "{why}");
        assert_eq!(plan.failed_jobs, vec!["job".to_string()]);
        // …or spending a retry while one remains, with the count starting over.
        assert_eq!(plan.states[2].state, TaskState::Queued);
        assert!(plan.states[2].spend_retry);
        assert_eq!(plan.states[2].lost, 0);
        assert_eq!(
            plan.states[1].span.as_ref().unwrap().outcome,
            SpanOutcome::Failed
        );
        // Never when the limit is off.
        let off = StoreConfig {
            max_lost: 0,
            ..config()
        };
        let mut many = row("many");
        many.lost = 1_000;
        assert_eq!(
            expired(&[many], &off, NOW).states[0].state,
            TaskState::Queued
        );
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

    fn id(name: &str, version: &str) -> TaskIdentifier {
        TaskIdentifier::parse(name, version).unwrap()
    }

    #[test]
    fn unserved_kinds_say_who_was_seen_serving_what() {
        let runner = |cluster: &str, ids: &[(&str, &str)]| RunnerInfo {
            id: "r".into(),
            cluster: cluster.into(),
            identifiers: ids.iter().map(|(n, v)| id(n, v)).collect(),
            first_seen: 0,
            last_seen: 0,
            deployed: false,
            host: None,
            concurrency: None,
            wasmtime: None,
            running: 0,
        };
        let fleet = RunnerInfo {
            deployed: true,
            ..runner("fleet", &[])
        };
        let runners = [
            runner("default", &[("wordfreq.Job", "v1.2"), ("Other", "v0.0")]),
            runner("gpu", &[("Render", "v2.0")]),
            fleet,
        ];
        let kind = |cluster: &str, task: TaskIdentifier, pinned: bool, queued: u64| ReadyKind {
            cluster: cluster.into(),
            task,
            pinned,
            queued,
        };
        let kinds = [
            kind("default", id("wordfreq.Job", "v1.1"), false, 3),
            kind("default", id("wordfreq.Job", "v1.3"), false, 2),
            kind("default", id("Typo", "v0.0"), false, 1),
            kind("cpu", id("Render", "v2.0"), false, 4),
            kind("nowhere", id("Lost", "v0.0"), false, 5),
            // A fleet runner serves what its job pinned, and only in its cluster.
            kind("fleet", id("Deployed", "v0.0"), true, 6),
            kind("fleet", id("NotDeployed", "v0.0"), false, 7),
            kind("elsewhere", id("Deployed", "v0.0"), true, 8),
        ];
        let got = unserved(&kinds, &runners);
        let reasons: Vec<&str> = got.iter().map(|u| u.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                // v1.1 runs on the v1.2 runner; v1.3 does not.
                "no runner in cluster default has served wordfreq.Job@v1.3 in the last 5 \
                 minutes; runners seen there serve wordfreq.Job v1.2",
                "no runner in cluster default has served Typo in the last 5 minutes; runners \
                 seen there serve Other@v0.0, wordfreq.Job@v1.2",
                "no runner has asked for work in cluster cpu in the last 5 minutes; \
                 Render@v2.0 is served in cluster gpu",
                "no runner has asked for work in cluster nowhere in the last 5 minutes; start \
                 one whose component exports Lost@v0.0 with `tessera runner COMPONENT.wasm \
                 --cluster nowhere`",
                "only fleet runners serve cluster fleet, and its job pinned no deployed \
                 component for NotDeployed@v0.0: deploy one that exports it (`tessera deploy`) \
                 and submit again, or start a runner with its component file",
                "no runner has asked for work in cluster elsewhere in the last 5 minutes; start \
                 a fleet runner with `tessera runner --deployed --cluster elsewhere` (its job \
                 pinned a deployed component for Deployed@v0.0)",
            ]
        );
        assert_eq!(got[0].queued, 2);
    }

    #[test]
    fn new_tasks_get_the_component_their_job_pinned() {
        let pins = crate::store::pins::Pins::of(&[tessera_api::Component {
            digest: "sha256:new".into(),
            name: "tasks".into(),
            size: 1,
            task_types: vec![id("Leaf", "v1.2")],
            deployed_by: "me".into(),
            deployed_at: 1,
            undeployed_at: None,
        }]);
        let task = |job: &str, name: &str, version: &str| NewTask {
            id: "t".into(),
            job_id: job.into(),
            tenant: 1,
            parent_id: None,
            depth: 1,
            path: String::new(),
            identifier: id(name, version),
            input: "{}".into(),
            display: None,
            cluster: "default".into(),
            state: TaskState::Queued,
            depends_on: vec![],
            max_retries: 0,
            created_at: 0,
            finished_at: None,
            component: None,
        };
        let mut tasks = [
            task("pinned", "Leaf", "v1.0"),
            task("pinned", "Leaf", "v1.3"),
            task("pinned", "Other", "v0.0"),
            task("unpinned", "Leaf", "v1.0"),
        ];
        let jobs = HashMap::from([
            (
                "pinned".to_string(),
                JobGrowth {
                    total: 1,
                    pins: pins.encode(),
                },
            ),
            (
                "unpinned".to_string(),
                JobGrowth {
                    total: 1,
                    pins: "[]".into(),
                },
            ),
        ]);
        pin_components(&mut tasks, &jobs).unwrap();
        let got: Vec<Option<&str>> = tasks.iter().map(|t| t.component.as_deref()).collect();
        assert_eq!(got, [Some("sha256:new"), None, None, None]);
        let broken = HashMap::from([(
            "pinned".to_string(),
            JobGrowth {
                total: 1,
                pins: "{".into(),
            },
        )]);
        assert!(matches!(
            pin_components(&mut tasks, &broken),
            Err(StoreError::Corrupt(_))
        ));
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
    fn tallies_of_expiry_claims_and_spans() {
        let mut lost = row("l");
        lost.lost = 2;
        let p = expired(&[row("q"), lost], &config(), NOW);
        // max_lost is 3: q is requeued, l has now been lost three times and fails.
        assert_eq!(p.tallies.rows()[0].states, [1, -2, 0, 1, 0]);

        let mut t = Tallies::default();
        t.shift("j", TaskState::Queued, TaskState::Running, 2);
        t.started("j", NOW + 5);
        t.started("j", NOW);
        t.ended("j", 7, NOW + 9);
        t.ended("j", u64::MAX, NOW + 8);
        let rows = t.rows();
        assert_eq!(rows[0].states, [-2, 2, 0, 0, 0]);
        assert_eq!(
            rows[0].started_at,
            Some(NOW),
            "the earliest claim starts the job"
        );
        assert_eq!(rows[0].task_time_ns, u64::MAX, "time saturates");
        assert_eq!(rows[0].last_end, NOW + 9);
        // Moves that cancel out leave nothing to write.
        let mut t = Tallies::default();
        t.shift("j", TaskState::Queued, TaskState::Running, 1);
        t.shift("j", TaskState::Running, TaskState::Queued, 1);
        t.shift("j", TaskState::Failed, TaskState::Failed, 4);
        assert!(t.rows().is_empty());
    }

    #[test]
    fn an_audit_names_each_count_that_differs() {
        let mut kept = Job {
            id: "job".into(),
            name: "n".into(),
            cluster: "default".into(),
            state: JobState::Completed,
            canceled: false,
            task_counts: TaskCounts::default(),
            progress: vec![],
            submitted_at: 0,
            started_at: Some(0),
            finished_at: None,
            task_time_ns: 0,
            tenant: String::new(),
        };
        kept.task_counts.computed = 3;
        kept.task_time_ns = 10;
        kept.finished_at = Some(NOW);
        let counted = JobTally {
            job_id: "job".into(),
            states: [0, 0, 3, 0, 0],
            task_time_ns: 10,
            last_end: NOW,
            started_at: None,
        };
        assert!(audit(&kept, &counted).is_empty());
        let wrong = audit(
            &kept,
            &JobTally {
                states: [1, 0, 2, 0, 0],
                ..counted.clone()
            },
        );
        assert_eq!(
            wrong,
            [
                "queued tasks: kept 0, counted 1",
                "computed tasks: kept 3, counted 2",
            ]
        );
        let late = JobTally {
            last_end: NOW + 1,
            task_time_ns: 11,
            ..counted
        };
        assert_eq!(audit(&kept, &late).len(), 2);
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

    fn with_data(
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

    #[test]
    fn extensions_keep_only_held_leases() {
        let mut canceled = row("c");
        canceled.job_canceled = true;
        let leases = [
            LeaseRef {
                task_id: "t".into(),
                lease: 3,
            },
            LeaseRef {
                task_id: "t2".into(),
                lease: 2,
            },
            LeaseRef {
                task_id: "c".into(),
                lease: 3,
            },
            LeaseRef {
                task_id: "gone".into(),
                lease: 3,
            },
        ];
        let got = extensions(
            &leases,
            "r1",
            &[row("t"), row("t2"), canceled],
            &config(),
            NOW,
        );
        let held: Vec<(bool, bool, u64)> = got
            .iter()
            .map(|s| (s.held, s.canceled, s.lease_ms))
            .collect();
        assert_eq!(
            held,
            [
                (true, false, 10_000),
                (false, false, 0),
                (true, true, 10_000),
                (false, false, 0)
            ]
        );
    }

    #[test]
    fn only_a_job_that_is_over_with_nothing_running_may_be_deleted() {
        let mut job = Job {
            id: "j".into(),
            name: "n".into(),
            cluster: "default".into(),
            state: JobState::Running,
            canceled: false,
            task_counts: TaskCounts::default(),
            progress: vec![],
            submitted_at: 0,
            started_at: None,
            finished_at: None,
            task_time_ns: 0,
            tenant: String::new(),
        };
        let e = delete(&job).unwrap_err().to_string();
        assert!(e.contains("cancel it first (tessera jobs cancel j)"), "{e}");
        job.state = JobState::Canceled;
        job.task_counts.running = 2;
        let e = delete(&job).unwrap_err().to_string();
        assert!(e.contains("2 of its attempts still run"), "{e}");
        job.task_counts.running = 0;
        assert!(delete(&job).is_ok());
        job.state = JobState::Completed;
        assert!(delete(&job).is_ok());
    }

    #[test]
    fn cancel_and_retry_guards() {
        let job = |state, counts: TaskCounts, canceled| Job {
            id: "j".into(),
            name: "n".into(),
            cluster: "default".into(),
            state,
            canceled,
            task_counts: counts,
            progress: vec![],
            submitted_at: 0,
            started_at: None,
            finished_at: None,
            task_time_ns: 0,
            tenant: String::new(),
        };
        assert!(cancel(&job(JobState::Completed, TaskCounts::default(), false)).is_err());
        assert!(cancel(&job(JobState::Running, TaskCounts::default(), false)).is_ok());
        assert!(retry(&job(JobState::Running, TaskCounts::default(), false)).is_err());
        assert!(retry(&job(JobState::Canceled, TaskCounts::default(), true)).is_ok());
        let one_failed = TaskCounts {
            failed: 1,
            ..TaskCounts::default()
        };
        assert!(retry(&job(JobState::Failed, one_failed, false)).is_ok());
    }

    #[test]
    fn log_lines_get_their_job_or_the_batch_is_refused() {
        let line = |task: &str, job: &str| LogLine {
            time_unix_nano: 1,
            level: tessera_api::Level::Info,
            message: "m".into(),
            task_id: task.into(),
            job_id: job.into(),
            runner_id: "r".into(),
            attempt: 1,
            fields: Default::default(),
        };
        let jobs: HashMap<String, String> = [("t".to_string(), "j".to_string())].into();
        let ran: HashMap<(String, u32), String> = [(("t".to_string(), 1), "r".to_string())].into();
        let mut ok = vec![line("t", ""), line("t", "j")];
        logs(&mut ok, &jobs, &ran).unwrap();
        assert!(ok.iter().all(|l| l.job_id == "j"));
        assert!(logs(&mut [line("t", "other")], &jobs, &ran).is_err());
        assert!(logs(&mut [line("t", ""), line("u", "")], &jobs, &ran).is_err());
        // Only the runner that ran the attempt writes its lines.
        let mut forged = line("t", "");
        forged.runner_id = "intruder".into();
        let e = logs(&mut [line("t", ""), forged], &jobs, &ran).unwrap_err();
        assert!(e.to_string().contains("did not run that attempt"), "{e}");
        let mut other_attempt = line("t", "");
        other_attempt.attempt = 2;
        assert!(logs(&mut [other_attempt], &jobs, &ran).is_err());
    }

    fn claimant(tenant: i64, weight: u32, running: u64, room: Option<u64>) -> Claimant {
        Claimant {
            tenant,
            weight,
            running,
            room,
        }
    }

    #[test]
    fn shares_level_running_slots_by_weight() {
        // A holds the whole fleet of 20; B arrives: every freed slot goes to B until they are
        // level, then they alternate (ties to the earlier, which the caller rotates).
        let a_full = [claimant(1, 1, 20, None), claimant(2, 1, 0, None)];
        assert_eq!(shares(1, &a_full), vec![(2, 1)]);
        assert_eq!(shares(10, &a_full), vec![(2, 10)]);
        let level = [claimant(1, 1, 10, None), claimant(2, 1, 10, None)];
        assert_eq!(shares(2, &level), vec![(1, 1), (2, 1)]);
        // Weight 3 against 1: three slots in four.
        let weighted = [claimant(1, 3, 0, None), claimant(2, 1, 0, None)];
        assert_eq!(shares(8, &weighted), vec![(1, 6), (2, 2)]);
        // Alone, a tenant takes every slot, however much it runs already.
        assert_eq!(shares(4, &[claimant(1, 1, 1000, None)]), vec![(1, 4)]);
        // A cap stops a tenant; the rest goes to the others, or nowhere.
        let capped = [claimant(1, 1, 0, Some(1)), claimant(2, 1, 5, None)];
        assert_eq!(shares(4, &capped), vec![(1, 1), (2, 3)]);
        assert_eq!(shares(4, &[claimant(1, 1, 0, Some(0))]), vec![]);
        assert_eq!(shares(0, &a_full), vec![]);
    }

    #[test]
    fn quotas_take_their_defaults_and_zero_removes_a_ceiling() {
        let d = tessera_api::Quotas::default();
        assert_eq!(quotas(&Default::default()), d);
        let set = tessera_api::TenantUpdate {
            running: Some(4),
            memory_mib: Some(64),
            ..Default::default()
        };
        let q = quotas(&set);
        assert_eq!((q.running, q.memory_mib), (Some(4), Some(64)));
        assert_eq!(q.queued_tasks, d.queued_tasks);
        let (weight, merged) = update_tenant(
            1,
            &set,
            &tessera_api::TenantUpdate {
                weight: Some(3),
                running: Some(0),
                queued_tasks: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
        let q = quotas(&merged);
        assert_eq!(
            (weight, q.running, q.memory_mib, q.queued_tasks),
            (3, None, Some(64), 10)
        );
        for bad in [
            tessera_api::TenantUpdate {
                weight: Some(0),
                ..Default::default()
            },
            tessera_api::TenantUpdate {
                queued_tasks: Some(0),
                ..Default::default()
            },
            tessera_api::TenantUpdate {
                requests_per_second: Some(0),
                ..Default::default()
            },
        ] {
            assert!(update_tenant(1, &set, &bad).is_err(), "{bad:?}");
        }
    }

    fn line(job: &str, message: &str) -> LogLine {
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

    #[test]
    fn a_job_keeps_log_lines_up_to_its_quota_then_one_marker() {
        // Each line costs its message and "{}" (2 bytes of fields).
        let lines: Vec<LogLine> = (0..5).map(|_| line("j", "12345678")).collect();
        let (kept, used) = logs_within(lines.clone(), 25, 100);
        assert_eq!(kept.len(), 3, "two lines fit, then the marker");
        assert!(
            kept[2].message.contains("log_bytes_per_job: 100"),
            "{:?}",
            kept[2]
        );
        assert_eq!(used, 25, "the whole room counts as used: no second marker");
        let (kept, used) = logs_within(lines.clone(), 0, 100);
        assert!(kept.is_empty() && used == 0);
        let (kept, used) = logs_within(lines, 1000, 1000);
        assert_eq!((kept.len(), used), (5, 50));
        // Per job, from what each kept before.
        let batch = vec![
            line("a", "12345678"),
            line("b", "12345678"),
            line("a", "12345678"),
        ];
        let before = HashMap::from([("a".to_string(), (1, 95)), ("b".to_string(), (2, 0))]);
        let (kept, added) = logs_under_quota(batch, &before, |_| 100);
        assert_eq!(
            kept.len(),
            2,
            "a's first line becomes the marker, b's line is kept"
        );
        assert_eq!(added, vec![("a".to_string(), 5), ("b".to_string(), 10)]);
    }
}
