//! The job store: one core that decides ([`decide`]) over thin SQL drivers ([`driver`]), one
//! for SQLite and one for PostgreSQL, checked by one conformance suite. Every method takes the
//! current time so the suite can move the clock.

mod core;
mod decide;
mod driver;
mod encode;
mod pins;
#[cfg(feature = "testing")]
pub mod plant;
mod postgres;
mod query;
pub mod scope;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

use async_trait::async_trait;
use tessera_api::{
    ClaimRequest, ClaimedTask, Job, JobFilter, JobPage, LeaseRef, LeaseStatus, LogLine, LogPage,
    LogQuery, Outlook, OutlookRequest, ReportResult, SpanPage, SpanQuery, SubmitJob, Task,
    TaskPage, TaskQuery, TaskReport,
};

pub use self::core::Core;
pub use decide::LeaseRefusal;
pub use postgres::{PostgresStore, redact as redact_url};
pub use scope::{CommitListener, Scope};
pub use sqlite::SqliteStore;

/// A database error, kept whole for the server log.
pub type DbError = Box<dyn std::error::Error + Send + Sync>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such job or task.
    #[error("{what} {id} does not exist")]
    NotFound {
        /// `job` or `task`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request is malformed; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// The request is well formed but conflicts with the state of what it names (retrying a
    /// job with nothing to retry, canceling a completed one).
    #[error("{0}")]
    Conflict(String),
    /// A tenant's quota does not allow it; the message names the quota and its value.
    #[error("{0}")]
    Quota(String),
    /// The key the request was made with was revoked (or is unknown) when the transaction
    /// looked: nothing was handed out.
    #[error("this key was revoked; it opens nothing from now on")]
    Revoked,
    /// The database was busy or two transactions conflicted, and retrying did not help.
    #[error("the job store is busy ({0})")]
    Contention(#[source] DbError),
    /// The database cannot be reached.
    #[error("the job store cannot be reached: {0}")]
    Unavailable(#[source] DbError),
    /// The database refused a statement: a bug, a full disk, a broken file.
    #[error("the job store failed: {0}")]
    Database(#[source] DbError),
    /// The database holds a value this version cannot read.
    #[error(
        "the job store holds {0}, which this tessera cannot read (written by a newer version?)"
    )]
    Corrupt(String),
    /// Anything else that went wrong inside the store.
    #[error("the job store failed: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether trying the same operation again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Contention(_) | StoreError::Unavailable(_))
    }
}

/// Settings every store shares.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How long a claim lasts unless extended.
    pub lease: Duration,
    /// First retry delay; doubles per retry spent, with ±25 % jitter.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Leases in a row that may expire without a report before the attempt counts as failed
    /// ("lost by its runner N times"); 0 never fails a task for it.
    pub max_lost: u32,
    /// Most tasks one job may have; an attempt whose subtasks would pass it fails.
    pub max_job_tasks: u64,
    /// Largest task output or job-cache value, in bytes; an attempt that hands back a larger
    /// one fails.
    pub max_value_bytes: usize,
    /// Largest task input, in bytes as stored (`tessera_api::limits::stored_len`): a root
    /// task's past it is refused at submit, and an attempt whose subtask's is past it fails.
    pub max_input_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            lease: Duration::from_secs(30),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            max_lost: 5,
            max_job_tasks: 5_000_000,
            max_value_bytes: tessera_api::limits::DEFAULT_MAX_VALUE_BYTES,
            max_input_bytes: 1 << 20,
        }
    }
}

impl StoreConfig {
    /// The delay before retry number `spent + 1`, with jitter.
    pub fn backoff(&self, spent: u32) -> Duration {
        let base = self.retry_base.as_secs_f64() * 2f64.powi(spent.min(30) as i32);
        let capped = base.min(self.retry_max.as_secs_f64());
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        Duration::from_secs_f64(capped * jitter)
    }
}

/// A tenant's number; [`DEFAULT_TENANT`] holds what a server without keys is asked to do.
pub type TenantId = i64;

/// The tenant `default`, made by the first migration that knew tenants.
pub const DEFAULT_TENANT: TenantId = 1;

