//! The driver interface: set-based primitives over one transaction, and the rows they take and
//! return. A driver runs SQL and decides nothing; [`super::decide`] decides and
//! [`super::core`] composes. Two drivers implement it: `sqlite` and `postgres`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use tessera_api::{
    Component, Job, JobFilter, LogLine, LogQuery, Outlook, OutlookRequest, RunnerInfo, Span,
    SpanOutcome, Task, TaskIdentifier, TaskQuery, TaskState,
};

use super::{KeyRecord, Owned, Reach, StoreError, TenantId};

/// A store operation, boxed so that a driver can choose where it runs.
pub type Op<R> = Pin<Box<dyn Future<Output = R> + Send + 'static>>;

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads only; may see other transactions' commits between statements.
    Read,
    /// Reads and writes, atomically.
    Write,
}

/// A database: opens transactions.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// One open transaction.
    type Tx: Tx;
    /// Opens a transaction.
    async fn begin(&self, mode: Mode) -> Result<Self::Tx, StoreError>;
    /// Runs one store operation; a driver whose calls block runs it off the async threads.
    async fn run<R: Send + 'static>(&self, op: Op<R>) -> R;
    /// Tells `listener` of other servers' commits, where the database announces them.
    fn forward(&self, _listener: std::sync::Arc<dyn super::CommitListener>) {}
}

/// One transaction's primitives. Each takes a set; none decides anything.
#[async_trait]
pub trait Tx: Send + Sized {
    /// Makes every change of this transaction durable.
    async fn commit(self) -> Result<(), StoreError>;
    /// Discards every change of this transaction.
    async fn rollback(self);

