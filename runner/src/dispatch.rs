//! The dispatcher: a state machine fed what happened ([`Input`]) that answers what to do
//! ([`Action`]). It makes every protocol decision — when to claim and how much, what to report
//! and with which claim riding along, when a run-all runner is done, how to stop — and does no
//! I/O, so each decision is unit-tested without a network. [`crate::run`] performs the actions
//! and feeds their results back.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tessera_api::limits::MAX_CLAIM;
use tessera_api::{
    ClaimRequest, ClaimResponse, ClaimedTask, ClientError, Outlook, Report, ReportRequest,
    ReportResponse, TaskReport,
};

use crate::outbox::{Batch, Notice, Outbox};

/// Claims that fail in a row before a run-all runner gives up (a `--forever` runner never does).
const MAX_CLAIM_FAILURES: u32 = 40;

/// How long a task claimed ahead may expect to wait for a slot. Claiming ahead saves a round
/// trip per task, which matters only when tasks take about as long as a round trip; a task
/// held here for longer than this is a task another runner could have started.
pub const AHEAD_WAIT: Duration = Duration::from_millis(20);

/// Attempts that must end before any task is claimed ahead: one quick root task says little
/// about the tasks it fans out.
const AHEAD_AFTER: u32 = 4;

/// What happened.
#[derive(Debug)]
pub enum Input {
    /// An attempt ended; `report` is `None` when its lease was lost (the server would refuse
    /// any report).
    Finished {
        /// The task.
        task_id: String,
        /// Its report.
        report: Option<TaskReport>,
    },
    /// The claim in flight was answered.
    Claimed(Result<ClaimResponse, ClientError>),
    /// The report in flight was answered.
    Reported(Result<ReportResponse, ClientError>),
    /// The outlook asked for was answered.
    Outlook(Result<Outlook, ClientError>),
    /// Stop claiming; running attempts finish and their reports still go out.
    Stop,
    /// Running attempts were abandoned: stop, and give up on reports the server does not take
    /// at once.
    Abandon,
    /// Time passed (a report's retry may be due).
    Tick,
}

/// What to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Long-poll for work, after a pause.
    Claim {
        /// The claim.
        request: ClaimRequest,
        /// How long to wait before sending it (backoff after failures).
        after: Duration,
    },
    /// Drop the claim in flight.
    CancelClaim,
    /// Send reports, perhaps with the next claim riding along.
    Report(ReportRequest),
    /// Ask whether anything is left that this runner could serve.
    CheckOutlook,
    /// Run a claimed task.
    Start(ClaimedTask),
    /// Extend a task's lease until its report is settled (a task claimed while stopping).
    Hold {
        /// The task.
        task_id: String,
        /// Its lease.
        lease: u64,
    },
    /// Stop extending a task's lease: its report is settled, or the lease was lost.
    Release(String),
    /// Tell the person running the runner.
    Notice(Notice),
    /// Feed [`Input::Tick`] at this instant.
    WakeAt(Instant),
    /// The runner is done.
    Exit(Exit),
    /// The runner cannot go on.
    Fail(String),
}

/// Why a runner ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Nothing it could serve is queued or running.
    OutOfWork,
    /// It was told to stop and every attempt has ended and been reported.
    Stopped,
}

/// What the dispatcher is set up with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The claim every request starts from (runner, cluster, identifiers, wait).
    pub claim: ClaimRequest,
    /// Attempts to run at once.
    pub concurrency: usize,
    /// Keep polling when nothing is left.
    pub forever: bool,
    /// The server's body limit, in bytes.
    pub max_body: usize,
    /// Most tasks claimed ahead of free slots while the queue is deep (every claim filled):
    /// they wait here, leases held, and start as slots free, so that a slot does not wait a
    /// round trip for its next task. Fewer while attempts are long: only as many as the slots
    /// finish within [`AHEAD_WAIT`] on average, none before a few attempts have ended. 0
    /// claims only for free slots.
    pub prefetch: usize,
}

