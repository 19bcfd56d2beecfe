//! Leases: whether a report or extension still holds its task (fencing), which leases an
//! extension keeps, and what an expired lease does to its task.

use std::collections::HashMap;

use tessera_api::{LeaseRef, LeaseStatus, SpanOutcome, TaskState};

use super::*;
use crate::store::StoreConfig;
use crate::store::driver::{HeldRow, SetState};
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

#[cfg(test)]
mod tests {
    use crate::store::driver::ErrorText;

    use super::super::testing::*;

    use super::*;

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
}