    // ---- reads
    /// A job with its counts, progress and span times.
    async fn load_job(&mut self, id: &str) -> Result<Option<Job>, StoreError>;
    /// Ids of jobs matching `filter`, newest first, at most `limit`.
    async fn job_ids(
        &mut self,
        reach: Reach,
        filter: &JobFilter,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// The tenant that owns a job or a task, if it exists.
    async fn owner(&mut self, of: Owned<'_>) -> Result<Option<TenantId>, StoreError>;
    /// A job's tasks in tree order with their paths, at most `limit`.
    async fn tasks(
        &mut self,
        job: &str,
        query: &TaskQuery,
        limit: u32,
    ) -> Result<Vec<(Task, String)>, StoreError>;
    /// One task.
    async fn task(&mut self, id: &str) -> Result<Option<Task>, StoreError>;
    /// A job's log lines in time order with their row ids, at most `limit`.
    async fn logs(
        &mut self,
        job: &str,
        query: &LogQuery,
        limit: u32,
    ) -> Result<Vec<(i64, LogLine)>, StoreError>;
    /// Runs a span query ([`super::query::spans_on_tasks`] or
    /// [`super::query::spans_archived`]): spans with their keys, in (start, key) order.
    async fn spans(&mut self, query: &super::query::Query) -> Result<Vec<(i64, Span)>, StoreError>;
    /// Queued tasks of `tenant` a runner could serve and running tasks of its cluster.
    async fn outlook(
        &mut self,
        tenant: TenantId,
        request: &OutlookRequest,
    ) -> Result<Outlook, StoreError>;
    /// The earliest end of a retry backoff among queued tasks.
    async fn next_retry_at(&mut self) -> Result<Option<u64>, StoreError>;
    /// The runner that ran each named attempt (task and attempt number), of those that exist.
    async fn attempt_runners(
        &mut self,
        attempts: &[(String, u32)],
    ) -> Result<HashMap<(String, u32), String>, StoreError>;
    /// The job of each named task that exists.
    async fn jobs_of_tasks(&mut self, ids: &[&str]) -> Result<HashMap<String, String>, StoreError>;

    /// Ready queued tasks of a job by kind: cluster, task type, pinned or not, how many (at
    /// most 100 kinds).
    async fn ready_kinds(&mut self, job: &str, now: u64) -> Result<Vec<ReadyKind>, StoreError>;
    /// How many running tasks of tenants within reach each runner holds (a tenant sees only
    /// its own attempts on a shared fleet runner).
    async fn running_by_runner(&mut self, reach: Reach)
    -> Result<HashMap<String, u64>, StoreError>;
    /// Runners within reach (a tenant's, and those serving every tenant) whose last claim was
    /// at or after `since`, most recent first (at most 1,000).
    async fn runners(&mut self, reach: Reach, since: u64) -> Result<Vec<RunnerInfo>, StoreError>;
    /// Records a runner's claim (its first sighting keeps its `first_seen`) with the tenant it
    /// serves (`None`: every tenant), and forgets runners not seen since `forget_before`.
    async fn record_runner(
        &mut self,
        runner: &RunnerInfo,
        tenant: Option<TenantId>,
        forget_before: u64,
    ) -> Result<(), StoreError>;

    // ---- components
    /// Components without their bytes, most recently deployed first (at most 1,000).
    async fn components(
        &mut self,
        reach: Reach,
        which: &Which<'_>,
    ) -> Result<Vec<Component>, StoreError>;
    /// Inserts a component of `tenant` with its bytes.
    async fn insert_component(
        &mut self,
        tenant: TenantId,
        component: &Component,
        bytes: &[u8],
    ) -> Result<(), StoreError>;
    /// Deploys stored components of `tenant` again, or leaves them deployed (`deployed_at` as
    /// given, `undeployed_at` cleared); undeploys them with `undeployed_at`.
    async fn set_deployed(
        &mut self,
        tenant: TenantId,
        digests: &[String],
        deployed: Result<u64, u64>,
    ) -> Result<(), StoreError>;
    /// A component's bytes, deployed by a tenant within reach.
    async fn component_bytes(
        &mut self,
        reach: Reach,
        digest: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// The tenants of components with this digest (undeploying by digest finds them).
    async fn component_tenants(
        &mut self,
        reach: Reach,
        digest: &str,
    ) -> Result<Vec<TenantId>, StoreError>;

    // ---- tenants and keys
    /// Inserts a tenant; its number.
    async fn insert_tenant(&mut self, tenant: &tessera_api::Tenant)
    -> Result<TenantId, StoreError>;
    /// The tenants within reach, by name.
    async fn tenants(
        &mut self,
        reach: Reach,
    ) -> Result<Vec<(TenantId, tessera_api::Tenant)>, StoreError>;
    /// A tenant by name.
    async fn tenant_named(
        &mut self,
        name: &str,
    ) -> Result<Option<(TenantId, tessera_api::Tenant)>, StoreError>;
    /// Sets a tenant's weight and quotas (the quotas an operator set, as JSON).
    async fn set_tenant(
        &mut self,
        id: TenantId,
        weight: u32,
        quotas: &str,
    ) -> Result<(), StoreError>;
    /// Tasks queued and attempts running, per tenant within reach that has any, summed over
    /// the jobs that are not over.
    async fn tenant_usage(&mut self, reach: Reach) -> Result<Vec<TenantLoad>, StoreError>;
    /// Bytes of a tenant's stored components.
    async fn component_bytes_of(&mut self, tenant: TenantId) -> Result<u64, StoreError>;
    /// Each named job's tenant and log bytes kept, of those that exist.
    async fn job_log_bytes(
        &mut self,
        jobs: &[&str],
    ) -> Result<HashMap<String, (TenantId, u64)>, StoreError>;
    /// Adds to jobs' log bytes kept.
    async fn add_log_bytes(&mut self, added: &[(String, u64)]) -> Result<(), StoreError>;
    /// Inserts a key.
    async fn insert_key(&mut self, key: &KeyRecord) -> Result<(), StoreError>;
    /// Keys within reach (a tenant's: its own), newest first, at most 1,000.
    async fn keys(&mut self, reach: Reach) -> Result<Vec<KeyRecord>, StoreError>;
    /// One key by id.
    async fn key(&mut self, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// A task's job, state and lease.
    async fn lease_of(&mut self, task: &str) -> Result<Option<super::LeaseOf>, StoreError>;
    /// Whether a key exists and is not revoked, holding it so that no revocation commits
    /// before this transaction ends.
    async fn lock_key(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Marks a key revoked at `now` (a key revoked already keeps its time).
    async fn revoke_key(&mut self, id: &str, now: u64) -> Result<(), StoreError>;
    /// How many keys were ever created, revoked ones included: a database that has had a key
    /// always asks for one.
    async fn keys_created(&mut self) -> Result<u64, StoreError>;

    // ---- jobs
    /// Locks a job's row against concurrent changes; false if it does not exist.
    async fn lock_job(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Inserts a job with no tasks counted (the caller adds its root's tally).
    async fn insert_job(&mut self, job: &NewJob) -> Result<(), StoreError>;
    /// Sets a job's canceled and failed flags (`None` leaves one as it is).
    async fn set_job_flags(
        &mut self,
        id: &str,
        canceled: Option<bool>,
        failed: Option<bool>,
    ) -> Result<(), StoreError>;
    /// Locks the named jobs (in id order) and returns how many tasks each has (the sum of
    /// its kept counts) and what it pinned.
    async fn lock_job_totals(
        &mut self,
        ids: &[&str],
    ) -> Result<HashMap<String, JobGrowth>, StoreError>;
    /// Adds to jobs' kept counts (a job's task total is their sum).
    async fn add_job_tallies(&mut self, tallies: &[JobTally]) -> Result<(), StoreError>;
    /// A job's counts as its task and span rows say, counted (slow: for audits).
    async fn count_job(&mut self, id: &str) -> Result<Option<JobTally>, StoreError>;
    /// Marks jobs failed.
    async fn fail_jobs(&mut self, ids: &[String]) -> Result<(), StoreError>;
    /// Marks jobs completed at `now`.
    async fn complete_jobs(&mut self, ids: &[String], now: u64) -> Result<(), StoreError>;
    /// Deletes a job and everything of it: tasks, dependency edges, progress, log lines,
    /// spans, outputs and cache entries.
    async fn delete_job(&mut self, id: &str) -> Result<(), StoreError>;
    /// Cancels a job's queued tasks, recording `why` as their error; returns how many.
    async fn cancel_queued(&mut self, job: &str, now: u64, why: &str) -> Result<u64, StoreError>;
    /// Queues a job's tasks in state `from` again with fresh retries and no error; returns how
    /// many.
    async fn requeue(&mut self, job: &str, from: TaskState) -> Result<u64, StoreError>;

    // ---- tasks
    /// Inserts tasks and their dependency edges.
    async fn insert_tasks(&mut self, tasks: &[NewTask]) -> Result<(), StoreError>;
    /// Locks the named tasks (in id order) and returns those that exist.
    async fn lock_tasks(&mut self, ids: &[&str]) -> Result<Vec<HeldRow>, StoreError>;
    /// Locks running tasks whose lease expired before `now`, skipping rows others hold.
    async fn lock_expired(&mut self, now: u64) -> Result<Vec<HeldRow>, StoreError>;
    /// Applies state transitions; every one ends the task's lease.
    async fn set_states(&mut self, states: &[SetState]) -> Result<(), StoreError>;
    /// Moves leases' expiry to `expires`.
    async fn extend_leases(&mut self, ids: &[&str], expires: u64) -> Result<(), StoreError>;
    /// Picks eligible queued tasks, leases them and opens their spans on their rows (a row's
    /// span of an earlier attempt moves to `spans` first).
    async fn claim_eligible(
        &mut self,
        claim: &ClaimParams<'_>,
    ) -> Result<Vec<ClaimedRow>, StoreError>;
    /// Marks tasks completed; returns each with its parent and job.
    async fn set_completed(&mut self, ids: &[String]) -> Result<Vec<CompletedRow>, StoreError>;
    /// Counts a completed dependency off every task that waits on the named tasks.
    async fn release_dependents(&mut self, ids: &[String]) -> Result<(), StoreError>;
    /// Counts completed children off their parents; returns the parents as they are now.
    async fn close_children(
        &mut self,
        counts: &[(String, u64)],
    ) -> Result<Vec<ParentRow>, StoreError>;

    // ---- progress, logs
    /// Adds to jobs' progress counters (saturating).
    async fn add_progress(&mut self, progress: &[AddProgress]) -> Result<(), StoreError>;
    /// Keeps computed tasks' outputs.
    async fn put_outputs(&mut self, outputs: &[PutOutput]) -> Result<(), StoreError>;
    /// Takes the next cache version of each named job (in id order), returning it per job.
    async fn next_cache_seqs(&mut self, jobs: &[&str]) -> Result<HashMap<String, u64>, StoreError>;
    /// Inserts job-cache versions: values, and deletes as `NULL` (at most one per job and key).
    async fn write_cache(&mut self, writes: &[CacheSet]) -> Result<(), StoreError>;
    /// Drops every cache version of the named jobs but the latest of each key, and the keys
    /// whose latest version is a delete.
    async fn compact_cache(&mut self, jobs: &[String]) -> Result<(), StoreError>;
    /// A task's output row, if it has one: its value, or the subtask it takes its output from.
    async fn output(&mut self, task: &str) -> Result<Option<PutOutput>, StoreError>;
    /// The tasks a task depends on, in the order it lists them.
    async fn dependencies(&mut self, task: &str) -> Result<Vec<DependencyRow>, StoreError>;
    /// A job-cache value as of version `as_of`: the latest version at or below it, unless
    /// that is a delete.
    async fn cache_get(
        &mut self,
        job: &str,
        key: &str,
        as_of: u64,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// A job's cache keys as of version `as_of`, beginning with `prefix` and after `after`, in
    /// byte order, with their values' sizes; at most `limit`.
    async fn cache_keys(
        &mut self,
        job: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
        as_of: u64,
    ) -> Result<Vec<(String, u64)>, StoreError>;
    /// Inserts log lines (their `job_id` filled in).
    async fn insert_logs(&mut self, lines: &[LogLine]) -> Result<(), StoreError>;
    /// Inserts tasks with every column as given, and open spans for the running ones.
    #[cfg(feature = "testing")]
    async fn plant_tasks(&mut self, tasks: &[super::plant::PlantedTask]) -> Result<(), StoreError>;
    /// Announces that this transaction changes what waiting requests wait for, and where work
    /// may become claimable: to other servers on commit (where the database can), and, kept
    /// until [`Tx::notified`] takes it, to this server's listener once the core has committed.
    async fn notify(&mut self, scope: &super::Scope) -> Result<(), StoreError>;
    /// The scopes this transaction announced, taken.
    fn notified(&mut self) -> Vec<super::Scope>;
}

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub tenant: TenantId,
    /// Its pins, encoded ([`super::pins::Pins::encode`]).
    pub pins: String,
    pub name: String,
    pub cluster: String,
    pub root_id: String,
    pub submitted_at: u64,
}

/// A task to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub id: String,
    pub job_id: String,
    /// Its job's tenant.
    pub tenant: TenantId,
    pub parent_id: Option<String>,
    pub depth: u32,
    pub path: String,
    pub identifier: TaskIdentifier,
    /// The input as JSON text.
    pub input: String,
    pub display: Option<String>,
    pub cluster: String,
    pub state: TaskState,
    /// Ids of earlier siblings this task waits for.
    pub depends_on: Vec<String>,
    pub max_retries: u32,
    pub created_at: u64,
    pub finished_at: Option<u64>,
    /// The deployed component its job pinned for it.
    pub component: Option<String>,
}

/// A task as reports, extensions and the reaper find it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldRow {
    pub id: String,
    pub job_id: String,
    /// Its parent; `None` for a job's root.
    pub parent_id: Option<String>,
    /// Its job's tenant.
    pub tenant: TenantId,
    pub cluster: String,
    pub path: String,
    pub depth: u32,
    pub state: TaskState,
    /// The current lease token.
    pub lease: u64,
    pub lease_expires_at: Option<u64>,
    pub attempt: u32,
    pub retries_used: u32,
    pub max_retries: u32,
    pub job_canceled: bool,
    /// Whether its job has failed.
    pub job_failed: bool,
    /// The runner holding its lease, if any.
    pub runner: Option<String>,
    /// Leases in a row that expired without a report.
    pub lost: u32,
    /// The start of the attempt's span on the row, while it is open.
    pub span_start: Option<u64>,
}

/// What a transition does to a task's error text.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorText {
    /// Leaves it as it is.
    Keep,
    /// Removes it.
    Clear,
    /// Replaces it.
    Set(String),
}

/// A task's state transition, as data (River's `JobSetStateIfRunningParams`).
#[derive(Debug, Clone, PartialEq)]
pub struct SetState {
    pub id: String,
    pub state: TaskState,
    pub error: ErrorText,
    /// A new display name, if the attempt set one.
    pub display: Option<String>,
    /// Children recorded with this transition (computed only).
    pub children: Option<u64>,
    /// Whether this transition spends a retry.
    pub spend_retry: bool,
    /// When the task becomes claimable again, if it waits out a backoff.
    pub not_before: Option<u64>,
    /// When the task finished, if it did.
    pub finished_at: Option<u64>,
    /// Leases in a row that expired without a report, after this transition.
    pub lost: u32,
    /// Whether the task completes with this transition (computed without subtasks), so that
    /// one write does both.
    pub complete: bool,
    /// The attempt's open span ends with this transition (the same write).
    pub span: Option<SpanEnd>,
}

/// How an attempt's span ends.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEnd {
    pub at: u64,
    pub outcome: SpanOutcome,
    pub error: Option<String>,
}

/// A computed task's output to keep: its value, or the subtask whose output it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct PutOutput {
    pub task_id: String,
    pub value: Option<Vec<u8>>,
    /// The subtask whose output this task's is, once it computes.
    pub source: Option<String>,
}

/// A job-cache write to apply: a value to set, or `None` to delete the key, as the version
/// `seq` of the key (the core fills it in from [`Tx::next_cache_seqs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSet {
    pub job_id: String,
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub seq: u64,
}

/// A task's dependency as the store finds it, in the order the task lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct DependencyRow {
    pub task_id: String,
    pub path: String,
    pub state: TaskState,
    /// Its output's length, if it has one.
    pub output_bytes: Option<u64>,
}