/// Whose rows an operation may see or touch: one tenant's, or every tenant's (an operator, a
/// fleet runner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// One tenant's.
    Tenant(TenantId),
    /// Every tenant's.
    All,
}

impl Reach {
    /// Whether a row of `tenant` is within reach.
    pub fn allows(self, tenant: TenantId) -> bool {
        match self {
            Reach::Tenant(own) => own == tenant,
            Reach::All => true,
        }
    }

    /// The one tenant, if the reach is one.
    pub fn tenant(self) -> Option<TenantId> {
        match self {
            Reach::Tenant(t) => Some(t),
            Reach::All => None,
        }
    }
}

/// What owns a row that a request names by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned<'a> {
    /// A job, by id.
    Job(&'a str),
    /// A task, by id.
    Task(&'a str),
}

/// A stored API key: what a request presenting it may do. Only its secret's hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Its public id.
    pub id: String,
    /// Its tenant; `None` for the operator's keys.
    pub tenant: Option<TenantId>,
    /// Its tenant's name, as read back.
    pub tenant_name: Option<String>,
    /// What it may do.
    pub role: tessera_api::Role,
    /// What it is for.
    pub name: String,
    /// The hex SHA-256 of its secret.
    pub hash: String,
    /// When it was created (ns).
    pub created_at: u64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
    /// Its tenant's quota of requests per second per key; `None` for the operator's keys.
    pub requests_per_second: Option<u32>,
}

impl KeyRecord {
    /// As listed: no hash.
    pub fn listed(&self) -> tessera_api::ApiKey {
        tessera_api::ApiKey {
            id: self.id.clone(),
            tenant: self.tenant_name.clone(),
            role: self.role,
            name: self.name.clone(),
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        }
    }
}

/// Who holds a task and under which lease, as [`Store::lease_of`] finds it: what the server
/// checks before a fleet runner reads the task's job data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOf {
    /// The task's job.
    pub job_id: String,
    /// Whether it is running.
    pub running: bool,
    /// Its current lease token.
    pub lease: u64,
    /// When that lease runs out (ns).
    pub expires_at: Option<u64>,
    /// The runner holding it.
    pub runner: Option<String>,
    /// The deployed component pinned to run it.
    pub component: Option<String>,
}

impl LeaseOf {
    /// Whether `lease` holds the task at `now` for a runner of the key `key`.
    pub fn held_by(&self, key: &str, lease: u64, now: u64) -> bool {
        self.running
            && self.lease == lease
            && self.expires_at.is_some_and(|e| e >= now)
            && self.runner.as_deref().and_then(decide::runner_key) == Some(key)
    }
}

/// A task's output as [`Store::output`] finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutput {
    /// The task.
    pub task_id: String,
    /// Its output; `None` if it returned none.
    pub value: Option<Vec<u8>>,
}

