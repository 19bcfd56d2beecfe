//! The Tessera runner host: runs task attempts of WebAssembly components in a wasmtime
//! sandbox under hard limits.
//!
//! One [`Host`] per process holds the engine (component model, async, pooling allocator,
//! epoch interruption) and a disk cache of compiled components. [`Host::load`] loads a
//! component and lists its task types; [`Host::run`] runs one attempt in a fresh store and
//! instance and returns an [`Outcome`]: computed (subtasks, display, progress, output, cache
//! writes) or failed with a reason a person can act on. [`Host::run_with_data`] lets the
//! attempt read its dependencies' outputs and its job's cache through a [`JobData`]. Guests see no files, no environment and no network; their
//! stdout and stderr become log lines of their task.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tessera_host::{AttemptSpec, Host, HostConfig, Limits, Outcome};
//!
//! let host = Host::new(HostConfig::default())?;
//! let component = host.load("parallel_sleep.wasm").await?;
//! let spec = AttemptSpec {
//!     job_id: "job".into(),
//!     task_id: "task".into(),
//!     attempt: 1,
//!     identifier: tessera_api::TaskIdentifier::parse("SleepTask", "v0.0")?,
//!     input: r#"{"index":0,"seconds":0.1}"#.into(),
//! };
//! let sink = Arc::new(|line: tessera_host::LogRecord| println!("{}", line.message));
//! match host.run(&component, spec, &Limits::default(), sink).await {
//!     Outcome::Computed(done) => println!("{} subtasks", done.subtasks.len()),
//!     Outcome::Failed(why) => println!("failed: {why}"),
//! }
//! # Ok(()) }
//! ```

mod attempt;
mod bindings;
mod cache;
mod component;
mod data;
mod engine;
mod limits;
mod log;
mod output;
mod sandbox;
mod state;

pub use attempt::{AttemptSpec, Computed, Failure, FailureKind, Outcome};
pub use cache::{CacheOutcome, DEFAULT_CACHE_BYTES, default_cache_dir, digest as sha256_hex};
pub use component::{LoadError, TaskComponent};
pub use data::{DependencyRef, JobData, MemoryJobData, NoJobData};
pub use engine::{Allocation, AllocationInUse, EngineError, HostConfig, check_map_count};
pub use limits::{Limits, human_duration};
pub use log::{DiscardLogs, FieldValue, LogRecord, LogSink, now_unix_nano};
pub use sandbox::Host;
pub use tessera_api::{Level, ProgressUpdate, SubtaskSpec, TaskIdentifier, Version};

/// The version of wasmtime this host embeds (the sandbox's runtime), as resolved at build time.
pub const WASMTIME_VERSION: &str = wasmtime_environ::VERSION;