/// The dispatcher's state.
pub struct Dispatcher {
    settings: Settings,
    running: usize,
    /// Tasks claimed ahead, waiting for a slot (their leases held).
    queue: VecDeque<ClaimedTask>,
    /// Whether the last claim answer filled all it asked for: the queue is deep.
    deep: bool,
    /// When each running attempt started.
    started: HashMap<String, Instant>,
    /// How long attempts take, a moving average in seconds (none ended yet: `None`).
    mean_secs: Option<f64>,
    /// Attempts that ended (counted up to [`AHEAD_AFTER`]).
    ended: u32,
    /// How many tasks the claim in flight asked for, and the claim riding on the report in
    /// flight.
    asked_claim: u32,
    asked_ride: u32,
    outbox: Outbox,
    claiming: bool,
    reporting: Option<Batch>,
    asking_outlook: bool,
    stopping: bool,
    failures: u32,
    done: bool,
}

impl Dispatcher {
    /// A dispatcher with nothing running.
    pub fn new(settings: Settings) -> Self {
        Dispatcher {
            outbox: Outbox::new(settings.max_body),
            settings,
            running: 0,
            queue: VecDeque::new(),
            deep: false,
            started: HashMap::new(),
            mean_secs: None,
            ended: 0,
            asked_claim: 0,
            asked_ride: 0,
            claiming: false,
            reporting: None,
            asking_outlook: false,
            stopping: false,
            failures: 0,
            done: false,
        }
    }

    /// Attempts running now.
    pub fn running(&self) -> usize {
        self.running
    }

    fn idle(&self) -> bool {
        self.running == 0
            && self.queue.is_empty()
            && self.outbox.is_empty()
            && self.reporting.is_none()
    }

    /// How many tasks to ask for: free slots, plus some ahead while the queue is deep.
    fn free(&self) -> usize {
        let room = self.settings.concurrency + if self.deep { self.ahead() } else { 0 };
        room.saturating_sub(self.running + self.queue.len())
    }

    /// How many tasks to hold ahead: what the slots finish within [`AHEAD_WAIT`] at the
    /// attempts' average length, at most the prefetch setting.
    fn ahead(&self) -> usize {
        let Some(mean) = self.mean_secs.filter(|_| self.ended >= AHEAD_AFTER) else {
            return 0;
        };
        let finish = self.settings.concurrency as f64 * AHEAD_WAIT.as_secs_f64() / mean.max(1e-6);
        (finish.floor() as usize).min(self.settings.prefetch)
    }

    /// Starts `task` now.
    fn start(&mut self, task: ClaimedTask, now: Instant, act: &mut Vec<Action>) {
        self.running += 1;
        self.started.insert(task.task_id.clone(), now);
        act.push(Action::Start(task));
    }

    fn claim_for(&self, free: usize, wait_ms: u64) -> ClaimRequest {
        ClaimRequest {
            // The server hands out at most this many per claim; more slots fill on the next.
            max: free.min(MAX_CLAIM as usize) as u32,
            wait_ms,
            ..self.settings.claim.clone()
        }
    }

