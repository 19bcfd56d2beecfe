//! Tessera's wire types, shared by the runner host, the server and the CLI, and (with the
//! `client` feature) the HTTP client of the server's API.
//!
//! Everything outside `client` is plain data with serde derives: no I/O, no async runtime.

#[cfg(feature = "client")]
mod client;
pub mod component;
mod data;
mod error;
mod health;
mod identifier;
mod jobs;
mod level;
pub mod limits;
pub mod num;
mod runner;
mod subtask;
mod telemetry;
mod tenants;

#[cfg(feature = "client")]
pub use client::{Client, ClientError, TaskOutput};
pub use component::{Component, ComponentList, ComponentQuery, DeployQuery, Deployed};
pub use data::{
    Blob, CacheEntry, CacheKey, CachePage, CacheQuery, CacheWrite, Dependency, DependencyList,
    OutputQuery,
};
pub use error::ErrorBody;
pub use health::Health;
pub use identifier::{IdentifierError, TaskIdentifier, Version};
pub use jobs::{
    Job, JobFilter, JobPage, JobState, RootTask, SubmitJob, Task, TaskCounts, TaskPage, TaskQuery,
    TaskState, progress_map,
};
pub use level::Level;
pub use runner::{
    ClaimRequest, ClaimResponse, ClaimedTask, ExtendRequest, ExtendResponse, LeaseRef, LeaseStatus,
    Outlook, OutlookRequest, Report, ReportRequest, ReportResponse, ReportResult, RunnerInfo,
    RunnerList, TaskReport, Unserved, UnservedList, is_version_text,
};
pub use subtask::{ProgressUpdate, SubtaskSpec};
pub use telemetry::{LogBatch, LogLine, LogPage, LogQuery, Span, SpanOutcome, SpanPage, SpanQuery};
pub use tenants::{
    ApiKey, CreatedKey, Identity, KeyList, NewKey, NewTenant, Quotas, Role, Tenant, TenantList,
    TenantUpdate, Usage,
};

/// The default server address of clients (`TESSERA_SERVER` overrides it).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8420";

/// Nanoseconds since the Unix epoch, now (the unit of every time on the wire); 0 on a clock
/// set before 1970.
pub fn now_unix_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The header in which a runner names the lease its data reads are for (`TASK_ID:LEASE`): a
/// fleet runner's key reads a job's data and components only while it holds a live lease in
/// that job.
pub const LEASE_HEADER: &str = "tessera-lease";