/// An addition to one progress counter of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct AddProgress {
    pub job_id: String,
    pub label: String,
    pub done: u64,
    pub total: u64,
}

/// A task just marked completed.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedRow {
    pub id: String,
    pub parent_id: Option<String>,
    pub job_id: String,
}

/// A parent after completed children were counted off.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentRow {
    pub id: String,
    pub state: TaskState,
    pub open_children: i64,
}

/// What a claim asks for, with the lease it grants.
#[derive(Debug, Clone)]
pub struct ClaimParams<'a> {
    /// Whose tasks it takes.
    pub tenant: TenantId,
    pub runner_id: &'a str,
    pub cluster: &'a str,
    pub identifiers: &'a [TaskIdentifier],
    /// The digest of the component serving each identifier (or none at all).
    pub digests: &'a [String],
    /// A fleet runner: any task with a pinned component, whatever its type.
    pub deployed: bool,
    pub max: u32,
    pub now: u64,
    pub expires: u64,
}

impl ClaimParams<'_> {
    /// The component a claimed task runs with, as its span records it: a fleet runner's, the
    /// pinned one; else the component file serving its type, if the runner said which.
    pub fn ran(&self, row: &ClaimedRow) -> Option<String> {
        if self.deployed {
            return row.component.clone();
        }
        let i = self
            .identifiers
            .iter()
            .position(|own| own.can_run(&row.identifier))?;
        self.digests.get(i).cloned()
    }
}