    /// Takes what happened at `now` and answers what to do.
    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut act = Vec::new();
        if self.done {
            return act;
        }
        match input {
            Input::Finished { task_id, report } => {
                self.running = self.running.saturating_sub(1);
                if let Some(start) = self.started.remove(&task_id) {
                    let took = now.saturating_duration_since(start).as_secs_f64();
                    self.ended = (self.ended + 1).min(AHEAD_AFTER);
                    self.mean_secs = Some(match self.mean_secs {
                        None => took,
                        Some(mean) => mean + (took - mean) / 5.0,
                    });
                }
                match report {
                    Some(report) => act.extend(self.outbox.push(report).map(Action::Notice)),
                    None => act.push(Action::Release(task_id)),
                }
                if !self.stopping
                    && let Some(next) = self.queue.pop_front()
                {
                    self.start(next, now, &mut act);
                }
            }
            Input::Claimed(answer) => {
                self.claiming = false;
                match answer {
                    Ok(c) => {
                        self.failures = 0;
                        let got = c.tasks.len();
                        self.deep = got > 0 && got >= self.asked_claim as usize;
                        self.take(c.tasks, now, &mut act);
                        if got == 0 && self.idle() && !self.settings.forever && !self.stopping {
                            self.asking_outlook = true;
                            act.push(Action::CheckOutlook);
                        }
                    }
                    Err(e) => self.failed("claiming", e, &mut act),
                }
            }
            Input::Reported(answer) => {
                let batch = self
                    .reporting
                    .take()
                    .expect("a report answer comes only for a report sent");
                if let Err(e) = &answer
                    && e.status().is_none_or(|s| s >= 500)
                {
                    act.push(Action::Notice(Notice::Unreachable {
                        what: "reporting",
                        why: e.to_string(),
                    }));
                }
                let settled = self.outbox.settle(batch, &answer, now);
                act.extend(settled.notices.into_iter().map(Action::Notice));
                act.extend(settled.done.into_iter().map(Action::Release));
                if let Ok(r) = answer {
                    if self.asked_ride > 0 {
                        self.deep = r.tasks.len() >= self.asked_ride as usize;
                    }
                    self.take(r.tasks, now, &mut act);
                }
            }
            Input::Outlook(answer) => {
                self.asking_outlook = false;
                match answer {
                    Ok(o) if !o.has_work() && self.idle() && !self.stopping => {
                        self.done = true;
                        act.push(Action::Exit(Exit::OutOfWork));
                        return act;
                    }
                    Ok(_) => {}
                    Err(e) => self.failed("asking for the outlook", e, &mut act),
                }
            }
            Input::Stop | Input::Abandon => {
                if matches!(input, Input::Abandon) {
                    self.outbox.hurry();
                }
                if !self.stopping {
                    self.stopping = true;
                    if self.claiming {
                        self.claiming = false;
                        act.push(Action::CancelClaim);
                    }
                    // Tasks claimed ahead go back (their leases are held until reported).
                    for task in std::mem::take(&mut self.queue) {
                        act.extend(self.give_back(task));
                    }
                }
            }
            Input::Tick => {}
        }
        if act.iter().any(|a| matches!(a, Action::Fail(_))) {
            self.done = true;
            return act;
        }
        self.pump(now, &mut act);
        act
    }

    /// Starts claimed tasks while slots are free and queues the rest (their leases held);
    /// while stopping gives them straight back.
    fn take(&mut self, tasks: Vec<ClaimedTask>, now: Instant, act: &mut Vec<Action>) {
        for task in tasks {
            if self.stopping {
                act.push(Action::Hold {
                    task_id: task.task_id.clone(),
                    lease: task.lease,
                });
                act.extend(self.give_back(task));
            } else if self.running < self.settings.concurrency {
                self.start(task, now, act);
            } else {
                act.push(Action::Hold {
                    task_id: task.task_id.clone(),
                    lease: task.lease,
                });
                self.queue.push_back(task);
            }
        }
    }

    /// Reports a held task abandoned: it requeues without spending a retry.
    fn give_back(&mut self, task: ClaimedTask) -> Option<Action> {
        self.outbox
            .push(TaskReport {
                task_id: task.task_id,
                lease: task.lease,
                report: Report::Abandoned,
            })
            .map(Action::Notice)
    }

    fn failed(&mut self, what: &'static str, e: ClientError, act: &mut Vec<Action>) {
        self.failures += 1;
        if e.status().is_some_and(|s| (400..500).contains(&s)) {
            act.push(Action::Fail(format!(
                "the server refused this runner's request ({what}): {e}"
            )));
        } else if !self.settings.forever && self.failures > MAX_CLAIM_FAILURES {
            act.push(Action::Fail(format!("the server stayed unreachable: {e}")));
        } else {
            act.push(Action::Notice(Notice::Unreachable {
                what,
                why: e.to_string(),
            }));
        }
    }

    /// Sends what is due: reports first (the next claim riding along when none is in flight),
    /// else a long-poll for every free slot; and ends a stopping runner once all is reported.
    fn pump(&mut self, now: Instant, act: &mut Vec<Action>) {
        let free = self.free();
        let may_claim = free > 0 && !self.stopping && !self.asking_outlook;
        if self.reporting.is_none() {
            if let Some(batch) = self.outbox.next_batch(now) {
                let ride = (may_claim && !self.claiming).then(|| self.claim_for(free, 0));
                self.asked_ride = ride.as_ref().map_or(0, |c| c.max);
                act.push(Action::Report(ReportRequest {
                    runner_id: self.settings.claim.runner_id.clone(),
                    reports: batch.reports(),
                    claim: ride,
                }));
                self.reporting = Some(batch);
            } else if let Some(at) = self.outbox.retry_at() {
                act.push(Action::WakeAt(at));
            }
        }
        if may_claim && !self.claiming && self.reporting.is_none() {
            self.claiming = true;
            let after = if self.failures == 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(250 << self.failures.min(5))
            };
            let request = self.claim_for(free, self.settings.claim.wait_ms);
            self.asked_claim = request.max;
            act.push(Action::Claim { request, after });
        }
        if self.stopping && self.idle() {
            self.done = true;
            act.push(Action::Exit(Exit::Stopped));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_api::{ReportResult, TaskIdentifier};

    fn settings(concurrency: usize, forever: bool) -> Settings {
        Settings {
            claim: ClaimRequest {
                runner_id: "r".into(),
                cluster: "default".into(),
                identifiers: vec![TaskIdentifier::parse("T", "v0.0").unwrap()],
                max: 0,
                wait_ms: 20_000,
                return_when_idle: !forever,
                digests: vec![],
                deployed: false,
                host: None,
                concurrency: None,
                wasmtime: None,
            },
            concurrency,
            forever,
            max_body: 1 << 20,
            prefetch: 0,
        }
    }

    fn task(id: &str) -> ClaimedTask {
        ClaimedTask {
            task_id: id.into(),
            job_id: "j".into(),
            identifier: TaskIdentifier::parse("T", "v0.0").unwrap(),
            display: None,
            input: serde_json::Value::Null,
            attempt: 1,
            lease: 7,
            lease_ms: 30_000,
            component: None,
            cache_seq: 0,
            memory_mib: None,
            deadline_ms: None,
        }
    }

    #[test]
    fn a_tenant_ceiling_lowers_the_runner_limits_and_never_raises_them() {
        let own = tessera_host::Limits {
            memory_bytes: 256 << 20,
            deadline: std::time::Duration::from_secs(60),
            ..Default::default()
        };
        let mut t = task("t");
        let same = crate::attempt::limits_for(&own, &t);
        assert_eq!(
            (same.memory_bytes, same.deadline),
            (own.memory_bytes, own.deadline)
        );
        t.memory_mib = Some(64);
        t.deadline_ms = Some(5_000);
        let lower = crate::attempt::limits_for(&own, &t);
        assert_eq!(lower.memory_bytes, 64 << 20);
        assert_eq!(lower.deadline, std::time::Duration::from_secs(5));
        t.memory_mib = Some(4096);
        t.deadline_ms = Some(3_600_000);
        let higher = crate::attempt::limits_for(&own, &t);
        assert_eq!(
            (higher.memory_bytes, higher.deadline),
            (own.memory_bytes, own.deadline)
        );
    }

    fn computed(id: &str) -> TaskReport {
        TaskReport {
            task_id: id.into(),
            lease: 7,
            report: Report::Computed {
                subtasks: vec![],
                display: None,
                progress: vec![],
                output: None,
                output_from: None,
                cache: vec![],
            },
        }
    }

    /// Task `a` ended computed.
    fn finished_a() -> Input {
        Input::Finished {
            task_id: "a".into(),
            report: Some(computed("a")),
        }
    }

    /// Starts `d` and gives it task `a`.
    fn claim_a(d: &mut Dispatcher, now: Instant) {
        d.step(Input::Tick, now);
        d.step(
            Input::Claimed(Ok(ClaimResponse {
                tasks: vec![task("a")],
            })),
            now,
        );
    }

    /// Starts `d`, gives it task `a` and lets `a` finish computed: its report is on its way.
    fn claim_and_finish_a(d: &mut Dispatcher, now: Instant) {
        claim_a(d, now);
        d.step(finished_a(), now);
    }

    fn claims(actions: &[Action]) -> Vec<(u32, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Claim { request, .. } => Some((request.max, request.wait_ms)),
                _ => None,
            })
            .collect()
    }

    fn reports(actions: &[Action]) -> Vec<&ReportRequest> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Report(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn accepted(ids: &[&str], tasks: Vec<ClaimedTask>) -> Input {
        Input::Reported(Ok(ReportResponse {
            results: ids
                .iter()
                .map(|id| ReportResult {
                    task_id: id.to_string(),
                    accepted: true,
                    error: None,
                })
                .collect(),
            tasks,
        }))
    }

    #[test]
    fn starts_by_long_polling_for_every_free_slot_capped_at_the_server_maximum() {
        let now = Instant::now();
        let mut d = Dispatcher::new(settings(4, false));
        assert_eq!(claims(&d.step(Input::Tick, now)), vec![(4, 20_000)]);
        assert!(d.step(Input::Tick, now).is_empty(), "one claim at a time");
        let mut big = Dispatcher::new(settings(10_000, false));
        assert_eq!(claims(&big.step(Input::Tick, now)), vec![(1000, 20_000)]);
    }

    #[test]
    fn a_finished_attempt_is_reported_with_the_next_claim_riding_along() {
        let now = Instant::now();
        let mut d = Dispatcher::new(settings(2, false));
        d.step(Input::Tick, now);
        let a = d.step(
            Input::Claimed(Ok(ClaimResponse {
                tasks: vec![task("a"), task("b")],
            })),
            now,
        );
        assert_eq!(
            a.iter().filter(|x| matches!(x, Action::Start(_))).count(),
            2
        );
        assert!(claims(&a).is_empty(), "no free slot");
        let a = d.step(finished_a(), now);
        let sent = reports(&a);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].reports[0].task_id, "a");
        assert_eq!(
            sent[0].claim.as_ref().map(|c| (c.max, c.wait_ms)),
            Some((1, 0))
        );
        // The answer's tasks start; the settled report releases its lease.
        let a = d.step(accepted(&["a"], vec![task("c")]), now);
        assert!(a.contains(&Action::Release("a".into())));
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Start(t) if t.task_id == "c"))
        );
        assert_eq!(d.running(), 2);
    }

    fn finished(id: &str) -> Input {
        Input::Finished {
            task_id: id.into(),
            report: Some(computed(id)),
        }
    }

    #[test]
    fn a_deep_queue_of_short_tasks_is_claimed_ahead_and_a_shallow_one_is_not() {
        let now = Instant::now();
        let ms = |n| now + Duration::from_millis(n);
        let mut d = Dispatcher::new(Settings {
            prefetch: 4,
            ..settings(1, true)
        });
        // The first claim asks for the free slot only, and gets it: the queue is deep. Nothing
        // is claimed ahead before an attempt has ended (how long they take is unknown).
        assert_eq!(claims(&d.step(Input::Tick, now)), vec![(1, 20_000)]);
        let a = d.step(
            Input::Claimed(Ok(ClaimResponse {
                tasks: vec![task("a")],
            })),
            now,
        );
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Start(t) if t.task_id == "a"))
        );
        assert!(claims(&a).is_empty());
        // a took 1 ms: 20 could finish within AHEAD_WAIT, so the prefetch (4) is the bound
        // once enough attempts have ended (say three did before a). The report carries a claim
        // for the free slot and four ahead.
        d.ended = AHEAD_AFTER - 1;
        let a = d.step(finished_a(), ms(1));
        let ride = reports(&a)[0].claim.as_ref().map(|c| c.max);
        assert_eq!(ride, Some(5));
        let got: Vec<ClaimedTask> = ["b", "c", "d", "e", "f"]
            .iter()
            .map(|id| task(id))
            .collect();
        let a = d.step(accepted(&["a"], got), ms(2));
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Start(t) if t.task_id == "b"))
        );
        let held = a.iter().filter(|x| matches!(x, Action::Hold { .. }));
        assert_eq!(held.count(), 4, "four wait, leases held");
        // A slot frees: the next one starts at once, with no round trip.
        let a = d.step(finished("b"), ms(3));
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Start(t) if t.task_id == "c"))
        );
        // The report carries a claim for the one place free ahead; an answer short of it
        // means the queue is shallow: from then on, only free slots are asked for.
        let ride = reports(&a)[0].claim.as_ref().map(|c| c.max);
        assert_eq!(ride, Some(1));
        let a = d.step(accepted(&["b"], vec![]), ms(3));
        assert!(
            claims(&a).is_empty(),
            "no free slot, and no prefetch while shallow"
        );
        // Stopping gives the tasks claimed ahead back.
        let a = d.step(Input::Stop, ms(4));
        let back = reports(&a);
        assert_eq!(back.len(), 1);
        let ids: Vec<&str> = back[0].reports.iter().map(|r| r.task_id.as_str()).collect();
        assert_eq!(ids, ["d", "e", "f"]);
        assert!(
            back[0]
                .reports
                .iter()
                .all(|r| r.report == Report::Abandoned)
        );
    }

    #[test]
    fn long_attempts_are_not_claimed_ahead() {
        let now = Instant::now();
        let mut d = Dispatcher::new(Settings {
            prefetch: 16,
            ..settings(1, true)
        });
        // The claim for the one slot came back full: the queue is deep.
        claim_a(&mut d, now);
        // a took 100 ms: one slot finishes 0.2 tasks within AHEAD_WAIT, so none are held
        // ahead however deep the queue; the report asks for the free slot only.
        let a = d.step(finished_a(), now + Duration::from_millis(100));
        let ride = reports(&a)[0].claim.as_ref().map(|c| c.max);
        assert_eq!(ride, Some(1));
        // One quick attempt alone (a root that fanned out) claims nothing ahead.
        let mut d = Dispatcher::new(Settings {
            prefetch: 16,
            ..settings(1, true)
        });
        claim_a(&mut d, now);
        let a = d.step(finished_a(), now + Duration::from_millis(1));
        assert_eq!(reports(&a)[0].claim.as_ref().map(|c| c.max), Some(1));
        // Attempts of 5 ms on two slots: 8 fit within AHEAD_WAIT, once the average has moved
        // there (a moving average: a few attempts).
        let mut d = Dispatcher::new(Settings {
            prefetch: 16,
            ..settings(2, true)
        });
        d.mean_secs = Some(0.005);
        d.ended = AHEAD_AFTER;
        d.deep = true;
        assert_eq!(d.ahead(), 8);
        d.mean_secs = Some(0.0);
        assert_eq!(d.ahead(), 16, "never more than the prefetch");
    }

    #[test]
    fn a_lost_lease_releases_without_a_report() {
        let now = Instant::now();
        let mut d = Dispatcher::new(settings(1, true));
        claim_a(&mut d, now);
        let a = d.step(
            Input::Finished {
                task_id: "a".into(),
                report: None,
            },
            now,
        );
        assert!(a.contains(&Action::Release("a".into())));
        assert!(reports(&a).is_empty());
        assert_eq!(claims(&a).len(), 1, "the slot is free again");
    }

    #[test]
    fn a_run_all_runner_exits_only_when_the_outlook_is_empty_and_all_is_reported() {
        let now = Instant::now();
        let mut d = Dispatcher::new(settings(1, false));
        d.step(Input::Tick, now);
        let a = d.step(Input::Claimed(Ok(ClaimResponse::default())), now);
        assert_eq!(a, vec![Action::CheckOutlook]);
        // Work appeared elsewhere in the cluster: poll again.
        let a = d.step(
            Input::Outlook(Ok(Outlook {
                queued: 0,
                running: 3,
            })),
            now,
        );
        assert_eq!(claims(&a).len(), 1);
        d.step(Input::Claimed(Ok(ClaimResponse::default())), now);
        let a = d.step(Input::Outlook(Ok(Outlook::default())), now);
        assert_eq!(a, vec![Action::Exit(Exit::OutOfWork)]);
        assert!(d.step(Input::Tick, now).is_empty(), "nothing after the end");
    }

    #[test]
    fn a_forever_runner_never_asks_the_outlook() {
        let now = Instant::now();
        let mut d = Dispatcher::new(settings(1, true));
        d.step(Input::Tick, now);
        let a = d.step(Input::Claimed(Ok(ClaimResponse::default())), now);
        assert!(!a.contains(&Action::CheckOutlook));
        assert_eq!(claims(&a).len(), 1);
    }

    #[test]
    fn claim_failures_back_off_and_a_refusal_is_fatal() {
        let now = Instant::now();
        let mut d = Dispatcher::new(settings(1, true));
        d.step(Input::Tick, now);
        let down = || {
            Input::Claimed(Err(ClientError::Unreachable {
                url: "u".into(),
                reason: "refused".into(),
            }))
        };
        let a = d.step(down(), now);
        let after = a.iter().find_map(|x| match x {
            Action::Claim { after, .. } => Some(*after),
            _ => None,
        });
        assert_eq!(after, Some(Duration::from_millis(500)));
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Notice(Notice::Unreachable { .. })))
        );
        let a = d.step(
            Input::Claimed(Err(ClientError::Api {
                status: 400,
                code: "bad_request".into(),
                message: "max must be between 1 and 1000".into(),
            })),
            now,
        );
        assert!(matches!(&a[..], [Action::Fail(why)] if why.contains("max must be")));
        // A run-all runner gives up on an unreachable server after a while.
        let mut d = Dispatcher::new(settings(1, false));
        d.step(Input::Tick, now);
        let mut last = Vec::new();
        for _ in 0..=MAX_CLAIM_FAILURES {
            last = d.step(down(), now);
        }
        assert!(matches!(&last[..], [Action::Fail(why)] if why.contains("stayed unreachable")));
    }

    #[test]
    fn stopping_cancels_the_claim_finishes_running_work_then_exits() {
        let now = Instant::now();
        let mut d = Dispatcher::new(settings(2, true));
        claim_a(&mut d, now);
        // A claim for the free slot is in flight.
        let a = d.step(Input::Stop, now);
        assert_eq!(a, vec![Action::CancelClaim]);
        let a = d.step(finished_a(), now);
        let sent = reports(&a);
        assert!(
            sent[0].claim.is_none(),
            "no claim rides along while stopping"
        );
        assert!(
            !a.iter().any(|x| matches!(x, Action::Exit(_))),
            "not reported yet"
        );
        let a = d.step(accepted(&["a"], vec![]), now);
        assert_eq!(a.last(), Some(&Action::Exit(Exit::Stopped)));
    }

    #[test]
    fn tasks_claimed_while_stopping_are_held_and_given_back() {
        let now = Instant::now();
        let mut d = Dispatcher::new(settings(2, true));
        claim_and_finish_a(&mut d, now);
        d.step(Input::Stop, now);
        // The report in flight carried a claim (sent before the stop): its tasks go back.
        let a = d.step(accepted(&["a"], vec![task("b")]), now);
        assert!(a.contains(&Action::Hold {
            task_id: "b".into(),
            lease: 7
        }));
        assert!(!a.iter().any(|x| matches!(x, Action::Start(_))));
        let sent = reports(&a);
        assert!(matches!(sent[0].reports[0].report, Report::Abandoned));
        let a = d.step(accepted(&["b"], vec![]), now);
        assert!(a.contains(&Action::Release("b".into())));
        assert_eq!(a.last(), Some(&Action::Exit(Exit::Stopped)));
    }

    #[test]
    fn an_unreachable_server_delays_reports_without_losing_them() {
        let now = Instant::now();
        let mut d = Dispatcher::new(settings(1, true));
        claim_and_finish_a(&mut d, now);
        let a = d.step(
            Input::Reported(Err(ClientError::Unreachable {
                url: "u".into(),
                reason: "refused".into(),
            })),
            now,
        );
        let wake = a.iter().find_map(|x| match x {
            Action::WakeAt(at) => Some(*at),
            _ => None,
        });
        let at = wake.expect("a retry is scheduled");
        assert!(
            !a.iter().any(|x| matches!(x, Action::Release(_))),
            "lease still held"
        );
        let a = d.step(Input::Tick, at);
        assert_eq!(reports(&a)[0].reports[0].task_id, "a");
        // Abandoning gives up at once on a server that does not answer.
        d.step(Input::Abandon, at);
        let a = d.step(
            Input::Reported(Err(ClientError::Unreachable {
                url: "u".into(),
                reason: "refused".into(),
            })),
            at,
        );
        assert!(a.contains(&Action::Release("a".into())));
        assert_eq!(a.last(), Some(&Action::Exit(Exit::Stopped)));
    }
}