/// Where Tessera's state lives. All methods are atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a job of `tenant` and its root task (queued).
    async fn submit(&self, tenant: TenantId, job: &SubmitJob, now: u64) -> Result<Job, StoreError>;
    /// Whether the database answers (a readiness check).
    async fn ping(&self) -> Result<(), StoreError>;
    /// One job, with counts, progress and times.
    async fn job(&self, id: &str) -> Result<Job, StoreError>;
    /// Jobs within reach, newest first, filtered, one page.
    async fn jobs(&self, reach: Reach, filter: &JobFilter) -> Result<JobPage, StoreError>;
    /// The tenant that owns a job or task; `None` if it does not exist.
    async fn owner(&self, of: Owned<'_>) -> Result<Option<TenantId>, StoreError>;
    /// A task's job, state and lease; `None` if it does not exist.
    async fn lease_of(&self, task: &str) -> Result<Option<LeaseOf>, StoreError>;
    /// A job's tasks depth-first, one page.
    async fn tasks(&self, job: &str, query: &TaskQuery) -> Result<TaskPage, StoreError>;
    /// One task.
    async fn task(&self, id: &str) -> Result<Task, StoreError>;
    /// Cancels a job: its queued tasks are canceled, its running ones learn it on extension.
    async fn cancel(&self, job: &str, now: u64) -> Result<Job, StoreError>;
    /// Deletes a job that is over (nothing of it running) with everything of it: tasks, logs,
    /// spans, progress, outputs, cache. Returns the job as it was.
    async fn delete_job(&self, job: &str) -> Result<Job, StoreError>;
    /// Requeues a job's failed and canceled tasks with fresh retries.
    async fn retry(&self, job: &str, now: u64) -> Result<Job, StoreError>;
    /// Hands out up to `max` eligible tasks within reach under fresh leases (never waits);
    /// with every tenant in reach, tenants take turns. With `key` (the id of the key the claim
    /// is made with), the transaction that leases checks the key first and hands out nothing
    /// ([`StoreError::Revoked`]) if it was revoked: a revocation that has committed is never
    /// followed by a hand-out to its key.
    async fn claim(
        &self,
        reach: Reach,
        key: Option<&str>,
        request: &ClaimRequest,
        now: u64,
    ) -> Result<Vec<ClaimedTask>, StoreError>;
    /// Records attempt reports; each is accepted or refused on its own (fencing). A task out
    /// of `reach` is as unknown as one that does not exist.
    async fn report(
        &self,
        reach: Reach,
        runner_id: &str,
        reports: &[TaskReport],
        now: u64,
    ) -> Result<Vec<ReportResult>, StoreError>;
    /// Extends leases that are still held; a task out of `reach` is as unknown as one that
    /// does not exist.
    async fn extend(
        &self,
        reach: Reach,
        runner_id: &str,
        leases: &[LeaseRef],
        now: u64,
    ) -> Result<Vec<LeaseStatus>, StoreError>;
    /// Work a runner could still do within reach: queued tasks it serves, running tasks of
    /// its cluster.
    async fn outlook(&self, reach: Reach, request: &OutlookRequest) -> Result<Outlook, StoreError>;
    /// Requeues tasks whose lease expired (no retry spent); returns how many.
    async fn reap(&self, now: u64) -> Result<u64, StoreError>;
    /// Stores log lines; refuses the batch if a line names an unknown task.
    async fn add_logs(&self, logs: Vec<LogLine>) -> Result<u64, StoreError>;
    /// A job's log lines in time order, one page.
    async fn logs(&self, job: &str, query: &LogQuery) -> Result<LogPage, StoreError>;
    /// A job's spans in start order, one page.
    async fn spans(&self, job: &str, query: &SpanQuery) -> Result<SpanPage, StoreError>;
    /// The earliest time a queued task waiting for a retry becomes claimable, if any.
    async fn next_retry_at(&self) -> Result<Option<u64>, StoreError>;
    /// Compares a job's kept counts with a count of its task and span rows; returns what
    /// differs, nothing when they agree. Slow on big jobs: for tests and for operators.
    async fn audit(&self, job: &str) -> Result<Vec<String>, StoreError>;
    /// The runners within reach seen in the last five minutes (by their claims), most recent
    /// first; a tenant's reach includes the runners that serve every tenant.
    async fn runners(&self, reach: Reach, now: u64) -> Result<tessera_api::RunnerList, StoreError>;
    /// A job's ready queued tasks that no runner seen in the last five minutes could run, by
    /// kind, each with why.
    async fn unserved(&self, job: &str, now: u64) -> Result<tessera_api::UnservedList, StoreError>;
    /// Deploys a component (already checked): stores its bytes under their digest, or deploys
    /// stored bytes again; deploying what is deployed changes nothing (`created` false).
    async fn deploy(
        &self,
        tenant: TenantId,
        component: &tessera_api::Component,
        bytes: std::sync::Arc<[u8]>,
    ) -> Result<tessera_api::Deployed, StoreError>;
    /// Components within reach, most recently deployed first: those deployed now, or
    /// (`all`) ever.
    async fn components(
        &self,
        reach: Reach,
        all: bool,
    ) -> Result<tessera_api::ComponentList, StoreError>;
    /// One component within reach by digest, or the one most recently deployed under a name.
    async fn component(
        &self,
        reach: Reach,
        reference: &str,
    ) -> Result<tessera_api::Component, StoreError>;
    /// A component's bytes within reach, by digest.
    async fn component_bytes(&self, reach: Reach, digest: &str) -> Result<Vec<u8>, StoreError>;
    /// Undeploys a component within reach by digest, or every component deployed under a
    /// name; returns them. Jobs that pinned them keep running them.
    async fn undeploy(
        &self,
        reach: Reach,
        reference: &str,
        now: u64,
    ) -> Result<tessera_api::ComponentList, StoreError>;

    // ---- tenants and keys
    /// Creates a tenant.
    async fn create_tenant(
        &self,
        tenant: &tessera_api::NewTenant,
        now: u64,
    ) -> Result<tessera_api::Tenant, StoreError>;
    /// The tenants within reach, by name.
    async fn tenants(
        &self,
        reach: Reach,
    ) -> Result<Vec<(TenantId, tessera_api::Tenant)>, StoreError>;
    /// A tenant by name.
    async fn tenant_named(
        &self,
        name: &str,
    ) -> Result<Option<(TenantId, tessera_api::Tenant)>, StoreError>;
    /// Changes a tenant's weight or quotas (an operator's); returns it as it is now.
    async fn update_tenant(
        &self,
        name: &str,
        update: &tessera_api::TenantUpdate,
    ) -> Result<tessera_api::Tenant, StoreError>;
    /// Stores a new key (its id and hash made by the caller).
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    /// The keys within reach (a tenant's reach: its own keys), newest first.
    async fn keys(&self, reach: Reach) -> Result<Vec<KeyRecord>, StoreError>;
    /// One key by id, revoked or not.
    async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// Revokes a key within reach at `now`; returns it.
    async fn revoke_key(&self, reach: Reach, id: &str, now: u64) -> Result<KeyRecord, StoreError>;
    /// How many keys were ever created, revoked ones included: a database that has had a key
    /// always asks for one.
    async fn keys_created(&self) -> Result<u64, StoreError>;
    /// A task's output (the job's root task's by default): the task, and its output if it
    /// has one. A task of another job is not found; one that has not computed is a conflict.
    async fn output(&self, job: &str, task: Option<&str>) -> Result<TaskOutput, StoreError>;
    /// The tasks a task depends on, with their positions among their parent's subtasks.
    async fn dependencies(&self, task: &str) -> Result<tessera_api::DependencyList, StoreError>;
    /// A job's cache value under `key`: the latest, or as of cache version `as_of` (what an
    /// attempt claimed at that version reads).
    async fn cache_get(
        &self,
        job: &str,
        key: &str,
        as_of: Option<u64>,
    ) -> Result<Vec<u8>, StoreError>;
    /// A page of a job's cache keys in byte order.
    async fn cache(
        &self,
        job: &str,
        query: &tessera_api::CacheQuery,
    ) -> Result<tessera_api::CachePage, StoreError>;
    /// Puts a job and its tasks in the store as they are given (for tests).
    #[cfg(feature = "testing")]
    async fn plant(&self, job: &plant::PlantedJob) -> Result<(), StoreError>;

    /// Tells `listener` of every commit from now on that changes what waiting requests wait
    /// for: this store's own, once each after it commits, and other servers' where the
    /// database announces them. Set once; later calls are ignored.
    fn on_commit(&self, listener: std::sync::Arc<dyn CommitListener>);
}

/// Checks a job name or cluster name.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    tessera_api::limits::check_name(what, name).map_err(StoreError::Invalid)
}

/// Checks a page size against its default and maximum.
pub(crate) fn page_size(limit: Option<u32>, default: u32, max: u32) -> Result<u32, StoreError> {
    match limit {
        None => Ok(default),
        Some(0) => Err(StoreError::Invalid("limit must be at least 1".into())),
        Some(n) if n > max => Err(StoreError::Invalid(format!(
            "limit {n} is too large: at most {max} per page (follow next_cursor for more)"
        ))),
        Some(n) => Ok(n),
    }
}