/// A task just claimed.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    pub task_id: String,
    pub job_id: String,
    pub identifier: TaskIdentifier,
    pub display: Option<String>,
    /// The input as JSON text.
    pub input: String,
    pub attempt: u32,
    pub lease: u64,
    /// Its pinned component.
    pub component: Option<String>,
    /// The job's cache version when it was claimed: what the attempt reads.
    pub cache_seq: u64,
}

/// Which components to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which<'a> {
    /// Deployed now.
    Deployed,
    /// Deployed now or ever.
    All,
    /// The one with this digest.
    Digest(&'a str),
    /// Those deployed (now or ever) under this name.
    Name(&'a str),
}

/// Ready queued tasks of one kind, as [`super::decide::unserved`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyKind {
    pub cluster: String,
    pub task: TaskIdentifier,
    /// Whether their job pinned a deployed component for them (a fleet runner serves them).
    pub pinned: bool,
    pub queued: u64,
}

/// What one tenant's jobs hold now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLoad {
    pub tenant: TenantId,
    pub queued: u64,
    pub running: u64,
}

/// A job about to grow: its size and what it pinned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobGrowth {
    /// Its task total.
    pub total: u64,
    /// Its pins, encoded.
    pub pins: String,
}

/// Changes to one job's kept counts, as data; [`super::decide::Tallies`] adds them up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobTally {
    pub job_id: String,
    /// Tasks gained (positive) or lost (negative) per state, in [`TaskState::ALL`] order.
    pub states: [i64; 5],
    /// Nanoseconds of attempts that ended (added, saturating).
    pub task_time_ns: u64,
    /// The latest end of an attempt; 0 for none (the kept value only grows).
    pub last_end: u64,
    /// When the job's first task was claimed, if one was (kept only the first time).
    pub started_at: Option<u64>,
}

impl JobTally {
    /// The change to one state's count.
    pub fn state(&self, state: TaskState) -> i64 {
        self.states[state_index(state)]
    }

    /// The change to the job's task total: the sum over all states.
    pub fn total(&self) -> i64 {
        self.states.iter().sum()
    }
}

/// A state's position in [`JobTally::states`].
pub fn state_index(state: TaskState) -> usize {
    TaskState::ALL
        .iter()
        .position(|s| *s == state)
        .expect("every state is in ALL")
}
