//! Jobs: their kept counts (tallies and the audit), completion walking up the tree, and when
//! a job may be canceled, deleted or retried.

use std::collections::BTreeMap;

use tessera_api::{Job, JobState, TaskState};

use crate::store::StoreError;
use crate::store::driver::{CompletedRow, JobTally, ParentRow, state_index};

/// Changes to jobs' kept counts, added up per job: what a transaction tells
/// [`crate::store::driver::Tx::add_job_tallies`], so that reading a job never counts its tasks.
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

#[cfg(test)]
mod tests {

    use tessera_api::TaskCounts;

    use super::super::testing::*;

    use super::*;

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

    /// Job `j` in `state` with `counts`, canceled or not.
    fn job_in(state: JobState, counts: TaskCounts, canceled: bool) -> Job {
        Job {
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
        }
    }

    #[test]
    fn only_a_job_that_is_over_with_nothing_running_may_be_deleted() {
        let mut job = job_in(JobState::Running, TaskCounts::default(), false);
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
        let job = job_in;
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
}
